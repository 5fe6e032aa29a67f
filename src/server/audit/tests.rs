//! The audit log's unit tests: record shapes, back-pressure, failing and recovering destinations.

use super::event::*;
use super::sink::*;
use super::writer::*;
use crate::server::config::{AuditDestination, AuditOnFailure};
use serde_json::Value;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

/// Waits until the flaky file has seen `n` write attempts.
async fn at_least(attempts: &mut watch::Receiver<usize>, n: usize) {
    tokio::time::timeout(WAIT, attempts.wait_for(|seen| *seen >= n))
        .await
        .expect("write attempts in time")
        .unwrap();
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
    at_least(&mut attempts, 1).await;

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
    at_least(&mut attempts, 5).await;
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
    at_least(&mut attempts, 1).await;
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
