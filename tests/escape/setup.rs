//! What every run shares, built once per test binary: the helper found
//! next to the test binary, the probe compiled from `probe.c` and the
//! busybox image, both cached under the target dir by content hash.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash as _, Hasher as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::ROOTLESS_UID;
use crate::host;

/// Everything shared by all runs of this test binary.
#[derive(Debug)]
pub struct Env {
    /// `target/<profile>/hermetic-sandbox`.
    pub helper: PathBuf,
    /// The compiled probe.
    pub probe: PathBuf,
    /// The busybox image with the setuid `print-euid`.
    pub rootfs: PathBuf,
    /// `sandbox-profiles/`.
    pub profile_dir: PathBuf,
    /// This process's mount namespace inode.
    pub host_mnt: u64,
    /// This process's uts namespace inode.
    pub host_uts: u64,
    /// This process's network namespace inode.
    pub host_net: u64,
    /// Where per-run directories go.
    pub runs_dir: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();
static PROBE: OnceLock<PathBuf> = OnceLock::new();

/// The shared environment, built on first use.
pub fn env() -> &'static Env {
    ENV.get_or_init(Env::build)
}

/// The compiled probe (needs no helper, no image, no root).
pub fn probe() -> &'static Path {
    PROBE.get_or_init(|| {
        let cache = target_profile_dir().join("hermetic-tests");
        fs::create_dir_all(&cache).expect("create cache dir");
        build_probe(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("escape/probe.c"),
            &cache,
        )
    })
}

/// `target/<profile>`: the test binary lives in `target/<profile>/deps`.
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

fn hash_of(parts: &[&[u8]]) -> String {
    let mut h = DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

impl Env {
    fn build() -> Env {
        let target = target_profile_dir();
        let helper = target.join("hermetic-sandbox");
        assert!(
            helper.is_file(),
            "the sandbox helper {} does not exist: run `cargo build -p hermetic-sandbox` first \
             (with the same target dir and profile as this test)",
            helper.display()
        );
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        check_fresh(&helper, &manifest.join("../sandbox/src"));
        let cache = target.join("hermetic-tests");
        let probe = probe().to_path_buf();
        let rootfs = build_rootfs(
            &manifest.join("../scripts/busybox-rootfs.sh"),
            &probe,
            &cache,
        );
        let runs_dir = std::env::temp_dir().join(format!("hermetic-escape-{}", std::process::id()));
        remove_stale_runs(&std::env::temp_dir());
        host::make_dir(&runs_dir, 0o755, 0);
        for p in [&rootfs, &runs_dir] {
            if let Err(dir) = host::world_traversable(p) {
                panic!(
                    "{} is not traversable by uid {ROOTLESS_UID} ({} lacks o+x): the rootless battery needs it",
                    p.display(),
                    dir.display()
                );
            }
        }
        Env {
            helper,
            probe,
            rootfs,
            profile_dir: manifest.join("../sandbox-profiles"),
            host_mnt: host::ns_inode("mnt"),
            host_uts: host::ns_inode("uts"),
            host_net: host::ns_inode("net"),
            runs_dir,
        }
    }
}

/// Fails when a source of the helper is newer than the helper: the battery
/// must not pass (or fail) on a stale build.
fn check_fresh(helper: &Path, sources: &Path) {
    let built = fs::metadata(helper)
        .and_then(|m| m.modified())
        .expect("helper mtime");
    let newer: Vec<PathBuf> = fs::read_dir(sources)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
        })
        .collect();
    assert!(
        newer.is_empty(),
        "{} is older than {newer:?}: run `cargo build -p hermetic-sandbox` first",
        helper.display()
    );
}

/// Removes the run directories of earlier test processes that are gone
/// (this process's own stay, for inspection after a failure).
fn remove_stale_runs(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hermetic-escape-"))
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Compiles probe.c statically into `cache/probe-HASH`, once per source.
fn build_probe(source: &Path, cache: &Path) -> PathBuf {
    let text = fs::read(source).unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    let out = cache.join(format!("probe-{}", hash_of(&[&text])));
    if out.is_file() {
        return out;
    }
    // Probes of earlier sources go.
    for e in fs::read_dir(cache).expect("read cache").flatten() {
        if e.file_name().to_string_lossy().starts_with("probe-") {
            let _ = fs::remove_file(e.path());
        }
    }
    let tmp = cache.join(format!(".probe-{}", std::process::id()));
    let status = Command::new("cc")
        .args(["-static", "-O1", "-Wall", "-o"])
        .arg(&tmp)
        .arg(source)
        .status()
        .expect("run cc: a C compiler (gcc) and static libc (libc6-dev) are needed");
    assert!(
        status.success(),
        "cc -static failed on {}",
        source.display()
    );
    fs::rename(&tmp, &out).expect("rename probe");
    out
}

/// Builds the busybox image with scripts/busybox-rootfs.sh into
/// `cache/rootfs-HASH` and adds `usr/local/bin/print-euid`: a setuid-root
/// copy of the probe (which only prints its ids under that name).
fn build_rootfs(script: &Path, probe: &Path, cache: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    let md = fs::metadata(busybox).unwrap_or_else(|_| {
        panic!("/bin/busybox is missing: apt-get install busybox-static (the battery's image is built from it)")
    });
    let script_text =
        fs::read(script).unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
    let probe_bytes = fs::read(probe).expect("read probe");
    let stamp = format!("{}:{}", md.len(), md.mtime());
    let out = cache.join(format!(
        "rootfs-{}",
        hash_of(&[&script_text, &probe_bytes, stamp.as_bytes()])
    ));
    // A cached image counts only with its setuid bit (a copy of the cache
    // that did not keep it would make the setuid check fail for nothing).
    if fs::metadata(out.join("usr/local/bin/print-euid"))
        .is_ok_and(|m| m.is_file() && m.mode() & 0o7777 == 0o4755)
    {
        return out;
    }
    // Old images of earlier sources go.
    for e in fs::read_dir(cache).expect("read cache").flatten() {
        if e.file_name().to_string_lossy().starts_with("rootfs-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let status = Command::new("sh")
        .arg(script)
        .arg(&out)
        .status()
        .expect("run busybox-rootfs.sh");
    assert!(status.success(), "{} failed", script.display());
    let suid = out.join("usr/local/bin/print-euid");
    fs::copy(probe, &suid).expect("copy print-euid");
    std::os::unix::fs::chown(&suid, Some(0), Some(0)).expect("chown print-euid to root");
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).expect("chmod 4755 print-euid");
    out
}
