//! The destinations behind every tunnel, served in-process on 127.0.0.1:
//! an echo server, a source that sends the first N bytes of a fixed
//! pseudo-random pattern, and a sink that stores what it receives and
//! answers with its SHA-256; for transfers of a fixed duration (the wan and
//! consumer phases), a stream that sends the pattern over and over for as
//! long as asked and counts what it got rid of, and a sink that compares
//! what arrives with the pattern as it goes.
//!
//! Payloads are prepared and received into memory that is allocated and
//! touched before any timer starts, and hashed after the timer stops: on a
//! 2-core machine, hashing during the transfer would take CPU from the
//! processes being measured.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::procs::{Proc, Stream};

/// What a connection is opened to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Echo for latency, setup and the slow reader's second connection.
    Echo,
    /// The echo server of the concurrency test, in a child process (see
    /// [`EchoHelper`]); also keeps its 10,000 connections clear of the
    /// TIME_WAIT ports the sequential setup test leaves behind.
    EchoConc,
    /// Sends `u64` little-endian N bytes of the pattern on request.
    Source,
    /// Receives until EOF, replies SHA-256 (32 bytes) + length (u64 LE).
    Sink,
    /// Sends `u64` little-endian N bytes of the pattern repeated end to end
    /// (`u64::MAX`: until the peer goes), counting them ([`Targets::pushed`]).
    Stream,
    /// Receives the repeated pattern until EOF, comparing as it goes;
    /// replies length (u64 LE) + 1 if every byte matched, else 0.
    Check,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Echo,
        Target::EchoConc,
        Target::Source,
        Target::Sink,
        Target::Stream,
        Target::Check,
    ];
}

/// The payload every transfer uses: deterministic, incompressible and
/// position-dependent (splitmix64), so a lost, duplicated or reordered
/// chunk changes the hash.
pub struct Pattern {
    data: Vec<u8>,
    hashes: Mutex<HashMap<usize, [u8; 32]>>,
}

impl Pattern {
    pub fn new(len: usize) -> Pattern {
        let mut data = Vec::with_capacity(len + 8);
        let mut state: u64 = 0x5EED_0F5A_77E4;
        while data.len() < len {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            data.extend_from_slice(&z.to_le_bytes());
        }
        data.truncate(len);
        Pattern {
            data,
            hashes: Mutex::default(),
        }
    }

    /// The first `n` bytes (the whole pattern if it is shorter).
    pub fn prefix(&self, n: usize) -> &[u8] {
        &self.data[..n.min(self.data.len())]
    }

    /// The pattern repeated end to end, from byte `offset` of that
    /// repetition: at most `max` bytes, up to where it wraps.
    pub fn cycled(&self, offset: u64, max: usize) -> &[u8] {
        if self.data.is_empty() {
            return &[];
        }
        let at = (offset % self.data.len() as u64) as usize;
        let end = at + max.min(self.data.len() - at);
        &self.data[at..end]
    }

    /// Whether `data` is the repeated pattern from byte `offset` on. A plain
    /// comparison costs far less CPU than hashing, so it can run during a
    /// transfer without taking much from the processes measured.
    pub fn matches_cycled(&self, mut offset: u64, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let want = self.cycled(offset, data.len());
            if want.is_empty() || data[..want.len()] != *want {
                return false;
            }
            data = &data[want.len()..];
            offset += want.len() as u64;
        }
        true
    }

    /// SHA-256 of the first `n` bytes, computed once per `n`.
    pub fn sha256(&self, n: usize) -> [u8; 32] {
        let mut h = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        *h.entry(n)
            .or_insert_with(|| Sha256::digest(self.prefix(n)).into())
    }
}

/// SHA-256 of received data.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A receive buffer, allocated and touched once: page faults of a fresh
/// gigabyte would otherwise be part of the first measured transfer.
pub fn touched_buffer(len: usize) -> Vec<u8> {
    vec![0xA5; len]
}

/// What the sink saw of the last upload.
#[derive(Clone, Copy, Debug)]
pub struct SinkReport {
    /// When EOF arrived: the end of an upload, on the same clock as the sender.
    pub eof_at: Instant,
}

/// The running target servers.
pub struct Targets {
    ports: HashMap<Target, u16>,
    /// All of the echo helper's ports ([`Target::EchoConc`] is the first).
    pub echo_ports: Vec<u16>,
    pub pattern: Arc<Pattern>,
    last_sink: Arc<Mutex<Option<SinkReport>>>,
    last_stream: Arc<Mutex<Option<Arc<AtomicU64>>>>,
}

impl Targets {
    /// Starts every target on the current tokio runtime. `sink_capacity`
    /// is the largest upload the sink can store.
    pub async fn start(
        pattern: Arc<Pattern>,
        sink_capacity: usize,
        helper: &EchoHelper,
    ) -> io::Result<Targets> {
        let mut ports = HashMap::new();
        ports.insert(Target::Echo, serve(echo).await?);
        ports.insert(Target::EchoConc, helper.port);
        let p = pattern.clone();
        ports.insert(Target::Source, serve(move |s| source(s, p.clone())).await?);
        let buffer = Arc::new(tokio::sync::Mutex::new(touched_buffer(sink_capacity)));
        let last_sink: Arc<Mutex<Option<SinkReport>>> = Arc::default();
        let last = last_sink.clone();
        ports.insert(
            Target::Sink,
            serve(move |s| sink(s, buffer.clone(), last.clone())).await?,
        );
        let last_stream: Arc<Mutex<Option<Arc<AtomicU64>>>> = Arc::default();
        let (p, last) = (pattern.clone(), last_stream.clone());
        ports.insert(
            Target::Stream,
            serve(move |s| stream(s, p.clone(), last.clone())).await?,
        );
        let (p, last) = (pattern.clone(), last_sink.clone());
        ports.insert(
            Target::Check,
            serve(move |s| check(s, p.clone(), last.clone())).await?,
        );
        Ok(Targets {
            ports,
            echo_ports: helper.ports.clone(),
            pattern,
            last_sink,
            last_stream,
        })
    }

    /// Forgets the latest stream connection, so that [`Targets::pushed`]
    /// says `None` until the next one asks for data.
    pub fn forget_stream(&self) {
        *self.last_stream.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Bytes the latest stream connection has written into its socket so
    /// far (what the tunnel accepted from it); `None` before one asked.
    pub fn pushed(&self) -> Option<u64> {
        let last = self.last_stream.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref().map(|n| n.load(Ordering::Relaxed))
    }

    pub fn port(&self, t: Target) -> u16 {
        self.ports[&t]
    }

    /// Every target port (warrend's connect rule names exactly these).
    pub fn all_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.ports.values().copied().collect();
        v.extend(&self.echo_ports);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Takes the sink's report of the upload that just finished.
    pub fn take_sink_report(&self) -> Option<SinkReport> {
        self.last_sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// An echo server in a child process (this benchmark binary run with
/// `--echo-helper`). The concurrency test holds 10,000 connections open;
/// with both of their ends in one process that is 20,000 descriptors, more
/// than the hard limit of many machines (and of containers, which cannot
/// raise it).
pub struct EchoHelper {
    pub port: u16,
    /// Every port it echoes on ([`ECHO_PORTS`] of them, `port` first): the many phase
    /// spreads its connections over them, since one destination address and port
    /// takes fewer connections from one source address than there are ephemeral ports.
    pub ports: Vec<u16>,
    _proc: Proc,
}

/// Ports the echo helper listens on: 100,000 connections over 8 ports is 12,500 per
/// port, well inside the 28,000 ephemeral ports of Linux's default range.
pub const ECHO_PORTS: usize = 8;

/// The argument that turns this binary into the echo helper.
pub const HELPER_ARG: &str = "--echo-helper";
const HELPER_READY: &str = "echo helper listening on port ";

impl EchoHelper {
    pub fn start() -> anyhow::Result<EchoHelper> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(HELPER_ARG);
        let proc = Proc::spawn(cmd)?;
        let line = proc.wait_line(Stream::Stdout, Duration::from_secs(10), |l| {
            l.starts_with(HELPER_READY)
        })?;
        let ports = line.text[HELPER_READY.len()..]
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<u16>, _>>()?;
        let port = *ports.first().context("the echo helper named no port")?;
        Ok(EchoHelper {
            port,
            ports,
            _proc: proc,
        })
    }

    /// The helper's main: serve echo until killed, or until the benchmark
    /// that started it is gone (then its parent changes).
    pub fn main() -> anyhow::Result<()> {
        let parent = std::os::unix::process::parent_id();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut ports = Vec::new();
            for _ in 0..ECHO_PORTS {
                ports.push(serve(echo).await?.to_string());
            }
            println!("{HELPER_READY}{}", ports.join(" "));
            while std::os::unix::process::parent_id() == parent {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(())
        })
    }
}

/// Binds 127.0.0.1:0 and runs `handler` on a task per connection.
async fn serve<F, Fut>(handler: F) -> io::Result<u16>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(handler(s));
                }
                // Out of descriptors during the concurrency test: let some close.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
    Ok(port)
}

/// Echoes until EOF, then half-closes.
async fn echo(mut s: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

/// Reads the requested length, sends that much of the pattern, half-closes,
/// then waits for the client to close (closing first with unread data
/// would turn into a reset).
async fn source(mut s: TcpStream, pattern: Arc<Pattern>) -> io::Result<()> {
    let n = s.read_u64_le().await? as usize;
    s.write_all(pattern.prefix(n)).await?;
    s.shutdown().await?;
    let mut scratch = [0u8; 1024];
    while s.read(&mut scratch).await? > 0 {}
    Ok(())
}

/// Stores everything until EOF, notes when EOF came, then replies with the
/// hash and length (hashed off the async workers, after the clock stopped).
async fn sink(
    mut s: TcpStream,
    buffer: Arc<tokio::sync::Mutex<Vec<u8>>>,
    last: Arc<Mutex<Option<SinkReport>>>,
) -> io::Result<()> {
    let mut buf = buffer.lock_owned().await;
    let mut len = 0;
    let mut overflow = [0u8; 4096];
    loop {
        let n = if len < buf.len() {
            s.read(&mut buf[len..]).await?
        } else {
            s.read(&mut overflow).await?
        };
        if n == 0 {
            break;
        }
        len += n;
    }
    let eof_at = Instant::now();
    if len > 0 {
        // (An empty connection is a readiness probe, not an upload.)
        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(SinkReport { eof_at });
    }
    let stored = len.min(buf.len());
    let digest = tokio::task::spawn_blocking(move || sha256(&buf[..stored]))
        .await
        .map_err(io::Error::other)?;
    let mut reply = digest.to_vec();
    reply.extend_from_slice(&(len as u64).to_le_bytes());
    s.write_all(&reply).await?;
    s.shutdown().await
}

/// Stream bytes written per call: small enough that the count follows the
/// tunnel closely, large enough to cost nothing.
const STREAM_WRITE: usize = 64 * 1024;

/// Reads the requested length, then sends the repeated pattern until that
/// much is sent or the peer is gone, counting every byte its socket took.
async fn stream(
    mut s: TcpStream,
    pattern: Arc<Pattern>,
    last: Arc<Mutex<Option<Arc<AtomicU64>>>>,
) -> io::Result<()> {
    let n = s.read_u64_le().await?;
    let pushed = Arc::new(AtomicU64::new(0));
    *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(pushed.clone());
    let mut sent = 0u64;
    while sent < n {
        let max = (n - sent).min(STREAM_WRITE as u64) as usize;
        let w = s.write(pattern.cycled(sent, max)).await?;
        if w == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += w as u64;
        pushed.store(sent, Ordering::Relaxed);
    }
    s.shutdown().await?;
    let mut scratch = [0u8; 1024];
    while s.read(&mut scratch).await? > 0 {}
    Ok(())
}

/// Receives until EOF comparing with the repeated pattern, notes when EOF
/// came (as [`sink`] does), then replies with the length and the verdict.
async fn check(
    mut s: TcpStream,
    pattern: Arc<Pattern>,
    last: Arc<Mutex<Option<SinkReport>>>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut len, mut intact) = (0u64, true);
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        intact = intact && pattern.matches_cycled(len, &buf[..n]);
        len += n as u64;
    }
    if len > 0 {
        // (An empty connection is a readiness probe, not an upload.)
        let eof_at = Instant::now();
        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(SinkReport { eof_at });
    }
    let mut reply = len.to_le_bytes().to_vec();
    reply.push(u8::from(intact));
    s.write_all(&reply).await?;
    s.shutdown().await
}
