//! The accept loop: admission limits before any SSH work (penalised and throttled sources,
//! random early drop, unauthenticated connection caps), one task per connection with a
//! login-grace timer that penalises sources holding slots without logging in, run on one
//! of the session threads ([`SessionThreads`]), and a graceful shutdown that disconnects
//! every session.

use super::audit::{AuditEvent, next_conn_id};
use super::connection::Connection;
use super::session_threads::{Seat, SessionThreads};
use super::state::Shared;
use super::throttle::{EarlyDrop, RefusalLog};
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

/// At most one log line per this long for refusals a flood can trigger at will.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The server-wide unauthenticated slots, and how many there are (the semaphore is sized
/// once, at start).
#[derive(Clone)]
struct Unauth {
    slots: Arc<Semaphore>,
    full: u32,
    early_drops: Arc<RefusalLog>,
    penalised: Arc<RefusalLog>,
}

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
    let unauth = Unauth {
        slots: Arc::new(Semaphore::new(limits.max_unauthenticated as usize)),
        full: limits.max_unauthenticated,
        early_drops: Arc::new(RefusalLog::new(REFUSAL_LOG_EVERY)),
        penalised: Arc::new(RefusalLog::new(REFUSAL_LOG_EVERY)),
    };
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
    Unauth,
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
        let now = Instant::now();
        if let Some(reason) = shared.throttle.refuse_penalised(peer.ip(), now) {
            if let Some((since, total)) = unauth.penalised.note(now) {
                info!(%peer, "refused: {reason} ({since} such refusal(s) since the last line, {total} in all)");
            }
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
        if let Some(reason) = shared.throttle.refuse(peer.ip(), now) {
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
        let in_use = unauth
            .full
            .saturating_sub(unauth.slots.available_permits() as u32);
        let early = {
            let config = shared.config();
            EarlyDrop {
                start: config.limits.drop_start().min(unauth.full),
                rate: config.limits.unauthenticated_drop_rate,
                full: unauth.full,
            }
        };
        if in_use < unauth.full && early.drop(in_use, &mut rand::rng()) {
            let reason = format!(
                "random early drop: {in_use} unauthenticated connections \
                 (unauthenticated_drop_start {}, unauthenticated_drop_rate {}%, max_unauthenticated {})",
                early.start, early.rate, early.full
            );
            if let Some((since, total)) = unauth.early_drops.note(now) {
                info!(%peer, "refused: {reason} ({since} such refusal(s) since the last line, {total} in all)");
            }
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
        let Ok(permit) = unauth.slots.clone().try_acquire_owned() else {
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
    let handshake = server::run_stream(config, crate::transport::buffered(stream), conn);
    tokio::pin!(handshake);
    let session = tokio::select! {
        r = &mut handshake => match r {
            Ok(s) => s,
            Err(e) => {
                debug!("handshake failed: {e}");
                penalise(&shared, peer, Offence::NoAuth);
                return;
            }
        },
        () = tokio::time::sleep(grace) => {
            debug!("no SSH handshake within the login grace time");
            // Before the connection ends (and its end is audited).
            penalise(&shared, peer, Offence::GraceExceeded);
            return;
        }
    };
    let handle = session.handle();
    if let Ok(mut s) = sessions.lock() {
        s.insert(id, handle.clone());
    }
    // LoginGraceTime: russh has none of its own.
    let timer_shared = shared.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if !authenticated.load(Ordering::SeqCst) {
            info!("login grace time ({grace:?}) over");
            penalise(&timer_shared, peer, Offence::GraceExceeded);
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

/// Ways a source holds an unauthenticated slot without trying to log in.
#[derive(Debug, Clone, Copy)]
enum Offence {
    /// Reached the login grace time unauthenticated.
    GraceExceeded,
    /// Closed (or spoke no SSH) before the handshake was through.
    NoAuth,
}

/// Penalises `peer`'s netblock for `offence`, unless that penalty is off or the source
/// is exempt.
fn penalise(shared: &Shared, peer: SocketAddr, offence: Offence) {
    let config = shared.config();
    let l = &config.limits;
    let (base, what) = match offence {
        Offence::GraceExceeded => (
            l.penalty_grace_exceeded,
            "reached the login grace time unauthenticated",
        ),
        Offence::NoAuth => (
            l.penalty_noauth,
            "closed before its SSH handshake was through",
        ),
    };
    let Some(base) = base.non_zero() else {
        return;
    };
    let ip = peer.ip().to_canonical();
    if l.penalty_exempt
        .iter()
        .filter_map(|n| super::address::parse_net(n).ok())
        .any(|n| n.contains(&ip))
    {
        return;
    }
    let (length, block) =
        shared
            .throttle
            .penalise(peer.ip(), base, l.penalty_max.0, Instant::now());
    debug!("{block} penalised for {length:?}: a connection {what}");
}
