//! What runs inside the sandbox: the namespace creator, init, and the step.
//!
//! ```text
//! helper (host) ──fork──▶ creator ──clone(CLONE_PARENT)──▶ init (pid 1) ──clone(CLONE_VM|CLONE_VFORK)──▶ step
//! ```
//! The *creator* drops to the unprivileged host ids, creates the user
//! namespace (so the sandbox's namespaces are owned by an unprivileged uid,
//! never by host root), then the other namespaces, and clones *init* as a
//! sibling so that the helper is init's parent. *Init* builds the part of
//! the root filesystem that does not depend on the action, makes the new
//! root read-only, verifies everything (namespaces, interfaces, read-only
//! mounts, no `/sys`, hostname), installs the anomaly watch, reports `warm`
//! and waits for the action ([`ActionPlan`], through [`crate::handoff`]):
//! a pooled sandbox waits there until a request comes, a cold one gets it at
//! once. Then it mounts `/work`, pivots (and checks that `/` is the sealed
//! root), starts the *step* in its own memory until the step's `execve`
//! (as `posix_spawn` does), reaps everything, and when the step exits kills
//! every remaining process of the sandbox. The *step*
//! confines itself (rlimits, capabilities, no_new_privs, Landlock, seccomp,
//! in that order: each needs the privilege the next one removes) and execs.
//!
//! Everything here runs in a child of a single-threaded process, so
//! allocation is sound; nothing here returns to the caller: every path ends
//! in `_exit` or `execve`.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Gid, Pid, Uid};

use crate::confine::{self, Rlimits};
use crate::mounts::{self, MountOp};
use crate::net;
use crate::seccomp::CompiledFilter;

/// Everything the processes inside need, prepared by the helper before fork.
#[derive(Debug)]
pub struct ChildPlan {
    /// Drop to these host ids before creating the user namespace (root mode).
    pub drop_to: Option<(u32, u32)>,
    /// Host uid and gid the sandbox ids map to.
    pub host_ids: (u32, u32),
    /// Sandbox uid and gid of the step.
    pub ids: (u32, u32),
    /// Hostname.
    pub hostname: String,
    /// The mount plan.
    pub mounts: Vec<MountOp>,
    /// Mount point of the scratch tmpfs (host path).
    pub scratch: PathBuf,
    /// The new root inside scratch.
    pub new_root: PathBuf,
    /// The overlay's upper dir inside scratch.
    pub upper: PathBuf,
    /// The helper's namespace inode numbers, by name.
    pub host_ns: Vec<(String, u64)>,
    /// umask.
    pub umask: u32,
    /// Landlock policy (`None`: disabled by the profile).
    pub landlock: Option<crate::profile::Landlock>,
    /// Seccomp filter (`None`: disabled by the profile).
    pub seccomp: Option<CompiledFilter>,
    /// The highest capability number (from /proc/sys/kernel/cap_last_cap).
    pub last_cap: u64,
    /// Non-semantic variations (CPUs, clocks, pids, ASLR).
    pub variation: crate::spec::Variation,
    /// The anomaly watches init installs before forking the step (`None`:
    /// none; see [`crate::anomaly::notify`]).
    pub watch: Option<crate::anomaly::notify::WatchPlan>,
}

/// What init learns only when the action arrives ([`crate::handoff`]): the
/// input tree, the command, its environment and streams, the rlimits.
#[derive(Debug)]
pub struct ActionPlan {
    /// The input tree (host path): the lower layer of `/work`.
    pub lower: PathBuf,
    /// The step's argv.
    pub argv: Vec<CString>,
    /// The step's environment, `K=V`.
    pub envp: Vec<CString>,
    /// `PATH` for resolving `argv[0]`.
    pub path: String,
    /// The step's working directory inside the sandbox.
    pub cwd: CString,
    /// rlimits.
    pub rlimits: Rlimits,
    /// fds for the step's stdout and stderr (`None`: inherit).
    pub stdout: Option<OwnedFd>,
    /// See `stdout`.
    pub stderr: Option<OwnedFd>,
}

/// The pipe ends the children use.
#[derive(Debug)]
pub struct ChildPipes {
    /// Helper → creator ("go" byte), then helper → init (EOF: release).
    pub from_helper: OwnedFd,
    /// Creator and init → helper: line messages.
    pub ctl: OwnedFd,
    /// Step → helper: confinement report, then EOF at exec.
    pub exec: OwnedFd,
    /// Helper → init: the action ([`crate::handoff`]), once.
    pub action: OwnedFd,
}

/// `personality(2)` flag turning off address-space randomization.
const ADDR_NO_RANDOMIZE: libc::c_ulong = 0x0040000;

fn send(fd: RawFd, msg: &str) {
    // One write of at most PIPE_BUF bytes is atomic; messages stay short.
    let bytes = msg.as_bytes();
    let n = bytes.len().min(libc::PIPE_BUF - 1);
    let mut buf = Vec::with_capacity(n + 1);
    buf.extend_from_slice(&bytes[..n]);
    buf.push(b'\n');
    // SAFETY: writing a buffer we own to an fd we hold.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}

fn die(fd: RawFd, msg: String) -> ! {
    send(fd, &format!("fail {}", msg.replace('\n', " ")));
    // SAFETY: _exit is always safe; it skips destructors on purpose.
    unsafe { libc::_exit(1) }
}

fn write_file(path: &str, data: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(data.as_bytes()))
        .map_err(|e| format!("failed to write {data:?} to {path}: {e}"))
}

/// The creator: runs in the helper's fork child and never returns.
pub fn creator(plan: &ChildPlan, pipes: &ChildPipes) -> ! {
    let ctl = pipes.ctl.as_raw_fd();
    // Die with the helper.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // Wait until the helper has moved us into the action's cgroup (so every
    // descendant is born in it and the cgroup namespace is rooted there).
    let mut go = [0u8; 1];
    if nix::unistd::read(&pipes.from_helper, &mut go) != Ok(1) {
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(1) };
    }
    if let Some((uid, gid)) = plan.drop_to {
        // Root mode: become the unprivileged host ids first, so the user
        // namespace is owned by them and nothing in it can act as host root.
        let r = nix::unistd::setgroups(&[])
            .and_then(|_| {
                nix::unistd::setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))
            })
            .and_then(|_| {
                nix::unistd::setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
            });
        if let Err(e) = r {
            die(
                ctl,
                format!("failed to drop to host uid {uid} gid {gid}: {e}"),
            );
        }
        // setresuid cleared dumpable; our own /proc files must stay ours to
        // write the id maps.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    }
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
        die(ctl, format!("failed to create a user namespace: {e}"));
    }
    let (host_uid, host_gid) = plan.host_ids;
    let (uid, gid) = plan.ids;
    let maps = write_file("/proc/self/setgroups", "deny")
        .and_then(|_| write_file("/proc/self/uid_map", &format!("{uid} {host_uid} 1\n")))
        .and_then(|_| write_file("/proc/self/gid_map", &format!("{gid} {host_gid} 1\n")));
    if let Err(e) = maps {
        die(ctl, e);
    }
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP
        | CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    if let Err(e) = nix::sched::unshare(flags) {
        die(
            ctl,
            format!("failed to create mount/pid/net/ipc/uts/cgroup/time namespaces: {e}"),
        );
    }
    // Clock offsets must be written before any process enters the time
    // namespace: init, cloned next, is the first.
    let offset = plan.variation.clock_offset_secs;
    if offset > 0
        && let Err(e) = write_file(
            "/proc/self/timens_offsets",
            &format!("monotonic {offset} 0\nboottime {offset} 0\n"),
        )
    {
        die(ctl, e);
    }
    // CLONE_PARENT makes init the helper's child: the helper waits for it,
    // gets its rusage and can kill the whole pid namespace by killing it.
    // SAFETY: a raw clone with a null stack behaves like fork; this process
    // is single-threaded, so the child may continue on a copy of our stack.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        -1 => die(ctl, format!("failed to clone init: {}", nix::Error::last())),
        0 => init(plan, pipes),
        pid => {
            send(ctl, &format!("pid {pid}"));
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(0) }
        }
    }
}

fn init(plan: &ChildPlan, pipes: &ChildPipes) -> ! {
    let ctl = pipes.ctl.as_raw_fd();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // Everything that does not depend on the action, then wait for it (a
    // pooled sandbox waits here until a request comes).
    if let Err(e) = setup_root(plan) {
        die(ctl, e);
    }
    let mut report = match seal_root(plan) {
        Ok(report) => report,
        Err(e) => die(ctl, e),
    };
    // The anomaly watches: init installs the notifying filter (it makes
    // none of the trapped calls itself) so that the step and everything it
    // starts inherit it; the helper takes the listener from us by number.
    // A kernel without user notification leaves the watch off, reported.
    let mut listener = None;
    if let Some(watch) = plan.watch {
        match crate::anomaly::notify::install(&crate::anomaly::notify::filter(watch)) {
            Ok(fd) => {
                report["notify_fd"] = fd.as_raw_fd().into();
                listener = Some(fd);
            }
            Err(e) => report["notify_error"] = format!("seccomp user notification: {e}").into(),
        }
    }
    send(ctl, "warm");
    let action = match crate::handoff::receive(pipes.action.as_fd()) {
        Ok(a) => a,
        Err(e) => die(ctl, format!("no action received: {e}")),
    };
    // SAFETY: closing our copy of an fd we hold; never used again.
    unsafe { libc::close(pipes.action.as_raw_fd()) };
    if let Err(e) = finish_root(plan, &action) {
        die(ctl, e);
    }
    send(ctl, &format!("ready {report}"));
    // SIGCHLD and SIGTERM are taken synchronously; the step unblocks them.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    if let Err(e) = mask.thread_block() {
        die(ctl, format!("failed to block signals in init: {e}"));
    }
    let listener_fd = listener.as_ref().map(|l| l.as_raw_fd());
    let step = match start_step(|| {
        // The step never holds the listener: closed before anything else
        // (it is close-on-exec as well). Its own fd table: init keeps it.
        if let Some(fd) = listener_fd {
            // SAFETY: closes the step's copy of the listener.
            unsafe { libc::close(fd) };
        }
        step(plan, &action, pipes)
    }) {
        Ok(pid) => pid,
        Err(e) => die(ctl, format!("failed to start the step: {e}")),
    };
    drop(listener);
    // Only the step holds the exec pipe and the streams now: the pipe's EOF
    // marks the execve.
    // SAFETY: closing our copy of an fd we hold; the OwnedFd is never used
    // again in this process, which ends in _exit.
    unsafe { libc::close(pipes.exec.as_raw_fd()) };
    drop(action);
    let status = reap_until_step_exits(step, &mask);
    // The step is done: nothing it started may outlive it.
    kill_all_and_reap();
    // Everything init reaped is every process of the sandbox but init: the
    // helper reports their CPU time without waiting for init's exit (and
    // the namespaces' teardown that comes with it).
    // SAFETY: getrusage with a valid out pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    send(
        ctl,
        &format!(
            "exit {status} {} {} {}",
            us(ru.ru_utime),
            us(ru.ru_stime),
            ru.ru_maxrss
        ),
    );
    // Stay alive, with every other process dead, while the helper reads the
    // outputs through /proc/<init>/root; EOF means it is done.
    let mut buf = [0u8; 16];
    while matches!(nix::unistd::read(&pipes.from_helper, &mut buf), Ok(n) if n > 0) {}
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(0) }
}

/// Starts the step the way `posix_spawn` starts a program: in init's memory
/// (`CLONE_VM | CLONE_VFORK`), on a stack of its own, init suspended until
/// the step's `execve` (or exit). No copy of init's page tables is made and
/// none is torn down at the `execve`, which a fork pays for on every action.
/// The step has its own fd table, signal dispositions, credentials, seccomp
/// filter and Landlock domain (none of those is shared without the flags
/// not given here); what it allocates stays in init's heap, unused.
fn start_step(step: impl FnMut() -> isize) -> Result<Pid, nix::Error> {
    // One guard page below the stack: an overflow faults instead of
    // writing over init's memory.
    const STACK: usize = 1 << 20;
    const GUARD: usize = 4096;
    // SAFETY: a fresh private anonymous mapping; nothing aliases it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK + GUARD,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(nix::Error::last());
    }
    // SAFETY: the first page of the mapping just made.
    if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
        return Err(nix::Error::last());
    }
    let usable = base.cast::<u8>().wrapping_add(GUARD);
    // SAFETY: the mapping's usable part, above the guard page, read-write
    // and aliased by nothing; it outlives the step's use of it (init never
    // unmaps it: it ends in _exit).
    let stack = unsafe { std::slice::from_raw_parts_mut(usable, STACK) };
    // SAFETY: init is single-threaded and suspended (CLONE_VFORK) while the
    // step runs in its memory, so nothing changes under either of them; the
    // step ends in execve or _exit and never returns into init's frames.
    unsafe {
        nix::sched::clone(
            Box::new(step),
            stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    }
}

/// Reaps children until the step exits; forwards SIGTERM to everything.
/// Returns the step's raw wait status.
fn reap_until_step_exits(step: Pid, mask: &SigSet) -> i32 {
    loop {
        match mask.wait() {
            Ok(Signal::SIGTERM) => {
                // SAFETY: kill(-1) from pid 1 signals every other process of
                // this pid namespace.
                unsafe { libc::kill(-1, libc::SIGTERM) };
            }
            _ => loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid out pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid == step.as_raw() {
                    return status;
                }
                if pid <= 0 {
                    break;
                }
            },
        }
    }
}

fn kill_all_and_reap() {
    loop {
        // SAFETY: kill(-1) from pid 1 signals every other process of this
        // pid namespace.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Err(nix::Error::ECHILD) => return,
            Err(nix::Error::EINTR) | Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn ns_inode(name: &str) -> Result<u64, String> {
    std::fs::metadata(format!("/proc/self/ns/{name}"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| format!("cannot read /proc/self/ns/{name}: {e}"))
}

/// Builds the part of the root filesystem that does not depend on the
/// action: everything but `/work`, not yet pivoted into.
fn setup_root(plan: &ChildPlan) -> Result<(), String> {
    if plan.variation.pid_offset > 0 {
        // ns_last_pid acts on the writer's pid namespace, whichever procfs
        // it is reached through; /proc/sys is read-only once mounted ours.
        let last = plan.variation.pid_offset.to_string();
        write_file("/proc/sys/kernel/ns_last_pid", &last)?;
    }
    nix::unistd::sethostname(&plan.hostname)
        .map_err(|e| format!("failed to set the hostname: {e}"))?;
    // SAFETY: setdomainname reads `len` bytes from a static string.
    unsafe { libc::setdomainname(c"(none)".as_ptr(), 6) };
    net::loopback_up().map_err(|e| format!("failed to bring up lo: {e}"))?;
    mounts::make_private().map_err(|e| e.to_string())?;
    mounts::execute(&plan.mounts).map_err(|e| e.to_string())
}

/// The rest of what does not depend on the action, checked before it
/// comes: the new root made read-only, the upper layer held open, then
/// every verification of the namespaces and the root (through its host
/// path: the mounts are the ones the pivot will make `/`). Returns the
/// report's start.
fn seal_root(plan: &ChildPlan) -> Result<serde_json::Value, String> {
    mounts::remount_readonly(
        &plan.new_root,
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
    )
    .map_err(|e| e.to_string())?;
    // Keep the upper layer reachable for the helper (via /proc/1/fd) after
    // pivot_root detaches the scratch mount.
    let upper = nix::fcntl::open(
        &plan.upper,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open the upper layer: {e}"))?;
    let upper_fd = upper.as_raw_fd();
    std::mem::forget(upper); // held until init exits
    verify_root(plan, upper_fd)
}

/// The action's part: `/work` over its input, then `pivot_root`, and the
/// check that `/` is the sealed root.
fn finish_root(plan: &ChildPlan, action: &ActionPlan) -> Result<(), String> {
    let layout = mounts::ScratchLayout::new(&plan.scratch);
    mounts::execute(&[mounts::work_overlay(&layout, &action.lower)]).map_err(|e| e.to_string())?;
    mounts::pivot_into(&plan.new_root).map_err(|e| e.to_string())?;
    let root = nix::sys::statvfs::statvfs("/").map_err(|e| format!("statvfs /: {e}"))?;
    if !root.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Err("the root is writable".into());
    }
    if std::path::Path::new("/sys").exists() {
        return Err("/sys is visible".into());
    }
    Ok(())
}

fn verify_root(plan: &ChildPlan, upper_fd: RawFd) -> Result<serde_json::Value, String> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let mut namespaces = Vec::new();
    for (name, host) in &plan.host_ns {
        let ours = ns_inode(name)?;
        if ours == *host {
            return Err(format!(
                "{name} namespace is the helper's own (inode {ours})"
            ));
        }
        namespaces.push(name.clone());
    }
    let ifaces = net::interfaces().map_err(|e| format!("cannot list interfaces: {e}"))?;
    if ifaces != ["lo(up)"] {
        return Err(format!(
            "network namespace has {ifaces:?}, expected only lo, up"
        ));
    }
    let ro = statvfs(&plan.new_root).map_err(|e| format!("statvfs /: {e}"))?;
    if !ro.flags().contains(FsFlags::ST_RDONLY) {
        return Err("the root is writable".into());
    }
    for dir in ["usr", "etc", "bin"] {
        if let Ok(st) = statvfs(&plan.new_root.join(dir)) {
            let want = FsFlags::ST_RDONLY | FsFlags::ST_NOSUID | FsFlags::ST_NODEV;
            if !st.flags().contains(want) {
                return Err(format!("/{dir} is not read-only, nosuid, nodev"));
            }
        }
    }
    if plan.new_root.join("sys").symlink_metadata().is_ok() {
        return Err("/sys is visible".into());
    }
    let host = nix::unistd::gethostname().map_err(|e| format!("gethostname: {e}"))?;
    if host.to_string_lossy() != plan.hostname {
        return Err(format!("hostname is {host:?}"));
    }
    Ok(serde_json::json!({
        "namespaces": namespaces,
        "network": ifaces,
        "upper_fd": upper_fd,
    }))
}

fn step(plan: &ChildPlan, action: &ActionPlan, pipes: &ChildPipes) -> ! {
    let fd = pipes.exec.as_raw_fd();
    let fail = |msg: String| -> ! {
        send(fd, &format!("fail {}", msg.replace('\n', " ")));
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(125) }
    };
    // Default dispositions (the Rust runtime ignores SIGPIPE, and an ignored
    // signal would survive execve), then an empty mask.
    for sig in Signal::iterator() {
        if !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            // SAFETY: restoring the default disposition installs no handler.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
        }
    }
    if let Err(e) = SigSet::all().thread_unblock() {
        fail(format!("failed to unblock signals: {e}"));
    }
    if let Err(e) = nix::unistd::setsid() {
        fail(format!("setsid failed: {e}"));
    }
    if let Err(e) = stdio(action) {
        fail(e);
    }
    // Every inherited fd beyond 0, 1, 2 is closed at execve.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } != 0
    {
        fail(format!("close_range failed: {}", nix::Error::last()));
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(plan.umask));
    if let Err(e) = nix::unistd::chdir(action.cwd.as_c_str()) {
        fail(format!(
            "cannot enter working directory {:?}: {e}",
            action.cwd
        ));
    }
    if let Some(n) = plan.variation.cpus {
        let mut set = nix::sched::CpuSet::new();
        let online = nix::sched::sched_getaffinity(Pid::from_raw(0)).unwrap_or(set);
        let mut added = 0;
        for cpu in 0..nix::sched::CpuSet::count() {
            if added < n && online.is_set(cpu).unwrap_or(false) {
                let _ = set.set(cpu);
                added += 1;
            }
        }
        if let Err(e) = nix::sched::sched_setaffinity(Pid::from_raw(0), &set) {
            fail(format!("failed to restrict to {n} cpus: {e}"));
        }
    }
    if plan.variation.no_aslr {
        // SAFETY: personality with an integer argument; 0xffffffff queries.
        let current = unsafe { libc::personality(0xffff_ffff) };
        let wanted = (current as libc::c_ulong) | ADDR_NO_RANDOMIZE;
        // SAFETY: as above.
        if current == -1 || unsafe { libc::personality(wanted) } == -1 {
            fail(format!("failed to disable ASLR: {}", nix::Error::last()));
        }
    }
    if let Err(e) = confine::set_rlimits(&action.rlimits) {
        fail(e.to_string());
    }
    if let Err(e) = confine::drop_capabilities(plan.last_cap) {
        fail(e.to_string());
    }
    if let Err(e) = confine::set_no_new_privs() {
        fail(e.to_string());
    }
    let landlock = match &plan.landlock {
        Some(policy) => match confine::apply_landlock(policy) {
            Ok(s) => Some(s),
            Err(e) => fail(e.to_string()),
        },
        None => None,
    };
    // Seccomp last: it denies calls the steps above need.
    if let Some(filter) = &plan.seccomp {
        if let Err(e) = crate::seccomp::apply(filter) {
            fail(e.to_string());
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } != 2 {
            fail("seccomp filter mode is not in force".into());
        }
    }
    let report = serde_json::json!({
        "landlock": landlock,
        "seccomp": plan.seccomp.is_some(),
        "no_new_privs": true,
        "capabilities_dropped": true,
        "uid": nix::unistd::getuid().as_raw(),
        "gid": nix::unistd::getgid().as_raw(),
    });
    send(fd, &format!("report {report}"));
    exec(action, fd)
}

fn stdio(plan: &ActionPlan) -> Result<(), String> {
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let dup = |from: RawFd, to: RawFd| {
        // SAFETY: dup2 between fds we hold.
        if unsafe { libc::dup2(from, to) } < 0 {
            Err(format!("dup2 to fd {to} failed: {}", nix::Error::last()))
        } else {
            Ok(())
        }
    };
    dup(null.as_raw_fd(), 0)?;
    if let Some(out) = &plan.stdout {
        dup(out.as_raw_fd(), 1)?;
    }
    if let Some(err) = &plan.stderr {
        dup(err.as_raw_fd(), 2)?;
    }
    Ok(())
}

fn exec(plan: &ActionPlan, fd: RawFd) -> ! {
    let name = plan.argv[0].to_bytes();
    let mut err = nix::Error::ENOENT;
    let candidates: Vec<CString> = if name.contains(&b'/') {
        vec![plan.argv[0].clone()]
    } else {
        plan.path
            .split(':')
            .filter(|d| !d.is_empty())
            .filter_map(|d| CString::new([d.as_bytes(), b"/", name].concat()).ok())
            .collect()
    };
    for path in &candidates {
        // A missing candidate fails as execve would, without the execve
        // (under the exec watch each one is a round trip to the helper).
        let e = match nix::unistd::access(path.as_c_str(), nix::unistd::AccessFlags::F_OK) {
            Err(e @ (nix::Error::ENOENT | nix::Error::ENOTDIR)) if candidates.len() > 1 => e,
            _ => nix::unistd::execve(path, &plan.argv, &plan.envp).unwrap_err(),
        };
        // Like execvp: keep looking past a missing file, remember a
        // permission problem.
        if !matches!(e, nix::Error::ENOENT | nix::Error::ENOTDIR) || err == nix::Error::ENOENT {
            err = e;
        }
    }
    send(fd, &format!("execfail {}", err as i32));
    let code = if err == nix::Error::ENOENT { 127 } else { 126 };
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(code) }
}
