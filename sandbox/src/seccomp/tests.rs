//! Tests of the seccomp policy: forked children run each syscall under the
//! filter, and a BPF interpreter walks the program.

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
            (got != expected).then(|| format!("{name}: want {want:?} {expected:?}, got {got:?}"))
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
    let vm_read = || err(unsafe { libc::syscall(libc::SYS_process_vm_readv, 1, 0, 0, 0, 0, 0) });
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
