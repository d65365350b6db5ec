//! Identifying the peer of each accepted connection, once, at accept time.
//!
//! [`PeerStream`] wraps an accepted socket and carries a [`PeerInfo`]
//! that tonic puts into every request's extensions (through
//! [`tonic::transport::server::Connected`]); with TLS, tonic wraps it in a
//! `TlsConnectInfo` that adds the client's certificates.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    match s.peer_cred() {
        Ok(c) => PeerInfo::Known(Principal::Unix {
            uid: c.uid(),
            gid: Some(c.gid()),
        }),
        Err(e) => PeerInfo::Unknown(format!("SO_PEERCRED failed: {e}")),
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
            Ok(Some(uid)) => PeerInfo::Known(Principal::Unix {
                uid,
                gid: primary_gid(uid),
            }),
            Ok(None) => PeerInfo::Unknown(format!(
                "no socket {client} -> {server} in /proc/net/tcp (another network namespace?)"
            )),
            Err(e) => PeerInfo::Unknown(format!("cannot read /proc/net/tcp: {e}")),
        },
    }
}

fn primary_gid(uid: u32) -> Option<u32> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
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
