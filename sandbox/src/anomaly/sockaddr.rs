//! Socket addresses read from a step's memory, and which of them leave the
//! host.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A destination a network call named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// IPv4 or IPv6: `family` (`inet`, `inet6`), address, port, and whether
    /// it stays on this host (loopback, or the unspecified address, which
    /// Linux connects to the local host).
    Ip {
        /// `inet` or `inet6`.
        family: &'static str,
        /// The address, printed.
        address: String,
        /// The port.
        port: u16,
        /// Loopback or unspecified.
        local: bool,
    },
    /// Any other family (AF_UNIX, netlink, AF_UNSPEC to disconnect), or an
    /// address too short to be one: the kernel decides, nothing is recorded.
    Other,
}

fn ipv4_local(a: Ipv4Addr) -> bool {
    a.is_loopback() || a.is_unspecified()
}

/// Parses the bytes of a `struct sockaddr` (as many as the caller passed).
pub fn parse_sockaddr(b: &[u8]) -> Destination {
    if b.len() < 2 {
        return Destination::Other;
    }
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    let port = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    match family {
        libc::AF_INET if b.len() >= 8 => {
            let a = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Destination::Ip {
                family: "inet",
                address: a.to_string(),
                port: port(b),
                local: ipv4_local(a),
            }
        }
        libc::AF_INET6 if b.len() >= 24 => {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&b[8..24]);
            let a = Ipv6Addr::from(raw);
            let local =
                a.is_loopback() || a.is_unspecified() || a.to_ipv4_mapped().is_some_and(ipv4_local);
            Destination::Ip {
                family: "inet6",
                address: a.to_string(),
                port: port(b),
                local,
            }
        }
        _ => Destination::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        b.extend(port.to_be_bytes());
        b.extend(a);
        b.extend([0; 8]);
        b
    }

    fn v6(a: Ipv6Addr, port: u16) -> Vec<u8> {
        let mut b = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        b.extend(port.to_be_bytes());
        b.extend([0; 4]);
        b.extend(a.octets());
        b.extend([0; 4]);
        b
    }

    #[test]
    fn ipv4_outside_and_loopback() {
        assert_eq!(
            parse_sockaddr(&v4([10, 0, 0, 1], 80)),
            Destination::Ip {
                family: "inet",
                address: "10.0.0.1".into(),
                port: 80,
                local: false
            }
        );
        for local in [[127, 0, 0, 1], [127, 3, 2, 1], [0, 0, 0, 0]] {
            assert!(matches!(
                parse_sockaddr(&v4(local, 1)),
                Destination::Ip { local: true, .. }
            ));
        }
    }

    #[test]
    fn ipv6_outside_loopback_and_mapped() {
        let out = parse_sockaddr(&v6("2001:db8::1".parse().unwrap(), 443));
        assert!(
            matches!(&out, Destination::Ip { family: "inet6", address, port: 443, local: false } if address == "2001:db8::1"),
            "{out:?}"
        );
        for local in ["::1", "::", "::ffff:127.0.0.1"] {
            assert!(matches!(
                parse_sockaddr(&v6(local.parse().unwrap(), 1)),
                Destination::Ip { local: true, .. }
            ));
        }
        assert!(matches!(
            parse_sockaddr(&v6("::ffff:1.1.1.1".parse().unwrap(), 53)),
            Destination::Ip { local: false, .. }
        ));
    }

    #[test]
    fn other_families_and_short_addresses_are_left_to_the_kernel() {
        let mut unix = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        unix.extend(b"/tmp/sock\0");
        assert_eq!(parse_sockaddr(&unix), Destination::Other);
        assert_eq!(
            parse_sockaddr(&v4([1, 1, 1, 1], 53)[..6]),
            Destination::Other
        );
        assert_eq!(parse_sockaddr(&[]), Destination::Other);
    }
}
