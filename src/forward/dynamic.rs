//! `-D`: a local proxy port (SOCKS4/4a/5 and HTTP) whose clients each name their own
//! destination, reached through the tunnel.

use super::Opener;
use super::bind::{bind_addresses, bind_tcp, retain_family};
use super::local::ForwardStats;
use crate::config::forward::DynamicForward;
use crate::config::values::AddressFamily;
use crate::proxy::{ProxyConfig, ProxyCredentials, serve_client};

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

/// A bound `-D` forward, not yet serving.
pub struct DynamicListener {
    /// The spec as the user wrote it, for messages.
    pub spec: String,
    sockets: Vec<TcpListener>,
    config: ProxyConfig,
    /// Clients served, for `warren status`.
    pub stats: Arc<ForwardStats>,
    /// Fires once every listening socket is closed (as [`super::local::LocalListener::closed`]).
    closed: CancellationToken,
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
        Self::bind_with(fwd, gateway_ports, AddressFamily::Any, auth).await
    }

    /// [`DynamicListener::bind`] within one address family (-4/-6).
    pub async fn bind_with(
        fwd: &DynamicForward,
        gateway_ports: bool,
        family: AddressFamily,
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
            .and_then(|a| retain_family(a, family))
            .map_err(|e| err(format!("{}:{}", bind.unwrap_or(""), fwd.port), e))?;
        let sockets = bind_tcp(&addrs, fwd.port).map_err(|(a, e)| err(a, e))?;
        let listener = DynamicListener {
            spec: fwd.spec.clone(),
            sockets,
            config: ProxyConfig {
                auth,
                ..ProxyConfig::default()
            },
            stats: Arc::default(),
            closed: CancellationToken::new(),
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

    /// Fires once `serve` has closed every listening socket.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
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
        let closed = Arc::new(self.closed.drop_guard());
        for l in self.sockets {
            let (opener, cancel, config, tracker2) = (
                opener.clone(),
                cancel.clone(),
                config.clone(),
                tracker.clone(),
            );
            let (stats, closed) = (self.stats.clone(), closed.clone());
            tracker.spawn(async move {
                accept_loop(l, opener, config, cancel, tracker2, stats).await;
                drop(closed);
            });
        }
        drop(closed);
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
    stats: Arc<ForwardStats>,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (opener, config) = (opener.clone(), config.clone());
                let active = stats.enter();
                let stream = Counted {
                    inner: stream,
                    stats: stats.clone(),
                };
                // Not cut by `cancel`: accepted clients may finish (see LocalListener::serve).
                let client = async move {
                    let _active = active;
                    serve_client(stream, Some(peer), &*opener, &config).await;
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

/// A proxy client's stream, counting bytes as they pass (handshakes included) so that
/// `warren status` shows long-lived proxy connections moving.
struct Counted<S> {
    inner: S,
    stats: Arc<ForwardStats>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.stats.add_bytes(n, 0);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.stats.add_bytes(0, *n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            self.stats.add_bytes(0, *n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "../proxy/dynamic_tests.rs"]
mod tests;
