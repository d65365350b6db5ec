//! One execution, from the helper's side: prepare, start the sandbox, wait
//! with a deadline, collect outputs, clean up, report.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use crate::cgroup::{Cgroup, CgroupLimits};
use crate::child::{self, ActionPlan, ChildPipes, ChildPlan};
use crate::confine::Rlimits;
use crate::mounts::{self, PlanInput};
use crate::profile::Weakening;
use crate::spec::{Spec, Stdio};
use crate::status::{LimitsInForce, Outcome, Restrictions, Status};

/// Namespaces the sandbox creates, by their `/proc/self/ns` names.
pub const NAMESPACES: &[&str] = &["user", "mnt", "pid", "net", "ipc", "uts", "cgroup", "time"];

pub use crate::rootmode::HOST_ID_BASE;

static CANCELLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_cancel(_: libc::c_int) {
    CANCELLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// SIGTERM and SIGINT cancel the running execution: the sandbox is torn
/// down and the status says `cancelled`. Installed without SA_RESTART so
/// that the helper's waits return at once.
pub fn install_cancel_handler() {
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_cancel),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
}

/// Whether SIGTERM or SIGINT asked this process to stop.
pub fn cancelled() -> bool {
    CANCELLED.load(std::sync::atomic::Ordering::SeqCst)
}

/// The host uid and gid the step's ids map to: as root, the unprivileged
/// range `HOST_ID_BASE + id`; rootless, the caller's own ids. Whoever stages
/// an input tree that the step must be able to write into (creating files
/// next to its inputs) gives its directories to these ids.
pub fn host_ids(user: &crate::profile::User) -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        (HOST_ID_BASE + user.uid, HOST_ID_BASE + user.gid)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

/// Root mode's preconditions ([`crate::rootmode`]): the capabilities, and
/// host ids nobody else owns, checked once per id pair for the life of the
/// process (a supervisor checks at its first action with that user).
fn check_root_mode_once(ids: (u32, u32)) -> Result<(), String> {
    static CHECKED: std::sync::Mutex<Vec<(u32, u32)>> = std::sync::Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    if !checked.contains(&ids) {
        crate::rootmode::check_capabilities()?;
        crate::rootmode::check_unassigned(ids.0, ids.1)?;
        checked.push(ids);
    }
    Ok(())
}

/// Runs one spec to completion. Never panics on bad input: every failure is
/// a [`Status`] with an outcome and a message.
pub fn run(spec: &Spec) -> Status {
    let mut out = None;
    run_then(spec, |s| out = Some(s.clone()));
    out.expect("run_then always reports")
}

/// Runs one spec, hands the status to `report`, then removes what the run
/// left (the action's cgroup, the scratch directory): the caller learns the
/// result without waiting for that clean-up.
pub fn run_then(spec: &Spec, report: impl FnOnce(&Status)) {
    run_prepared(spec, None, report)
}

/// The per-profile work a long-lived caller does once: the compiled
/// seccomp filter, the profile's digest and the capability count.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The filter (`None` when the profile disables seccomp).
    pub seccomp: Option<crate::seccomp::CompiledFilter>,
    /// `Profile::digest()`.
    pub profile_digest: String,
    /// `/proc/sys/kernel/cap_last_cap`.
    pub last_cap: u64,
}

impl Prepared {
    /// Compiles what a profile needs before any execution.
    pub fn new(profile: &crate::profile::Profile) -> Result<Self, String> {
        // Root mode's preconditions, checked here once: a supervisor forks
        // its runners after this, so they inherit the cache and skip the
        // file reads on every action.
        if nix::unistd::geteuid().is_root() {
            check_root_mode_once(host_ids(&profile.user))?;
        }
        let seccomp = if profile.seccomp.enabled {
            Some(crate::seccomp::compile(&profile.seccomp).map_err(|e| format!("seccomp: {e}"))?)
        } else {
            None
        };
        Ok(Prepared {
            seccomp,
            profile_digest: profile.digest(),
            last_cap: crate::confine::last_cap(),
        })
    }
}

/// [`run_then`] with the profile's policy already compiled (the supervisor
/// compiles each profile once and forks runners that inherit it).
pub fn run_prepared(spec: &Spec, prepared: Option<&Prepared>, report: impl FnOnce(&Status)) {
    let start = Instant::now();
    let mut status = Status {
        version: crate::spec::SPEC_VERSION,
        variation: spec.variation.clone(),
        ..Default::default()
    };
    if let Err(e) = spec.validate() {
        return report(&Status::setup_failed(e.to_string()));
    }
    let owned;
    let prepared = match prepared {
        Some(p) => p,
        None => match Prepared::new(&spec.profile) {
            Ok(p) => {
                owned = p;
                &owned
            }
            Err(e) => return report(&Status::setup_failed(e)),
        },
    };
    match run_inner(spec, prepared, start, &mut status) {
        Ok(guard) => {
            report(&status);
            drop(guard);
        }
        Err(e) => {
            set_up_failed(&mut status, e);
            report(&status);
        }
    }
}

/// The status of a run that ended before its step ran: cancelled when a
/// cancel (SIGTERM, SIGINT) ended the set-up, else failed.
fn set_up_failed(status: &mut Status, error: String) {
    status.outcome = if cancelled() {
        Outcome::Cancelled
    } else {
        Outcome::SetupFailed
    };
    status.error = Some(error);
}

/// Everything that must be undone when the run ends, whatever happened.
struct Guard {
    cgroup: Option<Cgroup>,
    init: Option<Pid>,
    /// Directories this run created (scratch, a pooled sandbox's mount
    /// point), removed last.
    scratch_created: Vec<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.init.take() {
            // Killing init kills the whole pid namespace.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all();
            if let Err(e) = cg.remove() {
                eprintln!("hermetic-sandbox: warning: cannot remove the action's cgroup: {e}");
            }
        }
        for dir in self.scratch_created.drain(..) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// What a prepared sandbox was made for: every field of a spec that the
/// part made before the action ([`warm_up`]) depends on. A pooled sandbox
/// serves only a spec with an equal key; everything else (input, command,
/// environment, streams, timeout, fsize and nofile limits, scratch, outputs)
/// comes with the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolKey {
    rootfs: PathBuf,
    profile: crate::profile::Profile,
    cgroup_parent: Option<PathBuf>,
    variation: crate::spec::Variation,
    memory_bytes: Option<u64>,
    pids: Option<u64>,
    cpu_millis: Option<u64>,
    tmp_bytes: u64,
    scratch_bytes: u64,
}

impl PoolKey {
    /// The key of `spec`.
    pub fn of(spec: &Spec) -> Self {
        let l = spec.effective_limits();
        PoolKey {
            rootfs: spec.rootfs.clone(),
            profile: spec.profile.clone(),
            cgroup_parent: spec.cgroup_parent.clone(),
            variation: spec.variation.clone(),
            memory_bytes: l.memory_bytes,
            pids: l.pids,
            cpu_millis: l.cpu_millis,
            tmp_bytes: l.tmp_bytes,
            scratch_bytes: l.scratch_bytes,
        }
    }
}

/// A sandbox made up to the point where init waits for its action:
/// namespaces, id maps, cgroup, the whole root filesystem but `/work`.
/// Dropping it tears everything down.
pub struct Warm {
    guard: Guard,
    init: Pid,
    ctl: BufReader<std::fs::File>,
    release: OwnedFd,
    action: OwnedFd,
    exec_r: OwnedFd,
    enforcement: &'static str,
    weaker: Vec<String>,
    host_ids: (u32, u32),
    key: PoolKey,
    forked_at: Instant,
    namespaces_us: u64,
    warm_us: u64,
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm")
            .field("init", &self.init)
            .field("mount_point", &self.guard.scratch_created)
            .finish()
    }
}

/// Creates `dir` (or accepts it empty) for this run, given to the host ids
/// in root mode.
fn claim_dir(dir: &Path, host_ids: (u32, u32), guard: &mut Guard) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => guard.scratch_created.push(dir.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::read_dir(dir)
                .map_err(|e| format!("cannot read scratch {}: {e}", dir.display()))?
                .next()
                .is_some()
            {
                return Err(format!("scratch directory {} is not empty", dir.display()));
            }
        }
        Err(e) => return Err(format!("cannot create scratch {}: {e}", dir.display())),
    }
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(dir, Some(host_ids.0.into()), Some(host_ids.1.into()))
            .map_err(|e| format!("cannot chown scratch {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Makes the part of a sandbox for `spec` that does not depend on the
/// action (only [`PoolKey`] fields of `spec` are read), with its scratch
/// tmpfs on `mount_point`. The cold path calls it with the spec's own
/// scratch right before [`act`]; the supervisor's pool calls it ahead of
/// the request with a directory of its own.
pub fn warm_up(spec: &Spec, prepared: &Prepared, mount_point: &Path) -> Result<Warm, String> {
    let profile = &spec.profile;
    let limits = spec.effective_limits();
    let root_mode = nix::unistd::geteuid().is_root();
    let ids = (profile.user.uid, profile.user.gid);
    let host_ids = host_ids(&profile.user);
    if host_ids.0 == 0 || host_ids.1 == 0 {
        return Err("refusing to map sandbox ids to host uid or gid 0".into());
    }
    if root_mode {
        check_root_mode_once(host_ids)?;
    }
    let mut guard = Guard {
        cgroup: None,
        init: None,
        scratch_created: Vec::new(),
    };
    let mut weaker = Vec::new();

    // Scratch: an empty directory the creator (host ids) can enter; the
    // sandbox mounts its tmpfs there in its own mount namespace.
    claim_dir(mount_point, host_ids, &mut guard)?;
    check_dir(&spec.rootfs, "rootfs")?;

    // Limits: a cgroup of our own, or (when the profile allows it) rlimits.
    let cg_limits = CgroupLimits {
        memory_bytes: limits.memory_bytes,
        pids: limits.pids,
        cpu_millis: limits.cpu_millis,
    };
    // The pid says whose it is; the random part keeps a cgroup that a
    // killed helper left behind from failing a later helper given its pid.
    let cg_name = format!(
        "hermetic-{}-{}-{:08x}",
        std::process::id(),
        unique(),
        random_u32()
    );
    let enforcement = match Cgroup::create(spec.cgroup_parent.as_deref(), &cg_name, &cg_limits) {
        Ok(cg) => {
            let e = match cg.version() {
                crate::cgroup::CgroupVersion::V1 => "cgroup-v1",
                crate::cgroup::CgroupVersion::V2 => "cgroup-v2",
            };
            guard.cgroup = Some(cg);
            e
        }
        Err(e) if profile.allow_weaker.contains(&Weakening::Cgroup) => {
            weaker.push(format!("cgroup: {e}; limits fall back to rlimits"));
            "rlimit"
        }
        Err(e) => return Err(format!("cannot create the action's cgroup: {e}")),
    };
    if enforcement == "rlimit" && limits.cpu_millis.is_some() {
        weaker.push("cpu quota not enforced without a cgroup".into());
    }

    let mount_plan = mounts::plan(&PlanInput {
        rootfs: &spec.rootfs,
        scratch: mount_point,
        tmp_bytes: limits.tmp_bytes,
        scratch_bytes: limits.scratch_bytes,
        passwd: passwd(profile),
        group: format!(
            "root:x:0:\n{0}:x:{1}:\nnogroup:x:65534:\n",
            profile.user.name, ids.1
        )
        .into_bytes(),
        hosts: b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_vec(),
    })
    .map_err(|e| e.to_string())?;
    let layout = mounts::ScratchLayout::new(mount_point);

    let mut host_ns = Vec::new();
    for ns in NAMESPACES {
        let m = std::fs::metadata(format!("/proc/self/ns/{ns}"))
            .map_err(|e| format!("cannot read /proc/self/ns/{ns}: {e}"))?;
        host_ns.push((ns.to_string(), std::os::unix::fs::MetadataExt::ino(&m)));
    }
    let plan = ChildPlan {
        drop_to: root_mode.then_some(host_ids),
        host_ids,
        ids,
        hostname: profile.environment.hostname.clone(),
        mounts: mount_plan,
        scratch: mount_point.to_path_buf(),
        new_root: layout.root.clone(),
        upper: layout.upper.clone(),
        host_ns,
        umask: profile.environment.umask,
        landlock: profile.landlock.enabled.then(|| profile.landlock.clone()),
        seccomp: prepared.seccomp.clone(),
        last_cap: prepared.last_cap,
        variation: spec.variation.clone(),
        watch: watch_plan(profile, prepared),
    };

    let (from_helper_r, from_helper_w) = pipe()?;
    let (ctl_r, ctl_w) = pipe()?;
    let (exec_r, exec_w) = pipe()?;
    let (action_w, action_r) = crate::handoff::pair()?;
    let pipes = ChildPipes {
        from_helper: from_helper_r,
        ctl: ctl_w,
        exec: exec_w,
        action: action_r,
    };
    let forked_at = Instant::now();
    // SAFETY: the helper is single-threaded, so the child may run arbitrary
    // code; it never returns (child::creator ends in _exit or execve).
    let creator = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork failed: {e}"))? {
        nix::unistd::ForkResult::Child => child::creator(&plan, &pipes),
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(pipes);
    drop(plan);
    let moved = match &guard.cgroup {
        Some(cg) => cg
            .add_pid(creator.as_raw())
            .map_err(|e| format!("cannot move the sandbox into its cgroup: {e}")),
        None => Ok(()),
    };
    if let Err(e) = moved {
        let _ = nix::sys::signal::kill(creator, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(creator, None);
        return Err(e);
    }
    nix::unistd::write(&from_helper_w, b"g")
        .map_err(|e| format!("cannot start the sandbox: {e}"))?;

    let mut ctl = BufReader::new(std::fs::File::from(ctl_r));
    let setup_deadline = Instant::now() + Duration::from_secs(60);
    // The creator reports init's pid and exits; init reports the part of
    // the root that does not depend on the action. The two write to the
    // same pipe, in either order.
    let mut init = None;
    let mut warm = false;
    let mut namespaces_us = 0;
    while init.is_none() || !warm {
        let line = read_line(&mut ctl, setup_deadline)?;
        if let Some(pid) = line.as_deref().and_then(|l| l.strip_prefix("pid ")) {
            let pid = Pid::from_raw(pid.trim().parse().map_err(|_| format!("bad pid {pid:?}"))?);
            let _ = nix::sys::wait::waitpid(creator, None);
            guard.init = Some(pid);
            namespaces_us = forked_at.elapsed().as_micros() as u64;
            init = Some(pid);
        } else if line.as_deref() == Some("warm") {
            warm = true;
        } else {
            if init.is_none() {
                let _ = nix::sys::wait::waitpid(creator, None);
            }
            return Err(match line {
                Some(l) => l.strip_prefix("fail ").unwrap_or(&l).to_owned(),
                None if init.is_none() => "the sandbox's creator died before starting init".into(),
                None => "init died during set-up".into(),
            });
        }
    }
    let Some(init) = init else {
        unreachable!("the loop ends only when init is known");
    };
    Ok(Warm {
        guard,
        init,
        ctl,
        release: from_helper_w,
        action: action_w,
        exec_r,
        enforcement,
        weaker,
        host_ids,
        key: PoolKey::of(spec),
        forked_at,
        namespaces_us,
        warm_us: forked_at.elapsed().as_micros() as u64,
    })
}

/// Runs `spec` in a sandbox [`warm_up`] made ahead of the request (the
/// supervisor's pool): `start` is when the request reached this process.
/// A sandbox that failed to warm up, or was made for another key, is
/// discarded and the spec runs cold, so the failure reported is the
/// action's own.
pub fn run_warm(
    spec: &Spec,
    prepared: &Prepared,
    warm: Result<Warm, String>,
    start: Instant,
    report: impl FnOnce(&Status),
) {
    let mut status = Status {
        version: crate::spec::SPEC_VERSION,
        variation: spec.variation.clone(),
        ..Default::default()
    };
    if let Err(e) = spec.validate() {
        drop(warm);
        return report(&Status::setup_failed(e.to_string()));
    }
    let warm = match warm {
        Ok(w) if w.key == PoolKey::of(spec) => w,
        other => {
            drop(other);
            return run_prepared(spec, Some(prepared), report);
        }
    };
    match act(warm, spec, prepared, start, true, &mut status) {
        Ok(guard) => {
            report(&status);
            drop(guard);
        }
        Err(e) => {
            set_up_failed(&mut status, e);
            report(&status);
        }
    }
}

fn run_inner(
    spec: &Spec,
    prepared: &Prepared,
    start: Instant,
    status: &mut Status,
) -> Result<Guard, String> {
    let warm = warm_up(spec, prepared, &spec.scratch)?;
    act(warm, spec, prepared, start, false, status)
}

/// The action's part, the same for a cold and a pooled sandbox: the input,
/// command and streams sent to the waiting init, which mounts `/work`,
/// pivots and verifies; then the step, the deadline, outputs, usage.
fn act(
    warm: Warm,
    spec: &Spec,
    prepared: &Prepared,
    start: Instant,
    pooled: bool,
    status: &mut Status,
) -> Result<Guard, String> {
    let Warm {
        mut guard,
        init,
        mut ctl,
        release,
        action: action_w,
        exec_r,
        enforcement,
        mut weaker,
        host_ids,
        key: _,
        forked_at,
        namespaces_us,
        warm_us,
    } = warm;
    let mut release = Some(release);
    let profile = &spec.profile;
    let limits = spec.effective_limits();
    if pooled {
        // The sandbox's scratch tmpfs is on the pool's own mount point; the
        // spec's scratch directory is still the action's, as the spec says.
        claim_dir(&spec.scratch, host_ids, &mut guard)?;
    }
    let empty_lower;
    let lower: &Path = match &spec.input {
        Some(p) => {
            check_dir(p, "input")?;
            p
        }
        None => {
            // An empty lower layer, outside scratch (scratch is covered by
            // its tmpfs inside the sandbox).
            empty_lower = empty_dir()?;
            &empty_lower
        }
    };
    let seccomp_rules = prepared.seccomp.as_ref().map_or(0, |s| s.rules);
    let rlimits = Rlimits {
        fsize: limits.fsize_bytes,
        nofile: limits.nofile,
        nproc: (enforcement == "rlimit").then_some(limits.pids).flatten(),
        address_space: (enforcement == "rlimit")
            .then_some(limits.memory_bytes)
            .flatten(),
    };
    let env = environment(spec);
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let cwd = if spec.cwd.is_empty() {
        "/work".to_owned()
    } else {
        format!("/work/{}", spec.cwd)
    };
    let action = ActionPlan {
        lower: lower.to_path_buf(),
        argv: cstrings(spec.argv.iter().map(|s| s.as_bytes().to_vec()))?,
        envp: cstrings(env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()))?,
        path,
        cwd: CString::new(cwd).map_err(|_| "cwd has a NUL byte")?,
        rlimits,
        stdout: open_stdio(&spec.stdout)?,
        stderr: open_stdio(&spec.stderr)?,
    };
    let sent_at = Instant::now();
    crate::handoff::send(action_w, &action)?;
    drop(action);
    status.timings.pooled = pooled;
    if pooled {
        status.timings.prepare_us = (sent_at - start).as_micros() as u64;
        status.timings.warm_us = warm_us;
    } else {
        status.timings.prepare_us = forked_at.saturating_duration_since(start).as_micros() as u64;
        status.timings.namespaces_us = namespaces_us;
    }
    let root_from = if pooled {
        sent_at
    } else {
        forked_at + Duration::from_micros(namespaces_us)
    };

    let setup_deadline = Instant::now() + Duration::from_secs(60);
    let ready = match read_line(&mut ctl, setup_deadline)? {
        Some(l) if l.starts_with("ready ") => l[6..].to_owned(),
        Some(l) => return Err(l.strip_prefix("fail ").unwrap_or(&l).to_owned()),
        None => return Err("init died during set-up".into()),
    };
    let ready_at = Instant::now();
    let ready: serde_json::Value =
        serde_json::from_str(&ready).map_err(|e| format!("bad report from init: {e}"))?;
    let mut watcher = take_watcher(spec, prepared, init, &ready, &mut status.anomalies);

    // The step's confinement report; EOF on the pipe marks its execve.
    let mut exec_report = String::new();
    let mut exec_file = std::fs::File::from(exec_r);
    read_to_end_by(
        &mut exec_file,
        &mut exec_report,
        setup_deadline,
        watcher.as_mut(),
    )?;
    let exec_at = Instant::now();
    status.timings.root_us = ready_at.saturating_duration_since(root_from).as_micros() as u64;
    status.timings.confine_us = (exec_at - ready_at).as_micros() as u64;
    status.timings.setup_us = (exec_at - start).as_micros() as u64;
    let mut step_report = None;
    let mut exec_error = None;
    for line in exec_report.lines() {
        if let Some(r) = line.strip_prefix("report ") {
            step_report = serde_json::from_str::<serde_json::Value>(r).ok();
        } else if let Some(f) = line.strip_prefix("fail ") {
            return Err(f.to_owned());
        } else if let Some(e) = line.strip_prefix("execfail ") {
            let errno = nix::Error::from_raw(e.trim().parse().unwrap_or(libc::ENOENT));
            exec_error = Some(errno);
        }
    }
    let step_report = step_report.ok_or("the step died before reporting its confinement")?;

    // Restrictions, as verified inside.
    let landlock: crate::status::LandlockStatus =
        serde_json::from_value(step_report["landlock"].clone()).unwrap_or_default();
    if profile.landlock.enabled && landlock.enforced != "full" {
        if profile.allow_weaker.contains(&Weakening::Landlock) {
            weaker.push(format!(
                "landlock {} (kernel ABI {})",
                landlock.enforced, landlock.abi_kernel
            ));
        } else {
            return Err(format!(
                "landlock is only {} enforced (kernel ABI {}, profile pins {}) and the profile requires it",
                landlock.enforced, landlock.abi_kernel, landlock.abi_requested
            ));
        }
    }
    status.restrictions = Restrictions {
        profile: profile.name.clone(),
        profile_digest: prepared.profile_digest.clone(),
        namespaces: serde_json::from_value(ready["namespaces"].clone()).unwrap_or_default(),
        host_uid_base: host_ids.0,
        uid: step_report["uid"].as_u64().unwrap_or(u64::MAX) as u32,
        gid: step_report["gid"].as_u64().unwrap_or(u64::MAX) as u32,
        landlock,
        seccomp: step_report["seccomp"].as_bool().unwrap_or(false),
        seccomp_rules,
        no_new_privs: step_report["no_new_privs"].as_bool().unwrap_or(false),
        capabilities_dropped: step_report["capabilities_dropped"]
            .as_bool()
            .unwrap_or(false),
        network: serde_json::from_value(ready["network"].clone()).unwrap_or_default(),
        limits: LimitsInForce {
            enforcement: enforcement.into(),
            timeout_ms: limits.timeout_ms,
            memory_bytes: limits.memory_bytes,
            pids: limits.pids,
            cpu_millis: limits.cpu_millis,
            tmp_bytes: limits.tmp_bytes,
            scratch_bytes: limits.scratch_bytes,
            fsize_bytes: limits.fsize_bytes,
            nofile: limits.nofile,
        },
        weaker,
    };

    // Run, with the deadline.
    let deadline = exec_at + Duration::from_millis(limits.timeout_ms);
    let mut exit: Option<ExitReport> = None;
    let mut timed_out = false;
    match read_line_watched(&mut ctl, deadline, watcher.as_mut(), true)? {
        Some(l) if l.starts_with("exit ") => exit = ExitReport::parse(&l[5..]),
        Some(l) => return Err(format!("unexpected message from init: {l:?}")),
        None if Instant::now() >= deadline || cancelled() => {
            timed_out = !cancelled();
            // SIGTERM to init is forwarded to every process; then a grace
            // period; then SIGKILL of init takes the whole namespace down.
            let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGTERM);
            let grace = Instant::now() + Duration::from_millis(limits.grace_ms);
            if let Some(l) = read_line_watched(&mut ctl, grace, watcher.as_mut(), false)?
                && let Some(s) = l.strip_prefix("exit ")
            {
                exit = ExitReport::parse(s);
            }
        }
        None => {}
    }
    let wait_status = exit.map(|e| e.wait_status);
    let exited_at = Instant::now();
    status.timings.run_us = (exited_at - exec_at).as_micros() as u64;

    // Collect while init holds the (now quiet) mount namespace open.
    if wait_status.is_some()
        && let Some(dest) = &spec.output_dir
    {
        collect_outputs(spec, init, &ready, dest, status);
    }
    if let Some(w) = watcher.take() {
        let watched = std::mem::take(&mut status.anomalies);
        status.anomalies = crate::anomaly::Anomalies {
            network_watched: watched.network_watched,
            exec_watched: watched.exec_watched,
            off: watched.off,
            ..w.anomalies
        };
    }
    if wait_status.is_some() {
        check_writes(spec, init, &ready, &mut status.anomalies);
    }
    if !timed_out && wait_status.is_none() {
        // init vanished without reporting: killed from outside.
        status.error = Some("the sandbox's init died unexpectedly".into());
    }
    let (user_us, sys_us, maxrss_kb) = match exit {
        // Every process but init is dead and reaped, and init said what
        // they used: init itself is killed and reaped after the report (by
        // the guard), so the status does not wait for the namespaces'
        // teardown.
        Some(e) => (e.user_us, e.sys_us, e.maxrss_kb),
        None => {
            drop(release.take());
            let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
            // SAFETY: an all-zero rusage is a valid out value.
            let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
            let mut raw = 0;
            // SAFETY: wait4 on our own child with valid out pointers.
            unsafe { libc::wait4(init.as_raw(), &mut raw, 0, &mut rusage) };
            guard.init = None;
            if let Some(cg) = &guard.cgroup {
                let _ = cg.kill_all();
            }
            (
                tv_us(rusage.ru_utime),
                tv_us(rusage.ru_stime),
                rusage.ru_maxrss as u64,
            )
        }
    };

    let mut oom_kills = 0;
    if let Some(cg) = &guard.cgroup {
        match cg.usage() {
            Ok(u) => {
                status.usage.peak_memory_bytes = u.peak_memory_bytes;
                status.usage.peak_memory_source = "cgroup".into();
                oom_kills = u.oom_kills;
            }
            Err(e) => status.error = Some(format!("cannot read cgroup usage: {e}")),
        }
    }
    // CPU time of every process of the sandbox.
    status.usage.user_cpu_us = user_us;
    status.usage.sys_cpu_us = sys_us;
    if status.usage.peak_memory_source.is_empty() {
        status.usage.peak_memory_bytes = maxrss_kb * 1024;
        status.usage.peak_memory_source = "rusage".into();
    }

    if let Some(ws) = wait_status {
        if libc::WIFEXITED(ws) {
            status.exit_code = Some(libc::WEXITSTATUS(ws));
        } else if libc::WIFSIGNALED(ws) {
            status.signal = Some(libc::WTERMSIG(ws));
        }
    } else if timed_out || cancelled() {
        status.signal = Some(libc::SIGKILL);
    }
    status.timed_out = timed_out;
    status.oom_killed = oom_kills > 0 && status.exit_code != Some(0);
    status.outcome = if cancelled() {
        Outcome::Cancelled
    } else if timed_out {
        Outcome::TimedOut
    } else if status.oom_killed {
        Outcome::OomKilled
    } else if let Some(e) = exec_error {
        status.error = Some(format!("cannot execute {:?}: {e}", spec.argv[0]));
        Outcome::ExecFailed
    } else if wait_status.is_none() {
        Outcome::SetupFailed
    } else if !status.output_errors.is_empty() {
        Outcome::OutputError
    } else {
        Outcome::Completed
    };
    status.timings.teardown_us = exited_at.elapsed().as_micros() as u64;
    // Released (and killed) by the guard, after the report.
    drop(release);
    Ok(guard)
}

/// The watches the profile asks for, when seccomp (which they are made of)
/// is on.
fn watch_plan(
    profile: &crate::profile::Profile,
    prepared: &Prepared,
) -> Option<crate::anomaly::notify::WatchPlan> {
    let a = &profile.anomalies;
    let plan = crate::anomaly::notify::WatchPlan {
        network: a.network,
        exec: a.foreign_exec,
    };
    (prepared.seccomp.is_some() && (plan.network || plan.exec)).then_some(plan)
}

/// Takes init's seccomp listener when it installed one, and says in
/// `anomalies` which watches are on and why one is off.
fn take_watcher(
    spec: &Spec,
    prepared: &Prepared,
    init: Pid,
    ready: &serde_json::Value,
    anomalies: &mut crate::anomaly::Anomalies,
) -> Option<crate::anomaly::notify::Watcher> {
    let a = &spec.profile.anomalies;
    if !a.network {
        anomalies.off.push("network: off in the profile".into());
    }
    if !a.foreign_exec {
        anomalies
            .off
            .push("foreign_exec: off in the profile".into());
    }
    if prepared.seccomp.is_none() && (a.network || a.foreign_exec) {
        anomalies
            .off
            .push("network and exec watches: seccomp is disabled in the profile".into());
    }
    let plan = watch_plan(&spec.profile, prepared)?;
    if let Some(e) = ready["notify_error"].as_str() {
        anomalies.off.push(format!("network and exec watches: {e}"));
        return None;
    }
    let fd = ready["notify_fd"].as_i64()?;
    let upper = ready["upper_fd"].as_i64().unwrap_or(-1);
    match crate::anomaly::notify::Watcher::take(
        init.as_raw(),
        fd as i32,
        upper,
        plan,
        a.max_records,
    ) {
        Ok(w) => {
            anomalies.network_watched = plan.network;
            anomalies.exec_watched = plan.exec;
            Some(w)
        }
        Err(e) => {
            // Nobody answers the filter's notifications now: its calls fail
            // with ENOSYS once init's listener is gone too. Say so.
            anomalies.off.push(format!("network and exec watches: {e}"));
            None
        }
    }
}

/// Records what the step wrote under `/work` outside the declared outputs.
fn check_writes(
    spec: &Spec,
    init: Pid,
    ready: &serde_json::Value,
    anomalies: &mut crate::anomaly::Anomalies,
) {
    let watch = &spec.profile.anomalies;
    if !watch.writes_outside_outputs {
        anomalies
            .off
            .push("writes_outside_outputs: off in the profile".into());
        return;
    }
    if spec.outputs.is_empty() {
        return; // everything written is an output
    }
    let upper = ready["upper_fd"].as_i64().unwrap_or(-1);
    let proc = format!("/proc/{}/fd/{upper}", init.as_raw());
    match crate::outputs::open_dir(Path::new(&proc))
        .and_then(|fd| crate::outputs::written_paths(fd.as_fd()))
    {
        Ok(written) => {
            let (paths, dropped) =
                crate::anomaly::writes_outside(&written, &spec.outputs, watch.max_records);
            anomalies.writes_checked = true;
            anomalies.writes_outside_outputs = paths;
            anomalies.dropped.writes_outside_outputs = dropped;
        }
        Err(e) => anomalies.off.push(format!(
            "writes_outside_outputs: cannot list what the step wrote: {e}"
        )),
    }
}

/// Init's `exit` message: the step's wait status and what every process
/// of the sandbox but init used.
#[derive(Debug, Clone, Copy)]
struct ExitReport {
    wait_status: i32,
    user_us: u64,
    sys_us: u64,
    maxrss_kb: u64,
}

impl ExitReport {
    fn parse(s: &str) -> Option<Self> {
        let mut f = s.split_whitespace();
        Some(ExitReport {
            wait_status: f.next()?.parse().ok()?,
            user_us: f.next()?.parse().ok()?,
            sys_us: f.next()?.parse().ok()?,
            maxrss_kb: f.next()?.parse().ok()?,
        })
    }
}

fn collect_outputs(
    spec: &Spec,
    init: Pid,
    ready: &serde_json::Value,
    dest: &Path,
    status: &mut Status,
) {
    let proc = PathBuf::from(format!("/proc/{}", init.as_raw()));
    let work = match crate::outputs::open_dir(&proc.join("root/work")) {
        Ok(fd) => fd,
        Err(e) => {
            status
                .output_errors
                .push(format!("cannot open the sandbox's /work: {e}"));
            return;
        }
    };
    let paths = if spec.outputs.is_empty() {
        let upper = ready["upper_fd"].as_i64().unwrap_or(-1);
        match crate::outputs::open_dir(&proc.join(format!("fd/{upper}")))
            .and_then(|fd| crate::outputs::written_paths(fd.as_fd()))
        {
            Ok(p) => top_level(p),
            Err(e) => {
                status
                    .output_errors
                    .push(format!("cannot list what the step wrote: {e}"));
                return;
            }
        }
    } else {
        spec.outputs
            .iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect()
    };
    let c = crate::outputs::collect(work.as_fd(), &paths, dest);
    status.outputs = c.entries;
    status.output_errors = c.errors;
}

/// Drops paths whose parent directory is also listed (collection recurses).
fn top_level(mut paths: Vec<String>) -> Vec<String> {
    paths.sort();
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        if !out.iter().any(|q| p.starts_with(&format!("{q}/"))) {
            out.push(p);
        }
    }
    out
}

fn tv_us(t: libc::timeval) -> u64 {
    t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64
}

fn check_dir(p: &Path, what: &str) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{what} {} is not a directory", p.display())),
        Err(e) => Err(format!("{what} {}: {e}", p.display())),
    }
}

/// A process-wide counter for unique names.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// 32 random bits (zero if the kernel has none to give: the name then only
/// loses its guard against a leftover of a reused pid).
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into a 4-byte buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    u32::from_ne_bytes(b)
}

/// An empty directory readable by everyone, shared by executions without input.
fn empty_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("hermetic-empty-{}", nix::unistd::geteuid()));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let m = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    use std::os::unix::fs::MetadataExt;
    if !m.is_dir()
        || m.uid() != nix::unistd::geteuid().as_raw()
        || std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(format!(
            "{} is not an empty directory of ours",
            dir.display()
        ));
    }
    Ok(dir)
}

fn passwd(profile: &crate::profile::Profile) -> Vec<u8> {
    let u = &profile.user;
    format!(
        "root:x:0:0:root:/root:/bin/sh\n{}:x:{}:{}:{}:{}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        u.name, u.uid, u.gid, u.name, u.home
    )
    .into_bytes()
}

/// The step's environment: exactly the spec's, in order, then the profile's
/// defaults for names the spec did not give.
pub fn environment(spec: &Spec) -> Vec<(String, String)> {
    let p = &spec.profile;
    let mut env = spec.env.clone();
    let defaults = [
        ("PATH", p.environment.path.clone()),
        ("HOME", p.user.home.clone()),
        ("USER", p.user.name.clone()),
        ("LOGNAME", p.user.name.clone()),
        ("TZ", p.environment.tz.clone()),
        ("LANG", p.environment.lang.clone()),
        (
            "SOURCE_DATE_EPOCH",
            p.environment.source_date_epoch.to_string(),
        ),
    ];
    for (k, v) in defaults {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.to_owned(), v));
        }
    }
    env
}

fn cstrings(items: impl Iterator<Item = Vec<u8>>) -> Result<Vec<CString>, String> {
    items
        .map(|b| CString::new(b).map_err(|_| "a string contains a NUL byte".to_owned()))
        .collect()
}

fn open_stdio(s: &Stdio) -> Result<Option<OwnedFd>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    match s {
        Stdio::Inherit => Ok(None),
        Stdio::Null => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map(|f| Some(f.into()))
            .map_err(|e| format!("cannot open /dev/null: {e}")),
        Stdio::File(p) => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
            .map(|f| Some(f.into()))
            .map_err(|e| format!("cannot open {}: {e}", p.display())),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe failed: {e}"))
}

/// The longest a wait goes without looking at the cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

fn remaining(deadline: Instant) -> PollTimeout {
    // Rounded up: a poll that returns before the deadline would be taken
    // for end of file.
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// Reads one line, or `None` at EOF or when the deadline passes.
fn read_line(
    r: &mut BufReader<std::fs::File>,
    deadline: Instant,
) -> Result<Option<String>, String> {
    read_line_watched(r, deadline, None, true)
}

/// Polls `fd` and, when given, the watcher's listener (answering its
/// notifications) until `fd` is readable (`Ok(true)`) or the deadline
/// passes (`Ok(false)`). When `cancellable`, a cancel (SIGTERM, SIGINT)
/// ends the wait with `EINTR`, also one that landed outside the poll (in
/// set-up, or between the check and the poll): each poll lasts at most
/// [`CANCEL_CHECK`] and the flag is checked around it.
fn wait_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    deadline: Instant,
    mut watcher: Option<&mut crate::anomaly::notify::Watcher>,
    cancellable: bool,
) -> Result<bool, nix::Error> {
    loop {
        if cancellable && cancelled() {
            return Err(nix::Error::EINTR);
        }
        let slice = deadline.min(Instant::now() + CANCEL_CHECK);
        let (ready, notified, hung_up) = {
            let mut fds = vec![PollFd::new(fd, PollFlags::POLLIN)];
            if let Some(w) = &watcher {
                fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, remaining(slice)) {
                Ok(0) if Instant::now() >= deadline => return Ok(false),
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let ev = |f: &PollFd| f.revents().unwrap_or(PollFlags::empty());
            let listener = fds.get(1).map(ev).unwrap_or(PollFlags::empty());
            (
                !ev(&fds[0]).is_empty(),
                listener.contains(PollFlags::POLLIN),
                !listener.contains(PollFlags::POLLIN) && !listener.is_empty(),
            )
        };
        if notified && let Some(w) = watcher.as_deref_mut() {
            w.service();
        }
        if hung_up {
            // No process uses the filter any more: nothing to answer.
            watcher = None;
        }
        if ready {
            return Ok(true);
        }
    }
}

/// [`read_line`], answering the watcher's notifications meanwhile;
/// `cancellable` as for [`wait_readable`].
fn read_line_watched(
    r: &mut BufReader<std::fs::File>,
    deadline: Instant,
    mut watcher: Option<&mut crate::anomaly::notify::Watcher>,
    cancellable: bool,
) -> Result<Option<String>, String> {
    loop {
        if !r.buffer().is_empty() {
            break;
        }
        match wait_readable(
            r.get_ref().as_fd(),
            deadline,
            watcher.as_deref_mut(),
            cancellable,
        ) {
            Ok(false) => return Ok(None),
            Ok(true) => break,
            Err(nix::Error::EINTR) if cancellable && cancelled() => return Ok(None),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("poll failed: {e}")),
        }
    }
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(line.trim_end().to_owned())),
        Err(e) => Err(format!("reading from the sandbox failed: {e}")),
    }
}

fn read_to_end_by(
    f: &mut std::fs::File,
    out: &mut String,
    deadline: Instant,
    mut watcher: Option<&mut crate::anomaly::notify::Watcher>,
) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    loop {
        match wait_readable(f.as_fd(), deadline, watcher.as_deref_mut(), true) {
            Ok(false) => return Err("the sandbox did not start the step in time".into()),
            Ok(true) => {}
            Err(nix::Error::EINTR) if cancelled() => return Err("cancelled during set-up".into()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("poll failed: {e}")),
        }
        match f.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from the step failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_the_specs_in_order_then_defaults() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles");
        let spec = Spec {
            version: crate::spec::SPEC_VERSION,
            rootfs: "/".into(),
            input: None,
            scratch: "/s".into(),
            output_dir: None,
            outputs: vec![],
            argv: vec!["x".into()],
            env: vec![
                ("Z".into(), "1".into()),
                ("TZ".into(), "Europe/Paris".into()),
                ("A".into(), "2".into()),
            ],
            cwd: String::new(),
            profile: crate::profile::Profile::load(&dir, "strict").unwrap(),
            limits: Default::default(),
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            cgroup_parent: None,
            variation: Default::default(),
        };
        let env = environment(&spec);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "Z",
                "TZ",
                "A",
                "PATH",
                "HOME",
                "USER",
                "LOGNAME",
                "LANG",
                "SOURCE_DATE_EPOCH"
            ]
        );
        assert_eq!(env[1].1, "Europe/Paris", "the spec's value wins");
        assert!(env.contains(&("HOME".into(), "/tmp".into())));
        assert!(env.contains(&("SOURCE_DATE_EPOCH".into(), "0".into())));
    }

    #[test]
    fn top_level_drops_children_of_listed_directories() {
        let got = top_level(vec![
            "a/b".into(),
            "a".into(),
            "ab".into(),
            "c/d/e".into(),
            "c/d".into(),
        ]);
        assert_eq!(got, ["a", "ab", "c/d"]);
    }
}
