//! The source address of the connection to the server: BindAddress (-b) and
//! BindInterface (-B), picked in the destination's address family as ssh does.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// BindAddress: an address literal, or a name resolved to an address of `to`'s family.
pub fn address(bind: &str, to: &SocketAddr) -> Result<IpAddr, String> {
    if let Ok(ip) = bind.parse::<IpAddr>() {
        return match ip.is_ipv4() == to.is_ipv4() {
            true => Ok(ip),
            false => Err(format!("not in the address family of {}", to.ip())),
        };
    }
    (bind, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4() == to.is_ipv4())
        .ok_or_else(|| format!("no address in the family of {}", to.ip()))
}

/// BindInterface: the interface's first address in `to`'s family; for IPv6, a
/// link-local address only when the destination is link-local too (ssh's rule).
pub fn interface_address(name: &str, to: &SocketAddr) -> Result<IpAddr, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    let mut found_interface = false;
    for ifa in addrs.filter(|i| i.interface_name == name) {
        found_interface = true;
        let Some(storage) = ifa.address else { continue };
        let ip = if let Some(v4) = storage.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = storage.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let wanted = match (ip, to.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => true,
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                is_link_local(&a) == is_link_local(&b) || a.is_loopback()
            }
            _ => false,
        };
        if wanted {
            return Ok(ip);
        }
    }
    Err(match found_interface {
        true => format!("no address in the family of {}", to.ip()),
        false => "no such interface".into(),
    })
}

fn is_link_local(ip: &std::net::Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_interface_and_literals() {
        let to: SocketAddr = "127.0.0.1:22".parse().unwrap();
        assert_eq!(
            interface_address("lo", &to).unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(interface_address("no-such-if0", &to).is_err());
        assert_eq!(
            address("127.0.0.2", &to).unwrap(),
            "127.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert!(address("::1", &to).is_err());
    }
}
