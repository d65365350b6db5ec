//! The last restrictions applied to the step before `execve`, each verified:
//! rlimits, capabilities, no_new_privs, Landlock. (Seccomp comes after all of
//! these, in [`crate::seccomp`].)

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use nix::sys::resource::{Resource, setrlimit};

use crate::profile::Landlock as LandlockPolicy;
use crate::status::LandlockStatus;

/// A restriction could not be applied or verified.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// A system call failed.
    #[error("failed to {what}: {errno}")]
    Sys {
        /// What was being done.
        what: String,
        /// The error.
        errno: nix::Error,
    },
    /// Applied, but reading it back shows otherwise.
    #[error("verification failed: {0}")]
    Verify(String),
    /// Landlock refused the ruleset.
    #[error("landlock: {0}")]
    Landlock(String),
}

fn sys<T>(what: impl Into<String>, r: nix::Result<T>) -> Result<T, ConfineError> {
    r.map_err(|errno| ConfineError::Sys {
        what: what.into(),
        errno,
    })
}

/// rlimits of the step.
#[derive(Debug, Clone, Copy)]
pub struct Rlimits {
    /// RLIMIT_FSIZE.
    pub fsize: Option<u64>,
    /// RLIMIT_NOFILE.
    pub nofile: u64,
    /// RLIMIT_NPROC when no cgroup limits pids (rootless fallback).
    pub nproc: Option<u64>,
    /// RLIMIT_AS when no cgroup limits memory (rootless fallback).
    pub address_space: Option<u64>,
}

/// Sets and verifies the rlimits (soft = hard, so the step cannot raise them).
pub fn set_rlimits(r: &Rlimits) -> Result<(), ConfineError> {
    let mut want = vec![
        (Resource::RLIMIT_CORE, 0),
        (Resource::RLIMIT_NOFILE, r.nofile),
    ];
    if let Some(f) = r.fsize {
        want.push((Resource::RLIMIT_FSIZE, f));
    }
    if let Some(n) = r.nproc {
        want.push((Resource::RLIMIT_NPROC, n));
    }
    if let Some(a) = r.address_space {
        want.push((Resource::RLIMIT_AS, a));
    }
    for (res, v) in want {
        sys(format!("set {res:?} to {v}"), setrlimit(res, v, v))?;
        let (soft, hard) = sys(format!("read {res:?}"), nix::sys::resource::getrlimit(res))?;
        if soft != v || hard != v {
            return Err(ConfineError::Verify(format!(
                "{res:?} is {soft}/{hard}, wanted {v}"
            )));
        }
    }
    Ok(())
}

/// The highest capability number the kernel knows. Read by the helper
/// before it forks (the step cannot rely on /proc/sys).
pub fn last_cap() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability from every set, locks the securebits so that no
/// execve can grant any back, and verifies all sets are empty.
pub fn drop_capabilities(last: u64) -> Result<(), ConfineError> {
    // Bounding set and securebits need CAP_SETPCAP, which goes last.
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if r != 0 {
            return Err(ConfineError::Sys {
                what: format!("drop capability {cap} from the bounding set"),
                errno: nix::Error::last(),
            });
        }
    }
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(ConfineError::Sys {
            what: "lock securebits".into(),
            errno: nix::Error::last(),
        });
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(ConfineError::Sys {
            what: "clear ambient capabilities".into(),
            errno: nix::Error::last(),
        });
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid for the duration of the call; data
    // has the two elements version 3 requires.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(ConfineError::Sys {
            what: "clear capability sets".into(),
            errno: nix::Error::last(),
        });
    }
    verify_no_capabilities(last)
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn verify_no_capabilities(last: u64) -> Result<(), ConfineError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: as in capset above; the kernel writes two CapData elements.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(ConfineError::Sys {
            what: "read capability sets".into(),
            errno: nix::Error::last(),
        });
    }
    if data
        .iter()
        .any(|d| d.effective | d.permitted | d.inheritable != 0)
    {
        return Err(ConfineError::Verify("a capability set is not empty".into()));
    }
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments only.
        let bounding = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
        // SAFETY: prctl with integer arguments only.
        let ambient =
            unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_IS_SET, cap, 0, 0) };
        if bounding != 0 || ambient != 0 {
            return Err(ConfineError::Verify(format!(
                "capability {cap} is still in the bounding or ambient set"
            )));
        }
    }
    Ok(())
}

/// Sets no_new_privs and verifies it.
pub fn set_no_new_privs() -> Result<(), ConfineError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(ConfineError::Sys {
            what: "set no_new_privs".into(),
            errno: nix::Error::last(),
        });
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } != 1 {
        return Err(ConfineError::Verify("no_new_privs is not set".into()));
    }
    Ok(())
}

/// The Landlock ABI the kernel offers (negative errno when none).
pub fn kernel_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute pointer
    // and size 0 only queries the ABI version.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if r < 0 {
        -nix::Error::last_raw()
    } else {
        r as i32
    }
}

/// Read-write paths inside the sandbox (after `pivot_root`).
const RW_PATHS: &[&str] = &["/work", "/tmp", "/dev/shm", "/dev/pts"];
/// Devices the step may read and write.
const RW_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

fn abi_of(n: u8) -> ABI {
    match n {
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        _ => ABI::V7,
    }
}

/// Restricts the calling process with Landlock at the pinned ABI: the whole
/// tree readable and executable, writes only where the mounts are writable,
/// TCP bind and connect only to the profile's ports, abstract unix sockets
/// and signals scoped to the sandbox. Returns what the kernel granted.
pub fn apply_landlock(policy: &LandlockPolicy) -> Result<LandlockStatus, ConfineError> {
    let abi = abi_of(policy.abi);
    let kernel = kernel_abi();
    let ll = |e: landlock::RulesetError| ConfineError::Landlock(e.to_string());
    let lp = |e: landlock::PathFdError| ConfineError::Landlock(e.to_string());
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let mut ruleset = landlock::Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(ll)?;
    if abi >= ABI::V4 {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(ll)?;
    }
    if abi >= ABI::V6 {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(ll)?;
    }
    let mut created = ruleset.create().map_err(ll)?;
    created = created
        .add_rule(PathBeneath::new(PathFd::new("/").map_err(lp)?, read))
        .map_err(ll)?;
    for p in RW_PATHS {
        created = created
            .add_rule(PathBeneath::new(PathFd::new(p).map_err(lp)?, all))
            .map_err(ll)?;
    }
    let file_rw = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;
    for d in RW_DEVICES {
        created = created
            .add_rule(PathBeneath::new(PathFd::new(d).map_err(lp)?, file_rw & all))
            .map_err(ll)?;
    }
    if abi >= ABI::V4 {
        for port in &policy.tcp_bind {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::BindTcp))
                .map_err(ll)?;
        }
        for port in &policy.tcp_connect {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(ll)?;
        }
    }
    let status = created.restrict_self().map_err(ll)?;
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    };
    Ok(LandlockStatus {
        enforced: enforced.into(),
        abi_requested: policy.abi,
        abi_kernel: kernel,
    })
}
