//! The audit log: one JSON object per line for every security-relevant event, kept apart from diagnostic logs.
//!
//! Diagnostic logs (`tracing`, on stderr) are for operators debugging the
//! server; their format and verbosity change freely. The audit log is for
//! reviewing who reached what through the bastion, so it has a stable,
//! machine-readable shape: JSON Lines, handed to the kernel as soon as the
//! writer thread gets to them (a burst in one write), so a crash loses at most
//! the events still queued. Every record carries the
//! connection id that the connection's tracing span also carries, so the
//! two streams can be joined.
//!
//! A log that cannot be written (full disk, vanished file) must not let the bastion go
//! on unaudited, nor stop auditing for good once the cause is fixed: the writer keeps
//! the batch it could not write, tries again (opening the file's path anew) until it
//! can, and meanwhile [`AuditSink::refusal`] tells the server to refuse new logins,
//! channels and listeners unless the operator chose `audit_on_failure = "continue"`.
//! A file never keeps half a line: what a failed write left is cut off again. Stdout
//! cannot take bytes back, so there the rest of the line follows on the next attempt.
//!
//! Records never contain secrets: keys appear only as fingerprints, and
//! warrend accepts no passwords.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::config::{AuditDestination, AuditOnFailure};
use super::metrics::Metrics;

/// How many events may wait for the writer before [`AuditSink::record`]
/// makes its caller wait: deep enough to absorb a burst of connections,
/// small enough that a stalled destination is felt instead of eating memory.
pub const QUEUE_CAPACITY: usize = 4096;

/// The `conn` of events that belong to the server rather than to one
/// connection ([`AuditEvent::ServerStart`], [`AuditEvent::ConfigReload`], ...).
/// [`next_conn_id`] never returns it.
pub const SERVER_CONN: u64 = 0;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh connection id, unique for the life of the process.
///
/// Put it in the connection's tracing span as well as in its audit records,
/// so diagnostic logs and the audit log can be correlated.
pub fn next_conn_id() -> u64 {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// One line of the audit log.
#[derive(Serialize, Clone, Debug)]
pub struct AuditRecord {
    /// When the event happened (not when it was written), RFC 3339 UTC with
    /// milliseconds.
    pub ts: String,
    /// Connection id from [`next_conn_id`], or [`SERVER_CONN`].
    pub conn: u64,
    /// The cluster node that wrote the record (cluster mode only): several nodes' logs
    /// merged stay readable, and conn ids are per node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened; its `event` tag and fields sit at the top level.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// What happened. Serialized with an `event` tag in snake_case
/// (`"event": "channel_open"`) next to the variant's fields.
///
/// Free-form values (`kind`, `decision`, `reason`, ...) are strings rather
/// than enums so that the log stays readable by tools that know nothing of
/// warrend, and so a new kind of channel does not change the schema.
#[derive(Serialize, Clone, Debug)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A TCP connection was accepted, before any SSH traffic.
    SessionStart {
        /// Peer `ip:port`.
        source: String,
    },
    /// A user logged in.
    AuthSuccess {
        /// SSH user name.
        user: String,
        /// `publickey` or `certificate`.
        method: String,
        /// `SHA256:...` of the key (of the certificate's key for certificates).
        key_fp: String,
        /// Which trust entry accepted the key, as `file:line`, so a review
        /// can find and revoke it.
        key_source: Option<String>,
        /// Peer `ip:port`.
        source: String,
    },
    /// A login attempt was refused. Offering a key that is not authorized is
    /// normal SSH behaviour, so expect several of these before a success.
    AuthFailure {
        /// SSH user name as sent by the peer (untrusted).
        user: String,
        /// Method the peer tried (`publickey`, `certificate`, `password`, `none`, ...).
        method: String,
        /// `SHA256:...` of the offered key, when there was one.
        key_fp: Option<String>,
        /// Peer `ip:port`.
        source: String,
        /// Why it was refused.
        reason: String,
    },
    /// The connection ended.
    SessionEnd {
        /// The authenticated user, if the peer got that far.
        user: Option<String>,
        /// Peer `ip:port`.
        source: String,
        /// Time since [`AuditEvent::SessionStart`].
        duration_ms: u64,
        /// Why it ended (`client disconnect`, `idle timeout`, `server shutdown`, ...).
        reason: String,
    },
    /// The peer asked for a channel; records the policy decision, whether
    /// or not the channel was then opened.
    ChannelOpen {
        /// Per-connection channel number, matching the [`AuditEvent::ChannelClose`].
        channel: u64,
        /// `direct-tcpip`, `forwarded-tcpip`, `rendezvous-reach`, `session`, ...
        kind: String,
        /// Authenticated user.
        user: String,
        /// What the peer asked for, `host:port` as sent.
        target: String,
        /// Addresses the target resolved to, as the policy saw them.
        resolved: Vec<String>,
        /// `allow` or `deny`.
        decision: String,
        /// The rule that decided, as written in the config.
        rule: Option<String>,
        /// Why it was denied or failed.
        reason: Option<String>,
        /// Cluster mode, a connection across two nodes: correlation id and other node.
        #[serde(flatten)]
        hop: Option<Hop>,
    },
    /// An allowed channel closed.
    ChannelClose {
        /// Per-connection channel number, matching the [`AuditEvent::ChannelOpen`].
        channel: u64,
        /// Same as in the open.
        kind: String,
        /// Authenticated user.
        user: String,
        /// Same as in the open.
        target: String,
        /// Bytes from the SSH client towards the target.
        bytes_up: u64,
        /// Bytes from the target towards the SSH client.
        bytes_down: u64,
        /// Time the channel was open.
        duration_ms: u64,
        /// `eof`, `error: ...`, `session closed`, ...
        close_reason: String,
        /// Same as in the open.
        #[serde(flatten)]
        hop: Option<Hop>,
    },
    /// The peer asked the server to listen for it; records the decision.
    ListenStart {
        /// Authenticated user.
        user: String,
        /// `tcpip-forward`, `rendezvous-publish`, ...
        kind: String,
        /// Bind address as requested.
        address: String,
        /// Port actually bound (the allocated one when 0 was requested), or
        /// the requested port when denied. `u32` because that is what SSH sends.
        port: u32,
        /// `allow` or `deny`.
        decision: String,
        /// The rule that decided.
        rule: Option<String>,
        /// Why it was denied or failed.
        reason: Option<String>,
    },
    /// A listener started by [`AuditEvent::ListenStart`] went away.
    ListenStop {
        /// Authenticated user.
        user: String,
        /// Same as in the start.
        kind: String,
        /// Same as in the start.
        address: String,
        /// Same as in the start.
        port: u32,
        /// `cancelled`, `session closed`, ...
        reason: String,
    },
    /// A request on a session channel that warrend does not serve (X11, agent or
    /// environment forwarding); a review sees what a client tried.
    SessionRequest {
        /// Authenticated user.
        user: String,
        /// `x11-req`, `auth-agent-req@openssh.com`, `env`, ...
        kind: String,
        /// What was asked, minus anything secret (never an X11 cookie or a value).
        detail: String,
        /// Always `deny` today.
        decision: String,
        /// Why.
        reason: String,
    },
    /// A connection or attempt was refused by a rate or resource limit.
    Throttled {
        /// Peer `ip:port`.
        source: String,
        /// Which limit.
        reason: String,
    },
    /// The server is up and accepting connections.
    ServerStart {
        /// Bound addresses.
        listen: Vec<String>,
        /// Host key fingerprints, so clients' known_hosts can be checked against the log.
        host_keys: Vec<String>,
    },
    /// The server is stopping.
    ServerStop {
        /// `signal SIGTERM`, `fatal error: ...`, ...
        reason: String,
    },
    /// The configuration was re-read (SIGHUP); changes to who may reach
    /// what are themselves audit-worthy.
    ConfigReload {
        /// The config file, if there is one.
        path: Option<String>,
        /// Whether the new config took effect; on failure the old one stays.
        ok: bool,
        /// Why it was rejected.
        error: Option<String>,
    },
    /// Events were lost before this record (the queue was full on a
    /// non-waiting path, or the writer had failed), so a reviewer knows the
    /// log has a gap rather than trusting it as complete.
    AuditDropped {
        /// How many since the previous `audit_dropped` record.
        count: u64,
    },
}

/// Where callers hand audit events; cheap to clone, one per connection task.
///
/// The writer stops once every clone is dropped, after writing what is queued.
#[derive(Clone)]
pub struct AuditSink {
    inner: Inner,
    health: Arc<Health>,
    /// Counts what the records say (`server::metrics`): every event passes here.
    metrics: Arc<Metrics>,
}

#[derive(Clone)]
enum Inner {
    Queue {
        tx: mpsc::Sender<AuditRecord>,
        dropped: Arc<AtomicU64>,
    },
    Memory(Arc<watch::Sender<Vec<Value>>>),
}

/// What the sinks and the writer share about the destination.
struct Health {
    /// Why the destination cannot be written right now; `None` while it can. A watch
    /// rather than a flag so that a recorder waiting for room in a full queue learns at
    /// once that no room will come until the destination is fixed.
    failure: watch::Sender<Option<String>>,
    /// `audit_on_failure = "continue"`: the operator prefers unaudited forwarding to
    /// refused forwarding.
    fail_open: AtomicBool,
    /// SIGHUP asked for the path to be opened again before the next write (logrotate).
    reopen: AtomicBool,
    /// Failed write attempts and lost records since start (metrics).
    write_failures: AtomicU64,
    lost: AtomicU64,
    /// This node's id in cluster mode, put in every record.
    node: std::sync::OnceLock<String>,
}

impl Health {
    fn new() -> Arc<Health> {
        Arc::new(Health {
            failure: watch::Sender::new(None),
            fail_open: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            write_failures: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            node: std::sync::OnceLock::new(),
        })
    }

    /// Notes a failed attempt. Says so on stderr when writing stops working or fails in a
    /// new way, not at every retry: the refusals it causes are logged one by one.
    fn failed(&self, dest: &str, e: &io::Error) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        let why = format!("{dest}: {e}");
        let new = self.failure.send_if_modified(|failure| {
            if failure.as_deref() == Some(why.as_str()) {
                return false;
            }
            *failure = Some(why.clone());
            true
        });
        if !new {
            return;
        }
        if self.fail_open.load(Ordering::Relaxed) {
            tracing::error!(
                "cannot write the audit log {why}; forwarding goes on UNAUDITED \
                 (audit_on_failure = \"continue\"); retrying"
            );
        } else {
            tracing::error!(
                "cannot write the audit log {why}; refusing new logins, channels and -R \
                 listeners until it can be written; retrying"
            );
        }
    }

    /// Notes a write that worked after failures.
    fn recovered(&self, dest: &str, since: Instant) {
        if self
            .failure
            .send_if_modified(|failure| failure.take().is_some())
        {
            // A warning like the refusals were, so that their end shows at the same level.
            tracing::warn!(
                "the audit log {dest} can be written again after {:.1?}; records kept \
                 meanwhile are written, logins and channels are accepted again",
                since.elapsed()
            );
        }
    }
}

impl AuditSink {
    /// Opens `dest` and returns the sink plus the writer that must be run
    /// (usually spawned) for events to reach it. A file is opened for
    /// appending and created with mode 0600: the log names users and the
    /// hosts they reach.
    ///
    /// Await [`AuditWriter::run`] at shutdown, after dropping every sink,
    /// to be sure the queued events were written.
    pub fn open(dest: &AuditDestination) -> io::Result<(AuditSink, AuditWriter)> {
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
        // Opened here rather than by the writer so that a path that cannot be opened at
        // all stops warrend at start, naming the file.
        let first = (out.open)().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open audit log {}: {e}", out.name))
        })?;
        out.dest = Some(first);
        Ok(Self::with_out(Out::Blocking(out), QUEUE_CAPACITY))
    }

    /// A sink writing JSON lines to `out` through a queue of `capacity`
    /// events; what tests use to see the exact bytes or to provoke backpressure.
    pub fn with_writer(
        out: impl AsyncWrite + Send + Unpin + 'static,
        capacity: usize,
    ) -> (AuditSink, AuditWriter) {
        Self::with_out(Out::Async(Box::new(out)), capacity)
    }

    fn with_out(out: Out, capacity: usize) -> (AuditSink, AuditWriter) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let health = Health::new();
        let sink = AuditSink {
            inner: Inner::Queue {
                tx,
                dropped: dropped.clone(),
            },
            health: health.clone(),
            metrics: Arc::default(),
        };
        let writer = AuditWriter {
            rx,
            out,
            dropped,
            health,
            retry: RETRY_INTERVAL,
        };
        (sink, writer)
    }

    /// A sink that keeps records in memory, for tests. Needs no runtime and
    /// no writer task: a record is visible as soon as `record` returns.
    pub fn memory() -> (AuditSink, MemoryAudit) {
        let (tx, rx) = watch::channel(Vec::new());
        let sink = AuditSink {
            inner: Inner::Memory(Arc::new(tx)),
            health: Health::new(),
            metrics: Arc::default(),
        };
        (sink, MemoryAudit { rx })
    }

    /// Why new logins, channels and listeners must be refused right now: the audit log
    /// cannot be written, and the operator did not choose to go on without it
    /// (`audit_on_failure`). `None` while it is written, or with "continue".
    ///
    /// Cheap enough to ask at every login and channel: an atomic load and an
    /// uncontended read lock.
    pub fn refusal(&self) -> Option<String> {
        if self.health.fail_open.load(Ordering::Relaxed) {
            return None;
        }
        let failure = self.health.failure.borrow();
        failure
            .as_ref()
            .map(|why| format!("the audit log cannot be written ({why}); refused until it can"))
    }

    /// Applies `[server] audit_on_failure`, at start and on every reload.
    pub fn set_on_failure(&self, mode: AuditOnFailure) {
        self.health
            .fail_open
            .store(mode == AuditOnFailure::Continue, Ordering::Relaxed);
    }

    /// Asks the writer to open the destination's path again before its next write, so
    /// that after logrotate moved the file away records go to a new file at the
    /// configured path instead of following the old one. The daemon records the reload
    /// right after asking, so the switch happens at once.
    pub fn reopen(&self) {
        self.health.reopen.store(true, Ordering::Relaxed);
    }

    /// The counters every record feeds.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Puts this cluster node's id in every record from now on (set once, at start).
    pub fn set_node(&self, node: &str) {
        let _ = self.health.node.set(node.to_string());
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> u64 {
        match &self.inner {
            Inner::Queue { tx, .. } => (tx.max_capacity() - tx.capacity()) as u64,
            Inner::Memory(_) => 0,
        }
    }

    /// Failed write attempts and records lost, since start.
    pub fn failures(&self) -> (u64, u64) {
        (
            self.health.write_failures.load(Ordering::Relaxed),
            self.health.lost.load(Ordering::Relaxed),
        )
    }

    /// Records `event` for connection `conn`, waiting for room in the queue
    /// when the writer is behind.
    ///
    /// The wait depends only on the audit destination, never on an SSH
    /// session, so awaiting this in a connection's request handler cannot
    /// deadlock; it slows connections down only while the destination is
    /// slower than the event rate, which is the point: events are not lost.
    /// While the destination cannot be written at all, nothing frees room, so
    /// an event finding the queue full is lost instead (counted, and reported
    /// by an [`AuditEvent::AuditDropped`] record once writing works again):
    /// refusals and session ends must not hang until an operator fixes the disk.
    pub async fn record(&self, conn: u64, event: AuditEvent) {
        self.metrics.observe(&event);
        let record = AuditRecord::now(conn, event).on(self.health.node.get());
        match &self.inner {
            Inner::Queue { tx, dropped } => {
                let record = match tx.try_send(record) {
                    Ok(()) => return,
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return note_dropped(dropped, &self.health, WRITER_STOPPED);
                    }
                    Err(mpsc::error::TrySendError::Full(record)) => record,
                };
                let mut failure = self.health.failure.subscribe();
                tokio::select! {
                    permit = tx.reserve() => match permit {
                        Ok(permit) => permit.send(record),
                        Err(_) => note_dropped(dropped, &self.health, WRITER_STOPPED),
                    },
                    _ = failure.wait_for(Option::is_some) => {
                        note_dropped(dropped, &self.health, "the audit log cannot be written and the queue is full");
                    }
                }
            }
            Inner::Memory(tx) => push_memory(tx, &record),
        }
    }

    /// Records without waiting, for paths that cannot await (`Drop`). If
    /// the queue is full the event is lost; the loss is counted and the
    /// writer reports it as an [`AuditEvent::AuditDropped`] record.
    pub fn try_record(&self, conn: u64, event: AuditEvent) {
        self.metrics.observe(&event);
        let record = AuditRecord::now(conn, event).on(self.health.node.get());
        match &self.inner {
            Inner::Queue { tx, dropped } => match tx.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    note_dropped(dropped, &self.health, "the audit queue is full");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    note_dropped(dropped, &self.health, WRITER_STOPPED);
                }
            },
            Inner::Memory(tx) => push_memory(tx, &record),
        }
    }
}

const WRITER_STOPPED: &str = "the audit writer has stopped";

/// Opens the audit file for appending, creating it private to warrend.
fn open_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

impl AuditRecord {
    fn now(conn: u64, event: AuditEvent) -> AuditRecord {
        AuditRecord {
            ts: now_rfc3339(),
            conn,
            node: None,
            event,
        }
    }

    fn on(mut self, node: Option<&String>) -> AuditRecord {
        self.node = node.cloned();
        self
    }
}

/// Now, as every timestamp warrend writes: RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The cross-node part of a channel's records (cluster mode): the same correlation id
/// is written by both nodes, so one connection can be followed across their logs.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub correlation: String,
    /// On the serving node: the node where the reaching user is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_node: Option<String>,
    /// On the reaching user's node: the node that serves the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_node: Option<String>,
}

/// Counts a lost event; warns on the first loss and then at powers of two,
/// so a dead destination does not also flood the diagnostic log.
fn note_dropped(dropped: &AtomicU64, health: &Health, why: &str) {
    health.lost.fetch_add(1, Ordering::Relaxed);
    let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
    if total.is_power_of_two() {
        tracing::warn!(dropped = total, "audit event lost: {why}");
    }
}

fn push_memory(tx: &watch::Sender<Vec<Value>>, record: &AuditRecord) {
    // Serializing plain strings and numbers cannot fail; should it ever,
    // the test sees an explicit marker rather than a silently missing record.
    let value = serde_json::to_value(record).unwrap_or_else(
        |e| serde_json::json!({ "event": "serialize_error", "error": e.to_string() }),
    );
    tx.send_modify(|records| records.push(value));
}

/// The task that owns the audit destination; run it with [`AuditWriter::run`].
pub struct AuditWriter {
    rx: mpsc::Receiver<AuditRecord>,
    out: Out,
    dropped: Arc<AtomicU64>,
    health: Arc<Health>,
    /// Pause between attempts while the destination fails ([`RETRY_INTERVAL`]).
    retry: Duration,
}

/// How often a failing destination is tried again (and a file path opened again): soon
/// enough that service resumes within a moment of the disk being freed, rarely enough
/// that a dead destination costs nothing worth measuring.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Where the lines go.
enum Out {
    /// Files and stdout, written by plain `write(2)` calls on a thread of their own.
    /// tokio's file and stdout types hand every write to the blocking pool and wait for
    /// it, which costs several thread wake-ups per line; with two lines per forwarded
    /// connection that was most of warrend's per-connection system calls.
    Blocking(Reopening),
    /// Any async writer (tests use in-memory pipes).
    Async(Box<dyn AsyncWrite + Send + Unpin>),
}

/// A destination written with blocking calls, and the way to open it again.
struct Reopening {
    /// For messages: the path, or `stdout`.
    name: String,
    open: Box<dyn FnMut() -> io::Result<Box<dyn Dest>> + Send>,
    /// `None` after a failure or a reopen request: opened again before the next write,
    /// so that a path fixed or replaced meanwhile is picked up.
    dest: Option<Box<dyn Dest>>,
}

/// Where the blocking writer puts bytes.
trait Dest: Send {
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
struct FileDest(std::fs::File);

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
struct StreamDest(Box<dyn io::Write + Send>);

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
    fn new(
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
/// queue ([`QUEUE_CAPACITY`]) takes far longer than this to fill.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// Most bytes written in one call when several records are waiting: a burst of
/// connections costs one system call per batch, not one per line.
const BATCH_BYTES: usize = 64 * 1024;

impl AuditWriter {
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

/// The records of an [`AuditSink::memory`] sink, as the JSON a file would hold.
#[derive(Clone)]
pub struct MemoryAudit {
    rx: watch::Receiver<Vec<Value>>,
}

impl MemoryAudit {
    /// Everything recorded so far, oldest first.
    pub fn records(&self) -> Vec<Value> {
        self.rx.borrow().clone()
    }

    /// The first record matching `pred`, waiting up to `timeout` for it to
    /// be recorded; `None` on timeout. Events recorded from spawned tasks
    /// (a channel closing) arrive later than the test's own actions, and
    /// this waits for exactly that instead of sleeping.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let mut rx = self.rx.clone();
        let found = tokio::time::timeout(timeout, rx.wait_for(|records| records.iter().any(&pred)))
            .await
            .ok()?
            .ok()?;
        found.iter().find(|r| pred(r)).cloned()
    }

    /// The first record whose `event` is `name`, waiting up to `timeout`.
    pub async fn wait_event(&self, name: &str, timeout: Duration) -> Option<Value> {
        self.wait_for(timeout, |r| r["event"] == name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WAIT: Duration = Duration::from_secs(5);

    fn shape(event: AuditEvent) -> Value {
        serde_json::to_value(AuditRecord::now(7, event)).unwrap()
    }

    fn channel_open() -> AuditEvent {
        AuditEvent::ChannelOpen {
            channel: 3,
            kind: "direct-tcpip".into(),
            user: "alice".into(),
            target: "db.internal:5432".into(),
            resolved: vec!["10.0.0.5:5432".into()],
            decision: "allow".into(),
            rule: Some("connect = \"db.internal:5432\"".into()),
            reason: None,
            hop: None,
        }
    }

    #[test]
    fn record_envelope_has_ts_conn_and_flattened_event() {
        let v = shape(channel_open());
        assert_eq!(v["conn"], 7);
        assert_eq!(v["event"], "channel_open");
        let ts = v["ts"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
        assert!(
            ts.ends_with('Z') && ts.len() == "2024-01-01T00:00:00.000Z".len(),
            "{ts}"
        );
        assert_eq!(v["channel"], 3);
        assert_eq!(v["kind"], "direct-tcpip");
        assert_eq!(v["resolved"], json!(["10.0.0.5:5432"]));
        assert_eq!(v["rule"], "connect = \"db.internal:5432\"");
        assert_eq!(v["reason"], Value::Null);
    }

    #[test]
    fn every_event_has_its_tag_and_fields() {
        let cases = [
            (
                AuditEvent::SessionStart {
                    source: "192.0.2.1:5000".into(),
                },
                json!({"event": "session_start", "source": "192.0.2.1:5000"}),
            ),
            (
                AuditEvent::AuthSuccess {
                    user: "alice".into(),
                    method: "publickey".into(),
                    key_fp: "SHA256:abc".into(),
                    key_source: Some("/etc/warrend/alice.keys:3".into()),
                    source: "192.0.2.1:5000".into(),
                },
                json!({"event": "auth_success", "user": "alice", "method": "publickey",
                       "key_fp": "SHA256:abc", "key_source": "/etc/warrend/alice.keys:3",
                       "source": "192.0.2.1:5000"}),
            ),
            (
                AuditEvent::AuthFailure {
                    user: "root".into(),
                    method: "publickey".into(),
                    key_fp: None,
                    source: "192.0.2.1:5000".into(),
                    reason: "unknown user".into(),
                },
                json!({"event": "auth_failure", "user": "root", "method": "publickey",
                       "key_fp": null, "source": "192.0.2.1:5000", "reason": "unknown user"}),
            ),
            (
                AuditEvent::SessionEnd {
                    user: None,
                    source: "192.0.2.1:5000".into(),
                    duration_ms: 12,
                    reason: "client disconnect".into(),
                },
                json!({"event": "session_end", "user": null, "source": "192.0.2.1:5000",
                       "duration_ms": 12, "reason": "client disconnect"}),
            ),
            (
                AuditEvent::ChannelClose {
                    channel: 3,
                    kind: "direct-tcpip".into(),
                    user: "alice".into(),
                    target: "db.internal:5432".into(),
                    bytes_up: 10,
                    bytes_down: 20,
                    duration_ms: 30,
                    close_reason: "eof".into(),
                    hop: None,
                },
                json!({"event": "channel_close", "channel": 3, "kind": "direct-tcpip",
                       "user": "alice", "target": "db.internal:5432", "bytes_up": 10,
                       "bytes_down": 20, "duration_ms": 30, "close_reason": "eof"}),
            ),
            (
                AuditEvent::ListenStart {
                    user: "bob".into(),
                    kind: "tcpip-forward".into(),
                    address: "127.0.0.1".into(),
                    port: 8080,
                    decision: "deny".into(),
                    rule: None,
                    reason: Some("no listen rule matches".into()),
                },
                json!({"event": "listen_start", "user": "bob", "kind": "tcpip-forward",
                       "address": "127.0.0.1", "port": 8080, "decision": "deny",
                       "rule": null, "reason": "no listen rule matches"}),
            ),
            (
                AuditEvent::ListenStop {
                    user: "bob".into(),
                    kind: "tcpip-forward".into(),
                    address: "127.0.0.1".into(),
                    port: 8080,
                    reason: "cancelled".into(),
                },
                json!({"event": "listen_stop", "user": "bob", "kind": "tcpip-forward",
                       "address": "127.0.0.1", "port": 8080, "reason": "cancelled"}),
            ),
            (
                AuditEvent::Throttled {
                    source: "192.0.2.1:5000".into(),
                    reason: "max_startups".into(),
                },
                json!({"event": "throttled", "source": "192.0.2.1:5000", "reason": "max_startups"}),
            ),
            (
                AuditEvent::ServerStart {
                    listen: vec!["0.0.0.0:22".into()],
                    host_keys: vec!["SHA256:xyz".into()],
                },
                json!({"event": "server_start", "listen": ["0.0.0.0:22"], "host_keys": ["SHA256:xyz"]}),
            ),
            (
                AuditEvent::ServerStop {
                    reason: "signal SIGTERM".into(),
                },
                json!({"event": "server_stop", "reason": "signal SIGTERM"}),
            ),
            (
                AuditEvent::ConfigReload {
                    path: Some("/etc/warrend/warrend.toml".into()),
                    ok: false,
                    error: Some("bad port".into()),
                },
                json!({"event": "config_reload", "path": "/etc/warrend/warrend.toml",
                       "ok": false, "error": "bad port"}),
            ),
            (
                AuditEvent::AuditDropped { count: 2 },
                json!({"event": "audit_dropped", "count": 2}),
            ),
        ];
        for (event, expected) in cases {
            let mut v = shape(event);
            let obj = v.as_object_mut().unwrap();
            assert!(obj.remove("ts").is_some());
            assert_eq!(obj.remove("conn"), Some(json!(7)));
            assert_eq!(v, expected);
        }
    }

    #[test]
    fn conn_ids_are_unique_and_never_the_server_id() {
        let a = next_conn_id();
        let b = next_conn_id();
        assert_ne!(a, b);
        assert_ne!(a, SERVER_CONN);
        assert_ne!(b, SERVER_CONN);
    }

    fn lines(text: &str) -> Vec<Value> {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "incomplete last line"
        );
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn file_sink_appends_complete_lines_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let dest = AuditDestination::File(path.clone());

        for round in 0..2u64 {
            let (sink, writer) = AuditSink::open(&dest).unwrap();
            let task = tokio::spawn(writer.run());
            sink.record(round, channel_open()).await;
            sink.try_record(
                round,
                AuditEvent::ServerStop {
                    reason: "test".into(),
                },
            );
            drop(sink);
            task.await.unwrap().unwrap();
        }

        let records = lines(&std::fs::read_to_string(&path).unwrap());
        let summary: Vec<_> = records
            .iter()
            .map(|r| (r["conn"].clone(), r["event"].clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (json!(0), json!("channel_open")),
                (json!(0), json!("server_stop")),
                (json!(1), json!("channel_open")),
                (json!(1), json!("server_stop")),
            ]
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// A burst from many tasks is written in batches: every line whole, each once, and
    /// each task's records in the order it made them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_to_a_file_is_batched_without_losing_or_tearing_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (sink, writer) = AuditSink::open(&AuditDestination::File(path.clone())).unwrap();
        let task = tokio::spawn(writer.run());
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..2_000u64 {
                    sink.record(t * 1_000_000 + i, channel_open()).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(sink);
        task.await.unwrap().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let records = lines(&text);
        assert_eq!(records.len(), 16_000);
        let mut next = [0u64; 8];
        for r in &records {
            let conn = r["conn"].as_u64().unwrap();
            let (t, i) = ((conn / 1_000_000) as usize, conn % 1_000_000);
            assert_eq!(i, next[t], "task {t} out of order");
            next[t] += 1;
        }
    }

    #[test]
    fn open_names_the_file_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("audit.jsonl");
        let err = AuditSink::open(&AuditDestination::File(path.clone()))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn memory_sink_waits_for_a_record_from_another_task() {
        let (sink, audit) = AuditSink::memory();
        assert!(audit.records().is_empty());
        let task = tokio::spawn(async move {
            tokio::task::yield_now().await;
            sink.record(
                1,
                AuditEvent::SessionStart {
                    source: "192.0.2.1:1".into(),
                },
            )
            .await;
            sink.record(1, channel_open()).await;
        });
        let got = audit
            .wait_for(WAIT, |r| {
                r["event"] == "channel_open" && r["user"] == "alice"
            })
            .await
            .expect("channel_open recorded");
        assert_eq!(got["target"], "db.internal:5432");
        task.await.unwrap();
        assert_eq!(audit.records().len(), 2);
        assert!(audit.wait_event("session_start", WAIT).await.is_some());
    }

    #[tokio::test]
    async fn memory_wait_gives_up_after_the_timeout() {
        let (sink, audit) = AuditSink::memory();
        sink.try_record(1, AuditEvent::ServerStop { reason: "x".into() });
        assert!(audit.wait_event("server_stop", WAIT).await.is_some());
        assert!(
            audit
                .wait_event("server_start", Duration::from_millis(20))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn backpressure_with_a_tiny_queue_loses_nothing() {
        // A one-slot queue and a 64-byte pipe keep both the queue and the
        // writer full, so recorders really do wait.
        let (out, mut reader) = tokio::io::duplex(64);
        let (sink, writer) = AuditSink::with_writer(out, 1);
        let writer = tokio::spawn(writer.run());
        let reader = tokio::spawn(async move {
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut text)
                .await
                .map(|_| text)
        });

        let mut tasks = Vec::new();
        for conn in 1..=4u64 {
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100u64 {
                    sink.record(conn, AuditEvent::AuditDropped { count: i })
                        .await;
                }
            }));
        }
        drop(sink);
        for task in tasks {
            task.await.unwrap();
        }
        writer.await.unwrap().unwrap();
        let records = lines(&reader.await.unwrap().unwrap());
        assert_eq!(records.len(), 400);
        for conn in 1..=4u64 {
            let counts: Vec<_> = records
                .iter()
                .filter(|r| r["conn"] == conn)
                .map(|r| r["count"].as_u64().unwrap())
                .collect();
            assert_eq!(counts, (0..100).collect::<Vec<_>>(), "conn {conn} in order");
        }
    }

    #[tokio::test]
    async fn events_lost_on_a_full_queue_are_reported_in_the_log() {
        let (out, mut reader) = tokio::io::duplex(1 << 16);
        let (sink, writer) = AuditSink::with_writer(out, 1);
        sink.try_record(1, AuditEvent::SessionStart { source: "a".into() });
        sink.try_record(1, AuditEvent::SessionStart { source: "b".into() });
        sink.try_record(1, AuditEvent::SessionStart { source: "c".into() });
        drop(sink);
        writer.run().await.unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut text)
            .await
            .unwrap();
        let events: Vec<_> = lines(&text)
            .into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("ts");
                r
            })
            .collect();
        assert_eq!(
            events,
            [
                json!({"conn": 0, "event": "audit_dropped", "count": 2}),
                json!({"conn": 1, "event": "session_start", "source": "a"}),
            ]
        );
    }

    /// A real file that fails while `broken` is set, after writing half of what it was
    /// given (a disk filling up mid-batch), and counts the attempts.
    struct Flaky {
        file: FileDest,
        broken: Arc<AtomicBool>,
        attempts: Arc<watch::Sender<usize>>,
        /// Holds each write until the test says go, when set.
        gate: Option<std::sync::mpsc::Receiver<()>>,
    }

    impl Dest for Flaky {
        fn write_counted(&mut self, buf: &[u8], done: &mut usize) -> io::Result<()> {
            self.attempts.send_modify(|n| *n += 1);
            if let Some(gate) = &self.gate {
                let _ = gate.recv();
            }
            if self.broken.load(Ordering::SeqCst) {
                self.file.write_counted(&buf[..buf.len() / 2], done)?;
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.file.write_counted(buf, done)
        }

        fn take_back(&mut self, n: usize) -> io::Result<bool> {
            self.file.take_back(n)
        }
    }

    struct FlakyFile {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        broken: Arc<AtomicBool>,
        attempts: Arc<watch::Sender<usize>>,
        opens: Arc<AtomicU64>,
    }

    /// A sink over a [`Flaky`] file retrying every 5 ms, `gated` writes waiting for the
    /// returned sender; the path is opened anew as after every failure.
    fn flaky_sink(
        capacity: usize,
        gated: bool,
    ) -> (
        AuditSink,
        AuditWriter,
        FlakyFile,
        std::sync::mpsc::Sender<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let ff = FlakyFile {
            path: path.clone(),
            _dir: dir,
            broken: Arc::new(AtomicBool::new(false)),
            attempts: Arc::new(watch::Sender::new(0)),
            opens: Arc::new(AtomicU64::new(0)),
        };
        let (go, gate) = std::sync::mpsc::channel();
        let mut gate = gated.then_some(gate);
        let (broken, attempts, opens) = (ff.broken.clone(), ff.attempts.clone(), ff.opens.clone());
        let out = Reopening::new(path.display().to_string(), move || {
            opens.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Flaky {
                file: FileDest(open_file(&path)?),
                broken: broken.clone(),
                attempts: attempts.clone(),
                gate: gate.take(),
            }) as Box<dyn Dest>)
        });
        let (sink, mut writer) = AuditSink::with_out(Out::Blocking(out), capacity);
        writer.retry = Duration::from_millis(5);
        (sink, writer, ff, go)
    }

    async fn wait_health(sink: &AuditSink, failing: bool) {
        let mut rx = sink.health.failure.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|f| f.is_some() == failing))
            .await
            .expect("health change in time")
            .unwrap();
    }

    #[tokio::test]
    async fn a_failing_file_is_retried_refused_meanwhile_and_keeps_only_whole_lines() {
        let (sink, writer, ff, _go) = flaky_sink(64, false);
        let task = tokio::spawn(writer.run());
        assert_eq!(sink.refusal(), None);
        sink.record(1, channel_open()).await;
        // Written while healthy, so the retries below must not duplicate it.
        let mut attempts = ff.attempts.subscribe();
        tokio::time::timeout(WAIT, attempts.wait_for(|n| *n >= 1))
            .await
            .unwrap()
            .unwrap();

        ff.broken.store(true, Ordering::SeqCst);
        sink.record(2, channel_open()).await;
        wait_health(&sink, true).await;
        let reason = sink.refusal().expect("refused while failing");
        assert!(reason.contains("No space left on device"), "{reason}");
        assert!(reason.contains(&ff.path.display().to_string()), "{reason}");
        sink.set_on_failure(AuditOnFailure::Continue);
        assert_eq!(sink.refusal(), None, "continue never refuses");
        sink.set_on_failure(AuditOnFailure::Refuse);
        assert!(sink.refusal().is_some());

        // Queued behind the failing batch, not lost.
        for conn in 3..=5 {
            sink.record(conn, channel_open()).await;
        }
        // Several failed attempts, each leaving half a batch that must be cut off again.
        tokio::time::timeout(WAIT, attempts.wait_for(|n| *n >= 5))
            .await
            .unwrap()
            .unwrap();
        ff.broken.store(false, Ordering::SeqCst);
        wait_health(&sink, false).await;
        assert_eq!(sink.refusal(), None);
        drop(sink);
        task.await.unwrap().unwrap();

        let records = lines(&std::fs::read_to_string(&ff.path).unwrap());
        let conns: Vec<_> = records.iter().map(|r| r["conn"].clone()).collect();
        assert_eq!(conns, [json!(1), json!(2), json!(3), json!(4), json!(5)]);
        assert!(
            ff.opens.load(Ordering::SeqCst) >= 4,
            "the path is opened again for every retry"
        );
    }

    /// A recorder already waiting for room when the destination fails is let go (the
    /// event counted as lost) instead of waiting until the disk is fixed.
    #[tokio::test(flavor = "current_thread")]
    async fn recorders_never_wait_on_a_failing_destination() {
        let (sink, writer, ff, go) = flaky_sink(1, true);
        ff.broken.store(true, Ordering::SeqCst);
        let task = tokio::spawn(writer.run());
        // The writer takes 1 and holds it in the gated write; 2 fills the queue.
        sink.record(1, channel_open()).await;
        let mut attempts = ff.attempts.subscribe();
        tokio::time::timeout(WAIT, attempts.wait_for(|n| *n >= 1))
            .await
            .unwrap()
            .unwrap();
        sink.record(2, channel_open()).await;
        let waiting = tokio::spawn({
            let sink = sink.clone();
            async move { sink.record(3, channel_open()).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "a healthy full queue makes recorders wait"
        );
        // Let every write through; they fail until `broken` is cleared.
        let gate = std::thread::spawn(move || while go.send(()).is_ok() {});
        tokio::time::timeout(WAIT, waiting)
            .await
            .expect("the waiting recorder gave up")
            .unwrap();
        assert!(sink.refusal().is_some());
        tokio::time::timeout(WAIT, sink.record(4, channel_open()))
            .await
            .expect("a full queue loses the event at once while failing");

        ff.broken.store(false, Ordering::SeqCst);
        wait_health(&sink, false).await;
        drop(sink);
        task.await.unwrap().unwrap();
        gate.join().unwrap();
        let events: Vec<_> = lines(&std::fs::read_to_string(&ff.path).unwrap())
            .into_iter()
            .map(|r| (r["conn"].clone(), r["event"].clone(), r["count"].clone()))
            .collect();
        assert_eq!(
            events,
            [
                (json!(1), json!("channel_open"), Value::Null),
                (json!(0), json!("audit_dropped"), json!(2)),
                (json!(2), json!("channel_open"), Value::Null),
            ]
        );
    }

    /// Stdout and pipes cannot take bytes back: the next attempt writes the rest of the
    /// line where the failed one stopped, so the stream still holds whole lines.
    #[tokio::test]
    async fn a_stream_resumes_a_torn_line_instead_of_repeating_it() {
        #[derive(Clone)]
        struct Torn {
            out: Arc<std::sync::Mutex<Vec<u8>>>,
            fail_after: Arc<AtomicU64>,
        }
        impl io::Write for Torn {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                // Refuses once after accepting 10 bytes, like a pipe whose reader stalls.
                let n = if self.fail_after.load(Ordering::SeqCst) == 0 {
                    self.fail_after.store(u64::MAX, Ordering::SeqCst);
                    return Err(io::Error::from_raw_os_error(libc::EAGAIN));
                } else {
                    buf.len()
                        .min(self.fail_after.load(Ordering::SeqCst) as usize)
                };
                self.fail_after.fetch_sub(n as u64, Ordering::SeqCst);
                self.out.lock().unwrap().extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let torn = Torn {
            out: Default::default(),
            fail_after: Arc::new(AtomicU64::new(10)),
        };
        let opened = torn.clone();
        let out = Reopening::new("stdout", move || {
            Ok(Box::new(StreamDest(Box::new(opened.clone()))) as Box<dyn Dest>)
        });
        let (sink, mut writer) = AuditSink::with_out(Out::Blocking(out), 8);
        writer.retry = Duration::from_millis(5);
        let task = tokio::spawn(writer.run());
        sink.record(1, channel_open()).await;
        sink.record(2, channel_open()).await;
        drop(sink);
        task.await.unwrap().unwrap();
        let text = String::from_utf8(torn.out.lock().unwrap().clone()).unwrap();
        let conns: Vec<_> = lines(&text).iter().map(|r| r["conn"].clone()).collect();
        assert_eq!(conns, [json!(1), json!(2)]);
    }

    /// SIGHUP after logrotate moved the file: the next records land in a new file at the
    /// configured path, private like the first.
    #[tokio::test]
    async fn reopen_starts_a_new_file_at_the_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let (sink, writer) = AuditSink::open(&AuditDestination::File(path.clone())).unwrap();
        let task = tokio::spawn(writer.run());
        sink.record(1, channel_open()).await;
        let written = || std::fs::read_to_string(&path).is_ok_and(|t| t.ends_with('\n'));
        let deadline = Instant::now() + WAIT;
        while !written() {
            assert!(Instant::now() < deadline, "first record never written");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        std::fs::rename(&path, &rotated).unwrap();
        sink.reopen();
        sink.record(2, channel_open()).await;
        drop(sink);
        task.await.unwrap().unwrap();

        let conns = |p: &Path| -> Vec<Value> {
            lines(&std::fs::read_to_string(p).unwrap())
                .iter()
                .map(|r| r["conn"].clone())
                .collect()
        };
        assert_eq!(conns(&rotated), [json!(1)]);
        assert_eq!(conns(&path), [json!(2)]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn memory_sinks_never_refuse() {
        let (sink, _audit) = AuditSink::memory();
        assert_eq!(sink.refusal(), None);
    }
}
