//! A slower link on loopback, in user space (the machine has no netem): a
//! TCP relay that holds every chunk it reads for a fixed one-way delay
//! before writing it on, in each direction.
//!
//! Put between an SSH client and its server, it turns loopback's
//! microsecond round trips into a link where round trips, not CPU, decide
//! how fast a forwarded connection is set up. Only data is delayed: the TCP
//! handshake to the relay completes at once, so a new TCP connection costs
//! one round trip less than on a real link (irrelevant to the link phase,
//! which opens the SSH connection once and measures channels on it).
//!
//! The relay terminates TCP: each side's kernel acknowledges data to the
//! relay as it would to any local peer (delayed ACKs included), not after a
//! round trip as across a real link. A sender holding small packets for
//! acknowledgement (sshd's socket has Nagle on) therefore sees ACK timings no
//! real link has: it waits until the relay sends it data or its delayed-ACK
//! timer fires.
//!
//! Waits run on the runtime's blocking pool (see [`sleep_until`]): tokio's
//! own timer, with its 1 ms ticks rounded up twice, put about 1.3 ms on
//! every one-way delay; a thread's sleep adds about 0.1-0.2 ms.
//!
//! A line may also have a rate cap ([`Shape::rate`]): a token bucket per
//! direction, in user space, that decides when each chunk has left the
//! bottleneck; the one-way delay runs from then. Chunks waiting for the
//! bucket are the bottleneck's buffer, allowed to grow to one round trip's
//! worth of the rate (a router sized by the usual rule of thumb); beyond
//! that the relay stops reading and the sender's socket fills. Since the
//! relay terminates TCP, the sender never sees a loss or a round trip of
//! its own: an end-to-end window (SSH's channel window) is the only thing
//! that can hold a stream below the line's limit, which is what the wan
//! phase measures.
//!
//! Memory: the line holds at most [`QUEUE_BYTES`] (32 MiB) per direction
//! of a relayed connection, allocated only while held. 1 Gbit/s across a
//! 100 ms round trip needs 6.25 MB on the wire per direction (rate x
//! one-way delay) plus up to 12.5 MB of bottleneck buffer: 18.75 MB, inside
//! the bound. Without a cap the bound itself is the limit: 32 MiB per
//! one-way delay (6.4 GiB/s at 10 ms RTT, 640 MiB/s at 100 ms), see
//! [`Shape::limit`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest chunk read (and delayed) at once: 1 ms at 1 Gbit/s, so a
/// capped line paces in steps well under any round trip measured.
const CHUNK: usize = 128 * 1024;

/// Bytes held per direction, on the wire and in the bottleneck buffer
/// together; a full queue stops reading from the sender (back-pressure).
pub const QUEUE_BYTES: usize = 32 << 20;

/// Waits shorter than this are not slept: a thread hop costs about as much.
const MIN_SLEEP: Duration = Duration::from_micros(50);

/// What a line does to the data crossing it, the same in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Time from a chunk leaving the bottleneck to its delivery.
    pub one_way: Duration,
    /// Rate cap in bytes per second, `None` for none.
    pub rate: Option<u64>,
}

impl Shape {
    pub fn delay(one_way: Duration) -> Shape {
        Shape {
            one_way,
            rate: None,
        }
    }

    /// The most one stream can get across, in bytes per second: the rate
    /// cap, or without one the queue bound over the one-way delay.
    pub fn limit(&self) -> f64 {
        let by_queue = if self.one_way.is_zero() {
            f64::INFINITY
        } else {
            QUEUE_BYTES as f64 / self.one_way.as_secs_f64()
        };
        self.rate.map_or(by_queue, |r| (r as f64).min(by_queue))
    }
}

/// A running delay line: connections to [`DelayLine::port`] are relayed to
/// the upstream port, both on 127.0.0.1. Dropping it closes the listener and
/// every relayed connection.
pub struct DelayLine {
    port: u16,
    accept: JoinHandle<()>,
}

impl DelayLine {
    /// Listens on 127.0.0.1 (an ephemeral port, bound before this returns)
    /// and relays each connection to 127.0.0.1:`upstream`, shaped by
    /// `shape` in each direction. The relay runs on `rt`.
    pub fn start(rt: &Handle, upstream: u16, shape: Shape) -> Result<DelayLine> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("delay line: bind")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let listener = {
            let _in_runtime = rt.enter();
            TcpListener::from_std(listener).context("delay line: listener")?
        };
        let accept = rt.spawn(accept_loop(listener, upstream, shape));
        Ok(DelayLine { port, accept })
    }

    /// Where clients connect instead of the upstream port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        // Cancelling the accept task drops its JoinSet, which aborts every
        // connection's task and so closes both of its sockets.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: u16, shape: Shape) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((down, _)) => {
                    conns.spawn(async move {
                        // A failed connection just ends; its peers see the close.
                        let _ = relay(down, upstream, shape).await;
                    });
                }
                // Out of file descriptors or an aborted handshake: pause
                // instead of spinning on the error.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Relays one connection both ways until both directions reached EOF, or
/// either failed (then both sockets close at once).
async fn relay(down: TcpStream, upstream: u16, shape: Shape) -> io::Result<()> {
    down.set_nodelay(true)?;
    let up = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], upstream))).await?;
    up.set_nodelay(true)?;
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    tokio::try_join!(pipe(down_r, up_w, shape), pipe(up_r, down_w, shape))?;
    Ok(())
}

/// The bottleneck of one direction: a token bucket that says when a chunk
/// has been sent at the capped rate.
struct Bucket {
    /// Bytes per second.
    rate: f64,
    /// Tokens (bytes) at `at`; negative while chunks wait to be sent.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Bursts up to one chunk: an idle line does not save up for a flood.
    const BURST: f64 = CHUNK as f64;

    fn new(rate: u64) -> Bucket {
        Bucket {
            rate: rate.max(1) as f64,
            tokens: Bucket::BURST,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(Bucket::BURST);
        self.at = now;
    }

    /// How long the chunks already accepted still wait for the bottleneck.
    fn backlog(&mut self, now: Instant) -> Duration {
        self.refill(now);
        Duration::from_secs_f64((-self.tokens).max(0.0) / self.rate)
    }

    /// Takes `n` bytes; returns when they will have left the bottleneck.
    fn send(&mut self, n: usize, now: Instant) -> Instant {
        self.refill(now);
        self.tokens -= n as f64;
        now + Duration::from_secs_f64((-self.tokens).max(0.0) / self.rate)
    }
}

/// One direction: each chunk read is stamped with the time it leaves the
/// bottleneck (now, without a cap) plus the one-way delay and queued; the
/// writer sleeps until a chunk's stamp, then writes it, in order. EOF from
/// `from` becomes shutdown(Write) on `to` once the queued chunks are
/// written.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shape: Shape) -> io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let room = Arc::new(Semaphore::new(QUEUE_BYTES));
    let writer_room = room.clone();
    // At most a round trip's worth of the rate waits for the bottleneck.
    let max_backlog = (shape.one_way * 2).max(Duration::from_millis(5));
    let read = async move {
        let mut bucket = shape.rate.map(Bucket::new);
        let mut buf = vec![0u8; CHUNK];
        loop {
            if let Some(b) = bucket.as_mut() {
                let backlog = b.backlog(Instant::now());
                if backlog > max_backlog {
                    tokio::time::sleep(backlog - max_backlog).await;
                }
            }
            let n = from.read(&mut buf).await?;
            if n == 0 {
                // Dropping `tx` tells the writer: EOF after the queue.
                return Ok::<(), io::Error>(());
            }
            // Closed only when the writer is gone, with an error try_join reports.
            let Ok(permit) = room.acquire_many(n as u32).await else {
                return Ok(());
            };
            permit.forget();
            let now = Instant::now();
            let sent = bucket.as_mut().map_or(now, |b| b.send(n, now));
            if tx.send((sent + shape.one_way, buf[..n].to_vec())).is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        let result = async {
            while let Some((due, chunk)) = rx.recv().await {
                sleep_until(due).await;
                to.write_all(&chunk).await?;
                writer_room.add_permits(chunk.len());
            }
            to.shutdown().await
        }
        .await;
        // A reader waiting for room must not wait forever on a dead writer.
        writer_room.close();
        result
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

/// Sleeps until `due` on a thread of the runtime's blocking pool, whose
/// `thread::sleep` (a high-resolution timer) wakes within about 0.1 ms,
/// where tokio's own timer rounds up to its next 1 ms tick and mio's park
/// timeout rounds up again. At most one such sleep per direction is under
/// way; one outliving an aborted writer only ends its thread's nap.
async fn sleep_until(due: Instant) {
    let wait = due.saturating_duration_since(Instant::now());
    if wait >= MIN_SLEEP {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(wait)).await;
    }
}
