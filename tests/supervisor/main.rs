//! `hermetic-sandbox --supervisor`, the daemon's mode, end to end: specs in
//! on one pipe, statuses out in completion order, bad lines answered, a
//! long action cancelled while short ones complete around it.
//!
//! Also: a killed supervisor takes its sandboxes along; root mode without a
//! capability it needs refuses to start.
//!
//! Needs root (the strict profile's cgroup limits); prints a SKIP line
//! otherwise, and fails instead when CI=true.
//!
//! The pool of pre-made sandboxes has its own tests in `pool.rs`.

mod pool;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_sandbox::profile::Profile;
use hermetic_sandbox::spec::{SPEC_VERSION, Spec, Stdio as StepStdio};
use hermetic_sandbox::status::{Outcome, Status};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "needs root; CI=true forbids skipping"
    );
    eprintln!("SKIP: the supervisor test needs root");
    false
}

fn spec(base: &Path, n: u32, script: &str) -> Spec {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    Spec {
        version: SPEC_VERSION,
        rootfs: base.join("rootfs"),
        input: None,
        scratch: base.join(format!("scratch-{n}")),
        output_dir: None,
        outputs: vec![],
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![],
        cwd: String::new(),
        profile: Profile::load(&manifest.join("../sandbox-profiles"), "strict").unwrap(),
        limits: Default::default(),
        stdout: StepStdio::File(base.join(format!("stdout-{n}"))),
        stderr: StepStdio::Null,
        cgroup_parent: None,
        variation: Default::default(),
    }
}

/// A fresh directory holding a busybox `rootfs`.
fn base_with_rootfs(name: &str) -> PathBuf {
    let base =
        std::env::temp_dir().join(format!("hermetic-supervisor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/busybox-rootfs.sh");
    let built = Command::new(&script)
        .arg(base.join("rootfs"))
        .status()
        .expect("busybox-rootfs.sh");
    assert!(
        built.success(),
        "scripts/busybox-rootfs.sh failed (apt-get install busybox-static)"
    );
    base
}

fn start_supervisor() -> std::process::Child {
    Command::new(target_dir().join("hermetic-sandbox"))
        .arg("--supervisor")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the supervisor (cargo build -p hermetic-sandbox)")
}

/// Pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

/// Polls `done` every 50 ms for up to two minutes (a bound for a stuck
/// test, not a timing assertion).
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_dying_supervisor_takes_its_sandboxes_along() {
    if !root_or_skip() {
        return;
    }
    let base = base_with_rootfs("death");
    let mut sup = start_supervisor();
    let mut input = sup.stdin.take().unwrap();
    let output = sup.stdout.take().unwrap();
    // A marker no other process on the machine has in its command line.
    let marker = format!("sleep 7{}", std::process::id());
    let line = serde_json::json!({"id": 1, "spec": spec(&base, 1, &marker)}).to_string();
    input.write_all(format!("{line}\n").as_bytes()).unwrap();
    input.flush().unwrap();
    assert!(
        eventually(|| !processes_with(&marker).is_empty()),
        "the step never started"
    );

    sup.kill().unwrap();
    sup.wait().unwrap();
    // The daemon reading the supervisor's stdout sees end-of-file although
    // a runner outlives the supervisor for a moment: no runner holds it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut { output }, &mut rest);
        let _ = tx.send(rest);
    });
    let rest = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the supervisor's stdout stayed open after it died");
    assert!(rest.is_empty(), "unexpected output: {rest:?}");
    // The runner cancels its action: the step is killed and its scratch
    // directory removed.
    assert!(
        eventually(|| processes_with(&marker).is_empty()),
        "the step outlived its supervisor: {:?}",
        processes_with(&marker)
    );
    assert!(
        eventually(|| !base.join("scratch-1").exists()),
        "scratch-1 left behind"
    );
    drop(input);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn root_mode_without_a_needed_capability_refuses_to_start_a_sandbox() {
    if !root_or_skip() {
        return;
    }
    let base = base_with_rootfs("caps");
    // Root, but CAP_KILL gone from the bounding set, hence from the
    // permitted and effective sets after exec: the helper could not stop
    // the sandbox at its deadline, so it must not start one.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-kill", "--"])
        .arg(target_dir().join("hermetic-sandbox"))
        .arg("--rootfs")
        .arg(base.join("rootfs"))
        .args(["--", "/bin/true"])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("CAP_KILL"), "{stderr}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn specs_in_statuses_out_with_cancel_and_bad_lines() {
    if !root_or_skip() {
        return;
    }
    let base = base_with_rootfs("cancel");
    let mut sup = start_supervisor();
    let mut input = sup.stdin.take().unwrap();
    let mut output = BufReader::new(sup.stdout.take().unwrap());
    let send = |input: &mut std::process::ChildStdin, line: String| {
        input.write_all(line.as_bytes()).unwrap();
        input.write_all(b"\n").unwrap();
        input.flush().unwrap();
    };
    let req = |id: u32, s: &Spec| serde_json::json!({"id": id, "spec": s}).to_string();

    // A long action first, then two short ones and a bad line, in one write.
    let started = Instant::now();
    let mut batch = vec![req(1, &spec(&base, 1, "sleep 600"))];
    batch.push(req(2, &spec(&base, 2, "echo two")));
    batch.push(req(3, &spec(&base, 3, "exit 3")));
    batch.push("this is not json".into());
    send(&mut input, batch.join("\n"));
    let mut seen = std::collections::BTreeMap::new();
    let read = |output: &mut BufReader<std::process::ChildStdout>| {
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON status line");
        let status: Status = serde_json::from_value(v["status"].clone()).unwrap();
        (v["id"].as_u64().unwrap(), status)
    };
    for _ in 0..3 {
        let (id, status) = read(&mut output);
        seen.insert(id, status);
    }
    // The short ones and the bad line come back while the long one runs.
    assert_eq!(seen[&2].outcome, Outcome::Completed);
    assert_eq!(seen[&2].exit_code, Some(0));
    assert_eq!(
        std::fs::read_to_string(base.join("stdout-2")).unwrap(),
        "two\n"
    );
    assert_eq!(seen[&3].exit_code, Some(3));
    assert_eq!(seen[&0].outcome, Outcome::SetupFailed);
    assert!(
        seen[&0]
            .error
            .as_deref()
            .unwrap()
            .contains("bad request line")
    );
    // Cancel the long one.
    send(
        &mut input,
        serde_json::json!({"id": 1, "cancel": true}).to_string(),
    );
    let (id, status) = read(&mut output);
    assert_eq!(id, 1);
    assert_eq!(status.outcome, Outcome::Cancelled, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "the cancel did not end the action"
    );
    // End of input ends the supervisor once nothing runs.
    drop(input);
    assert!(sup.wait().unwrap().success());
    for n in 1..=3 {
        assert!(
            !base.join(format!("scratch-{n}")).exists(),
            "scratch-{n} left behind"
        );
    }
    std::fs::remove_dir_all(&base).unwrap();
}

/// A cancel that comes right behind its spec lands while the runner is
/// still making the sandbox, outside any wait: it must still end the action
/// (as cancelled), not wait for the step's own 601 seconds.
#[test]
fn a_cancel_during_set_up_is_not_lost() {
    if !root_or_skip() {
        return;
    }
    let base = base_with_rootfs("early-cancel");
    let mut sup = start_supervisor();
    let mut input = sup.stdin.take().unwrap();
    let mut output = BufReader::new(sup.stdout.take().unwrap());
    let started = Instant::now();
    for id in 1..=5u32 {
        let request = serde_json::json!({"id": id, "spec": spec(&base, id, "sleep 601")});
        let cancel = serde_json::json!({"id": id, "cancel": true});
        // One write: the supervisor forks the runner and signals it within
        // the same read.
        input
            .write_all(format!("{request}\n{cancel}\n").as_bytes())
            .unwrap();
        input.flush().unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON status line");
        assert_eq!(v["id"].as_u64(), Some(u64::from(id)));
        let status: Status = serde_json::from_value(v["status"].clone()).unwrap();
        assert_eq!(status.outcome, Outcome::Cancelled, "{status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "cancel {id} was lost: the action ran on"
        );
    }
    drop(input);
    assert!(sup.wait().unwrap().success());
    assert!(
        processes_with("sleep 601").is_empty(),
        "a cancelled step survived"
    );
    std::fs::remove_dir_all(&base).unwrap();
}

/// Cgroups that killed helpers left behind (`hermetic-<pid>-…` of a dead
/// pid, empty, older than a minute) are removed when a supervisor first
/// uses their parent; a live helper's, or a fresh one, is left alone.
#[test]
fn cgroups_left_by_killed_helpers_are_removed() {
    use hermetic_sandbox::cgroup::{Cgroup, CgroupLimits, STALE_AFTER};
    if !root_or_skip() {
        return;
    }
    let limits = CgroupLimits {
        memory_bytes: Some(64 << 20),
        pids: Some(64),
        cpu_millis: None,
    };
    // Made as a helper makes them, then abandoned as a killed one would.
    let make = |name: &str, age: Duration| -> Vec<PathBuf> {
        let cg = Cgroup::create(None, name, &limits).expect("create a cgroup");
        let paths = cg.paths();
        std::mem::forget(cg);
        let when = std::time::SystemTime::now() - age;
        for p in &paths {
            std::fs::File::open(p)
                .and_then(|f| f.set_modified(when))
                .expect("age the cgroup");
        }
        paths
    };
    // Pids above the kernel's pid_max (4194304 at most) are never alive.
    let old = STALE_AFTER * 10;
    let stale = make("hermetic-99999991-0-0badcafe", old);
    let fresh = make("hermetic-99999992-0-0badcafe", Duration::ZERO);
    let live = make(&format!("hermetic-{}-0-0badcafe", std::process::id()), old);

    let base = base_with_rootfs("sweep");
    let mut sup = start_supervisor();
    let mut input = sup.stdin.take().unwrap();
    let mut output = BufReader::new(sup.stdout.take().unwrap());
    let request = serde_json::json!({"id": 1, "spec": spec(&base, 1, "true")});
    input.write_all(format!("{request}\n").as_bytes()).unwrap();
    input.flush().unwrap();
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    assert!(line.contains("\"completed\""), "{line}");
    drop(input);
    assert!(sup.wait().unwrap().success());

    let left = |paths: &[PathBuf]| paths.iter().filter(|p| p.exists()).count();
    assert_eq!(left(&stale), 0, "a left-over cgroup stayed: {stale:?}");
    assert_eq!(left(&fresh), fresh.len(), "a fresh cgroup was removed");
    assert_eq!(
        left(&live),
        live.len(),
        "a live helper's cgroup was removed"
    );
    for p in fresh.iter().chain(&live) {
        std::fs::remove_dir(p).unwrap();
    }
    std::fs::remove_dir_all(&base).unwrap();
}
