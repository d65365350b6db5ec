//! cgroup v2 / v1: detection, limits, usage and kill.
//!
//! Each execution gets a fresh cgroup: one directory on v2, one per needed
//! hierarchy on v1. Every limit is written and then read back, so what the
//! status reports is what the kernel holds, not what was asked for.
//!
//! # Where cgroups are created
//! - v2: below the helper's own cgroup (`0::/path` in `/proc/self/cgroup`).
//!   The helper lives there itself, and the "no internal processes" rule
//!   forbids enabling controllers in a non-root cgroup that has processes.
//!   So the execution cgroup becomes a *sibling* of the helper's own, under
//!   its parent: the delegated cgroup when the daemon runs with
//!   `Delegate=yes` and keeps itself in a leaf. An explicit parent (absolute
//!   cgroup2 directory, or a path relative to the cgroup2 root) overrides.
//! - v1: below the helper's own cgroup in each hierarchy: `memory`, `pids`,
//!   `cpu` and `cpuacct` (when mounted and writable) when a CPU quota is asked.
//!   An explicit parent is relative to each hierarchy's root; when it does
//!   not exist there it is looked up below the helper's own cgroup in that
//!   hierarchy (what [`delegate`] returns when our own cgroups differ
//!   between hierarchies).
//!
//! # Detection
//! From `/proc/self/mountinfo` and `/proc/self/cgroup`, never from
//! hard-coded mount points. v2 is used when the cgroup2 root offers
//! `memory` and `pids`; otherwise v1 when both hierarchies are mounted (a
//! hybrid host whose cgroup2 mount carries no controllers is v1).
//!
//! # Tests
//! Parsing is tested on recorded text. Tests that create cgroups need root:
//! without it they print a loud SKIP, and fail instead when `CI=true`.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{AccessFlags, Gid, Pid, Uid, access, chown, getpid};
use serde::Serialize;

/// CPU bandwidth period in microseconds; the quota is milli-CPUs × 100.
const CPU_PERIOD_US: u64 = 100_000;
/// The longest [`Cgroup::kill_all`] waits for the cgroup to empty.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest an `rmdir` answered with EBUSY is retried.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);

/// The cgroup API in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Legacy: one hierarchy per controller (or group of controllers).
    V1,
    /// Unified: one hierarchy for every controller.
    V2,
}

/// What the host offers, detected once at start-up (reported by
/// `hermetic-sandbox --features` and the daemon).
#[derive(Debug, Clone, Serialize)]
pub struct CgroupSupport {
    /// The version execution cgroups would use; `None`: unusable.
    pub version: Option<CgroupVersion>,
    /// Controllers present and writable by us, among `memory`, `pids`,
    /// `cpu` and (v1) `cpuacct`.
    pub controllers: Vec<String>,
    /// Where cgroups would be created, human readable.
    pub base: String,
    /// Why cgroups are unusable, when `version` is `None`.
    pub reason: Option<String>,
}

/// Limits for a new cgroup; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default)]
pub struct CgroupLimits {
    /// Memory limit in bytes (the kernel rounds it down to a page); swap is
    /// disabled with it.
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
    /// CPU quota in milli-CPUs (1000 = one core); the kernel needs >= 10.
    pub cpu_millis: Option<u64>,
}

/// Resource usage of everything that ran in a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// User CPU time in microseconds (0 on v1 without `cpuacct`).
    pub user_cpu_us: u64,
    /// System CPU time in microseconds (0 on v1 without `cpuacct`).
    pub sys_cpu_us: u64,
    /// Peak memory in bytes (0 on v2 kernels before 5.19).
    pub peak_memory_bytes: u64,
    /// Processes killed by the OOM killer.
    pub oom_kills: u64,
}

/// What went wrong with a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy.
    #[error("cgroups unusable: {reason}")]
    Unavailable {
        /// What is missing.
        reason: String,
    },
    /// A cgroup name must be one plain path component.
    #[error("invalid cgroup name {name:?}: must be one path component")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The parent cgroup does not exist.
    #[error("cgroup parent {} not found: tried {tried:?}", parent.display())]
    ParentNotFound {
        /// The parent given.
        parent: PathBuf,
        /// The directories looked at.
        tried: Vec<PathBuf>,
    },
    /// A controller the limits need cannot be used.
    #[error("{controller} controller unusable in {}: {detail}", path.display())]
    Controller {
        /// The controller.
        controller: String,
        /// The cgroup directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A cgroup file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A cgroup file holds something unexpected.
    #[error("failed to parse {}: {detail}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A cgroup file could not be written.
    #[error("failed to write {value:?} to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The cause.
        source: io::Error,
    },
    /// The kernel refused a limit.
    #[error("failed to apply {controller} limit: writing {value:?} to {}: {source}", path.display())]
    Limit {
        /// The controller.
        controller: String,
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The cause.
        source: io::Error,
    },
    /// A limit is out of range before reaching the kernel.
    #[error("invalid {controller} limit {value}: {detail}")]
    InvalidLimit {
        /// The controller.
        controller: String,
        /// The value asked for.
        value: u64,
        /// Why.
        detail: String,
    },
    /// A limit file reads back something other than what was written.
    #[error("{controller} limit not in force: {} reads {actual:?}, expected {expected:?}", path.display())]
    Verify {
        /// The controller.
        controller: String,
        /// The file.
        path: PathBuf,
        /// What should be there.
        expected: String,
        /// What is there.
        actual: String,
    },
    /// A cgroup directory could not be created.
    #[error("failed to create cgroup {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A cgroup directory could not be removed.
    #[error("failed to remove cgroup {}: {source}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Delegation could not change an owner.
    #[error("failed to chown {} to {uid}:{gid}: {source}", path.display())]
    Chown {
        /// The file or directory.
        path: PathBuf,
        /// The new owner.
        uid: u32,
        /// The new group.
        gid: u32,
        /// The cause.
        source: Errno,
    },
    /// A process is not where it was just moved.
    #[error("pid {pid} not in {expected} after moving it: /proc/{pid}/cgroup says {actual:?}")]
    NotMoved {
        /// The process.
        pid: i32,
        /// The cgroup path it should be in.
        expected: String,
        /// Its entry in `/proc/<pid>/cgroup`.
        actual: String,
    },
    /// Not a signal number.
    #[error("invalid signal number {sig}")]
    InvalidSignal {
        /// The number given.
        sig: i32,
    },
    /// A process could not be signalled.
    #[error("failed to send signal {sig} to pid {pid}: {source}")]
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        sig: i32,
        /// The cause.
        source: Errno,
    },
    /// The calling process is inside the cgroup it was asked to kill.
    #[error("refusing to kill cgroup {}: it contains the calling process {pid}", path.display())]
    SelfInside {
        /// The cgroup directory.
        path: PathBuf,
        /// Our pid.
        pid: i32,
    },
    /// Processes survived the bounded wait of a kill.
    #[error("cgroup {} still holds pids {pids:?} after {waited_ms} ms of SIGKILL", path.display())]
    KillTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// The survivors.
        pids: Vec<i32>,
        /// How long we waited.
        waited_ms: u128,
    },
}

mod files;
mod host;
#[cfg(test)]
mod tests;

use files::*;
use host::*;

/// A cgroup created for one execution; removed (best effort) on drop.
#[derive(Debug)]
pub struct Cgroup {
    version: CgroupVersion,
    dirs: Vec<Dir>,
}

/// Reports what the host offers for cgroups created under `parent` (see
/// [`Cgroup::create`]), or under our own cgroup when `None`.
pub fn detect(parent: Option<&Path>) -> CgroupSupport {
    detect_inner(parent).unwrap_or_else(|reason| CgroupSupport {
        version: None,
        controllers: Vec::new(),
        base: String::new(),
        reason: Some(reason),
    })
}

fn detect_inner(parent: Option<&Path>) -> Result<CgroupSupport, String> {
    let host = Host::read().map_err(|e| e.to_string())?;
    let version = choose_version(&host)?;
    let mut usable: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let base = match version {
        CgroupVersion::V2 => {
            let m = host.v2().ok_or("no cgroup2 mount")?;
            let dir = v2_base(&host, m, parent).map_err(|e| e.to_string())?;
            let offered =
                words(&fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default());
            let control = dir.join("cgroup.subtree_control");
            let enabled = words(&fs::read_to_string(&control).unwrap_or_default());
            let can_enable = writable(&control) && (is_real_root(&dir) || !has_procs(&dir));
            for c in ["memory", "pids", "cpu"] {
                let shown = dir.display();
                if !writable(&dir) {
                    problems.push(format!("{c}: {shown} is not writable"));
                } else if !offered.iter().any(|o| o == c) {
                    problems.push(format!("{c}: not in {shown}/cgroup.controllers"));
                } else if !enabled.iter().any(|o| o == c) && !can_enable {
                    problems.push(format!(
                        "{c}: not in {shown}/cgroup.subtree_control, which we cannot change (not writable, or the cgroup has processes)"
                    ));
                } else {
                    usable.push(c.to_owned());
                }
            }
            dir.display().to_string()
        }
        CgroupVersion::V1 => {
            let mut bases = Vec::new();
            for c in ["memory", "pids", "cpu", "cpuacct"] {
                let Some(m) = host.v1(c) else {
                    problems.push(format!("{c}: hierarchy not mounted"));
                    continue;
                };
                match v1_parent(&host, m, parent) {
                    Ok(dir) => {
                        bases.push(format!("{c}:{}", dir.display()));
                        if writable(&dir) {
                            usable.push(c.to_owned());
                        } else {
                            problems.push(format!("{c}: {} is not writable", dir.display()));
                        }
                    }
                    Err(e) => problems.push(format!("{c}: {e}")),
                }
            }
            bases.join(" ")
        }
    };
    let ok = ["memory", "pids"]
        .iter()
        .all(|c| usable.iter().any(|u| u == c));
    Ok(CgroupSupport {
        version: ok.then_some(version),
        controllers: usable,
        base,
        reason: (!ok).then(|| problems.join("; ")),
    })
}

impl Cgroup {
    /// Creates a fresh cgroup `name` (unique per execution, e.g.
    /// `hermetic-<pid>-<n>`) under `parent` (v2: an absolute cgroup2
    /// directory or a path relative to the cgroup2 root; v1: a path relative
    /// to each hierarchy's root) or under our own cgroup when `None` (see
    /// the module docs), then applies `limits` and verifies each by reading
    /// it back. Anything created is removed again when this fails.
    pub fn create(
        parent: Option<&Path>,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<Cgroup, CgroupError> {
        check_name(name)?;
        let host = Host::read()?;
        let version =
            choose_version(&host).map_err(|reason| CgroupError::Unavailable { reason })?;
        let cpu = if limits.cpu_millis.is_some() {
            Need::Required
        } else {
            Need::Skip
        };
        // Pushed one by one so that drop removes what exists if a step fails.
        let mut cgroup = Cgroup {
            version,
            dirs: Vec::new(),
        };
        for place in places(&host, version, parent, cpu)? {
            let path = place.parent.join(name);
            mkdir(&path)?;
            cgroup.dirs.push(Dir {
                path,
                mount: place.mount,
                roles: place.roles,
            });
        }
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    /// The cgroup API in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Moves process `pid` (and its future children) into the cgroup, in
    /// every hierarchy on v1, and verifies it in `/proc/<pid>/cgroup`.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            write_file(&dir.path.join("cgroup.procs"), &pid.to_string())?;
        }
        let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let now = parse_memberships(&read(&file)?);
        for dir in &self.dirs {
            let expected = dir.mount.cgpath_of(&dir.path);
            let line = now.iter().find(|l| l.belongs_to(&dir.mount));
            if line.is_none_or(|l| l.path.trim_end_matches('/') != expected.trim_end_matches('/')) {
                let actual = line.map(|l| l.path.clone()).unwrap_or_default();
                return Err(CgroupError::NotMoved {
                    pid,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// The pids currently in the cgroup (and any sub-cgroup), sorted.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        pids_in(self.dirs.iter().map(|d| d.path.as_path()))
    }

    /// Sends signal `sig` to every process in the cgroup except ourselves;
    /// processes that exit meanwhile are not an error.
    pub fn signal_all(&self, sig: i32) -> Result<(), CgroupError> {
        let signal = Signal::try_from(sig).map_err(|_| CgroupError::InvalidSignal { sig })?;
        let me = getpid().as_raw();
        for pid in self.pids()?.into_iter().filter(|&p| p != me) {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => return Err(CgroupError::Signal { pid, sig, source }),
            }
        }
        Ok(())
    }

    /// Kills everything in the cgroup and waits until it is empty, for at
    /// most 5 s. v2: `cgroup.kill` when present, else freeze and SIGKILL
    /// each process; v1: SIGKILL each process until none is left.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let Some(first) = self.dirs.first() else {
            return Ok(());
        };
        let v2 = self.version == CgroupVersion::V2;
        let kill_file = Some(first.path.join("cgroup.kill")).filter(|f| v2 && f.exists());
        let freeze_file = Some(first.path.join("cgroup.freeze"))
            .filter(|f| v2 && kill_file.is_none() && f.exists());
        if let Some(f) = &freeze_file {
            // Best effort: a frozen cgroup cannot fork while we kill it.
            let _ = write_file(f, "1");
        }
        let result = self.kill_loop(&first.path, kill_file.as_deref());
        if let Some(f) = &freeze_file {
            let _ = write_file(f, "0");
        }
        result
    }

    fn kill_loop(&self, shown: &Path, kill_file: Option<&Path>) -> Result<(), CgroupError> {
        let me = getpid().as_raw();
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if pids.contains(&me) {
                return Err(CgroupError::SelfInside {
                    path: shown.to_owned(),
                    pid: me,
                });
            }
            if start.elapsed() >= KILL_TIMEOUT {
                let waited_ms = start.elapsed().as_millis();
                return Err(CgroupError::KillTimeout {
                    path: shown.to_owned(),
                    pids,
                    waited_ms,
                });
            }
            match kill_file {
                Some(f) => write_file(f, "1")?,
                None => {
                    for pid in pids {
                        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                            Ok(()) | Err(Errno::ESRCH) => {}
                            Err(source) => {
                                return Err(CgroupError::Signal {
                                    pid,
                                    sig: libc::SIGKILL,
                                    source,
                                });
                            }
                        }
                    }
                }
            }
            sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// CPU time, peak memory and OOM kills of everything that ran in it.
    pub fn usage(&self) -> Result<CgroupUsage, CgroupError> {
        let mut usage = CgroupUsage::default();
        match self.version {
            CgroupVersion::V2 => {
                let dir = self.dir("memory")?;
                let file = dir.join("cpu.stat");
                let stat = read(&file)?;
                usage.user_cpu_us = keyed(&file, &stat, "user_usec")?;
                usage.sys_cpu_us = keyed(&file, &stat, "system_usec")?;
                let peak = dir.join("memory.peak");
                if peak.exists() {
                    usage.peak_memory_bytes = number(&peak)?;
                }
                let file = dir.join("memory.events");
                usage.oom_kills = keyed(&file, &read(&file)?, "oom_kill")?;
            }
            CgroupVersion::V1 => {
                if let Ok(dir) = self.dir("cpuacct") {
                    let (user, sys) = (
                        dir.join("cpuacct.usage_user"),
                        dir.join("cpuacct.usage_sys"),
                    );
                    if user.exists() && sys.exists() {
                        usage.user_cpu_us = number(&user)? / 1000;
                        usage.sys_cpu_us = number(&sys)? / 1000;
                    } else {
                        let file = dir.join("cpuacct.stat");
                        let stat = read(&file)?;
                        let tick_us = 1_000_000 / sysconf(libc::_SC_CLK_TCK, 100);
                        usage.user_cpu_us = keyed(&file, &stat, "user")? * tick_us;
                        usage.sys_cpu_us = keyed(&file, &stat, "system")? * tick_us;
                    }
                }
                let dir = self.dir("memory")?;
                usage.peak_memory_bytes = number(&dir.join("memory.max_usage_in_bytes"))?;
                let file = dir.join("memory.oom_control");
                // The `oom_kill` line exists since Linux 4.13.
                usage.oom_kills = keyed(&file, &read(&file)?, "oom_kill").unwrap_or(0);
            }
        }
        Ok(usage)
    }

    /// Kills what is left, then removes every directory created. Drop does
    /// the same, best effort, when this is not called.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.teardown()
    }

    /// The directories created, for the status report.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    fn teardown(&mut self) -> Result<(), CgroupError> {
        let mut result = self.kill_all();
        for dir in std::mem::take(&mut self.dirs).iter().rev() {
            let removed = remove_tree(&dir.path);
            if result.is_ok() {
                result = removed;
            }
        }
        result
    }

    /// The directory serving controller `role`.
    fn dir(&self, role: &str) -> Result<&Path, CgroupError> {
        let found = match self.version {
            CgroupVersion::V2 => self.dirs.first(),
            CgroupVersion::V1 => self.dirs.iter().find(|d| d.roles.contains(&role)),
        };
        found
            .map(|d| d.path.as_path())
            .ok_or_else(|| CgroupError::Controller {
                controller: role.to_owned(),
                path: self
                    .dirs
                    .first()
                    .map(|d| d.path.clone())
                    .unwrap_or_default(),
                detail: "no hierarchy for it in this cgroup".to_owned(),
            })
    }

    fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let v2 = self.version == CgroupVersion::V2;
        if let Some(bytes) = limits.memory_bytes {
            let dir = self.dir("memory")?;
            let page = sysconf(libc::_SC_PAGESIZE, 4096);
            let (value, expected) = (bytes.to_string(), (bytes / page * page).to_string());
            if v2 {
                set("memory", &dir.join("memory.max"), &value, &expected)?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    set("memory", &swap, "0", "0")?;
                }
            } else {
                set(
                    "memory",
                    &dir.join("memory.limit_in_bytes"),
                    &value,
                    &expected,
                )?;
                // Present only with swap accounting; equal to the limit: no swap.
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    set("memory", &memsw, &value, &expected)?;
                }
                let _ = write_file(&dir.join("memory.swappiness"), "0");
            }
        }
        if let Some(pids) = limits.pids {
            let n = pids.to_string();
            set("pids", &self.dir("pids")?.join("pids.max"), &n, &n)?;
        }
        if let Some(millis) = limits.cpu_millis {
            if millis < 10 {
                return Err(CgroupError::InvalidLimit {
                    controller: "cpu".to_owned(),
                    value: millis,
                    detail: "below the kernel's minimum quota of 1 ms per 100 ms (10 milli-CPUs)"
                        .to_owned(),
                });
            }
            let quota = millis.checked_mul(CPU_PERIOD_US / 1000).ok_or_else(|| {
                CgroupError::InvalidLimit {
                    controller: "cpu".to_owned(),
                    value: millis,
                    detail: "quota overflows".to_owned(),
                }
            })?;
            let dir = self.dir("cpu")?;
            if v2 {
                let value = format!("{quota} {CPU_PERIOD_US}");
                set("cpu", &dir.join("cpu.max"), &value, &value)?;
            } else {
                let period = CPU_PERIOD_US.to_string();
                set("cpu", &dir.join("cpu.cfs_period_us"), &period, &period)?;
                let quota = quota.to_string();
                set("cpu", &dir.join("cpu.cfs_quota_us"), &quota, &quota)?;
            }
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.dirs.is_empty() {
            let _ = self.teardown();
        }
    }
}

/// Delegates a cgroup subtree to an unprivileged `uid` (like systemd
/// `Delegate=yes`): creates `name` under our cgroup (v2, or every v1
/// hierarchy we use) and hands the directory and the files a delegatee
/// writes (`cgroup.procs`; v2 `cgroup.subtree_control`, `cgroup.threads`;
/// v1 `tasks`) to `uid:gid`. Returns the parent to pass to
/// [`Cgroup::create`]: on v2 the directory, on v1 its path relative to each
/// hierarchy root, or just `name` when our own cgroups differ between
/// hierarchies (then resolved below the caller's own cgroup in each).
pub fn delegate(name: &str, uid: u32, gid: u32) -> Result<PathBuf, CgroupError> {
    delegate_dirs(name, uid, gid).map(|(parent, _)| parent)
}

/// [`delegate`], also returning the directories created.
fn delegate_dirs(name: &str, uid: u32, gid: u32) -> Result<(PathBuf, Vec<PathBuf>), CgroupError> {
    check_name(name)?;
    let host = Host::read()?;
    let version = choose_version(&host).map_err(|reason| CgroupError::Unavailable { reason })?;
    let files: &[&str] = match version {
        CgroupVersion::V2 => &["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"],
        CgroupVersion::V1 => &["cgroup.procs", "tasks"],
    };
    // Removes what was created if a later step fails.
    let mut guard = Cgroup {
        version,
        dirs: Vec::new(),
    };
    for place in places(&host, version, None, Need::Optional)? {
        let path = place.parent.join(name);
        mkdir(&path)?;
        guard.dirs.push(Dir {
            path: path.clone(),
            mount: place.mount,
            roles: place.roles,
        });
        chown_to(&path, uid, gid)?;
        for file in files {
            let file = path.join(file);
            if file.exists() {
                chown_to(&file, uid, gid)?;
            }
        }
    }
    let rels: Vec<&Path> = guard
        .dirs
        .iter()
        .map(|d| d.path.strip_prefix(&d.mount.point).unwrap_or(&d.path))
        .collect();
    let parent = match version {
        CgroupVersion::V2 => guard
            .dirs
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_default(),
        CgroupVersion::V1 if rels.iter().all(|r| *r == rels[0]) => rels[0].to_owned(),
        CgroupVersion::V1 => {
            // A bare name resolves at the hierarchy root first: make sure
            // that finds nothing but our own directory.
            if let Some(d) = guard.dirs.iter().find(|d| {
                let at_root = d.mount.point.join(name);
                at_root != d.path && at_root.exists()
            }) {
                let reason = format!(
                    "{} already exists, the delegated name is ambiguous",
                    d.mount.point.join(name).display()
                );
                return Err(CgroupError::Unavailable { reason });
            }
            PathBuf::from(name)
        }
    };
    let dirs = std::mem::take(&mut guard.dirs)
        .into_iter()
        .map(|d| d.path)
        .collect();
    Ok((parent, dirs))
}

/// Removes the action cgroups that killed helpers left behind where
/// [`Cgroup::create`] puts them for `parent`: directories named
/// `hermetic-<pid>-…` whose helper is gone, that hold no process and are
/// older than [`STALE_AFTER`] (a live helper's cgroup is empty only for
/// the moment between its `mkdir` and its first process). Returns what
/// was removed.
pub fn remove_stale(parent: Option<&Path>) -> Result<Vec<PathBuf>, CgroupError> {
    let host = Host::read()?;
    let version = choose_version(&host).map_err(|reason| CgroupError::Unavailable { reason })?;
    let mut removed = Vec::new();
    for place in places(&host, version, parent, Need::Optional)? {
        let Ok(entries) = fs::read_dir(&place.parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = stale_owner(&name.to_string_lossy()) else {
                continue;
            };
            let path = entry.path();
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_AFTER));
            // rmdir refuses a cgroup with a process or a child.
            if old && !Path::new(&format!("/proc/{pid}")).exists() && fs::remove_dir(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

/// How old an empty cgroup of a dead helper must be to count as left over.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// The helper pid in a name `hermetic-<pid>-<rest>` (the names
/// [`Cgroup::create`] is given by the helper; not the battery's
/// `hermetic-escape-…` or the tests' `hermetic-test-…`).
pub fn stale_owner(name: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix("hermetic-")?.split_once('-')?;
    if rest.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Where [`enter_leaf`] left the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// Moved from `from` into the new leaf `to`.
    Moved {
        /// The cgroup the process was in (now without processes).
        from: PathBuf,
        /// The leaf it is in now.
        to: PathBuf,
    },
    /// Already in a leaf of that name (systemd's `DelegateSubgroup=`).
    Already(PathBuf),
    /// Nothing done, and why (v1 host, the cgroup2 root, not delegated).
    NotNeeded(String),
}

/// On a cgroup v2 host, moves the calling process from its own cgroup into
/// a new child leaf `name` (`mkdir`, then `0` into its `cgroup.procs`), so
/// that the cgroup it leaves has no processes and can enable controllers
/// for its children: the "no internal processes" rule. This is what a
/// daemon started by systemd with `Delegate=yes` does before it creates
/// per-action cgroups, which [`Cgroup::create`] then makes as siblings of
/// the leaf (below the delegated cgroup). Nothing happens on v1, in the
/// cgroup2 root, or where our cgroup is not writable (not delegated).
pub fn enter_leaf(name: &str) -> Result<Leaf, CgroupError> {
    check_name(name)?;
    let host = Host::read()?;
    if choose_version(&host).ok() != Some(CgroupVersion::V2) {
        return Ok(Leaf::NotNeeded("the host's cgroups are not v2".into()));
    }
    let m = host.v2().ok_or_else(|| CgroupError::Unavailable {
        reason: "no cgroup2 mount".into(),
    })?;
    let own = host.own_dir(m)?;
    move_into_leaf(&own, name, 0)
}

/// [`enter_leaf`] for the process `pid` (0: the caller) whose v2 cgroup is
/// `own`.
fn move_into_leaf(own: &Path, name: &str, pid: i32) -> Result<Leaf, CgroupError> {
    if own.file_name().is_some_and(|n| n == name) {
        return Ok(Leaf::Already(own.to_owned()));
    }
    if is_real_root(own) {
        return Ok(Leaf::NotNeeded(format!(
            "{} is the cgroup2 root, where processes may stay",
            own.display()
        )));
    }
    if !writable(own) || !writable(&own.join("cgroup.subtree_control")) {
        return Ok(Leaf::NotNeeded(format!(
            "{} is not delegated to us (not writable)",
            own.display()
        )));
    }
    let leaf = own.join(name);
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(CgroupError::Create { path: leaf, source }),
    }
    write_file(&leaf.join("cgroup.procs"), &pid.to_string())?;
    Ok(Leaf::Moved {
        from: own.to_owned(),
        to: leaf,
    })
}

#[cfg(test)]
mod leaf_tests {
    use super::*;

    /// On a real cgroup2 mount (this kind of machine has one without
    /// controllers beside its v1 hierarchies): a process in a delegated
    /// cgroup is moved into the leaf, leaving its cgroup without
    /// processes; a second call finds it there already.
    #[test]
    fn a_process_moves_into_its_leaf() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let Some(mount) = Host::read().ok().and_then(|h| h.v2().cloned()) else {
            assert!(!ci, "CI=true: no cgroup2 mount to test on");
            eprintln!("SKIP: no cgroup2 mount");
            return;
        };
        if !Uid::effective().is_root() {
            assert!(!ci, "CI=true: this test needs root (it creates cgroups)");
            eprintln!("SKIP: needs root");
            return;
        }
        let base = mount
            .point
            .join(format!("hermetic-leaf-test-{}", std::process::id()));
        fs::create_dir(&base).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        write_file(&base.join("cgroup.procs"), &pid.to_string()).unwrap();
        let moved = move_into_leaf(&base, "daemon", pid).unwrap();
        let leaf = base.join("daemon");
        assert_eq!(
            moved,
            Leaf::Moved {
                from: base.clone(),
                to: leaf.clone()
            }
        );
        assert!(!has_procs(&base), "the delegated cgroup keeps no process");
        assert_eq!(
            fs::read_to_string(leaf.join("cgroup.procs"))
                .unwrap()
                .trim(),
            pid.to_string()
        );
        let line = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(line.contains("/daemon\n"), "{line}");
        assert_eq!(
            move_into_leaf(&leaf, "daemon", pid).unwrap(),
            Leaf::Already(leaf.clone())
        );
        let _ = child.kill();
        let _ = child.wait();
        // Empty now: removable, leaf first.
        fs::remove_dir(&leaf).unwrap();
        fs::remove_dir(&base).unwrap();
    }
}
