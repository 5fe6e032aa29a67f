//! `-L`: listen locally (TCP or a unix socket) and send each accepted connection through
//! the tunnel to a fixed destination.

use super::relay::relay;
use super::{OpenError, Opener};
use crate::config::forward::{Endpoint, Listen, LocalForward};
use socket2::{Domain, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// How long one channel open may take before the local connection is given up. sshd only
/// answers after its own connect to the target, which can take minutes for a black hole.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Counters for one forward, read by `warren status`.
#[derive(Debug, Default)]
pub struct ForwardStats {
    active: AtomicU64,
    connections: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl ForwardStats {
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
    pub fn bytes_up(&self) -> u64 {
        self.bytes_up.load(Ordering::Relaxed)
    }
    pub fn bytes_down(&self) -> u64 {
        self.bytes_down.load(Ordering::Relaxed)
    }
}

/// A bound `-L` forward, not yet serving.
pub struct LocalListener {
    /// The spec as the user wrote it, for messages.
    pub spec: String,
    target: Endpoint,
    sockets: Vec<Bound>,
    pub stats: Arc<ForwardStats>,
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// A bind failure, worded with the address so the user knows which forward and port.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for -L {spec}: {reason}")]
pub struct BindError {
    pub spec: String,
    pub address: String,
    pub reason: String,
}

impl LocalListener {
    /// Binds every address the forward asks for. Without a bind address that means
    /// loopback only (127.0.0.1 and ::1) unless `gateway_ports`; `*` means all interfaces.
    /// With port 0, every address gets the same kernel-chosen port.
    pub async fn bind(fwd: &LocalForward, gateway_ports: bool) -> Result<LocalListener, BindError> {
        let err = |address: String, reason: String| BindError {
            spec: fwd.spec.clone(),
            address,
            reason,
        };
        let sockets = match &fwd.listen {
            Listen::Unix(path) => {
                let l = UnixListener::bind(path)
                    .map_err(|e| err(path.display().to_string(), e.to_string()))?;
                vec![Bound::Unix(l, path.clone())]
            }
            Listen::Tcp { bind, port } => {
                let addrs = bind_addresses(bind.as_deref(), gateway_ports, *port)
                    .await
                    .map_err(|e| err(format!("{}:{port}", bind.as_deref().unwrap_or("")), e))?;
                bind_tcp(&addrs, *port).map_err(|(a, e)| err(a, e))?
            }
        };
        Ok(LocalListener {
            spec: fwd.spec.clone(),
            target: fwd.connect.clone(),
            sockets,
            stats: Arc::default(),
        })
    }

    /// The addresses actually bound (with the real port when 0 was asked for).
    pub fn addresses(&self) -> Vec<String> {
        self.sockets
            .iter()
            .map(|s| match s {
                Bound::Tcp(l) => l
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "?".into()),
                Bound::Unix(_, p) => p.display().to_string(),
            })
            .collect()
    }

    /// Accepts until `cancel`, sending each connection through `opener`. A refused or
    /// failed channel closes that one local connection and nothing else.
    pub async fn serve<O: Opener>(self, opener: Arc<O>, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        let target = Arc::new(self.target);
        for socket in self.sockets {
            let ctx = Ctx {
                opener: opener.clone(),
                target: target.clone(),
                cancel: cancel.clone(),
                tracker: tracker.clone(),
                stats: self.stats.clone(),
            };
            tracker.spawn(async move {
                match socket {
                    Bound::Tcp(l) => accept_loop_tcp(l, ctx).await,
                    Bound::Unix(l, path) => {
                        accept_loop_unix(&l, ctx).await;
                        drop(l);
                        // Leaving the socket file behind would make the next bind fail.
                        let _ = std::fs::remove_file(&path);
                    }
                }
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// What each accepted connection needs.
struct Ctx<O> {
    opener: Arc<O>,
    target: Arc<Endpoint>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    stats: Arc<ForwardStats>,
}

impl<O: Opener> Ctx<O> {
    fn spawn<S>(&self, stream: S, peer: Option<SocketAddr>, span: tracing::Span)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (o, t, c, st) = (
            self.opener.clone(),
            self.target.clone(),
            self.cancel.clone(),
            self.stats.clone(),
        );
        self.tracker
            .spawn(forward_one(stream, peer, o, t, c, st).instrument(span));
    }
}

async fn accept_loop_tcp<O: Opener>(l: TcpListener, ctx: Ctx<O>) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                ctx.spawn(stream, Some(peer), info_span!("conn", %peer));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

async fn accept_loop_unix<O: Opener>(l: &UnixListener, ctx: Ctx<O>) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => ctx.spawn(stream, None, info_span!("conn", peer = "unix")),
            Err(e) => accept_error(e).await,
        }
    }
}

/// EMFILE and friends are transient: back off a little instead of spinning or dying.
async fn accept_error(e: std::io::Error) {
    warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn forward_one<S, O>(
    mut local: S,
    peer: Option<SocketAddr>,
    opener: Arc<O>,
    target: Arc<Endpoint>,
    cancel: CancellationToken,
    stats: Arc<ForwardStats>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    O: Opener,
{
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let _active = scopeguard(stats.clone());
    let opened = tokio::select! {
        _ = cancel.cancelled() => return,
        r = tokio::time::timeout(OPEN_TIMEOUT, opener.open(&target, peer)) => r,
    };
    let mut tunnel = match opened {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            warn!("forward to {target} failed: {e}; closing this connection");
            return;
        }
        Err(_) => {
            warn!(
                "forward to {target} failed: {}; closing this connection",
                OpenError::Timeout(OPEN_TIMEOUT)
            );
            return;
        }
    };
    debug!("forwarding to {target}");
    tokio::select! {
        _ = cancel.cancelled() => {}
        r = relay(&mut local, &mut tunnel) => match r {
            Ok((up, down)) => {
                stats.bytes_up.fetch_add(up, Ordering::Relaxed);
                stats.bytes_down.fetch_add(down, Ordering::Relaxed);
                debug!(up, down, "connection closed");
            }
            Err(e) => debug!("connection ended: {e}"),
        }
    }
}

/// Decrements the active count however the connection ends.
struct ActiveGuard(Arc<ForwardStats>);

fn scopeguard(stats: Arc<ForwardStats>) -> ActiveGuard {
    ActiveGuard(stats)
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves where to listen, following OpenSSH's rules for -L bind addresses.
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

/// Binds each address on `port`; with port 0 the first bind picks the port and the rest
/// reuse it. An IPv6 loopback that the machine lacks is skipped when another address
/// bound, as OpenSSH does; any other failure fails the forward.
fn bind_tcp(addrs: &[IpAddr], port: u16) -> Result<Vec<Bound>, (String, String)> {
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
                out.push(Bound::Tcp(l));
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

pub(crate) fn describe_bind_error(e: &std::io::Error) -> String {
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
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
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
