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

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest chunk read (and delayed) at once.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight per direction; a full queue stops reading from the
/// sender (back-pressure), so at most `QUEUE × CHUNK` bytes are held.
const QUEUE: usize = 64;

/// A running delay line: connections to [`DelayLine::port`] are relayed to
/// the upstream port, both on 127.0.0.1. Dropping it closes the listener and
/// every relayed connection.
pub struct DelayLine {
    port: u16,
    accept: JoinHandle<()>,
}

impl DelayLine {
    /// Listens on 127.0.0.1 (an ephemeral port, bound before this returns)
    /// and relays each connection to 127.0.0.1:`upstream`, every chunk
    /// delayed by `one_way` in each direction. The relay runs on `rt`.
    pub fn start(rt: &Handle, upstream: u16, one_way: Duration) -> Result<DelayLine> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("delay line: bind")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let listener = {
            let _in_runtime = rt.enter();
            TcpListener::from_std(listener).context("delay line: listener")?
        };
        let accept = rt.spawn(accept_loop(listener, upstream, one_way));
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

async fn accept_loop(listener: TcpListener, upstream: u16, one_way: Duration) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((down, _)) => {
                    conns.spawn(async move {
                        // A failed connection just ends; its peers see the close.
                        let _ = relay(down, upstream, one_way).await;
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
async fn relay(down: TcpStream, upstream: u16, one_way: Duration) -> io::Result<()> {
    down.set_nodelay(true)?;
    let up = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], upstream))).await?;
    up.set_nodelay(true)?;
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    tokio::try_join!(pipe(down_r, up_w, one_way), pipe(up_r, down_w, one_way))?;
    Ok(())
}

/// One direction: each chunk read is stamped with its arrival time plus
/// `delay` and queued; the writer sleeps until a chunk's stamp, then writes
/// it, in order. EOF from `from` becomes shutdown(Write) on `to` once the
/// queued chunks are written.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                // Dropping `tx` tells the writer: EOF after the queue.
                return Ok::<(), io::Error>(());
            }
            let due = Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                // The writer is gone, with an error try_join reports.
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
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
    if !wait.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(wait)).await;
    }
}
