//! A read buffer that only grows as far as the message being parsed is allowed to be.
//!
//! Handshakes must not lose bytes a client sends early (SOCKS optimistic data, the start
//! of a tunnelled TLS hello after `CONNECT`), so whatever was read past a message stays
//! here and is handed out first by the [`AsyncRead`] impl that relaying uses.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// One read asks for at most this much, so a flood of early data is not slurped.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// A stream with bytes read ahead of the parser. `storage[start..end]` holds them; the rest
/// of `storage` is scratch space that reads land in, so a read cancelled by a timeout leaves
/// nothing half-done behind.
pub(crate) struct Buffered<S> {
    inner: S,
    storage: Vec<u8>,
    start: usize,
    end: usize,
}

impl<S> Buffered<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self::with_buffer(inner, Vec::new())
    }

    /// Wraps a stream whose first bytes were already read into `buf`.
    pub(crate) fn with_buffer(inner: S, buf: Vec<u8>) -> Self {
        let end = buf.len();
        Buffered {
            inner,
            storage: buf,
            start: 0,
            end,
        }
    }

    /// Bytes read but not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        self.storage.get(self.start..self.end).unwrap_or_default()
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // A connection that goes on to relay should not keep a head-sized buffer.
            if self.storage.len() > 2 * READ_CHUNK {
                self.storage = Vec::new();
            }
        }
    }

    /// Takes `n` buffered bytes (fewer if fewer are buffered).
    pub(crate) fn take_front(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.buffered().len());
        let out = self.buffered().get(..n).unwrap_or_default().to_vec();
        self.consume(n);
        out
    }

    /// The stream and the bytes read ahead of it, for a new owner.
    pub(crate) fn into_parts(self) -> (S, Vec<u8>) {
        let rest = self.buffered().to_vec();
        (self.inner, rest)
    }
}

impl<S: AsyncRead + Unpin> Buffered<S> {
    /// Reads once, keeping at most `cap` bytes buffered in total; `Ok(0)` is EOF. Callers
    /// check `buffered().len() < cap` first: a full buffer is a parser's size limit.
    pub(crate) async fn fill(&mut self, cap: usize) -> io::Result<usize> {
        if self.start > 0 {
            self.storage.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = cap.saturating_sub(self.end).min(READ_CHUNK);
        if room == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too long",
            ));
        }
        if self.storage.len() < self.end + room {
            self.storage.resize(self.end + room, 0);
        }
        let n = match self.storage.get_mut(self.end..self.end + room) {
            Some(spare) => self.inner.read(spare).await?,
            None => 0,
        };
        self.end += n;
        Ok(n)
    }

    /// Makes sure `n` bytes are buffered; EOF before that is an error.
    pub(crate) async fn need(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.buffered().len() < n {
            if self.fill(n.max(READ_CHUNK)).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buffered())
    }

    /// Reads up to a NUL and returns what came before it, or `None` if no NUL is within
    /// `max` bytes (SOCKS4 strings are NUL-terminated and otherwise unbounded).
    pub(crate) async fn take_until_nul(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == 0) {
                let s = self.take_front(i);
                self.consume(1);
                return Ok(Some(s));
            }
            if self.buffered().len() > max {
                return Ok(None);
            }
            if self.fill(max + 1 + READ_CHUNK).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads one line (through `\n`, returned with it) of at most `max` bytes, for chunked
    /// framing, whose size and trailer lines have no length of their own.
    pub(crate) async fn take_line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                return Ok(self.take_front(i + 1));
            }
            if self.buffered().len() >= max {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill(max).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Buffered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let ahead = this.buffered();
        if ahead.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let n = ahead.len().min(out.remaining());
        out.put_slice(ahead.get(..n).unwrap_or_default());
        this.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Buffered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn read_ahead_bytes_come_out_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"user\0rest").await.unwrap();
        let mut s = Buffered::new(b);
        assert_eq!(s.take_until_nul(16).await.unwrap().unwrap(), b"user");
        a.write_all(b"+more").await.unwrap();
        drop(a);
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"rest+more");
    }

    #[tokio::test]
    async fn missing_nul_is_bounded() {
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(&[b'x'; 300]).await.unwrap();
        let mut s = Buffered::new(b);
        assert!(s.take_until_nul(255).await.unwrap().is_none());
        assert!(s.buffered().len() <= 255 + 1 + READ_CHUNK);
    }

    #[tokio::test]
    async fn lines_are_capped() {
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(b"5\r\nhello").await.unwrap();
        a.write_all(&[b'f'; 100]).await.unwrap();
        let mut s = Buffered::new(b);
        assert_eq!(s.take_line(10).await.unwrap(), b"5\r\n");
        s.consume(5);
        assert!(s.take_line(10).await.is_err());
    }
}
