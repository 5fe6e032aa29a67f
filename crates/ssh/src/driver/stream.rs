//! A channel as a tokio byte stream. Reading is what grants the peer more window, so a
//! stream nobody reads stops its sender after one window — and nothing else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Handle, closed_err};
use crate::proto::{ChannelId, Datagram, Read};

pub struct ChannelStream {
    handle: Option<Handle>,
    id: ChannelId,
    eof_sent: bool,
}

impl ChannelStream {
    pub(crate) fn new(handle: Handle, id: ChannelId) -> Self {
        ChannelStream {
            handle: Some(handle),
            id,
            eof_sent: false,
        }
    }

    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// See [`Handle::channel_is_open`].
    pub fn is_open(&self) -> bool {
        self.handle().channel_is_open(self.id)
    }

    pub fn handle(&self) -> &Handle {
        self.handle.as_ref().expect("handle present until drop")
    }

    /// Completes once the channel is closed (both CLOSEs exchanged) or the connection ended.
    /// Unlike EOF, which ends only the peer's data, this is the end of the channel: a
    /// server that keeps a channel for the requests on it (a "session") waits for this.
    pub async fn closed(&self) {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(h) = self.handle.as_ref() else {
            return Poll::Ready(());
        };
        let mut st = h.shared.lock();
        if st.ended.is_some() {
            return Poll::Ready(());
        }
        match st.waiters.get_mut(&self.id) {
            Some(w) if !w.closed => {
                if !w.on_close.iter().any(|x| x.will_wake(cx.waker())) {
                    w.on_close.push(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// Forgets the channel without sending CLOSE (it was refused and never existed on the wire).
    pub(crate) fn detach(mut self) -> Handle {
        let h = self.handle.take().expect("handle present");
        h.shared.lock().forget_waiters(self.id);
        h
    }
}

/// Datagram channels (`tun@openssh.com`): one message is one packet, both ways. These
/// take `&self` so that one task may read while another writes (an `Arc<ChannelStream>`).
impl ChannelStream {
    /// The next whole message the peer sent; `None` at EOF or close.
    pub fn poll_recv_datagram(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<bytes::Bytes>>> {
        let h = self.handle();
        let mut st = h.shared.lock();
        st.session.set_time(std::time::Instant::now());
        if let Some(b) = st.session.channel_read_chunk(self.id) {
            let queued = !st.session.transmit().is_empty();
            drop(st);
            if queued {
                // A WINDOW_ADJUST may be waiting: let the driver send it.
                h.shared.wake.notify_one();
            }
            return Poll::Ready(Ok(Some(b)));
        }
        if st.session.channel_has_data(self.id) {
            // Nothing buffered but EOF, close, or a channel already gone.
            return Poll::Ready(Ok(None));
        }
        if st.ended.is_some() {
            return Poll::Ready(Err(closed_err(&st.ended)));
        }
        match st.waiters.get_mut(&self.id) {
            Some(w) if w.closed => Poll::Ready(Ok(None)),
            Some(w) => {
                w.read = Some(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(Ok(None)),
        }
    }

    /// Sends `data` as one message, waiting for window if needed.
    pub fn poll_send_datagram(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<()>> {
        let h = self.handle();
        let mut st = h.shared.lock();
        if st.ended.is_some() {
            return Poll::Ready(Err(closed_err(&st.ended)));
        }
        if st.waiters.get(&self.id).is_none_or(|w| w.closed) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "channel closed by peer",
            )));
        }
        match st.session.channel_write_datagram(self.id, data) {
            Ok(Datagram::Sent) => {
                drop(st);
                h.shared.wake.notify_one();
                Poll::Ready(Ok(()))
            }
            Ok(Datagram::Blocked) => {
                if let Some(w) = st.waiters.get_mut(&self.id) {
                    w.write = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            // The one error a caller goes on after: it drops this packet.
            Ok(Datagram::TooLarge { max }) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a {}-byte packet exceeds the peer's maximum of {max}",
                    data.len()
                ),
            ))),
            Err(e) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                e.to_string(),
            ))),
        }
    }

    pub async fn recv_datagram(&self) -> io::Result<Option<bytes::Bytes>> {
        std::future::poll_fn(|cx| self.poll_recv_datagram(cx)).await
    }

    pub async fn send_datagram(&self, data: &[u8]) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send_datagram(cx, data)).await
    }
}

impl ChannelStream {
    /// Moves up to `max` bytes into `out` as the shared chunks they arrived in, granting
    /// them back to the peer; `Ok(0)` is EOF. A relay that writes them to a socket with
    /// `writev` copies nothing itself (see `Session::channel_read_chunks`).
    pub fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut std::collections::VecDeque<bytes::Bytes>,
    ) -> Poll<io::Result<usize>> {
        if max == 0 {
            return Poll::Ready(Ok(0));
        }
        self.poll_take(cx, |session, id| session.channel_read_chunks(id, max, out))
    }

    /// One read under the lock, and what follows it: the driver woken when the read
    /// queued a WINDOW_ADJUST, or this task registered to be woken by more data.
    fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut crate::proto::Session, ChannelId) -> Read,
    ) -> Poll<io::Result<usize>> {
        let h = self.handle.as_ref().expect("handle present until drop");
        let mut st = h.shared.lock();
        st.session.set_time(std::time::Instant::now());
        match take(&mut st.session, self.id) {
            Read::Data(n) => {
                let queued = !st.session.transmit().is_empty();
                drop(st);
                if queued {
                    // A WINDOW_ADJUST may be waiting: let the driver send it.
                    h.shared.wake.notify_one();
                }
                Poll::Ready(Ok(n))
            }
            Read::Eof => Poll::Ready(Ok(0)),
            Read::WouldBlock => {
                if st.ended.is_some() {
                    return Poll::Ready(Err(closed_err(&st.ended)));
                }
                if let Some(w) = st.waiters.get_mut(&self.id) {
                    if w.closed {
                        return Poll::Ready(Ok(0));
                    }
                    w.read = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for ChannelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            // Nothing asked for: not a reason to wait (AsyncRead's contract).
            return Poll::Ready(Ok(()));
        }
        // Straight into the caller's memory, which may be uninitialised (a relay's
        // `poll_read_buf` passes a BytesMut's spare capacity): zeroing it first would
        // touch every byte twice, and all of a 256 KiB buffer for a 4-byte message.
        let max = buf.remaining();
        self.get_mut()
            .poll_take(cx, |session, id| {
                session.channel_read_with(id, max, |part| buf.put_slice(part))
            })
            .map_ok(|_| ())
    }
}

impl AsyncWrite for ChannelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    /// Several slices under one lock and one wake of the driver: a relay hands over the
    /// chunks another channel's packets arrived in, which are then copied once, into
    /// this channel's packets.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let h = this.handle.as_ref().expect("handle present until drop");
        let mut st = h.shared.lock();
        if st.ended.is_some() {
            return Poll::Ready(Err(closed_err(&st.ended)));
        }
        if st.waiters.get(&this.id).is_none_or(|w| w.closed) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "channel closed by peer",
            )));
        }
        let mut written = 0;
        for data in bufs {
            match st.session.channel_write(this.id, data) {
                Ok(n) => {
                    written += n;
                    if n < data.len() {
                        break;
                    }
                }
                // What was taken before the error stands; the error comes with the next call.
                Err(_) if written > 0 => break,
                Err(e) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        e.to_string(),
                    )));
                }
            }
        }
        if written == 0 && bufs.iter().any(|b| !b.is_empty()) {
            if let Some(w) = st.waiters.get_mut(&this.id) {
                w.write = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        drop(st);
        h.shared.wake.notify_one();
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data is in the connection's output buffer as soon as poll_write returns; the driver
        // writes it out. There is no per-channel buffer to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.eof_sent {
            this.eof_sent = true;
            let h = this.handle.as_ref().expect("handle present until drop");
            h.with(|st| st.session.channel_eof(this.id));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for ChannelStream {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let id = self.id;
            h.with(|st| {
                st.forget_waiters(id);
                st.session.channel_close(id);
            });
        }
    }
}
