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
mod tests;
