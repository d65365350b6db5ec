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

/// Whether a controller must, may, or need not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
    Skip,
}

/// A mounted cgroup hierarchy, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// Where it is mounted.
    point: PathBuf,
    /// The cgroup mounted there (relative to our cgroup namespace).
    root: PathBuf,
    /// cgroup2 rather than a v1 hierarchy.
    v2: bool,
    /// v1: the controllers bound to the hierarchy.
    controllers: Vec<String>,
}

impl Mount {
    /// The directory of cgroup `cgpath` (as `/proc/<pid>/cgroup` names it).
    fn dir_of(&self, cgpath: &Path) -> PathBuf {
        let rel = cgpath.strip_prefix(&self.root).unwrap_or(cgpath);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        if rel.as_os_str().is_empty() {
            self.point.clone()
        } else {
            self.point.join(rel)
        }
    }

    /// The cgroup path of directory `dir`, as `/proc/<pid>/cgroup` names it.
    fn cgpath_of(&self, dir: &Path) -> String {
        match dir.strip_prefix(&self.point) {
            Ok(rel) if !rel.as_os_str().is_empty() => self.root.join(rel),
            _ => self.root.clone(),
        }
        .to_string_lossy()
        .into_owned()
    }
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    id: String,
    controllers: Vec<String>,
    path: String,
}

impl Membership {
    /// Whether this line describes the hierarchy mounted as `m`.
    fn belongs_to(&self, m: &Mount) -> bool {
        if m.v2 {
            self.id == "0" && self.controllers.is_empty()
        } else {
            !self.controllers.is_empty()
                && self.controllers.iter().all(|c| m.controllers.contains(c))
        }
    }
}

/// The cgroup mounts and our own memberships.
#[derive(Debug)]
struct Host {
    mounts: Vec<Mount>,
    own: Vec<Membership>,
}

impl Host {
    fn read() -> Result<Self, CgroupError> {
        Ok(Host {
            mounts: parse_mountinfo(&read(Path::new("/proc/self/mountinfo"))?),
            own: parse_memberships(&read(Path::new("/proc/self/cgroup"))?),
        })
    }

    /// The cgroup2 mount, preferring one of the whole namespace.
    fn v2(&self) -> Option<&Mount> {
        let mut all = self.mounts.iter().filter(|m| m.v2);
        all.clone()
            .find(|m| m.root == Path::new("/"))
            .or_else(|| all.next())
    }

    /// The v1 hierarchy carrying `controller`.
    fn v1(&self, controller: &str) -> Option<&Mount> {
        let mut all = self
            .mounts
            .iter()
            .filter(|m| !m.v2 && m.controllers.iter().any(|c| c == controller));
        all.clone()
            .find(|m| m.root == Path::new("/"))
            .or_else(|| all.next())
    }

    /// Our own cgroup's directory in hierarchy `m`.
    fn own_dir(&self, m: &Mount) -> Result<PathBuf, CgroupError> {
        let line = self.own.iter().find(|l| l.belongs_to(m)).ok_or_else(|| {
            let reason = format!(
                "/proc/self/cgroup has no entry for the hierarchy mounted at {}",
                m.point.display()
            );
            CgroupError::Unavailable { reason }
        })?;
        Ok(m.dir_of(Path::new(&line.path)))
    }
}

/// Where one directory of a new cgroup goes.
#[derive(Debug)]
struct Place {
    mount: Mount,
    parent: PathBuf,
    roles: Vec<&'static str>,
}

/// One directory of a cgroup.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    mount: Mount,
    roles: Vec<&'static str>,
}

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

/// v2 when the cgroup2 root offers memory and pids, else v1 when both
/// hierarchies are mounted.
fn choose_version(host: &Host) -> Result<CgroupVersion, String> {
    if let Some(m) = host.v2() {
        let offered =
            words(&fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default());
        if ["memory", "pids"]
            .iter()
            .all(|c| offered.iter().any(|o| o == c))
        {
            return Ok(CgroupVersion::V2);
        }
    }
    if host.v1("memory").is_some() && host.v1("pids").is_some() {
        return Ok(CgroupVersion::V1);
    }
    Err(match host.v2() {
        Some(m) => format!(
            "cgroup2 at {} does not offer memory and pids, and no v1 memory and pids hierarchies are mounted",
            m.point.display()
        ),
        None if host.mounts.is_empty() => "no cgroup filesystem is mounted".to_owned(),
        None => "cgroup v1 memory or pids hierarchy is not mounted".to_owned(),
    })
}

/// Where the directories of a new cgroup go, with controllers enabled.
fn places(
    host: &Host,
    version: CgroupVersion,
    parent: Option<&Path>,
    cpu: Need,
) -> Result<Vec<Place>, CgroupError> {
    match version {
        CgroupVersion::V2 => {
            let m = host.v2().ok_or_else(|| CgroupError::Unavailable {
                reason: "no cgroup2 mount".to_owned(),
            })?;
            let base = v2_base(host, m, parent)?;
            let mut roles = vec!["memory", "pids"];
            let offered =
                words(&fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default());
            if cpu == Need::Required
                || (cpu == Need::Optional && offered.iter().any(|c| c == "cpu"))
            {
                roles.push("cpu");
            }
            enable_controllers(&base, &roles)?;
            Ok(vec![Place {
                mount: m.clone(),
                parent: base,
                roles,
            }])
        }
        CgroupVersion::V1 => {
            let mut places: Vec<Place> = Vec::new();
            let wanted = [
                ("memory", Need::Required),
                ("pids", Need::Required),
                // CPU time comes from rusage (init reaps every process of the
                // sandbox); cpuacct only joins when a CPU quota does, saving
                // a hierarchy's mkdir, move and rmdir per action.
                (
                    "cpuacct",
                    if cpu == Need::Skip {
                        Need::Skip
                    } else {
                        Need::Optional
                    },
                ),
                ("cpu", cpu),
            ];
            for (role, need) in wanted {
                if need == Need::Skip {
                    continue;
                }
                let Some(m) = host.v1(role) else {
                    if need == Need::Required {
                        let reason = format!("cgroup v1 {role} hierarchy is not mounted");
                        return Err(CgroupError::Unavailable { reason });
                    }
                    continue;
                };
                if let Some(place) = places.iter_mut().find(|p| p.mount.point == m.point) {
                    place.roles.push(role);
                    continue;
                }
                match v1_parent(host, m, parent) {
                    Ok(dir) if need == Need::Required || writable(&dir) => places.push(Place {
                        mount: m.clone(),
                        parent: dir,
                        roles: vec![role],
                    }),
                    Err(e) if need == Need::Required => return Err(e),
                    _ => {}
                }
            }
            Ok(places)
        }
    }
}

/// The v2 directory new cgroups go under (see the module docs).
fn v2_base(host: &Host, m: &Mount, parent: Option<&Path>) -> Result<PathBuf, CgroupError> {
    if let Some(p) = parent {
        let dir = if p.is_absolute() && p.starts_with(&m.point) {
            p.to_owned()
        } else {
            m.dir_of(&Path::new("/").join(p))
        };
        return match dir.is_dir() {
            true => Ok(dir),
            false => Err(CgroupError::ParentNotFound {
                parent: p.to_owned(),
                tried: vec![dir],
            }),
        };
    }
    let own = host.own_dir(m)?;
    if own == m.point || is_real_root(&own) || !has_procs(&own) {
        return Ok(own);
    }
    // No internal processes: we live in `own`, so siblings go in its parent.
    Ok(own.parent().map_or_else(|| own.clone(), Path::to_owned))
}

/// The v1 directory new cgroups go under in hierarchy `m`.
fn v1_parent(host: &Host, m: &Mount, parent: Option<&Path>) -> Result<PathBuf, CgroupError> {
    let own = host.own_dir(m)?;
    let Some(p) = parent else { return Ok(own) };
    // An absolute path inside any v1 mount names the same relative path.
    let rel = host
        .mounts
        .iter()
        .filter(|h| !h.v2)
        .find_map(|h| p.strip_prefix(&h.point).ok())
        .unwrap_or_else(|| p.strip_prefix("/").unwrap_or(p));
    let mut tried = vec![m.point.join(rel), own.join(rel)];
    tried.dedup();
    match tried.iter().find(|d| d.is_dir()) {
        Some(dir) => Ok(dir.clone()),
        None => Err(CgroupError::ParentNotFound {
            parent: p.to_owned(),
            tried,
        }),
    }
}

/// Enables `wanted` in `base`'s `cgroup.subtree_control` when missing.
fn enable_controllers(base: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let control = base.join("cgroup.subtree_control");
    let enabled = words(&read(&control)?);
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| !enabled.iter().any(|e| e == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let offered = words(&read(&base.join("cgroup.controllers"))?);
    if let Some(c) = missing.iter().find(|c| !offered.iter().any(|o| o == *c)) {
        return Err(CgroupError::Controller {
            controller: (*c).to_owned(),
            path: base.to_owned(),
            detail: "not offered by the parent (missing from cgroup.controllers)".to_owned(),
        });
    }
    let value = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    write_file(&control, &value).map_err(|e| match e {
        CgroupError::Write { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => CgroupError::Controller {
            controller: missing.join(","),
            path: base.to_owned(),
            detail: "cannot enable in cgroup.subtree_control: the cgroup has processes (no internal \
                     processes rule); pass a delegated parent without processes"
                .to_owned(),
        },
        e => e,
    })?;
    let now = read(&control)?;
    match missing
        .iter()
        .find(|c| !words(&now).iter().any(|e| e == *c))
    {
        Some(c) => Err(CgroupError::Verify {
            controller: (*c).to_owned(),
            path: control,
            expected: value,
            actual: now.trim().to_owned(),
        }),
        None => Ok(()),
    }
}

/// Writes a limit and checks that it reads back as `expected`.
fn set(controller: &str, path: &Path, value: &str, expected: &str) -> Result<(), CgroupError> {
    write_file(path, value).map_err(|e| match e {
        CgroupError::Write {
            path,
            value,
            source,
        } => CgroupError::Limit {
            controller: controller.to_owned(),
            path,
            value,
            source,
        },
        e => e,
    })?;
    let actual = read(path)?.trim().to_owned();
    if actual != expected {
        return Err(CgroupError::Verify {
            controller: controller.to_owned(),
            path: path.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0', '\n']) {
        return Err(CgroupError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether `dir` is the real root cgroup (exempt from the no internal
/// processes rule); `cgroup.type` exists only below it.
fn is_real_root(dir: &Path) -> bool {
    !dir.join("cgroup.type").exists()
}

/// Whether processes live directly in `dir` (unreadable: assume so).
fn has_procs(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |t| !t.trim().is_empty())
}

fn writable(path: &Path) -> bool {
    access(path, AccessFlags::W_OK).is_ok()
}

fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf takes no pointers and only reads a system value.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .unwrap_or(fallback)
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir(path).map_err(|source| CgroupError::Create {
        path: path.to_owned(),
        source,
    })
}

fn chown_to(path: &Path, uid: u32, gid: u32) -> Result<(), CgroupError> {
    chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|source| {
        CgroupError::Chown {
            path: path.to_owned(),
            uid,
            gid,
            source,
        }
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// One `write(2)` of `value`, as cgroup files want.
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A file holding one number.
fn number(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        detail: format!("not a number: {:?}", text.trim()),
    })
}

/// The value of `key` in a flat keyed file (`key value` lines).
fn keyed(path: &Path, text: &str, key: &str) -> Result<u64, CgroupError> {
    text.lines()
        .find_map(|l| {
            l.split_once(' ')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.trim())
        })
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CgroupError::Parse {
            path: path.to_owned(),
            detail: format!("no numeric {key:?} line"),
        })
}

/// The pids in `dirs` and their sub-cgroups, sorted and deduplicated.
fn pids_in<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Result<Vec<i32>, CgroupError> {
    let mut pids = Vec::new();
    for dir in dirs {
        collect_pids(dir, true, &mut pids)?;
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn collect_pids(dir: &Path, top: bool, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        // A sub-cgroup removed while we walk.
        Err(e) if !top && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path: file, source }),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid = line.parse().map_err(|_| CgroupError::Parse {
            path: file.clone(),
            detail: format!("not a pid: {line:?}"),
        })?;
        out.push(pid);
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&entry.path(), false, out)?;
        }
    }
    Ok(())
}

/// Removes a cgroup directory and any sub-cgroups, retrying a bounded time
/// while the kernel still reports it busy.
fn remove_tree(path: &Path) -> Result<(), CgroupError> {
    match fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: path.to_owned(),
                source,
            });
        }
    }
    let deadline = Instant::now() + RMDIR_TIMEOUT;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(Duration::from_millis(10))
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

/// The cgroup mounts in `/proc/self/mountinfo` text.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let v2 = match post.next()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let options = post.nth(1).unwrap_or("");
            let controllers = match v2 {
                true => Vec::new(),
                false => options
                    .split(',')
                    .filter(|o| *o != "rw" && *o != "ro" && !o.contains('='))
                    .map(str::to_owned)
                    .collect(),
            };
            Some(Mount {
                root: unescape(pre.get(3)?),
                point: unescape(pre.get(4)?),
                v2,
                controllers,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The lines of `/proc/<pid>/cgroup` text.
fn parse_memberships(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some(Membership {
                id: id.to_owned(),
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
            text.contains("pids limit")
                && text.contains("pids.max")
                && text.contains("1099511627776"),
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
        let cgroup = Cgroup::create(Some(&parent), &format!("rootless-{me}"), &limits)
            .expect("rootless create");
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
}
