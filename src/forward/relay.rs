//! Moving bytes between a local stream and a tunnel stream until both directions end.

use tokio::io::{AsyncRead, AsyncWrite, copy_bidirectional_with_sizes};

/// Each direction's copy buffer. One SSH packet carries at most 32 KiB of data, so 64 KiB
/// lets a read fill two packets without growing memory per connection much.
const BUF: usize = 64 * 1024;

/// Copies both ways until both directions have seen EOF, and returns the bytes moved
/// (local to tunnel, tunnel to local).
///
/// Half-close is preserved: EOF from one side becomes a shutdown (TCP FIN or SSH
/// CHANNEL_EOF) on the other while the opposite direction keeps flowing, which is what
/// request/response protocols that signal "done" with EOF rely on. Memory stays bounded
/// by the two buffers: a slow reader stops our reads, which stops the peer's window.
pub async fn relay<L, T>(local: &mut L, tunnel: &mut T) -> std::io::Result<(u64, u64)>
where
    L: AsyncRead + AsyncWrite + Unpin + ?Sized,
    T: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy_bidirectional_with_sizes(local, tunnel, BUF, BUF).await
}

/// [`relay`], but gives up when neither side has sent anything for `idle` (if set).
/// Returns the bytes each way (also when the relay failed) and how it ended: `Ok(None)`
/// both sides finished, `Ok(Some(idle))` the idle time ended it, `Err` an error did.
pub async fn relay_with_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<std::time::Duration>,
) -> (u64, u64, std::io::Result<Option<std::time::Duration>>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let activity = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let (read_a, read_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut ta = activity::Tracked::new(a, activity.clone(), read_a.clone(), start);
    let mut tb = activity::Tracked::new(b, activity.clone(), read_b.clone(), start);
    let copy = relay(&mut ta, &mut tb);
    tokio::pin!(copy);
    let never = std::time::Duration::from_secs(365 * 86_400);
    loop {
        let last = start + std::time::Duration::from_millis(activity.load(Ordering::Relaxed));
        tokio::select! {
            r = &mut copy => {
                return match r {
                    Ok((x, y)) => (x, y, Ok(None)),
                    Err(e) => (read_a.load(Ordering::Relaxed), read_b.load(Ordering::Relaxed), Err(e)),
                };
            }
            _ = tokio::time::sleep_until(last + idle.unwrap_or(never)), if idle.is_some() => {
                let seen = start + std::time::Duration::from_millis(activity.load(Ordering::Relaxed));
                if seen <= last {
                    return (read_a.load(Ordering::Relaxed), read_b.load(Ordering::Relaxed), Ok(idle));
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
