//! The keeper's promises, on a paused clock with a scripted opener: nothing is opened
//! for an idle forward, a spare is handed out once, an unused one is closed after
//! [`SPARE_TTL`], an ended one is never handed out, a refusal is not retried on its own.

use super::*;
use crate::forward::OpenError;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A stream that records being dropped (the real one closes its channel then) and can be
/// marked as ended by its peer.
struct Fake {
    id: usize,
    ended: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl tokio::io::AsyncRead for Fake {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl crate::forward::relay::ChunkRead for Fake {}

impl tokio::io::AsyncWrite for Fake {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        b: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[derive(Default)]
struct Script {
    opens: AtomicUsize,
    refuse: AtomicBool,
    /// How long an open takes (the server's round trip).
    delay: Mutex<Duration>,
    /// (ended, dropped) of every stream handed out, by id.
    streams: Mutex<Vec<(Arc<AtomicBool>, Arc<AtomicBool>)>>,
    opened: Notify,
}

impl Script {
    fn end(&self, id: usize) {
        self.streams.lock().unwrap()[id]
            .0
            .store(true, Ordering::SeqCst);
    }
    fn dropped(&self, id: usize) -> bool {
        self.streams.lock().unwrap()[id].1.load(Ordering::SeqCst)
    }
}

impl Opener for Script {
    type Stream = Fake;

    async fn open(&self, _: &Endpoint, _: Option<SocketAddr>) -> Result<Fake, OpenError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let result = if self.refuse.load(Ordering::SeqCst) {
            Err(OpenError::Refused("connect failed".into()))
        } else {
            let (ended, dropped) = (Arc::default(), Arc::<AtomicBool>::default());
            let mut streams = self.streams.lock().unwrap();
            streams.push((Arc::clone(&ended), Arc::clone(&dropped)));
            Ok(Fake {
                id: streams.len() - 1,
                ended,
                dropped,
            })
        };
        self.opened.notify_one();
        result
    }

    fn still_open(s: &Fake) -> bool {
        !s.ended.load(Ordering::SeqCst)
    }
}

struct Rig {
    script: Arc<Script>,
    spare: Arc<Spare<Script>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

fn rig() -> Rig {
    let script = Arc::new(Script::default());
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let target = Arc::new(Endpoint::Tcp {
        host: "db".into(),
        port: 3306,
    });
    let spare = Spare::start(
        script.clone(),
        target,
        Duration::from_secs(60),
        cancel.clone(),
        &tracker,
    );
    Rig {
        script,
        spare,
        cancel,
        tracker,
    }
}

/// The id of a spare handed out at once, if any.
fn ready(e: Early<Fake>) -> Option<usize> {
    match e {
        Early::Ready(s) => Some(s.id),
        Early::None => None,
        Early::Pending(_) => panic!("no open was under way"),
    }
}

impl Rig {
    /// Lets the keeper run until it has nothing left to do at this instant.
    async fn settle(&self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }
    fn opens(&self) -> usize {
        self.script.opens.load(Ordering::SeqCst)
    }

    /// Asks for a spare whose open takes 50 ms and returns 10 ms into it.
    async fn mid_open(&self) {
        *self.script.delay.lock().unwrap() = Duration::from_millis(50);
        self.spare.refill();
        self.settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    /// Claims the spare under way and waits for what it turns into.
    async fn claim(&self) -> Option<Fake> {
        let Early::Pending(claim) = self.spare.take() else {
            panic!("the open under way is not offered");
        };
        tokio::time::timeout(Duration::from_secs(1), claim)
            .await
            .expect("the claim is answered when the open completes")
            .expect("the keeper is alive")
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_forward_opens_nothing_and_a_spare_is_handed_out_once() {
    let r = rig();
    r.settle().await;
    tokio::time::sleep(SPARE_TTL * 3).await;
    assert_eq!(r.opens(), 0, "nothing before the first connection");

    // The first connection finds no spare and asks for one.
    assert_eq!(ready(r.spare.take()), None);
    r.spare.refill();
    r.settle().await;
    assert_eq!(r.opens(), 1);
    assert_eq!(ready(r.spare.take()), Some(0));
    assert_eq!(ready(r.spare.take()), None, "handed out once");
    r.spare.refill();
    r.settle().await;
    assert_eq!(r.opens(), 2, "one refill per connection");
    assert_eq!(ready(r.spare.take()), Some(1));
}

#[tokio::test(start_paused = true)]
async fn an_unused_spare_is_closed_after_its_time_and_not_replaced() {
    let r = rig();
    r.spare.refill();
    r.settle().await;
    assert_eq!(r.opens(), 1);
    tokio::time::sleep(SPARE_TTL - Duration::from_millis(100)).await;
    r.settle().await;
    assert!(!r.script.dropped(0), "still held before its time");
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.settle().await;
    assert!(r.script.dropped(0), "closed after SPARE_TTL");
    tokio::time::sleep(SPARE_TTL * 5).await;
    r.settle().await;
    assert_eq!(r.opens(), 1, "an idle forward keeps nothing open");
    assert_eq!(ready(r.spare.take()), None);
}

#[tokio::test(start_paused = true)]
async fn an_ended_spare_is_dropped_instead_of_handed_out() {
    let r = rig();
    r.spare.refill();
    r.settle().await;
    r.script.end(0);
    assert_eq!(
        ready(r.spare.take()),
        None,
        "the target closed it: not usable"
    );
    assert!(r.script.dropped(0));
    r.spare.refill();
    r.settle().await;
    assert_eq!(ready(r.spare.take()), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_refused_open_waits_for_the_next_connection() {
    let r = rig();
    r.script.refuse.store(true, Ordering::SeqCst);
    r.spare.refill();
    r.settle().await;
    tokio::time::sleep(SPARE_TTL * 5).await;
    r.settle().await;
    assert_eq!(r.opens(), 1, "no retry loop against a refusing target");
    r.script.refuse.store(false, Ordering::SeqCst);
    r.spare.refill();
    r.settle().await;
    assert_eq!(r.opens(), 2);
    assert!(ready(r.spare.take()).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_connection_arriving_during_the_open_gets_that_spare() {
    let r = rig();
    r.mid_open().await;
    // The first arrival claims the spare on its way; a second opens its own.
    let claimed = r.claim();
    tokio::pin!(claimed);
    assert!(futures_poll_once(claimed.as_mut()).await.is_none());
    assert_eq!(ready(r.spare.take()), None, "one claimant per spare");
    r.spare.refill();
    r.spare.refill();
    assert_eq!(claimed.await.map(|s| s.id), Some(0));
    // The claimant asked for the next one, which is opened and then held.
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.settle().await;
    assert_eq!(r.opens(), 2);
    assert!(!r.script.dropped(1));
    assert_eq!(ready(r.spare.take()), Some(1));
}

/// Polls `f` once: `Some` if it finished, `None` if it is still waiting.
async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
    let mut f = f;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_request_left_during_an_open_does_not_open_a_second_spare() {
    let r = rig();
    r.mid_open().await;
    // Another connection's request while the open is under way (it opened its own).
    r.spare.refill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.settle().await;
    assert_eq!(r.opens(), 1);
    assert!(!r.script.dropped(0));
    assert_eq!(ready(r.spare.take()), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_claimant_of_a_failed_open_is_told_to_open_its_own() {
    let r = rig();
    r.script.refuse.store(true, Ordering::SeqCst);
    r.mid_open().await;
    assert!(r.claim().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn cancel_closes_the_spare_and_ends_the_keeper() {
    let r = rig();
    r.spare.refill();
    r.settle().await;
    r.cancel.cancel();
    r.tracker.close();
    tokio::time::timeout(Duration::from_secs(1), r.tracker.wait())
        .await
        .expect("the keeper ends on cancel");
    assert!(r.script.dropped(0));
}
