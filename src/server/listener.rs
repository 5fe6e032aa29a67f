//! The accept loop: admission limits before any SSH work (throttled sources, unauthenticated
//! connection caps), one task per connection with a login-grace timer, run on one of the
//! session threads ([`SessionThreads`]), and a graceful shutdown that disconnects every
//! session.

use super::audit::{AuditEvent, next_conn_id};
use super::connection::Connection;
use super::session_threads::{Seat, SessionThreads};
use super::state::Shared;
use russh::server::{self, Handle};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// How long shutdown waits for sessions to say goodbye before exiting anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `listeners` until `cancel`; then disconnects every session and returns once
/// they have ended (or after a short grace period).
pub async fn serve(
    listeners: Vec<TcpListener>,
    threads: SessionThreads,
    shared: Arc<Shared>,
    russh_config: Arc<server::Config>,
    cancel: CancellationToken,
) {
    let threads = Arc::new(threads);
    let limits = shared.config().limits.clone();
    let unauth = Arc::new(Semaphore::new(limits.max_unauthenticated as usize));
    let sessions: Arc<Mutex<HashMap<u64, Handle>>> = Arc::default();
    let tracker = TaskTracker::new();
    let mut loops = Vec::new();
    for listener in listeners {
        let ctx = (
            shared.clone(),
            russh_config.clone(),
            unauth.clone(),
            sessions.clone(),
            tracker.clone(),
            threads.clone(),
        );
        loops.push(tokio::spawn(accept_loop(listener, ctx)));
    }
    cancel.cancelled().await;
    for l in loops {
        l.abort();
    }
    let handles: Vec<Handle> = sessions
        .lock()
        .map(|s| s.values().cloned().collect())
        .unwrap_or_default();
    info!("shutting down: disconnecting {} session(s)", handles.len());
    for h in handles {
        let _ = h
            .disconnect(
                russh::Disconnect::ByApplication,
                "warrend is shutting down".into(),
                "en".into(),
            )
            .await;
    }
    tracker.close();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        warn!("some sessions did not end within {SHUTDOWN_GRACE:?}");
    }
    // Their forwarded connections end with them; let them write their channel_close.
    shared.channels.close();
    let _ = tokio::time::timeout_at(deadline, shared.channels.wait()).await;
}

type LoopCtx = (
    Arc<Shared>,
    Arc<server::Config>,
    Arc<Semaphore>,
    Arc<Mutex<HashMap<u64, Handle>>>,
    TaskTracker,
    Arc<SessionThreads>,
);

async fn accept_loop(listener: TcpListener, ctx: LoopCtx) {
    let (shared, config, unauth, sessions, tracker, threads) = ctx;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends pass; the server must not die of them.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(reason) = shared.throttle.refuse(peer.ip(), Instant::now()) {
            info!(%peer, "refused: {reason}");
            shared
                .audit
                .record(
                    0,
                    AuditEvent::Throttled {
                        source: peer.to_string(),
                        reason,
                    },
                )
                .await;
            continue;
        }
        let Ok(permit) = unauth.clone().try_acquire_owned() else {
            let reason = "too many unauthenticated connections (max_unauthenticated)".to_string();
            info!(%peer, "refused: {reason}");
            shared
                .audit
                .record(
                    0,
                    AuditEvent::Throttled {
                        source: peer.to_string(),
                        reason,
                    },
                )
                .await;
            continue;
        };
        // Off this runtime's reactor: the session thread registers it with its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, "cannot hand the connection over: {e}");
                continue;
            }
        };
        let id = next_conn_id();
        let pending = shared.throttle.pending(peer.ip());
        let conn = Connection::new(id, peer, shared.clone(), permit, pending);
        let span = info_span!("conn", id, %peer);
        let (thread, seat) = threads.pick();
        let task = run_one(
            stream,
            peer,
            (conn, seat),
            shared.clone(),
            config.clone(),
            sessions.clone(),
        );
        tracker.spawn_on(task.instrument(span), thread);
    }
}

async fn run_one(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    (conn, _seat): (Connection, Seat),
    shared: Arc<Shared>,
    config: Arc<server::Config>,
    sessions: Arc<Mutex<HashMap<u64, Handle>>>,
) {
    let id = conn.id;
    let authenticated = conn.authenticated.clone();
    shared
        .audit
        .record(
            id,
            AuditEvent::SessionStart {
                source: peer.to_string(),
            },
        )
        .await;
    // A second handle on the socket, to cut it when the grace time is over: russh only
    // reads a Disconnect from its handle once key exchange is done, and after one it
    // waits for the client to close its side (forever, with no inactivity timeout).
    let (stream, cutter) = match stream.try_clone().and_then(|cutter| {
        let stream = TcpStream::from_std(stream)?;
        stream.set_nodelay(true)?;
        Ok((stream, cutter))
    }) {
        Ok(pair) => pair,
        Err(e) => {
            debug!("cannot set up the connection: {e}");
            return;
        }
    };
    let grace = shared.config().limits.login_grace_time.0;
    let session = match tokio::time::timeout(
        grace,
        server::run_stream(config, crate::transport::buffered(stream), conn),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!("handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!("no SSH handshake within the login grace time");
            return;
        }
    };
    let handle = session.handle();
    if let Ok(mut s) = sessions.lock() {
        s.insert(id, handle.clone());
    }
    // LoginGraceTime: russh has none of its own.
    let timer = tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if !authenticated.load(Ordering::SeqCst) {
            info!("login grace time ({grace:?}) over");
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "login grace time over".into(),
                    "en".into(),
                )
                .await;
            // Time for the goodbye to go out, then the socket is cut (this task is
            // aborted if the session ends first).
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = cutter.shutdown(std::net::Shutdown::Both);
        }
    });
    // Shutdown reaches the session as a disconnect through its handle, which lets the
    // client hear why instead of seeing the socket drop.
    if let Err(e) = session.await {
        debug!("session ended: {e}");
    }
    timer.abort();
    if let Ok(mut s) = sessions.lock() {
        s.remove(&id);
    }
}
