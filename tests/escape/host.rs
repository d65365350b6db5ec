//! The host side of the battery: what the test observes from outside the
//! sandbox (namespace ids, listeners the probe must not reach, processes that
//! must not survive, the input tree that must not change).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};

/// The inode number of one of this process's namespaces (`mnt`, `uts`, ...).
pub fn ns_inode(kind: &str) -> u64 {
    let path = format!("/proc/self/ns/{kind}");
    fs::metadata(&path)
        .unwrap_or_else(|e| panic!("cannot stat {path}: {e}"))
        .ino()
}

/// Pids of live (non-zombie) processes whose command line contains `token`,
/// except this process.
pub fn processes_with(token: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A zombie's cmdline is empty, so only live processes match.
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if contains(&cmdline, token.as_bytes()) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}

/// SIGKILLs the given pids (survivors this test's own run started).
pub fn kill_pids(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: kill has no memory effects; the pids are processes this
        // test started (they carry its unique token).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Listeners on the host that the probe tries to reach. Each is
/// non-blocking, so `reached` never waits.
#[derive(Debug)]
pub struct Listeners {
    /// TCP on 127.0.0.1.
    pub tcp: TcpListener,
    /// UDP on 127.0.0.1.
    pub udp: UdpSocket,
    /// Abstract unix stream socket.
    pub abstract_stream: UnixListener,
    /// Abstract unix datagram socket (same name, other socket type).
    pub abstract_dgram: UnixDatagram,
    /// The abstract name, without the leading NUL.
    pub abstract_name: String,
}

impl Listeners {
    /// Binds all listeners on fresh ports and a name containing `token`.
    pub fn bind(token: &str) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp listener");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp socket");
        let abstract_name = format!("hermetic-escape-{token}");
        let addr = SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("abstract name");
        let abstract_stream = UnixListener::bind_addr(&addr).expect("bind abstract stream socket");
        let abstract_dgram = UnixDatagram::bind_addr(&addr).expect("bind abstract dgram socket");
        tcp.set_nonblocking(true).expect("nonblocking");
        udp.set_nonblocking(true).expect("nonblocking");
        abstract_stream.set_nonblocking(true).expect("nonblocking");
        abstract_dgram.set_nonblocking(true).expect("nonblocking");
        Listeners {
            tcp,
            udp,
            abstract_stream,
            abstract_dgram,
            abstract_name,
        }
    }

    /// Which listeners received anything: a connection or a datagram.
    pub fn reached(&self) -> Vec<&'static str> {
        let mut reached = Vec::new();
        if self.tcp.accept().is_ok() {
            reached.push("tcp 127.0.0.1");
        }
        let mut buf = [0u8; 256];
        if self.udp.recv_from(&mut buf).is_ok() {
            reached.push("udp 127.0.0.1");
        }
        if self.abstract_stream.accept().is_ok() {
            reached.push("abstract unix stream");
        }
        if self.abstract_dgram.recv(&mut buf).is_ok() {
            reached.push("abstract unix datagram");
        }
        reached
    }
}

/// A host pseudo-terminal: the probe gets the slave as its stdin.
#[derive(Debug)]
pub struct Pty {
    /// The master side, only kept open for the run.
    _master: OwnedFd,
    /// The slave side, handed to the helper as fd 0.
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a fresh pty pair.
    pub fn open() -> io::Result<Self> {
        // SAFETY: posix_openpt returns a new fd or -1; no pointers involved.
        let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: m is a fresh fd that nothing else owns.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: grantpt and unlockpt only take the master fd.
        if unsafe { libc::grantpt(m) } != 0 || unsafe { libc::unlockpt(m) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer is valid for its length; ptsname_r NUL-terminates.
        if unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: name is NUL-terminated (ptsname_r succeeded).
        let s = unsafe {
            libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: s is a fresh fd that nothing else owns.
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        Ok(Pty {
            _master: master,
            slave,
        })
    }

    /// Bytes waiting in the slave's input queue: anything a TIOCSTI pushed.
    pub fn pending_input(&self) -> i32 {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int into n.
        unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        n
    }
}

/// Switches the calling process to `uid` (gid = uid) with no supplementary
/// groups. Async-signal-safe: meant for a `pre_exec` hook.
pub fn become_user(uid: u32) -> io::Result<()> {
    // SAFETY: a zero-length group list reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::setresgid(uid, uid, uid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dup2(fd, target)`: `target` is not close-on-exec afterwards.
/// Async-signal-safe: meant for a `pre_exec` hook.
pub fn dup_to(fd: i32, target: i32) -> io::Result<()> {
    // SAFETY: integer arguments only; target is replaced on purpose.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unshare(CLONE_NEWUSER)`. Async-signal-safe.
pub fn unshare_user() -> io::Result<()> {
    // SAFETY: integer argument only.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a file in a tree looks like, for "unchanged" comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Mode bits including the type.
    pub mode: u32,
    /// Inode.
    pub ino: u64,
    /// Owner.
    pub uid: u32,
    /// Modification time in nanoseconds.
    pub mtime_ns: i128,
    /// Contents (files) or target (symlinks).
    pub data: Vec<u8>,
}

/// Every entry below `root`, by relative path, never following symlinks.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        let data = if md.file_type().is_file() {
            let mut v = Vec::new();
            if let Ok(mut f) = fs::File::open(&path) {
                let _ = f.read_to_end(&mut v);
            }
            v
        } else if md.file_type().is_symlink() {
            fs::read_link(&path)
                .map(|t| t.into_os_string().into_encoded_bytes())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let rel = path.strip_prefix(root).expect("below root").to_path_buf();
        out.insert(
            rel,
            Entry {
                mode: md.mode(),
                ino: md.ino(),
                uid: md.uid(),
                mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
                data,
            },
        );
        if md.file_type().is_dir() {
            walk(root, &path, out);
        }
    }
}

/// Creates `path` as a directory with `mode`, owned by `owner` (uid = gid).
pub fn make_dir(path: &Path, mode: u32, owner: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(owner), Some(owner))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
}

/// Writes a file with `mode`, owned by `owner` (uid = gid).
pub fn write_file(path: &Path, data: &[u8], mode: u32, owner: u32) {
    fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(owner), Some(owner))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
}

/// Whether user `uid` (not in any group of the owners) can traverse every
/// ancestor of `path`: each must be world-executable.
pub fn world_traversable(path: &Path) -> Result<(), PathBuf> {
    let mut p = Some(path);
    while let Some(dir) = p {
        if let Ok(md) = fs::metadata(dir)
            && md.is_dir()
            && md.mode() & 0o001 == 0
        {
            return Err(dir.to_path_buf());
        }
        p = dir.parent();
    }
    Ok(())
}

/// Removes the delegated cgroups (`PREFIX<pid>`) of earlier test processes
/// that are gone, in every cgroup hierarchy, below this process's own
/// cgroup there. Best effort: a cgroup still in use stays.
pub fn remove_stale_cgroups(prefix: &str) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(own) = fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let options = r.nth(1).unwrap_or("");
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        // Our path in this hierarchy: v2 is "0::", v1 lists its controllers.
        let path = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            let matches = match fstype {
                "cgroup2" => ctrl.is_empty(),
                "cgroup" => {
                    !ctrl.is_empty() && ctrl.split(',').all(|c| options.split(',').any(|o| o == c))
                }
                _ => false,
            };
            matches.then(|| path.to_owned())
        });
        let Some(path) = path else { continue };
        let dir = Path::new(mount_point).join(path.trim_start_matches('/'));
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}
