//! How the SSH connection's own socket is read.
//!
//! On TCP the client acknowledges what it received as soon as it has handled it and has
//! nothing to send ([`QuickAck`]). sshd leaves Nagle's algorithm on for sessions without
//! a terminal, so it holds back a small packet while an earlier one is unacknowledged,
//! and Linux delays that acknowledgement by up to 40 ms when the receiver sends nothing
//! back. When a -R connection ends, sshd's last packet for it got no reply, so sshd's
//! channel open for the next connection waited those 40 ms: ssh pays it on every -R
//! connection (~27 connections/s), warren paid it on about one in ten (185/s); with the
//! acknowledgement sent at once, ~2,000/s. `TCP_QUICKACK` sends the pending
//! acknowledgement. It is set when the socket runs dry with something received and
//! nothing sent since, and is still so after the tasks that data woke have had their turn
//! (a confirmed channel sending its first bytes answers at once), not after every read:
//! during a bulk transfer that is rare, and
//! whatever warren writes first (a window adjust, a reply) carries the acknowledgement
//! anyway. The cost is one pure acknowledgement per message that warren does not answer
//! on the SSH connection before it goes idle, e.g. each reply in a request/response
//! exchange: measured as a 64-byte echo p50 of ×1.08–1.28 of ssh's against ×0.87–1.09
//! without it (loopback, noisy). warrend does not set it: with ssh as the client its -R
//! path showed no such stall (~1,900 connections/s).
//!
//! The SSH engine reads 256 KiB per system call itself, so no read buffer sits in front of it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client's TCP connection to the server, acknowledging received data as soon as there
/// is nothing to send with the acknowledgement (see the module docs).
pub struct QuickAck {
    inner: TcpStream,
    /// Data was read and nothing written since, so its acknowledgement is still delayed.
    unanswered: bool,
    /// The socket ran dry once with the acknowledgement still owed, and the reader was woken
    /// to look again after the tasks that data woke have run (see `poll_read`).
    deferred: bool,
}

impl QuickAck {
    pub fn new(inner: TcpStream) -> QuickAck {
        QuickAck {
            inner,
            unanswered: false,
            deferred: false,
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(_) => {
                this.unanswered = true;
                this.deferred = false;
            }
            // What was received is handled, but the tasks it woke (a channel whose open was
            // confirmed, a reader about to answer) have not run yet: let them, and look again.
            // When one of them writes, that packet carries the acknowledgement, and the pure
            // one (a system call and a segment on the critical path of a connection's setup)
            // is not sent.
            Poll::Pending if this.unanswered && !this.deferred => {
                this.deferred = true;
                cx.waker().wake_by_ref();
            }
            // Still nothing written: send the acknowledgement rather than let the peer's
            // Nagle wait for the delayed one.
            Poll::Pending if this.unanswered => {
                let _ = this.inner.set_quickack(true);
                this.unanswered = false;
                this.deferred = false;
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.unanswered = false;
            this.deferred = false;
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
