//! [`AuditWriter`]: the one owner of the destination, writing batches of lines and keeping
//! them until they are written.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::event::{AuditEvent, AuditRecord, SERVER_CONN};
use super::health::Health;
use crate::server::config::AuditDestination;

/// Opens the audit file for appending, creating it private to warrend.
pub(super) fn open_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The task that owns the audit destination; run it with [`AuditWriter::run`].
pub struct AuditWriter {
    rx: mpsc::Receiver<AuditRecord>,
    out: Out,
    dropped: Arc<AtomicU64>,
    health: Arc<Health>,
    /// Pause between attempts while the destination fails ([`RETRY_INTERVAL`]).
    pub(super) retry: Duration,
}

/// How often a failing destination is tried again (and a file path opened again): soon
/// enough that service resumes within a moment of the disk being freed, rarely enough
/// that a dead destination costs nothing worth measuring.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Where the lines go.
pub(super) enum Out {
    /// Files and stdout, written by plain `write(2)` calls on a thread of their own.
    /// tokio's file and stdout types hand every write to the blocking pool and wait for
    /// it, which costs several thread wake-ups per line; with two lines per forwarded
    /// connection that was most of warrend's per-connection system calls.
    Blocking(Reopening),
    /// Any async writer (tests use in-memory pipes).
    Async(Box<dyn AsyncWrite + Send + Unpin>),
}

impl Out {
    /// The configured destination, opened once already: here rather than by the writer, so
    /// that a path that cannot be opened at all stops warrend at start, naming the file.
    pub(super) fn opened(dest: &AuditDestination) -> io::Result<Out> {
        let mut out = match dest {
            AuditDestination::Stdout => Reopening::new("stdout", || {
                Ok(Box::new(StreamDest(Box::new(io::stdout()))) as Box<dyn Dest>)
            }),
            AuditDestination::File(path) => {
                let path = path.clone();
                Reopening::new(path.display().to_string(), move || {
                    open_file(&path).map(|file| Box::new(FileDest(file)) as Box<dyn Dest>)
                })
            }
        };
        let first = (out.open)().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open audit log {}: {e}", out.name))
        })?;
        out.dest = Some(first);
        Ok(Out::Blocking(out))
    }
}

/// A destination written with blocking calls, and the way to open it again.
pub(super) struct Reopening {
    /// For messages: the path, or `stdout`.
    name: String,
    open: Box<dyn FnMut() -> io::Result<Box<dyn Dest>> + Send>,
    /// `None` after a failure or a reopen request: opened again before the next write,
    /// so that a path fixed or replaced meanwhile is picked up.
    dest: Option<Box<dyn Dest>>,
}

/// Where the blocking writer puts bytes.
pub(super) trait Dest: Send {
    /// Writes and flushes all of `buf`, counting in `done` the bytes that got out, also
    /// when it fails part way.
    fn write_counted(&mut self, buf: &[u8], done: &mut usize) -> io::Result<()>;

    /// Removes the last `n` bytes written, so that a failed batch leaves only whole
    /// lines. `Ok(false)` when this destination cannot take bytes back (stdout, a pipe, a
    /// device): the writer then writes the rest of the batch on its next attempt, which
    /// completes the torn line unless the process dies first.
    fn take_back(&mut self, n: usize) -> io::Result<bool>;
}

/// A file opened by path.
pub(super) struct FileDest(pub(super) std::fs::File);

impl Dest for FileDest {
    fn write_counted(&mut self, buf: &[u8], done: &mut usize) -> io::Result<()> {
        write_counted(&mut self.0, buf, done)
    }

    fn take_back(&mut self, n: usize) -> io::Result<bool> {
        if n == 0 {
            return Ok(true);
        }
        let meta = self.0.metadata()?;
        if !meta.is_file() {
            return Ok(false);
        }
        // The length now minus what this batch added, rather than a length remembered
        // before every write: the same with warrend the only writer (O_APPEND puts our
        // bytes last), without an fstat per batch when nothing fails.
        self.0.set_len(meta.len().saturating_sub(n as u64))?;
        Ok(true)
    }
}

/// Stdout: nothing to reopen, nothing can be taken back.
pub(super) struct StreamDest(pub(super) Box<dyn io::Write + Send>);

impl Dest for StreamDest {
    fn write_counted(&mut self, buf: &[u8], done: &mut usize) -> io::Result<()> {
        write_counted(&mut self.0, buf, done)
    }

    fn take_back(&mut self, n: usize) -> io::Result<bool> {
        Ok(n == 0)
    }
}

/// `write_all` + `flush` that tells how far it got. A buffered writer (stdout) counts
/// bytes it accepted into its buffer; its failed flush keeps them, and the next
/// attempt's flush sends them first, so the order holds either way.
fn write_counted(out: &mut impl io::Write, buf: &[u8], done: &mut usize) -> io::Result<()> {
    while *done < buf.len() {
        match out.write(&buf[*done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.flush()
}

impl Reopening {
    pub(super) fn new(
        name: impl Into<String>,
        open: impl FnMut() -> io::Result<Box<dyn Dest>> + Send + 'static,
    ) -> Reopening {
        Reopening {
            name: name.into(),
            open: Box::new(open),
            dest: None,
        }
    }

    /// Writes all of `batch`, trying again every `retry` until it can: a full disk or a
    /// vanished file must not end auditing for good. Gives up only if it still fails
    /// once every sink is gone (shutdown): nobody is left to refuse or to wait for.
    fn deliver(
        &mut self,
        batch: &[u8],
        health: &Health,
        rx: &mpsc::Receiver<AuditRecord>,
        retry: Duration,
    ) -> io::Result<()> {
        // Bytes of `batch` already out that could not be taken back.
        let mut kept = 0;
        let mut trouble = Trouble::default();
        loop {
            match self.attempt(&batch[kept..], health) {
                Ok(()) => {
                    trouble.over(&self.name, health);
                    return Ok(());
                }
                Err((e, stayed)) => {
                    kept += stayed;
                    trouble.failed(&self.name, e, health, rx)?;
                    std::thread::sleep(retry);
                }
            }
        }
    }

    /// One try; on failure, how many bytes stayed out (0 when they were taken back).
    fn attempt(&mut self, buf: &[u8], health: &Health) -> Result<(), (io::Error, usize)> {
        if health.reopen.swap(false, Ordering::Relaxed) {
            self.dest = None;
        }
        let mut dest = match self.dest.take() {
            Some(dest) => dest,
            None => (self.open)().map_err(|e| (e, 0))?,
        };
        let mut done = 0;
        match dest.write_counted(buf, &mut done) {
            Ok(()) => {
                self.dest = Some(dest);
                Ok(())
            }
            // `dest` is dropped: the next attempt opens the path again.
            Err(e) => match dest.take_back(done) {
                Ok(true) => Err((e, 0)),
                Ok(false) => Err((e, done)),
                Err(te) => {
                    tracing::error!(
                        "audit log {}: cannot remove a partial line: {te}",
                        self.name
                    );
                    Err((e, done))
                }
            },
        }
    }
}

/// How long the writer thread lets records gather after a write before it waits for
/// the next one. A record that arrives while the thread waits wakes it, which costs the
/// session that sent it a system call and the machine a context switch: two per
/// forwarded connection, a third of warrend's wake-ups when short connections come
/// back to back. Gathering for 2 ms turns those into one write per 2 ms at most; a lone
/// record is still written at once (the pause comes after a write), and even a full
/// queue ([`QUEUE_CAPACITY`](super::QUEUE_CAPACITY)) takes far longer than this to fill.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// Most bytes written in one call when several records are waiting: a burst of
/// connections costs one system call per batch, not one per line.
const BATCH_BYTES: usize = 64 * 1024;

impl AuditWriter {
    pub(super) fn new(
        rx: mpsc::Receiver<AuditRecord>,
        out: Out,
        dropped: Arc<AtomicU64>,
        health: Arc<Health>,
    ) -> AuditWriter {
        AuditWriter {
            rx,
            out,
            dropped,
            health,
            retry: RETRY_INTERVAL,
        }
    }

    /// Writes records until `server_stop` is written or every [`AuditSink`] is
    /// dropped (then once the queue is drained and flushed).
    ///
    /// A batch that cannot be written is kept and tried again every
    /// [`RETRY_INTERVAL`] (a file path opened anew each time) while the sinks
    /// refuse new work (see [`AuditSink::refusal`]); queued events wait behind it.
    /// An `Err` means the destination still failed when every sink was gone, so
    /// the last events are lost.
    pub async fn run(self) -> io::Result<()> {
        let AuditWriter {
            mut rx,
            out,
            dropped,
            health,
            retry,
        } = self;
        match out {
            Out::Blocking(mut out) => {
                tokio::task::spawn_blocking(move || {
                    let mut batch = Vec::new();
                    while let Some(record) = rx.blocking_recv() {
                        let last = fill_batch(&mut batch, record, &mut rx, &dropped);
                        // Whole lines in one write each, so an O_APPEND file never
                        // interleaves half lines.
                        out.deliver(&batch, &health, &rx, retry)?;
                        if last {
                            return Ok(());
                        }
                        if rx.is_empty() {
                            std::thread::sleep(LINGER);
                        }
                    }
                    report_dropped(&mut batch, &dropped);
                    out.deliver(&batch, &health, &rx, retry)
                })
                .await
                .map_err(io::Error::other)?
            }
            Out::Async(mut out) => {
                let mut batch = Vec::new();
                while let Some(record) = rx.recv().await {
                    let last = fill_batch(&mut batch, record, &mut rx, &dropped);
                    deliver_async(&mut out, &batch, &health, &rx, retry).await?;
                    if last {
                        return Ok(());
                    }
                }
                report_dropped(&mut batch, &dropped);
                deliver_async(&mut out, &batch, &health, &rx, retry).await
            }
        }
    }
}

/// [`Reopening::deliver`] for an async stream: nothing to reopen and nothing to take
/// back, so each attempt goes on where the previous one stopped.
async fn deliver_async(
    out: &mut (dyn AsyncWrite + Send + Unpin),
    batch: &[u8],
    health: &Health,
    rx: &mpsc::Receiver<AuditRecord>,
    retry: Duration,
) -> io::Result<()> {
    let mut done = 0;
    let mut trouble = Trouble::default();
    loop {
        let attempt = async {
            while done < batch.len() {
                match out.write(&batch[done..]).await? {
                    0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                    n => done += n,
                }
            }
            out.flush().await
        };
        match attempt.await {
            Ok(()) => {
                trouble.over("stream", health);
                return Ok(());
            }
            Err(e) => {
                trouble.failed("stream", e, health, rx)?;
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// Once every sink is gone (shutdown), how many more attempts a failing destination
/// gets: a moment for a passing error (a pipe's EAGAIN) to clear, while the daemon
/// waits for the last records, but no hanging on for a fix that may never come.
const ATTEMPTS_AFTER_CLOSE: u32 = 4;

/// The failures of one batch.
#[derive(Default)]
struct Trouble {
    since: Option<Instant>,
    after_close: u32,
}

impl Trouble {
    /// Notes a failed attempt: `Ok` to try again, or the error to give up with.
    fn failed(
        &mut self,
        dest: &str,
        e: io::Error,
        health: &Health,
        rx: &mpsc::Receiver<AuditRecord>,
    ) -> io::Result<()> {
        self.since.get_or_insert_with(Instant::now);
        health.failed(dest, &e);
        if rx.is_closed() {
            self.after_close += 1;
            if self.after_close > ATTEMPTS_AFTER_CLOSE {
                tracing::error!(
                    "audit log {dest}: giving up at shutdown, the last records are lost: {e}"
                );
                return Err(e);
            }
        }
        Ok(())
    }

    /// The batch was written.
    fn over(&self, dest: &str, health: &Health) {
        if let Some(since) = self.since {
            health.recovered(dest, since);
        }
    }
}

/// Replaces `batch` with the lines of `first` and of whatever else is already queued
/// (up to [`BATCH_BYTES`]), preceded by an `audit_dropped` record if events were lost.
/// Returns whether the batch ends with `server_stop`: that is the log's last record,
/// even if a session torn down by the shutdown reports its end afterwards.
fn fill_batch(
    batch: &mut Vec<u8>,
    first: AuditRecord,
    rx: &mut mpsc::Receiver<AuditRecord>,
    dropped: &AtomicU64,
) -> bool {
    report_dropped(batch, dropped);
    let mut next = Some(first);
    while let Some(record) = next.take() {
        push_line(batch, &record);
        if matches!(record.event, AuditEvent::ServerStop { .. }) {
            return true;
        }
        if batch.len() < BATCH_BYTES {
            next = rx.try_recv().ok();
        }
    }
    false
}

/// Replaces `batch` with an `audit_dropped` line if events were lost since the last one.
fn report_dropped(batch: &mut Vec<u8>, dropped: &AtomicU64) {
    batch.clear();
    let count = dropped.swap(0, Ordering::Relaxed);
    if count > 0 {
        let record = AuditRecord::now(SERVER_CONN, AuditEvent::AuditDropped { count });
        push_line(batch, &record);
    }
}

fn push_line(batch: &mut Vec<u8>, record: &AuditRecord) {
    // Serializing plain strings and numbers cannot fail; should it ever, the line says so.
    if serde_json::to_writer(&mut *batch, record).is_err() {
        batch.extend_from_slice(br#"{"event":"serialize_error"}"#);
    }
    batch.push(b'\n');
}
