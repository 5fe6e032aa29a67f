//! `warren --preconnect -L` through a real OpenSSH sshd: the target sees the next
//! connection's channel before the client exists, the client gets that channel (with what
//! the target already said on it), every byte still arrives once and in order, and an
//! unused spare is closed after its time instead of being held or replaced, and a spare
//! from a session that was replaced is never handed out. Through warrend, which sends
//! without Nagle, the spare is opened while a connection is still in use.

mod common;

use common::warrend::*;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// What the target saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Accepted(usize),
    /// Closed by the peer before sending anything (an unused spare).
    ClosedUnused(usize),
}

/// A target that greets each connection with its number in accept order ("conn N\n"),
/// like a server that speaks first (MySQL, SMTP, SSH), then echoes; it reports accepts
/// and unused closes. Its threads end with the test process.
struct GreetingEcho {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: mpsc::Receiver<Seen>,
}

impl GreetingEcho {
    fn start() -> GreetingEcho {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = tx.send(Seen::Accepted(n));
                let tx = tx.clone();
                std::thread::spawn(move || greet_and_echo(s, n, &tx));
            }
        });
        GreetingEcho {
            addr,
            accepted,
            seen,
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits for the next event; `None` on timeout.
    fn next(&self, timeout: Duration) -> Option<Seen> {
        self.seen.recv_timeout(timeout).ok()
    }
}

fn greet_and_echo(mut s: TcpStream, n: usize, tx: &mpsc::Sender<Seen>) {
    if s.write_all(format!("conn {n}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                total += k;
                if s.write_all(&buf[..k]).is_err() {
                    return;
                }
            }
        }
    }
    if total == 0 {
        let _ = tx.send(Seen::ClosedUnused(n));
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Connects through the forward and reads the greeting: the connection's number at the
/// target, and the connection, still open.
fn greeted(addr: SocketAddr) -> (usize, BufReader<TcpStream>, TcpStream) {
    let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    let n: usize = greeting
        .strip_prefix("conn ")
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected greeting {greeting:?}"));
    (n, reader, conn)
}

/// Echoes `data` through a greeted connection (half-closing after it) and checks it.
fn echo_and_close(n: usize, mut reader: BufReader<TcpStream>, mut writer: TcpStream, data: &[u8]) {
    let payload = data.to_vec();
    let w = std::thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    w.join().unwrap();
    assert!(back == data, "connection {n}: echo differs");
}

/// One whole connection; returns the number the target gave it.
fn use_once(addr: SocketAddr, data: &[u8]) -> usize {
    let (n, reader, writer) = greeted(addr);
    echo_and_close(n, reader, writer, data);
    n
}

fn warren_preconnect(sshd: &Sshd, user: &WarrenUser, target: SocketAddr) -> (Proc, SocketAddr) {
    let mut cmd = warren_client(&user.home, sshd);
    cmd.arg("-i").arg(&user.key.private).arg("--preconnect");
    cmd.arg("-L")
        .arg(format!("127.0.0.1:0:{}:{}", target.ip(), target.port()));
    cmd.arg("root@127.0.0.1");
    let proc = Proc::spawn(cmd);
    if let Err(e) = proc.wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT) {
        panic!("warren not ready:\n{e}\n--- sshd ---\n{}", sshd.logs());
    }
    let addr = forward_addrs(&proc, "-L")[0];
    (proc, addr)
}

#[test]
fn the_next_connection_gets_a_channel_opened_before_it_arrived() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let target = GreetingEcho::start();
    let (warren, addr) = warren_preconnect(&sshd, &user, target.addr);

    // An idle forward has opened nothing: the first connection is the target's first.
    // sshd holds small packets for acknowledgements (Nagle), so no spare is opened while
    // a connection is in use: a round trip through it later, the target still saw one.
    let (n, reader, writer) = greeted(addr);
    assert_eq!(n, 1);
    assert_eq!(target.next(READY_TIMEOUT), Some(Seen::Accepted(1)));
    echo_and_close(n, reader, writer, b"first");

    // Its arrival asked for a spare: the target sees connection 2 with no client yet.
    assert_eq!(
        target.next(READY_TIMEOUT),
        Some(Seen::Accepted(2)),
        "no channel was opened ahead of the next connection\n{}",
        warren.stderr_text()
    );
    // The next client gets exactly that channel, greeting included, and moves data
    // through it both ways with the half-close.
    let data = pattern_bytes(256 * 1024, 7);
    assert_eq!(use_once(addr, &data), 2);

    // Taking it asked for the next one, which nobody uses: closed after its time, and
    // not replaced while the forward stays idle.
    assert_eq!(target.next(READY_TIMEOUT), Some(Seen::Accepted(3)));
    let spare_opened = Instant::now();
    assert_eq!(
        target.next(Duration::from_secs(15)),
        Some(Seen::ClosedUnused(3)),
        "the unused spare was not closed"
    );
    let held = spare_opened.elapsed();
    assert!(
        held >= Duration::from_secs(2),
        "the spare was closed after {held:?}, before its 3 s"
    );
    assert_eq!(target.connections(), 3, "a spare was reopened while idle");

    // Many short connections in a row: each gets the spare opened during the previous
    // one, in order, and every echo is exact.
    let mut last = 3;
    for i in 0..40u64 {
        let data = pattern_bytes(1 + (i as usize * 997) % 5000, i);
        let n = use_once(addr, &data);
        assert!(n > last, "connection numbers go forward ({n} after {last})");
        last = n;
    }
    assert!(warren.try_wait().is_none(), "warren keeps running");
    assert_eq!(sshd.logs().matches("Accepted publickey").count(), 1);
}

#[test]
fn without_the_flag_nothing_is_opened_ahead() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let target = GreetingEcho::start();
    let (_warren, addrs) =
        warren_forwards(&sshd, &user, &[&format!("127.0.0.1:0:{}", target.addr)]);
    for want in 1..=3 {
        assert_eq!(use_once(addrs[0], b"x"), want);
        assert_eq!(target.next(READY_TIMEOUT), Some(Seen::Accepted(want)));
    }
    // The target saw exactly the clients' connections, as with ssh.
    assert_eq!(target.connections(), 3);
}

#[test]
fn through_warrend_the_spare_is_opened_while_a_connection_is_in_use() {
    let alice = SshClient::new();
    let target = GreetingEcho::start();
    let rule = format!("connect = [\"{}\"]", target.addr);
    let w = Warrend::start(&user("alice", &[&alice], &rule));
    alice.trust_warrend(&w);
    let mut cmd = Command::new(warren_bin());
    alice.home.apply(&mut cmd);
    cmd.env_remove("RUST_LOG")
        .arg("-v")
        .arg("-F")
        .arg(alice.config())
        .arg("-p")
        .arg(w.port().to_string())
        .arg("--preconnect")
        .arg("-L")
        .arg(format!("127.0.0.1:0:{}", target.addr))
        .arg(SshClient::dest("alice"));
    let warren = Proc::spawn(cmd);
    if let Err(e) = warren.wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT) {
        panic!("warren not ready:\n{e}");
    }
    assert!(
        warren
            .stderr_text()
            .contains("remote software version SSH-2.0-warrend_"),
        "{}",
        warren.stderr_text()
    );
    let addr = forward_addrs(&warren, "-L")[0];

    // warrend sends at once, so the first connection's arrival already asks for the next
    // channel: the target sees two connections while connection 1 is still open (its own
    // and the spare, in either order: warrend dials both at once).
    let (first, reader, writer) = greeted(addr);
    let mut seen = [target.next(READY_TIMEOUT), target.next(READY_TIMEOUT)];
    seen.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        seen,
        [Some(Seen::Accepted(1)), Some(Seen::Accepted(2))],
        "no spare while a connection is in use\n{}",
        warren.stderr_text()
    );
    echo_and_close(first, reader, writer, b"first");
    // Back to back, each connection gets the spare its predecessor's arrival opened: the
    // other of the first two, then one after the other.
    let mut want = 3 - first;
    for i in 0..20u64 {
        let data = pattern_bytes(1 + (i as usize * 331) % 3000, i);
        assert_eq!(use_once(addr, &data), want);
        want = if i == 0 { 3 } else { want + 1 };
    }
}

#[test]
fn a_spare_from_a_lost_session_is_never_handed_out() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let target = GreetingEcho::start();
    let (warren, addr) = warren_preconnect(&sshd, &user, target.addr);
    assert_eq!(use_once(addr, b"first"), 1);
    assert_eq!(target.next(READY_TIMEOUT), Some(Seen::Accepted(1)));
    assert_eq!(target.next(READY_TIMEOUT), Some(Seen::Accepted(2)));

    // A new session (SIGHUP reconnects at once): the spare belonged to the old one, whose
    // channels are gone; its greeting still sits in warren's buffer.
    let mark = warren.stderr_line_count();
    warren.signal(libc::SIGHUP);
    warren
        .wait_for_stderr_from(mark, |l| l.contains("reconnected to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        target.next(READY_TIMEOUT),
        Some(Seen::ClosedUnused(2)),
        "the old session's spare is closed at the target"
    );
    // The next client gets a channel of the new session, not the dead spare.
    let data = pattern_bytes(64 * 1024, 3);
    assert_eq!(use_once(addr, &data), 3);
    assert_eq!(sshd.logs().matches("Accepted publickey").count(), 2);
}
