//! How the SSH connection's own socket is read, shared by the client and the server.
//!
//! russh reads every packet with two `read_exact` calls straight on the stream: the
//! length block, then the rest. On a bulk transfer that is two `recvfrom` system calls
//! per 32 KiB packet, and each one usually returns as soon as part of the packet has
//! arrived, so the receiving side wakes up far more often than the data warrants.
//! OpenSSH reads whatever the socket holds (often 100+ KiB) in one call. Putting a read
//! buffer between russh and the socket does the same: one system call fills the buffer
//! with several packets and russh's small reads are served from memory. Measured on
//! loopback (2 GiB through `-L` from sshd): 131,611 `recvfrom` calls without it.
//!
//! On TCP the client also acknowledges what it received as soon as it has handled it and
//! has nothing to send ([`buffered_tcp`]). sshd leaves Nagle's algorithm on for sessions
//! without a terminal, so it holds back a small packet while an earlier one is
//! unacknowledged, and Linux delays that acknowledgement by up to 40 ms when the receiver
//! sends nothing back. When a -R connection ends, sshd's last packet for it got no reply,
//! so sshd's channel open for the next connection waited those 40 ms: ssh pays it on
//! every -R connection (~27 connections/s), warren paid it on about one in ten (185/s);
//! now ~2,000/s. `TCP_QUICKACK` sends the pending acknowledgement. It is set when the
//! socket runs dry with something received and nothing sent since, not after every read:
//! during a bulk transfer that is rare, and whatever warren writes first (a window adjust,
//! a reply) carries the acknowledgement anyway. The cost is one pure acknowledgement per
//! message that warren does not answer on the SSH connection before it goes idle, e.g.
//! each reply in a request/response exchange: measured as a 64-byte echo p50 of ×1.08–1.28
//! of ssh's against ×0.87–1.09 without it (loopback, noisy). warrend does not set it: with
//! ssh as the client its -R path showed no such stall (~1,900 connections/s).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;

/// Read buffer per SSH connection. A few packets' worth: large enough that one system
/// call drains what a loopback or LAN socket typically holds, small enough not to matter
/// per connection (the pages are only touched once that much data arrives at once).
pub const READ_BUFFER: usize = 256 * 1024;

/// How much of the stream's start is searched for the peer's identification line (the
/// lines a server may send before it are allowed but short).
const ID_SCAN_LIMIT: usize = 8 * 1024;

/// The peer's identification line (`SSH-2.0-OpenSSH_9.2p1 Debian-2`), once it arrived.
/// russh reads it but does not hand it to the client; the client names the server's
/// software with it (as `ssh -v` does) and, like OpenSSH's compat flags, adapts to it.
#[derive(Clone, Debug, Default)]
pub struct PeerId(Arc<OnceLock<String>>);

impl PeerId {
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Wraps an SSH connection's byte stream (a proxy command's pipes, a jump host's channel)
/// so russh's reads are batched. Writes pass straight through.
pub fn buffered<S: AsyncRead>(stream: S) -> Transport<S> {
    Transport {
        inner: BufReader::with_capacity(READ_BUFFER, stream),
        ack_now: None,
        unanswered: false,
        peer_id: PeerId::default(),
        id_scan: Some(Vec::new()),
    }
}

/// [`buffered`] for a TCP connection, acknowledging received data as soon as there is
/// nothing to send with the acknowledgement (see the module docs).
pub fn buffered_tcp(stream: TcpStream) -> Transport<TcpStream> {
    Transport {
        inner: BufReader::with_capacity(READ_BUFFER, stream),
        ack_now: Some(|s| {
            let _ = s.set_quickack(true);
        }),
        unanswered: false,
        peer_id: PeerId::default(),
        id_scan: Some(Vec::new()),
    }
}

/// A read buffer over an SSH connection's stream.
pub struct Transport<S> {
    inner: BufReader<S>,
    /// Makes the kernel acknowledge what was received, now.
    ack_now: Option<fn(&S)>,
    /// Data was read and nothing written since, so its acknowledgement is still delayed.
    unanswered: bool,
    peer_id: PeerId,
    /// The stream's start, kept until the identification line is complete.
    id_scan: Option<Vec<u8>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let refills = this.inner.buffer().is_empty();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.id_scan.is_some() && matches!(polled, Poll::Ready(Ok(()))) {
            this.scan_id(&buf.filled()[before..]);
        }
        if let Some(ack_now) = this.ack_now.filter(|_| refills) {
            match polled {
                Poll::Ready(_) => this.unanswered = true,
                // Everything received is handled and we are about to wait: if no reply
                // carried the acknowledgement, send it rather than let the peer's Nagle
                // wait for the delayed one.
                Poll::Pending if this.unanswered => {
                    ack_now(this.inner.get_ref());
                    this.unanswered = false;
                }
                Poll::Pending => {}
            }
        }
        polled
    }
}

impl<S> Transport<S> {
    /// Where the peer's identification line will be found once it arrived.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id.clone()
    }

    /// Looks for the `SSH-` line in what was read so far (other lines may come first).
    fn scan_id(&mut self, read: &[u8]) {
        let Some(seen) = self.id_scan.as_mut() else {
            return;
        };
        seen.extend_from_slice(read);
        let mut start = 0;
        while let Some(end) = seen[start..].iter().position(|&b| b == b'\n') {
            let line = &seen[start..start + end];
            if line.starts_with(b"SSH-") {
                let line = String::from_utf8_lossy(line);
                let _ = self.peer_id.0.set(line.trim_end_matches('\r').to_string());
                self.id_scan = None;
                return;
            }
            start += end + 1;
        }
        if seen.len() > ID_SCAN_LIMIT {
            self.id_scan = None;
        }
    }

    fn wrote(&mut self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.unanswered = false;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        this.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Reads all of `input` through a transport in `chunk`-byte reads (so the line
    /// arrives in pieces) and returns what the peer id became.
    async fn id_of(input: &'static [u8], chunk: usize) -> Option<String> {
        let mut t = buffered(input);
        let id = t.peer_id();
        let mut buf = vec![0u8; chunk];
        let mut all = Vec::new();
        loop {
            let n = t.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(all, input, "the scan must not change what is read");
        id.get().map(str::to_string)
    }

    #[tokio::test]
    async fn the_identification_line_is_found_after_other_lines_and_in_pieces() {
        let input =
            b"Welcome to the bastion\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\x00\x00\x01\x2c\x14";
        for chunk in [1, 5, 7, 4096] {
            assert_eq!(
                id_of(input, chunk).await.as_deref(),
                Some("SSH-2.0-OpenSSH_9.2p1 Debian-2"),
                "chunk {chunk}"
            );
        }
        assert_eq!(
            id_of(b"SSH-2.0-warrend_0.1.0\n", 3).await.as_deref(),
            Some("SSH-2.0-warrend_0.1.0")
        );
    }

    #[tokio::test]
    async fn no_identification_line_means_none() {
        assert_eq!(id_of(b"HTTP/1.1 400 Bad Request\r\n\r\n", 8).await, None);
        assert_eq!(id_of(b"SSH-2.0-never-ends", 4).await, None);
    }
}
