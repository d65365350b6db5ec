//! A small classic-BPF seccomp filter standing in for the filters systemd
//! would install for the unit (SystemCallFilter=, SystemCallArchitectures=,
//! RestrictAddressFamilies=, RestrictSUIDSGID=, RestrictRealtime=, and for
//! the negative checks LockPersonality=, ProtectHostname= and
//! RestrictNamespaces=). A linear chain of self-contained blocks, each
//! starting by loading the syscall number: slow to run, easy to read.

/// `AUDIT_ARCH_X86_64` / `AUDIT_ARCH_AARCH64`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
/// `__X32_SYSCALL_BIT`: x32 is not "native" either.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const LD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// One rule: what happens to syscall `nr`.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Always fails with `errno`.
    Deny { nr: i64, errno: i32 },
    /// Fails with `errno` when argument `arg` has any of `bits` set.
    DenyBits {
        nr: i64,
        arg: u8,
        bits: u32,
        errno: i32,
    },
    /// Fails with `errno` when argument `arg` is one of `values`.
    DenyValues {
        nr: i64,
        arg: u8,
        values: Vec<u32>,
        errno: i32,
    },
    /// Fails with `errno` unless argument `arg` is one of `values`.
    AllowValues {
        nr: i64,
        arg: u8,
        values: Vec<u32>,
        errno: i32,
    },
}

fn op(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> libc::sock_filter {
    op(
        RET,
        libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA),
        0,
        0,
    )
}

fn arg_offset(arg: u8) -> u32 {
    // struct seccomp_data: nr (4), arch (4), ip (8), args[6] (8 each); the
    // low half first on both (little-endian) architectures.
    16 + 8 * u32::from(arg)
}

fn len(n: usize) -> u8 {
    u8::try_from(n).expect("a block short enough for an 8-bit jump")
}

/// The program: foreign architectures and x32 are killed (what
/// SystemCallArchitectures=native does), then each rule, then allow.
pub fn program(rules: &[Rule]) -> Vec<libc::sock_filter> {
    let mut p = vec![
        op(LD, 4, 0, 0),
        op(JEQ, AUDIT_ARCH, 1, 0),
        op(RET, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
        op(LD, 0, 0, 0),
        op(JGE, X32_SYSCALL_BIT, 0, 1),
        op(RET, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
    ];
    for rule in rules {
        p.push(op(LD, 0, 0, 0));
        match rule {
            Rule::Deny { nr, errno: e } => {
                p.push(op(JEQ, *nr as u32, 0, 1));
                p.push(errno(*e));
            }
            Rule::DenyBits {
                nr,
                arg,
                bits,
                errno: e,
            } => {
                p.push(op(JEQ, *nr as u32, 0, 3));
                p.push(op(LD, arg_offset(*arg), 0, 0));
                p.push(op(JSET, *bits, 0, 1));
                p.push(errno(*e));
            }
            Rule::DenyValues {
                nr,
                arg,
                values,
                errno: e,
            } => {
                let n = values.len();
                p.push(op(JEQ, *nr as u32, 0, len(n + 2)));
                p.push(op(LD, arg_offset(*arg), 0, 0));
                for (i, v) in values.iter().enumerate() {
                    // A match jumps to the return; the last miss skips it.
                    let jf = if i + 1 == n { 1 } else { 0 };
                    p.push(op(JEQ, *v, len(n - 1 - i), jf));
                }
                p.push(errno(*e));
            }
            Rule::AllowValues {
                nr,
                arg,
                values,
                errno: e,
            } => {
                let n = values.len();
                p.push(op(JEQ, *nr as u32, 0, len(n + 2)));
                p.push(op(LD, arg_offset(*arg), 0, 0));
                for (i, v) in values.iter().enumerate() {
                    // A match skips the return.
                    p.push(op(JEQ, *v, len(n - i), 0));
                }
                p.push(errno(*e));
            }
        }
    }
    p.push(op(RET, libc::SECCOMP_RET_ALLOW, 0, 0));
    p
}

/// Sets no_new_privs (when asked) and installs `prog` in the calling
/// process. Only system calls: safe between fork and exec.
pub fn install(prog: &[libc::sock_filter], no_new_privs: bool) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments only.
    if no_new_privs && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fprog points to `prog`, which outlives the call; the kernel
    // copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const fprog,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The syscall number of `name` here, `None` when this architecture has
/// no such call (systemd's groups name calls of every architecture).
pub fn nr(name: &str) -> Option<i64> {
    hermetic_sandbox::seccomp::syscall_number(name).or(match name {
        // x86_64 calls the sandbox's table leaves out (all ENOSYS today).
        #[cfg(target_arch = "x86_64")]
        "create_module" => Some(174),
        #[cfg(target_arch = "x86_64")]
        "get_kernel_syms" => Some(177),
        #[cfg(target_arch = "x86_64")]
        "query_module" => Some(178),
        _ => None,
    })
}

#[test]
fn jumps_land_on_the_next_block_or_the_return() {
    let p = program(&[
        Rule::Deny { nr: 1, errno: 1 },
        Rule::AllowValues {
            nr: 2,
            arg: 0,
            values: vec![5, 6],
            errno: 97,
        },
        Rule::DenyValues {
            nr: 3,
            arg: 1,
            values: vec![7, 8],
            errno: 1,
        },
    ]);
    // prologue 6; deny 3; allow-values 1+1+1+2+1 = 6; deny-values 6; ret.
    assert_eq!(p.len(), 6 + 3 + 6 + 6 + 1);
    // AllowValues: a match skips the remaining jeq and the return.
    assert_eq!((p[12].k, p[12].jt), (5, 2));
    assert_eq!((p[13].k, p[13].jt), (6, 1));
    assert_eq!(p[14].code, RET);
    // DenyValues: a match lands on the return, the last miss skips it.
    assert_eq!((p[18].k, p[18].jt, p[18].jf), (7, 1, 0));
    assert_eq!((p[19].k, p[19].jt, p[19].jf), (8, 0, 1));
    assert_eq!(p[20].code, RET);
    assert_eq!(p[21].k, libc::SECCOMP_RET_ALLOW);
}
