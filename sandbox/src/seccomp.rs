//! The profile's syscall policy compiled to classic BPF.
//!
//! The filter allows by default and denies a fixed list (plus the profile's
//! `extra_deny`). It is compiled before the fork ([`compile`]) and installed
//! in the child ([`apply`], which does not allocate) as the last restriction
//! before `execve`: it denies `mount`, `sethostname`, `setns` and others that
//! the set-up itself needs.
//!
//! # What is denied, and how
//! - EPERM: `setns`; `unshare` and `clone` when any namespace flag is set in
//!   the flags (arg0 on x86_64 and aarch64); the mount API; the key
//!   syscalls; `bpf`, `userfaultfd`, io_uring; `perf_event_open` (unless
//!   `allow_perf`); `ptrace` and `process_vm_readv`/`writev` (unless
//!   `allow_ptrace`); module, kexec, reboot, swap, accounting, clock and
//!   host-name setters; a few obsolete or hardware ones; every `extra_deny`.
//! - `ioctl` with `TIOCSTI` or `TIOCLINUX`: only the low 32 bits of the
//!   request are compared, as the kernel truncates it, so high bits do not
//!   slip past.
//! - The `chmod` family when the mode sets `S_ISUID` or `S_ISGID`; `mknod`
//!   and `mknodat` for character and block devices (fifos, sockets and
//!   regular files stay allowed).
//! - `clone3` fails with ENOSYS: its flags live in memory seccomp cannot
//!   read, and ENOSYS makes glibc fall back to `clone`, which is filtered
//!   (what Docker and runc do).
//! - The `setxattr` family fails with ENOTSUP. Seccomp cannot read the
//!   attribute name, so it cannot tell `user.*` from `security.capability`;
//!   ENOTSUP is what a filesystem without xattrs answers, and `cp`, `tar`
//!   and friends carry on without them. It keeps a step from writing
//!   `security.capability` (file capabilities) whatever its privileges.
//! - `extra_deny` makes a syscall unconditionally EPERM; one already denied
//!   unconditionally keeps its errno.
//!
//! # Layout of the program
//! Our own generator, a binary search over the denied syscall numbers:
//! `[arch check][x32 guard][search tree]`. The arch check kills the
//! process on a foreign architecture (so i386 code on x86_64, which enters
//! with `AUDIT_ARCH_I386`, is killed). The x32 guard: an x32 syscall carries
//! the native arch but its number has bit `0x40000000` set, so it would not
//! match any rule keyed on the 64-bit numbers; every number at or above that
//! bit gets ENOSYS. The tree compares the number against a pivot per level
//! and ends in short leaves, each denied syscall followed by its own block
//! (a return, or argument checks then returns).
//!
//! Why not a linear chain (what seccompiler emits): on attach the kernel
//! emulates the filter once per syscall number to find the ones it can
//! allow without running it, so a chain of a few hundred instructions costs
//! a few hundred microseconds per action; a syscall the filter does run
//! (`openat`, `ioctl`, `clone`: they have argument rules) walks the chain.
//! The tree makes both logarithmic.
//! Syscalls added since Linux 5.1 share one number on every architecture;
//! the ones libc does not name yet are in a table of their own.

use seccompiler::{BpfProgram, SeccompAction, sock_filter};

use crate::profile::Seccomp;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the seccomp policy knows x86_64 and aarch64 only");

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// `__X32_SYSCALL_BIT`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel's `BPF_MAXINSNS`.
const BPF_MAXINSNS: usize = 4096;
/// Instructions in the arch check: load arch, jeq, ret kill.
#[cfg(test)]
const PROLOGUE_LEN: usize = 3;
/// Denied syscalls per leaf of the search tree.
const LEAF: usize = 4;
/// `struct seccomp_data.args[0]`; each argument is 8 bytes, low half first
/// (both supported architectures are little-endian).
const ARGS_OFFSET: u32 = 16;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
#[cfg(test)]
const JMP: u16 = libc::BPF_JMP as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

macro_rules! sys_table {
    ($($sys:ident)*) => { &[$((stringify!($sys), libc::$sys)),*] };
}

/// Syscalls libc names on both x86_64 and aarch64 (glibc and musl).
static COMMON: &[(&str, i64)] = sys_table! {
    SYS_accept SYS_accept4 SYS_acct SYS_add_key SYS_adjtimex SYS_bind SYS_bpf SYS_brk SYS_capget
    SYS_capset SYS_chdir SYS_chroot SYS_clock_adjtime SYS_clock_getres SYS_clock_gettime
    SYS_clock_nanosleep SYS_clock_settime SYS_clone SYS_clone3 SYS_close SYS_close_range
    SYS_connect SYS_copy_file_range SYS_delete_module SYS_dup SYS_dup3 SYS_epoll_create1
    SYS_epoll_ctl SYS_epoll_pwait SYS_epoll_pwait2 SYS_eventfd2 SYS_execve SYS_execveat SYS_exit
    SYS_exit_group SYS_faccessat SYS_faccessat2 SYS_fadvise64 SYS_fallocate SYS_fanotify_init
    SYS_fanotify_mark SYS_fchdir SYS_fchmod SYS_fchmodat SYS_fchown SYS_fchownat SYS_fcntl
    SYS_fdatasync SYS_fgetxattr SYS_finit_module SYS_flistxattr SYS_flock SYS_fremovexattr
    SYS_fsconfig SYS_fsetxattr SYS_fsmount SYS_fsopen SYS_fspick SYS_fstat SYS_fstatfs SYS_fsync
    SYS_ftruncate SYS_futex SYS_futex_waitv SYS_get_mempolicy SYS_get_robust_list SYS_getcpu
    SYS_getcwd SYS_getdents64 SYS_getegid SYS_geteuid SYS_getgid SYS_getgroups SYS_getitimer
    SYS_getpeername SYS_getpgid SYS_getpid SYS_getppid SYS_getpriority SYS_getrandom
    SYS_getresgid SYS_getresuid SYS_getrusage SYS_getsid SYS_getsockname SYS_getsockopt
    SYS_gettid SYS_gettimeofday SYS_getuid SYS_getxattr SYS_init_module SYS_inotify_add_watch
    SYS_inotify_init1 SYS_inotify_rm_watch SYS_io_cancel SYS_io_destroy SYS_io_getevents
    SYS_io_setup SYS_io_submit SYS_io_uring_enter SYS_io_uring_register SYS_io_uring_setup
    SYS_ioctl SYS_ioprio_get SYS_ioprio_set SYS_kcmp SYS_kexec_load SYS_keyctl SYS_kill
    SYS_landlock_add_rule SYS_landlock_create_ruleset SYS_landlock_restrict_self SYS_lgetxattr
    SYS_linkat SYS_listen SYS_listxattr SYS_llistxattr SYS_lookup_dcookie SYS_lremovexattr
    SYS_lseek SYS_lsetxattr SYS_madvise SYS_mbind SYS_membarrier SYS_memfd_create
    SYS_memfd_secret SYS_migrate_pages SYS_mincore SYS_mkdirat SYS_mknodat SYS_mlock SYS_mlock2
    SYS_mlockall SYS_mmap SYS_mount SYS_mount_setattr SYS_move_mount SYS_move_pages
    SYS_mprotect SYS_mq_getsetattr SYS_mq_notify SYS_mq_open SYS_mq_timedreceive
    SYS_mq_timedsend SYS_mq_unlink SYS_mremap SYS_mseal SYS_msgctl SYS_msgget SYS_msgrcv
    SYS_msgsnd SYS_msync SYS_munlock SYS_munlockall SYS_munmap SYS_name_to_handle_at
    SYS_nanosleep SYS_newfstatat SYS_nfsservctl SYS_open_by_handle_at SYS_open_tree SYS_openat
    SYS_openat2 SYS_perf_event_open SYS_personality SYS_pidfd_getfd SYS_pidfd_open
    SYS_pidfd_send_signal SYS_pipe2 SYS_pivot_root SYS_pkey_alloc SYS_pkey_free SYS_pkey_mprotect
    SYS_ppoll SYS_prctl SYS_pread64 SYS_preadv SYS_preadv2 SYS_prlimit64 SYS_process_madvise
    SYS_process_mrelease SYS_process_vm_readv SYS_process_vm_writev SYS_pselect6 SYS_ptrace
    SYS_pwrite64 SYS_pwritev SYS_pwritev2 SYS_quotactl SYS_quotactl_fd SYS_read SYS_readahead
    SYS_readlinkat SYS_readv SYS_reboot SYS_recvfrom SYS_recvmmsg SYS_recvmsg
    SYS_remap_file_pages SYS_removexattr SYS_renameat2 SYS_request_key SYS_restart_syscall
    SYS_rseq SYS_rt_sigaction SYS_rt_sigpending SYS_rt_sigprocmask SYS_rt_sigqueueinfo
    SYS_rt_sigreturn SYS_rt_sigsuspend SYS_rt_sigtimedwait SYS_rt_tgsigqueueinfo
    SYS_sched_get_priority_max SYS_sched_get_priority_min SYS_sched_getaffinity
    SYS_sched_getattr SYS_sched_getparam SYS_sched_getscheduler SYS_sched_rr_get_interval
    SYS_sched_setaffinity SYS_sched_setattr SYS_sched_setparam SYS_sched_setscheduler
    SYS_sched_yield SYS_seccomp SYS_semctl SYS_semget SYS_semop SYS_semtimedop SYS_sendfile
    SYS_sendmmsg SYS_sendmsg SYS_sendto SYS_set_mempolicy SYS_set_mempolicy_home_node
    SYS_set_robust_list SYS_set_tid_address SYS_setdomainname SYS_setfsgid SYS_setfsuid
    SYS_setgid SYS_setgroups SYS_sethostname SYS_setitimer SYS_setns SYS_setpgid SYS_setpriority
    SYS_setregid SYS_setresgid SYS_setresuid SYS_setreuid SYS_setsid SYS_setsockopt
    SYS_settimeofday SYS_setuid SYS_setxattr SYS_shmat SYS_shmctl SYS_shmdt SYS_shmget
    SYS_shutdown SYS_sigaltstack SYS_signalfd4 SYS_socket SYS_socketpair SYS_splice SYS_statfs
    SYS_statx SYS_swapoff SYS_swapon SYS_symlinkat SYS_sync SYS_syncfs SYS_sysinfo SYS_syslog
    SYS_tee SYS_tgkill SYS_timer_create SYS_timer_delete SYS_timer_getoverrun SYS_timer_gettime
    SYS_timer_settime SYS_timerfd_create SYS_timerfd_gettime SYS_timerfd_settime SYS_times
    SYS_tkill SYS_truncate SYS_umask SYS_umount2 SYS_uname SYS_unlinkat SYS_unshare
    SYS_userfaultfd SYS_utimensat SYS_vhangup SYS_vmsplice SYS_wait4 SYS_waitid SYS_write
    SYS_writev
};

/// Syscalls only x86_64 has (the legacy path-based ones among them).
#[cfg(target_arch = "x86_64")]
static ARCH_ONLY: &[(&str, i64)] = sys_table! {
    SYS__sysctl SYS_access SYS_afs_syscall SYS_alarm SYS_arch_prctl SYS_chmod SYS_chown SYS_creat
    SYS_dup2 SYS_epoll_create SYS_epoll_ctl_old SYS_epoll_wait SYS_epoll_wait_old SYS_eventfd
    SYS_fork SYS_futimesat SYS_get_thread_area SYS_getdents SYS_getpgrp SYS_getpmsg
    SYS_getrlimit SYS_inotify_init SYS_ioperm SYS_iopl SYS_kexec_file_load SYS_lchown SYS_link
    SYS_lstat SYS_mkdir SYS_mknod SYS_modify_ldt SYS_open SYS_pause SYS_pipe SYS_poll
    SYS_putpmsg SYS_readlink SYS_rename SYS_renameat SYS_rmdir SYS_security SYS_select
    SYS_set_thread_area SYS_setrlimit SYS_signalfd SYS_stat SYS_symlink SYS_sync_file_range
    SYS_sysfs SYS_time SYS_tuxcall SYS_unlink SYS_uselib SYS_ustat SYS_utime SYS_utimes SYS_vfork
    SYS_vserver
};
/// aarch64's own: musl's libc does not name it.
#[cfg(target_arch = "aarch64")]
static ARCH_ONLY: &[(&str, i64)] = &[("SYS_kexec_file_load", 294)];

/// Syscalls since 5.1 have one number on every architecture (asm-generic
/// `unistd.h`); these are the ones libc does not name on both.
#[rustfmt::skip]
static UNIFIED: &[(&str, i64)] = &[
    ("SYS_cachestat", 451), ("SYS_fchmodat2", 452), ("SYS_map_shadow_stack", 453),
    ("SYS_futex_wake", 454), ("SYS_futex_wait", 455), ("SYS_futex_requeue", 456),
    ("SYS_statmount", 457), ("SYS_listmount", 458), ("SYS_lsm_get_self_attr", 459),
    ("SYS_lsm_set_self_attr", 460), ("SYS_lsm_list_modules", 461), ("SYS_setxattrat", 463),
    ("SYS_getxattrat", 464), ("SYS_listxattrat", 465), ("SYS_removexattrat", 466),
    ("SYS_open_tree_attr", 467), ("SYS_file_getattr", 468), ("SYS_file_setattr", 469),
];

/// The table's own (`'static`) name and the number of `name`.
fn lookup(name: &str) -> Option<(&'static str, i64)> {
    COMMON
        .iter()
        .chain(ARCH_ONLY)
        .chain(UNIFIED)
        .find_map(|&(sys, nr)| {
            let short = &sys["SYS_".len()..];
            (short == name).then_some((short, nr))
        })
}

/// The syscall number of `name` on this architecture (x86_64 or aarch64),
/// `None` when unknown.
pub fn syscall_number(name: &str) -> Option<i64> {
    lookup(name).map(|(_, nr)| nr)
}

/// Denied with EPERM whatever the arguments. Names this architecture lacks
/// (`iopl` on aarch64) are skipped.
const EPERM_ALWAYS: &str = "setns mount umount2 pivot_root open_tree open_tree_attr move_mount \
    fsopen fsmount fsconfig fspick mount_setattr keyctl add_key request_key bpf userfaultfd \
    io_uring_setup io_uring_enter io_uring_register kexec_load kexec_file_load init_module \
    finit_module delete_module reboot swapon swapoff acct clock_settime clock_adjtime \
    settimeofday adjtimex sethostname setdomainname lookup_dcookie quotactl quotactl_fd \
    nfsservctl uselib _sysctl iopl ioperm vhangup syslog";
/// Denied with EPERM unless the profile allows ptrace.
const PTRACE: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "process_madvise",
    "kcmp",
];
/// Denied with ENOTSUP (see the module docs).
const SET_XATTR: &[&str] = &["setxattr", "lsetxattr", "fsetxattr", "setxattrat"];
/// Namespace flags refused in `unshare` and `clone` flags. For `clone`,
/// `CLONE_NEWTIME` lies in the exit-signal byte, where no valid signal sets it.
const NS_FLAGS: [libc::c_int; 8] = [
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWTIME,
];

/// One test on a syscall argument's low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `(arg & mask) == value`.
    Masked { arg: u8, mask: u32, value: u32 },
    /// Any of `bits` set (one `jset`, the accumulator kept).
    AnyBit { arg: u8, bits: u32 },
}

impl Check {
    fn arg(&self) -> u8 {
        match self {
            Check::Masked { arg, .. } | Check::AnyBit { arg, .. } => *arg,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// This errno whatever the arguments.
    Errno(i32),
    /// EPERM when every check of any one group holds.
    EpermWhen(Vec<Vec<Check>>),
}

#[derive(Debug)]
struct Deny {
    name: &'static str,
    nr: i64,
    action: Action,
}

/// `__O_TMPFILE` (O_TMPFILE without its O_DIRECTORY bit): creates a file.
const O_TMPFILE_BIT: u32 = 0o20_000_000;

const fn masked(arg: u8, mask: u32, value: u32) -> Check {
    Check::Masked { arg, mask, value }
}

const fn any_bit(arg: u8, bits: u32) -> Check {
    Check::AnyBit { arg, bits }
}

fn add(list: &mut Vec<Deny>, name: &str, action: Action) {
    if let Some((name, nr)) = lookup(name) {
        list.push(Deny { name, nr, action });
    }
}

/// The syscalls `policy` denies, each once.
fn deny_list(policy: &Seccomp) -> Result<Vec<Deny>, SeccompError> {
    let mut list = Vec::new();
    let mut always: Vec<&str> = EPERM_ALWAYS.split_whitespace().collect();
    if !policy.allow_ptrace {
        always.extend(PTRACE);
    }
    if !policy.allow_perf {
        always.push("perf_event_open");
    }
    for name in always {
        add(&mut list, name, Action::Errno(libc::EPERM));
    }
    add(&mut list, "clone3", Action::Errno(libc::ENOSYS));
    for name in SET_XATTR {
        add(&mut list, name, Action::Errno(libc::ENOTSUP));
    }
    let ns = NS_FLAGS.iter().fold(0, |all, &f| all | f as u32);
    add(
        &mut list,
        "unshare",
        Action::EpermWhen(vec![vec![any_bit(0, ns)]]),
    );
    add(
        &mut list,
        "clone",
        Action::EpermWhen(vec![vec![any_bit(0, ns)]]),
    );
    let tty = [libc::TIOCSTI, libc::TIOCLINUX].map(|req| vec![masked(1, u32::MAX, req as u32)]);
    add(&mut list, "ioctl", Action::EpermWhen(tty.to_vec()));
    let set_id = libc::S_ISUID | libc::S_ISGID;
    for (name, arg) in [
        ("chmod", 1),
        ("fchmod", 1),
        ("fchmodat", 2),
        ("fchmodat2", 2),
        // Creating a file with a set-id mode is chmod by another name.
        ("creat", 1),
    ] {
        add(
            &mut list,
            name,
            Action::EpermWhen(vec![vec![any_bit(arg, set_id)]]),
        );
    }
    for (name, mode) in [("mknod", 1), ("mknodat", 2)] {
        let rules = vec![
            vec![masked(mode, libc::S_IFMT, libc::S_IFCHR)],
            vec![masked(mode, libc::S_IFMT, libc::S_IFBLK)],
            vec![any_bit(mode, set_id)],
        ];
        add(&mut list, name, Action::EpermWhen(rules));
    }
    let creating = libc::O_CREAT as u32 | O_TMPFILE_BIT;
    for (name, flags, mode) in [("open", 1, 2), ("openat", 2, 3)] {
        let rule = vec![any_bit(flags, creating), any_bit(mode, set_id)];
        add(&mut list, name, Action::EpermWhen(vec![rule]));
    }
    // openat2 carries its mode in a struct seccomp cannot read: ENOSYS, so
    // callers fall back to openat, which is filtered (as with clone3).
    add(&mut list, "openat2", Action::Errno(libc::ENOSYS));
    for extra in &policy.extra_deny {
        let (name, nr) = lookup(extra).ok_or_else(|| SeccompError::UnknownSyscall {
            name: extra.clone(),
            arch: std::env::consts::ARCH,
        })?;
        match list.iter_mut().find(|d| d.nr == nr) {
            Some(d) if matches!(d.action, Action::EpermWhen(_)) => {
                d.action = Action::Errno(libc::EPERM)
            }
            Some(_) => {}
            None => list.push(Deny {
                name,
                nr,
                action: Action::Errno(libc::EPERM),
            }),
        }
    }
    Ok(list)
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    /// The BPF program, ready for [`apply`].
    pub program: BpfProgram,
    /// Number of syscalls with a rule.
    pub rules: usize,
}

/// A policy that could not be compiled or a filter that could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile disables seccomp: there is no filter to compile.
    #[error("seccomp is disabled in this profile; there is no filter to compile")]
    Disabled,
    /// A name in `extra_deny` is not a syscall on this architecture.
    #[error("unknown syscall {name:?} in seccomp.extra_deny (not a syscall on {arch})")]
    UnknownSyscall {
        /// The name.
        name: String,
        /// The architecture it was looked up for.
        arch: &'static str,
    },
    /// A rule's argument checks do not fit in one conditional jump.
    #[error("the seccomp rule for {name} is too long for a BPF jump")]
    RuleTooLong {
        /// The syscall.
        name: &'static str,
    },
    /// The program exceeds the kernel's limit.
    #[error("the seccomp filter has {len} instructions, more than the kernel's {BPF_MAXINSNS}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` or `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    #[error("failed to install the seccomp filter: {0}")]
    Apply(#[source] seccompiler::Error),
}

impl SeccompError {
    /// The errno behind an [`SeccompError::Apply`], for a child that can only
    /// report a number.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SeccompError::Apply(seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e)) => {
                e.raw_os_error()
            }
            _ => None,
        }
    }
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn ret_errno(errno: i32) -> sock_filter {
    stmt(RET, SeccompAction::Errno(errno as u32).into())
}

/// Compiles the profile's policy to BPF (before the fork).
pub fn compile(policy: &Seccomp) -> Result<CompiledFilter, SeccompError> {
    if !policy.enabled {
        return Err(SeccompError::Disabled);
    }
    let mut denies = deny_list(policy)?;
    denies.sort_by_key(|d| d.nr);
    let mut program = vec![
        stmt(LD_ABS, ARCH_OFFSET),
        jump(JEQ, AUDIT_ARCH, 1, 0),
        stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_ABS, NR_OFFSET),
        jump(JGE, X32_SYSCALL_BIT, 0, 1),
        ret_errno(libc::ENOSYS),
    ];
    emit_tree(&denies, &mut program)?;
    if program.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLarge { len: program.len() });
    }
    Ok(CompiledFilter {
        program,
        rules: denies.len(),
    })
}

/// Emits the search over `denies` (sorted by number); the accumulator holds
/// the syscall number on entry.
fn emit_tree(denies: &[Deny], out: &mut Vec<sock_filter>) -> Result<(), SeccompError> {
    if denies.len() <= LEAF {
        for d in denies {
            let block = block(d)?;
            let skip = u8::try_from(block.len())
                .map_err(|_| SeccompError::RuleTooLong { name: d.name })?;
            out.push(jump(JEQ, d.nr as u32, 0, skip));
            out.extend(block);
        }
        out.push(stmt(RET, libc::SECCOMP_RET_ALLOW));
        return Ok(());
    }
    let mid = denies.len() / 2;
    let mut left = Vec::new();
    emit_tree(&denies[..mid], &mut left)?;
    // number >= pivot: the `ja` over the left half; below: the left half.
    out.push(jump(JGE, denies[mid].nr as u32, 0, 1));
    out.push(stmt(JA, left.len() as u32));
    out.extend(left);
    emit_tree(&denies[mid..], out)
}

/// What follows a matched syscall number; always ends in a return.
fn block(d: &Deny) -> Result<Vec<sock_filter>, SeccompError> {
    match &d.action {
        Action::Errno(errno) => Ok(vec![ret_errno(*errno)]),
        Action::EpermWhen(groups) => {
            let mut out = Vec::new();
            let too_long = || SeccompError::RuleTooLong { name: d.name };
            for group in groups {
                // Instructions per check: a load unless the argument is
                // already in the accumulator, then `jset`, or `and` + `jeq`.
                let mut sizes = Vec::with_capacity(group.len());
                let mut loaded = None;
                for c in group {
                    let load = usize::from(loaded != Some(c.arg()));
                    let (n, keeps) = match c {
                        Check::AnyBit { .. } => (1, true),
                        Check::Masked { .. } => (2, false),
                    };
                    sizes.push(load + n);
                    loaded = keeps.then_some(c.arg());
                }
                // A failed check skips the rest of the group and its return.
                let mut loaded = None;
                for (i, c) in group.iter().enumerate() {
                    let rest = sizes[i + 1..].iter().sum::<usize>() + 1;
                    let skip = u8::try_from(rest).map_err(|_| too_long())?;
                    if loaded != Some(c.arg()) {
                        out.push(stmt(LD_ABS, ARGS_OFFSET + 8 * u32::from(c.arg())));
                    }
                    match *c {
                        Check::AnyBit { arg, bits } => {
                            out.push(jump(JSET, bits, 0, skip));
                            loaded = Some(arg);
                        }
                        Check::Masked { mask, value, .. } => {
                            out.push(stmt(AND_K, mask));
                            out.push(jump(JEQ, value, 0, skip));
                            loaded = None;
                        }
                    }
                }
                out.push(ret_errno(libc::EPERM));
            }
            out.push(stmt(RET, libc::SECCOMP_RET_ALLOW));
            Ok(out)
        }
    }
}

/// Installs the filter on the calling thread.
///
/// Call it in the single-threaded child after the fork, after setting
/// `no_new_privs` (seccompiler sets it again; that is harmless) and as the
/// last restriction before `execve`. It does not allocate: the error holds
/// the errno only (see [`SeccompError::raw_os_error`]).
pub fn apply(filter: &CompiledFilter) -> Result<(), SeccompError> {
    seccompiler::apply_filter(&filter.program).map_err(SeccompError::Apply)
}

/// Names of the syscalls the policy denies, sorted (for the status report
/// and docs). Empty when seccomp is disabled; unknown `extra_deny` names are
/// left out (profile validation rejects them).
pub fn denied_syscalls(policy: &Seccomp) -> Vec<&'static str> {
    if !policy.enabled {
        return Vec::new();
    }
    let mut known = policy.clone();
    known.extra_deny.retain(|n| syscall_number(n).is_some());
    let mut names: Vec<_> = deny_list(&known)
        .unwrap_or_default()
        .iter()
        .map(|d| d.name)
        .collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use super::*;

    /// Errnos the filter makes are shifted by this in the marked copy of a
    /// program: above every errno the kernel returns (the largest is 133).
    const MARK: i32 = 140;
    const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
    const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    /// Who is expected to answer a case, and with which errno (0: success).
    #[derive(Debug, Clone, Copy)]
    enum Want {
        Filter(i32),
        Kernel(i32),
    }
    use Want::{Filter, Kernel};

    type Case<'a> = (&'static str, Want, Box<dyn Fn() -> i32 + 'a>);

    fn case<'a>(name: &'static str, want: Want, op: impl Fn() -> i32 + 'a) -> Case<'a> {
        (name, want, Box::new(op))
    }

    /// 0 unless `ret` is -1, else errno.
    fn err(ret: impl Into<i64>) -> i32 {
        match ret.into() {
            -1 => std::io::Error::last_os_error().raw_os_error().unwrap_or(-1),
            _ => 0,
        }
    }

    fn wait_exit(pid: libc::pid_t) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a live out-pointer.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        (got == pid && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status))
    }

    /// After a fork or clone: the new child exits at once; the parent reaps
    /// it and answers 0 when it exited 0 (253 otherwise), or the errno.
    fn child_exits(pid: i64) -> i32 {
        match pid {
            0 => {
                // SAFETY: ends the new child without running anything else.
                unsafe { libc::_exit(0) }
            }
            p if p > 0 => match wait_exit(p as libc::pid_t) {
                Some(0) => 0,
                _ => 253,
            },
            _ => err(pid),
        }
    }

    /// Runs `op` in a forked child under `filter`; its exit code is `op`'s
    /// errno, 254 or 255 when the filter could not be installed.
    fn in_child(filter: &CompiledFilter, op: &dyn Fn() -> i32) -> i32 {
        // SAFETY: the child makes only async-signal-safe calls (prctl, the
        // seccomp syscall, `op`'s raw syscalls, _exit) and never allocates,
        // so locks held by other test threads cannot deadlock it.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: prctl with integer arguments only.
            let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let code = if nnp != 0 {
                254
            } else if apply(filter).is_err() {
                255
            } else {
                op()
            };
            // SAFETY: ends the child without the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        wait_exit(pid).expect("the child exited")
    }

    /// `filter` with every errno it returns shifted by [`MARK`], so that
    /// the filter's answers cannot be mistaken for the kernel's.
    fn marked(filter: &CompiledFilter) -> CompiledFilter {
        let mut marked = filter.clone();
        for ins in &mut marked.program {
            if ins.code == RET && ins.k & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_ERRNO {
                ins.k += MARK as u32;
            }
        }
        marked
    }

    /// Runs every case under `policy`'s filter and under its marked copy.
    fn check(policy: &Seccomp, cases: &[Case<'_>]) {
        let real = compile(policy).expect("the policy compiles");
        let marked = marked(&real);
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|(name, want, op)| {
                let expected = match *want {
                    Filter(e) => (e, e + MARK),
                    Kernel(e) => (e, e),
                };
                let got = (in_child(&real, op), in_child(&marked, op));
                (got != expected)
                    .then(|| format!("{name}: want {want:?} {expected:?}, got {got:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn ioctl(request: u64) -> i32 {
        let mut buf = [0u8; 64];
        // SAFETY: fd -1 is never open; `buf` outlives the call.
        err(unsafe { libc::syscall(libc::SYS_ioctl, -1, request, buf.as_mut_ptr()) })
    }

    fn cpath(path: &Path) -> CString {
        CString::new(path.as_os_str().as_bytes()).expect("no NUL in a temp path")
    }

    #[test]
    fn namespaces_and_processes() {
        let x32_getpid = i64::from(X32_SYSCALL_BIT) | libc::SYS_getpid;
        let clone = |flags: libc::c_int| {
            // SAFETY: fork-like clone (no CLONE_VM, no new stack): the child
            // has its own copy of the stack and only calls _exit.
            child_exits(unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) })
        };
        let unshare = |flags| {
            // SAFETY: unshare takes flags only.
            err(unsafe { libc::unshare(flags) })
        };
        #[rustfmt::skip]
        let cases = [
            case("unshare(CLONE_NEWUSER)", Filter(libc::EPERM), || unshare(libc::CLONE_NEWUSER)),
            case("unshare(NEWNET|FILES)", Filter(libc::EPERM), || unshare(libc::CLONE_NEWNET | libc::CLONE_FILES)),
            case("unshare(CLONE_FILES)", Kernel(0), || unshare(libc::CLONE_FILES)),
            // SAFETY: an invalid fd and no pointers.
            case("setns(-1, 0)", Filter(libc::EPERM), || err(unsafe { libc::setns(-1, 0) })),
            case("clone(NEWPID|SIGCHLD)", Filter(libc::EPERM), || clone(libc::CLONE_NEWPID | libc::SIGCHLD)),
            case("clone(SIGCHLD)", Kernel(0), || clone(libc::SIGCHLD)),
            // SAFETY: the forked child only calls _exit (in child_exits).
            case("fork", Kernel(0), || child_exits(unsafe { libc::fork() }.into())),
            // SAFETY: a null args pointer: unfiltered, the kernel answers EINVAL.
            case("clone3(NULL, 0)", Filter(libc::ENOSYS), || err(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) })),
            // SAFETY: getpid takes no arguments.
            case("getpid", Kernel(0), || err(unsafe { libc::syscall(libc::SYS_getpid) })),
            // SAFETY: no arguments; the number is rejected before any use.
            case("x32 getpid", Filter(libc::ENOSYS), || err(unsafe { libc::syscall(x32_getpid) })),
        ];
        check(&Seccomp::default(), &cases);
    }

    #[test]
    fn mount_keys_io_uring_and_tty() {
        let null = std::ptr::null::<libc::c_char>();
        let sti = u64::from(libc::TIOCSTI as u32);
        #[rustfmt::skip]
        let cases = [
            // SAFETY: null pointers: unfiltered, the kernel answers EFAULT.
            case("mount(NULL..)", Filter(libc::EPERM), || err(unsafe { libc::mount(null, null, null, 0, std::ptr::null()) })),
            // SAFETY: KEYCTL_GET_KEYRING_ID of the session keyring: integers only.
            case("keyctl", Filter(libc::EPERM), || err(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) })),
            // SAFETY: zero entries and a null params pointer.
            case("io_uring_setup", Filter(libc::EPERM), || err(unsafe { libc::syscall(libc::SYS_io_uring_setup, 0, 0) })),
            // fd -1 rather than 0: a broken filter must not inject into a terminal.
            case("ioctl(TIOCSTI)", Filter(libc::EPERM), || ioctl(sti)),
            case("ioctl(TIOCSTI | 1 << 32)", Filter(libc::EPERM), || ioctl(sti | 1 << 32)),
            case("ioctl(TIOCLINUX)", Filter(libc::EPERM), || ioctl(u64::from(libc::TIOCLINUX as u32))),
            case("ioctl(TIOCGWINSZ)", Kernel(libc::EBADF), || ioctl(u64::from(libc::TIOCGWINSZ as u32))),
        ];
        check(&Seccomp::default(), &cases);
    }

    #[test]
    fn file_modes_and_xattrs() {
        let dir = std::env::temp_dir().join(format!("hermetic-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        let (file, node) = (cpath(&dir.join("file")), cpath(&dir.join("node")));
        let (at, name) = (libc::AT_FDCWD, c"user.hermetic".as_ptr());
        let chmod = |mode: u32| {
            // SAFETY: `file` is a live C string.
            err(unsafe { libc::syscall(libc::SYS_fchmodat, at, file.as_ptr(), mode) })
        };
        let rm = |ret: i32| {
            // SAFETY: `node` is a live C string.
            unsafe { libc::unlink(node.as_ptr()) };
            ret
        };
        let mknod = |mode: u32, dev: libc::dev_t| {
            // SAFETY: `node` is a live C string; `rm` removes the node.
            rm(err(unsafe {
                libc::syscall(libc::SYS_mknodat, at, node.as_ptr(), mode, dev)
            }))
        };
        let chr = libc::S_IFCHR | 0o600;
        let create = |flags: i32, mode: u32| {
            // SAFETY: `node` is a live C string.
            let fd = unsafe { libc::syscall(libc::SYS_openat, at, node.as_ptr(), flags, mode) };
            if fd >= 0 {
                // SAFETY: closing the fd we just opened.
                unsafe { libc::close(fd as i32) };
            }
            rm(err(fd.min(0)))
        };
        let new = libc::O_CREAT | libc::O_WRONLY;
        #[rustfmt::skip]
        let mut cases = vec![
            case("openat O_CREAT 4755", Filter(libc::EPERM), || create(new, 0o4755)),
            case("openat O_CREAT 2755", Filter(libc::EPERM), || create(new, 0o2755)),
            case("openat O_CREAT 755", Kernel(0), || create(new, 0o755)),
            case("openat O_TMPFILE 4755", Filter(libc::EPERM), || create(libc::O_TMPFILE | libc::O_WRONLY, 0o4755)),
            case("mknodat regular 4755", Filter(libc::EPERM), || mknod(libc::S_IFREG | 0o4755, 0)),
            // SAFETY: a null how pointer: unfiltered, the kernel answers EFAULT.
            case("openat2", Filter(libc::ENOSYS), || err(unsafe { libc::syscall(libc::SYS_openat2, at, node.as_ptr(), 0, 24) })),
            case("fchmodat 4755", Filter(libc::EPERM), || chmod(0o4755)),
            case("fchmodat 2755", Filter(libc::EPERM), || chmod(0o2755)),
            case("fchmodat 1755", Kernel(0), || chmod(0o1755)),
            case("fchmodat 755", Kernel(0), || chmod(0o755)),
            // SAFETY: `file` is a live C string.
            case("chmod() 4755", Filter(libc::EPERM), || err(unsafe { libc::chmod(file.as_ptr(), 0o4755) })),
            // SAFETY: an invalid fd.
            case("fchmod 6755", Filter(libc::EPERM), || err(unsafe { libc::fchmod(-1, 0o6755) })),
            // SAFETY: `file` is a live C string.
            case("fchmodat2 4755", Filter(libc::EPERM), || err(unsafe { libc::syscall(452, at, file.as_ptr(), 0o4755, 0) })),
            case("mknodat c 1 3", Filter(libc::EPERM), || mknod(chr, libc::makedev(1, 3))),
            case("mknodat b 7 0", Filter(libc::EPERM), || mknod(libc::S_IFBLK | 0o600, libc::makedev(7, 0))),
            case("mknodat fifo", Kernel(0), || mknod(libc::S_IFIFO | 0o600, 0)),
            case("mknodat regular", Kernel(0), || mknod(libc::S_IFREG | 0o600, 0)),
            // SAFETY: `node` is a live C string; `rm` removes the fifo.
            case("mkfifo()", Kernel(0), || rm(err(unsafe { libc::mkfifo(node.as_ptr(), 0o600) }))),
            // SAFETY: live C strings and a one-byte value.
            case("setxattr", Filter(libc::ENOTSUP), || err(unsafe { libc::setxattr(file.as_ptr(), name, c"1".as_ptr().cast(), 1, 0) })),
            // SAFETY: as above.
            case("lsetxattr", Filter(libc::ENOTSUP), || err(unsafe { libc::lsetxattr(file.as_ptr(), name, c"1".as_ptr().cast(), 1, 0) })),
            // SAFETY: an invalid fd and live C strings.
            case("fsetxattr", Filter(libc::ENOTSUP), || err(unsafe { libc::fsetxattr(-1, name, c"1".as_ptr().cast(), 1, 0) })),
            // SAFETY: live C strings; a null args pointer.
            case("setxattrat", Filter(libc::ENOTSUP), || err(unsafe { libc::syscall(463, at, file.as_ptr(), 0, name, 0, 0) })),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            #[rustfmt::skip]
            let legacy = [
                // SAFETY: `node` is a live C string; `rm` removes the node.
                case("mknod c 1 3", Filter(libc::EPERM), || rm(err(unsafe { libc::syscall(libc::SYS_mknod, node.as_ptr(), chr, libc::makedev(1, 3)) }))),
                // SAFETY: `file` is a live C string.
                case("chmod 2755", Filter(libc::EPERM), || err(unsafe { libc::syscall(libc::SYS_chmod, file.as_ptr(), 0o2755) })),
                // SAFETY: `node` is a live C string; `rm` removes the file.
                case("creat 4755", Filter(libc::EPERM), || rm(err(unsafe { libc::syscall(libc::SYS_creat, node.as_ptr(), 0o4755) }))),
                // SAFETY: `node` is a live C string; `rm` removes the file.
                case("open O_CREAT 6755", Filter(libc::EPERM), || rm(err(unsafe { libc::syscall(libc::SYS_open, node.as_ptr(), new, 0o6755) }))),
            ];
            cases.extend(legacy);
        }
        check(&Seccomp::default(), &cases);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ptrace_perf_and_extra_deny() {
        // SAFETY: PTRACE_TRACEME takes no pointers.
        let traceme = || err(unsafe { libc::syscall(libc::SYS_ptrace, 0, 0, 0, 0) });
        // SAFETY: a null attr pointer: unfiltered, the kernel answers EFAULT.
        let perf = || err(unsafe { libc::syscall(libc::SYS_perf_event_open, 0, 0, -1, -1, 0) });
        // SAFETY: no iovecs at all.
        let vm_read =
            || err(unsafe { libc::syscall(libc::SYS_process_vm_readv, 1, 0, 0, 0, 0, 0) });
        // SAFETY: getppid takes no arguments.
        let getppid = || err(unsafe { libc::syscall(libc::SYS_getppid) });
        let winsize = || ioctl(u64::from(libc::TIOCGWINSZ as u32));
        // SAFETY: a null args pointer.
        let clone3 = || err(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) });
        #[rustfmt::skip]
        check(&Seccomp::default(), &[
            case("ptrace(TRACEME)", Filter(libc::EPERM), traceme),
            case("process_vm_readv", Filter(libc::EPERM), vm_read),
            case("perf_event_open", Filter(libc::EPERM), perf),
            case("getppid", Kernel(0), getppid),
        ]);
        let open = Seccomp {
            allow_ptrace: true,
            allow_perf: true,
            extra_deny: vec!["getppid".into(), "ioctl".into(), "clone3".into()],
            ..Seccomp::default()
        };
        #[rustfmt::skip]
        check(&open, &[
            case("ptrace(TRACEME), allowed", Kernel(0), traceme),
            case("perf_event_open, allowed", Kernel(libc::EFAULT), perf),
            case("getppid, extra_deny", Filter(libc::EPERM), getppid),
            case("ioctl(TIOCGWINSZ), extra_deny", Filter(libc::EPERM), winsize),
            case("clone3, extra_deny keeps ENOSYS", Filter(libc::ENOSYS), clone3),
        ]);
    }

    /// Runs `program` on one syscall as the kernel would (for the subset of
    /// classic BPF that seccompiler and the prelude emit).
    fn eval(program: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[..4].copy_from_slice(&(nr as u32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..][..8].copy_from_slice(&arg.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = &program[pc];
            pc += 1;
            let taken = match ins.code {
                LD_ABS => {
                    acc = u32::from_ne_bytes(data[ins.k as usize..][..4].try_into().unwrap());
                    continue;
                }
                AND => {
                    acc &= ins.k;
                    continue;
                }
                JA => {
                    pc += ins.k as usize;
                    continue;
                }
                RET => return ins.k,
                JEQ => acc == ins.k,
                JSET => acc & ins.k != 0,
                JGT => acc > ins.k,
                JGE => acc >= ins.k,
                code => panic!("unexpected opcode {code:#x} at {}", pc - 1),
            };
            pc += usize::from(if taken { ins.jt } else { ins.jf });
        }
    }

    #[test]
    fn program_layout_arch_check_x32_guard_then_a_shallow_tree() {
        let program = compile(&Seccomp::default()).unwrap().program;
        let head = [
            stmt(LD_ABS, ARCH_OFFSET),
            jump(JEQ, AUDIT_ARCH, 1, 0),
            stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
            stmt(LD_ABS, NR_OFFSET),
            jump(JGE, X32_SYSCALL_BIT, 0, 1),
            ret_errno(libc::ENOSYS),
        ];
        assert_eq!(program[..PROLOGUE_LEN + 3], head);
        // Every jump lands inside the program, which ends in a return.
        for (i, ins) in program
            .iter()
            .enumerate()
            .filter(|(_, ins)| ins.code & 0x07 == JMP)
        {
            let furthest = if ins.code == JA {
                ins.k as usize
            } else {
                ins.jt.max(ins.jf).into()
            };
            assert!(
                i + 1 + furthest < program.len(),
                "instruction {i} jumps out"
            );
        }
        assert_eq!(program.last().map(|ins| ins.code), Some(RET));
        // Compact: a few instructions per rule, not a linear chain.
        let rules = compile(&Seccomp::default()).unwrap().rules;
        assert!(
            program.len() < rules * 5,
            "{} instructions for {rules} rules",
            program.len()
        );
        // Shallow: deciding on a syscall without argument rules (getpid,
        // allowed; mount, denied) executes few instructions.
        for nr in [libc::SYS_getpid, libc::SYS_mount, libc::SYS_read] {
            let steps = steps(&program, nr);
            assert!(steps <= 24, "syscall {nr} takes {steps} instructions");
        }
    }

    /// Instructions executed to decide on `nr` with zero arguments.
    fn steps(program: &[sock_filter], nr: i64) -> usize {
        let mut pc = 0;
        let mut a: u32 = 0;
        let mut n = 0;
        loop {
            let ins = &program[pc];
            n += 1;
            pc += 1;
            match ins.code {
                RET => return n,
                LD_ABS if ins.k == ARCH_OFFSET => a = AUDIT_ARCH,
                LD_ABS if ins.k == NR_OFFSET => a = nr as u32,
                LD_ABS => a = 0,
                JA => pc += ins.k as usize,
                JEQ => pc += usize::from(if a == ins.k { ins.jt } else { ins.jf }),
                JGE => pc += usize::from(if a >= ins.k { ins.jt } else { ins.jf }),
                JSET => pc += usize::from(if a & ins.k != 0 { ins.jt } else { ins.jf }),
                _ => a &= ins.k,
            }
        }
    }

    #[test]
    fn program_decides_like_the_policy() {
        let program = compile(&Seccomp::default()).unwrap().program;
        let nr = |name: &str| syscall_number(name).expect(name);
        let run = |name: &str, args: [u64; 6]| eval(&program, AUDIT_ARCH, nr(name), args);
        let at = |arg: usize, value: u64| std::array::from_fn(|i| if i == arg { value } else { 0 });
        let errno = |e: i32| u32::from(SeccompAction::Errno(e as u32));
        let (eperm, enosys) = (errno(libc::EPERM), errno(libc::ENOSYS));
        // A foreign architecture (i386 on x86_64) is killed.
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        assert_eq!(eval(&program, 0x4000_0003, 20, [0; 6]), kill);
        let x32_getpid = i64::from(X32_SYSCALL_BIT) | libc::SYS_getpid;
        assert_eq!(eval(&program, AUDIT_ARCH, x32_getpid, [0; 6]), enosys);
        assert_eq!(eval(&program, AUDIT_ARCH, u32::MAX.into(), [0; 6]), enosys);
        for flag in NS_FLAGS {
            let flags = u64::from(flag as u32 | libc::CLONE_FILES as u32) | 1 << 40;
            assert_eq!(run("unshare", at(0, flags)), eperm, "{flag:#x}");
            assert_eq!(run("clone", at(0, flags)), eperm, "{flag:#x}");
        }
        #[rustfmt::skip]
        let thread = libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD | libc::CLONE_SYSVSEM | libc::CLONE_SETTLS;
        assert_eq!(run("clone", at(0, thread as u64)), ALLOW);
        assert_eq!(run("clone", at(0, libc::SIGCHLD as u64)), ALLOW);
        let sti = u64::from(libc::TIOCSTI as u32);
        assert_eq!(run("ioctl", at(1, sti | 0xdead << 32)), eperm);
        assert_eq!(run("ioctl", at(1, u64::from(libc::FIONREAD as u32))), ALLOW);
        assert_eq!(run("ioctl", at(0, sti)), ALLOW);
        let modes = [
            (0o4755, eperm),
            (0o2700, eperm),
            (0o6000, eperm),
            (0o1777, ALLOW),
        ];
        let chmods = [
            ("fchmod", 1),
            ("fchmodat", 2),
            ("fchmodat2", 2),
            ("chmod", 1),
        ];
        // chmod and mknod do not exist on aarch64.
        for (name, arg) in chmods
            .into_iter()
            .filter(|(n, _)| syscall_number(n).is_some())
        {
            for (mode, want) in modes {
                assert_eq!(run(name, at(arg, mode)), want, "{name} {mode:o}");
            }
        }
        let (chr, blk) = (libc::S_IFCHR, libc::S_IFBLK);
        let kinds = [
            (chr, eperm),
            (blk, eperm),
            (libc::S_IFIFO, ALLOW),
            (libc::S_IFSOCK, ALLOW),
        ];
        let mknods = [("mknodat", 2), ("mknod", 1)];
        for (name, arg) in mknods
            .into_iter()
            .filter(|(n, _)| syscall_number(n).is_some())
        {
            for (kind, want) in kinds {
                assert_eq!(
                    run(name, at(arg, (kind | 0o644).into())),
                    want,
                    "{name} {kind:o}"
                );
            }
        }
        for deny in deny_list(&Seccomp::default()).unwrap() {
            if let Action::Errno(e) = deny.action {
                assert_eq!(run(deny.name, [0; 6]), errno(e), "{}", deny.name);
            }
        }
        for name in "read write openat execve mmap exit_group fchmodat ioctl".split(' ') {
            assert_eq!(run(name, [0; 6]), ALLOW, "{name}");
        }
    }

    #[test]
    fn policy_switches_and_names() {
        let default = denied_syscalls(&Seccomp::default());
        let gone = [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "pidfd_getfd",
            "process_madvise",
            "kcmp",
            "perf_event_open",
        ];
        for name in gone.iter().chain(&["mount", "clone3", "setxattr", "ioctl"]) {
            assert!(default.contains(name), "{name}");
        }
        assert!(default.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        assert_eq!(compile(&Seccomp::default()).unwrap().rules, default.len());
        let extra = || vec!["getppid".into(), "mount".into()];
        let policy = |allow: bool, extra_deny: Vec<String>| Seccomp {
            allow_ptrace: allow,
            allow_perf: allow,
            extra_deny,
            ..Seccomp::default()
        };
        let names = denied_syscalls(&policy(true, extra()));
        assert!(gone.iter().all(|n| !names.contains(n)) && names.contains(&"getppid"));
        assert_eq!(names.len(), default.len() - gone.len() + 1);
        let open = compile(&policy(true, extra())).unwrap();
        assert_eq!(open.rules, names.len());
        let bad = policy(false, vec!["no_such_call".into()]);
        let error = compile(&bad).unwrap_err();
        assert!(
            matches!(error, SeccompError::UnknownSyscall { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("\"no_such_call\""), "{error}");
        assert_eq!(denied_syscalls(&bad), default);
        let off = Seccomp {
            enabled: false,
            ..Seccomp::default()
        };
        assert!(matches!(compile(&off), Err(SeccompError::Disabled)));
        assert!(denied_syscalls(&off).is_empty());
    }

    #[test]
    fn apply_reports_errors() {
        let empty = CompiledFilter {
            program: Vec::new(),
            rules: 0,
        };
        // Rejected before any syscall, so safe to try in the test process.
        let error = apply(&empty).unwrap_err();
        assert!(
            error.to_string().starts_with("failed to install"),
            "{error}"
        );
        assert_eq!(error.raw_os_error(), None);
        // A jump out of the program: the kernel refuses it (in a child).
        let broken = CompiledFilter {
            program: vec![jump(JEQ, 0, 5, 5)],
            rules: 0,
        };
        assert_eq!(in_child(&broken, &|| 0), 255, "a broken filter is refused");
        // SAFETY: the child only tries to install the filter and calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = apply(&broken)
                .err()
                .and_then(|e| e.raw_os_error())
                .unwrap_or(0);
            // SAFETY: ends the child.
            unsafe { libc::_exit(code) }
        }
        assert_eq!(wait_exit(pid), Some(libc::EINVAL));
    }

    #[test]
    fn syscall_numbers() {
        assert_eq!(syscall_number("read"), Some(libc::SYS_read));
        assert_eq!(syscall_number("getpid"), Some(libc::SYS_getpid));
        // Since 5.1 numbers are shared: libc agrees where it has them.
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("mseal"), Some(462));
        assert_eq!(syscall_number("setxattrat"), Some(463));
        for bad in ["", "SYS_read", "no_such_call", "Read"] {
            assert_eq!(syscall_number(bad), None, "{bad}");
        }
        let mut all: Vec<_> = COMMON.iter().chain(ARCH_ONLY).chain(UNIFIED).collect();
        let len = all.len();
        all.sort_unstable_by_key(|(name, _)| *name);
        all.dedup_by_key(|(name, _)| *name);
        assert_eq!(all.len(), len, "a name is listed twice");
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(syscall_number("fchmodat2"), Some(libc::SYS_fchmodat2));
            assert_eq!(syscall_number("chmod"), Some(libc::SYS_chmod));
            // Every built-in name exists here: a typo would be skipped.
            let conditional = [
                "unshare", "clone", "ioctl", "chmod", "fchmod", "fchmodat", "mknod",
            ];
            let builtin = EPERM_ALWAYS
                .split_whitespace()
                .chain(PTRACE.iter().copied());
            for name in builtin.chain(SET_XATTR.iter().copied()).chain(conditional) {
                assert!(syscall_number(name).is_some(), "{name}");
            }
        }
    }
}
