//! `-L`: listen locally (TCP or a unix socket) and send each accepted connection through
//! the tunnel to a fixed destination.

use super::bind::{bind_addresses, bind_tcp, retain_family};
use super::relay::relay;
use super::spare::{Early, Spare};
use super::{OpenError, Opener};
use crate::config::forward::{Endpoint, Listen, LocalForward};
use crate::config::values::AddressFamily;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

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

    /// Adds one finished connection's bytes (to the tunnel, from the tunnel).
    pub fn add_bytes(&self, up: u64, down: u64) {
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
    }

    /// Counts one new connection, active until the guard drops.
    pub fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

/// A bound `-L` forward, not yet serving.
pub struct LocalListener {
    /// The spec as the user wrote it, for messages.
    pub spec: String,
    target: Endpoint,
    sockets: Vec<Bound>,
    pub stats: Arc<ForwardStats>,
    /// Keep a channel opened ahead of the next connection (`--preconnect`).
    preconnect: bool,
    /// Fires once every listening socket is closed (see [`LocalListener::closed`]).
    closed: CancellationToken,
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
        Self::bind_with(fwd, gateway_ports, AddressFamily::Any).await
    }

    /// [`LocalListener::bind`] within one address family (-4/-6).
    pub async fn bind_with(
        fwd: &LocalForward,
        gateway_ports: bool,
        family: AddressFamily,
    ) -> Result<LocalListener, BindError> {
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
                    .and_then(|a| retain_family(a, family))
                    .map_err(|e| err(format!("{}:{port}", bind.as_deref().unwrap_or("")), e))?;
                bind_tcp(&addrs, *port)
                    .map_err(|(a, e)| err(a, e))?
                    .into_iter()
                    .map(Bound::Tcp)
                    .collect()
            }
        };
        Ok(LocalListener {
            spec: fwd.spec.clone(),
            target: fwd.connect.clone(),
            sockets,
            stats: Arc::default(),
            preconnect: false,
            closed: CancellationToken::new(),
        })
    }

    /// Keeps one channel to the target opened ahead of the next connection, saving that
    /// connection the channel-open round trip (when and why: [`super::spare`]).
    pub fn with_preconnect(mut self, on: bool) -> Self {
        self.preconnect = on;
        self
    }

    /// Fires once `serve` has closed every listening socket, so whoever cancelled it can
    /// tell the port refuses connections now (accepted ones may still be running).
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
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

    /// Accepts until `cancel`, sending each connection through `opener`; returns once the
    /// accepted connections have ended too (they are not cut by `cancel`). A refused or
    /// failed channel closes that one local connection and nothing else.
    pub async fn serve<O: Opener>(self, opener: Arc<O>, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        let target = Arc::new(self.target);
        let spare = self.preconnect.then(|| {
            let (o, t) = (opener.clone(), target.clone());
            Spare::start(o, t, OPEN_TIMEOUT, cancel.clone(), &tracker)
        });
        let closed = Arc::new(self.closed.drop_guard());
        for socket in self.sockets {
            let closed = closed.clone();
            let ctx = Ctx {
                opener: opener.clone(),
                target: target.clone(),
                cancel: cancel.clone(),
                tracker: tracker.clone(),
                stats: self.stats.clone(),
                spare: spare.clone(),
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
                drop(closed);
            });
        }
        drop(closed);
        tracker.close();
        tracker.wait().await;
    }
}

/// What each accepted connection needs.
struct Ctx<O: Opener> {
    opener: Arc<O>,
    target: Arc<Endpoint>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    stats: Arc<ForwardStats>,
    spare: Option<Arc<Spare<O>>>,
}

impl<O: Opener> Ctx<O> {
    fn spawn<S>(&self, stream: S, peer: Option<SocketAddr>, span: tracing::Span)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (o, t, st) = (self.opener.clone(), self.target.clone(), self.stats.clone());
        let early = self.spare.as_ref().map_or(Early::None, |s| s.take());
        let spare = self.spare.clone();
        self.tracker
            .spawn(forward_one(stream, peer, (early, spare), o, t, st).instrument(span));
        // A server that sends at once can take the next spare's open while this
        // connection is in use (asked after its task is queued, so that on the client's
        // one thread its first bytes go out first); others get it when the forward is
        // idle (the end of `forward_one`).
        if let Some(spare) = &self.spare
            && self.opener.server_sends_at_once()
        {
            spare.refill();
        }
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
    (early, spare): (Early<O::Stream>, Option<Arc<Spare<O>>>),
    opener: Arc<O>,
    target: Arc<Endpoint>,
    stats: Arc<ForwardStats>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    O: Opener,
{
    let _active = stats.enter();
    // No cancel here: a connection accepted before a stop is allowed to finish (the caller
    // bounds the drain by ending the session).
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    let early = match early {
        Early::None => None,
        Early::Ready(stream) => Some(stream),
        Early::Pending(spare) => match tokio::time::timeout_at(deadline, spare).await {
            Ok(Ok(stream)) => stream,
            _ => None,
        },
    };
    let opened = match early {
        Some(stream) => {
            debug!("using the preconnected channel");
            Ok(Ok(stream))
        }
        None => tokio::time::timeout_at(deadline, opener.open(&target, peer)).await,
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
    match relay(&mut local, &mut tunnel).await {
        Ok((up, down)) => {
            stats.bytes_up.fetch_add(up, Ordering::Relaxed);
            stats.bytes_down.fetch_add(down, Ordering::Relaxed);
            debug!(up, down, "connection closed");
        }
        Err(e) => debug!("connection ended: {e}"),
    }
    drop(tunnel);
    // The last connection of the forward is over: a pause, in which the next one's
    // channel can be opened without delaying anyone's data (see `Spare::refill`).
    if let Some(spare) = spare
        && stats.active() == 1
    {
        spare.refill();
    }
}

/// Decrements the active count however the connection ends.
pub struct ActiveGuard(Arc<ForwardStats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
