//! The thin tokio layer over [`crate::proto::Session`].
//!
//! One task per connection ([`run`]) moves bytes between the socket and the core and fires
//! timers. Everything else talks to the core directly under one mutex: a [`ChannelStream`]'s
//! `poll_read` copies out of the core's channel queue (which is what grants window back to the
//! peer), `poll_write` seals straight into the core's output buffer. No per-channel task and
//! no per-channel queue exist outside the core, so a channel costs only its core state.

mod stream;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::debug;

pub use stream::ChannelStream;

use crate::proto::{
    AuthMethod, AuthReply, ChannelId, ChannelKind, ChannelRequest, Config, Event, GlobalRequest,
    RequestId, Session,
};

/// What the application hears about, besides channel data (which flows through [`ChannelStream`]).
#[derive(Debug)]
pub enum Incoming {
    /// Client: the server's verified host key. Authenticate only once it is trusted.
    HostKey(crate::hostkey::ParsedKey),
    Banner(String),
    /// Server: answer with [`Handle::auth_reply`] / [`Handle::auth_pk_ok`].
    AuthRequest {
        id: RequestId,
        user: String,
        method: AuthMethod,
    },
    /// The peer opened a channel; accept with [`Handle::accept`] (which gives the stream) or reject.
    ChannelOpen {
        id: ChannelId,
        kind: ChannelKind,
    },
    /// A channel request (exec on a server; exit-status on a client); answer with
    /// [`Handle::channel_request_reply`] if `want_reply`.
    ChannelRequest {
        id: ChannelId,
        request_id: RequestId,
        request: ChannelRequest,
        want_reply: bool,
    },
    /// Extended data (stderr) of a channel.
    Stderr {
        id: ChannelId,
        data: Bytes,
    },
    /// Answer with [`Handle::global_reply`] if `want_reply`.
    GlobalRequest {
        request_id: RequestId,
        request: GlobalRequest,
        want_reply: bool,
    },
}

/// The outcome of one client authentication attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Success,
    Failure {
        methods: Vec<String>,
        partial: bool,
    },
    /// The server would accept the probed key.
    PkOk,
    /// Keyboard-interactive prompts to answer with [`Handle::auth_info_response`].
    Prompts {
        name: String,
        instruction: String,
        prompts: Vec<(String, bool)>,
    },
}

#[derive(Default)]
pub(crate) struct ChannelWaiters {
    read: Option<Waker>,
    write: Option<Waker>,
    open: Option<oneshot::Sender<Result<(), (u32, String)>>>,
    replies: VecDeque<oneshot::Sender<bool>>,
    /// The peer closed the channel and every byte was read.
    closed: bool,
    /// Tasks waiting in [`Handle::channel_closed`].
    on_close: Vec<Waker>,
}

pub(crate) struct State {
    pub(crate) session: Session,
    pub(crate) waiters: HashMap<ChannelId, ChannelWaiters>,
    auth_waiter: Option<oneshot::Sender<AuthOutcome>>,
    global_waiters: VecDeque<oneshot::Sender<(bool, Bytes)>>,
    /// Dropped when the connection ends, so the application's receiver sees the end.
    incoming: Option<mpsc::UnboundedSender<Incoming>>,
    /// Events handed to the application and not yet received by it.
    pending: Arc<AtomicUsize>,
    /// Why the connection ended, once it has.
    pub(crate) ended: Option<String>,
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the driver task: output was queued or a timer may have moved.
    pub(crate) wake: Notify,
}

/// Unread events at which the driver stops reading from the peer: a peer that sends requests
/// faster than the application handles them is held back by TCP, not by our memory. The
/// queue is bounded by this plus what one socket read (256 KiB) can carry.
const MAX_PENDING_EVENTS: usize = 256;

/// Unsent output at which the driver stops reading from the peer (see `run`).
const MAX_UNSENT_BEFORE_READ: usize = 4 * 1024 * 1024;

/// The application's side of the event stream (see [`Incoming`]).
pub struct Events {
    rx: mpsc::UnboundedReceiver<Incoming>,
    pending: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl Events {
    /// Events delivered and not yet received.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// The next event if one is waiting now (None also when the connection has ended).
    pub fn try_recv(&mut self) -> Option<Incoming> {
        let ev = self.rx.try_recv().ok()?;
        if self.pending.fetch_sub(1, Ordering::AcqRel) == MAX_PENDING_EVENTS {
            self.shared.wake.notify_one();
        }
        Some(ev)
    }

    /// The next event; None once the connection has ended.
    pub async fn recv(&mut self) -> Option<Incoming> {
        let ev = self.rx.recv().await?;
        if self.pending.fetch_sub(1, Ordering::AcqRel) == MAX_PENDING_EVENTS {
            // Crossed back under the limit: the driver may read again.
            self.shared.wake.notify_one();
        }
        Some(ev)
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this module; the state is still consistent
        // enough to close everything, so recover instead of cascading panics.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cheap, cloneable handle to one SSH connection.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

fn closed_err(why: &Option<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        why.clone()
            .unwrap_or_else(|| "SSH connection closed".into()),
    )
}

impl State {
    /// Drops a channel's wakers and waiters, and the table's room for them once mostly empty.
    pub(crate) fn forget_waiters(&mut self, id: ChannelId) -> Option<ChannelWaiters> {
        let w = self.waiters.remove(&id);
        crate::sparse::shrink_if_sparse(&mut self.waiters);
        w
    }

    /// Routes the core's events: channel readiness wakes tasks, the rest goes to the application.
    fn dispatch(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::HostKey(k) => {
                    self.send_incoming(Incoming::HostKey(k));
                }
                Event::AuthReady => {}
                Event::Banner(b) => {
                    self.send_incoming(Incoming::Banner(b));
                }
                Event::AuthSuccess => self.auth_done(AuthOutcome::Success),
                Event::AuthFailure { methods, partial } => {
                    self.auth_done(AuthOutcome::Failure { methods, partial })
                }
                Event::AuthPkOk { .. } => self.auth_done(AuthOutcome::PkOk),
                Event::AuthInfoRequest {
                    name,
                    instruction,
                    prompts,
                } => self.auth_done(AuthOutcome::Prompts {
                    name,
                    instruction,
                    prompts,
                }),
                Event::AuthRequest { id, user, method } => {
                    self.send_incoming(Incoming::AuthRequest { id, user, method });
                }
                Event::ChannelOpenRequest { id, kind } => {
                    self.waiters.insert(id, ChannelWaiters::default());
                    self.send_incoming(Incoming::ChannelOpen { id, kind });
                }
                Event::ChannelOpened { id } => {
                    if let Some(tx) = self.waiters.get_mut(&id).and_then(|w| w.open.take()) {
                        let _ = tx.send(Ok(()));
                    }
                }
                Event::ChannelOpenFailed {
                    id,
                    reason,
                    description,
                } => {
                    if let Some(mut w) = self.forget_waiters(id)
                        && let Some(tx) = w.open.take()
                    {
                        let _ = tx.send(Err((reason, description)));
                    }
                }
                Event::ChannelReadable { id } | Event::ChannelEof { id } => {
                    if let Some(w) = self.waiters.get_mut(&id).and_then(|w| w.read.take()) {
                        w.wake();
                    }
                }
                Event::ChannelStderr { id, data } => {
                    self.send_incoming(Incoming::Stderr { id, data });
                }
                Event::ChannelWritable { id } => {
                    if let Some(w) = self.waiters.get_mut(&id).and_then(|w| w.write.take()) {
                        w.wake();
                    }
                }
                Event::ChannelClosed { id } => {
                    if let Some(w) = self.waiters.get_mut(&id) {
                        w.closed = true;
                        if let Some(r) = w.read.take() {
                            r.wake();
                        }
                        if let Some(wr) = w.write.take() {
                            wr.wake();
                        }
                        w.replies.clear();
                        w.on_close.drain(..).for_each(Waker::wake);
                    }
                }
                Event::ChannelRequest {
                    id,
                    request_id,
                    request,
                    want_reply,
                } => {
                    self.send_incoming(Incoming::ChannelRequest {
                        id,
                        request_id,
                        request,
                        want_reply,
                    });
                }
                Event::ChannelRequestReply { id, ok } => {
                    if let Some(tx) = self
                        .waiters
                        .get_mut(&id)
                        .and_then(|w| w.replies.pop_front())
                    {
                        let _ = tx.send(ok);
                    }
                }
                Event::GlobalRequest {
                    request_id,
                    request,
                    want_reply,
                } => {
                    self.send_incoming(Incoming::GlobalRequest {
                        request_id,
                        request,
                        want_reply,
                    });
                }
                Event::GlobalReply { ok, data } => {
                    if let Some(tx) = self.global_waiters.pop_front() {
                        let _ = tx.send((ok, data));
                    }
                }
                Event::KeepaliveTimeout => debug!("keepalive timeout"),
            }
        }
    }

    fn send_incoming(&self, ev: Incoming) {
        if let Some(tx) = &self.incoming
            && tx.send(ev).is_ok()
        {
            self.pending.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn auth_done(&mut self, outcome: AuthOutcome) {
        if let Some(tx) = self.auth_waiter.take() {
            let _ = tx.send(outcome);
        }
    }

    /// The connection is over: every waiter learns it now rather than hanging.
    fn end(&mut self, why: String) {
        if self.ended.is_none() {
            self.ended = Some(why);
        }
        self.auth_waiter = None;
        self.incoming = None;
        self.global_waiters.clear();
        for w in self.waiters.values_mut() {
            w.closed = true;
            w.open = None;
            w.replies.clear();
            if let Some(r) = w.read.take() {
                r.wake();
            }
            if let Some(wr) = w.write.take() {
                wr.wake();
            }
            w.on_close.drain(..).for_each(Waker::wake);
        }
    }
}

/// Starts the driver for `stream` and returns the handle, the application's event receiver
/// and the driver future (spawn it; it ends when the connection does).
pub fn start<S>(
    stream: S,
    config: Arc<Config>,
) -> (
    Handle,
    Events,
    impl std::future::Future<Output = Result<(), String>> + Send,
)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            session: Session::new(config, Instant::now()),
            waiters: HashMap::new(),
            auth_waiter: None,
            global_waiters: VecDeque::new(),
            incoming: Some(tx),
            pending: pending.clone(),
            ended: None,
        }),
        wake: Notify::new(),
    });
    let handle = Handle {
        shared: shared.clone(),
    };
    let events = Events {
        rx,
        pending,
        shared: shared.clone(),
    };
    (handle, events, run(stream, shared))
}

async fn run<S>(stream: S, shared: Arc<Shared>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    // The socket is read straight into the buffer the core decrypts and slices packets in
    // (`Session::feed_buf`), which hands back the unparsed rest for the next read to extend.
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(256 * 1024);
    // How much of `out` the socket took: a partial write moves a cursor, not the rest.
    let mut sent = 0;
    let mut spare: Vec<u8> = Vec::with_capacity(256 * 1024);
    let result = loop {
        let (deadline, closed, may_read) = {
            let mut st = shared.lock();
            if out.is_empty() && !st.session.transmit().is_empty() {
                spare.clear();
                out = st.session.take_transmit(std::mem::take(&mut spare));
                sent = 0;
                st.dispatch();
            }
            // Replies the core makes by itself (UNIMPLEMENTED, refused keepalives and requests)
            // pile up if the peer sends but never reads: stop reading it until they drain.
            let may_read = st.pending.load(Ordering::Acquire) < MAX_PENDING_EVENTS
                && st.session.transmit().len() < MAX_UNSENT_BEFORE_READ;
            (st.session.poll_timeout(), st.session.is_closed(), may_read)
        };
        if closed && out.is_empty() {
            let st = shared.lock();
            break match st.session.error() {
                Some(e) => Err(e.to_string()),
                None => Ok(()),
            };
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = wr.write(&out[sent..]), if !out.is_empty() => match r {
                Ok(0) | Err(_) => break Err("connection lost while writing".to_string()),
                Ok(n) => {
                    sent += n;
                    if sent == out.len() {
                        // select! builds `&out[sent..]` even while its branch is disabled.
                        sent = 0;
                        out.clear();
                        spare = std::mem::take(&mut out);
                    }
                }
            },
            r = read_chunk(&mut rd, &mut inbuf), if may_read => match r {
                Ok(0) => {
                    let mut st = shared.lock();
                    if !st.session.is_closed() {
                        st.end("connection closed by peer".into());
                    }
                    break Err("connection closed by peer".to_string());
                }
                Ok(_) => {
                    let mut st = shared.lock();
                    let _ = st.session.feed_buf(&mut inbuf, Instant::now());
                    st.dispatch();
                }
                Err(e) => break Err(format!("connection lost: {e}")),
            },
            _ = sleep => {
                let mut st = shared.lock();
                st.session.handle_timeout(Instant::now());
                st.dispatch();
            }
            _ = shared.wake.notified() => {}
        }
    };
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    let mut st = shared.lock();
    let why = match &result {
        Ok(()) => "SSH connection closed".to_string(),
        Err(e) => e.clone(),
    };
    st.end(why);
    result
}

/// Bytes asked of the socket per read: a quarter MiB takes a burst of large packets in one
/// system call (russh's two reads per packet were 9x the calls of ssh's).
const READ_CHUNK: usize = 256 * 1024;

/// One read appended to `buf`, with room made for [`READ_CHUNK`] first (moving at most the
/// partial packet left in it). Cancel-safe, as `read_buf` is: dropped, it read nothing.
async fn read_chunk<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    rd.read_buf(buf).await
}

impl Handle {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.shared.lock();
        let r = f(&mut st);
        st.dispatch();
        drop(st);
        self.shared.wake.notify_one();
        r
    }

    /// Why the connection ended, or None while it runs.
    pub fn ended(&self) -> Option<String> {
        self.shared.lock().ended.clone()
    }

    pub fn session_id(&self) -> Option<Vec<u8>> {
        self.shared.lock().session.session_id().map(<[u8]>::to_vec)
    }

    async fn auth_round(&self, f: impl FnOnce(&mut Session)) -> io::Result<AuthOutcome> {
        let (tx, rx) = oneshot::channel();
        self.with(|st| {
            st.auth_waiter = Some(tx);
            f(&mut st.session);
        });
        rx.await.map_err(|_| closed_err(&self.ended()))
    }

    pub async fn auth_none(&self, user: &str) -> io::Result<AuthOutcome> {
        self.auth_round(|s| s.auth_none(user)).await
    }

    pub async fn auth_password(&self, user: &str, password: &str) -> io::Result<AuthOutcome> {
        self.auth_round(|s| s.auth_password(user, password)).await
    }

    pub async fn auth_keyboard_interactive(&self, user: &str) -> io::Result<AuthOutcome> {
        self.auth_round(|s| s.auth_keyboard_interactive(user)).await
    }

    pub async fn auth_info_response(&self, responses: &[String]) -> io::Result<AuthOutcome> {
        self.auth_round(|s| s.auth_info_response(responses)).await
    }

    pub async fn auth_publickey_probe(
        &self,
        user: &str,
        alg: &str,
        key_blob: &[u8],
    ) -> io::Result<AuthOutcome> {
        self.auth_round(|s| s.auth_publickey_probe(user, alg, key_blob))
            .await
    }

    /// Publickey with a signer that may be slow or remote (ssh-agent): it gets the bytes to sign
    /// and returns the SSH signature blob.
    pub async fn auth_publickey_with<F, Fut>(
        &self,
        user: &str,
        alg: &str,
        key_blob: &[u8],
        sign: F,
    ) -> io::Result<AuthOutcome>
    where
        F: FnOnce(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = io::Result<Vec<u8>>>,
    {
        let data = self
            .shared
            .lock()
            .session
            .publickey_data_to_sign(user, alg, key_blob)
            .ok_or_else(|| io::Error::other("key exchange not finished"))?;
        let sig = sign(data).await?;
        self.auth_round(|s| s.auth_publickey_signed(user, alg, key_blob, &sig))
            .await
    }

    /// Publickey with a private key in memory.
    pub async fn auth_publickey(
        &self,
        user: &str,
        key: &ssh_key::PrivateKey,
    ) -> io::Result<AuthOutcome> {
        let public = key.public_key();
        let blob = public.to_bytes().map_err(io::Error::other)?;
        let algs = crate::hostkey::algorithms_for(public);
        let server_algs = self
            .shared
            .lock()
            .session
            .server_sig_algs()
            .map(<[String]>::to_vec);
        let alg = algs
            .iter()
            .find(|a| {
                server_algs
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|x| x == *a))
            })
            .or(algs.first())
            .ok_or_else(|| io::Error::other("unsupported key type"))?
            .to_string();
        let sign_alg = alg.clone();
        self.auth_publickey_with(user, &alg, &blob, |data| async move {
            crate::hostkey::sign(key, &sign_alg, &data).map_err(io::Error::other)
        })
        .await
    }

    /// Server: answers an [`Incoming::AuthRequest`].
    pub fn auth_reply(&self, id: RequestId, reply: AuthReply) {
        self.with(|st| st.session.auth_reply(id, reply));
    }

    pub fn auth_pk_ok(&self, id: RequestId, alg: &str, key_blob: &[u8]) {
        self.with(|st| st.session.auth_pk_ok(id, alg, key_blob));
    }

    /// Opens a channel and waits for the peer's answer.
    pub async fn open(&self, kind: ChannelKind) -> io::Result<ChannelStream> {
        let (tx, rx) = oneshot::channel();
        let id = self.with(|st| {
            if st.ended.is_some() {
                return Err(closed_err(&st.ended));
            }
            let id = st
                .session
                .open_channel(kind)
                .ok_or_else(|| io::Error::other("too many channels on this connection"))?;
            st.waiters.insert(
                id,
                ChannelWaiters {
                    open: Some(tx),
                    ..Default::default()
                },
            );
            Ok(id)
        })?;
        let stream = ChannelStream::new(self.clone(), id);
        match rx.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err((reason, description))) => {
                std::mem::forget(stream.detach());
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    OpenFailure {
                        reason,
                        description,
                    },
                ))
            }
            Err(_) => Err(closed_err(&self.ended())),
        }
    }

    /// Accepts a channel the peer opened.
    pub fn accept(&self, id: ChannelId) -> ChannelStream {
        self.with(|st| st.session.accept_channel(id));
        ChannelStream::new(self.clone(), id)
    }

    pub fn reject(&self, id: ChannelId, reason: u32, description: &str) {
        self.with(|st| {
            st.forget_waiters(id);
            st.session.reject_channel(id, reason, description)
        });
    }

    /// Sends a channel request and waits for the reply (or returns at once if no reply is wanted).
    pub async fn channel_request(
        &self,
        id: ChannelId,
        request: ChannelRequest,
        want_reply: bool,
    ) -> io::Result<bool> {
        let (tx, rx) = oneshot::channel();
        self.with(|st| {
            if want_reply && let Some(w) = st.waiters.get_mut(&id) {
                w.replies.push_back(tx);
            }
            st.session.channel_request(id, &request, want_reply);
        });
        if !want_reply {
            return Ok(true);
        }
        rx.await.map_err(|_| closed_err(&self.ended()))
    }

    pub fn channel_request_reply(&self, id: ChannelId, request_id: RequestId, ok: bool) {
        self.with(|st| st.session.channel_request_reply(id, request_id, ok));
    }

    pub async fn global_request(&self, request: GlobalRequest) -> io::Result<(bool, Bytes)> {
        let (tx, rx) = oneshot::channel();
        self.with(|st| {
            st.global_waiters.push_back(tx);
            st.session.global_request(&request, true);
        });
        rx.await.map_err(|_| closed_err(&self.ended()))
    }

    pub fn global_reply(&self, request_id: RequestId, ok: bool, data: &[u8]) {
        self.with(|st| st.session.global_reply(request_id, ok, data));
    }

    /// Sends `data` as stderr (extended data) on a channel, as much as the peer's window takes
    /// now (one packet at most); returns how much went out.
    pub fn channel_stderr(&self, id: ChannelId, data: &[u8]) -> io::Result<usize> {
        self.with(|st| st.session.channel_write_stderr(id, data))
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
    }

    /// Sets how much window growth this connection's channels may claim together (the
    /// per-session memory bound for slow readers beyond the initial windows).
    pub fn set_window_budget(&self, limit: u64) {
        self.with(|st| st.session.set_window_budget(limit));
    }

    /// Shares window growth with other connections through `pool` (see
    /// [`crate::channel::WindowPool`]); set at login, before channels grow.
    pub fn set_window_pool(&self, pool: std::sync::Arc<dyn crate::channel::WindowPool>) {
        self.with(|st| st.session.set_window_pool(pool));
    }

    /// Charges one channel's window growth to `pool` as well as to the session's budget
    /// (see [`crate::proto::Session::set_channel_pool`]).
    pub fn set_channel_pool(
        &self,
        id: ChannelId,
        pool: std::sync::Arc<dyn crate::channel::WindowPool>,
    ) {
        self.with(|st| st.session.set_channel_pool(id, pool));
    }

    /// The window growth budget: (in use, limit).
    pub fn window_budget(&self) -> (u64, u64) {
        self.shared.lock().session.window_budget()
    }

    /// Sends SSH_MSG_DISCONNECT (by application) and lets the driver finish.
    pub fn disconnect(&self, description: &str) {
        self.with(|st| st.session.disconnect(description));
    }

    pub fn channel_count(&self) -> usize {
        self.shared.lock().session.channel_count()
    }

    /// Bytes received on a channel and not yet read by the application (at most its window).
    pub fn buffered(&self, id: ChannelId) -> usize {
        self.shared.lock().session.channel_buffered(id)
    }

    /// Bytes the core has queued for the peer and the driver has not taken yet.
    pub fn unsent(&self) -> usize {
        self.shared.lock().session.transmit().len()
    }

    /// Window the peer may still use on a channel before it must wait for us to read.
    pub fn peer_window(&self, id: ChannelId) -> u32 {
        self.shared.lock().session.channel_peer_window(id)
    }

    /// The receive window target of a channel (for tests and `warren status`).
    pub fn window_target(&self, id: ChannelId) -> u32 {
        self.shared.lock().session.channel_window_target(id)
    }

    /// Resolves once the channel is fully closed (both CLOSEs exchanged, which for a channel
    /// the peer closed happens when its data has been read), when the connection ends, or at
    /// once for an unknown id. A command's exit status arrives before its channel's CLOSE, so
    /// this is when a client knows no status will come any more.
    pub fn channel_closed(
        &self,
        id: ChannelId,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        std::future::poll_fn(move |cx| {
            let mut st = shared.lock();
            if st.ended.is_some() {
                return std::task::Poll::Ready(());
            }
            match st.waiters.get_mut(&id) {
                Some(w) if !w.closed => {
                    if !w.on_close.iter().any(|x| x.will_wake(cx.waker())) {
                        w.on_close.push(cx.waker().clone());
                    }
                    std::task::Poll::Pending
                }
                _ => std::task::Poll::Ready(()),
            }
        })
    }

    /// Whether the peer may still send on the channel: it is open and the peer has sent
    /// neither EOF nor CLOSE, and the connection runs. A channel opened ahead of use (a
    /// spare) is checked with this before it is handed out.
    pub fn channel_is_open(&self, id: ChannelId) -> bool {
        let st = self.shared.lock();
        st.ended.is_none() && st.session.channel_is_open(id)
    }

    /// Client: the signature algorithms the server accepts (EXT_INFO server-sig-algs), if it
    /// said; an RSA key is signed with the SHA-2 variant it lists.
    pub fn server_sig_algs(&self) -> Option<Vec<String>> {
        self.shared
            .lock()
            .session
            .server_sig_algs()
            .map(<[String]>::to_vec)
    }

    /// The peer's identification line without CR LF ("SSH-2.0-OpenSSH_9.2p1 Debian-2"), once
    /// received: clients adapt to known server software, as OpenSSH's compat flags do.
    pub fn peer_version(&self) -> Option<String> {
        self.shared
            .lock()
            .session
            .peer_version()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Why the peer refused a channel we opened: the payload of the `io::Error` from
/// [`Handle::open`], so callers can tell "connect failed" from "prohibited" by code
/// (RFC 4254 §5.1, [`crate::proto::reason`]) rather than by parsing text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFailure {
    pub reason: u32,
    pub description: String,
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "channel open failed ({}): {}",
            self.reason, self.description
        )
    }
}

impl std::error::Error for OpenFailure {}
