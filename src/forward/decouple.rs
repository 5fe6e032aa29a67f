//! Keeping one slow reader from stalling a whole SSH connection.
//!
//! russh hands incoming channel data to a bounded per-channel queue and waits for room
//! *inside its session loop*, while it grants the peer more window on receipt. So when
//! one forwarded connection's local reader stops reading, the queue fills, the loop
//! waits, and every other channel of the connection (and its keepalives) stalls with it
//! (shared/notes/russh.md §4.5).
//!
//! The fix here: each channel gets a drain task that always takes what russh delivers at
//! once and appends it to a spill buffer: memory first (bounded), then an unlinked
//! temporary file (bounded, much larger). The local side reads from that buffer in order,
//! so a stalled reader resumes later without losing a byte, and the session loop never
//! waits on it. Only a reader stalled beyond both bounds costs its own connection (it is
//! closed with an error); the others never notice.

use bytes::Bytes;
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, warn};

/// Bytes kept in memory per channel before spilling to disk: with 64 KiB socket buffers
/// this absorbs ordinary hiccups without touching the file system.
pub const MEMORY_CAP: usize = 4 * 1024 * 1024;
/// Bytes a stalled reader may fall behind in total before its connection is closed.
pub const SPILL_CAP: u64 = 1024 * 1024 * 1024;

/// Received data waiting for the local reader, in order: `mem`, then the file's
/// `[read_pos, write_pos)`. Once data goes to the file, everything after it does too,
/// until the reader has caught up.
struct Spill {
    mem: VecDeque<Bytes>,
    mem_bytes: usize,
    file: Option<File>,
    read_pos: u64,
    write_pos: u64,
    eof: bool,
    error: Option<String>,
    waker: Option<Waker>,
    mem_cap: usize,
    spill_cap: u64,
}

impl Spill {
    fn new(mem_cap: usize, spill_cap: u64) -> Spill {
        Spill {
            mem: VecDeque::new(),
            mem_bytes: 0,
            file: None,
            read_pos: 0,
            write_pos: 0,
            eof: false,
            error: None,
            waker: None,
            mem_cap,
            spill_cap,
        }
    }

    fn backlog(&self) -> u64 {
        self.mem_bytes as u64 + (self.write_pos - self.read_pos)
    }

    /// Appends; `Err` when the reader is too far behind (the caller closes the channel).
    fn push(&mut self, data: Bytes) -> Result<(), String> {
        if self.backlog() + data.len() as u64 > self.spill_cap {
            return Err(format!(
                "the local reader fell {} bytes behind (limit {}); closing this connection",
                self.backlog(),
                self.spill_cap
            ));
        }
        let spilling = self.write_pos > self.read_pos;
        if !spilling && self.mem_bytes + data.len() <= self.mem_cap {
            self.mem_bytes += data.len();
            self.mem.push_back(data);
        } else {
            if self.file.is_none() {
                self.file = Some(
                    tempfile::tempfile().map_err(|e| format!("cannot create a spill file: {e}"))?,
                );
                debug!("reader is slow: spilling received data to a temporary file");
            }
            let file = self.file.as_ref().ok_or("spill file missing")?;
            file.write_all_at(&data, self.write_pos)
                .map_err(|e| format!("cannot write the spill file: {e}"))?;
            self.write_pos += data.len() as u64;
        }
        self.wake();
        Ok(())
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Copies buffered data into `buf`: memory first (as many packets as fit, so one
    /// wake-up moves a whole buffer's worth), then the file.
    fn read_into(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        if !self.mem.is_empty() {
            while buf.remaining() > 0 {
                let Some(front) = self.mem.front_mut() else {
                    break;
                };
                let n = front.len().min(buf.remaining());
                buf.put_slice(&front[..n]);
                self.mem_bytes -= n;
                if n == front.len() {
                    self.mem.pop_front();
                } else {
                    *front = front.slice(n..);
                }
            }
            return Ok(true);
        }
        if self.write_pos > self.read_pos {
            let Some(file) = self.file.as_ref() else {
                return Err(io::Error::other("spill file missing"));
            };
            let want = (self.write_pos - self.read_pos).min(buf.remaining() as u64) as usize;
            let mut chunk = vec![0u8; want];
            let n = file.read_at(&mut chunk, self.read_pos)?;
            buf.put_slice(&chunk[..n]);
            self.read_pos += n as u64;
            if self.read_pos == self.write_pos {
                // Caught up: back to memory, and give the disk space back.
                self.read_pos = 0;
                self.write_pos = 0;
                if let Some(f) = &self.file {
                    let _ = f.set_len(0);
                }
            }
            return Ok(true);
        }
        Ok(false)
    }
}

/// A tunnel stream with a decoupled receive side (see the module docs). Writes go straight
/// to the channel (they are bounded by the peer's window); dropping it closes the channel.
pub struct Decoupled<S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static> {
    spill: Arc<Mutex<Spill>>,
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
    write_half: Arc<ChannelWriteHalf<S>>,
}

/// Splits `channel` and starts its drain task.
pub fn decouple<S>(channel: Channel<S>) -> Decoupled<S>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    decouple_with(channel, MEMORY_CAP, SPILL_CAP)
}

/// [`decouple`] with explicit bounds (tests use small ones).
pub fn decouple_with<S>(channel: Channel<S>, mem_cap: usize, spill_cap: u64) -> Decoupled<S>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let (mut read_half, write_half) = channel.split();
    let write_half = Arc::new(write_half);
    let spill = Arc::new(Mutex::new(Spill::new(mem_cap, spill_cap)));
    let (drain_spill, drain_writer) = (spill.clone(), write_half.clone());
    tokio::spawn(async move {
        let mut overflowed = false;
        while let Some(msg) = read_half.wait().await {
            let close_now = {
                let mut s = drain_spill.lock().unwrap_or_else(|e| e.into_inner());
                match msg {
                    ChannelMsg::Data { data } if !overflowed => match s.push(data) {
                        Ok(()) => false,
                        Err(e) => {
                            warn!("{e}");
                            s.error = Some(e);
                            s.wake();
                            overflowed = true;
                            true
                        }
                    },
                    ChannelMsg::Eof => {
                        s.eof = true;
                        s.wake();
                        false
                    }
                    ChannelMsg::Close => break,
                    _ => false,
                }
            };
            if close_now {
                // Keep draining (and discarding) until the peer confirms the close, so
                // the session loop is never held.
                let _ = drain_writer.close().await;
            }
        }
        let mut s = drain_spill.lock().unwrap_or_else(|e| e.into_inner());
        s.eof = true;
        s.wake();
    });
    let writer: Pin<Box<dyn AsyncWrite + Send + Sync>> = Box::pin(write_half.make_writer());
    Decoupled {
        spill,
        writer,
        write_half,
    }
}

impl<S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static> AsyncRead for Decoupled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = self.spill.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &s.error {
            return Poll::Ready(Err(io::Error::other(e.clone())));
        }
        match s.read_into(buf) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) if s.eof => Poll::Ready(Ok(())),
            Ok(false) => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static> AsyncWrite for Decoupled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

impl<S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static> Drop for Decoupled<S> {
    fn drop(&mut self) {
        // As ChannelStream does on drop: tell the peer we are done with the channel. The
        // drain task ends when the peer's CLOSE (or the session's end) arrives.
        let w = self.write_half.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = w.close().await;
            });
        }
    }
}
