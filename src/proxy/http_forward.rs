//! Serving one HTTP proxy client: `CONNECT` becomes a raw tunnel; absolute-form requests
//! are forwarded one at a time, each through a fresh tunnel to the host it names, so a
//! kept-alive client connection can move between hosts safely.

use super::buffered::Buffered;
use super::http::{self, ReadError, Request, RequestTarget};
use super::http_body::{CopyError, Framing, copy_body};
use super::http_rewrite::{origin_head, parse_response, wants_upgrade};
use super::{Failure, ProxyConfig, open};
use crate::config::forward::Endpoint;
use crate::forward::relay::relay;
use crate::forward::{OpenError, Opener};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Response heads come from servers we chose to talk to; allow more than for requests
/// (big cookies), but still a bound.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// After an error response we read (and drop) what the client still sends for a moment,
/// so closing with unread data does not reset the connection before it reads the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 256 * 1024;

/// Handles an HTTP client whose first request head is due by `deadline`.
pub(crate) async fn serve<S, O>(
    conn: Buffered<S>,
    peer: Option<SocketAddr>,
    who: &str,
    opener: &O,
    cfg: &ProxyConfig,
    mut deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    O: Opener,
{
    let (stream, early) = conn.into_parts();
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = Buffered::with_buffer(r, early);
    loop {
        let read = tokio::time::timeout_at(
            deadline,
            http::read_request(&mut reader, cfg.max_request_head),
        );
        let req = match read.await {
            Ok(Ok(Some(req))) => req,
            Ok(Ok(None)) => break,
            Ok(Err(ReadError::Io(e))) => {
                debug!("proxy client {who}: {e}");
                break;
            }
            Ok(Err(ReadError::Refused(r))) => {
                debug!("proxy client {who}: {} {}", r.status, r.message);
                let _ = w
                    .write_all(&http::response(r.status, &r.message, false))
                    .await;
                break;
            }
            Err(_) => {
                debug!(
                    "proxy client {who}: no complete request head within {:?}",
                    cfg.handshake_timeout
                );
                let msg = "the request head did not arrive in time";
                let _ = w.write_all(&http::response(408, msg, false)).await;
                break;
            }
        };
        if !exchange(&mut reader, &mut w, req, peer, who, opener, cfg).await {
            break;
        }
        // A kept-alive connection may idle; the head clock starts with its next byte.
        if reader.buffered().is_empty() {
            let next = tokio::time::timeout(cfg.idle_timeout, reader.fill(cfg.max_request_head));
            if !matches!(next.await, Ok(Ok(n)) if n > 0) {
                break;
            }
        }
        deadline = Instant::now() + cfg.handshake_timeout;
    }
    let _ = w.shutdown().await;
    let drain = async {
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut (&mut reader).take(LINGER_BYTES), &mut sink).await
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// One request and its response; `true` if the client connection can carry another.
async fn exchange<R, W, O>(
    reader: &mut Buffered<R>,
    w: &mut W,
    req: Request,
    peer: Option<SocketAddr>,
    who: &str,
    opener: &O,
    cfg: &ProxyConfig,
) -> bool
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    O: Opener,
{
    // An unread body would be taken for the next request, so only answer-and-continue
    // when there is none.
    let can_continue = req.keep_alive() && req.framing == Framing::Empty;
    if let Some(creds) = &cfg.auth
        && !req.authorized(creds)
    {
        // Browsers ask without credentials first and expect this challenge.
        if req.header("proxy-authorization").next().is_some() {
            warn!("proxy client {who} failed authentication");
        } else {
            debug!("proxy client {who}: asking for credentials");
        }
        let msg = "proxy authentication required";
        return answer(w, 407, msg, can_continue).await;
    }
    let endpoint = match &req.target {
        RequestTarget::Connect(e) | RequestTarget::Absolute { endpoint: e, .. } => e,
    };
    let tunnel = match open(opener, endpoint, peer, who, cfg).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("warren: cannot reach {endpoint}: {e}");
            return answer(w, failure_status(&e), &msg, can_continue).await;
        }
    };
    match &req.target {
        RequestTarget::Connect(_) => {
            let mut tunnel = tunnel;
            let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
            if w.write_all(ok).await.is_err() || w.flush().await.is_err() {
                return false;
            }
            let mut client = tokio::io::join(&mut *reader, &mut *w);
            match relay(&mut client, &mut tunnel).await {
                Ok((up, down)) => debug!(up, down, "{who} -> {endpoint}: closed"),
                Err(e) => debug!("{who} -> {endpoint}: ended: {e}"),
            }
            false
        }
        RequestTarget::Absolute {
            authority, path, ..
        } => {
            debug!("{who} -> {endpoint}: {}", req.method);
            forward(reader, w, &req, tunnel, endpoint, authority, path, who).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward<R, W, T>(
    reader: &mut Buffered<R>,
    w: &mut W,
    req: &Request,
    tunnel: T,
    endpoint: &Endpoint,
    authority: &str,
    path: &str,
    who: &str,
) -> bool
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let upgrade = wants_upgrade(req);
    let (tr, mut tw) = tokio::io::split(tunnel);
    let mut tr = Buffered::new(tr);
    // Flushed on its own: with `Expect: 100-continue` the body waits for the server's
    // answer to this head.
    let head = origin_head(req, authority, path, upgrade);
    let sent = match tw.write_all(&head).await {
        Ok(()) => tw.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        let msg = format!("warren: sending the request to {endpoint} failed: {e}");
        return answer(w, 502, &msg, false).await;
    }
    // Upload and download run together: a server may answer before reading the body
    // (errors, `Expect: 100-continue`), and a client may wait for that answer.
    let (down, body_sent) = {
        let upload = copy_body(&mut *reader, &mut tw, req.framing);
        let download = respond(&mut tr, &mut *w, req, upgrade);
        tokio::pin!(upload, download);
        let mut uploaded = None;
        loop {
            tokio::select! {
                up = &mut upload, if uploaded.is_none() => {
                    if let Err(CopyError::Read(e)) = &up {
                        debug!("proxy client {who}: request body to {endpoint}: {e}");
                        return false;
                    }
                    uploaded = Some(up.is_ok());
                }
                down = &mut download => break (down, uploaded == Some(true)),
            }
        }
    };
    match down {
        Ok(Answered::Done { reusable }) => reusable && body_sent,
        Ok(Answered::Upgraded) => {
            let mut client = tokio::io::join(&mut *reader, &mut *w);
            let mut server = tokio::io::join(&mut tr, &mut tw);
            if let Err(e) = relay(&mut client, &mut server).await {
                debug!("{who} -> {endpoint}: upgraded connection ended: {e}");
            }
            false
        }
        Err(Broke::BeforeHead(e)) => {
            warn!("proxy client {who}: {endpoint} sent no usable response: {e}");
            let msg = format!("warren: {endpoint} sent no usable response: {e}");
            answer(w, 502, &msg, false).await
        }
        Err(Broke::AfterHead(e)) => {
            debug!("proxy client {who}: response from {endpoint} cut short: {e}");
            false
        }
    }
}

enum Answered {
    /// `reusable`: the response was delimited and the client did not ask to close.
    Done { reusable: bool },
    /// 101: the connection now speaks another protocol end to end.
    Upgraded,
}

/// Whether the client already saw part of the response decides whether it can get an
/// error response instead.
enum Broke {
    BeforeHead(String),
    AfterHead(String),
}

/// Streams the response (after any 1xx interim ones) to the client.
async fn respond<T, W>(
    tr: &mut Buffered<T>,
    w: &mut W,
    req: &Request,
    upgrade: bool,
) -> Result<Answered, Broke>
where
    T: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let after = |e: std::io::Error| Broke::AfterHead(e.to_string());
    loop {
        let head = match http::read_head(tr, MAX_RESPONSE_HEAD).await {
            Ok(Some(h)) => h,
            Ok(None) => return Err(Broke::BeforeHead("it closed the connection".into())),
            Err(ReadError::Io(e)) => return Err(Broke::BeforeHead(e.to_string())),
            Err(ReadError::Refused(r)) => return Err(Broke::BeforeHead(r.message)),
        };
        let head = parse_response(&head).map_err(Broke::BeforeHead)?;
        if head.status == 101 {
            if !upgrade {
                return Err(Broke::BeforeHead("101 without an upgrade request".into()));
            }
            w.write_all(&head.emit("Connection: upgrade", true))
                .await
                .map_err(after)?;
            w.flush().await.map_err(after)?;
            return Ok(Answered::Upgraded);
        }
        if (100..200).contains(&head.status) {
            // HTTP/1.0 clients do not expect interim responses.
            if req.version == 1 {
                w.write_all(&head.emit("", false)).await.map_err(after)?;
                w.flush().await.map_err(after)?;
            }
            continue;
        }
        let framing = Framing::of_response(head.status, &req.method, &head.headers)
            .map_err(Broke::BeforeHead)?;
        let reusable = req.keep_alive() && framing != Framing::UntilClose;
        let connection = if reusable { "" } else { "Connection: close" };
        w.write_all(&head.emit(connection, false))
            .await
            .map_err(after)?;
        copy_body(tr, w, framing)
            .await
            .map_err(|e| Broke::AfterHead(e.to_string()))?;
        return Ok(Answered::Done { reusable });
    }
}

fn failure_status(e: &OpenError) -> u16 {
    match Failure::of(e) {
        Failure::Prohibited => 403,
        Failure::TimedOut => 504,
        Failure::Refused | Failure::Unreachable | Failure::Broken => 502,
    }
}

/// Sends the proxy's own response; `true` if the connection goes on.
async fn answer<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    msg: &str,
    keep_alive: bool,
) -> bool {
    let sent = w.write_all(&http::response(status, msg, keep_alive)).await;
    sent.is_ok() && w.flush().await.is_ok() && keep_alive
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
