//! Where a redirected connection was going: the kernel keeps the address the program
//! connected to in conntrack, and hands it back with SO_ORIGINAL_DST (IPv4) or
//! IP6T_SO_ORIGINAL_DST (IPv6) on the accepted socket.

use nix::sys::socket::{getsockopt, sockopt};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

/// `local` (the accepted socket's own address) picks the family.
pub fn original_dst(sock: &impl AsFd, local: SocketAddr) -> io::Result<SocketAddr> {
    match local {
        SocketAddr::V4(_) => {
            let sa = getsockopt(sock, sockopt::OriginalDst)?;
            let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sa.sin_port),
            )))
        }
        SocketAddr::V6(_) => {
            let sa = getsockopt(sock, sockopt::Ip6tOriginalDst)?;
            let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sa.sin6_port),
                0,
                0,
            )))
        }
    }
}
