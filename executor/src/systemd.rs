//! systemd integration without libsystemd: readiness notification (the
//! `sd_notify` protocol) and socket activation (the `sd_listen_fds`
//! protocol). Both are plain environment variables and sockets; see
//! `sd_notify(3)` and `sd_listen_fds(3)`.
//!
//! - [`Notifier`]: datagrams such as `READY=1`, `STATUS=...` and
//!   `STOPPING=1` to the socket named by `NOTIFY_SOCKET` (a path, or an
//!   abstract name written `@name`).
//! - [`take_activated`]: the listening sockets passed as fds 3.. when
//!   `LISTEN_PID` is our pid, named by `LISTEN_FDNAMES`, made
//!   close-on-exec so that no child (the sandbox helper) inherits them.
//! - [`STRIPPED_ENV`]: the variables every child spawned by the daemon
//!   must not see (they describe the daemon's own sockets and pid).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname, getsockopt};

use crate::config::ListenAddr;
use crate::server::Listener;

/// Environment variables describing the daemon's own systemd context;
/// removed from the environment of every process the daemon spawns.
pub const STRIPPED_ENV: [&str; 4] = [
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// Removes [`STRIPPED_ENV`] from a child's environment.
pub trait StripSystemdEnv {
    /// Removes the daemon's systemd variables from the child's environment.
    fn strip_systemd_env(&mut self) -> &mut Self;
}

impl StripSystemdEnv for tokio::process::Command {
    fn strip_systemd_env(&mut self) -> &mut Self {
        for v in STRIPPED_ENV {
            self.env_remove(v);
        }
        self
    }
}

/// The first fd passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// A failure of the systemd protocols.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// A variable is malformed.
    #[error("{var}={value:?}: {why}")]
    BadVar {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// [`take_activated`] was called twice.
    #[error("the activated sockets were already taken")]
    AlreadyTaken,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SystemdError {
    let what = what.into();
    move |source| SystemdError::Io { what, source }
}

/// Sends state changes to the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
    /// `NOTIFY_SOCKET` as given, for logs.
    pub target: String,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`, or `None` when it is unset (not run
    /// by a service manager, or not `Type=notify`).
    pub fn from_env() -> Result<Option<Self>, SystemdError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(v) if !v.is_empty() => Self::new(&v).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(SystemdError::BadVar {
                var: "NOTIFY_SOCKET",
                value: v.to_string_lossy().into_owned(),
                why: "not UTF-8".into(),
            }),
        }
    }

    /// A notifier for a socket written as in `NOTIFY_SOCKET`: an absolute
    /// path, or `@name` for an abstract socket.
    pub fn new(target: &str) -> Result<Self, SystemdError> {
        let bad = |why: &str| SystemdError::BadVar {
            var: "NOTIFY_SOCKET",
            value: target.to_owned(),
            why: why.to_owned(),
        };
        let addr = if let Some(name) = target.strip_prefix('@') {
            UnixAddr::from_abstract_name(name.as_bytes()).map_err(|e| bad(&e.to_string()))?
        } else if target.starts_with('/') {
            UnixAddr::from_pathname(target).map_err(|e| bad(&e.to_string()))?
        } else {
            // vsock (`vsock:CID:PORT`) is for VMs; a daemon on a build host
            // is never started that way.
            return Err(bad("expected an absolute path or @abstract-name"));
        };
        let socket = UnixDatagram::unbound().map_err(io("create a datagram socket"))?;
        Ok(Notifier {
            socket,
            addr,
            target: target.to_owned(),
        })
    }

    /// Sends `state`: newline-separated `KEY=VALUE` assignments.
    pub fn notify(&self, state: &str) -> Result<(), SystemdError> {
        let sent = self
            .socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map_err(io(format!("notify {}", self.target)))?;
        if sent != state.len() {
            return Err(SystemdError::Io {
                what: format!("notify {}", self.target),
                source: std::io::Error::other("short datagram write"),
            });
        }
        Ok(())
    }
}

/// A listening socket received through socket activation.
#[derive(Debug)]
pub struct Activated {
    /// Its name from `LISTEN_FDNAMES` (`FileDescriptorName=`), or
    /// `unknown` when none was passed.
    pub name: String,
    /// Where it listens.
    pub addr: ListenAddr,
    /// The listener, ready to serve.
    pub listener: Listener,
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The sockets passed by socket activation: empty when `LISTEN_PID` is
/// unset or names another process (a parent's variables we inherited).
/// Each fd is made close-on-exec and must be a listening Unix or TCP
/// stream socket. Takes ownership of fds 3.., so it may be called once.
/// Must be called inside a tokio runtime.
pub fn take_activated() -> Result<Vec<Activated>, SystemdError> {
    let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(pid) = var("LISTEN_PID") else {
        return Ok(Vec::new());
    };
    let bad = |var: &'static str, value: &str, why: &str| SystemdError::BadVar {
        var,
        value: value.to_owned(),
        why: why.to_owned(),
    };
    let pid: u32 = pid
        .parse()
        .map_err(|_| bad("LISTEN_PID", &pid, "not a process id"))?;
    if pid != std::process::id() {
        return Ok(Vec::new());
    }
    let count = var("LISTEN_FDS").unwrap_or_default();
    let n: RawFd = count
        .parse()
        .ok()
        .filter(|n| (0..=1024).contains(n))
        .ok_or_else(|| bad("LISTEN_FDS", &count, "not a count of fds"))?;
    let names: Vec<String> = var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    if !names.is_empty() && names.len() != n as usize {
        return Err(bad(
            "LISTEN_FDNAMES",
            &names.join(":"),
            &format!("{} names for {n} fds", names.len()),
        ));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(SystemdError::AlreadyTaken);
    }
    let mut out = Vec::new();
    for i in 0..n {
        let raw = LISTEN_FDS_START + i;
        // Close-on-exec first, which also proves the fd is open before we
        // claim it.
        fcntl(
            // SAFETY: `raw` is only borrowed for this call; an fd that is
            // not open makes fcntl fail with EBADF, reported below.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) },
            FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| io(format!("fd {raw} from LISTEN_FDS"))(e.into()))?;
        // SAFETY: the service manager passed fds 3..3+LISTEN_FDS to this
        // process (LISTEN_PID is ours), the fd is open (fcntl succeeded),
        // and TAKEN guarantees nothing else in the process claims it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let (addr, listener) = adopt(fd).map_err(|e| match e {
            SystemdError::Io { what, source } => SystemdError::Io {
                what: format!("activated socket {name:?} (fd {raw}): {what}"),
                source,
            },
            other => other,
        })?;
        out.push(Activated {
            name,
            addr,
            listener,
        });
    }
    Ok(out)
}

/// Turns a passed fd into a tokio listener, checking what it is.
fn adopt(fd: OwnedFd) -> Result<(ListenAddr, Listener), SystemdError> {
    let not = |why: &str| SystemdError::Io {
        what: "unusable".into(),
        source: std::io::Error::other(why.to_owned()),
    };
    let sys = |what: &'static str| move |e: nix::Error| io(what)(e.into());
    if !getsockopt(&fd, nix::sys::socket::sockopt::AcceptConn).map_err(sys("SO_ACCEPTCONN"))? {
        return Err(not("not a listening stream socket"));
    }
    let local: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(sys("getsockname"))?;
    match local.family() {
        Some(AddressFamily::Unix) => {
            let path = local
                .as_unix_addr()
                .and_then(|u| u.path())
                .map(PathBuf::from)
                .ok_or_else(|| not("an unnamed or abstract Unix socket"))?;
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true).map_err(io("set non-blocking"))?;
            let l = tokio::net::UnixListener::from_std(std).map_err(io("register"))?;
            Ok((ListenAddr::Unix(path), Listener::Unix(l)))
        }
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            let std = std::net::TcpListener::from(fd);
            let addr = std.local_addr().map_err(io("local address"))?;
            std.set_nonblocking(true).map_err(io("set non-blocking"))?;
            let l = tokio::net::TcpListener::from_std(std).map_err(io("register"))?;
            Ok((ListenAddr::Tcp(addr), Listener::Tcp(l)))
        }
        _ => Err(not("neither a Unix nor a TCP socket")),
    }
}

/// The leaf cgroup the daemon keeps itself in on a cgroup v2 host.
pub const DAEMON_LEAF: &str = "daemon";

/// Before any action: on a cgroup v2 host where our cgroup is delegated to
/// us (`Delegate=yes`), moves the daemon into the child leaf
/// [`DAEMON_LEAF`] so that the delegated cgroup holds no process and the
/// sandbox helper can enable memory, pids and cpu for the actions' cgroups,
/// which it creates beside the leaf. Skipped when `cgroup_parent` is
/// configured (the operator chose where actions go). Logs what it did; a
/// failure is logged and left to the helper, which reports which limits
/// are then in force (or fails the action when a profile requires them).
pub fn enter_delegated_leaf(cgroup_parent: Option<&std::path::Path>) {
    if cgroup_parent.is_some() {
        return;
    }
    use hermetic_sandbox::cgroup::{Leaf, enter_leaf};
    match enter_leaf(DAEMON_LEAF) {
        Ok(Leaf::Moved { from, to }) => tracing::info!(
            delegated = %from.display(),
            leaf = %to.display(),
            "cgroup v2: moved into a leaf; actions' cgroups go beside it"
        ),
        Ok(Leaf::Already(leaf)) => {
            tracing::info!(leaf = %leaf.display(), "cgroup v2: already in a leaf")
        }
        Ok(Leaf::NotNeeded(why)) => tracing::debug!(%why, "cgroup leaf not needed"),
        Err(e) => tracing::warn!(cause = %e, "cgroup v2: cannot move into a leaf"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");

        let name = format!("hermetic-test-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .notify("STOPPING=1")
            .unwrap();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn bad_targets_are_named() {
        let err = Notifier::new("relative/sock").unwrap_err().to_string();
        assert!(err.contains("relative/sock"), "{err}");
        let err = Notifier::new("/nonexistent/dir/sock")
            .unwrap()
            .notify("READY=1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/dir/sock"), "{err}");
    }
}
