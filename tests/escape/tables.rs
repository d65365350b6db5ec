//! The attack tables: every attempt the probe makes, and exactly what it
//! must give. One table per attack group, shared by root and rootless runs;
//! a row states a rootless difference explicitly where there is one.

use libc::{
    EACCES, EBADF, ECONNREFUSED, EINVAL, ENETUNREACH, ENOENT, ENOSYS, EOPNOTSUPP, EOVERFLOW, EPERM,
    EROFS, ETXTBSY,
};

use crate::expect::Want::{Absent, Allowed, Denied, Killed};
use crate::expect::{Row, differs, row};

const SECCOMP: &str = "seccomp";
const NO_CAPS: &str = "no capabilities (and seccomp)";
const INIT: &str = "pid 1 is the sandbox's init, not accessible to the step";

/// Item 1, 2: Network. TCP is stopped by Landlock before any routing; UDP and
/// unix sockets are not Landlock's and meet the empty network namespace.
pub const NET: &[Row] = &[
    row("tcp_host", Denied(EACCES), "landlock: TCP connect denied"),
    // The anomaly watch records it and fails it first (ENETUNREACH, as
    // the namespace would); Landlock would deny it too.
    row(
        "tcp_outside",
        Denied(ENETUNREACH),
        "anomaly watch: recorded, failed before landlock",
    ),
    row("tcp_bind_lo", Denied(EACCES), "landlock: TCP bind denied"),
    // Reaches only the sandbox's own lo; the host socket must get nothing.
    row("udp_host", Allowed, "own lo up; host socket unreached"),
    row(
        "udp_outside",
        Denied(ENETUNREACH),
        "network namespace with only lo",
    ),
    row(
        "abstract_stream",
        Denied(ECONNREFUSED),
        "abstract sockets are per network namespace",
    ),
    row(
        "abstract_dgram",
        Denied(ECONNREFUSED),
        "abstract sockets are per network namespace",
    ),
];

/// Item 3: Namespaces.
pub const NAMESPACES: &[Row] = &[
    row("unshare_user", Denied(EPERM), SECCOMP),
    row("unshare_mnt", Denied(EPERM), NO_CAPS),
    row("unshare_net", Denied(EPERM), NO_CAPS),
    row("unshare_pid", Denied(EPERM), NO_CAPS),
    row("unshare_uts", Denied(EPERM), NO_CAPS),
    row("unshare_ipc", Denied(EPERM), NO_CAPS),
    row("unshare_cgroup", Denied(EPERM), NO_CAPS),
    row("unshare_time", Denied(EPERM), NO_CAPS),
    row("setns_user", Denied(EPERM), SECCOMP),
    row("setns_mnt", Denied(EPERM), SECCOMP),
    row("setns_net", Denied(EPERM), SECCOMP),
    row("setns_pid", Denied(EPERM), SECCOMP),
    row("setns_uts", Denied(EPERM), SECCOMP),
    row("setns_ipc", Denied(EPERM), SECCOMP),
    row("setns_cgroup", Denied(EPERM), SECCOMP),
    // pid 1 is the sandbox's init, which the step may not inspect: opening
    // its namespace files fails before setns is reached.
    row("setns_pid1_mnt", Denied(EACCES), INIT),
    row("setns_pid1_user", Denied(EACCES), INIT),
    // clone3's flags live in memory seccomp cannot read: ENOSYS makes libc
    // fall back to clone, whose flags it can.
    row(
        "clone3_newuser",
        Denied(ENOSYS),
        "seccomp: clone3 -> ENOSYS",
    ),
    row("clone3_newns", Denied(ENOSYS), "seccomp: clone3 -> ENOSYS"),
    row("clone3_plain", Denied(ENOSYS), "seccomp: clone3 -> ENOSYS"),
    row(
        "clone_newuser",
        Denied(EPERM),
        "seccomp: clone with CLONE_NEWUSER",
    ),
    row("clone_newns", Denied(EPERM), NO_CAPS),
    // The other syscall ABIs: x32 numbers are refused, and i386 (int 0x80,
    // where 310 is unshare) does not match the filter's architecture.
    row(
        "x32_unshare_user",
        Denied(ENOSYS),
        "seccomp: x32 ABI refused",
    ),
    row(
        "i386_unshare_user",
        Killed(libc::SIGSYS),
        "seccomp: foreign architecture kills",
    ),
];

/// Item 4: The mount family. `open_tree` without OPEN_TREE_CLONE and `fsconfig`
/// on a bad fd need no privilege: only seccomp gives EPERM there.
pub const MOUNT: &[Row] = &[
    row("mount_tmpfs", Denied(EPERM), SECCOMP),
    row("mount_bind", Denied(EPERM), SECCOMP),
    row("mount_remount_rw", Denied(EPERM), SECCOMP),
    row("mount_sysfs", Denied(EPERM), SECCOMP),
    row("umount_proc", Denied(EPERM), SECCOMP),
    row("umount_work", Denied(EPERM), SECCOMP),
    row("pivot_root", Denied(EPERM), SECCOMP),
    row("open_tree_plain", Denied(EPERM), SECCOMP),
    row("open_tree_clone", Denied(EPERM), SECCOMP),
    row("move_mount", Denied(EPERM), SECCOMP),
    row("fsopen", Denied(EPERM), SECCOMP),
    row("fsmount", Denied(EPERM), SECCOMP),
    row("fsconfig", Denied(EPERM), SECCOMP),
    row("fspick", Denied(EPERM), NO_CAPS),
    row("mount_setattr", Denied(EPERM), NO_CAPS),
    row("chroot", Denied(EPERM), NO_CAPS),
];

/// Item 5: ptrace and process_vm_* under `strict`.
pub const PTRACE_STRICT: &[Row] = &[
    row("ptrace_attach_pid1", Denied(EPERM), SECCOMP),
    row("ptrace_attach_sibling", Denied(EPERM), SECCOMP),
    row("ptrace_seize_sibling", Denied(EPERM), SECCOMP),
    row("ptrace_traceme", Denied(EPERM), SECCOMP),
    row("process_vm_readv_pid1", Denied(EPERM), SECCOMP),
    row("process_vm_readv_sibling", Denied(EPERM), SECCOMP),
    row("process_vm_writev_sibling", Denied(EPERM), SECCOMP),
    // /proc/PID/mem is a file, not a syscall seccomp can filter: the
    // kernel's ptrace access check against init (not the step's) decides.
    row("proc_mem_pid1", Denied(EACCES), INIT),
];

/// Item 5: The same under `debug`, which allows ptrace of the step's own tree.
pub const PTRACE_DEBUG: &[Row] = &[
    row("ptrace_attach_pid1", Denied(EPERM), INIT),
    row("ptrace_attach_sibling", Allowed, "debug: allow_ptrace"),
    row("ptrace_seize_sibling", Allowed, "debug: allow_ptrace"),
    row("ptrace_traceme", Allowed, "debug: allow_ptrace"),
    row("process_vm_readv_pid1", Denied(EPERM), INIT),
    row("process_vm_readv_sibling", Allowed, "debug: allow_ptrace"),
    row("process_vm_writev_sibling", Allowed, "debug: allow_ptrace"),
    row("proc_mem_pid1", Denied(EACCES), INIT),
];

/// Item 6: Keyrings.
pub const KEYS: &[Row] = &[
    row("keyctl_get_session", Denied(EPERM), SECCOMP),
    row("keyctl_join_session", Denied(EPERM), SECCOMP),
    row("add_key", Denied(EPERM), SECCOMP),
    row("request_key", Denied(EPERM), SECCOMP),
];

/// Item 7: Kernel attack surface.
pub const KERNEL_IFACE: &[Row] = &[
    row("io_uring_setup", Denied(EPERM), SECCOMP),
    row("io_uring_enter", Denied(EPERM), SECCOMP),
    row("io_uring_register", Denied(EPERM), SECCOMP),
    row("userfaultfd", Denied(EPERM), SECCOMP),
    row("dev_userfaultfd", Denied(ENOENT), "minimal /dev"),
    row("bpf", Denied(EPERM), SECCOMP),
    row("perf_event_open", Denied(EPERM), SECCOMP),
];

/// Item 8: Terminal injection; stdin is a host pty. Without seccomp these give
/// ENOTTY/EINVAL/EIO, so EPERM proves the filter (low 32 bits matched).
pub const TTY: &[Row] = &[
    row("tiocsti_stdin", Denied(EPERM), SECCOMP),
    row(
        "tiocsti_high_stdin",
        Denied(EPERM),
        "seccomp on the low 32 bits",
    ),
    row("tioclinux_stdin", Denied(EPERM), SECCOMP),
    row(
        "tioclinux_high_stdin",
        Denied(EPERM),
        "seccomp on the low 32 bits",
    ),
    row("open_dev_tty", Denied(ENOENT), "minimal /dev has no tty"),
    row("open_ptmx", Allowed, "private devpts"),
    row("unlockpt", Allowed, "private devpts"),
    row("open_pts", Allowed, "private devpts"),
    row("tiocsti_pts", Denied(EPERM), SECCOMP),
    row(
        "tiocsti_high_pts",
        Denied(EPERM),
        "seccomp on the low 32 bits",
    ),
    row("tioclinux_pts", Denied(EPERM), SECCOMP),
    row(
        "tioclinux_high_pts",
        Denied(EPERM),
        "seccomp on the low 32 bits",
    ),
    row("tiocsti_ptmx", Denied(EPERM), SECCOMP),
    row(
        "tiocsti_high_ptmx",
        Denied(EPERM),
        "seccomp on the low 32 bits",
    ),
    row("tioclinux_ptmx", Denied(EPERM), SECCOMP),
    row(
        "tioclinux_high_ptmx",
        Denied(EPERM),
        "seccomp on the low 32 bits",
    ),
];

/// Item 9: /proc, /sys, cgroupfs. The sysctl files belong to host root (or the
/// sandbox's root for per-namespace ones); uid 1000 fails the permission
/// check before the read-only mount is consulted.
pub const PROC: &[Row] = &[
    row(
        "write_proc_sys_hostname",
        Denied(EACCES),
        "not owner; /proc/sys read-only",
    ),
    row(
        "write_proc_sys_core_pattern",
        Denied(EACCES),
        "not owner; /proc/sys read-only",
    ),
    row(
        "write_proc_sys_ip_forward",
        Denied(EACCES),
        "not owner; /proc/sys read-only",
    ),
    row(
        "write_proc_sys_ping_group_range",
        Denied(EACCES),
        "not owner; /proc/sys read-only",
    ),
    row("open_sys", Denied(ENOENT), "no /sys"),
    row("open_sys_fs_cgroup", Denied(ENOENT), "no /sys"),
];

/// Item 10: Devices: the fifo is a control.
pub const MKNOD: &[Row] = &[
    row("mknod_char_tmp", Denied(EPERM), "seccomp / no CAP_MKNOD"),
    row("mknod_block_tmp", Denied(EPERM), "seccomp / no CAP_MKNOD"),
    row("mknod_char_work", Denied(EPERM), "seccomp / no CAP_MKNOD"),
    row("mknod_fifo_tmp", Allowed, "fifos are ordinary"),
];

/// Item 11: Set-id bits.
pub const SETID: &[Row] = &[
    row("chmod_suid", Denied(EPERM), "seccomp: chmod with S_ISUID"),
    row("chmod_sgid", Denied(EPERM), "seccomp: chmod with S_ISGID"),
    row("fchmod_suid", Denied(EPERM), "seccomp: fchmod with S_ISUID"),
    row(
        "fchmodat_suid",
        Denied(EPERM),
        "seccomp: fchmodat with S_ISUID",
    ),
    row(
        "fchmodat2_suid",
        Denied(EPERM),
        "seccomp: fchmodat2 with S_ISUID",
    ),
    row("chmod_plain", Allowed, "plain modes stay allowed"),
    row(
        "mknod_reg_suid",
        Denied(EPERM),
        "seccomp: creating a file with a set-id mode is chmod by another name",
    ),
    row(
        "open_creat_suid",
        Denied(EPERM),
        "seccomp: creating a file with a set-id mode is chmod by another name",
    ),
    row(
        "open_creat_suid_work",
        Denied(EPERM),
        "seccomp: creating a file with a set-id mode is chmod by another name",
    ),
];

/// Item 12: Security xattrs: the whole setxattr family gives ENOTSUP.
pub const XATTR: &[Row] = &[
    row("setxattr_security_capability", Denied(EOPNOTSUPP), SECCOMP),
    row("lsetxattr_security_capability", Denied(EOPNOTSUPP), SECCOMP),
    row("fsetxattr_security_capability", Denied(EOPNOTSUPP), SECCOMP),
    row(
        "setxattrat_security_capability",
        Denied(EOPNOTSUPP),
        SECCOMP,
    ),
    row("setxattr_security_selinux", Denied(EOPNOTSUPP), SECCOMP),
    row("setxattr_user", Denied(EOPNOTSUPP), SECCOMP),
];

/// Item 13: Privileged knobs.
pub const PRIVILEGED: &[Row] = &[
    row("setrlimit_nofile_raise_hard", Denied(EPERM), NO_CAPS),
    row("setrlimit_core_raise_hard", Denied(EPERM), NO_CAPS),
    row("sethostname", Denied(EPERM), NO_CAPS),
    row("setdomainname", Denied(EPERM), NO_CAPS),
    row("clock_settime", Denied(EPERM), SECCOMP),
    row("settimeofday", Denied(EPERM), SECCOMP),
    row("adjtimex_set", Denied(EPERM), SECCOMP),
    row("init_module", Denied(EPERM), SECCOMP),
    row("finit_module", Denied(EPERM), SECCOMP),
    row("delete_module", Denied(EPERM), SECCOMP),
    row("kexec_load", Denied(EPERM), SECCOMP),
    row("kexec_file_load", Denied(EPERM), SECCOMP),
    row("reboot", Denied(EPERM), SECCOMP),
    row("swapon", Denied(EPERM), SECCOMP),
    row("swapoff", Denied(EPERM), SECCOMP),
    row("acct", Denied(EPERM), SECCOMP),
    // Only the step's own ids are mapped: 0 does not exist in the sandbox.
    row(
        "setuid_0",
        Denied(EINVAL),
        "uid 0 is not mapped in the sandbox",
    ),
    row(
        "setgid_0",
        Denied(EINVAL),
        "gid 0 is not mapped in the sandbox",
    ),
    row("setgroups_0", Denied(EPERM), NO_CAPS),
    row("iopl", Denied(EPERM), NO_CAPS),
    row("ioperm", Denied(EPERM), NO_CAPS),
    row("vhangup", Denied(EPERM), NO_CAPS),
    row(
        "kill_pid1",
        Denied(EPERM),
        "landlock signal scoping; init is not the step's user",
    ),
];

/// Item 19: Writing to inputs. As root the store belongs to host root, unmapped
/// in the sandbox: permission checks stop writes to 0644 files, and the
/// world-writable ones (a careless store) fail at overlayfs copy-up, which
/// cannot give the upper copy an unmapped owner. Rootless, the tree belongs
/// to the invoking user, who is the step's own uid: every write succeeds,
/// into the scratch upper layer. Either way the test then checks the
/// store's copy unchanged.
const OWN_FILE: &str = "rootless: the developer's own file, copied up";
const COPY_UP: &str = "copy-up of a file owned by an unmapped user";
const UNMAPPED: &str = "input owned by an unmapped user";
pub const WRITE_INPUT: &[Row] = &[
    differs(
        "open_input_trunc",
        Denied(EOVERFLOW),
        Allowed,
        COPY_UP,
        OWN_FILE,
    ),
    differs("write_input", Absent, Allowed, COPY_UP, OWN_FILE),
    differs(
        "open_readonly_input",
        Denied(EACCES),
        Allowed,
        UNMAPPED,
        OWN_FILE,
    ),
    differs("chmod_input", Denied(EPERM), Allowed, UNMAPPED, OWN_FILE),
    differs(
        "truncate_nested_input",
        Denied(EOVERFLOW),
        Allowed,
        COPY_UP,
        OWN_FILE,
    ),
    row(
        "unlink_input",
        Allowed,
        "overlay whiteout in the upper layer",
    ),
    differs(
        "rename_nested_input",
        Denied(EOVERFLOW),
        Allowed,
        COPY_UP,
        OWN_FILE,
    ),
    differs(
        "open_probe_write",
        Denied(EACCES),
        Denied(ETXTBSY),
        UNMAPPED,
        "the probe is running",
    ),
];

/// Item 18, 19: Hardlinks to inputs (see [`WRITE_INPUT`]). As root a 0644 input
/// of another user cannot be linked at all (protected_hardlinks) and a
/// world-writable one fails at copy-up.
pub const HARDLINK: &[Row] = &[
    differs(
        "link_protected_input",
        Denied(EPERM),
        Allowed,
        "protected_hardlinks",
        OWN_FILE,
    ),
    differs("link_input", Denied(EOVERFLOW), Allowed, COPY_UP, OWN_FILE),
    differs(
        "write_through_link",
        Denied(ENOENT),
        Allowed,
        "no link was made",
        OWN_FILE,
    ),
];

/// Item 21: /proc/self/exe and /proc/1/root. pid 1 is the sandbox's init, which
/// the step may not inspect (EACCES through /proc/1). The image is a
/// read-only mount (EROFS on create) of files owned by an unmapped host user
/// (EACCES on open for writing, checked first).
pub const PROC_LINKS: &[Row] = &[
    differs(
        "open_self_exe_write",
        Denied(EACCES),
        Denied(ETXTBSY),
        UNMAPPED,
        "the probe is running",
    ),
    row("open_pid1_exe_write", Denied(EACCES), INIT),
    row("open_pid1_exe_read", Denied(EACCES), INIT),
    row("create_proc1_root", Denied(EACCES), INIT),
    row("create_proc1_root_etc", Denied(EACCES), INIT),
    row("create_proc1_root_bin", Denied(EACCES), INIT),
    row("create_self_root", Denied(EROFS), "read-only image"),
    row("create_root", Denied(EROFS), "read-only image"),
    row("create_etc", Denied(EROFS), "read-only image"),
    row("create_bin", Denied(EROFS), "read-only image"),
    row("create_dev", Denied(EROFS), "/dev is a read-only tmpfs"),
    row("create_proc1_cwd", Denied(EACCES), INIT),
    row("open_proc1_root_passwd_write", Denied(EACCES), INIT),
    // The helper's generated /etc/passwd belongs to the step's user: only
    // the read-only mount stops the write.
    row("open_passwd_write", Denied(EROFS), "read-only mount"),
    row(
        "open_busybox_write",
        Denied(EACCES),
        "image files are not the step's",
    ),
];

/// Item 20: Inherited fds: fd 7 was leaked into the helper on purpose.
pub const FDS: &[Row] = &[row("fcntl_fd7", Denied(EBADF), "every inherited fd closed")];
