//! A stream wrapper that notes when data last arrived, for idle timeouts, and counts what
//! was read for live traffic figures.

use super::ChunkRead;
use super::RelayTotals;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

pub struct Tracked<'a, S: ?Sized> {
    inner: &'a mut S,
    last: Arc<AtomicU64>,
    read: Arc<AtomicU64>,
    start: Instant,
    /// Also counted here, as side a (`true`) or b.
    pub totals: Option<(Arc<RelayTotals>, bool)>,
}

impl<'a, S: ?Sized> Tracked<'a, S> {
    pub fn new(
        inner: &'a mut S,
        last: Arc<AtomicU64>,
        read: Arc<AtomicU64>,
        start: Instant,
    ) -> Self {
        Tracked {
            inner,
            last,
            read,
            start,
            totals: None,
        }
    }

    fn note(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        match &self.totals {
            Some((t, true)) => t.add(n as u64, 0),
            Some((t, false)) => t.add(0, n as u64),
            None => {}
        }
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        self.note(buf.filled().len() - before);
        r
    }
}

impl<S: ChunkRead + ?Sized> ChunkRead for Tracked<'_, S> {
    fn reads_chunks(&self) -> bool {
        self.inner.reads_chunks()
    }

    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut VecDeque<Bytes>,
    ) -> Poll<std::io::Result<usize>> {
        let r = self.inner.poll_read_chunks(cx, max, out);
        if let Poll::Ready(Ok(n)) = r {
            self.note(n);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
