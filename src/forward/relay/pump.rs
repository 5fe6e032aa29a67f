//! One direction of a relay.

use super::ChunkRead;
use super::budget::Budget;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;

/// First buffer per direction. Most forwarded connections carry small messages, and a
/// buffer is never zeroed, so its pages become resident only as data lands in them: an
/// idle or chatty connection costs a few KiB rather than two zeroed 64 KiB buffers.
pub(super) const INITIAL_BUF: usize = 8 * 1024;
/// Buffers up to this size are given back whenever the reader has nothing to read.
const RELEASE_UP_TO: usize = 16 * 1024;
/// Largest buffer per direction. A buffer grows (doubling) each time a read fills it, so
/// a bulk transfer soon moves 256 KiB per system call: fewer wake-ups of the peer and
/// fewer calls than copying 32 KiB packets one by one.
pub(super) const MAX_BUF: usize = 256 * 1024;
/// Chunks handed to one `writev`. 256 KiB of 32 KiB packets is 8; smaller packets from
/// other peers need more, and the kernel accepts up to 1024.
const MAX_IOV: usize = 64;

/// One direction of a relay: read, write it all out, repeat; on EOF shut the writer down.
///
/// What was read is held either in the pump's own buffer (copied there by the reader) or,
/// when the reader hands out chunks and the writer takes `writev`, as those chunks: the
/// same bytes and the same limit, one copy fewer. Either way the pump reads again only
/// once all of it is written, so it never holds more than its buffer size.
#[derive(Default)]
pub(super) struct Pump {
    buf: BytesMut,
    chunks: VecDeque<Bytes>,
    /// Chosen at the first read: chunks, or the buffer.
    chunked: Option<bool>,
    size: usize,
    read_done: bool,
    finished: bool,
    need_flush: bool,
    moved: u64,
    /// Where growth beyond [`INITIAL_BUF`] is charged, and how much is charged now.
    growth: Option<Arc<Budget>>,
    charged: u64,
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(budget) = &self.growth {
            budget.release(self.charged);
        }
    }
}

impl Pump {
    pub(super) fn new(growth: Option<Arc<Budget>>) -> Pump {
        let mut pump = Pump::default();
        pump.growth = growth;
        pump
    }

    /// Doubles the buffer if the budget (if any) has room for the growth.
    fn grow(&mut self) {
        let extra = self.size as u64;
        if let Some(budget) = &self.growth {
            if budget.try_charge(extra).is_err() {
                return;
            }
            self.charged += extra;
        }
        self.size *= 2;
    }

    fn holds_nothing(&self) -> bool {
        self.buf.is_empty() && self.chunks.is_empty()
    }

    pub(super) fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: ChunkRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.finished {
            return Poll::Ready(Ok(self.moved));
        }
        let chunked = *self
            .chunked
            .get_or_insert_with(|| reader.reads_chunks() && writer.is_write_vectored());
        loop {
            if self.holds_nothing() && !self.read_done {
                if self.size == 0 {
                    self.size = INITIAL_BUF;
                }
                let read = if chunked {
                    reader
                        .poll_read_chunks(cx, self.size, &mut self.chunks)
                        .map_ok(|n| (n, self.size))
                } else {
                    self.buf.reserve(self.size);
                    let room = self.buf.capacity();
                    tokio_util::io::poll_read_buf(Pin::new(&mut *reader), cx, &mut self.buf)
                        .map_ok(|n| (n, room))
                };
                match read {
                    Poll::Ready(Ok((0, _))) => self.read_done = true,
                    Poll::Ready(Ok((n, room))) => {
                        if n >= room && self.size < MAX_BUF {
                            self.grow();
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing more to send for now: push out what was written.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        // Waiting with nothing buffered: a small buffer goes back to the
                        // allocator, so the many idle or chatty connections of a bastion
                        // hold none while they wait (an allocation per message is cheap
                        // at this size). A bulk stream's grown buffer is kept.
                        if self.size <= RELEASE_UP_TO {
                            self.buf = BytesMut::new();
                            self.chunks = VecDeque::new();
                        }
                        return Poll::Pending;
                    }
                }
            }
            if chunked {
                ready!(self.poll_write_chunks(cx, writer.as_mut()))?;
            } else {
                while !self.buf.is_empty() {
                    let n = ready!(writer.as_mut().poll_write(cx, &self.buf))?;
                    self.wrote(n)?;
                    self.buf.advance(n);
                }
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.finished = true;
                // The buffer is not needed any more; a long half-closed connection keeps
                // nothing, and gives its growth back to the budget.
                self.buf = BytesMut::new();
                self.chunks = VecDeque::new();
                if let Some(budget) = &self.growth {
                    budget.release(std::mem::take(&mut self.charged));
                }
                return Poll::Ready(Ok(self.moved));
            }
        }
    }

    /// Writes every held chunk, as many per `writev` as fit.
    fn poll_write_chunks<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>> {
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut k = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slot = IoSlice::new(chunk);
                k += 1;
            }
            let mut n = ready!(writer.as_mut().poll_write_vectored(cx, &slices[..k]))?;
            self.wrote(n)?;
            while n > 0 {
                let front = self
                    .chunks
                    .front_mut()
                    .expect("wrote no more than was held");
                if n < front.len() {
                    front.advance(n);
                    break;
                }
                n -= front.len();
                self.chunks.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn wrote(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the other side accepted no more data",
            ));
        }
        self.moved += n as u64;
        self.need_flush = true;
        Ok(())
    }
}
