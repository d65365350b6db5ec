//! What this host can do, detected once: reported by `--features`, by the
//! daemon at start-up and by `hermetic status`.

use serde::Serialize;

/// The host's sandboxing features.
#[derive(Debug, Clone, Serialize)]
pub struct Features {
    /// Kernel release.
    pub kernel: String,
    /// Whether the helper runs as root (sandbox ids then map to an
    /// unprivileged host range) or rootless (the caller's own uid).
    pub root: bool,
    /// A user namespace can be created by this process.
    pub user_namespaces: bool,
    /// The Landlock ABI the kernel offers (negative errno when none).
    pub landlock_abi: i32,
    /// Seccomp filters are available.
    pub seccomp: bool,
    /// cgroup support.
    pub cgroup: crate::cgroup::CgroupSupport,
    /// Overlayfs is registered with the kernel.
    pub overlayfs: bool,
}

/// Detects the host's features. Creating a user namespace is tried in a
/// short-lived child so this process stays unchanged.
pub fn detect() -> Features {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Features {
        kernel,
        root: nix::unistd::geteuid().is_root(),
        user_namespaces: can_unshare_user(),
        landlock_abi: crate::confine::kernel_abi(),
        // SAFETY: prctl with integer arguments only.
        seccomp: unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0,
        cgroup: crate::cgroup::detect(None),
        overlayfs: std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| s.contains("\toverlay")),
    }
}

fn can_unshare_user() -> bool {
    // SAFETY: fork in a single-threaded process; the child only unshares and
    // exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            matches!(nix::sys::wait::waitpid(child, None), Ok(nix::sys::wait::WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    }
}
