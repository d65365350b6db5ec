//! The network and exec watches: a seccomp user-notification filter inside,
//! a [`Watcher`] in the helper.
//!
//! ```text
//! init: install filter (SECCOMP_FILTER_FLAG_NEW_LISTENER) ─ listener fd N
//!       "ready {..., notify_fd: N}" ─▶ helper: pidfd_getfd(init, N)
//! step (inherits the filter; closes N first, and N is close-on-exec)
//!       connect/sendto/sendmsg/sendmmsg/execve/execveat ─▶ blocks
//! helper poll loop: NOTIF_RECV ─ read the caller's memory ─ NOTIF_ID_VALID
//!       ─ record ─ NOTIF_SEND (continue, or ENETUNREACH)
//! ```
//!
//! **Why init installs it.** The listener has to reach the helper; a
//! process under the filter cannot pass it with `sendmsg` (trapped, and
//! nobody would answer yet). Init installs the filter after its own set-up
//! (it makes none of the trapped calls itself), keeps the listener, and
//! names its number; the helper takes a copy with `pidfd_getfd` (init is its
//! child). The step is forked afterwards, so every process of the step
//! inherits the filter; the step closes its inherited copy of the listener
//! before anything else (and the kernel made it close-on-exec), so no code
//! of the step can ever reach it.
//!
//! **What the filter matches.** Only `connect`, `sendto` with a
//! destination, `sendmsg`, `sendmmsg` (network watch) and `execve`,
//! `execveat` (exec watch); every other syscall is allowed at the second
//! instruction-compare, so a step that makes none of these pays nothing.
//! The main deny-list filter still runs: an errno or kill there takes
//! precedence over the notification (seccomp picks the strictest action).
//!
//! **Answers.** A loopback or unspecified destination, another address
//! family, an unreadable address: `SECCOMP_USER_NOTIF_FLAG_CONTINUE`. That
//! flag lets the kernel run the call with whatever the caller's memory holds
//! *then* (another thread may have rewritten the address since we read it),
//! which is safe here because the network namespace holds only `lo`: the
//! namespace, not this check, is what keeps the step off the network. An
//! IPv4/IPv6 address off the host: recorded and failed with ENETUNREACH, the
//! errno the namespace itself would give (a step sees the same failure as
//! without the watch). Executions always continue; they are an indicator.
//!
//! **TOCTOU.** The notification names a pid; after reading its memory (and
//! `/proc/<pid>` links), before recording anything, the helper checks
//! `SECCOMP_IOCTL_NOTIF_ID_VALID`:
//! if the caller died and the pid was reused, the read is discarded. A
//! step that rewrites the path or address between our read and the
//! kernel's can mislead the record, not the containment.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{OFlag, ResolveFlag};

use super::{
    Anomalies, Destination, ForeignExec, NetworkAttempt, now_us, parse_sockaddr, push_capped,
};

/// What the filter traps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchPlan {
    /// connect, sendto (with a destination), sendmsg, sendmmsg.
    pub network: bool,
    /// execve, execveat.
    pub exec: bool,
}

/// `AUDIT_ARCH_*` of this architecture (as in the main filter).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG4_LO: u32 = 16 + 8 * 4;
const ARG4_HI: u32 = ARG4_LO + 4;

#[derive(Clone, Copy)]
enum To {
    Next,
    Allow,
    Notify,
}

/// The filter for `plan`: `[arch][nr == each trapped → notify][sendto with
/// dest_addr != NULL → notify][allow][notify]`. Empty when nothing is
/// watched.
pub fn filter(plan: WatchPlan) -> Vec<libc::sock_filter> {
    let mut always = Vec::new();
    if plan.network {
        always.extend([libc::SYS_connect, libc::SYS_sendmsg, libc::SYS_sendmmsg]);
    }
    if plan.exec {
        always.extend([libc::SYS_execve, libc::SYS_execveat]);
    }
    if always.is_empty() {
        return Vec::new();
    }
    // (code, k, jt, jf)
    let mut ops: Vec<(u16, u32, To, To)> = vec![
        (LD_ABS, ARCH, To::Next, To::Next),
        // A foreign architecture is the main filter's to kill.
        (JEQ, AUDIT_ARCH, To::Next, To::Allow),
        (LD_ABS, NR, To::Next, To::Next),
    ];
    for nr in always {
        ops.push((JEQ, nr as u32, To::Notify, To::Next));
    }
    if plan.network {
        ops.extend([
            (JEQ, libc::SYS_sendto as u32, To::Next, To::Allow),
            // dest_addr (arg 4) NULL: a connected socket, nothing to see.
            (LD_ABS, ARG4_LO, To::Next, To::Next),
            (JEQ, 0, To::Next, To::Notify),
            (LD_ABS, ARG4_HI, To::Next, To::Next),
            (JEQ, 0, To::Allow, To::Notify),
        ]);
    }
    let allow = ops.len();
    let notify = allow + 1;
    let mut prog: Vec<libc::sock_filter> = ops
        .iter()
        .enumerate()
        .map(|(pc, &(code, k, jt, jf))| {
            let off = |t: To| match t {
                To::Next => 0,
                To::Allow => (allow - pc - 1) as u8,
                To::Notify => (notify - pc - 1) as u8,
            };
            libc::sock_filter {
                code,
                jt: off(jt),
                jf: off(jf),
                k,
            }
        })
        .collect();
    prog.push(libc::sock_filter {
        code: RET,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    });
    prog.push(libc::sock_filter {
        code: RET,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_USER_NOTIF,
    });
    prog
}

/// Installs `prog` on the calling thread with a new listener and returns
/// the listener (close-on-exec, as the kernel makes it). Needs
/// `no_new_privs` or CAP_SYS_ADMIN in the caller's user namespace (init
/// has it in the sandbox's).
pub fn install(prog: &[libc::sock_filter]) -> Result<OwnedFd, nix::Error> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp(SET_MODE_FILTER) reads the program through a valid
    // pointer to a `sock_fprog` that lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The helper's side: the listener, and what it recorded.
#[derive(Debug)]
pub struct Watcher {
    listener: OwnedFd,
    plan: WatchPlan,
    cap: u32,
    /// `/proc/<init>/root`, opened at the first exec to look at.
    root: Option<OwnedFd>,
    /// The `/work` upper layer (O_PATH), opened at the first exec under `/work`.
    upper: Option<OwnedFd>,
    init: i32,
    upper_fd_in_init: i64,
    /// Network attempts and foreign executions recorded so far.
    pub anomalies: Anomalies,
}

enum Verdict {
    Continue,
    Fail(i32),
}

impl Watcher {
    /// Takes a copy of init's listener (fd `fd_in_init` in `init`).
    pub fn take(
        init: i32,
        fd_in_init: i32,
        upper_fd_in_init: i64,
        plan: WatchPlan,
        cap: u32,
    ) -> Result<Self, String> {
        // SAFETY: pidfd_open with integer arguments.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, init, 0) };
        if pidfd < 0 {
            return Err(format!("pidfd_open of init failed: {}", nix::Error::last()));
        }
        // SAFETY: the kernel just returned this fd to us.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        // SAFETY: pidfd_getfd with a pidfd we own and integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd_in_init, 0) };
        if fd < 0 {
            return Err(format!(
                "cannot take the seccomp listener from init: {}",
                nix::Error::last()
            ));
        }
        // SAFETY: pidfd_getfd returned a new fd (close-on-exec) we own.
        let listener = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        sync_wake_up(listener.as_fd());
        Ok(Watcher {
            listener,
            plan,
            cap,
            root: None,
            upper: None,
            init,
            upper_fd_in_init,
            anomalies: Anomalies::default(),
        })
    }

    /// The listener, to poll for `POLLIN`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Receives and answers one notification (call when the listener is
    /// readable). A caller that went away meanwhile is simply skipped.
    pub fn service(&mut self) {
        // SAFETY: an all-zero seccomp_notif is valid, and NOTIF_RECV
        // requires it zeroed.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: NOTIF_RECV writes a seccomp_notif through a valid pointer.
        let r = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                &mut req as *mut libc::seccomp_notif,
            )
        };
        if r < 0 {
            return; // ENOENT: the caller was interrupted or died.
        }
        let verdict = self.decide(&req);
        // SAFETY: an all-zero response is valid; fields set below.
        let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
        resp.id = req.id;
        match verdict {
            Some(Verdict::Fail(errno)) => resp.error = -errno,
            // No verdict (the caller is gone): continue is harmless.
            Some(Verdict::Continue) | None => {
                resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
            }
        }
        // SAFETY: NOTIF_SEND reads a seccomp_notif_resp through a valid
        // pointer; ENOENT (the caller is gone) is ignored.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                &resp as *const libc::seccomp_notif_resp,
            )
        };
    }

    /// Whether notification `id` still stands for the same, waiting caller.
    fn id_valid(&self, id: u64) -> bool {
        // SAFETY: NOTIF_ID_VALID reads a u64 through a valid pointer.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
                &id as *const u64,
            ) == 0
        }
    }

    fn decide(&mut self, req: &libc::seccomp_notif) -> Option<Verdict> {
        let pid = req.pid as i32;
        let a = req.data.args;
        let nr = i64::from(req.data.nr);
        let (name, addrs) = match nr {
            libc::SYS_connect if self.plan.network => ("connect", vec![(a[1], a[2])]),
            libc::SYS_sendto if self.plan.network => ("sendto", vec![(a[4], a[5])]),
            libc::SYS_sendmsg if self.plan.network => ("sendmsg", msg_names(pid, a[1], 1)),
            libc::SYS_sendmmsg if self.plan.network => ("sendmmsg", msg_names(pid, a[1], a[2])),
            libc::SYS_execve if self.plan.exec => {
                return self.exec(req, "execve", libc::AT_FDCWD, a[0], 0);
            }
            libc::SYS_execveat if self.plan.exec => {
                return self.exec(req, "execveat", a[0] as i32, a[1], a[4] as i32);
            }
            _ => return Some(Verdict::Continue),
        };
        let mut outside = Vec::new();
        for (ptr, len) in addrs {
            if ptr == 0 {
                continue;
            }
            let len = (len as usize).min(128);
            if let Some(bytes) = read_mem(pid, ptr, len)
                && let Destination::Ip {
                    family,
                    address,
                    port,
                    local: false,
                } = parse_sockaddr(&bytes)
            {
                outside.push((family, address, port));
            }
        }
        if outside.is_empty() {
            return Some(Verdict::Continue);
        }
        let sandbox_pid = sandbox_pid(pid);
        if !self.id_valid(req.id) {
            return None;
        }
        let errno = libc::ENETUNREACH;
        for (family, address, port) in outside {
            push_capped(
                &mut self.anomalies.network,
                &mut self.anomalies.dropped.network,
                self.cap,
                NetworkAttempt {
                    syscall: name.into(),
                    family: family.into(),
                    address,
                    port,
                    pid: sandbox_pid,
                    time_us: now_us(),
                    errno,
                },
            );
        }
        Some(Verdict::Fail(errno))
    }

    fn exec(
        &mut self,
        req: &libc::seccomp_notif,
        name: &'static str,
        dirfd: i32,
        path_ptr: u64,
        flags: i32,
    ) -> Option<Verdict> {
        let pid = req.pid as i32;
        let path = read_cstr(pid, path_ptr)?;
        let target = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
            // fexecve: the file is the fd itself (a memfd, typically).
            Target::File(open_path(&format!("/proc/{pid}/fd/{dirfd}"))?)
        } else if path.starts_with(b"/") {
            Target::InRoot(path)
        } else {
            let base = if dirfd == libc::AT_FDCWD {
                format!("/proc/{pid}/cwd")
            } else {
                format!("/proc/{pid}/fd/{dirfd}")
            };
            let base = std::fs::read_link(base).ok()?;
            let mut full = std::os::unix::ffi::OsStrExt::as_bytes(base.as_os_str()).to_vec();
            full.push(b'/');
            full.extend(path);
            Target::InRoot(full)
        };
        let file = match target {
            Target::File(f) => f,
            Target::InRoot(p) => self.resolve(&p)?,
        };
        // Most executions are the image's or the inputs': answered without
        // another look at the caller.
        if let Some((path, origin)) = self.classify(file.as_fd()) {
            let sandbox_pid = sandbox_pid(pid);
            // Everything read through the pid (its memory, cwd, fds,
            // status) was the notification's caller's.
            if !self.id_valid(req.id) {
                return None;
            }
            push_capped(
                &mut self.anomalies.foreign_exec,
                &mut self.anomalies.dropped.foreign_exec,
                self.cap,
                ForeignExec {
                    syscall: name.into(),
                    path,
                    origin: origin.into(),
                    pid: sandbox_pid,
                    time_us: now_us(),
                },
            );
        }
        Some(Verdict::Continue)
    }

    /// Opens (O_PATH) what `path` names inside the sandbox, resolved as the
    /// sandbox would: absolute symlinks and `..` stay inside its root.
    fn resolve(&mut self, path: &[u8]) -> Option<OwnedFd> {
        if self.root.is_none() {
            self.root = open_path(&format!("/proc/{}/root", self.init));
        }
        let root = self.root.as_ref()?;
        let how = nix::fcntl::OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let path = CString::new(path).ok()?;
        nix::fcntl::openat2(root.as_fd(), path.as_c_str(), how).ok()
    }

    /// Whether `file` is one the step made, and where it lives.
    fn classify(&mut self, file: BorrowedFd<'_>) -> Option<(String, &'static str)> {
        // The path as the sandbox sees it: the kernel prints paths of
        // another mount namespace relative to that namespace's root.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        let link = link.to_string_lossy().into_owned();
        let (path, deleted) = match link.strip_suffix(" (deleted)") {
            Some(p) => (p.to_owned(), true),
            None => (link, false),
        };
        let origin = if path.starts_with("/memfd:") {
            "memfd"
        } else if path.starts_with("/tmp/") {
            "tmp"
        } else if path.starts_with("/dev/shm/") {
            "dev-shm"
        } else if let Some(rel) = path.strip_prefix("/work/") {
            // An input lives in the lower layer; what the step wrote (or
            // changed) is in the upper one.
            if !deleted && !self.in_upper(rel) {
                return None;
            }
            "work"
        } else {
            return None;
        };
        Some((path, origin))
    }

    fn in_upper(&mut self, rel: &str) -> bool {
        if self.upper.is_none() && self.upper_fd_in_init >= 0 {
            self.upper = open_path(&format!("/proc/{}/fd/{}", self.init, self.upper_fd_in_init));
        }
        let Some(upper) = &self.upper else {
            return false;
        };
        let how = nix::fcntl::OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        nix::fcntl::openat2(upper.as_fd(), rel, how).is_ok()
    }
}

enum Target {
    /// A path to resolve in the sandbox's root.
    InRoot(Vec<u8>),
    /// The file itself.
    File(OwnedFd),
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS`: `_IOW('!', 4, __u64)`.
const NOTIF_SET_FLAGS: u64 = 0x4008_2104;
/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6).
const FD_SYNC_WAKE_UP: u64 = 1;

/// Asks the kernel to hand over between the watched process and the runner
/// on one CPU (Linux 6.6): a trapped call then waits for one context switch
/// instead of a cross-CPU wake-up each way. Best effort: an older kernel
/// answers EINVAL and the watch works the same, only slower.
fn sync_wake_up(listener: BorrowedFd<'_>) {
    // SAFETY: NOTIF_SET_FLAGS takes its flags as the integer argument.
    unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SET_FLAGS as _, FD_SYNC_WAKE_UP) };
}

fn open_path(path: &str) -> Option<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// Reads up to `len` bytes at `addr` in `pid`'s memory (fewer at the end
/// of a mapping; `None` when nothing is readable).
fn read_mem(pid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the local iovec covers `buf`, which we own; the remote one is
    // only read by the kernel, with the access checks of ptrace.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Reads a NUL-terminated string (at most PATH_MAX bytes), a page at a time
/// so that a string ending just before an unmapped page is still read.
fn read_cstr(pid: i32, addr: u64) -> Option<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let chunk = (PAGE - at % PAGE) as usize;
        let bytes = read_mem(pid, at, chunk)?;
        if let Some(end) = bytes.iter().position(|&b| b == 0) {
            out.extend_from_slice(&bytes[..end]);
            return Some(out);
        }
        out.extend_from_slice(&bytes);
        at += bytes.len() as u64;
    }
    None
}

/// `(msg_name, msg_namelen)` of each of the first `count` (at most 64)
/// `struct mmsghdr`s at `addr` (a `struct msghdr` for `sendmsg`: the same
/// first fields).
fn msg_names(pid: i32, addr: u64, count: u64) -> Vec<(u64, u64)> {
    // struct msghdr is 56 bytes, struct mmsghdr 64 (msghdr, u32 len, pad).
    let count = count.min(64) as usize;
    let stride = 64;
    let Some(bytes) = read_mem(pid, addr, (count.max(1) - 1) * stride + 16) else {
        return Vec::new();
    };
    (0..count)
        .filter_map(|i| {
            let e = bytes.get(i * stride..i * stride + 16)?;
            let name = u64::from_ne_bytes(e[..8].try_into().ok()?);
            let len = u32::from_ne_bytes(e[8..12].try_into().ok()?);
            Some((name, u64::from(len)))
        })
        .collect()
}

/// `pid`'s number in its own (the sandbox's) pid namespace, from the last
/// field of `NSpid` (0 when it cannot be read).
fn sandbox_pid(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on a `seccomp_data` (enough of classic BPF for it).
    fn run(prog: &[libc::sock_filter], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend((nr as i32).to_ne_bytes());
        data.extend(arch.to_ne_bytes());
        data.extend(0u64.to_ne_bytes());
        for a in args {
            data.extend(a.to_ne_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            match i.code {
                LD_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                JEQ => pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf }),
                RET => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn traps_only_the_watched_calls() {
        let both = filter(WatchPlan {
            network: true,
            exec: true,
        });
        let z = [0; 6];
        for nr in [
            libc::SYS_connect,
            libc::SYS_sendmsg,
            libc::SYS_sendmmsg,
            libc::SYS_execve,
            libc::SYS_execveat,
        ] {
            assert_eq!(run(&both, nr, AUDIT_ARCH, z), NOTIFY, "nr {nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_recvfrom,
        ] {
            assert_eq!(run(&both, nr, AUDIT_ARCH, z), ALLOW, "nr {nr}");
        }
        // sendto: only with a destination (either half of the pointer).
        assert_eq!(run(&both, libc::SYS_sendto, AUDIT_ARCH, z), ALLOW);
        assert_eq!(
            run(
                &both,
                libc::SYS_sendto,
                AUDIT_ARCH,
                [0, 0, 0, 0, 0x1000, 16]
            ),
            NOTIFY
        );
        assert_eq!(
            run(
                &both,
                libc::SYS_sendto,
                AUDIT_ARCH,
                [0, 0, 0, 0, 1 << 40, 16]
            ),
            NOTIFY
        );
        // Another architecture is left to the main filter.
        assert_eq!(run(&both, libc::SYS_connect, 0x4000_0003, z), ALLOW);
        // x32 numbers do not match (the main filter answers ENOSYS).
        assert_eq!(
            run(&both, libc::SYS_connect | 0x4000_0000, AUDIT_ARCH, z),
            ALLOW
        );
    }

    #[test]
    fn each_watch_alone() {
        let net = filter(WatchPlan {
            network: true,
            exec: false,
        });
        assert_eq!(run(&net, libc::SYS_execve, AUDIT_ARCH, [0; 6]), ALLOW);
        assert_eq!(run(&net, libc::SYS_connect, AUDIT_ARCH, [0; 6]), NOTIFY);
        let exec = filter(WatchPlan {
            network: false,
            exec: true,
        });
        assert_eq!(run(&exec, libc::SYS_execve, AUDIT_ARCH, [0; 6]), NOTIFY);
        assert_eq!(run(&exec, libc::SYS_connect, AUDIT_ARCH, [0; 6]), ALLOW);
        assert_eq!(
            run(&exec, libc::SYS_sendto, AUDIT_ARCH, [0, 0, 0, 0, 1, 16]),
            ALLOW
        );
        assert!(
            filter(WatchPlan {
                network: false,
                exec: false
            })
            .is_empty()
        );
    }
}
