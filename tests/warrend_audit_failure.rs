//! warrend when its audit log cannot be written, against the real OpenSSH client: a
//! real ENOSPC (the audit path is a symlink to /dev/full, re-pointed by the test the way
//! an operator frees space), refusal of new logins, channels and -R listeners by
//! default, going on unaudited with `audit_on_failure = "continue"`, recovery without a
//! restart with only whole JSON lines in the file, and SIGHUP reopening a rotated file.
//!
//! Same rules as tests/warrend.rs: each test runs its own warrend in its own temporary
//! directory, on loopback and ephemeral ports, and waits on real signals (warrend's
//! stderr, ssh's own lines and exit codes, records appearing in the audit file) with
//! deadlines.

mod common;

use common::warrend::*;
use common::*;
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A temporary directory holding `audit.jsonl`, a symlink the test points at a real file
/// or at /dev/full.
struct AuditDir {
    dir: TempDir,
    link: PathBuf,
}

impl AuditDir {
    fn new(target: &Path) -> AuditDir {
        let dir = tempfile::Builder::new()
            .prefix("warrend-audit-")
            .tempdir()
            .expect("create audit tempdir");
        let link = dir.path().join("audit.jsonl");
        let audit = AuditDir { dir, link };
        audit.point_at(target);
        audit
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Re-points the symlink in one step (a new link renamed over the old one), so
    /// warrend never sees the path missing.
    fn point_at(&self, target: &Path) {
        let tmp = self.file("audit.jsonl.new");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).expect("create symlink");
        fs::rename(&tmp, &self.link).expect("replace symlink");
    }
}

/// The records of an audit file, asserting that it holds only whole JSON lines.
fn records(path: &Path) -> Vec<Value> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a partial line:\n{text}",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l:?}", path.display()))
        })
        .collect()
}

/// Waits until the audit file at `path` satisfies `pred` (warrend writes from a thread of
/// its own, shortly after the event); returns its records.
fn wait_file(path: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pause = Duration::from_millis(2);
    loop {
        let recs = records(path);
        if pred(&recs) {
            return recs;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {what} within {READY_TIMEOUT:?}; records: {recs:#?}",
            path.display()
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn any(recs: &[Value], pred: impl Fn(&Value) -> bool) -> bool {
    recs.iter().any(pred)
}

/// Waits for a warrend stderr line containing `needle`, printed after line `from`.
fn wait_stderr(w: &Warrend, from: usize, needle: &str) -> String {
    w.proc()
        .wait_for_stderr_from(from, |l| l.contains(needle), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("warrend never said {needle:?}:\n{e}"))
}

/// Sends `data` through `addr`, half-closes, and returns everything that came back.
fn round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    exchange(conn, data, IO_TIMEOUT).unwrap()
}

/// A connection through a forward whose channel warrend refused: closed, no data.
fn refused_through(addr: SocketAddr) {
    let mut conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = conn.write_all(b"hello?");
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got); // EOF or reset, never a hang
    assert!(got.is_empty(), "a refused channel returned data: {got:?}");
}

/// `ssh -O forward -R 127.0.0.1:port:target` through the control master at `ctl`;
/// whether the master got the listener.
fn mux_remote_forward(c: &SshClient, ctl: &Path, port: u16, target: &str) -> bool {
    let mut cmd = c.ssh();
    cmd.arg("-S")
        .arg(ctl)
        .args(["-O", "forward", "-R"])
        .arg(format!("127.0.0.1:{port}:{target}"))
        .arg(SshClient::dest("alice"));
    let proc = Proc::spawn(cmd);
    proc.expect_exit(READY_TIMEOUT).success()
}

const REFUSED: &str = "the audit log cannot be written";

#[test]
fn a_full_disk_refuses_logins_channels_and_listeners_until_the_log_works_again() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let audit = AuditDir::new(Path::new("first.jsonl"));
    let (first, second) = (audit.file("first.jsonl"), audit.file("second.jsonl"));
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start_with_server(
        &user(
            "alice",
            &[&alice],
            &format!("connect = [\"{target}\"]\nlisten = [\"127.0.0.1:*\"]"),
        ),
        // One failed login would block the source: a login refused because the log
        // cannot be written must not count as one.
        &[("max_failed_auth_per_source", "1")],
        &[("audit_log", &toml_str(&audit.link))],
    );
    trust_all(&w, &[&alice]);

    // A session opened while the log works, kept open: its new channels and -R requests
    // are what a full disk must stop. It is a control master, for -O forward later.
    let ctl = audit.file("ctl");
    let local = free_port();
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args(["-v", "-N", "-o", "ControlMaster=yes", "-o"])
        .arg(format!("ControlPath={}", ctl.display()))
        .arg("-L")
        .arg(format!("127.0.0.1:{local}:{target}"))
        .arg(SshClient::dest("alice"));
    let master = Proc::spawn(cmd);
    master
        .wait_for_stderr(|l| l == local_forward_ready(local), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("ssh -L not ready:\n{e}"));
    let forward = loopback(local);
    assert_eq!(round_trip(forward, b"before"), b"before");
    // An -R listener granted while the log works: during the outage it must not carry
    // unaudited connections either.
    let early = free_port();
    assert!(
        mux_remote_forward(&alice, &ctl, early, &target),
        "-R refused"
    );
    assert_eq!(round_trip(loopback(early), b"early"), b"early");
    // Everything about those channels is written before the disk fills up.
    wait_file(&first, "both channel_close records", |r| {
        r.iter().filter(|v| is(v, "channel_close", &[])).count() >= 2
    });

    // The disk is full: every write to the path now fails with ENOSPC. SIGHUP makes
    // warrend reopen the path, and the reload's own record is the first that fails.
    let from = w.proc().stderr_line_count();
    audit.point_at(Path::new("/dev/full"));
    w.reload();
    let error = wait_stderr(&w, from, "cannot write the audit log");
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains(&audit.link.display().to_string()), "{error}");

    refused_through(forward);
    master
        .wait_for_stderr(
            |l| l.contains("open failed: resource shortage"),
            READY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("ssh did not see the channel refused:\n{e}"));
    wait_stderr(&w, from, &format!("channel refused: {REFUSED}"));

    refused_through(loopback(early));
    let line = wait_stderr(&w, from, &format!("-R 127.0.0.1:{early}: connection from"));
    assert!(line.contains(&format!("refused: {REFUSED}")), "{line}");

    assert!(!can_log_in(&w, &alice, "alice"), "logged in unaudited");
    wait_stderr(&w, from, &format!("login refused: {REFUSED}"));

    let remote = free_port();
    assert!(
        !mux_remote_forward(&alice, &ctl, remote, &target),
        "-R granted unaudited"
    );
    wait_stderr(&w, from, &format!("-R refused: {REFUSED}"));

    // Space is freed: the path leads to a writable file again. No restart, no signal.
    let from = w.proc().stderr_line_count();
    audit.point_at(&second);
    wait_stderr(&w, from, "can be written again");
    assert!(
        can_log_in(&w, &alice, "alice"),
        "login still refused (was the refusal counted as a failed login?)"
    );
    assert_eq!(round_trip(forward, b"after"), b"after");
    assert_eq!(round_trip(loopback(early), b"early again"), b"early again");
    assert!(
        mux_remote_forward(&alice, &ctl, remote, &target),
        "-R still refused"
    );
    assert_eq!(round_trip(loopback(remote), b"reverse"), b"reverse");

    // What happened while the disk was full is in the new file, whole lines only: the
    // batch that failed (the reload), the refusals with their reason, then the rest.
    let recs = wait_file(&second, "records of the login, channel and -R after", |r| {
        any(r, |v| is(v, "auth_success", &[("user", "alice")]))
            && any(r, |v| is(v, "channel_open", &[("decision", "allow")]))
            && any(r, |v| is(v, "listen_start", &[("decision", "allow")]))
    });
    assert!(
        is(&recs[0], "config_reload", &[]) && recs[0]["ok"] == true,
        "{recs:#?}"
    );
    let refused = |event: &str, field: &str| {
        any(&recs, |v| {
            s(v, "event") == event && s(v, field).starts_with(REFUSED)
        })
    };
    assert!(refused("channel_open", "reason"), "{recs:#?}");
    assert!(refused("auth_failure", "reason"), "{recs:#?}");
    assert!(refused("listen_start", "reason"), "{recs:#?}");
    assert!(
        !any(&recs, |v| is(v, "audit_dropped", &[])),
        "nothing was lost: {recs:#?}"
    );

    let before = records(&first);
    assert!(any(&before, |v| is(v, "server_start", &[])), "{before:#?}");
    assert!(
        !any(&before, |v| is(v, "config_reload", &[])),
        "{before:#?}"
    );
}

#[test]
fn continue_mode_forwards_unaudited_and_writes_the_records_once_it_can() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let audit = AuditDir::new(Path::new("/dev/full"));
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start_with_server(
        &user("alice", &[&alice], &format!("connect = [\"{target}\"]")),
        &[],
        &[
            ("audit_log", &toml_str(&audit.link)),
            ("audit_on_failure", "\"continue\""),
        ],
    );
    trust_all(&w, &[&alice]);
    let error = wait_stderr(&w, 0, "cannot write the audit log");
    assert!(error.contains("UNAUDITED"), "{error}");

    let (_ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&target)]);
    assert_eq!(round_trip(addrs[0], b"unaudited"), b"unaudited");

    let from = w.proc().stderr_line_count();
    let later = audit.file("later.jsonl");
    audit.point_at(&later);
    wait_stderr(&w, from, "can be written again");
    let recs = wait_file(&later, "the records kept meanwhile", |r| {
        any(r, |v| is(v, "auth_success", &[("user", "alice")]))
            && any(r, |v| is(v, "channel_close", &[]))
    });
    assert!(is(&recs[0], "server_start", &[]), "{recs:#?}");
    assert!(
        !w.proc().stderr_text().contains(REFUSED),
        "continue refused something:\n{}",
        w.proc().stderr_text()
    );
}

#[test]
fn sighup_reopens_a_rotated_audit_file() {
    let alice = SshClient::new();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let w = Warrend::start_with_server(
        &user("alice", &[&alice], ""),
        &[],
        &[("audit_log", &toml_str(&path))],
    );
    trust_all(&w, &[&alice]);
    wait_file(&path, "server_start", |r| {
        any(r, |v| is(v, "server_start", &[]))
    });

    // logrotate: move the file away, then SIGHUP. A login between the two is written to
    // the moved file (still open): nothing is lost in the window.
    fs::rename(&path, &rotated).unwrap();
    assert!(can_log_in(&w, &alice, "alice"));
    wait_file(&rotated, "the login before the SIGHUP", |r| {
        any(r, |v| is(v, "auth_success", &[("user", "alice")]))
    });
    w.reload();
    assert!(can_log_in(&w, &alice, "alice"));
    let recs = wait_file(&path, "the reload and the login in a new file", |r| {
        any(r, |v| is(v, "config_reload", &[]))
            && any(r, |v| is(v, "auth_success", &[("user", "alice")]))
    });
    assert!(!any(&recs, |v| is(v, "server_start", &[])), "{recs:#?}");
    let old = records(&rotated);
    assert!(any(&old, |v| is(v, "server_start", &[])), "{old:#?}");
    assert!(!any(&old, |v| is(v, "config_reload", &[])), "{old:#?}");
    let logins = |r: &[Value]| {
        r.iter()
            .filter(|v| is(v, "auth_success", &[("user", "alice")]))
            .count()
    };
    assert_eq!(logins(&old), 1, "{old:#?}");
    assert_eq!(logins(&recs), 1, "{recs:#?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
