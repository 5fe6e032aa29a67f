//! Keeping one slow reader from stalling a whole SSH connection, without giving up
//! back-pressure for readers that are merely slower than the network.
//!
//! russh hands incoming channel data to a bounded per-channel queue and waits for room
//! *inside its session loop*, while it grants the peer more window on receipt. So the
//! only way to make a sender pause is to stop taking data out of that queue, which
//! pauses the whole session (every other channel and the keepalives), and the only way
//! to keep the session moving is to take the data and park it somewhere
//! (shared/notes/russh.md §4.5).
//!
//! Each channel gets a drain task that does both, depending on how its local reader
//! behaves. Data goes to a memory buffer (bounded). When that is full, the drain waits
//! for the reader to make room, which pauses the session and so the sender: a bulk
//! download into a reader that is a little slower than the tunnel runs at the reader's
//! pace with bounded memory, as with OpenSSH. But it waits at most [`PATIENCE`] per
//! packet: a reader that frees no room in that time counts as stalled, and its data goes
//! to an unlinked temporary file (bounded, much larger, written by a blocking thread)
//! until it has caught up, so the other channels lose at most that one wait. The local
//! side reads memory and file in order, so a stalled reader resumes later without losing
//! a byte. Only a reader stalled beyond both bounds costs its own connection (it is
//! closed with an error); the others never notice.

use super::budget::Budget;
use bytes::Bytes;
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Bytes kept in memory per channel. Beyond it the drain waits for the reader (see
/// [`PATIENCE`]); two SSH windows' worth, so a reader that keeps up never waits.
pub const MEMORY_CAP: usize = 4 * 1024 * 1024;
/// Bytes a stalled reader may fall behind in total before its connection is closed.
pub const SPILL_CAP: u64 = 1024 * 1024 * 1024;
/// How long the drain holds the session for one packet of a reader whose memory buffer
/// is full. While the session is held, the other channels' packets wait behind this
/// one, so this bounds what a slow reader can cost them: a reader that takes a 32 KiB
/// packet within it (about 6.5 MB/s or faster) gets ordinary back-pressure and never
/// touches the disk; a slower or stalled one costs the others one such wait, and its
/// data goes to disk until it has caught up.
pub const PATIENCE: Duration = Duration::from_millis(5);

/// Staged bytes (on their way to the spill file) beyond which the drain waits for the
/// disk: a disk slower than the network may slow the session, but never grow memory.
const STAGE_CAP: usize = 8 * 1024 * 1024;
/// The most the flusher takes from the stage per round.
const FLUSH_BATCH: usize = 1024 * 1024;

/// Received data waiting for the local reader, in order: `mem`; then the file's
/// `[read_pos, file_end)`; then `inflight` bytes being written to the file after it; then
/// `staged`. Once data goes past memory, everything after it does too, until the reader
/// has caught up.
///
/// The file is only ever written by the flusher, on a blocking thread: the drain and
/// the reader run on the runtime (one thread in the client), and a write that the kernel
/// throttles (dirty pages on a slow disk) must not freeze every tunnel with it.
struct Spill {
    mem: VecDeque<Bytes>,
    mem_bytes: usize,
    file: Option<Arc<File>>,
    read_pos: u64,
    file_end: u64,
    inflight: u64,
    staged: VecDeque<Bytes>,
    staged_bytes: usize,
    /// A flusher is running (it exits once the stage is empty).
    flushing: bool,
    /// The reader caught up: the flusher empties the file before writing again.
    truncate: bool,
    /// Bytes that ever went past memory (diagnostics and tests).
    spilled: u64,
    eof: bool,
    error: Option<String>,
    waker: Option<Waker>,
    mem_cap: usize,
    spill_cap: u64,
    /// What the owner (user, server) may hold in all its channels together; `charged`
    /// bytes of the backlog are counted in it and given back as the reader takes them
    /// (or when the channel ends).
    budget: Option<Arc<Budget>>,
    charged: u64,
}

impl Drop for Spill {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.release(self.charged);
        }
    }
}

impl Spill {
    fn new(mem_cap: usize, spill_cap: u64, budget: Option<Arc<Budget>>) -> Spill {
        Spill {
            mem: VecDeque::new(),
            mem_bytes: 0,
            file: None,
            read_pos: 0,
            file_end: 0,
            inflight: 0,
            staged: VecDeque::new(),
            staged_bytes: 0,
            flushing: false,
            truncate: false,
            spilled: 0,
            eof: false,
            error: None,
            waker: None,
            mem_cap,
            spill_cap,
            budget,
            charged: 0,
        }
    }

    /// Whether `len` more bytes fit in memory without reordering behind spilled data.
    fn has_room(&self, len: usize) -> bool {
        !self.spilling() && self.mem_bytes + len <= self.mem_cap
    }

    fn spilling(&self) -> bool {
        self.file_end > self.read_pos || self.inflight > 0 || !self.staged.is_empty()
    }

    /// The disk is behind: the drain waits (unless the flusher has failed).
    fn stage_full(&self) -> bool {
        self.staged_bytes >= STAGE_CAP && self.error.is_none()
    }

    fn backlog(&self) -> u64 {
        self.mem_bytes as u64
            + (self.file_end - self.read_pos)
            + self.inflight
            + self.staged_bytes as u64
    }

    /// Appends. `Ok(true)`: a flusher must be started. `Err` when the reader is too far
    /// behind or the spill file failed (the caller closes the channel).
    fn push(&mut self, data: Bytes) -> Result<bool, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.backlog() + data.len() as u64 > self.spill_cap {
            return Err(format!(
                "the local reader fell {} bytes behind (limit {}); closing this connection",
                self.backlog(),
                self.spill_cap
            ));
        }
        if let Some(b) = &self.budget {
            b.try_charge(data.len() as u64)
                .map_err(|e| format!("buffer budget used up: {e}; closing this connection"))?;
            self.charged += data.len() as u64;
        }
        let start_flusher = if self.has_room(data.len()) {
            self.mem_bytes += data.len();
            self.mem.push_back(data);
            false
        } else {
            if !self.spilling() {
                debug!("reader is slow: spilling received data to a temporary file");
            }
            self.spilled += data.len() as u64;
            self.staged_bytes += data.len();
            self.staged.push_back(data);
            !std::mem::replace(&mut self.flushing, true)
        };
        self.wake();
        Ok(start_flusher)
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Copies buffered data into `buf` in order: memory (as many packets as fit, so one
    /// wake-up moves a whole buffer's worth), the file, and once the file is read and
    /// nothing is on its way to it, the stage directly. `Ok(false)`: nothing readable
    /// yet. The flag says the reader caught up and a flusher must empty the file.
    fn read_into(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<(bool, bool)> {
        if !self.mem.is_empty() {
            self.mem_bytes -= take_chunks(&mut self.mem, buf);
            return Ok((true, false));
        }
        if self.file_end > self.read_pos {
            let Some(file) = self.file.as_ref() else {
                return Err(io::Error::other("spill file missing"));
            };
            let want = (self.file_end - self.read_pos).min(buf.remaining() as u64) as usize;
            let mut chunk = vec![0u8; want];
            let n = file.read_at(&mut chunk, self.read_pos)?;
            buf.put_slice(&chunk[..n]);
            self.read_pos += n as u64;
            let mut start_flusher = false;
            if self.read_pos == self.file_end && self.inflight == 0 {
                // Caught up with the file: start it over, and give the disk space back.
                self.read_pos = 0;
                self.file_end = 0;
                self.truncate = true;
                start_flusher = !std::mem::replace(&mut self.flushing, true);
            }
            return Ok((true, start_flusher));
        }
        if self.inflight == 0 && !self.staged.is_empty() {
            self.staged_bytes -= take_chunks(&mut self.staged, buf);
            return Ok((true, false));
        }
        Ok((false, false))
    }
}

/// Moves whole or partial chunks from the front of `q` into `buf`; returns the bytes moved.
fn take_chunks(q: &mut VecDeque<Bytes>, buf: &mut ReadBuf<'_>) -> usize {
    let mut moved = 0;
    while buf.remaining() > 0 {
        let Some(front) = q.front_mut() else {
            break;
        };
        let n = front.len().min(buf.remaining());
        buf.put_slice(&front[..n]);
        moved += n;
        if n == front.len() {
            q.pop_front();
        } else {
            *front = front.slice(n..);
        }
    }
    moved
}

/// Writes the stage to the spill file until it is empty, on a blocking thread (see
/// [`Spill`]); also empties the file when the reader has caught up.
fn start_flusher(shared: Arc<Shared>) {
    tokio::task::spawn_blocking(move || {
        loop {
            let (file, batch, offset, truncate) = {
                let mut s = shared.lock();
                let truncate = std::mem::take(&mut s.truncate);
                if s.error.is_some() || (s.staged.is_empty() && !truncate) {
                    s.flushing = false;
                    return;
                }
                let mut batch = Vec::new();
                let mut n = 0;
                while n < FLUSH_BATCH {
                    let Some(b) = s.staged.pop_front() else {
                        break;
                    };
                    n += b.len();
                    batch.push(b);
                }
                s.staged_bytes -= n;
                s.inflight = n as u64;
                (s.file.clone(), batch, s.file_end, truncate)
            };
            // The stage shrank: a drain waiting for the disk may go on.
            shared.room.notify_one();
            let written = (|| -> io::Result<Arc<File>> {
                let file = match file {
                    Some(f) => f,
                    None => Arc::new(tempfile::tempfile()?),
                };
                if truncate {
                    file.set_len(0)?;
                }
                let mut at = offset;
                for b in &batch {
                    file.write_all_at(b, at)?;
                    at += b.len() as u64;
                }
                Ok(file)
            })();
            let mut s = shared.lock();
            match written {
                // A failed channel has let its file go; this batch goes with it.
                Ok(_) if s.error.is_some() => s.inflight = 0,
                Ok(file) => {
                    s.file = Some(file);
                    s.file_end += s.inflight;
                    s.inflight = 0;
                }
                Err(e) => {
                    warn!("cannot write the spill file: {e}");
                    shared.fail(&mut s, format!("cannot write the spill file: {e}"));
                }
            }
            s.wake();
            drop(s);
            shared.room.notify_one();
        }
    });
}

/// What the drain task and the reader share: the buffer, and a signal for the drain that
/// the reader has made room.
struct Shared {
    spill: Mutex<Spill>,
    room: Notify,
    /// Cancelled when the channel fails (reader too far behind, budget used up, spill
    /// file broken), so whoever relays it stops even while blocked on the other side.
    failed: CancellationToken,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Spill> {
        self.spill.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the channel's failure: the reader sees it as an error, the relay stops,
    /// and what was held for it (memory, spill file, budget) is let go now rather than
    /// when the peer gets round to confirming the close.
    fn fail(&self, s: &mut Spill, error: String) {
        s.error = Some(error);
        s.mem.clear();
        s.mem_bytes = 0;
        s.staged.clear();
        s.staged_bytes = 0;
        s.file = None;
        s.read_pos = 0;
        s.file_end = 0;
        if let Some(b) = &s.budget {
            b.release(s.charged);
        }
        s.charged = 0;
        s.wake();
        self.failed.cancel();
    }
}

/// A tunnel stream with a decoupled receive side (see the module docs). Writes go straight
/// to the channel (they are bounded by the peer's window); dropping it closes the channel.
pub struct Decoupled<S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static> {
    shared: Arc<Shared>,
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
    write_half: Arc<ChannelWriteHalf<S>>,
    closed: bool,
}

impl<S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static> Decoupled<S> {
    /// Tells the peer we are done with the channel, now. Dropping does the same from a
    /// task of its own; a caller that is finishing anyway saves that task (on a busy
    /// server, one spawned task per channel is one more thread wake-up).
    pub async fn close(mut self) {
        self.closed = true;
        let _ = self.write_half.close().await;
    }

    /// False once the peer ended the channel (EOF, close) or the session died: a channel
    /// opened ahead of need (`forward::spare`) is checked with it before a connection is
    /// handed a stream that is already over.
    pub fn is_open(&self) -> bool {
        let s = self.shared.lock();
        !s.eof && s.error.is_none()
    }

    /// Completes with the reason once the channel has failed (see [`Shared::failed`]);
    /// owned, so it can be awaited while the stream itself is being relayed.
    pub fn failure(&self) -> impl Future<Output = String> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            shared.failed.cancelled().await;
            shared.lock().error.clone().unwrap_or_default()
        }
    }
}

/// Splits `channel` and starts its drain task.
pub fn decouple<S>(channel: Channel<S>) -> Decoupled<S>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    decouple_with(channel, MEMORY_CAP, SPILL_CAP)
}

/// [`decouple`] for a server, where what a channel's slow reader makes us hold is also
/// charged to `budget` (its user's, inside the server's): a channel that would take more
/// than the budget has left fails instead.
pub fn decouple_budgeted<S>(channel: Channel<S>, budget: Arc<Budget>) -> Decoupled<S>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let (stream, drain) = decouple_parts(channel, MEMORY_CAP, SPILL_CAP, Some(budget));
    tokio::spawn(drain);
    stream
}

/// [`decouple`] with explicit bounds (tests use small ones).
pub fn decouple_with<S>(channel: Channel<S>, mem_cap: usize, spill_cap: u64) -> Decoupled<S>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let (stream, drain) = decouple_parts(channel, mem_cap, spill_cap, None);
    tokio::spawn(drain);
    stream
}

fn decouple_parts<S>(
    channel: Channel<S>,
    mem_cap: usize,
    spill_cap: u64,
    budget: Option<Arc<Budget>>,
) -> (Decoupled<S>, impl Future<Output = ()> + Send + 'static)
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let (mut read_half, write_half) = channel.split();
    let write_half = Arc::new(write_half);
    let shared = Arc::new(Shared {
        spill: Mutex::new(Spill::new(mem_cap, spill_cap, budget)),
        room: Notify::new(),
        failed: CancellationToken::new(),
    });
    let (drain_shared, drain_writer) = (shared.clone(), write_half.clone());
    let drain = async move {
        drain(&mut read_half, &drain_shared, PATIENCE, || {
            let w = drain_writer.clone();
            async move {
                let _ = w.close().await;
            }
        })
        .await
    };
    let writer: Pin<Box<dyn AsyncWrite + Send + Sync>> = Box::pin(write_half.make_writer());
    let stream = Decoupled {
        shared,
        writer,
        write_half,
        closed: false,
    };
    (stream, drain)
}

/// Where a drain gets its channel's messages: russh's read half (a plain queue in tests).
trait Source {
    fn next(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send;
}

impl Source for ChannelReadHalf {
    fn next(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send {
        self.wait()
    }
}

/// Moves what russh delivers for one channel into the shared buffer until the channel
/// closes. `next` yields the channel's messages; `close` asks the peer to close it (when
/// the reader fell too far behind).
async fn drain<M, C, CF>(source: &mut M, shared: &Arc<Shared>, patience: Duration, close: C)
where
    M: Source,
    C: Fn() -> CF,
    CF: Future<Output = ()>,
{
    let mut overflowed = false;
    while let Some(msg) = source.next().await {
        match msg {
            ChannelMsg::Data { data } if !overflowed => {
                // Back-pressure first: wait (holding the session, so the sender pauses)
                // while the reader is making room, but no longer than `patience`. A
                // reader already found too slow is not waited for again until it has
                // caught up.
                let deadline = tokio::time::Instant::now() + patience;
                loop {
                    let room = shared.room.notified();
                    {
                        let s = shared.lock();
                        if s.has_room(data.len()) || s.spilling() {
                            break;
                        }
                    }
                    if tokio::time::timeout_at(deadline, room).await.is_err() {
                        break;
                    }
                }
                // A disk slower than the network: wait for the flusher, not for memory.
                loop {
                    let room = shared.room.notified();
                    if !shared.lock().stage_full() {
                        break;
                    }
                    room.await;
                }
                let pushed = {
                    let mut s = shared.lock();
                    let pushed = s.push(data);
                    if let Err(e) = &pushed {
                        warn!("{e}");
                        shared.fail(&mut s, e.clone());
                    }
                    pushed
                };
                if pushed == Ok(true) {
                    start_flusher(shared.clone());
                }
                if pushed.is_err() {
                    overflowed = true;
                    // Keep draining (and discarding) until the peer confirms the close,
                    // so the session loop is never held.
                    close().await;
                }
            }
            ChannelMsg::Eof => {
                let mut s = shared.lock();
                s.eof = true;
                s.wake();
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    let mut s = shared.lock();
    s.eof = true;
    s.wake();
}

impl<S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static> AsyncRead for Decoupled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_shared(&self.shared, cx, buf)
    }
}

fn poll_read_shared(
    shared: &Arc<Shared>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let mut s = shared.lock();
    if let Some(e) = &s.error {
        return Poll::Ready(Err(io::Error::other(e.clone())));
    }
    let before = buf.filled().len();
    match s.read_into(buf) {
        Ok((true, flush)) => {
            let moved = (buf.filled().len() - before) as u64;
            let n = moved.min(s.charged);
            s.charged -= n;
            if let Some(b) = &s.budget {
                b.release(n);
            }
            drop(s);
            if flush {
                start_flusher(shared.clone());
            }
            shared.room.notify_one();
            Poll::Ready(Ok(()))
        }
        Ok((false, _)) if s.eof && !s.spilling() => Poll::Ready(Ok(())),
        Ok((false, _)) => {
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        }
        Err(e) => Poll::Ready(Err(e)),
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
        if self.closed {
            return;
        }
        let w = self.write_half.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = w.close().await;
            });
        }
    }
}

#[cfg(test)]
#[path = "decouple_tests.rs"]
mod tests;
