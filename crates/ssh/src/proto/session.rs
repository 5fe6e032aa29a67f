//! One SSH connection, either role, with no I/O: bytes in ([`Session::feed`]), bytes out
//! ([`Session::transmit`]), events ([`Session::poll_event`]) and timers
//! ([`Session::poll_timeout`] / [`Session::handle_timeout`]).
//!
//! The transport (kex, packets) lives in [`super::transport`]; user authentication in
//! [`super::auth`]; channels and global requests in [`super::connection`]. This file owns
//! the dispatch between them, the outgoing queue that waits out key exchanges, and the timers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::debug;

use super::auth::AuthState;
use super::config::{Config, Role};
use super::connection::Channel;
use super::event::{ChannelId, Event, RequestId};
use super::transport::{Transport, TransportEvent};
use crate::channel::WindowBudget;
use crate::error::{Error, Result};
use crate::msg;

/// Above this many unsent bytes, channel writes report "would block" so the socket, not our
/// memory, absorbs a fast writer.
pub(crate) const OUT_HIGH_WATER: usize = 1024 * 1024;
/// Idle windows are checked this often.
const IDLE_TICK: Duration = Duration::from_secs(1);

pub struct Session {
    pub(crate) config: Arc<Config>,
    pub(crate) transport: Transport,
    pub(crate) events: VecDeque<Event>,
    /// Application payloads held back while a key exchange runs (RFC 4253 §7.1).
    pub(crate) held: VecDeque<Vec<u8>>,
    pub(crate) auth: AuthState,
    pub(crate) channels: HashMap<ChannelId, Channel>,
    pub(crate) next_channel: ChannelId,
    /// Channels the peer opened that are still ours to hold (`Config::max_channels`).
    pub(crate) peer_channels: usize,
    pub(crate) budget: WindowBudget,
    /// Our global requests awaiting a reply, in order: true = keepalive (answered internally).
    pub(crate) global_outstanding: VecDeque<bool>,
    /// The peer's global requests awaiting our reply, in order: (id, reply once decided).
    pub(crate) global_pending: VecDeque<(RequestId, Option<Vec<u8>>)>,
    pub(crate) next_request: RequestId,
    /// Channels whose writer was refused and waits for a ChannelWritable.
    pub(crate) blocked_writers: Vec<ChannelId>,
    keepalive_due: Option<Instant>,
    keepalives_missed: u32,
    idle_due: Instant,
    pub(crate) now: Instant,
    error: Option<String>,
}

impl Session {
    pub fn new(config: Arc<Config>, now: Instant) -> Self {
        let budget = WindowBudget::new(config.window_budget);
        let role = config.role;
        Session {
            transport: Transport::new(config.clone(), now),
            config,
            events: VecDeque::new(),
            held: VecDeque::new(),
            auth: AuthState::new(role),
            channels: HashMap::new(),
            next_channel: 0,
            peer_channels: 0,
            budget,
            global_outstanding: VecDeque::new(),
            global_pending: VecDeque::new(),
            next_request: 0,
            blocked_writers: Vec::new(),
            keepalive_due: None,
            keepalives_missed: 0,
            idle_due: now + IDLE_TICK,
            now,
            error: None,
        }
    }

    pub fn role(&self) -> Role {
        self.config.role
    }

    pub fn session_id(&self) -> Option<&[u8]> {
        self.transport.session_id()
    }

    /// The peer's identification line (without CR LF), once received.
    pub fn peer_version(&self) -> Option<&[u8]> {
        self.transport.peer_version()
    }

    pub fn is_closed(&self) -> bool {
        self.transport.closed
    }

    /// Why the session ended, if it ended with an error.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Bytes the peer sent. Processing happens here; errors end the session with a
    /// DISCONNECT queued for the peer and are also returned.
    pub fn feed(&mut self, data: &[u8], now: Instant) -> Result<()> {
        self.take_input(now, !data.is_empty(), |t| t.feed(data))
    }

    /// [`Self::feed`] without copying: takes the bytes read into `buf` and leaves in it the
    /// unparsed rest (part of one packet), so the caller's next read appends to that.
    pub fn feed_buf(&mut self, buf: &mut bytes::BytesMut, now: Instant) -> Result<()> {
        let r = self.take_input(now, !buf.is_empty(), |t| t.feed_buf(buf));
        if self.transport.closed {
            // Nothing more is parsed: whatever came is dropped, not kept for a next read.
            buf.clear();
        } else {
            self.transport.lend_leftover(buf);
        }
        r
    }

    fn take_input(
        &mut self,
        now: Instant,
        any: bool,
        put: impl FnOnce(&mut Transport),
    ) -> Result<()> {
        self.now = now;
        if self.transport.closed {
            return Ok(());
        }
        if any {
            self.peer_alive();
        }
        put(&mut self.transport);
        let r = self.process();
        if let Err(e) = &r {
            self.fail(e);
        }
        r
    }

    pub(crate) fn fail(&mut self, e: &Error) {
        if self.error.is_none() {
            self.error = Some(e.to_string());
        }
        if !matches!(e, Error::PeerDisconnected { .. }) {
            self.transport
                .disconnect(e.disconnect_reason(), &e.to_string());
        }
        self.transport.closed = true;
    }

    fn process(&mut self) -> Result<()> {
        while let Some(ev) = self.transport.poll(self.now)? {
            match ev {
                TransportEvent::HostKey(k) => self.events.push_back(Event::HostKey(k)),
                TransportEvent::KexDone => self.on_kex_done()?,
                TransportEvent::Payload(p) => self.dispatch(p)?,
            }
        }
        if self.transport.rekey_due(self.now) {
            self.transport.start_kex();
        }
        Ok(())
    }

    fn on_kex_done(&mut self) -> Result<()> {
        while let Some(p) = self.held.pop_front() {
            self.transport.send(&p)?;
        }
        self.auth_on_kex_done()?;
        self.wake_blocked_writers();
        if self.keepalive_due.is_none() {
            self.keepalive_due = self.config.keepalive_interval.map(|i| self.now + i);
        }
        Ok(())
    }

    fn dispatch(&mut self, p: Bytes) -> Result<()> {
        let n = p[0];
        match n {
            msg::SERVICE_REQUEST | msg::SERVICE_ACCEPT | msg::EXT_INFO | 50..=79 => {
                self.on_auth_message(p)
            }
            80..=127 => {
                if !self.auth.is_authenticated() {
                    return Err(Error::Protocol(format!(
                        "connection message {n} before authentication"
                    )));
                }
                self.on_connection_message(p)
            }
            _ => {
                // RFC 4253 §11.4: answer unknown messages with UNIMPLEMENTED(seq), never drop the session.
                debug!(msg = n, "unimplemented message");
                let mut reply = vec![msg::UNIMPLEMENTED];
                reply.extend_from_slice(&self.transport.last_received_seq().to_be_bytes());
                self.send_app(reply)
            }
        }
    }

    /// Sends an application payload now, or after the running key exchange.
    pub(crate) fn send_app(&mut self, payload: Vec<u8>) -> Result<()> {
        if self.transport.can_send_app() && self.held.is_empty() {
            self.transport.send(&payload)
        } else {
            self.held.push_back(payload);
            Ok(())
        }
    }

    pub(crate) fn send_app_or_fail(&mut self, payload: Vec<u8>) {
        if let Err(e) = self.send_app(payload) {
            self.fail(&e);
        }
    }

    /// Advances the session's clock without input. Window autotuning times when data is
    /// consumed; a driver calls this before reads so that time is not the last packet's.
    pub fn set_time(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Protected bytes waiting for the socket.
    pub fn transmit(&self) -> &[u8] {
        &self.transport.out
    }

    /// Takes the whole output buffer (the driver writes it without holding the session).
    pub fn take_transmit(&mut self, replacement: Vec<u8>) -> Vec<u8> {
        let out = std::mem::replace(&mut self.transport.out, replacement);
        self.wake_blocked_writers();
        out
    }

    /// `n` bytes of [`Self::transmit`] were written to the socket.
    pub fn transmitted(&mut self, n: usize) {
        self.transport.out.drain(..n);
        if self.transport.out.len() < OUT_HIGH_WATER / 2 {
            self.wake_blocked_writers();
        }
    }

    pub(crate) fn wake_blocked_writers(&mut self) {
        if !self.transport.can_send_app() || self.transport.out.len() >= OUT_HIGH_WATER {
            return;
        }
        for id in std::mem::take(&mut self.blocked_writers) {
            if self.channels.contains_key(&id) {
                self.events.push_back(Event::ChannelWritable { id });
            }
        }
    }

    /// The next instant [`Self::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.idle_due);
        for d in [self.keepalive_due, self.transport.next_rekey_deadline()]
            .into_iter()
            .flatten()
        {
            t = Some(t.map_or(d, |x: Instant| x.min(d)));
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.transport.closed {
            return;
        }
        if let Some(due) = self.keepalive_due
            && now >= due
        {
            if self.keepalives_missed >= self.config.keepalive_max {
                self.events.push_back(Event::KeepaliveTimeout);
                self.fail(&Error::Protocol("keepalive timeout".into()));
                return;
            }
            self.keepalives_missed += 1;
            self.send_keepalive();
            self.keepalive_due = self.config.keepalive_interval.map(|i| now + i);
        }
        if now >= self.idle_due {
            self.idle_due = now + IDLE_TICK;
            for ch in self.channels.values_mut() {
                ch.recv.on_idle(now, &mut self.budget);
            }
        }
        if self.transport.rekey_due(now) {
            self.transport.start_kex();
        }
    }

    /// Any packet from the peer proves it alive (OpenSSH resets its counter the same way for replies).
    pub(crate) fn peer_alive(&mut self) {
        self.keepalives_missed = 0;
    }

    /// Resizes the window growth this session's channels may claim together (see
    /// [`crate::channel::WindowBudget::set_limit`]): a server learns whose session it is, and so
    /// its share of the memory budget, only at login, after the session started.
    pub fn set_window_budget(&mut self, limit: u64) {
        self.budget.set_limit(limit);
    }

    /// Draws window growth from a pool shared with other sessions as well (a user's, the
    /// server's), at the moment a window grows; see [`crate::channel::WindowPool`].
    pub fn set_window_pool(&mut self, pool: std::sync::Arc<dyn crate::channel::WindowPool>) {
        self.budget.set_pool(pool);
    }

    /// The window growth budget: (in use, limit).
    pub fn window_budget(&self) -> (u64, u64) {
        (self.budget.in_use(), self.budget.limit())
    }

    /// Ends the session politely (SSH_MSG_DISCONNECT BY_APPLICATION).
    pub fn disconnect(&mut self, description: &str) {
        self.transport.disconnect(11, description);
    }

    /// Sends `payload` as a protected packet exactly as given, bypassing every check: the fuzz
    /// harness uses it to reach the peer's auth and connection parsers with arbitrary messages
    /// that pass the MAC. Never use it for real traffic.
    #[doc(hidden)]
    pub fn send_raw_payload(&mut self, payload: &[u8]) {
        if !payload.is_empty() {
            let _ = self.transport.send(payload);
        }
    }

    pub(crate) fn next_request_id(&mut self) -> RequestId {
        self.next_request += 1;
        self.next_request
    }
}
