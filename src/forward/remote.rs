//! `-R`: the server listens; each connection it accepts arrives as a forwarded channel,
//! and we dial the local destination and relay.

use super::local::ForwardStats;
use super::relay::relay;
use crate::config::forward::{Endpoint, Listen, RemoteForward};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};
use tracing::{Instrument, debug, info_span, warn};
use warren_ssh::driver::Handle;
use warren_ssh::proto::{ChannelId, reason};

/// How long dialing the local destination may take before the forwarded channel is
/// refused (the remote peer then sees its connection closed).
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// What to do with a forwarded connection: dial a fixed destination, or act as a SOCKS /
/// HTTP proxy whose requests are dialed from here (`-R port` alone).
#[derive(Debug, Clone)]
pub enum Target {
    Fixed(Endpoint),
    Dynamic,
}

/// Where a forwarded connection goes, and the counters of its forward (`warren status`).
#[derive(Debug, Clone)]
pub struct Routed {
    pub target: Target,
    pub stats: Arc<ForwardStats>,
}

/// One granted remote forward, keyed the way the server reports incoming connections.
#[derive(Debug, Clone)]
struct Entry {
    /// The listen address string as we sent it (sshd echoes it back verbatim).
    address: String,
    /// The port the server listens on (the allocated one when 0 was asked for).
    port: u32,
    /// For unix-socket listeners, the remote path.
    path: Option<String>,
    target: Target,
    stats: Arc<ForwardStats>,
}

impl Entry {
    fn routed(&self) -> Routed {
        Routed {
            target: self.target.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// The forwards the server granted, shared between the code that requests them and the
/// task that receives their connections.
#[derive(Debug, Default)]
pub struct RemoteForwards {
    entries: Mutex<Vec<Entry>>,
}

impl RemoteForwards {
    /// Records a granted TCP forward.
    pub fn add_tcp(&self, address: &str, port: u32, target: Target, stats: Arc<ForwardStats>) {
        if let Ok(mut e) = self.entries.lock() {
            e.push(Entry {
                address: address.to_string(),
                port,
                path: None,
                target,
                stats,
            });
        }
    }

    /// Records a granted unix-socket forward.
    pub fn add_unix(&self, path: &str, target: Target, stats: Arc<ForwardStats>) {
        if let Ok(mut e) = self.entries.lock() {
            e.push(Entry {
                address: String::new(),
                port: 0,
                path: Some(path.to_string()),
                target,
                stats,
            });
        }
    }

    /// The target for a connection to `address:port`. Port decides; the address only
    /// breaks ties, since servers may normalise what we sent.
    pub fn lookup_tcp(&self, address: &str, port: u32) -> Option<Routed> {
        let entries = self.entries.lock().ok()?;
        let same_port: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.path.is_none() && e.port == port)
            .collect();
        same_port
            .iter()
            .find(|e| e.address == address)
            .or(same_port.first())
            .map(|e| e.routed())
    }

    /// The target for a connection to the remote unix socket `path`.
    pub fn lookup_unix(&self, path: &str) -> Option<Routed> {
        let entries = self.entries.lock().ok()?;
        entries
            .iter()
            .find(|e| e.path.as_deref() == Some(path))
            .map(|e| e.routed())
    }

    /// Forgets a TCP forward (after cancel-tcpip-forward): connections still arriving for
    /// it are refused rather than dialed.
    pub fn remove_tcp(&self, port: u32) {
        if let Ok(mut e) = self.entries.lock() {
            e.retain(|e| e.path.is_some() || e.port != port);
        }
    }

    /// Forgets a unix-socket forward.
    pub fn remove_unix(&self, path: &str) {
        if let Ok(mut e) = self.entries.lock() {
            e.retain(|e| e.path.as_deref() != Some(path));
        }
    }

    /// Every granted TCP forward as (address, port), for cancelling at shutdown.
    pub fn tcp_listeners(&self) -> Vec<(String, u32)> {
        self.entries
            .lock()
            .map(|e| {
                e.iter()
                    .filter(|e| e.path.is_none())
                    .map(|e| (e.address.clone(), e.port))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every granted unix-socket forward path, for cancelling at shutdown.
    pub fn unix_listeners(&self) -> Vec<String> {
        self.entries
            .lock()
            .map(|e| e.iter().filter_map(|e| e.path.clone()).collect())
            .unwrap_or_default()
    }
}

/// The listen address string to send for a -R spec, as OpenSSH does: no bind address means
/// "localhost" (the server's loopback), `*` or empty means all interfaces ("").
pub fn request_address(fwd: &RemoteForward) -> Option<(String, u32)> {
    match &fwd.listen {
        Listen::Tcp { bind, port } => {
            let address = match bind.as_deref() {
                None => "localhost".to_string(),
                Some("*") | Some("") => String::new(),
                Some(a) => a.to_string(),
            };
            Some((address, u32::from(*port)))
        }
        Listen::Unix(_) => None,
    }
}

/// Takes over one forwarded channel: dials the local destination in a task of its own (the
/// connection's event loop must never wait on it), then accepts and relays, or refuses the
/// channel if the destination cannot be reached. The channel is read only as fast as the
/// destination takes the data, so a slow destination slows exactly its own sender.
pub fn spawn_forwarded(handle: Handle, id: ChannelId, routed: Routed, origin: String) {
    let span = info_span!("forwarded", %origin);
    tokio::spawn(
        async move {
            let _active = routed.stats.enter();
            match routed.target {
                Target::Fixed(endpoint) => forward_fixed(handle, id, endpoint, &routed.stats).await,
                Target::Dynamic => serve_dynamic(handle, id).await,
            }
        }
        .instrument(span),
    );
}

async fn forward_fixed(handle: Handle, id: ChannelId, endpoint: Endpoint, stats: &ForwardStats) {
    match tokio::time::timeout(DIAL_TIMEOUT, dial(&endpoint)).await {
        Ok(Ok(mut local)) => {
            let mut tunnel = handle.accept(id);
            match relay(&mut local, &mut tunnel).await {
                Ok((down, up)) => {
                    // Seen from here: what the local target sent went up the tunnel.
                    stats.add_bytes(down, up);
                    debug!(up, down, "forwarded connection to {endpoint} closed")
                }
                Err(e) => debug!("forwarded connection to {endpoint} ended: {e}"),
            }
        }
        Ok(Err(e)) => {
            warn!("remote forward: cannot connect to {endpoint}: {e}");
            handle.reject(
                id,
                reason::CONNECT_FAILED,
                &format!("connect to {endpoint}: {e}"),
            );
        }
        Err(_) => {
            warn!("remote forward: connecting to {endpoint} timed out");
            handle.reject(id, reason::CONNECT_FAILED, "connect timed out");
        }
    }
}

/// `-R port` alone: the server's side speaks SOCKS/HTTP proxy to us over the channel, and
/// each request is dialed from this machine (OpenSSH's remote dynamic forward).
async fn serve_dynamic(handle: Handle, id: ChannelId) {
    let channel = handle.accept(id);
    let config = crate::proxy::ProxyConfig::default();
    crate::proxy::serve_client(channel, None, &LocalDialer, &config).await;
}

/// Dials destinations from this machine: the "tunnel" for a remote dynamic forward.
struct LocalDialer;

impl super::Opener for LocalDialer {
    type Stream = Local;

    async fn open(
        &self,
        target: &Endpoint,
        _originator: Option<std::net::SocketAddr>,
    ) -> Result<Local, super::OpenError> {
        dial(target)
            .await
            .map_err(|e| super::OpenError::Refused(format!("connect to {target} failed: {e}")))
    }
}

/// A local stream to `endpoint`, TCP (with TCP_NODELAY) or unix.
pub async fn dial(endpoint: &Endpoint) -> std::io::Result<Local> {
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let s = TcpStream::connect((host.as_str(), *port)).await?;
            let _ = s.set_nodelay(true);
            Ok(Local::Tcp(s))
        }
        Endpoint::Unix(path) => Ok(Local::Unix(UnixStream::connect(path).await?)),
    }
}

/// A dialed local stream of either kind.
pub enum Local {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl tokio::io::AsyncRead for Local {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Local::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Local::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// A socket: read by copying, as the relay does by default.
impl super::relay::ChunkRead for Local {}

impl tokio::io::AsyncWrite for Local {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Local::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Local::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Local::Tcp(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Local::Unix(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Local::Tcp(s) => s.is_write_vectored(),
            Local::Unix(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Local::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Local::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Local::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Local::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The granted forwards as the client's session and its event task share them.
pub type SharedRemoteForwards = Arc<RemoteForwards>;
