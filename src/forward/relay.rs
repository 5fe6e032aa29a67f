//! Moving bytes between a local stream and a tunnel stream until both directions end.
//!
//! Hand-written rather than `tokio::io::copy_bidirectional` for memory and speed: its
//! fixed buffers are allocated zeroed for every connection up front, which costs both a
//! memset per connection and resident memory for connections that never need them.

use super::budget::Budget;
use bytes::{Buf, BytesMut};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite};

/// First buffer per direction. Most forwarded connections carry small messages, and a
/// buffer is never zeroed, so its pages become resident only as data lands in them: an
/// idle or chatty connection costs a few KiB rather than two zeroed 64 KiB buffers.
const INITIAL_BUF: usize = 8 * 1024;
/// Buffers up to this size are given back whenever the reader has nothing to read.
const RELEASE_UP_TO: usize = 16 * 1024;
/// Largest buffer per direction. A buffer grows (doubling) each time a read fills it, so
/// a bulk transfer soon moves 256 KiB per system call: fewer wake-ups of the peer and
/// fewer calls than copying 32 KiB packets one by one.
const MAX_BUF: usize = 256 * 1024;

/// Copies both ways until both directions have seen EOF, and returns the bytes moved
/// (local to tunnel, tunnel to local).
///
/// Half-close is preserved: EOF from one side becomes a shutdown (TCP FIN or SSH
/// CHANNEL_EOF) on the other while the opposite direction keeps flowing, which is what
/// request/response protocols that signal "done" with EOF rely on. Memory stays bounded
/// by the two buffers: a slow reader stops our reads, which stops the peer's window.
pub async fn relay<L, T>(local: &mut L, tunnel: &mut T) -> io::Result<(u64, u64)>
where
    L: AsyncRead + AsyncWrite + Unpin + ?Sized,
    T: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    relay_within(local, tunnel, None).await
}

/// [`relay`], with buffer growth beyond the first 8 KiB per direction charged to
/// `growth` (on warrend: the user's `max_buffered_per_user`, inside the server's
/// `max_buffered`). When the budget has no room the buffer simply stays smaller:
/// slower bulk, never a refusal. What was charged is given back when the relay ends.
pub async fn relay_within<L, T>(
    local: &mut L,
    tunnel: &mut T,
    growth: Option<Arc<Budget>>,
) -> io::Result<(u64, u64)>
where
    L: AsyncRead + AsyncWrite + Unpin + ?Sized,
    T: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Pump::new(growth.clone());
    let mut down = Pump::new(growth);
    poll_fn(|cx| {
        let a = up.poll(cx, Pin::new(&mut *local), Pin::new(&mut *tunnel))?;
        let b = down.poll(cx, Pin::new(&mut *tunnel), Pin::new(&mut *local))?;
        match (a, b) {
            (Poll::Ready(x), Poll::Ready(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction of a relay: read into the buffer, write it all out, repeat; on EOF shut
/// the writer down.
#[derive(Default)]
struct Pump {
    buf: BytesMut,
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
    fn new(growth: Option<Arc<Budget>>) -> Pump {
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

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.finished {
            return Poll::Ready(Ok(self.moved));
        }
        loop {
            if self.buf.is_empty() && !self.read_done {
                if self.size == 0 {
                    self.size = INITIAL_BUF;
                }
                self.buf.reserve(self.size);
                let room = self.buf.capacity();
                match tokio_util::io::poll_read_buf(reader.as_mut(), cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) => self.read_done = true,
                    Poll::Ready(Ok(n)) => {
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
                        if self.size <= RELEASE_UP_TO && self.buf.is_empty() {
                            self.buf = BytesMut::new();
                        }
                        return Poll::Pending;
                    }
                }
            }
            while !self.buf.is_empty() {
                let n = ready!(writer.as_mut().poll_write(cx, &self.buf))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the other side accepted no more data",
                    )));
                }
                self.buf.advance(n);
                self.moved += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.finished = true;
                // The buffer is not needed any more; a long half-closed connection keeps
                // nothing, and gives its growth back to the budget.
                self.buf = BytesMut::new();
                if let Some(budget) = &self.growth {
                    budget.release(std::mem::take(&mut self.charged));
                }
                return Poll::Ready(Ok(self.moved));
            }
        }
    }
}

/// How a [`relay_with_idle`] ended.
#[derive(Debug)]
pub enum Ended {
    /// Both directions finished (EOF each way).
    Done,
    /// Neither side sent anything for this long.
    Idle(std::time::Duration),
    /// The owner stopped it (session closed, channel failed); the reason says why.
    Stopped(String),
    /// A read or write failed.
    Failed(io::Error),
}

/// Bytes read from each side of any number of relays, added as they move (relaxed
/// atomics), for an owner that reports traffic live: warrend's per-session counters.
#[derive(Debug, Default)]
pub struct RelayTotals {
    from_a: std::sync::atomic::AtomicU64,
    from_b: std::sync::atomic::AtomicU64,
}

impl RelayTotals {
    /// Adds bytes read from side a and from side b.
    pub fn add(&self, a: u64, b: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.from_a.fetch_add(a, Relaxed);
        self.from_b.fetch_add(b, Relaxed);
    }

    /// Bytes read from side a and from side b so far.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.from_a.load(Relaxed), self.from_b.load(Relaxed))
    }
}

/// [`relay`], but gives up when neither side has sent anything for `idle` (if set), or
/// as soon as `stop` completes: a relay blocked writing to a peer that never reads would
/// otherwise hold its sockets and buffers for as long as that peer likes, long after the
/// session that asked for it has gone. Returns the bytes each way (also when the relay
/// did not finish) and how it ended. Bytes are also added to `totals` as they are read.
pub async fn relay_with_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<std::time::Duration>,
    stop: impl std::future::Future<Output = String>,
    growth: Option<Arc<Budget>>,
    totals: Option<Arc<RelayTotals>>,
) -> (u64, u64, Ended)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    let activity = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let (read_a, read_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut ta = activity::Tracked::new(a, activity.clone(), read_a.clone(), start);
    let mut tb = activity::Tracked::new(b, activity.clone(), read_b.clone(), start);
    ta.totals = totals.clone().map(|t| (t, true));
    tb.totals = totals.map(|t| (t, false));
    let copy = relay_within(&mut ta, &mut tb, growth);
    tokio::pin!(copy);
    tokio::pin!(stop);
    let never = std::time::Duration::from_secs(365 * 86_400);
    let so_far = || {
        (
            read_a.load(Ordering::Relaxed),
            read_b.load(Ordering::Relaxed),
        )
    };
    loop {
        let last = start + std::time::Duration::from_millis(activity.load(Ordering::Relaxed));
        tokio::select! {
            r = &mut copy => {
                return match r {
                    Ok((x, y)) => (x, y, Ended::Done),
                    Err(e) => {
                        let (x, y) = so_far();
                        (x, y, Ended::Failed(e))
                    }
                };
            }
            reason = &mut stop => {
                let (x, y) = so_far();
                return (x, y, Ended::Stopped(reason));
            }
            _ = tokio::time::sleep_until(last + idle.unwrap_or(never)), if idle.is_some() => {
                let seen = start + std::time::Duration::from_millis(activity.load(Ordering::Relaxed));
                if seen <= last {
                    let (x, y) = so_far();
                    return (x, y, Ended::Idle(idle.unwrap_or(never)));
                }
            }
        }
    }
}

mod activity {
    //! A stream wrapper that notes when data last arrived, for idle timeouts.
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
        pub totals: Option<(Arc<super::RelayTotals>, bool)>,
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
    }

    impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Tracked<'_, S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
            let n = buf.filled().len() - before;
            if n > 0 {
                self.read.fetch_add(n as u64, Ordering::Relaxed);
                match &self.totals {
                    Some((t, true)) => t.add(n as u64, 0),
                    Some((t, false)) => t.add(0, n as u64),
                    None => {}
                }
                let ms = self.start.elapsed().as_millis() as u64;
                self.last.store(ms, Ordering::Relaxed);
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
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut *self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut *self.inner).poll_shutdown(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// 4 MiB through a relay whose growth budget is `limit`; returns the most the budget
    /// held at any time while the bytes moved, after checking every byte arrived in order.
    async fn carry(limit: u64) -> (u64, Arc<Budget>) {
        let budget = Budget::new("test", limit);
        let (mut src, mut a) = tokio::io::duplex(1 << 20);
        let (mut b, mut dst) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let growth = Some(budget.clone());
        let relay = tokio::spawn(async move { relay_within(&mut a, &mut b, growth).await });
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            src.write_all(&sent).await.unwrap();
            src.shutdown().await.unwrap();
            src
        });
        let mut got = Vec::new();
        let mut chunk = vec![0; 64 * 1024];
        let mut peak = 0;
        loop {
            let n = dst.read(&mut chunk).await.unwrap();
            peak = peak.max(budget.used());
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        // The far end closes too, so the relay's other direction ends.
        drop(dst);
        drop(writer.await.unwrap());
        relay.await.unwrap().unwrap();
        assert!(got == data, "bytes lost or reordered");
        (peak, budget)
    }

    #[tokio::test]
    async fn buffer_growth_is_charged_and_given_back() {
        let (peak, budget) = carry(1 << 20).await;
        assert!(peak > 0, "a bulk relay grows its buffer");
        assert!(peak <= 2 * (MAX_BUF - INITIAL_BUF) as u64, "{peak}");
        assert_eq!(budget.used(), 0, "all given back at the end");
    }

    #[tokio::test]
    async fn an_exhausted_budget_keeps_buffers_small_but_moves_every_byte() {
        let (peak, budget) = carry(0).await;
        assert_eq!((peak, budget.used()), (0, 0));
    }
}
