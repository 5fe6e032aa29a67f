//! Where and how listeners bind, by OpenSSH's rules: shared by -L, -D and warrend's -R.

use socket2::{Domain, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::TcpListener;
use tracing::info;

/// Resolves where to listen, following OpenSSH's rules for forward bind addresses:
/// loopback (both families) by default, every interface for `*` or an empty address or
/// with GatewayPorts.
pub async fn bind_addresses(
    bind: Option<&str>,
    gateway_ports: bool,
    port: u16,
) -> Result<Vec<IpAddr>, String> {
    let loopback = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let any = vec![
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];
    Ok(match bind {
        None if gateway_ports => any,
        None => loopback,
        Some("*") | Some("") => any,
        Some("localhost") => loopback,
        Some(host) => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                vec![ip]
            } else {
                let mut v: Vec<IpAddr> = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| format!("cannot resolve bind address {host}: {e}"))?
                    .map(|a| a.ip())
                    .collect();
                v.dedup();
                v
            }
        }
    })
}

/// Keeps the addresses of AddressFamily's family (-4/-6), as ssh binds only those.
pub fn retain_family(
    mut addrs: Vec<IpAddr>,
    family: crate::config::values::AddressFamily,
) -> Result<Vec<IpAddr>, String> {
    let had = !addrs.is_empty();
    addrs.retain(|ip| family.allows(ip));
    if had && addrs.is_empty() {
        return Err(format!(
            "no address to listen on in AddressFamily {}",
            family.name()
        ));
    }
    Ok(addrs)
}

/// Binds each address on `port`; with port 0 the first bind picks the port and the rest
/// reuse it. An IPv6 loopback that the machine lacks is skipped when another address
/// bound, as OpenSSH does; any other failure fails the forward.
pub fn bind_tcp(addrs: &[IpAddr], port: u16) -> Result<Vec<TcpListener>, (String, String)> {
    let mut out = Vec::new();
    let mut port = port;
    let mut skipped = None;
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        match listen(addr) {
            Ok(l) => {
                if port == 0 {
                    port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                }
                info!(
                    "listening on {}",
                    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
                );
                out.push(l);
            }
            Err(e) if ip.is_ipv6() && addrs.len() > 1 && is_missing_family(&e) => {
                skipped = Some((addr.to_string(), e.to_string()));
            }
            Err(e) => return Err((addr.to_string(), describe_bind_error(&e))),
        }
    }
    if out.is_empty() {
        return Err(skipped.unwrap_or_else(|| ("?".into(), "no address to listen on".into())));
    }
    Ok(out)
}

fn is_missing_family(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EADDRNOTAVAIL) | Some(libc::EAFNOSUPPORT)
    )
}

pub fn describe_bind_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "address already in use (another program holds this port; pick another local port)"
                .into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".into()
        }
        _ => e.to_string(),
    }
}

/// A listening socket with SO_REUSEADDR (so a restart does not wait out TIME_WAIT) and
/// IPV6_V6ONLY (so `::` and `0.0.0.0` can both be bound on one port).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
