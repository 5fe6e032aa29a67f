//! Maps a `-R` bind address to what is actually bound, under `GatewayPorts`, or recognises it as a rendezvous name.
//!
//! The mapping follows sshd's `channel_fwd_bind_addr()` so that `ssh -R`
//! behaves as users expect from OpenSSH, including the quiet rewrites
//! (`GatewayPorts no` binds loopback even when the client asked for `*`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::address::{Host, parse_host};

/// `GatewayPorts`: who may make a `-R` listener reachable from other hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayPorts {
    /// Loopback only, whatever the client asks (OpenSSH default).
    #[default]
    No,
    /// All interfaces, whatever the client asks.
    Yes,
    /// The client's requested address is used as given.
    ClientSpecified,
}

/// What a `tcpip-forward` address means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddress {
    /// `""` or `*`: all interfaces, if `gateway_ports` allows.
    Wildcard,
    /// `localhost`: loopback of both families.
    Localhost,
    /// An address in any spelling.
    Ip(IpAddr),
    /// Any other valid host name: warrend never resolves bind addresses, so
    /// a name always means a rendezvous in warrend's private namespace.
    Rendezvous(String),
}

/// Classifies the address of a `tcpip-forward` request. Errors are reasons.
pub fn classify_bind_address(address: &str) -> Result<BindAddress, String> {
    if address.is_empty() || address == "*" {
        return Ok(BindAddress::Wildcard);
    }
    match parse_host(address)? {
        Host::Ip(ip) => Ok(BindAddress::Ip(ip)),
        Host::Name(n) if n == "localhost" => Ok(BindAddress::Localhost),
        Host::Name(n) => Ok(BindAddress::Rendezvous(n)),
    }
}

/// Both loopback addresses: what `localhost` means for binding and dialling.
pub const LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];
const WILDCARD: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
];

/// The addresses to actually bind for a `-R` request, following sshd's
/// `channel_fwd_bind_addr()`: `no` forces loopback (a specific loopback
/// address is honoured so clients can pick a family), `yes` forces all
/// interfaces, `clientspecified` takes the request at its word. `None` for a
/// rendezvous name, which binds nothing.
pub fn gateway_bind_addrs(bind: &BindAddress, mode: GatewayPorts) -> Option<Vec<IpAddr>> {
    let addrs = match (mode, bind) {
        (_, BindAddress::Rendezvous(_)) => return None,
        (GatewayPorts::Yes, _) => WILDCARD.to_vec(),
        (GatewayPorts::No, BindAddress::Ip(ip)) if ip.is_loopback() => vec![*ip],
        (GatewayPorts::No, _) => LOOPBACK.to_vec(),
        (GatewayPorts::ClientSpecified, BindAddress::Wildcard) => WILDCARD.to_vec(),
        (GatewayPorts::ClientSpecified, BindAddress::Localhost) => LOOPBACK.to_vec(),
        (GatewayPorts::ClientSpecified, BindAddress::Ip(ip)) => vec![*ip],
    };
    Some(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter()
            .map(|s| s.parse().expect("test literal"))
            .collect()
    }

    #[test]
    fn gateway_ports_table() {
        use GatewayPorts::*;
        let lo = || ips(&["127.0.0.1", "::1"]);
        let any = || ips(&["0.0.0.0", "::"]);
        let cases: Vec<(GatewayPorts, &str, Vec<IpAddr>)> = vec![
            (No, "", lo()),
            (No, "*", lo()),
            (No, "0.0.0.0", lo()),
            (No, "::", lo()),
            (No, "localhost", lo()),
            (No, "192.0.2.7", lo()),
            (No, "127.0.0.1", ips(&["127.0.0.1"])),
            (No, "127.1", ips(&["127.0.0.1"])),
            (No, "::1", ips(&["::1"])),
            (Yes, "", any()),
            (Yes, "localhost", any()),
            (Yes, "127.0.0.1", any()),
            (Yes, "192.0.2.7", any()),
            (ClientSpecified, "", any()),
            (ClientSpecified, "*", any()),
            (ClientSpecified, "localhost", lo()),
            (ClientSpecified, "0.0.0.0", ips(&["0.0.0.0"])),
            (ClientSpecified, "::", ips(&["::"])),
            (ClientSpecified, "[::]", ips(&["::"])),
            (ClientSpecified, "192.0.2.7", ips(&["192.0.2.7"])),
            (ClientSpecified, "127.0.0.1", ips(&["127.0.0.1"])),
        ];
        for (mode, requested, want) in cases {
            let bind = classify_bind_address(requested).expect("valid");
            assert_eq!(
                gateway_bind_addrs(&bind, mode),
                Some(want),
                "{mode:?} {requested:?}"
            );
        }
        let rv = classify_bind_address("pi-home").expect("valid");
        assert_eq!(gateway_bind_addrs(&rv, Yes), None);
    }

    #[test]
    fn bind_address_classification() {
        let cases: &[(&str, Result<BindAddress, ()>)] = &[
            ("", Ok(BindAddress::Wildcard)),
            ("*", Ok(BindAddress::Wildcard)),
            ("localhost", Ok(BindAddress::Localhost)),
            ("LocalHost.", Ok(BindAddress::Localhost)),
            (
                "0.0.0.0",
                Ok(BindAddress::Ip("0.0.0.0".parse().expect("lit"))),
            ),
            (
                "0x7f000001",
                Ok(BindAddress::Ip("127.0.0.1".parse().expect("lit"))),
            ),
            ("[::1]", Ok(BindAddress::Ip("::1".parse().expect("lit")))),
            ("Pi-Home", Ok(BindAddress::Rendezvous("pi-home".into()))),
            ("web.rv", Ok(BindAddress::Rendezvous("web.rv".into()))),
            ("1.2.3.4.5", Err(())),
            ("bad name", Err(())),
        ];
        for (addr, want) in cases {
            assert_eq!(
                classify_bind_address(addr).map_err(|_| ()),
                *want,
                "{addr:?}"
            );
        }
    }
}
