//! Before authentication, against a real warrend and the real OpenSSH client: the random
//! early drop of unauthenticated connections (unauthenticated_drop_start/_rate, sshd
//! MaxStartups start:rate:full) and per-source penalties for connections that hold a
//! slot without logging in (penalty_grace_exceeded, penalty_noauth; sshd
//! PerSourcePenalties).
//!
//! Same rules as tests/warrend_limits.rs: each test runs its own warrend on loopback, uses
//! distinct 127.0.0.x source addresses as distinct sources, and waits on audit records,
//! EOFs and process exits with deadlines; the only polls (a penalty running out, a client
//! retrying after a random drop) have deadlines.

mod common;

use common::warrend::*;
use common::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What `conn` received until its peer closed it, and whether it did within `within`.
fn read_until_closed(conn: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return (got, true),
        }
    }
}

fn ip(from: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", from[0], from[1], from[2], from[3])
}

/// Whether `v` is about a connection from `from` (any port).
fn from_source(v: &Value, from: [u8; 4]) -> bool {
    v["source"]
        .as_str()
        .is_some_and(|s| s.starts_with(&format!("{}:", ip(from))))
}

/// Runs `ssh -b <from> alice@127.0.0.1 true`: whether warrend let it in.
fn log_in_from(w: &Warrend, c: &SshClient, from: [u8; 4]) -> bool {
    let mut cmd = c.ssh_warrend(w);
    cmd.arg("-b")
        .arg(ip(from))
        .arg(SshClient::dest("alice"))
        .arg("true");
    logged_in(&Proc::spawn(cmd))
}

/// Connects from `from` and waits until warrend has either started a session for this
/// connection or refused it: true when it started one.
fn admitted(w: &Warrend, from: [u8; 4]) -> (TcpStream, bool) {
    let conn = w.connect_from(from);
    let me = conn.local_addr().unwrap().to_string();
    let v = w.wait_audit(&format!("warrend's verdict on {me}"), |v| {
        (is(v, "session_start", &[]) || is(v, "throttled", &[])) && v["source"] == me.as_str()
    });
    let started = is(&v, "session_start", &[]);
    (conn, started)
}

fn is_early_drop(v: &Value) -> bool {
    is(v, "throttled", &[]) && s(v, "reason").contains("random early drop")
}

fn is_penalised(v: &Value) -> bool {
    is(v, "throttled", &[]) && s(v, "reason").starts_with("penalised")
}

fn is_penalty(v: &Value) -> bool {
    is(v, "throttled", &[]) && s(v, "reason").starts_with("penalty ")
}

/// Waits for the audit of `from`'s penalty for `why`, then checks that a new connection
/// from `from` is dropped unheard, and audited as penalised.
fn assert_penalised(w: &Warrend, from: [u8; 4], why: &str) {
    let p = w.wait_audit(&format!("{}'s penalty", ip(from)), |v| {
        is_penalty(v) && from_source(v, from)
    });
    assert!(
        s(&p, "reason").contains(why) && s(&p, "reason").contains(&format!("{}/32", ip(from))),
        "{p}"
    );
    let mut again = w.connect_from(from);
    let (got, closed) = read_until_closed(&mut again, READY_TIMEOUT);
    assert!(
        closed && got.is_empty(),
        "a penalised source ({}) was heard: {:?}\n{}",
        ip(from),
        String::from_utf8_lossy(&got),
        w.proc().report("")
    );
    let t = w.wait_audit(&format!("{}'s refusal", ip(from)), |v| {
        is_penalised(v) && from_source(v, from)
    });
    assert!(s(&t, "reason").contains(&format!("{}/32", ip(from))), "{t}");
}

#[test]
fn random_early_drop_keeps_room_for_a_real_login_during_a_flood() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[
            ("max_unauthenticated", "16"),
            ("max_unauthenticated_per_source", "4"),
            ("unauthenticated_drop_start", "2"),
            ("unauthenticated_drop_rate", "50"),
            // The flood holds its slots for the whole test: no slot frees up by itself.
            ("login_grace_time", "\"60s\""),
        ],
    );
    trust_all(&w, &[&alice]);

    // 12 silent connections, one per source, each settled before the next: the first
    // two are always admitted, the others dropped with a rising chance (50% at 2; all
    // 10 admitted has a chance of about 1e-5).
    let mut flood = Vec::new();
    let mut admitted_count = 0;
    for i in 0..12u8 {
        let (conn, started) = admitted(&w, [127, 0, 0, 10 + i]);
        if i < 2 {
            assert!(
                started,
                "connection {i} dropped below unauthenticated_drop_start"
            );
        }
        admitted_count += usize::from(started);
        flood.push(conn);
    }
    let drops = w.audit_matching(is_early_drop);
    assert!(
        !drops.is_empty(),
        "no random early drop among 12 silent connections:\n{:?}",
        w.audit()
    );
    assert_eq!(drops.len() + admitted_count, 12, "{:?}", w.audit());
    let reason = s(&drops[0], "reason");
    assert!(
        reason.contains("unauthenticated_drop_start 2")
            && reason.contains("unauthenticated_drop_rate 50%")
            && reason.contains("max_unauthenticated 16"),
        "{reason}"
    );
    // A real client retrying gets in long before the flood's grace time is over (each
    // try has a chance of at least 1 - 0.5 - 0.5 * 10 / 14, about 14%).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tries = 0;
    loop {
        tries += 1;
        if log_in_from(&w, &alice, [127, 0, 0, 100]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no login in {tries} tries during the flood:\n{}",
            w.proc().report("")
        );
    }
    w.wait_audit("alice's login", |v| {
        is(v, "auth_success", &[("user", "alice")])
    });
    drop(flood);
}

#[test]
fn sources_that_hold_slots_without_logging_in_are_penalised() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[
            ("login_grace_time", "\"1s\""),
            ("penalty_grace_exceeded", "\"3s\""),
            ("penalty_noauth", "\"3s\""),
            ("penalty_max", "\"1m\""),
            ("penalty_exempt", "[]"),
        ],
    );
    trust_all(&w, &[&alice]);
    let silent_src = [127, 0, 0, 20];
    let stalled_src = [127, 0, 0, 21];
    let closer_src = [127, 0, 0, 22];
    let other_src = [127, 0, 0, 23];
    let banner_closer_src = [127, 0, 0, 24];
    let kex_src = [127, 0, 0, 25];

    // One says nothing at all (cut before its SSH banner), one stops after its banner
    // (cut by the grace timer of an SSH session): both reach the grace time.
    let (silent, started) = admitted(&w, silent_src);
    assert!(started);
    let (mut stalled, started) = admitted(&w, stalled_src);
    assert!(started);
    stalled
        .write_all(b"SSH-2.0-OpenSSH_9.2 stalled\r\n")
        .unwrap();
    for src in [silent_src, stalled_src] {
        assert_penalised(&w, src, "reached the login grace time unauthenticated");
    }
    drop(silent);
    drop(stalled);

    // Another source is not affected.
    assert!(
        log_in_from(&w, &alice, other_src),
        "{}",
        w.proc().report("")
    );

    // A source that closes before key exchange is through earns penalty_noauth, whether
    // before its SSH banner or after.
    for (closer_src, banner) in [(closer_src, false), (banner_closer_src, true)] {
        let mut closer = w.connect_from(closer_src);
        w.wait_audit("the closer's session", |v| {
            is(v, "session_start", &[]) && from_source(v, closer_src)
        });
        if banner {
            closer.write_all(b"SSH-2.0-OpenSSH_9.2 closer\r\n").unwrap();
        }
        drop(closer);
        assert_penalised(&w, closer_src, "closed before key exchange was through");
    }

    // One that completes key exchange and then fails to log in (a wrong user) is not
    // penalised: that is the failed-login throttle's business.
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args(["-o", "BatchMode=yes", "-b"])
        .arg(ip(kex_src))
        .arg(SshClient::dest("mallory"))
        .arg("true");
    assert!(!logged_in(&Proc::spawn(cmd)));
    w.wait_audit("mallory's end", |v| {
        is(v, "session_end", &[]) && from_source(v, kex_src)
    });
    assert!(
        log_in_from(&w, &alice, kex_src),
        "a source that only failed to log in was penalised\n{}",
        w.proc().report("")
    );

    // The penalty runs out (3 s): the silent source may log in again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_in_from(&w, &alice, silent_src) {
        assert!(
            Instant::now() < deadline,
            "the penalty never ran out\n{}",
            w.proc().report("")
        );
    }
    for src in [other_src, kex_src] {
        let records =
            w.audit_matching(|v| (is_penalty(v) || is_penalised(v)) && from_source(v, src));
        assert!(records.is_empty(), "{} was penalised: {records:?}", ip(src));
    }
}
