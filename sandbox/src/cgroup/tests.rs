//! Tests of the cgroup module (the privileged ones need root).

use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{
    ForkResult, fork, geteuid, getuid, pause, pipe, setgroups, setresgid, setresuid,
};

use super::*;

/// The uid and gid the delegation test hands the subtree to.
const NOBODY: u32 = 65534;
const PARENT_ENV: &str = "HERMETIC_CGROUP_TEST_DELEGATED_PARENT";
const CHILD_OK: &str = "delegated child: rootless cgroup ok";

/// A hybrid host like this builder (Debian 12): v1 hierarchies, one of
/// them co-mounted, a named one, and a cgroup2 mount without controllers.
const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const HYBRID_CGROUP: &str = "\
9:name=systemd:/user.slice
4:memory:/process_api/abc
3:pids:/
2:cpu,cpuacct:/
0::/
";
/// Pure v2, plus a bind mount of a sub-cgroup at a path with a space.
const V2_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
99 30 0:26 /system.slice/x.service /mnt/my\\040cg rw,relatime - cgroup2 cgroup2 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "hermetic-test-{}-{tag}-{}",
        getpid(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a privileged test may run: a loud SKIP without root or
/// cgroups, a failure instead when `CI=true`.
fn privileged(test: &str) -> bool {
    let missing = if !geteuid().is_root() {
        Some("needs root".to_owned())
    } else {
        let support = detect(None);
        support.version.is_none().then(|| {
            format!(
                "needs usable cgroups: {}",
                support.reason.unwrap_or_default()
            )
        })
    };
    let Some(why) = missing else { return true };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI=true forbids skipping");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests.
    let banner = format!("\n********************\nSKIP: {test}: {why}\n********************\n");
    let _ = io::stderr().write_all(banner.as_bytes());
    false
}

/// The trimmed content of `file` in the first of `dirs` holding it.
fn file_in(dirs: &[PathBuf], file: &str) -> String {
    let path = dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
    let path = path.unwrap_or_else(|| panic!("no {file} in {dirs:?}"));
    read(&path).unwrap().trim().to_owned()
}

/// Kills and reaps a forked child unless the test already did.
struct Child(Option<Pid>);

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// Empties and removes delegated directories, even when a test fails.
struct Tree(Vec<PathBuf>);

impl Drop for Tree {
    fn drop(&mut self) {
        let (me, deadline) = (getpid().as_raw(), Instant::now() + KILL_TIMEOUT);
        while let Ok(pids) = pids_in(self.0.iter().map(PathBuf::as_path)) {
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids.into_iter().filter(|&p| p != me) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            sleep(Duration::from_millis(10));
        }
        for dir in &self.0 {
            if let Err(e) = remove_tree(dir) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

#[test]
fn parses_a_hybrid_host() {
    let host = Host {
        mounts: parse_mountinfo(HYBRID_MOUNTINFO),
        own: parse_memberships(HYBRID_CGROUP),
    };
    assert_eq!(host.mounts.len(), 5, "{:?}", host.mounts);
    let v2 = host.v2().unwrap();
    assert_eq!(v2.point, Path::new("/sys/fs/cgroup/unified"));
    let memory = host.v1("memory").unwrap();
    assert_eq!(memory.controllers, ["memory"]);
    assert_eq!(
        host.own_dir(memory).unwrap(),
        Path::new("/sys/fs/cgroup/memory/process_api/abc")
    );
    assert_eq!(
        host.own_dir(host.v1("pids").unwrap()).unwrap(),
        Path::new("/sys/fs/cgroup/pids")
    );
    assert_eq!(host.v1("cpu"), host.v1("cpuacct"));
    assert_eq!(
        host.own_dir(host.v1("cpu").unwrap()).unwrap(),
        Path::new("/sys/fs/cgroup/cpu,cpuacct")
    );
    assert_eq!(
        host.own_dir(v2).unwrap(),
        Path::new("/sys/fs/cgroup/unified")
    );
    // The named hierarchy binds no controller.
    assert!(host.v1("systemd").is_none() && host.v1("name=systemd").is_none());
    let dir = Path::new("/sys/fs/cgroup/memory/process_api/abc/h-1");
    assert_eq!(memory.cgpath_of(dir), "/process_api/abc/h-1");
}

#[test]
fn parses_a_pure_v2_host_with_a_bind_mounted_sub_cgroup() {
    let own = parse_memberships("0::/user.slice/u.scope\n");
    let host = Host {
        mounts: parse_mountinfo(V2_MOUNTINFO),
        own,
    };
    assert_eq!(host.mounts.len(), 2);
    assert!(host.v1("memory").is_none());
    let v2 = host.v2().unwrap();
    assert_eq!(
        v2.point,
        Path::new("/sys/fs/cgroup"),
        "prefers the mount of the whole namespace"
    );
    assert_eq!(
        host.own_dir(v2).unwrap(),
        Path::new("/sys/fs/cgroup/user.slice/u.scope")
    );
    let bind = &host.mounts[0];
    assert_eq!(bind.point, Path::new("/mnt/my cg"));
    assert_eq!(
        bind.dir_of(Path::new("/system.slice/x.service/a")),
        Path::new("/mnt/my cg/a")
    );
    assert_eq!(
        bind.dir_of(Path::new("/system.slice/x.service")),
        Path::new("/mnt/my cg")
    );
    assert_eq!(
        bind.cgpath_of(Path::new("/mnt/my cg/a")),
        "/system.slice/x.service/a"
    );
    assert_eq!(
        bind.cgpath_of(Path::new("/mnt/my cg")),
        "/system.slice/x.service"
    );
}

#[test]
fn reads_keyed_files() {
    let path = Path::new("memory.oom_control");
    let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(keyed(path, oom, "oom_kill").unwrap(), 3);
    let stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
    assert_eq!(keyed(path, stat, "system_usec").unwrap(), 500);
    let err = keyed(path, stat, "user").unwrap_err().to_string();
    assert_eq!(
        err,
        "failed to parse memory.oom_control: no numeric \"user\" line"
    );
}

#[test]
fn rejects_names_that_are_not_one_component() {
    for name in ["", ".", "..", "a/b", "../x"] {
        let result = Cgroup::create(None, name, &CgroupLimits::default());
        assert!(
            matches!(result, Err(CgroupError::InvalidName { .. })),
            "{name:?}: {result:?}"
        );
    }
}

#[test]
fn detect_reports_this_hosts_version() {
    if !privileged("detect_reports_this_hosts_version") {
        return;
    }
    // An independent look: does a cgroup2 mount offer memory (pure v2),
    // or is memory a v1 hierarchy (hybrid, like this Debian 12 builder)?
    let mountinfo = read(Path::new("/proc/self/mountinfo")).unwrap();
    let offers_memory = |line: &str| {
        let point = unescape(line.split(' ').nth(4).unwrap());
        fs::read_to_string(point.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "memory")
    };
    let v2 = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .any(offers_memory);
    let v1 = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup "))
        .any(|l| {
            l.rsplit(' ')
                .next()
                .unwrap()
                .split(',')
                .any(|o| o == "memory")
        });
    let expected = match (v2, v1) {
        (true, _) => CgroupVersion::V2,
        (false, true) => CgroupVersion::V1,
        (false, false) => panic!("no memory controller on this host:\n{mountinfo}"),
    };
    let support = detect(None);
    assert_eq!(support.version, Some(expected), "{support:?}");
    for c in ["memory", "pids"] {
        assert!(
            support.controllers.iter().any(|u| u == c),
            "{c} missing: {support:?}"
        );
    }
    assert!(
        support.reason.is_none() && !support.base.is_empty(),
        "{support:?}"
    );
    let json = serde_json::to_string(&support).unwrap();
    assert!(
        json.contains(if v2 { "\"v2\"" } else { "\"v1\"" }),
        "{json}"
    );
}

#[test]
fn create_limits_add_kill_remove() {
    if !privileged("create_limits_add_kill_remove") {
        return;
    }
    let name = unique("limits");
    let memory = (64 << 20) + 123;
    let limits = CgroupLimits {
        memory_bytes: Some(memory),
        pids: Some(32),
        cpu_millis: Some(500),
    };
    let cgroup = Cgroup::create(None, &name, &limits).expect("create");
    let paths = cgroup.paths();
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p.is_dir()),
        "{paths:?}"
    );

    // Read the limits back independently of create's own check.
    let page = sysconf(libc::_SC_PAGESIZE, 4096);
    let memory = (memory / page * page).to_string();
    assert_eq!(file_in(&paths, "pids.max"), "32");
    match cgroup.version() {
        CgroupVersion::V1 => {
            assert_eq!(file_in(&paths, "memory.limit_in_bytes"), memory);
            assert_eq!(file_in(&paths, "cpu.cfs_period_us"), "100000");
            assert_eq!(file_in(&paths, "cpu.cfs_quota_us"), "50000");
        }
        CgroupVersion::V2 => {
            assert_eq!(file_in(&paths, "memory.max"), memory);
            assert_eq!(file_in(&paths, "cpu.max"), "50000 100000");
        }
    }

    // The child waits until it is in the cgroup, then forks a grandchild
    // (which is not ours to wait for), and both sleep.
    let (ready_rx, ready_tx) = pipe().expect("pipe");
    // SAFETY: the child only calls read(2), fork(2) and pause(2), all
    // async-signal-safe, so forking the multi-threaded harness is sound.
    let pid = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let _ = nix::unistd::read(&ready_rx, &mut [0u8]);
            // SAFETY: as above; both processes only call pause(2).
            let _ = unsafe { fork() };
            loop {
                pause();
            }
        }
        ForkResult::Parent { child } => child,
    };
    let mut child = Child(Some(pid));
    cgroup.add_pid(pid.as_raw()).expect("add_pid");
    assert_eq!(cgroup.pids().unwrap(), [pid.as_raw()]);
    nix::unistd::write(&ready_tx, b"g").expect("release the child");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cgroup.pids().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no grandchild in {:?}",
            cgroup.pids()
        );
        sleep(Duration::from_millis(5));
    }
    assert!(
        read(Path::new(&format!("/proc/{pid}/cgroup")))
            .unwrap()
            .contains(&name)
    );
    cgroup.signal_all(libc::SIGCONT).expect("signal_all");
    assert!(matches!(
        cgroup.signal_all(0),
        Err(CgroupError::InvalidSignal { sig: 0 })
    ));
    let usage = cgroup.usage().expect("usage");
    assert_eq!(usage.oom_kills, 0, "{usage:?}");

    let start = Instant::now();
    cgroup.kill_all().expect("kill_all");
    assert!(start.elapsed() < KILL_TIMEOUT);
    assert!(cgroup.pids().unwrap().is_empty());
    let status = waitpid(pid, None).expect("waitpid");
    child.0 = None;
    assert_eq!(status, WaitStatus::Signaled(pid, Signal::SIGKILL, false));

    cgroup.remove().expect("remove");
    assert!(paths.iter().all(|p| !p.exists()), "{paths:?}");
}

#[test]
fn a_refused_limit_names_its_file_and_leaves_nothing_behind() {
    if !privileged("a_refused_limit_names_its_file_and_leaves_nothing_behind") {
        return;
    }
    let name = unique("refused");
    // Above PID_MAX_LIMIT: the kernel refuses it.
    let limits = CgroupLimits {
        pids: Some(1 << 40),
        ..Default::default()
    };
    let err = Cgroup::create(None, &name, &limits).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CgroupError::Limit { .. }), "{err:?}");
    assert!(
        text.contains("pids limit") && text.contains("pids.max") && text.contains("1099511627776"),
        "{text}"
    );
    let limits = CgroupLimits {
        cpu_millis: Some(5),
        ..Default::default()
    };
    let err = Cgroup::create(None, &name, &limits).unwrap_err();
    assert!(
        matches!(err, CgroupError::InvalidLimit { value: 5, .. }),
        "{err:?}"
    );
    // Each attempt created and removed its directories: the name is free.
    Cgroup::create(None, &name, &CgroupLimits::default())
        .expect("create")
        .remove()
        .expect("remove");
}

#[test]
fn delegate_lets_an_unprivileged_uid_create_cgroups() {
    if !privileged("delegate_lets_an_unprivileged_uid_create_cgroups") {
        return;
    }
    let (parent, dirs) = delegate_dirs(&unique("deleg"), NOBODY, NOBODY).expect("delegate");
    let _cleanup = Tree(dirs.clone());
    for dir in &dirs {
        assert_eq!(
            fs::metadata(dir).unwrap().uid(),
            NOBODY,
            "{}",
            dir.display()
        );
        assert_eq!(
            fs::metadata(dir.join("cgroup.procs")).unwrap().uid(),
            NOBODY
        );
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cgroup::tests::delegated_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PARENT_ENV, &parent)
        .output()
        .expect("run the delegated child");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains(CHILD_OK),
        "delegated child failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// The delegatee's side of the delegation test: started as root by it,
/// drops to the delegated uid, then creates, joins and removes a cgroup.
#[test]
#[ignore = "run by delegate_lets_an_unprivileged_uid_create_cgroups"]
fn delegated_child() {
    let Some(parent) = std::env::var_os(PARENT_ENV).map(PathBuf::from) else {
        return;
    };
    let version = detect(None).version.expect("usable cgroups");
    let me = getpid().as_raw();
    // v2 moves need write access to the common ancestor, so a delegatee
    // starts inside its subtree, in a leaf (the daemon would put it there).
    let leaf = parent.join("init");
    if version == CgroupVersion::V2 {
        mkdir(&leaf).unwrap();
        chown_to(&leaf.join("cgroup.procs"), NOBODY, NOBODY).unwrap();
        write_file(&leaf.join("cgroup.procs"), &me.to_string()).unwrap();
    }
    let (uid, gid) = (Uid::from_raw(NOBODY), Gid::from_raw(NOBODY));
    setgroups(&[]).unwrap();
    setresgid(gid, gid, gid).unwrap();
    setresuid(uid, uid, uid).unwrap();
    assert_eq!(getuid(), uid);

    let limits = CgroupLimits {
        pids: Some(16),
        ..Default::default()
    };
    let cgroup =
        Cgroup::create(Some(&parent), &format!("rootless-{me}"), &limits).expect("rootless create");
    assert_eq!(file_in(&cgroup.paths(), "pids.max"), "16");
    cgroup.add_pid(me).expect("rootless add_pid");
    assert!(cgroup.pids().unwrap().contains(&me));
    cgroup.usage().expect("rootless usage");
    // Step out again (kill_all refuses to kill us), then remove it.
    let outside: Vec<PathBuf> = match version {
        CgroupVersion::V2 => vec![leaf],
        CgroupVersion::V1 => cgroup
            .paths()
            .iter()
            .filter_map(|p| p.parent())
            .map(Path::to_owned)
            .collect(),
    };
    for dir in outside {
        write_file(&dir.join("cgroup.procs"), &me.to_string()).expect("step out");
    }
    cgroup.remove().expect("rootless remove");
    println!("{CHILD_OK}");
}

#[test]
fn only_helper_cgroup_names_have_a_stale_owner() {
    assert_eq!(stale_owner("hermetic-123-0-0badcafe"), Some(123));
    assert_eq!(stale_owner("hermetic-123-4"), Some(123));
    for other in [
        "hermetic-escape-123",
        "hermetic-test-123-x-1",
        "hermetic-leaf-test-9",
        "hermetic-123",
        "hermetic-123-",
        "hermetic--1-0",
        "daemon",
    ] {
        assert_eq!(stale_owner(other), None, "{other}");
    }
}
