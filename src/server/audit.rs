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
//! Records never contain secrets: keys appear only as fingerprints, and
//! warrend accepts no passwords.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::config::AuditDestination;

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
}

#[derive(Clone)]
enum Inner {
    Queue {
        tx: mpsc::Sender<AuditRecord>,
        dropped: Arc<AtomicU64>,
    },
    Memory(Arc<watch::Sender<Vec<Value>>>),
}

impl AuditSink {
    /// Opens `dest` and returns the sink plus the writer that must be run
    /// (usually spawned) for events to reach it. A file is opened for
    /// appending and created with mode 0600: the log names users and the
    /// hosts they reach.
    ///
    /// Await [`AuditWriter::run`] at shutdown, after dropping every sink,
    /// to be sure the queued events were written.
    pub fn open(dest: &AuditDestination) -> std::io::Result<(AuditSink, AuditWriter)> {
        match dest {
            AuditDestination::Stdout => Ok(Self::with_out(
                Out::Blocking(Box::new(std::io::stdout())),
                QUEUE_CAPACITY,
            )),
            AuditDestination::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot open audit log {}: {e}", path.display()),
                        )
                    })?;
                Ok(Self::with_out(
                    Out::Blocking(Box::new(file)),
                    QUEUE_CAPACITY,
                ))
            }
        }
    }

    /// A sink writing JSON lines to `out` through a queue of `capacity`
    /// events; what [`AuditSink::open`] uses, and what tests use to see
    /// the exact bytes or to provoke backpressure.
    pub fn with_writer(
        out: impl AsyncWrite + Send + Unpin + 'static,
        capacity: usize,
    ) -> (AuditSink, AuditWriter) {
        Self::with_out(Out::Async(Box::new(out)), capacity)
    }

    fn with_out(out: Out, capacity: usize) -> (AuditSink, AuditWriter) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = AuditSink {
            inner: Inner::Queue {
                tx,
                dropped: dropped.clone(),
            },
        };
        let writer = AuditWriter { rx, out, dropped };
        (sink, writer)
    }

    /// A sink that keeps records in memory, for tests. Needs no runtime and
    /// no writer task: a record is visible as soon as `record` returns.
    pub fn memory() -> (AuditSink, MemoryAudit) {
        let (tx, rx) = watch::channel(Vec::new());
        let sink = AuditSink {
            inner: Inner::Memory(Arc::new(tx)),
        };
        (sink, MemoryAudit { rx })
    }

    /// Records `event` for connection `conn`, waiting for room in the queue
    /// when the writer is behind.
    ///
    /// The wait depends only on the audit destination, never on an SSH
    /// session, so awaiting this inside russh handler callbacks cannot
    /// deadlock; it slows connections down only while the destination is
    /// slower than the event rate, which is the point: events are not lost.
    pub async fn record(&self, conn: u64, event: AuditEvent) {
        let record = AuditRecord::now(conn, event);
        match &self.inner {
            Inner::Queue { tx, dropped } => {
                if tx.send(record).await.is_err() {
                    note_dropped(dropped, "the audit writer has stopped");
                }
            }
            Inner::Memory(tx) => push_memory(tx, &record),
        }
    }

    /// Records without waiting, for paths that cannot await (`Drop`). If
    /// the queue is full the event is lost; the loss is counted and the
    /// writer reports it as an [`AuditEvent::AuditDropped`] record.
    pub fn try_record(&self, conn: u64, event: AuditEvent) {
        let record = AuditRecord::now(conn, event);
        match &self.inner {
            Inner::Queue { tx, dropped } => match tx.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    note_dropped(dropped, "the audit queue is full");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    note_dropped(dropped, "the audit writer has stopped");
                }
            },
            Inner::Memory(tx) => push_memory(tx, &record),
        }
    }
}

impl AuditRecord {
    fn now(conn: u64, event: AuditEvent) -> AuditRecord {
        AuditRecord {
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            conn,
            event,
        }
    }
}

/// Counts a lost event; warns on the first loss and then at powers of two,
/// so a dead destination does not also flood the diagnostic log.
fn note_dropped(dropped: &AtomicU64, why: &str) {
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
}

/// Where the lines go.
enum Out {
    /// Files and stdout, written by plain `write(2)` calls on a thread of their own.
    /// tokio's file and stdout types hand every write to the blocking pool and wait for
    /// it, which costs several thread wake-ups per line; with two lines per forwarded
    /// connection that was most of warrend's per-connection system calls.
    Blocking(Box<dyn std::io::Write + Send>),
    /// Any async writer (tests use in-memory pipes).
    Async(Box<dyn AsyncWrite + Send + Unpin>),
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
    /// An `Err` means the destination failed and later events are being
    /// lost; a bastion that must not run unaudited should treat it as fatal.
    pub async fn run(self) -> std::io::Result<()> {
        let AuditWriter {
            mut rx,
            out,
            dropped,
        } = self;
        match out {
            Out::Blocking(mut out) => {
                tokio::task::spawn_blocking(move || {
                    let mut batch = Vec::new();
                    while let Some(record) = rx.blocking_recv() {
                        let last = fill_batch(&mut batch, record, &mut rx, &dropped);
                        // Whole lines in one write each, so an O_APPEND file never
                        // interleaves half lines.
                        out.write_all(&batch)?;
                        out.flush()?;
                        if last {
                            return Ok(());
                        }
                        if rx.is_empty() {
                            std::thread::sleep(LINGER);
                        }
                    }
                    report_dropped(&mut batch, &dropped);
                    out.write_all(&batch)?;
                    out.flush()
                })
                .await
                .map_err(std::io::Error::other)?
            }
            Out::Async(mut out) => {
                let mut batch = Vec::new();
                while let Some(record) = rx.recv().await {
                    let last = fill_batch(&mut batch, record, &mut rx, &dropped);
                    out.write_all(&batch).await?;
                    out.flush().await?;
                    if last {
                        return Ok(());
                    }
                }
                report_dropped(&mut batch, &dropped);
                out.write_all(&batch).await?;
                out.flush().await
            }
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
}
