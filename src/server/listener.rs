//! The accept loop: admission limits before any SSH work (penalised and throttled sources,
//! random early drop, unauthenticated connection caps), one task per connection with a
//! login-grace timer that penalises sources holding slots without logging in, run on one
//! of the session threads ([`SessionThreads`]), and a graceful shutdown that disconnects
//! every session.

use super::audit::{AuditEvent, next_conn_id};
use super::connection::Connection;
use super::session_threads::{Seat, SessionThreads};
use super::state::Shared;
use super::throttle::{EarlyDrop, PendingGuard, RefusalLog};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};
use warren_ssh::driver::{self, Handle};
use warren_ssh::proto::Config;

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
    /// Every refusal at accept is one a flood can cause at will.
    refusals: Arc<RefusalLog>,
}

/// Serves `listeners` until `cancel`; then disconnects every session and returns once
/// they have ended (or after a short grace period).
pub async fn serve(
    listeners: Vec<TcpListener>,
    threads: SessionThreads,
    shared: Arc<Shared>,
    ssh_config: Arc<Config>,
    cancel: CancellationToken,
) {
    let threads = Arc::new(threads);
    let limits = shared.config().limits.clone();
    let unauth = Unauth {
        slots: Arc::new(Semaphore::new(limits.max_unauthenticated as usize)),
        full: limits.max_unauthenticated,
        refusals: Arc::new(RefusalLog::new(REFUSAL_LOG_EVERY)),
    };
    let sessions: Arc<Mutex<HashMap<u64, Handle>>> = Arc::default();
    let tracker = TaskTracker::new();
    let mut loops = Vec::new();
    for listener in listeners {
        let ctx = (
            shared.clone(),
            ssh_config.clone(),
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
        h.disconnect("warrend is shutting down");
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
    Arc<Config>,
    Unauth,
    Arc<Mutex<HashMap<u64, Handle>>>,
    TaskTracker,
    Arc<SessionThreads>,
);

/// An unauthenticated slot for a connection just accepted from `peer`, or why it must be
/// dropped before any SSH: a penalised or throttled source, the random early drop, or no
/// slot left.
fn admission(
    shared: &Shared,
    unauth: &Unauth,
    peer: SocketAddr,
    now: Instant,
) -> Result<OwnedSemaphorePermit, String> {
    if let Some(reason) = shared.throttle.refuse_penalised(peer.ip(), now) {
        return Err(reason);
    }
    if let Some(reason) = shared.throttle.refuse(peer.ip(), now) {
        return Err(reason);
    }
    let full = || "too many unauthenticated connections (max_unauthenticated)".to_string();
    let in_use = unauth
        .full
        .saturating_sub(unauth.slots.available_permits() as u32);
    if in_use >= unauth.full {
        return Err(full());
    }
    let config = shared.config();
    let early = EarlyDrop {
        start: config.limits.drop_start().min(unauth.full),
        rate: config.limits.unauthenticated_drop_rate,
        full: unauth.full,
    };
    if early.drop(in_use, &mut rand::rng()) {
        return Err(format!(
            "random early drop: {in_use} unauthenticated connections \
             (unauthenticated_drop_start {}, unauthenticated_drop_rate {}%, max_unauthenticated {})",
            early.start, early.rate, early.full
        ));
    }
    // Another listener may have taken the last slot since.
    unauth.slots.clone().try_acquire_owned().map_err(|_| full())
}

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
        let permit = match admission(&shared, &unauth, peer, now) {
            Ok(permit) => permit,
            Err(reason) => {
                if let Some((since, total)) = unauth.refusals.note(now) {
                    info!(%peer, "refused: {reason} ({since} refusal(s) at accept since the last such line, {total} in all)");
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
        let span = info_span!("conn", id, %peer);
        let (thread, seat) = threads.pick();
        let task = run_one(
            stream,
            (id, peer, permit, pending, seat),
            shared.clone(),
            config.clone(),
            sessions.clone(),
        );
        tracker.spawn_on(task.instrument(span), thread);
    }
}

/// What an admitted connection holds before its SSH session starts.
type Admitted = (u64, SocketAddr, OwnedSemaphorePermit, PendingGuard, Seat);

async fn run_one(
    stream: std::net::TcpStream,
    (id, peer, permit, pending, _seat): Admitted,
    shared: Arc<Shared>,
    config: Arc<Config>,
    sessions: Arc<Mutex<HashMap<u64, Handle>>>,
) {
    shared
        .audit
        .record(
            id,
            AuditEvent::SessionStart {
                source: peer.to_string(),
            },
        )
        .await;
    let stream = match TcpStream::from_std(stream).and_then(|s| {
        s.set_nodelay(true)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            debug!("cannot set up the connection: {e}");
            return;
        }
    };
    let (handle, incoming, run) = driver::start(stream, config);
    let conn = Connection::new(id, peer, handle.clone(), shared.clone(), permit, pending);
    let authenticated = conn.authenticated.clone();
    if let Ok(mut s) = sessions.lock() {
        s.insert(id, handle.clone());
    }
    let grace = shared.config().limits.login_grace_time.0;
    let grace_over = AtomicBool::new(false);
    // The engine's task, under LoginGraceTime: a connection not logged in by then (silent,
    // stalled after its banner, or slow to authenticate) is told so and cut. Dropping the
    // engine's future closes the socket, so a client that does not read the goodbye
    // cannot hold its slot either.
    let drive = async {
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            () = grace_expires(grace, &authenticated) => {
                info!("login grace time ({grace:?}) over");
                grace_over.store(true, Ordering::SeqCst);
                // Before the connection ends (and its end is audited).
                penalise(&shared, peer, id, Offence::GraceExceeded).await;
                handle.disconnect("login grace time over");
                match tokio::time::timeout(GOODBYE_TIME, &mut run).await {
                    Ok(r) => r,
                    Err(_) => Err("login grace time over".into()),
                }
            }
        }
    };
    // The connection's handler answers what the client asks until the engine ends; it
    // is dropped (its Drop records the session's end and frees what it held) once the
    // socket is closed, whichever finishes first.
    let mut serve = Box::pin(conn.serve(incoming));
    tokio::select! {
        r = drive => {
            if let Err(e) = r {
                debug!("session ended: {e}");
            }
        }
        () = &mut serve => {}
    }
    drop(serve);
    // A client that closed (or spoke no SSH) before key exchange was through, rather than
    // one that merely failed to log in (ssh-keyscan, a wrong key).
    let kex_done = handle.session_id().is_some();
    if !authenticated.load(Ordering::SeqCst) && !kex_done && !grace_over.load(Ordering::SeqCst) {
        penalise(&shared, peer, id, Offence::NoAuth).await;
    }
    if let Ok(mut s) = sessions.lock() {
        s.remove(&id);
    }
}

/// How long a connection cut at the grace time gets for its goodbye to go out.
const GOODBYE_TIME: Duration = Duration::from_millis(500);

/// Completes when `grace` is over and the connection has still not logged in; never
/// after a login.
async fn grace_expires(grace: Duration, authenticated: &AtomicBool) {
    tokio::time::sleep(grace).await;
    if authenticated.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}

/// Ways a source holds an unauthenticated slot without trying to log in.
#[derive(Debug, Clone, Copy)]
enum Offence {
    /// Reached the login grace time unauthenticated.
    GraceExceeded,
    /// Closed (or spoke no SSH) before key exchange was through.
    NoAuth,
}

/// Penalises `peer`'s netblock for `offence` of connection `id`, unless that penalty is
/// off or the source is exempt. Audited, so an operator can tell why a source is refused
/// later on.
async fn penalise(shared: &Shared, peer: SocketAddr, id: u64, offence: Offence) {
    let config = shared.config();
    let l = &config.limits;
    let (base, what) = match offence {
        Offence::GraceExceeded => (
            l.penalty_grace_exceeded,
            "reached the login grace time unauthenticated",
        ),
        Offence::NoAuth => (l.penalty_noauth, "closed before key exchange was through"),
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
    let reason = format!("penalty {length:?} for {block}: a connection {what}");
    debug!("{reason}");
    shared
        .audit
        .record(
            id,
            AuditEvent::Throttled {
                source: peer.to_string(),
                reason,
            },
        )
        .await;
}
