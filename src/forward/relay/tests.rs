use super::pump::{INITIAL_BUF, MAX_BUF};
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

/// One side of a scripted relay: hands out `source` in chunks of awkward sizes (and is
/// not ready every other time), and takes at most a few bytes per write, so chunks are
/// split on both ends. Records what it was written and how.
struct Scripted {
    source: bytes::Bytes,
    chunk_sizes: std::iter::Cycle<std::vec::IntoIter<usize>>,
    write_caps: std::iter::Cycle<std::vec::IntoIter<usize>>,
    vectored: bool,
    flip: bool,
    got: Vec<u8>,
    most_asked: usize,
    vectored_calls: usize,
    plain_calls: usize,
    shut: bool,
}

impl Scripted {
    fn new(source: Vec<u8>, vectored: bool) -> Self {
        Scripted {
            source: source.into(),
            chunk_sizes: vec![1, 32_768, 5, 100_000, 7, 4_096, 300_000]
                .into_iter()
                .cycle(),
            write_caps: vec![3, 70_000, 1, 1 << 20, 33_000].into_iter().cycle(),
            vectored,
            flip: false,
            got: Vec::new(),
            most_asked: 0,
            vectored_calls: 0,
            plain_calls: 0,
            shut: false,
        }
    }

    /// Not ready every other poll (and wakes at once), as a socket between packets.
    fn not_now(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.flip = !self.flip;
        if self.flip {
            cx.waker().wake_by_ref();
        }
        self.flip
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.not_now(cx) {
            return Poll::Pending;
        }
        let n = self.source.len().min(buf.remaining());
        buf.put_slice(&self.source.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl ChunkRead for Scripted {
    fn reads_chunks(&self) -> bool {
        true
    }

    fn poll_read_chunks(
        &mut self,
        cx: &mut std::task::Context<'_>,
        max: usize,
        out: &mut std::collections::VecDeque<bytes::Bytes>,
    ) -> Poll<io::Result<usize>> {
        self.most_asked = self.most_asked.max(max);
        if self.not_now(cx) {
            return Poll::Pending;
        }
        let mut n = 0;
        while n < max && !self.source.is_empty() {
            let k = self
                .chunk_sizes
                .next()
                .unwrap()
                .min(max - n)
                .min(self.source.len());
            out.push_back(self.source.split_to(k));
            n += k;
        }
        Poll::Ready(Ok(n))
    }
}

impl Scripted {
    /// Takes what the write cap allows from `bufs`, in order.
    fn accept(&mut self, bufs: &[io::IoSlice<'_>]) -> usize {
        let mut cap = self.write_caps.next().unwrap();
        let mut n = 0;
        for b in bufs {
            let k = b.len().min(cap);
            self.got.extend_from_slice(&b[..k]);
            n += k;
            cap -= k;
            if cap == 0 {
                break;
            }
        }
        n
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.not_now(cx) {
            return Poll::Pending;
        }
        self.plain_calls += 1;
        Poll::Ready(Ok(self.accept(&[io::IoSlice::new(data)])))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.not_now(cx) {
            return Poll::Pending;
        }
        self.vectored_calls += 1;
        Poll::Ready(Ok(self.accept(bufs)))
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.shut = true;
        Poll::Ready(Ok(()))
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(seed) % 251) as u8)
        .collect()
}

#[tokio::test]
async fn chunks_reach_a_vectored_writer_whole_in_order_and_within_the_buffer_limit() {
    let (x, y) = (pattern(3 << 20, 7), pattern((1 << 20) + 17, 13));
    let mut a = Scripted::new(x.clone(), true);
    let mut b = Scripted::new(y.clone(), true);
    let (up, down) = relay_within(&mut a, &mut b, None).await.unwrap();
    assert_eq!((up, down), (x.len() as u64, y.len() as u64));
    assert!(b.got == x && a.got == y, "bytes lost or reordered");
    assert!(a.shut && b.shut, "EOF passed on both ways");
    assert!(a.vectored_calls > 0 && b.vectored_calls > 0);
    assert_eq!(
        (a.plain_calls, b.plain_calls),
        (0, 0),
        "chunks went by writev only"
    );
    assert!(a.most_asked <= MAX_BUF && b.most_asked <= MAX_BUF);
    assert_eq!(
        a.most_asked, MAX_BUF,
        "a bulk stream's reads grow to the limit"
    );
}

#[tokio::test]
async fn a_writer_without_writev_gets_the_bytes_copied_as_before() {
    let (x, y) = (pattern(1 << 20, 7), pattern(5, 13));
    let mut a = Scripted::new(x.clone(), false);
    let mut b = Scripted::new(y.clone(), false);
    relay_within(&mut a, &mut b, None).await.unwrap();
    assert!(b.got == x && a.got == y, "bytes lost or reordered");
    // Copy mode reads with `poll_read`, never asking for chunks.
    assert_eq!((a.most_asked, b.most_asked), (0, 0));
}

#[tokio::test]
async fn a_stream_without_chunks_of_its_own_reads_into_a_fresh_chunk() {
    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(b"hello").await.unwrap();
    drop(a);
    assert!(!b.reads_chunks());
    let mut out = std::collections::VecDeque::new();
    let n = std::future::poll_fn(|cx| b.poll_read_chunks(cx, 3, &mut out))
        .await
        .unwrap();
    assert_eq!((n, out.pop_front().as_deref()), (3, Some(&b"hel"[..])));
    let n = std::future::poll_fn(|cx| b.poll_read_chunks(cx, 64, &mut out))
        .await
        .unwrap();
    assert_eq!((n, out.pop_front().as_deref()), (2, Some(&b"lo"[..])));
    let n = std::future::poll_fn(|cx| b.poll_read_chunks(cx, 64, &mut out))
        .await
        .unwrap();
    assert_eq!((n, out.len()), (0, 0), "EOF adds no chunk");
}
