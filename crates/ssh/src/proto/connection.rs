//! The connection protocol (RFC 4254): channels, their data and windows, channel requests and
//! global requests.
//!
//! Received data stays in the channel's queue until the application reads it with
//! [`Session::channel_read`]; only then is window granted back (through
//! [`crate::channel::RecvWindow`]). A reader that stops therefore stops exactly its own sender,
//! and a channel never holds more than the window it advertised.

use std::collections::VecDeque;

use bytes::Bytes;

use super::event::{ChannelId, ChannelKind, ChannelRequest, Event, GlobalRequest, Read, RequestId};
use super::session::{OUT_HIGH_WATER, Session};
use crate::channel::{RecvWindow, SendWindow};
use crate::error::{Error, Result};
use crate::msg;
use crate::wire::{Put, Reader};

/// RFC 4254 §5.1 reason codes.
pub mod reason {
    pub const ADMINISTRATIVELY_PROHIBITED: u32 = 1;
    pub const CONNECT_FAILED: u32 = 2;
    pub const UNKNOWN_CHANNEL_TYPE: u32 = 3;
    pub const RESOURCE_SHORTAGE: u32 = 4;
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum State {
    /// We sent CHANNEL_OPEN and wait for the answer.
    Opening,
    /// The peer asked to open; the application has not answered.
    Offered,
    Open,
}

pub(crate) struct Channel {
    pub(crate) state: State,
    pub(crate) remote: u32,
    pub(crate) recv: RecvWindow,
    pub(crate) send: SendWindow,
    buf: VecDeque<Bytes>,
    eof_received: bool,
    eof_sent: bool,
    close_sent: bool,
    close_received: bool,
    /// The application let go of the channel: data that arrives is dropped (and granted back)
    /// until the peer's CLOSE.
    detached: bool,
    /// Replies to the peer's channel requests, in order.
    pending_replies: VecDeque<(RequestId, Option<bool>)>,
    /// Our requests with want_reply, in order: true when the reply is for the core itself.
    outstanding: VecDeque<bool>,
    /// The peer opened it: counted against `max_channels` (ours are bounded by the
    /// application that opens them).
    by_peer: bool,
}

impl Channel {
    fn new(state: State, remote: u32, recv: RecvWindow, send: SendWindow) -> Self {
        Channel {
            state,
            remote,
            recv,
            send,
            buf: VecDeque::new(),
            eof_received: false,
            eof_sent: false,
            close_sent: false,
            close_received: false,
            detached: false,
            pending_replies: VecDeque::new(),
            outstanding: VecDeque::new(),
            by_peer: false,
        }
    }
}

/// What became of a datagram handed to [`Session::channel_write_datagram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    Sent,
    /// No room now; [`Event::ChannelWritable`] follows.
    Blocked,
    /// Over the peer's maximum packet size: it can never be sent.
    TooLarge {
        max: usize,
    },
}

fn open_payload(kind: &ChannelKind, local: u32, window: u32, max_packet: u32) -> Vec<u8> {
    let mut p = vec![msg::CHANNEL_OPEN];
    let name: &str = match kind {
        ChannelKind::Session => "session",
        ChannelKind::DirectTcpip { .. } => "direct-tcpip",
        ChannelKind::ForwardedTcpip { .. } => "forwarded-tcpip",
        ChannelKind::DirectStreamlocal { .. } => "direct-streamlocal@openssh.com",
        ChannelKind::ForwardedStreamlocal { .. } => "forwarded-streamlocal@openssh.com",
        ChannelKind::AuthAgent => "auth-agent@openssh.com",
        ChannelKind::Tun { .. } => "tun@openssh.com",
        ChannelKind::Extension { kind, .. } => kind,
        ChannelKind::Other(n) => n,
    };
    p.put_string(name.as_bytes());
    p.put_u32(local);
    p.put_u32(window);
    p.put_u32(max_packet);
    match kind {
        ChannelKind::DirectTcpip {
            host,
            port,
            originator,
            originator_port,
        } => {
            p.put_string(host.as_bytes());
            p.put_u32(*port);
            p.put_string(originator.as_bytes());
            p.put_u32(*originator_port);
        }
        ChannelKind::ForwardedTcpip {
            address,
            port,
            originator,
            originator_port,
        } => {
            p.put_string(address.as_bytes());
            p.put_u32(*port);
            p.put_string(originator.as_bytes());
            p.put_u32(*originator_port);
        }
        ChannelKind::DirectStreamlocal { path } => {
            p.put_string(path.as_bytes());
            p.put_string(b"");
            p.put_u32(0);
        }
        ChannelKind::ForwardedStreamlocal { path } => {
            p.put_string(path.as_bytes());
            p.put_string(b"");
        }
        ChannelKind::Tun { mode, unit } => {
            p.put_u32(*mode);
            p.put_u32(*unit);
        }
        ChannelKind::Extension { data, .. } => p.extend_from_slice(data),
        ChannelKind::Session | ChannelKind::AuthAgent | ChannelKind::Other(_) => {}
    }
    p
}

/// `extensions`: the application's own channel types ([`super::config::Config::extension_channels`]);
/// a listed name wins even over a standard one, so the application decides what it means.
fn parse_kind(name: &str, r: &mut Reader<'_>, extensions: &[String]) -> Result<ChannelKind> {
    if extensions.iter().any(|e| e == name) {
        return Ok(ChannelKind::Extension {
            kind: name.to_owned(),
            data: r.remaining().to_vec(),
        });
    }
    Ok(match name {
        "session" => ChannelKind::Session,
        "direct-tcpip" => ChannelKind::DirectTcpip {
            host: r.utf8()?.to_owned(),
            port: r.u32()?,
            originator: r.utf8()?.to_owned(),
            originator_port: r.u32()?,
        },
        "forwarded-tcpip" => ChannelKind::ForwardedTcpip {
            address: r.utf8()?.to_owned(),
            port: r.u32()?,
            originator: r.utf8()?.to_owned(),
            originator_port: r.u32()?,
        },
        "direct-streamlocal@openssh.com" => ChannelKind::DirectStreamlocal {
            path: r.utf8()?.to_owned(),
        },
        "forwarded-streamlocal@openssh.com" => ChannelKind::ForwardedStreamlocal {
            path: r.utf8()?.to_owned(),
        },
        "auth-agent@openssh.com" => ChannelKind::AuthAgent,
        "tun@openssh.com" => ChannelKind::Tun {
            mode: r.u32()?,
            unit: r.u32()?,
        },
        other => ChannelKind::Other(other.to_owned()),
    })
}

impl Session {
    /// A free channel id. `max_channels` caps only the channels the peer opens: those
    /// cost us memory at the peer's will. Our own opens are bounded by whoever asks for
    /// them (one per accepted local connection), as in OpenSSH; capping them too would
    /// refuse a client's ten-thousandth -L connection for no reason of the peer's.
    fn alloc_channel_id(&mut self, by_peer: bool) -> Option<ChannelId> {
        if by_peer && self.peer_channels >= self.config.max_channels {
            return None;
        }
        // Every id in use: nothing left to hand out (the loop below would not end).
        if self.channels.len() >= u32::MAX as usize {
            return None;
        }
        loop {
            let id = self.next_channel;
            self.next_channel = self.next_channel.wrapping_add(1);
            if !self.channels.contains_key(&id) {
                return Some(id);
            }
        }
    }

    /// Forgets a channel, keeping the count of the peer's channels right.
    fn remove_channel(&mut self, id: ChannelId) -> Option<Channel> {
        let ch = self.channels.remove(&id)?;
        crate::sparse::shrink_if_sparse(&mut self.channels);
        if ch.by_peer {
            self.peer_channels -= 1;
        }
        Some(ch)
    }

    /// Toward warren's own engine growth is granted at once; other peers get it paced by
    /// consumption (see [`RecvWindow::paced`]), for the same reason as their lower cap.
    pub(crate) fn new_recv(&self) -> RecvWindow {
        let w = RecvWindow::new(self.config.window_initial, self.window_cap());
        match self.peer_is_warren() {
            true => w,
            false => w.paced(),
        }
    }

    fn peer_is_warren(&self) -> bool {
        self.transport
            .peer_version()
            .is_some_and(|v| v.starts_with(b"SSH-2.0-warren"))
    }

    /// How far this session's windows may grow: see [`super::config::Config::foreign_window_cap`]. The
    /// peer's identification line is the only hint of what buffers behind it (both of
    /// warren's roles send `SSH-2.0-warren...`); a peer that lies only gets a cap it chose.
    pub(crate) fn window_cap(&self) -> u32 {
        match self.peer_is_warren() {
            true => self.config.window_cap,
            false => self.config.window_cap.min(self.config.foreign_window_cap),
        }
    }

    /// Opens a channel; [`Event::ChannelOpened`] or [`Event::ChannelOpenFailed`] follows.
    /// None when this session already has `max_channels` channels.
    pub fn open_channel(&mut self, kind: ChannelKind) -> Option<ChannelId> {
        let id = self.alloc_channel_id(false)?;
        let recv = self.new_recv();
        let p = open_payload(&kind, id, recv.advertised_initial(), self.config.max_packet);
        self.channels.insert(
            id,
            Channel::new(State::Opening, 0, recv, SendWindow::new(0, 0)),
        );
        self.send_app_or_fail(p);
        Some(id)
    }

    /// Accepts a channel the peer asked for ([`Event::ChannelOpenRequest`]).
    pub fn accept_channel(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        if ch.state != State::Offered {
            return;
        }
        ch.state = State::Open;
        let mut p = vec![msg::CHANNEL_OPEN_CONFIRMATION];
        p.put_u32(ch.remote);
        p.put_u32(id);
        p.put_u32(ch.recv.advertised_initial());
        p.put_u32(self.config.max_packet);
        self.send_app_or_fail(p);
    }

    /// Refuses a channel the peer asked for; its id is free at once.
    pub fn reject_channel(&mut self, id: ChannelId, reason_code: u32, description: &str) {
        let Some(ch) = self.channels.get(&id) else {
            return;
        };
        if ch.state != State::Offered {
            return;
        }
        let remote = ch.remote;
        if let Some(mut ch) = self.remove_channel(id) {
            ch.recv.release(&mut self.budget);
        }
        let mut p = vec![msg::CHANNEL_OPEN_FAILURE];
        p.put_u32(remote);
        p.put_u32(reason_code);
        p.put_string(description.as_bytes());
        p.put_string(b"");
        self.send_app_or_fail(p);
    }

    /// Copies buffered data into `dst` and grants the consumed bytes back to the peer.
    pub fn channel_read(&mut self, id: ChannelId, dst: &mut [u8]) -> Read {
        let mut n = 0;
        self.channel_read_with(id, dst.len(), |part| {
            dst[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        })
    }

    /// Hands up to `max` buffered bytes to `put`, in order and in as many parts as they
    /// are buffered in, and grants them back to the peer. For a reader whose destination
    /// is not initialised memory (tokio's `ReadBuf::put_slice`): it is then written once,
    /// never zeroed first.
    pub fn channel_read_with(
        &mut self,
        id: ChannelId,
        max: usize,
        mut put: impl FnMut(&[u8]),
    ) -> Read {
        self.channel_take(id, max, |part| put(&part))
    }

    /// Moves up to `max` buffered bytes into `out` as the shared chunks they arrived in
    /// (the last one split if needed), and grants them back to the peer. For a relay that
    /// writes them to a socket with one `writev`: the bytes are then copied only by the
    /// kernel, never into a buffer of the relay's first.
    pub fn channel_read_chunks(
        &mut self,
        id: ChannelId,
        max: usize,
        out: &mut VecDeque<Bytes>,
    ) -> Read {
        self.channel_take(id, max, |part| out.push_back(part))
    }

    fn channel_take(&mut self, id: ChannelId, max: usize, mut put: impl FnMut(Bytes)) -> Read {
        let now = self.now;
        let Some(ch) = self.channels.get_mut(&id) else {
            return Read::Eof;
        };
        let mut n = 0;
        while n < max {
            let Some(front) = ch.buf.front_mut() else {
                break;
            };
            let part = if front.len() <= max - n {
                ch.buf.pop_front().expect("front exists")
            } else {
                front.split_to(max - n)
            };
            n += part.len();
            put(part);
        }
        if n == 0 {
            return if ch.eof_received
                || ch.close_received
                || ch.state != State::Open && ch.state != State::Opening
            {
                Read::Eof
            } else {
                Read::WouldBlock
            };
        }
        let drained = ch.buf.is_empty() && ch.close_received;
        self.consumed(id, n, now);
        if drained {
            self.answer_close(id);
        }
        Read::Data(n)
    }

    /// Takes whole buffered chunks without copying (for relays that write them straight to a socket).
    pub fn channel_read_chunk(&mut self, id: ChannelId) -> Option<Bytes> {
        let now = self.now;
        let ch = self.channels.get_mut(&id)?;
        let b = ch.buf.pop_front()?;
        let n = b.len();
        let drained = ch.buf.is_empty() && ch.close_received;
        self.consumed(id, n, now);
        if drained {
            self.answer_close(id);
        }
        Some(b)
    }

    /// True while the channel is open and the peer has sent neither EOF nor CLOSE.
    pub fn channel_is_open(&self, id: ChannelId) -> bool {
        self.channels.get(&id).is_some_and(|ch| {
            ch.state == State::Open && !ch.eof_received && !ch.close_received && !ch.close_sent
        })
    }

    /// True when [`Self::channel_read`] would return data or EOF now.
    pub fn channel_has_data(&self, id: ChannelId) -> bool {
        self.channels
            .get(&id)
            .is_none_or(|ch| !ch.buf.is_empty() || ch.eof_received || ch.close_received)
    }

    fn consumed(&mut self, id: ChannelId, n: usize, now: std::time::Instant) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        if let Some(inc) = ch.recv.on_consumed(n, now, &mut self.budget)
            && !ch.close_sent
            && !ch.close_received
        {
            let mut p = vec![msg::CHANNEL_WINDOW_ADJUST];
            p.put_u32(ch.remote);
            p.put_u32(inc);
            self.send_app_or_fail(p);
        }
    }

    /// The channel `id`, if data may still be sent on it (open, and neither EOF nor CLOSE
    /// exchanged); otherwise the error every write returns.
    fn sendable(&mut self, id: ChannelId) -> Result<&mut Channel> {
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(Error::Protocol("write on a closed channel".into()));
        };
        if ch.eof_sent || ch.close_sent || ch.close_received {
            return Err(Error::Protocol("write after EOF or close".into()));
        }
        Ok(ch)
    }

    /// Writes as much of `data` as the peer's window and our output budget allow; 0 means
    /// "would block" and an [`Event::ChannelWritable`] will follow.
    pub fn channel_write(&mut self, id: ChannelId, data: &[u8]) -> Result<usize> {
        let can_send = self.transport.can_send_app() && self.held.is_empty();
        let out_len = self.transport.out.len();
        let ch = self.sendable(id)?;
        if ch.state != State::Open
            || !can_send
            || out_len >= OUT_HIGH_WATER
            || ch.send.available() == 0
        {
            if !self.blocked_writers.contains(&id) {
                self.blocked_writers.push(id);
            }
            return Ok(0);
        }
        let mut written = 0;
        let remote = ch.remote;
        while written < data.len() && self.transport.out.len() < OUT_HIGH_WATER {
            let ch = self.channels.get_mut(&id).expect("checked above");
            let n = (data.len() - written)
                .min(ch.send.available())
                .min(ch.send.max_packet());
            if n == 0 {
                break;
            }
            ch.send.consume(n);
            self.transport
                .send_channel_data(remote, &data[written..written + n])?;
            written += n;
        }
        if written == 0 && !self.blocked_writers.contains(&id) {
            self.blocked_writers.push(id);
        }
        Ok(written)
    }

    /// Sends `data` as exactly one CHANNEL_DATA message, or nothing: datagram channels
    /// (`tun@openssh.com`) give each message's data to the peer as one packet, so a packet
    /// split across messages would arrive as two broken ones. `Blocked` means "not now"
    /// (window, kex or output budget) and an [`Event::ChannelWritable`] will follow; a
    /// datagram larger than the peer's maximum packet can never be sent: `TooLarge`, and
    /// the caller drops it (as a router drops a packet over the MTU).
    pub fn channel_write_datagram(&mut self, id: ChannelId, data: &[u8]) -> Result<Datagram> {
        let can_send = self.transport.can_send_app() && self.held.is_empty();
        let out_len = self.transport.out.len();
        let ch = self.sendable(id)?;
        if data.len() > ch.send.max_packet() {
            return Ok(Datagram::TooLarge {
                max: ch.send.max_packet(),
            });
        }
        if ch.state != State::Open
            || !can_send
            || out_len >= OUT_HIGH_WATER
            || ch.send.available() < data.len()
        {
            if !self.blocked_writers.contains(&id) {
                self.blocked_writers.push(id);
            }
            return Ok(Datagram::Blocked);
        }
        ch.send.consume(data.len());
        let remote = ch.remote;
        self.transport.send_channel_data(remote, data)?;
        Ok(Datagram::Sent)
    }

    /// Sends extended data (stderr, data type code 1) within the peer's window, one packet at
    /// most; returns how much went out (0: no window now). For the short diagnostics a server
    /// owes a client it refuses (a refused shell says why on stderr, as sshd does).
    pub fn channel_write_stderr(&mut self, id: ChannelId, data: &[u8]) -> Result<usize> {
        let ch = self.sendable(id)?;
        if ch.state != State::Open {
            return Ok(0);
        }
        let n = data
            .len()
            .min(ch.send.available())
            .min(ch.send.max_packet());
        if n == 0 {
            return Ok(0);
        }
        ch.send.consume(n);
        let mut p = vec![msg::CHANNEL_EXTENDED_DATA];
        p.put_u32(ch.remote);
        p.put_u32(1);
        p.put_string(&data[..n]);
        self.send_app_or_fail(p);
        Ok(n)
    }

    /// Bytes the peer's window lets us send right now (0 also while a kex runs).
    pub fn channel_send_capacity(&self, id: ChannelId) -> usize {
        if !self.transport.can_send_app() {
            return 0;
        }
        self.channels.get(&id).map_or(0, |c| {
            if c.state == State::Open {
                c.send.available()
            } else {
                0
            }
        })
    }

    pub fn channel_eof(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        if ch.eof_sent || ch.close_sent || ch.state != State::Open {
            return;
        }
        ch.eof_sent = true;
        let mut p = vec![msg::CHANNEL_EOF];
        p.put_u32(ch.remote);
        self.send_app_or_fail(p);
    }

    /// Closes our side; buffered data is dropped and its window returned. The id stays in use
    /// until the peer's CLOSE, then [`Event::ChannelClosed`] follows.
    pub fn channel_close(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        ch.detached = true;
        ch.buf.clear();
        if ch.close_sent {
            return;
        }
        if ch.state == State::Offered {
            self.reject_channel(id, reason::CONNECT_FAILED, "closed");
            return;
        }
        if ch.state == State::Opening {
            // Cannot send CLOSE before we know the peer's id; close as soon as it is confirmed.
            return;
        }
        ch.close_sent = true;
        let mut p = vec![msg::CHANNEL_CLOSE];
        p.put_u32(ch.remote);
        self.send_app_or_fail(p);
        self.maybe_free(id);
    }

    /// Sends our CLOSE after the peer's (if not sent yet) and frees the channel.
    fn answer_close(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        if !ch.close_sent {
            ch.close_sent = true;
            let mut p = vec![msg::CHANNEL_CLOSE];
            p.put_u32(ch.remote);
            self.send_app_or_fail(p);
        }
        self.maybe_free(id);
    }

    fn maybe_free(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get(&id) else {
            return;
        };
        if ch.close_sent && ch.close_received {
            let mut ch = self.remove_channel(id).expect("present");
            ch.recv.release(&mut self.budget);
            self.blocked_writers.retain(|&x| x != id);
            self.events.push_back(Event::ChannelClosed { id });
        }
    }

    /// Sends a channel request (exec, env, exit-status, ...).
    pub fn channel_request(&mut self, id: ChannelId, request: &ChannelRequest, want_reply: bool) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        if ch.close_sent {
            return;
        }
        let mut p = vec![msg::CHANNEL_REQUEST];
        p.put_u32(ch.remote);
        let (name, body): (&str, Vec<u8>) = match request {
            ChannelRequest::Exec(cmd) => ("exec", string_body(cmd)),
            ChannelRequest::Shell => ("shell", vec![]),
            ChannelRequest::Subsystem(s) => ("subsystem", string_body(s.as_bytes())),
            ChannelRequest::Env { name, value } => {
                let mut b = string_body(name.as_bytes());
                b.put_string(value);
                ("env", b)
            }
            ChannelRequest::ExitStatus(code) => {
                let mut b = Vec::new();
                b.put_u32(*code);
                ("exit-status", b)
            }
            ChannelRequest::ExitSignal {
                signal,
                core_dumped,
                message,
            } => {
                let mut b = string_body(signal.as_bytes());
                b.put_bool(*core_dumped);
                b.put_string(message.as_bytes());
                b.put_string(b"");
                ("exit-signal", b)
            }
            ChannelRequest::Signal(s) => ("signal", string_body(s.as_bytes())),
            ChannelRequest::AuthAgentReq => ("auth-agent-req@openssh.com", vec![]),
            ChannelRequest::PtyReq | ChannelRequest::X11Req | ChannelRequest::WindowChange => {
                return;
            }
            ChannelRequest::Other(n) => (n.as_str(), vec![]),
        };
        p.put_string(name.as_bytes());
        p.put_bool(want_reply);
        p.extend_from_slice(&body);
        if want_reply {
            ch.outstanding.push_back(false);
        }
        self.send_app_or_fail(p);
    }

    /// Answers the peer's channel request `request_id` (replies leave in request order).
    pub fn channel_request_reply(&mut self, id: ChannelId, request_id: RequestId, ok: bool) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        if let Some(slot) = ch.pending_replies.iter_mut().find(|r| r.0 == request_id) {
            slot.1 = Some(ok);
        }
        self.flush_channel_replies(id);
    }

    fn flush_channel_replies(&mut self, id: ChannelId) {
        loop {
            let Some(ch) = self.channels.get_mut(&id) else {
                return;
            };
            let Some((_, Some(ok))) = ch.pending_replies.front() else {
                return;
            };
            let ok = *ok;
            ch.pending_replies.pop_front();
            if ch.close_sent {
                continue;
            }
            let mut p = vec![if ok {
                msg::CHANNEL_SUCCESS
            } else {
                msg::CHANNEL_FAILURE
            }];
            p.put_u32(ch.remote);
            self.send_app_or_fail(p);
        }
    }

    /// Sends a global request; [`Event::GlobalReply`] follows if `want_reply`.
    pub fn global_request(&mut self, request: &GlobalRequest, want_reply: bool) {
        let mut p = vec![msg::GLOBAL_REQUEST];
        match request {
            GlobalRequest::TcpipForward { address, port }
            | GlobalRequest::CancelTcpipForward { address, port } => {
                let name: &[u8] = if matches!(request, GlobalRequest::TcpipForward { .. }) {
                    b"tcpip-forward"
                } else {
                    b"cancel-tcpip-forward"
                };
                p.put_string(name);
                p.put_bool(want_reply);
                p.put_string(address.as_bytes());
                p.put_u32(*port);
            }
            GlobalRequest::StreamlocalForward { path }
            | GlobalRequest::CancelStreamlocalForward { path } => {
                let name: &[u8] = if matches!(request, GlobalRequest::StreamlocalForward { .. }) {
                    b"streamlocal-forward@openssh.com"
                } else {
                    b"cancel-streamlocal-forward@openssh.com"
                };
                p.put_string(name);
                p.put_bool(want_reply);
                p.put_string(path.as_bytes());
            }
            GlobalRequest::Other(n) => {
                p.put_string(n.as_bytes());
                p.put_bool(want_reply);
            }
        }
        if want_reply {
            self.global_outstanding.push_back(false);
        }
        self.send_app_or_fail(p);
    }

    pub(crate) fn send_keepalive(&mut self) {
        if !self.auth.is_authenticated() {
            // Before authentication the peer may not know global requests yet; the transport
            // still proves liveness with IGNORE.
            let _ = self.transport.send(&[msg::IGNORE, 0, 0, 0, 0]);
            return;
        }
        let mut p = vec![msg::GLOBAL_REQUEST];
        p.put_string(b"keepalive@openssh.com");
        p.put_bool(true);
        self.global_outstanding.push_back(true);
        self.send_app_or_fail(p);
    }

    /// Answers the peer's global request; `data` is the reply body on success (tcpip-forward
    /// with port 0: the port chosen, as u32).
    pub fn global_reply(&mut self, request_id: RequestId, ok: bool, data: &[u8]) {
        if let Some(slot) = self.global_pending.iter_mut().find(|r| r.0 == request_id) {
            let mut p = vec![if ok {
                msg::REQUEST_SUCCESS
            } else {
                msg::REQUEST_FAILURE
            }];
            if ok {
                p.extend_from_slice(data);
            }
            slot.1 = Some(p);
        }
        while let Some((_, Some(_))) = self.global_pending.front() {
            let (_, p) = self.global_pending.pop_front().expect("front exists");
            self.send_app_or_fail(p.expect("matched Some"));
        }
    }

    pub(crate) fn on_connection_message(&mut self, p: Bytes) -> Result<()> {
        let n = p[0];
        let mut r = Reader::new(&p[1..], "connection message");
        match n {
            msg::GLOBAL_REQUEST => {
                let name = r.utf8()?.to_owned();
                let want_reply = r.bool()?;
                let request = match name.as_str() {
                    "tcpip-forward" => GlobalRequest::TcpipForward {
                        address: r.utf8()?.to_owned(),
                        port: r.u32()?,
                    },
                    "cancel-tcpip-forward" => GlobalRequest::CancelTcpipForward {
                        address: r.utf8()?.to_owned(),
                        port: r.u32()?,
                    },
                    "streamlocal-forward@openssh.com" => GlobalRequest::StreamlocalForward {
                        path: r.utf8()?.to_owned(),
                    },
                    "cancel-streamlocal-forward@openssh.com" => {
                        GlobalRequest::CancelStreamlocalForward {
                            path: r.utf8()?.to_owned(),
                        }
                    }
                    _ => GlobalRequest::Other(name),
                };
                let request_id = self.next_request_id();
                if let GlobalRequest::Other(_) = &request {
                    // keepalive@openssh.com, hostkeys-00@openssh.com, ...: refuse, as OpenSSH does for unknown ones.
                    if want_reply {
                        self.global_pending
                            .push_back((request_id, Some(vec![msg::REQUEST_FAILURE])));
                        self.global_reply(u64::MAX, false, &[]);
                    }
                    return Ok(());
                }
                if want_reply {
                    if self.global_pending.len() >= 64 {
                        return Err(Error::Protocol("too many global requests in flight".into()));
                    }
                    self.global_pending.push_back((request_id, None));
                }
                self.events.push_back(Event::GlobalRequest {
                    request_id,
                    request,
                    want_reply,
                });
                Ok(())
            }
            msg::REQUEST_SUCCESS | msg::REQUEST_FAILURE => {
                let internal = self
                    .global_outstanding
                    .pop_front()
                    .ok_or_else(|| Error::Protocol("global reply without a request".into()))?;
                if !internal {
                    let data = p.slice(1..);
                    self.events.push_back(Event::GlobalReply {
                        ok: n == msg::REQUEST_SUCCESS,
                        data,
                    });
                }
                Ok(())
            }
            msg::CHANNEL_OPEN => {
                let kind_name = r.utf8()?.to_owned();
                let remote = r.u32()?;
                let window = r.u32()?;
                let max_packet = r.u32()?;
                let kind = parse_kind(&kind_name, &mut r, &self.config.extension_channels)?;
                let reject = |s: &mut Session, code: u32, why: &str| {
                    let mut f = vec![msg::CHANNEL_OPEN_FAILURE];
                    f.put_u32(remote);
                    f.put_u32(code);
                    f.put_string(why.as_bytes());
                    f.put_string(b"");
                    s.send_app_or_fail(f);
                };
                if let ChannelKind::Other(_) = kind {
                    reject(self, reason::UNKNOWN_CHANNEL_TYPE, "unknown channel type");
                    return Ok(());
                }
                let Some(id) = self.alloc_channel_id(true) else {
                    reject(self, reason::RESOURCE_SHORTAGE, "too many channels");
                    return Ok(());
                };
                let recv = self.new_recv();
                let send = SendWindow::new(window, max_packet.clamp(1, 256 * 1024));
                let mut ch = Channel::new(State::Offered, remote, recv, send);
                ch.by_peer = true;
                self.channels.insert(id, ch);
                self.peer_channels += 1;
                self.events
                    .push_back(Event::ChannelOpenRequest { id, kind });
                Ok(())
            }
            _ => self.on_channel_message(n, r),
        }
    }

    fn on_channel_message(&mut self, n: u8, mut r: Reader<'_>) -> Result<()> {
        let id = r.u32()?;
        let now = self.now;
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(Error::Protocol(format!(
                "message {n} for unknown channel {id}"
            )));
        };
        if ch.state == State::Offered || (ch.state == State::Opening && !matches!(n, 91 | 92)) {
            return Err(Error::Protocol(format!(
                "message {n} for channel {id} that is not open"
            )));
        }
        match n {
            msg::CHANNEL_OPEN_CONFIRMATION => {
                if ch.state != State::Opening {
                    return Err(Error::Protocol("duplicate channel confirmation".into()));
                }
                ch.remote = r.u32()?;
                let window = r.u32()?;
                let max_packet = r.u32()?;
                ch.send = SendWindow::new(window, max_packet.clamp(1, 256 * 1024));
                ch.state = State::Open;
                if ch.detached {
                    self.channel_close(id);
                } else {
                    self.events.push_back(Event::ChannelOpened { id });
                }
            }
            msg::CHANNEL_OPEN_FAILURE => {
                if ch.state != State::Opening {
                    return Err(Error::Protocol(
                        "channel failure for an open channel".into(),
                    ));
                }
                let reason_code = r.u32()?;
                let description = String::from_utf8_lossy(r.string()?).into_owned();
                let mut ch = self.remove_channel(id).expect("present");
                ch.recv.release(&mut self.budget);
                self.events.push_back(Event::ChannelOpenFailed {
                    id,
                    reason: reason_code,
                    description,
                });
            }
            msg::CHANNEL_WINDOW_ADJUST => {
                let inc = r.u32()?;
                let was_zero = ch.send.available() == 0;
                ch.send.on_adjust(inc)?;
                if was_zero && self.blocked_writers.contains(&id) {
                    self.blocked_writers.retain(|&x| x != id);
                    self.events.push_back(Event::ChannelWritable { id });
                }
            }
            msg::CHANNEL_DATA => {
                if ch.eof_received || ch.close_received {
                    return Err(Error::Protocol("data after EOF".into()));
                }
                let data = r.string()?;
                ch.recv.on_data(data.len(), now)?;
                if ch.detached {
                    // Nobody will read it: grant it straight back so the peer can finish and close.
                    let len = data.len();
                    self.consumed(id, len, now);
                    return Ok(());
                }
                let was_empty = ch.buf.is_empty();
                // Copied rather than sliced from the packet: a slice would pin the whole receive
                // buffer it came from, so a stalled channel could hold far more than its window.
                ch.buf.push_back(Bytes::copy_from_slice(data));
                if was_empty {
                    self.events.push_back(Event::ChannelReadable { id });
                }
            }
            msg::CHANNEL_EXTENDED_DATA => {
                let _code = r.u32()?;
                let data = r.string()?;
                ch.recv.on_data(data.len(), now)?;
                let len = data.len();
                let data = Bytes::copy_from_slice(data);
                if !ch.detached {
                    self.events.push_back(Event::ChannelStderr { id, data });
                }
                self.consumed(id, len, now);
            }
            msg::CHANNEL_EOF => {
                ch.eof_received = true;
                if ch.buf.is_empty() {
                    self.events.push_back(Event::ChannelReadable { id });
                }
                self.events.push_back(Event::ChannelEof { id });
            }
            msg::CHANNEL_CLOSE => {
                if ch.close_received {
                    return Err(Error::Protocol("duplicate channel close".into()));
                }
                ch.close_received = true;
                if !ch.detached {
                    self.events.push_back(Event::ChannelReadable { id });
                }
                // RFC 4254 §5.3: answer with our own CLOSE — but only once the application has
                // read what was buffered, since answering frees the channel and its data with it.
                if ch.detached || ch.buf.is_empty() {
                    self.answer_close(id);
                }
            }
            msg::CHANNEL_REQUEST => {
                let name = r.utf8()?.to_owned();
                let want_reply = r.bool()?;
                let request = match name.as_str() {
                    "exec" => ChannelRequest::Exec(r.string()?.to_vec()),
                    "shell" => ChannelRequest::Shell,
                    "subsystem" => ChannelRequest::Subsystem(r.utf8()?.to_owned()),
                    "env" => ChannelRequest::Env {
                        name: r.utf8()?.to_owned(),
                        value: r.string()?.to_vec(),
                    },
                    "pty-req" => ChannelRequest::PtyReq,
                    "x11-req" => ChannelRequest::X11Req,
                    "auth-agent-req@openssh.com" => ChannelRequest::AuthAgentReq,
                    "window-change" => ChannelRequest::WindowChange,
                    "signal" => ChannelRequest::Signal(r.utf8()?.to_owned()),
                    "exit-status" => ChannelRequest::ExitStatus(r.u32()?),
                    "exit-signal" => ChannelRequest::ExitSignal {
                        signal: r.utf8()?.to_owned(),
                        core_dumped: r.bool()?,
                        message: String::from_utf8_lossy(r.string()?).into_owned(),
                    },
                    _ => ChannelRequest::Other(name),
                };
                let request_id = self.next_request_id();
                let ch = self.channels.get_mut(&id).expect("present");
                if want_reply {
                    if ch.pending_replies.len() >= 64 {
                        return Err(Error::Protocol(
                            "too many channel requests in flight".into(),
                        ));
                    }
                    ch.pending_replies.push_back((request_id, None));
                }
                if let ChannelRequest::Other(_) = request {
                    // keepalive@openssh.com and anything unknown: refused, as OpenSSH does.
                    if want_reply {
                        self.channel_request_reply(id, request_id, false);
                    }
                    return Ok(());
                }
                self.events.push_back(Event::ChannelRequest {
                    id,
                    request_id,
                    request,
                    want_reply,
                });
            }
            msg::CHANNEL_SUCCESS | msg::CHANNEL_FAILURE => {
                let internal = ch
                    .outstanding
                    .pop_front()
                    .ok_or_else(|| Error::Protocol("channel reply without a request".into()))?;
                if !internal {
                    self.events.push_back(Event::ChannelRequestReply {
                        id,
                        ok: n == msg::CHANNEL_SUCCESS,
                    });
                }
            }
            _ => return Err(Error::Protocol(format!("unknown connection message {n}"))),
        }
        Ok(())
    }

    /// Data buffered for the application on this channel (bounded by the channel's window).
    pub fn channel_buffered(&self, id: ChannelId) -> usize {
        self.channels.get(&id).map_or(0, |c| c.recv.buffered())
    }

    /// Window the peer may still use on this channel before it must wait for us.
    pub fn channel_peer_window(&self, id: ChannelId) -> u32 {
        self.channels.get(&id).map_or(0, |c| c.recv.granted())
    }

    /// The channel's current receive window target (grows with autotuning).
    pub fn channel_window_target(&self, id: ChannelId) -> u32 {
        self.channels.get(&id).map_or(0, |c| c.recv.target())
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Charges the channel's window growth to `pool` too, within the session's budget: for
    /// a session that carries many users' connections, the pool of the user this channel
    /// serves. Call it before data flows (growth before the call is the session's only).
    pub fn set_channel_pool(
        &mut self,
        id: ChannelId,
        pool: std::sync::Arc<dyn crate::channel::WindowPool>,
    ) {
        if let Some(ch) = self.channels.get_mut(&id) {
            ch.recv.set_owner_pool(pool);
        }
    }
}

fn string_body(s: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_string(s);
    b
}
