//! `warren -L` through a real OpenSSH sshd: bytes arrive exactly and in order, half-close
//! crosses the tunnel, many connections share one session, one refused target does not
//! hurt the others, and bind failures and signals end warren the documented way.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

const MIB: usize = 1024 * 1024;

fn tcp_spec(target: SocketAddr) -> String {
    format!("127.0.0.1:0:{}:{}", target.ip(), target.port())
}

#[test]
fn bulk_64mib_each_way_with_matching_hashes() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let sink = ReplyAfterEofServer::start();
    let source = SourceServer::start(64 * MIB);
    let (_warren, addrs) = warren_forwards(
        &sshd,
        &user,
        &[&tcp_spec(sink.addr()), &tcp_spec(source.addr())],
    );

    // Upload: the sink answers with the hash of what it got, only after our EOF.
    let up = pattern_bytes(64 * MIB, 7);
    let conn = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
    let reply = exchange(conn, &up, Duration::from_secs(120)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reply),
        sha256_hex(&up),
        "upload corrupted"
    );

    // Download.
    let mut conn = connect_with_retry(addrs[1], READY_TIMEOUT).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut down = Vec::with_capacity(64 * MIB);
    conn.read_to_end(&mut down).unwrap();
    assert_eq!(down.len(), 64 * MIB);
    assert_eq!(
        sha256_hex(&down),
        source.expected_sha256(),
        "download corrupted"
    );
}

#[test]
fn peer_that_answers_only_after_eof_gets_its_answer() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let sink = ReplyAfterEofServer::start();
    let (_warren, addrs) = warren_forwards(&sshd, &user, &[&tcp_spec(sink.addr())]);
    for size in [0usize, 1, 100_000] {
        let data = pattern_bytes(size, size as u64);
        let conn = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
        let reply = exchange(conn, &data, IO_TIMEOUT).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&reply),
            sha256_hex(&data),
            "size {size}"
        );
    }
}

#[test]
fn two_hundred_concurrent_connections_through_one_forward() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let (_warren, addrs) = warren_forwards(&sshd, &user, &[&tcp_spec(echo.addr())]);
    let addr = addrs[0];
    let threads: Vec<_> = (0..200u64)
        .map(|i| {
            std::thread::spawn(move || {
                let data = pattern_bytes(64 * 1024 + i as usize, i);
                let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
                let back = exchange(conn, &data, Duration::from_secs(60)).unwrap();
                assert!(back == data, "connection {i}: echo differs");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a connection failed");
    }
    assert_eq!(echo.connections(), 200);
    // All of them went over one SSH connection.
    assert_eq!(sshd.logs().matches("Accepted publickey").count(), 1);
}

/// Held at once, not one after another: the engine once counted our own channels against
/// the cap meant for the peer's (1,024), so the 1,025th -L connection was refused while
/// the others were open.
#[test]
fn eleven_hundred_connections_held_open_at_once() {
    const N: usize = 1100;
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let (_warren, addrs) = warren_forwards(&sshd, &user, &[&tcp_spec(echo.addr())]);
    let echo_byte = |conn: &mut TcpStream, b: u8, i: usize| {
        conn.write_all(&[b]).unwrap();
        let mut back = [0u8];
        conn.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("connection {i} of {N}: {e}"));
        assert_eq!(back[0], b, "connection {i}");
    };
    let mut held = Vec::with_capacity(N);
    for i in 0..N {
        let mut conn = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        echo_byte(&mut conn, i as u8, i);
        held.push(conn);
    }
    // Every one of them is still a working channel.
    for (i, conn) in held.iter_mut().enumerate() {
        echo_byte(conn, !(i as u8), i);
    }
    assert_eq!(echo.connections(), N);
}

#[test]
fn refused_target_closes_only_that_connection() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let closed = free_port(); // nothing listens here
    let (warren, addrs) = warren_forwards(
        &sshd,
        &user,
        &[
            &format!("127.0.0.1:0:127.0.0.1:{closed}"),
            &tcp_spec(echo.addr()),
        ],
    );
    // A long-lived connection opened before the failure must survive it.
    let mut before = connect_with_retry(addrs[1], READY_TIMEOUT).unwrap();
    before.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    before.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    before.read_exact(&mut buf).unwrap();

    for _ in 0..3 {
        let mut bad = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
        bad.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut sink = Vec::new();
        // Closed at once by warren: EOF or reset, never a hang.
        let _ = bad.read_to_end(&mut sink);
        assert!(sink.is_empty());
    }
    warren
        .wait_for_stderr(
            |l| l.contains("failed") && l.contains(&closed.to_string()),
            READY_TIMEOUT,
        )
        .expect("the refusal is logged with the target");

    before.write_all(b"after!").unwrap();
    before.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after!");
    let fresh = connect_with_retry(addrs[1], READY_TIMEOUT).unwrap();
    assert_eq!(exchange(fresh, b"fresh", IO_TIMEOUT).unwrap(), b"fresh");
    assert!(warren.try_wait().is_none(), "warren must keep running");
}

#[test]
fn local_port_in_use_is_reported_with_the_address() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-i").arg(&user.key.private);
    cmd.args([
        "-L",
        &format!("127.0.0.1:{port}:127.0.0.1:9"),
        "root@127.0.0.1",
    ]);
    let warren = Proc::spawn(cmd);
    let status = warren.expect_exit(READY_TIMEOUT);
    assert_eq!(status.code(), Some(3), "{}", warren.stderr_text());
    let err = warren.stderr_text();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("already in use"), "{err}");
    // It failed before connecting: no login happened.
    assert!(!sshd.logs().contains("Accepted publickey"));
}

#[test]
fn sigterm_and_sigint_stop_cleanly_with_status_0() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (warren, addrs) = warren_forwards(&sshd, &user, &[&tcp_spec(echo.addr())]);
        let conn = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
        assert_eq!(exchange(conn, b"x", IO_TIMEOUT).unwrap(), b"x");
        warren.signal(sig);
        let status = warren.expect_exit(READY_TIMEOUT);
        assert_eq!(
            status.code(),
            Some(0),
            "signal {sig}: {}",
            warren.stderr_text()
        );
        // The listener is gone with it.
        assert!(TcpStream::connect(addrs[0]).is_err());
    }
}

#[test]
fn unix_socket_forms_both_ends() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().unwrap();

    // The "remote" socket (sshd runs on this machine), served by a unix echo.
    let remote_sock = dir.path().join("remote.sock");
    let server = UnixListener::bind(&remote_sock).unwrap();
    std::thread::spawn(move || {
        for s in server.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                let _ = s.write_all(&buf);
            });
        }
    });

    let local_sock = dir.path().join("local.sock");
    let (_warren, addrs) = warren_forwards(
        &sshd,
        &user,
        &[
            &format!("{}:127.0.0.1:{}", local_sock.display(), echo.port()),
            &format!("127.0.0.1:0:{}", remote_sock.display()),
        ],
    );

    let mut s = UnixStream::connect(&local_sock).unwrap();
    s.write_all(b"through a local socket").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"through a local socket");

    let conn = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
    assert_eq!(
        exchange(conn, b"to a remote socket", IO_TIMEOUT).unwrap(),
        b"to a remote socket"
    );
}

/// One forwarded connection whose reader stops must not stall the others or the
/// keepalives of the same SSH connection, and must get every byte once it reads again.
/// SSH flow control holds the sender back (one window per channel), so nothing is
/// buffered beyond that window, in memory or on disk.
#[test]
fn a_stalled_reader_does_not_stall_the_session_and_loses_nothing() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let source = SourceServer::start(48 * MIB);
    let echo = EchoServer::start();
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"])
        .args(["-L", &tcp_spec(source.addr()), "-L", &tcp_spec(echo.addr())])
        .arg("root@127.0.0.1");
    let warren = Proc::spawn(cmd);
    warren
        .wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let addrs = forward_addrs(&warren, "-L");

    // The stalled reader: connected, asked for everything, and then not read.
    let mut stalled = TcpStream::connect(addrs[0]).unwrap();
    stalled.shutdown(Shutdown::Write).unwrap();

    // Meanwhile another connection of the same session keeps answering, for several
    // keepalive intervals (a stalled session would also miss its keepalives and be
    // dropped after ~3 s).
    let mut echo_conn = connect_with_retry(addrs[1], READY_TIMEOUT).unwrap();
    echo_conn
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let window = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    while window.elapsed() < Duration::from_secs(4) {
        let t = std::time::Instant::now();
        echo_conn.write_all(b"!").unwrap();
        let mut b = [0u8; 1];
        echo_conn
            .read_exact(&mut b)
            .expect("echo answered while the other reader stalls");
        worst = worst.max(t.elapsed());
        rounds += 1;
    }
    assert!(
        worst < Duration::from_secs(1),
        "an echo took {worst:?} while one reader stalled"
    );
    assert!(rounds > 100, "only {rounds} round trips");
    // The stalled data waits at the server, held back by the channel's window: nothing
    // of it is parked in a file here (the russh client spilled it to an unlinked file).
    let fd_dir = format!("/proc/{}/fd", warren.pid());
    let spilled: Vec<String> = std::fs::read_dir(&fd_dir)
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| t.ends_with("(deleted)"))
        .collect();
    assert!(spilled.is_empty(), "warren parks data on disk: {spilled:?}");

    // The stalled reader resumes and gets every byte, in order.
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut all = Vec::with_capacity(48 * MIB);
    stalled.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), 48 * MIB);
    assert_eq!(sha256_hex(&all), source.expected_sha256());
    assert!(warren.try_wait().is_none(), "the session survived");
}

#[test]
fn sigterm_closes_listeners_at_once_but_lets_open_connections_finish() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let sink = ReplyAfterEofServer::start();
    let (warren, addrs) = warren_forwards(&sshd, &user, &[&tcp_spec(sink.addr())]);
    let mut open = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
    open.write_all(b"first half, ").unwrap();
    // The connection is carried before the signal (the sink has seen it).
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    while sink.connections() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connection never reached the sink"
        );
        std::thread::yield_now();
    }
    let mark = warren.stderr_line_count();
    warren.signal(libc::SIGTERM);
    warren
        .wait_for_stderr_from(
            mark,
            |l| l.contains("letting active ones finish"),
            READY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // The listener goes away promptly (its accept loop sees the stop right after the log).
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    while TcpStream::connect(addrs[0]).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        std::thread::yield_now();
    }
    open.write_all(b"second half").unwrap();
    let reply = exchange(open, b"", IO_TIMEOUT).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reply),
        sha256_hex(b"first half, second half")
    );
    assert_eq!(warren.expect_exit(READY_TIMEOUT).code(), Some(0));
}
