//! The supervisor's pool of pre-made sandboxes: each action gets a fresh
//! sandbox (nothing of the previous action's /tmp, /work or processes), a
//! sandbox made for one key never serves another, and the pool goes away
//! with the supervisor, whether it ends or is killed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use hermetic_sandbox::profile::Profile;
use hermetic_sandbox::spec::Spec;
use hermetic_sandbox::status::{Outcome, Status};

use super::{base_with_rootfs, eventually, root_or_skip, spec, target_dir};

/// A supervisor whose pool mount points go under `base/tmp` (its TMPDIR).
struct Supervisor {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    next: u64,
}

impl Supervisor {
    fn start(base: &Path) -> Self {
        let tmp = base.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut child = Command::new(target_dir().join("hermetic-sandbox"))
            .arg("--supervisor")
            .env("TMPDIR", &tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the supervisor (cargo build -p hermetic-sandbox)");
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().unwrap());
        Supervisor {
            child,
            input,
            output,
            next: 0,
        }
    }

    /// Runs one spec to its status (one at a time: the pool is refilled
    /// after each action, so the next request finds the sandbox made for
    /// it).
    fn run(&mut self, spec: &Spec) -> Status {
        self.next += 1;
        let line = serde_json::json!({"id": self.next, "spec": spec}).to_string();
        let input = self.input.as_mut().unwrap();
        input.write_all(format!("{line}\n").as_bytes()).unwrap();
        input.flush().unwrap();
        let mut answer = String::new();
        self.output.read_line(&mut answer).unwrap();
        let v: serde_json::Value = serde_json::from_str(&answer).expect("a JSON status line");
        assert_eq!(v["id"].as_u64(), Some(self.next));
        serde_json::from_value(v["status"].clone()).unwrap()
    }
}

/// The pool's mount points under `base/tmp`.
fn pool_dirs(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base.join("tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("hermetic-pool-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `(pid, start time)` of every descendant of `root` (the start time tells
/// a reused pid apart).
fn descendants(root: u32) -> Vec<(u32, u64)> {
    let procs: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The fields after the command name, which is in parentheses;
            // zombies (reaped later by their parent) are gone already.
            let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            if rest.first() == Some(&"Z") {
                return None;
            }
            Some((pid, rest.get(1)?.parse().ok()?, rest.get(19)?.parse().ok()?))
        })
        .collect();
    let mut found = vec![root];
    let mut out = Vec::new();
    let mut i = 0;
    while i < found.len() {
        for &(pid, ppid, start) in &procs {
            if ppid == found[i] && !found.contains(&pid) {
                found.push(pid);
                out.push((pid, start));
            }
        }
        i += 1;
    }
    out
}

/// Whether the process still runs (a zombie does not).
fn alive(p: &(u32, u64)) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", p.0)).is_ok_and(|stat| {
        let Some(i) = stat.rfind(')') else {
            return false;
        };
        let rest: Vec<&str> = stat[i + 2..].split(' ').collect();
        rest.first() != Some(&"Z") && rest.get(19).and_then(|s| s.parse::<u64>().ok()) == Some(p.1)
    })
}

fn input_with(base: &Path, name: &str, file: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), file).unwrap();
    dir
}

#[test]
fn a_pooled_sandbox_is_fresh_for_each_action() {
    if !root_or_skip() {
        return;
    }
    let base = base_with_rootfs("pool-fresh");
    let inputs = [
        input_with(&base, "in-a", "a"),
        input_with(&base, "in-b", "b"),
    ];
    let mut sup = Supervisor::start(&base);
    // Each action shows its pid, its input, /tmp and /work, then leaves a
    // mark in each (and a process that would outlive it in a reused
    // sandbox).
    let script = "echo pid $$; echo work $(ls /work); echo tmp $(ls -A /tmp); \
                  echo mark > /tmp/mark; echo mark > /work/mark; (sleep 600 &); true";
    for n in 1..=4u32 {
        let mut s = spec(&base, n, script);
        s.input = Some(inputs[(n % 2) as usize].clone());
        let status = sup.run(&s);
        assert_eq!(status.outcome, Outcome::Completed, "{status:?}");
        assert_eq!(status.exit_code, Some(0));
        // The first action finds an empty pool; each later one the sandbox
        // made after the one before.
        assert_eq!(status.timings.pooled, n > 1, "action {n}: {status:?}");
        if status.timings.pooled {
            assert_eq!(status.timings.namespaces_us, 0);
        }
        let out = std::fs::read_to_string(base.join(format!("stdout-{n}"))).unwrap();
        let own = if n % 2 == 1 { "b" } else { "a" };
        assert_eq!(
            out,
            format!("pid 2\nwork {own}\ntmp\n"),
            "action {n} ran in a sandbox that was not fresh"
        );
        // Every verification ran for this action too.
        assert_eq!(status.restrictions.namespaces.len(), 8, "{status:?}");
        assert_eq!(status.restrictions.network, ["lo(up)"]);
        assert!(status.restrictions.seccomp && status.restrictions.no_new_privs);
    }
    drop(sup.input.take());
    assert!(sup.child.wait().unwrap().success());
    assert!(pool_dirs(&base).is_empty(), "{:?}", pool_dirs(&base));
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_sandbox_made_for_one_key_serves_no_other() {
    if !root_or_skip() {
        return;
    }
    let base = base_with_rootfs("pool-keys");
    // A second image, told apart by a file.
    let copied = Command::new("cp")
        .arg("-a")
        .arg(base.join("rootfs"))
        .arg(base.join("rootfs2"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::write(base.join("rootfs/etc/image"), "one\n").unwrap();
    std::fs::write(base.join("rootfs2/etc/image"), "two\n").unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let debug = Profile::load(&manifest.join("../sandbox-profiles"), "debug").unwrap();

    let mut sup = Supervisor::start(&base);
    let mut n = 0;
    let mut run = |sup: &mut Supervisor, image: &str, change: &dyn Fn(&mut Spec)| {
        n += 1;
        let mut s = spec(&base, n, "cat /etc/image");
        s.rootfs = base.join(image);
        change(&mut s);
        let status = sup.run(&s);
        assert_eq!(status.outcome, Outcome::Completed, "{status:?}");
        let out = std::fs::read_to_string(base.join(format!("stdout-{n}"))).unwrap();
        (status.timings.pooled, out)
    };
    let same = |_: &mut Spec| {};
    assert_eq!(run(&mut sup, "rootfs", &same), (false, "one\n".into()));
    assert_eq!(run(&mut sup, "rootfs", &same), (true, "one\n".into()));
    // Another image: the sandbox waiting for the first is not used.
    assert_eq!(run(&mut sup, "rootfs2", &same), (false, "two\n".into()));
    assert_eq!(run(&mut sup, "rootfs2", &same), (true, "two\n".into()));
    // Two keys fit in the pool: the first image's sandbox still waits.
    assert_eq!(run(&mut sup, "rootfs", &same), (true, "one\n".into()));
    // Another profile, another /tmp size: each a key of its own.
    let other_profile = |s: &mut Spec| s.profile = debug.clone();
    assert_eq!(
        run(&mut sup, "rootfs", &other_profile),
        (false, "one\n".into())
    );
    let other_tmp = |s: &mut Spec| s.limits.tmp_bytes = Some(3 << 20);
    assert_eq!(run(&mut sup, "rootfs", &other_tmp), (false, "one\n".into()));
    assert_eq!(run(&mut sup, "rootfs", &other_tmp), (true, "one\n".into()));
    // What the action brings is no key: another command, timeout and
    // environment still get the pooled sandbox.
    let action_only = |s: &mut Spec| {
        s.limits.timeout_ms = Some(30_000);
        s.env = vec![("X".into(), "1".into())];
        s.limits.tmp_bytes = Some(3 << 20);
    };
    assert_eq!(
        run(&mut sup, "rootfs", &action_only),
        (true, "one\n".into())
    );
    drop(sup.input.take());
    assert!(sup.child.wait().unwrap().success());
    assert!(pool_dirs(&base).is_empty(), "{:?}", pool_dirs(&base));
    std::fs::remove_dir_all(&base).unwrap();
}

/// Starts a supervisor, runs one action, and waits until the pool holds
/// the sandbox made after it; returns the supervisor and the processes of
/// that sandbox (its runner, init).
fn supervisor_with_a_pooled_sandbox(base: &Path) -> (Supervisor, Vec<(u32, u64)>) {
    let mut sup = Supervisor::start(base);
    let status = sup.run(&spec(base, 1, "true"));
    assert_eq!(status.outcome, Outcome::Completed, "{status:?}");
    let sup_pid = sup.child.id();
    let mut pooled = Vec::new();
    assert!(
        eventually(|| {
            // The runner and init of the waiting sandbox (the finished
            // action's runner is gone once it has cleaned up).
            pooled = descendants(sup_pid);
            pool_dirs(base).len() == 1 && pooled.len() == 2
        }),
        "no pooled sandbox appeared: {:?} {pooled:?}",
        pool_dirs(base)
    );
    (sup, pooled)
}

#[test]
fn the_pool_ends_with_the_supervisor() {
    if !root_or_skip() {
        return;
    }
    let base = base_with_rootfs("pool-end");
    let (mut sup, pooled) = supervisor_with_a_pooled_sandbox(&base);
    // End of input: the supervisor discards the pool and waits for it.
    drop(sup.input.take());
    assert!(sup.child.wait().unwrap().success());
    assert!(pool_dirs(&base).is_empty(), "{:?}", pool_dirs(&base));
    // Init was the runner's child: the runner reaped it before exiting.
    let left: Vec<_> = pooled.iter().filter(|p| alive(p)).collect();
    assert!(left.is_empty(), "pooled processes left: {left:?}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_killed_supervisor_takes_its_pool_along() {
    if !root_or_skip() {
        return;
    }
    let base = base_with_rootfs("pool-kill");
    let (mut sup, pooled) = supervisor_with_a_pooled_sandbox(&base);
    sup.child.kill().unwrap();
    sup.child.wait().unwrap();
    assert!(
        eventually(|| pooled.iter().all(|p| !alive(p))),
        "pooled processes outlived the supervisor: {pooled:?}"
    );
    assert!(
        eventually(|| pool_dirs(&base).is_empty()),
        "pool mount points left: {:?}",
        pool_dirs(&base)
    );
    std::fs::remove_dir_all(&base).unwrap();
}
