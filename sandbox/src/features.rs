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
        overlayfs: std::fs::read_to_string("/proc/filesystems")
            .is_ok_and(|s| s.contains("\toverlay")),
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
            matches!(
                nix::sys::wait::waitpid(child, None),
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
            )
        }
        Err(_) => false,
    }
}

/// Asks the kernel to favour dynamic cgroup changes (the `favordynmods`
/// option of a cgroup2 mount), which makes moving a process into a cgroup
/// cost microseconds instead of an RCU grace period (about 10 ms here). The
/// option is global to the kernel's cgroup core, so one cgroup2 mount
/// suffices, and it applies to v1 hierarchies too. Root only; the daemon
/// calls it once at start-up and reports the outcome.
pub fn favor_dynamic_cgroups() -> Result<String, String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read mountinfo: {e}"))?;
    let mut cgroup2 = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup2") {
            continue;
        }
        let super_opts = r.nth(1).unwrap_or("");
        let mount_point = left.split(' ').nth(4).unwrap_or("").to_owned();
        if super_opts.split(',').any(|o| o == "favordynmods") {
            return Ok(format!("favordynmods already set on {mount_point}"));
        }
        cgroup2.get_or_insert(mount_point);
    }
    let Some(path) = cgroup2 else {
        return Err("no cgroup2 mount to set favordynmods on".into());
    };
    let st =
        nix::sys::statvfs::statvfs(path.as_str()).map_err(|e| format!("statvfs {path}: {e}"))?;
    use nix::mount::MsFlags;
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_REMOUNT;
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if st.flags().contains(fs) {
            flags |= ms;
        }
    }
    nix::mount::mount(
        None::<&str>,
        path.as_str(),
        None::<&str>,
        flags,
        Some("favordynmods"),
    )
    .map_err(|e| format!("cannot set favordynmods on {path}: {e}"))?;
    Ok(format!("favordynmods set on {path}"))
}
