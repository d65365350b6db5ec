//! The escape battery of issue 2: each attack runs inside `hermetic-sandbox`
//! and the test asserts the exact containment, as root and rootless.
//!
//! # What it needs
//! - root (it runs the helper as root, and as uid 65534 for rootless);
//! - `/bin/busybox` from Debian's busybox-static (the image is built from it
//!   with `scripts/busybox-rootfs.sh`), `cc` and a static libc (the probe);
//! - the helper built with the same target dir and profile:
//!   `cargo build -p hermetic-sandbox`;
//! - user namespaces and Landlock ABI 6 or later.
//!
//! Without one of these a test prints a loud SKIP and passes, except under
//! `CI=true`, where it fails.
//!
//! # How it is safe
//! The probe (`probe.c`) first checks that its mount and uts namespaces
//! differ from this process's, and refuses to act otherwise. Every attack is
//! harmless where it would succeed (see probe.c), and the harness kills the
//! helper after a minute and any survivor by its unique token.
//!
//! # Running
//! ```text
//! cargo build -p hermetic-sandbox && cargo test -p hermetic-tests --test escape
//! ```

mod anomaly;
mod expect;
mod files;
mod harness;
mod host;
mod isolation;
mod limits;
mod setup;
mod tables;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use hermetic_sandbox::status::Outcome;
use serde_json::Value;

use expect::{Checks, common, table};
use harness::{Mode, Report, Run};
use setup::Env;

const MIB: u64 = 1 << 20;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints a loud SKIP, or fails under CI=true.
fn skip(test: &str, why: &str) {
    assert!(
        !ci(),
        "{test}: {why} (CI=true: a missing prerequisite fails the battery instead of skipping it)"
    );
    // Straight to stderr: the test harness captures eprintln! of passing
    // tests, and a skip must not be silent.
    let bar = "*".repeat(72);
    let msg = format!("\n{bar}\n*** SKIP: {test}: {why}\n{bar}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
}

/// Landlock's ABI version, or an error.
fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) reads no memory.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    }
}

/// Whether `uid` can create a user namespace (tried in a child).
fn userns_works(uid: u32) -> Result<(), String> {
    let mut cmd = Command::new("/bin/true");
    let hook = move || {
        if uid != 0 {
            host::become_user(uid)?;
        }
        host::unshare_user()
    };
    // SAFETY: the hook makes only async-signal-safe calls on integers.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, hook) };
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("/bin/true in a new user namespace exited {s}")),
        Err(e) => Err(format!("uid {uid} cannot create a user namespace: {e}")),
    }
}

/// What this host lacks for `mode`, if anything.
fn missing(mode: Mode) -> Option<String> {
    static ROOT: OnceLock<Option<String>> = OnceLock::new();
    static ROOTLESS: OnceLock<Option<String>> = OnceLock::new();
    let cell = match mode {
        Mode::Root => &ROOT,
        Mode::Rootless => &ROOTLESS,
    };
    cell.get_or_init(|| {
        let abi = landlock_abi();
        if abi < 6 {
            return Some(format!("Landlock ABI 6 is needed, the kernel offers {abi}"));
        }
        let uid = match mode {
            Mode::Root => 0,
            Mode::Rootless => harness::ROOTLESS_UID,
        };
        userns_works(uid)
            .err()
            .map(|e| format!("user namespaces: {e}"))
    })
    .clone()
}

/// The delegated cgroup parent for rootless runs, created once.
fn rootless_cgroup() -> PathBuf {
    static CG: OnceLock<PathBuf> = OnceLock::new();
    CG.get_or_init(|| {
        host::remove_stale_cgroups("hermetic-escape-");
        let name = format!("hermetic-escape-{}", std::process::id());
        let uid = harness::ROOTLESS_UID;
        hermetic_sandbox::cgroup::delegate(&name, uid, uid)
            .unwrap_or_else(|e| panic!("cannot delegate a cgroup to uid {uid}: {e}"))
    })
    .clone()
}

/// One mode's context for a test body.
struct Ctx {
    env: &'static Env,
    mode: Mode,
    cgroup: Option<PathBuf>,
}

impl Ctx {
    fn run(&self, run: &Run) -> Report {
        self.env.run(self.mode, run, self.cgroup.as_deref())
    }
}

/// Runs `body` as root and rootless, then fails with every failure of both.
fn battery(test: &str, body: impl Fn(&mut Checks, &Ctx)) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(
            test,
            "needs root (it runs the helper as root and as uid 65534)",
        );
        return;
    }
    let env = setup::env();
    let mut checks = Checks::default();
    for mode in Mode::ALL {
        if let Some(why) = missing(mode) {
            skip(&format!("{test} ({})", mode.name()), &why);
            continue;
        }
        let cgroup = (mode == Mode::Rootless).then(rootless_cgroup);
        body(&mut checks, &Ctx { env, mode, cgroup });
    }
    checks.finish(test);
}

/// A run of one attack that only has to match its table.
fn simple(c: &mut Checks, x: &Ctx, attack: &str, rows: &[expect::Row], extra: &[&str]) -> Report {
    let r = x.run(&Run::attack(attack));
    common(c, &r, "strict", 0, Outcome::Completed);
    table(c, &r, rows, extra);
    r
}

fn int(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or(i64::MIN)
}

#[test]
fn probe_refuses_outside_a_sandbox() {
    let probe = setup::probe();
    let mnt = host::ns_inode("mnt").to_string();
    let uts = host::ns_inode("uts").to_string();
    // Only "identity" (read-only) is asked for, in case the guard were broken.
    for (m, u) in [
        (&mnt, &uts),
        (&"1".to_owned(), &uts),
        (&mnt, &"1".to_owned()),
    ] {
        let out = Command::new(probe)
            .args([m, u, "identity"])
            .output()
            .expect("run probe");
        assert_eq!(
            out.status.code(),
            Some(99),
            "probe with host ns {m}/{u} did not refuse"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "REFUSED: not in a sandbox\n"
        );
    }
}
