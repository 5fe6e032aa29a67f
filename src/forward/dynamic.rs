//! `-D`: a local proxy port (SOCKS4/4a/5 and HTTP) whose clients each name their own
//! destination, reached through the tunnel.

use super::Opener;
use crate::config::forward::DynamicForward;
use crate::proxy::{ProxyConfig, ProxyCredentials, serve_client};
use socket2::{Domain, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

/// A bound `-D` forward, not yet serving.
pub struct DynamicListener {
    /// The spec as the user wrote it, for messages.
    pub spec: String,
    sockets: Vec<TcpListener>,
    config: ProxyConfig,
}

/// A bind failure, worded with the address so the user knows which forward and port.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for -D {spec}: {reason}")]
pub struct BindError {
    pub spec: String,
    pub address: String,
    pub reason: String,
}

impl DynamicListener {
    /// Binds as `-L` does: loopback only unless a bind address (`*` or empty for all
    /// interfaces) or `gateway_ports` says otherwise; port 0 picks one free port for all.
    pub async fn bind(
        fwd: &DynamicForward,
        gateway_ports: bool,
        auth: Option<ProxyCredentials>,
    ) -> Result<DynamicListener, BindError> {
        let err = |address: String, reason: String| BindError {
            spec: fwd.spec.clone(),
            address,
            reason,
        };
        let bind = fwd.bind.as_deref();
        let addrs = bind_addresses(bind, gateway_ports, fwd.port)
            .await
            .map_err(|e| err(format!("{}:{}", bind.unwrap_or(""), fwd.port), e))?;
        let sockets = bind_tcp(&addrs, fwd.port).map_err(|(a, e)| err(a, e))?;
        let listener = DynamicListener {
            spec: fwd.spec.clone(),
            sockets,
            config: ProxyConfig {
                auth,
                ..ProxyConfig::default()
            },
        };
        let exposed: Vec<String> = listener
            .sockets
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .filter(|a| !a.ip().is_loopback())
            .map(|a| a.to_string())
            .collect();
        if listener.config.auth.is_none() && !exposed.is_empty() {
            let addrs = exposed.join(" and ");
            warn!(
                "-D {}: the proxy has no credentials and listens beyond loopback: anyone who \
                 can reach {addrs} can use your SSH server's network",
                fwd.spec
            );
        }
        Ok(listener)
    }

    /// How long a client may take to finish its SOCKS negotiation or HTTP request head.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// The addresses actually bound (with the real port when 0 was asked for).
    pub fn addresses(&self) -> Vec<String> {
        self.sockets
            .iter()
            .map(|l| {
                l.local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "?".into())
            })
            .collect()
    }

    /// Accepts until `cancel`. Each client is served in its own task; a failed
    /// negotiation or tunnel ends that client only.
    pub async fn serve<O: Opener>(self, opener: Arc<O>, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        let config = Arc::new(self.config);
        for l in self.sockets {
            let (opener, cancel, config, tracker2) = (
                opener.clone(),
                cancel.clone(),
                config.clone(),
                tracker.clone(),
            );
            tracker.spawn(accept_loop(l, opener, config, cancel, tracker2));
        }
        tracker.close();
        tracker.wait().await;
    }
}

async fn accept_loop<O: Opener>(
    l: TcpListener,
    opener: Arc<O>,
    config: Arc<ProxyConfig>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (opener, config, cancel) = (opener.clone(), config.clone(), cancel.clone());
                let client = async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = serve_client(stream, Some(peer), &*opener, &config) => {}
                    }
                };
                tracker.spawn(client.instrument(info_span!("proxy", %peer)));
            }
            Err(e) => {
                // EMFILE and friends are transient: back off instead of spinning or dying.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Where to listen, by OpenSSH's rules for bind addresses. (A copy of `-L`'s rules in
/// `local.rs`, kept private there.)
async fn bind_addresses(
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
        None | Some("localhost") => loopback,
        Some("*") | Some("") => any,
        Some(host) => match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let mut v: Vec<IpAddr> = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| format!("cannot resolve bind address {host}: {e}"))?
                    .map(|a| a.ip())
                    .collect();
                v.dedup();
                v
            }
        },
    })
}

/// Binds each address on `port` (port 0: the first bind picks it and the rest reuse it).
/// A missing IPv6 loopback is skipped when another address bound, as OpenSSH does.
fn bind_tcp(addrs: &[IpAddr], port: u16) -> Result<Vec<TcpListener>, (String, String)> {
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
                    "SOCKS/HTTP proxy listening on {}",
                    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
                );
                out.push(l);
            }
            Err(e)
                if ip.is_ipv6()
                    && addrs.len() > 1
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
                    ) =>
            {
                skipped = Some((addr.to_string(), e.to_string()));
            }
            Err(e) => {
                let reason = match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        "address already in use (another program holds this port; pick another)"
                            .into()
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied (ports below 1024 need privileges)".into()
                    }
                    _ => e.to_string(),
                };
                return Err((addr.to_string(), reason));
            }
        }
    }
    if out.is_empty() {
        return Err(skipped.unwrap_or_else(|| ("?".into(), "no address to listen on".into())));
    }
    Ok(out)
}

/// SO_REUSEADDR so a restart does not wait out TIME_WAIT; IPV6_V6ONLY so `::` and
/// `0.0.0.0` can share a port.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
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

#[cfg(test)]
#[path = "../proxy/dynamic_tests.rs"]
mod tests;
