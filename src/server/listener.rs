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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// Every refusal at accept is one a flood can cause at will.
    refusals: Arc<RefusalLog>,
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
        refusals: Arc::new(RefusalLog::new(REFUSAL_LOG_EVERY)),
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
    let kex_done = Arc::new(AtomicBool::new(false));
    let stream = KexWatch {
        inner: stream,
        scan: Some(KexScan::default()),
        done: kex_done.clone(),
    };
    let grace = shared.config().limits.login_grace_time.0;
    let handshake = server::run_stream(config, crate::transport::buffered(stream), conn);
    tokio::pin!(handshake);
    let session = tokio::select! {
        r = &mut handshake => match r {
            Ok(s) => s,
            Err(e) => {
                debug!("handshake failed: {e}");
                penalise(&shared, peer, id, Offence::NoAuth).await;
                return;
            }
        },
        () = tokio::time::sleep(grace) => {
            debug!("no SSH handshake within the login grace time");
            // Before the connection ends (and its end is audited).
            penalise(&shared, peer, id, Offence::GraceExceeded).await;
            return;
        }
    };
    let handle = session.handle();
    if let Ok(mut s) = sessions.lock() {
        s.insert(id, handle.clone());
    }
    // LoginGraceTime: russh has none of its own.
    let timer_shared = shared.clone();
    let timer_authenticated = authenticated.clone();
    let grace_over = Arc::new(AtomicBool::new(false));
    let timer_grace_over = grace_over.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if !timer_authenticated.load(Ordering::SeqCst) {
            info!("login grace time ({grace:?}) over");
            timer_grace_over.store(true, Ordering::SeqCst);
            penalise(&timer_shared, peer, id, Offence::GraceExceeded).await;
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
    if !authenticated.load(Ordering::SeqCst)
        && !kex_done.load(Ordering::SeqCst)
        && !grace_over.load(Ordering::SeqCst)
    {
        penalise(&shared, peer, id, Offence::NoAuth).await;
    }
    if let Ok(mut s) = sessions.lock() {
        s.remove(&id);
    }
}

/// The client's side of a connection, watched until its first `SSH_MSG_NEWKEYS` (key
/// exchange done), to tell a client that gave up on SSH from one that merely did not log
/// in (`ssh-keyscan`, a wrong key). Until then packets are unencrypted, so their framing
/// can be read without touching russh.
struct KexWatch {
    inner: TcpStream,
    /// `None` once the verdict is in.
    scan: Option<KexScan>,
    done: Arc<AtomicBool>,
}

impl tokio::io::AsyncRead for KexWatch {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(scan) = self.scan.as_mut() {
            // Not SSH as expected (`Some(false)`): russh will end it, and it counts as
            // a connection that gave up before key exchange.
            if let Some(done) = scan.feed(&buf.filled()[before..]) {
                self.done.store(done, Ordering::SeqCst);
                self.scan = None;
            }
        }
        r
    }
}

impl tokio::io::AsyncWrite for KexWatch {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Longest identification line (RFC 4253 4.2: 255 bytes) and other lines before it that
/// the scanner reads through; russh refuses more long before.
const MAX_ID_SCAN: usize = 8 << 10;
/// Longest packet before key exchange is done (RFC 4253 6.1).
const MAX_PLAIN_PACKET: u32 = 35_000;
const SSH_MSG_NEWKEYS: u8 = 21;

/// Reads the client's stream up to its first `SSH_MSG_NEWKEYS`: the identification line,
/// then unencrypted binary packets (`uint32 length, byte padding, byte type, ...`).
#[derive(Debug, Default)]
struct KexScan {
    /// Bytes of the identification phase seen so far.
    id_len: usize,
    /// The current line so far (only its first bytes, to check for "SSH-").
    line: Vec<u8>,
    id_done: bool,
    /// The current packet's first 6 bytes (length, padding length, message type).
    header: Vec<u8>,
    /// Bytes of the current packet still to skip after its header.
    skip: u64,
}

impl KexScan {
    /// Feeds the next bytes from the client: `Some(true)` once its `NEWKEYS` went by,
    /// `Some(false)` if the stream is not SSH as expected, `None` while undecided.
    fn feed(&mut self, mut data: &[u8]) -> Option<bool> {
        while !self.id_done {
            let (&b, rest) = data.split_first()?;
            data = rest;
            self.id_len += 1;
            if self.id_len > MAX_ID_SCAN {
                return Some(false);
            }
            if self.line.len() < 4 {
                self.line.push(b);
            }
            if b == b'\n' {
                self.id_done = self.line.starts_with(b"SSH-");
                self.line.clear();
            }
        }
        loop {
            if self.skip > 0 {
                let n = (data.len() as u64).min(self.skip);
                self.skip -= n;
                data = &data[n as usize..];
                if self.skip > 0 {
                    return None;
                }
            }
            let want = 6 - self.header.len();
            let n = want.min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() < 6 {
                return None;
            }
            let len = u32::from_be_bytes([
                self.header[0],
                self.header[1],
                self.header[2],
                self.header[3],
            ]);
            if !(2..=MAX_PLAIN_PACKET).contains(&len) {
                return Some(false);
            }
            if self.header[5] == SSH_MSG_NEWKEYS {
                return Some(true);
            }
            self.skip = u64::from(len) - 2;
            self.header.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, payload_len: usize) -> Vec<u8> {
        let padding = 4;
        let len = (1 + 1 + payload_len + padding) as u32;
        let mut p = len.to_be_bytes().to_vec();
        p.push(padding as u8);
        p.push(kind);
        p.extend(std::iter::repeat_n(0xa5, payload_len + padding));
        p
    }

    #[test]
    fn kex_scan_sees_newkeys_however_the_bytes_are_split() {
        let mut stream = b"SSH-2.0-OpenSSH_9.2\r\n".to_vec();
        stream.extend(packet(20, 1500)); // KEXINIT
        stream.extend(packet(30, 40)); // KEX_ECDH_INIT
        stream.extend(packet(SSH_MSG_NEWKEYS, 0));
        stream.extend([0xff; 64]); // encrypted from here on
        for chunk in [1, 3, 7, 100, stream.len()] {
            let mut scan = KexScan::default();
            let mut verdict = None;
            for piece in stream.chunks(chunk) {
                if let Some(v) = scan.feed(piece) {
                    verdict = Some(v);
                    break;
                }
            }
            assert_eq!(verdict, Some(true), "chunks of {chunk}");
        }
        // Up to (not including) NEWKEYS: undecided.
        let mut scan = KexScan::default();
        let before = stream.len() - 64 - 6;
        assert_eq!(scan.feed(&stream[..before]), None);
    }

    #[test]
    fn kex_scan_gives_up_on_what_is_not_ssh() {
        let mut scan = KexScan::default();
        assert_eq!(scan.feed(&[b'x'; MAX_ID_SCAN + 1]), Some(false));
        let mut scan = KexScan::default();
        let mut stream = b"SSH-2.0-x\r\n".to_vec();
        stream.extend(u32::MAX.to_be_bytes());
        stream.extend([0, 20]);
        assert_eq!(scan.feed(&stream), Some(false));
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
