//! `GET /metrics` over plain HTTP/1.x, for Prometheus' scraper: one request per
//! connection, read with a size and time cap, answered, closed. Anything but GET or
//! HEAD of `/metrics` gets 404 or 405; a client that sends nothing or garbage holds a
//! task for at most [`IO_TIMEOUT`], and only [`MAX_CLIENTS`] at once.

use super::Snapshot;
use crate::server::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest request head read.
const MAX_REQUEST: usize = 8192;
/// Time a scraper has to send its request and take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more are closed at once.
const MAX_CLIENTS: usize = 8;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` for the endpoint (a failure stops warrend at start, naming the address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves scrapes until `cancel`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(IO_TIMEOUT, one(stream, &shared))
                .await
                .is_err()
            {
                debug!("metrics: a client took longer than {IO_TIMEOUT:?}");
            }
        });
    }
}

/// What the scrape reads from the running server.
pub fn snapshot(shared: &Shared) -> Snapshot {
    let usage = shared.usage();
    let (audit_failures, audit_dropped) = shared.audit.failures();
    Snapshot {
        sessions: shared.live.len() as u64,
        listeners: usage.listeners.used,
        names: shared.registry.list().len() as u64,
        audit_queue_depth: shared.audit.queue_depth(),
        audit_failures,
        audit_dropped,
        bytes: shared.traffic.totals(),
    }
}

async fn one(mut stream: TcpStream, shared: &Shared) {
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        let mut chunk = [0u8; 1024];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                let openmetrics = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("accept")
                        && String::from_utf8_lossy(h.value).contains("application/openmetrics-text")
                });
                break Some((method, path, openmetrics));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => continue,
            Ok(httparse::Status::Partial) => break None,
            Err(_) => break None,
        }
    };
    let response = match head {
        None => plain("400 Bad Request", "bad request\n"),
        Some((method, path, openmetrics)) => {
            let path = path.split('?').next().unwrap_or("");
            match (method.as_str(), path) {
                ("GET" | "HEAD", "/metrics") => {
                    let body = shared
                        .audit
                        .metrics()
                        .render(&snapshot(shared), openmetrics);
                    let kind = if openmetrics {
                        OPENMETRICS
                    } else {
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
                    };
                    let mut out = head_of("200 OK", kind, body.len());
                    if method == "GET" {
                        out.extend_from_slice(body.as_bytes());
                    }
                    out
                }
                (_, "/metrics") => plain("405 Method Not Allowed", "only GET\n"),
                _ => plain("404 Not Found", "not found; try /metrics\n"),
            }
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn head_of(status: &str, content_type: &str, len: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn plain(status: &str, body: &str) -> Vec<u8> {
    let mut out = head_of(status, "text/plain; charset=utf-8", body.len());
    out.extend_from_slice(body.as_bytes());
    out
}
