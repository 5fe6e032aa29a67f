//! Moving bytes between a local stream and a tunnel stream until both directions end.
//!
//! Hand-written rather than `tokio::io::copy_bidirectional` for memory and speed: its
//! fixed buffers are allocated zeroed for every connection up front, which costs both a
//! memset per connection and resident memory for connections that never need them.

mod activity;
mod chunks;
mod pump;
#[cfg(test)]
mod tests;

use super::budget;
use budget::Budget;
pub use chunks::ChunkRead;
use chunks::Copying;
use pump::Pump;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite};

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
    T: ChunkRead + AsyncWrite + ?Sized,
{
    relay_within(&mut Copying(local), tunnel, None).await
}

/// [`relay`], with buffer growth beyond the first 8 KiB per direction charged to
/// `growth` (on warrend: the user's `max_buffered_per_user`, inside the server's
/// `max_buffered`). When the budget has no room the buffer simply stays smaller:
/// slower bulk, never a refusal. What was charged is given back when the relay ends.
/// Either side's data may travel as the chunks it arrived in ([`ChunkRead`]).
pub async fn relay_within<A, B>(
    a: &mut A,
    b: &mut B,
    growth: Option<Arc<Budget>>,
) -> io::Result<(u64, u64)>
where
    A: ChunkRead + AsyncWrite + ?Sized,
    B: ChunkRead + AsyncWrite + ?Sized,
{
    let mut up = Pump::new(growth.clone());
    let mut down = Pump::new(growth);
    poll_fn(|cx| {
        let x = up.poll(cx, &mut *a, Pin::new(&mut *b))?;
        let y = down.poll(cx, &mut *b, Pin::new(&mut *a))?;
        match (x, y) {
            (Poll::Ready(x), Poll::Ready(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
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
    A: ChunkRead + AsyncWrite + ?Sized,
    B: ChunkRead + AsyncWrite + ?Sized,
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
