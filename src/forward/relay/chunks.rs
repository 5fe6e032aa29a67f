//! Streams the relay can read as the shared chunks their data already sits in.
//!
//! A channel's data arrives in packets that the SSH engine keeps as reference-counted
//! slices of its receive buffer. Copying them into a relay buffer only to `write` that
//! buffer to a socket costs a memcpy per byte; handing the slices to one `writev` leaves
//! the kernel's copy as the only one. Other streams (sockets, pipes) have no such chunks
//! and are read into the relay's own buffer as before.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, Join, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use warren_ssh::driver::ChannelStream;

/// A stream a relay reads from. Only streams whose data already sits in shared chunks
/// say [`ChunkRead::reads_chunks`]; for the rest the relay copies into its own buffer.
pub trait ChunkRead: AsyncRead + Unpin {
    /// Whether [`ChunkRead::poll_read_chunks`] hands out data without copying it.
    fn reads_chunks(&self) -> bool {
        false
    }

    /// Moves up to `max` bytes into `out` as chunks; `Ok(0)` is EOF. Streams without
    /// chunks of their own read into a fresh buffer, which is one copy, as `poll_read`.
    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut VecDeque<Bytes>,
    ) -> Poll<io::Result<usize>> {
        let mut buf = BytesMut::with_capacity(max);
        let n = std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(self), cx, &mut buf))?;
        if n > 0 {
            out.push_back(buf.freeze());
        }
        Poll::Ready(Ok(n))
    }
}

impl ChunkRead for ChannelStream {
    fn reads_chunks(&self) -> bool {
        true
    }

    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut VecDeque<Bytes>,
    ) -> Poll<io::Result<usize>> {
        ChannelStream::poll_read_chunks(self, cx, max, out)
    }
}

impl<S: ChunkRead + ?Sized> ChunkRead for &mut S {
    fn reads_chunks(&self) -> bool {
        (**self).reads_chunks()
    }

    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut VecDeque<Bytes>,
    ) -> Poll<io::Result<usize>> {
        (**self).poll_read_chunks(cx, max, out)
    }
}

impl ChunkRead for TcpStream {}
impl ChunkRead for UnixStream {}
impl ChunkRead for DuplexStream {}
impl<R: AsyncRead + Unpin, W: Unpin> ChunkRead for Join<R, W> {}

/// The local side of a relay, which the relay only ever copies from: it gives any stream
/// the [`ChunkRead`] the relay's reading half needs, without asking every caller's
/// stream type to implement it. Writes pass straight through, `writev` included.
pub(super) struct Copying<'a, S: ?Sized>(pub &'a mut S);

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Copying<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + Unpin + ?Sized> ChunkRead for Copying<'_, S> {}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Copying<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}
