//! [`AuditSink`]: where sessions hand their events, and the in-memory sink of tests.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, watch};

use super::event::{AuditEvent, AuditRecord};
use super::health::Health;
use super::writer::{AuditWriter, Out};
use crate::server::config::{AuditDestination, AuditOnFailure};
use crate::server::metrics::Metrics;

/// How many events may wait for the writer before [`AuditSink::record`]
/// makes its caller wait: deep enough to absorb a burst of connections,
/// small enough that a stalled destination is felt instead of eating memory.
pub const QUEUE_CAPACITY: usize = 4096;

/// Where callers hand audit events; cheap to clone, one per connection task.
///
/// The writer stops once every clone is dropped, after writing what is queued.
#[derive(Clone)]
pub struct AuditSink {
    inner: Inner,
    pub(super) health: Arc<Health>,
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

impl AuditSink {
    /// Opens `dest` and returns the sink plus the writer that must be run
    /// (usually spawned) for events to reach it. A file is opened for
    /// appending and created with mode 0600: the log names users and the
    /// hosts they reach.
    ///
    /// Await [`AuditWriter::run`] at shutdown, after dropping every sink,
    /// to be sure the queued events were written.
    pub fn open(dest: &AuditDestination) -> io::Result<(AuditSink, AuditWriter)> {
        Ok(Self::with_out(Out::opened(dest)?, QUEUE_CAPACITY))
    }

    /// A sink writing JSON lines to `out` through a queue of `capacity`
    /// events; what tests use to see the exact bytes or to provoke backpressure.
    pub fn with_writer(
        out: impl AsyncWrite + Send + Unpin + 'static,
        capacity: usize,
    ) -> (AuditSink, AuditWriter) {
        Self::with_out(Out::Async(Box::new(out)), capacity)
    }

    pub(super) fn with_out(out: Out, capacity: usize) -> (AuditSink, AuditWriter) {
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
        (sink, AuditWriter::new(rx, out, dropped, health))
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
