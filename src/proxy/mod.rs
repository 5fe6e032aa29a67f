//! The `-D` proxy protocols: SOCKS4, SOCKS4a, SOCKS5 and HTTP on one port, told apart by
//! the client's first byte, each turned into tunnel opens through an [`Opener`].
//!
//! Everything here works on any `AsyncRead + AsyncWrite` stream so the protocols can be
//! tested over in-memory pipes; [`crate::forward::dynamic`] supplies the sockets.

mod buffered;
mod http;
mod http_body;
mod http_forward;
mod http_rewrite;
mod socks4;
mod socks5;

use crate::config::forward::Endpoint;
use crate::forward::relay::relay;
use crate::forward::{OpenError, Opener};
use buffered::Buffered;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, warn};

/// The username and password a client must present (SOCKS5 RFC 1929 or HTTP Basic).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    pub username: String,
    pub password: String,
}

impl ProxyCredentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        ProxyCredentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Compares without stopping at the first differing byte, so response timing says
    /// nothing about how much of a guess was right.
    fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        let user_ok = same_bytes(self.username.as_bytes(), username);
        let pass_ok = same_bytes(self.password.as_bytes(), password);
        user_ok & pass_ok
    }
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && a.len() == b.len()
}

/// Never prints the password, so credentials cannot leak through `{:?}` in a log line.
impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Limits and credentials for one proxy port. The limits exist because the port faces
/// untrusted clients: every wait has an end and every buffer a size.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `None`: any client that can connect may use the proxy.
    pub auth: Option<ProxyCredentials>,
    /// The whole SOCKS negotiation, or one HTTP request head, must arrive within this.
    pub handshake_timeout: Duration,
    /// How long a kept-alive HTTP connection may sit between requests.
    pub idle_timeout: Duration,
    /// How long opening one tunnel may take (sshd answers only after its own connect).
    pub open_timeout: Duration,
    /// Largest HTTP request head accepted.
    pub max_request_head: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            auth: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            open_timeout: Duration::from_secs(60),
            max_request_head: 16 * 1024,
        }
    }
}

/// How a failed open is reported, in terms every protocol has a code for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server's policy forbids the destination.
    Prohibited,
    /// The destination refused the connection (or sshd could not say why it failed).
    Refused,
    /// The destination could not be reached.
    Unreachable,
    /// No answer in time.
    TimedOut,
    /// The SSH session itself is broken.
    Broken,
}

impl Failure {
    /// sshd reports every failed connect as one code; the reason text is all there is to go
    /// on, and our own opener words it (see `client::session`).
    pub(crate) fn of(e: &OpenError) -> Failure {
        match e {
            OpenError::Refused(text) => {
                let text = text.to_ascii_lowercase();
                if text.contains("prohibited") {
                    Failure::Prohibited
                } else if text.contains("unreachable") && !text.contains("refused") {
                    Failure::Unreachable
                } else {
                    Failure::Refused
                }
            }
            OpenError::Timeout(_) => Failure::TimedOut,
            OpenError::Session(_) => Failure::Broken,
        }
    }
}

/// Why a client got no tunnel; for the log line only, the client was already answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a SOCKS or HTTP proxy request (first byte {0:#04x})")]
    Unknown(u8),
    #[error("{0}")]
    Rejected(String),
    #[error("wrong or missing proxy credentials")]
    AuthFailed,
    #[error("no complete request within {0:?}")]
    TimedOut(Duration),
}

/// Handles one client connection from its first byte to its close: negotiation, the tunnel
/// open, the reply, then the relay (or, for plain HTTP, one forwarded request after another).
pub async fn serve_client<S, O>(stream: S, peer: Option<SocketAddr>, opener: &O, cfg: &ProxyConfig)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    O: Opener,
{
    let who = peer.map_or_else(|| "a local client".to_string(), |p| p.to_string());
    let mut conn = Buffered::new(stream);
    let deadline = Instant::now() + cfg.handshake_timeout;
    let timed_out = HandshakeError::TimedOut(cfg.handshake_timeout);
    let first = match tokio::time::timeout_at(deadline, conn.need(1)).await {
        Ok(Ok(b)) => b.first().copied().unwrap_or(0),
        Ok(Err(e)) => return debug!("{who} left before sending anything: {e}"),
        Err(_) => return debug!("{who}: {timed_out}"),
    };
    if first.is_ascii_alphabetic() {
        return http_forward::serve(conn, peer, &who, opener, cfg, deadline).await;
    }
    let negotiated = tokio::time::timeout_at(deadline, async {
        match first {
            4 => socks4::handshake(&mut conn, cfg).await,
            5 => socks5::handshake(&mut conn, cfg).await,
            b => Err(HandshakeError::Unknown(b)),
        }
    })
    .await
    .unwrap_or(Err(timed_out));
    let target = match negotiated {
        Ok(t) => t,
        Err(HandshakeError::AuthFailed) => {
            return warn!("proxy client {who} failed authentication; closed");
        }
        Err(e) => return debug!("proxy client {who}: {e}; closed"),
    };
    let reply = |f: Option<Failure>| match first {
        4 => socks4::reply(f).to_vec(),
        _ => socks5::reply(f).to_vec(),
    };
    let mut tunnel = match open(opener, &target, peer, &who, cfg).await {
        Ok(t) => t,
        Err(e) => {
            let _ = conn.write_all(&reply(Some(Failure::of(&e)))).await;
            let _ = conn.shutdown().await;
            return;
        }
    };
    if conn.write_all(&reply(None)).await.is_err() || conn.flush().await.is_err() {
        return;
    }
    match relay(&mut conn, &mut tunnel).await {
        Ok((up, down)) => debug!(up, down, "{who} -> {target}: closed"),
        Err(e) => debug!("{who} -> {target}: ended: {e}"),
    }
}

/// Opens `target` with the configured time limit and logs the outcome.
pub(crate) async fn open<O: Opener>(
    opener: &O,
    target: &Endpoint,
    peer: Option<SocketAddr>,
    who: &str,
    cfg: &ProxyConfig,
) -> Result<O::Stream, OpenError> {
    debug!("proxy client {who} asks for {target}");
    let result = match tokio::time::timeout(cfg.open_timeout, opener.open(target, peer)).await {
        Ok(r) => r,
        Err(_) => Err(OpenError::Timeout(cfg.open_timeout)),
    };
    if let Err(e) = &result {
        warn!("proxy client {who}: cannot open {target}: {e}");
    }
    result
}

/// Checks a host name from the wire before it goes into a channel-open request: sshd would
/// fail it anyway, but a clear refusal beats a confusing one and keeps junk out of logs.
pub(crate) fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'@' | b'\\'))
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
