//! The drain's policy, with a plain queue standing in for russh's channel and tokio's
//! paused clock: back-pressure for a reader that keeps up, the disk for one that stalls
//! or crawls, and every byte in order either way.

use super::*;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

impl Source for mpsc::Receiver<ChannelMsg> {
    fn next(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send {
        self.recv()
    }
}

struct Reader(Arc<Shared>);

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_shared(&self.0, cx, buf)
    }
}

const CHUNK: usize = 32 * 1024;

fn chunk(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

/// Starts a drain over a queue as russh's would be (bounded), with a 128 KiB memory cap.
fn start() -> (
    mpsc::Sender<ChannelMsg>,
    Arc<Shared>,
    tokio::task::JoinHandle<()>,
) {
    start_budgeted(None)
}

fn start_budgeted(
    budget: Option<Arc<Budget>>,
) -> (
    mpsc::Sender<ChannelMsg>,
    Arc<Shared>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = mpsc::channel(4);
    let shared = Arc::new(Shared {
        spill: Mutex::new(Spill::new(4 * CHUNK, 1 << 30, budget)),
        room: Notify::new(),
        failed: CancellationToken::new(),
    });
    let s = shared.clone();
    let task = tokio::spawn(async move { drain(&mut rx, &s, PATIENCE, || async {}).await });
    (tx, shared, task)
}

async fn send_all(tx: &mpsc::Sender<ChannelMsg>, n: usize) {
    for i in 0..n {
        tx.send(ChannelMsg::Data { data: chunk(i) }).await.unwrap();
    }
    tx.send(ChannelMsg::Eof).await.unwrap();
}

/// Every byte, in order: chunk `i` is all `i % 251`.
fn check_in_order(all: &[u8], n: usize) {
    assert_eq!(all.len(), n * CHUNK);
    for (i, c) in all.chunks(CHUNK).enumerate() {
        assert!(
            c.iter().all(|&b| b == (i % 251) as u8),
            "chunk {i} out of order"
        );
    }
}

/// A local reader that takes at most one packet's worth every `pace`, until EOF.
fn paced_reader(shared: &Arc<Shared>, pace: Duration) -> tokio::task::JoinHandle<Vec<u8>> {
    let mut r = Reader(shared.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut all = Vec::new();
        loop {
            tokio::time::sleep(pace).await;
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n]);
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_reader_a_little_slower_than_the_tunnel_gets_back_pressure_not_the_disk() {
    let (tx, shared, _task) = start();
    // The tunnel delivers a packet every 1 ms, the reader takes one every 1.2 ms: without
    // back-pressure the backlog outgrows the 4-packet memory cap within ~25 packets.
    let reader = paced_reader(&shared, Duration::from_micros(1200));
    for i in 0..200 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        tx.send(ChannelMsg::Data { data: chunk(i) }).await.unwrap();
    }
    tx.send(ChannelMsg::Eof).await.unwrap();
    check_in_order(&reader.await.unwrap(), 200);
    assert!(shared.lock().spilled == 0, "nothing may go to disk");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_reader_costs_the_session_one_wait_then_spills_and_loses_nothing() {
    let (tx, shared, _task) = start();
    let started = tokio::time::Instant::now();
    // Nobody reads: after the memory cap, the drain waits once and then parks the rest,
    // more than the stage holds (so the drain also waits for the disk on the way).
    let n = STAGE_CAP / CHUNK + 100;
    send_all(&tx, n).await;
    let held = started.elapsed();
    assert!(held <= PATIENCE * 2, "the session was held for {held:?}");
    // Let the flusher finish, so the reader has to go through the file.
    loop {
        {
            let s = shared.lock();
            if s.staged.is_empty() && s.inflight == 0 {
                assert!(s.file_end > 0, "the backlog went to the file");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut all = Vec::new();
    Reader(shared.clone()).read_to_end(&mut all).await.unwrap();
    check_in_order(&all, n);
    assert_eq!(shared.lock().file_end, 0, "the spill file was started over");
}

#[tokio::test(start_paused = true)]
async fn a_crawling_reader_goes_to_disk_rather_than_setting_the_sessions_pace() {
    let (tx, shared, _task) = start();
    // One packet's worth every 15 ms: the session must not run at this pace.
    let reader = paced_reader(&shared, Duration::from_millis(15));
    let started = tokio::time::Instant::now();
    send_all(&tx, 100).await;
    let held = started.elapsed();
    // At the reader's pace 100 packets would take 1.5 s.
    assert!(
        held < Duration::from_millis(200),
        "the session ran at the reader's pace: {held:?}"
    );
    assert!(shared.lock().spilled > 0);
    check_in_order(&reader.await.unwrap(), 100);
}

#[tokio::test(start_paused = true)]
async fn held_bytes_are_charged_to_the_budget_and_given_back_as_read_or_dropped() {
    let server = Budget::new("server", 64 * CHUNK as u64);
    let user = Budget::within(&server, "user", 16 * CHUNK as u64);
    let (tx, shared, task) = start_budgeted(Some(user.clone()));
    for i in 0..10 {
        tx.send(ChannelMsg::Data { data: chunk(i) }).await.unwrap();
    }
    // The drain has taken them all (memory, then the disk): all ten are charged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while user.used() < 10 * CHUNK as u64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(user.used(), 10 * CHUNK as u64);
    assert_eq!(server.used(), 10 * CHUNK as u64);
    let mut buf = vec![0u8; 3 * CHUNK];
    Reader(shared.clone()).read_exact(&mut buf).await.unwrap();
    assert_eq!(
        user.used(),
        7 * CHUNK as u64,
        "what the reader took is given back"
    );
    drop(tx);
    task.await.unwrap();
    drop(shared);
    assert_eq!(
        (user.used(), server.used()),
        (0, 0),
        "the rest is given back at the end"
    );
}

#[tokio::test(start_paused = true)]
async fn a_channel_beyond_its_budget_fails_and_says_so() {
    let user = Budget::new("max_buffered_per_user (mallory)", 8 * CHUNK as u64);
    let (tx, shared, _task) = start_budgeted(Some(user.clone()));
    let failure = {
        let shared = shared.clone();
        async move {
            shared.failed.cancelled().await;
            shared.lock().error.clone().unwrap_or_default()
        }
    };
    // Nobody reads; the ninth packet is over budget. The drain keeps taking (and
    // discarding) packets after the failure, so the sender is never stuck.
    for i in 0..20 {
        tx.send(ChannelMsg::Data { data: chunk(i) }).await.unwrap();
    }
    let reason = tokio::time::timeout(Duration::from_secs(5), failure)
        .await
        .expect("the channel failed");
    assert!(
        reason.contains("max_buffered_per_user (mallory)"),
        "{reason}"
    );
    assert!(user.used() <= 8 * CHUNK as u64);
    let mut buf = vec![0u8; CHUNK];
    let err = Reader(shared.clone()).read(&mut buf).await.unwrap_err();
    assert!(err.to_string().contains("budget"), "{err}");
}
