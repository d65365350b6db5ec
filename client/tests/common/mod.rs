//! A real hermeticd (in-process, through its library's `serve`) on a temp
//! Unix socket, with a busybox rootfs as its default image and the real
//! sandbox helper; and the real `hermetic` binary run against it.
//!
//! Where the sandbox cannot run (not root, no helper binary, no static
//! busybox, a kernel refusing the sandbox), tests print a loud SKIP; with
//! CI=true they fail instead.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Prints a loud SKIP, or panics in CI.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the real sandbox must work in CI: {why}");
    }
    eprintln!("\n==== SKIP: {why} ====\n");
}

/// The `hermetic` binary under test.
pub fn hermetic_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hermetic"))
}

/// The sandbox helper: $HERMETIC_SANDBOX_HELPER, else `hermetic-sandbox`
/// beside the `hermetic` binary (`cargo build --workspace --bins`).
fn helper() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HERMETIC_SANDBOX_HELPER") {
        return Some(p.into());
    }
    let p = hermetic_bin().parent()?.join("hermetic-sandbox");
    p.is_file().then_some(p)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running daemon shared by the tests of one binary.
#[derive(Debug)]
pub struct Daemon {
    /// Holds the state, socket, config and client settings.
    pub dir: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// The client settings file (remote = the socket; local runs on the
    /// same daemon config with a private state dir).
    pub settings: PathBuf,
}

impl Daemon {
    /// A `hermetic` command against this daemon.
    pub fn hermetic(&self) -> Command {
        let mut c = Command::new(hermetic_bin());
        c.env("HERMETIC_CONFIG", &self.settings)
            .env_remove("HERMETIC_REMOTE")
            .env("XDG_CACHE_HOME", self.dir.join("cache"));
        c
    }
}

/// The prefix of the shared daemon's directory in the temp dir; the test
/// process's id follows it.
const STATE_PREFIX: &str = "hermetic-client-test-";

/// The shared daemon lives until its test process exits, so its directory
/// cannot be removed by that process: later runs remove those whose
/// process is gone.
fn remove_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(STATE_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn start() -> Result<Daemon, String> {
    if !nix_is_root() {
        return Err("not root: the sandbox tests need root".into());
    }
    let helper = helper()
        .ok_or("the hermetic-sandbox binary is not built (cargo build --workspace --bins)")?;
    remove_stale_dirs();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{STATE_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let rootfs = dir.join("busybox");
    let out = Command::new("sh")
        .arg(repo().join("scripts/busybox-rootfs.sh"))
        .arg(&rootfs)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "no busybox rootfs (apt-get install busybox-static): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let socket = dir.join("hermeticd.sock");
    let config_path = dir.join("hermeticd.toml");
    let config = format!(
        "state_dir = {:?}\nlisten = [\"unix://{}\"]\nsandbox_helper = {:?}\n\
         profiles_dir = {:?}\ndefault_image = \"busybox\"\njobs = 2\n\
         [images]\nbusybox = {:?}\n[cas]\nno_fsync = true\n",
        dir.join("state"),
        socket.display(),
        helper,
        repo().join("sandbox-profiles"),
        rootfs,
    );
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let settings = dir.join("client.toml");
    std::fs::write(
        &settings,
        format!(
            "remote = \"unix://{}\"\n[local]\ndaemon_config = {:?}\nstate_dir = {:?}\n",
            socket.display(),
            config_path,
            dir.join("local-state")
        ),
    )
    .map_err(|e| e.to_string())?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let cfg = config_path.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let config = hermeticd::config::Config::load(&cfg).unwrap();
            let addrs = config.listen_addrs().unwrap();
            let daemon = hermeticd::Daemon::open(config).unwrap();
            let mut listeners = Vec::new();
            for a in &addrs {
                listeners.push(hermeticd::Listener::bind(a).await.unwrap());
            }
            ready_tx.send(()).unwrap();
            // Serves until the test process exits.
            hermeticd::serve(&daemon, listeners, std::future::pending())
                .await
                .unwrap();
        });
    });
    ready_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .map_err(|e| format!("the daemon did not start: {e}"))?;
    let d = Daemon {
        dir,
        socket,
        settings,
    };
    // Probe: can the sandbox run here at all?
    let probe = d
        .hermetic()
        .args(["run", "--json", "--out-dir"])
        .arg(d.dir.join("probe-out"))
        .args(["--", "true"])
        .output()
        .map_err(|e| e.to_string())?;
    if !probe.status.success() {
        return Err(format!(
            "the sandbox cannot run here: {}",
            String::from_utf8_lossy(&probe.stdout)
        ));
    }
    Ok(d)
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The shared daemon, or `None` (after a loud SKIP) where it cannot run.
pub fn daemon() -> Option<&'static Daemon> {
    static DAEMON: OnceLock<Result<Daemon, String>> = OnceLock::new();
    match DAEMON.get_or_init(start) {
        Ok(d) => Some(d),
        Err(why) => {
            skip_or_fail(why);
            None
        }
    }
}

/// A second daemon of its own (fresh state, store and keys), for tests
/// that need two; `None` (after a loud SKIP) where it cannot run.
pub fn another_daemon() -> Option<Daemon> {
    match start() {
        Ok(d) => Some(d),
        Err(why) => {
            skip_or_fail(&why);
            None
        }
    }
}

/// The `toolchain` reference image (Debian minbase + gcc, make, libc6-dev)
/// imported and trusted in `d` as `toolchain`, as scripts/demo does; its
/// tarball comes from `scripts/toolchain-image`, which builds it once
/// (about a minute) and keeps it in /var/tmp/hermetic-toolchain. `None`
/// (after a loud SKIP; a failure in CI) where it cannot be built.
pub fn toolchain_image(d: &Daemon) -> Option<()> {
    static TAR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let tar = TAR.get_or_init(|| {
        let out = Command::new(repo().join("scripts/toolchain-image"))
            .output()
            .map_err(|e| format!("cannot run scripts/toolchain-image: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/toolchain-image failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(PathBuf::from(
            stdout.lines().last().unwrap_or_default().trim(),
        ))
    });
    let tar = match tar {
        Ok(t) => t,
        Err(why) => {
            skip_or_fail(&format!("no toolchain image: {why}"));
            return None;
        }
    };
    let start = std::time::Instant::now();
    let import = d
        .hermetic()
        .args(["image", "import"])
        .arg(tar)
        .args(["--name", "toolchain", "--trust"])
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "import the toolchain image: {:?}",
        text(&import)
    );
    eprintln!("toolchain image imported in {:.1?}", start.elapsed());
    Some(())
}

/// stdout and stderr as text, for assertion messages.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A fresh directory under the daemon's.
pub fn scratch(d: &Daemon, name: &str) -> PathBuf {
    let p = d.dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `blake3:HEX/SIZE` and `sha256:HEX/SIZE` of `data`.
pub fn digests(data: &[u8]) -> (String, String) {
    use sha2::Digest as _;
    let sha = sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    (
        format!("blake3:{}/{}", blake3::hash(data).to_hex(), data.len()),
        format!("sha256:{sha}/{}", data.len()),
    )
}
