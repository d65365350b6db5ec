//! Identifying the peer of each accepted connection, once, at accept time.
//!
//! [`PeerStream`] wraps an accepted socket and carries a [`PeerInfo`]
//! that tonic puts into every request's extensions (through
//! [`tonic::transport::server::Connected`]); with TLS, tonic wraps it in a
//! `TlsConnectInfo` that adds the client's certificates.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

use super::{LoopbackTcp, Principal};

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub enum PeerInfo {
    /// Identified by the kernel (or anonymous by configuration).
    Known(Principal),
    /// Not identified; the reason.
    Unknown(String),
    /// A TLS connection: the client certificate identifies it.
    Tls,
}

/// An accepted connection and its peer.
#[derive(Debug)]
pub struct PeerStream<S> {
    inner: S,
    peer: PeerInfo,
}

impl<S> Connected for PeerStream<S>
where
    S: Send + 'static,
{
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PeerStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PeerStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The peer of a Unix connection: its credentials at `connect` time.
fn unix_peer(s: &UnixStream) -> PeerInfo {
    let c = match s.peer_cred() {
        Ok(c) => c,
        Err(e) => return PeerInfo::Unknown(format!("SO_PEERCRED failed: {e}")),
    };
    let groups = match peer_groups(s.as_raw_fd()) {
        Ok(groups) => groups,
        // A kernel before 4.13: only the primary group is known.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOPROTOOPT) => Vec::new(),
        Err(e) => return PeerInfo::Unknown(format!("SO_PEERGROUPS failed: {e}")),
    };
    PeerInfo::Known(Principal::Unix {
        uid: c.uid(),
        gid: Some(c.gid()),
        groups,
    })
}

/// `SO_PEERGROUPS` (Linux 4.13; the asm-generic value, which x86-64 and
/// arm64 use; the libc crate does not export it).
const SO_PEERGROUPS: nix::libc::c_int = 59;

/// The supplementary groups of a Unix socket's peer as the kernel recorded
/// them when it connected (`SO_PEERGROUPS`, beside the `SO_PEERCRED`
/// uid and gid). Unlike the `Groups:` line of `/proc/<pid>/status` of the
/// peer's pid, this cannot name another process after a pid reuse, nor
/// change after the connection was made.
pub fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<nix::libc::gid_t>();
    let mut groups: Vec<nix::libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * GID) as nix::libc::socklen_t;
        // SAFETY: `groups` is valid for writes of `len` bytes and outlives
        // the call; `fd` is an open socket borrowed for the call; the
        // kernel writes at most `len` bytes and updates `len`.
        let r = unsafe {
            nix::libc::getsockopt(
                fd,
                nix::libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / GID;
        if r == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(nix::libc::ERANGE) && needed > groups.len() {
            groups.resize(needed, 0);
            continue;
        }
        return Err(e);
    }
}

/// Connections on a Unix listener, each with its peer's credentials.
pub fn unix_incoming(
    l: UnixListener,
) -> impl Stream<Item = io::Result<PeerStream<UnixStream>>> + Send {
    UnixListenerStream::new(l).map(|r| {
        r.map(|s| PeerStream {
            peer: unix_peer(&s),
            inner: s,
        })
    })
}

/// Connections on a TCP listener. With TLS, the certificate identifies
/// each; without, loopback clients are identified as `mode` says and any
/// other client is refused.
pub fn tcp_incoming(
    l: TcpListener,
    tls: bool,
    mode: LoopbackTcp,
) -> impl Stream<Item = io::Result<PeerStream<TcpStream>>> + Send {
    TcpListenerStream::new(l).map(move |r| {
        r.map(|s| {
            let peer = if tls {
                PeerInfo::Tls
            } else {
                tcp_peer(&s, mode)
            };
            let _ = s.set_nodelay(true);
            PeerStream { inner: s, peer }
        })
    })
}

fn tcp_peer(s: &TcpStream, mode: LoopbackTcp) -> PeerInfo {
    let (Ok(client), Ok(server)) = (s.peer_addr(), s.local_addr()) else {
        return PeerInfo::Unknown("the connection has no addresses".into());
    };
    if !client.ip().to_canonical().is_loopback() {
        return PeerInfo::Unknown(format!(
            "{client} is not on loopback and the listener has no TLS"
        ));
    }
    match mode {
        LoopbackTcp::Deny => PeerInfo::Unknown(
            "unauthenticated TCP is disabled (auth.loopback_tcp = \"deny\")".into(),
        ),
        LoopbackTcp::Anonymous => PeerInfo::Known(Principal::Anonymous),
        LoopbackTcp::PeerUid => match loopback_owner(client, server) {
            Ok(Some(uid)) => {
                let (gid, groups) = user_groups(uid);
                PeerInfo::Known(Principal::Unix { uid, gid, groups })
            }
            Ok(None) => PeerInfo::Unknown(format!(
                "no socket {client} -> {server} in /proc/net/tcp (another network namespace?)"
            )),
            Err(e) => PeerInfo::Unknown(format!("cannot read /proc/net/tcp: {e}")),
        },
    }
}

/// A user's primary group and the groups the group database lists it in
/// (`getgrouplist`): what a login of that user would have. The socket
/// owner's actual groups are not recorded for TCP.
fn user_groups(uid: u32) -> (Option<u32>, Vec<u32>) {
    let Some(user) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
    else {
        return (None, Vec::new());
    };
    let groups = std::ffi::CString::new(user.name.clone())
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    (Some(user.gid.as_raw()), groups)
}

/// The uid owning the TCP socket whose local address is `client` and
/// remote address is `server`: the client's end of a loopback connection,
/// as the kernel lists it in `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn loopback_owner(client: SocketAddr, server: SocketAddr) -> io::Result<Option<u32>> {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, server) = (canon(client), canon(server));
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                continue;
            }
            let (Some(local), Some(remote)) = (parse_addr(f[1]), parse_addr(f[2])) else {
                continue;
            };
            if canon(local) == client && canon(remote) == server {
                return Ok(f[7].parse().ok());
            }
        }
    }
    Ok(None)
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word printed in host byte order, the port in big-endian hex.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_loopback_connection_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(
            loopback_owner(accepted.peer_addr().unwrap(), server).unwrap(),
            Some(me)
        );
        drop(client);
        let v6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(listener) = v6 {
            let server = listener.local_addr().unwrap();
            let _client = std::net::TcpStream::connect(server).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            assert_eq!(
                loopback_owner(accepted.peer_addr().unwrap(), server).unwrap(),
                Some(me)
            );
        }
    }

    #[test]
    fn peer_groups_are_the_connecting_process_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_raw_fd()).unwrap();
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        mine.sort_unstable();
        mine.dedup();
        got.dedup();
        assert_eq!(got, mine);
    }

    #[test]
    fn proc_net_addresses_parse() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_addr("zz:1"), None);
    }
}
