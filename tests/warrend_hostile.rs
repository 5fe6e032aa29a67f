//! warrend against users with a valid login who try to hurt the bastion or each other
//! (issue 14): resources that must end with their owner (a session's channels, target
//! sockets and buffers when it logs out), targets that never read (they hold back their
//! own sender by SSH flow control: one window, nothing on disk),
//! rendezvous names that only their owner can take over, and capped session channels.
//!
//! Real OpenSSH `ssh` clients against a private warrend on loopback, real TCP targets.
//! Waits are on real signals (audit records, ssh's lines, sockets closing) with deadlines;
//! the durations measured here are assertions, never readiness waits.

mod common;

use warren_ssh::proto::ChannelKind;

use common::warrend::*;
use common::*;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// A target that accepts connections and never reads from them: the worst case for a
/// tunnel, which must then hold (or refuse) what the client sends. Accepted sockets come
/// out of the channel so the test can see when warrend closes them.
struct SinkTarget {
    port: u16,
    accepted: mpsc::Receiver<TcpStream>,
}

impl SinkTarget {
    fn start() -> SinkTarget {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, accepted) = mpsc::channel();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                if tx.send(conn).is_err() {
                    return;
                }
            }
        });
        SinkTarget { port, accepted }
    }

    fn next(&self) -> TcpStream {
        self.accepted
            .recv_timeout(READY_TIMEOUT)
            .expect("the target saw no connection")
    }
}

/// Whether the peer closed `conn` (EOF or reset) by `deadline`. Data the peer sent is
/// skipped (a sink's connections get what the client pushed).
fn closed_by(conn: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
}

/// Open descriptors of `pid`, and how many of them are deleted files (what a spill to
/// disk would leave; warrend must never have any).
fn fds(pid: u32) -> (usize, usize) {
    let mut total = 0;
    let mut deleted = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        total += 1;
        if let Ok(target) = fs::read_link(entry.path())
            && target.to_string_lossy().ends_with("(deleted)")
        {
            deleted += 1;
        }
    }
    (total, deleted)
}

/// What `pid`'s descriptors point at, for failure messages.
fn fd_list(pid: u32) -> String {
    let mut out = String::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            out.push_str(&format!("{} ", target.display()));
        }
    }
    out
}

/// Writes `total` bytes to `conn` from a thread of its own, until done or the
/// connection fails; returns how many went out. `progress` counts them as they go.
/// A write that cannot progress for `stall` ends the push.
fn push(
    mut conn: TcpStream,
    total: usize,
    progress: Arc<AtomicUsize>,
    stall: Duration,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let chunk = vec![0x5a; 256 * 1024];
        let mut sent = 0;
        conn.set_write_timeout(Some(stall)).unwrap();
        while sent < total {
            match conn.write(&chunk[..chunk.len().min(total - sent)]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    sent += n;
                    progress.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        sent
    })
}

/// One SSH window (OpenSSH's and warrend's initial channel window).
const WINDOW: usize = 2 << 20;

#[test]
fn logout_frees_every_channel_target_socket_and_buffer_within_two_seconds() {
    const CHANNELS: usize = 8;
    const PER_CHANNEL: usize = 12 << 20;
    let alice = SshClient::new();
    let sink = SinkTarget::start();
    let target = format!("127.0.0.1:{}", sink.port);
    let w = Warrend::start_with(
        &user("alice", &[&alice], &format!("connect = [\"{target}\"]")),
        &[("max_buffered_per_user", "\"512MiB\"")],
    );
    trust_all(&w, &[&alice]);
    let pid = w.proc().pid();
    // A first login starts what warrend keeps for its lifetime (runtimes, pools).
    assert!(can_log_in(&w, &alice, "alice"));
    w.wait_audit("the first session's end", |v| {
        is(v, "session_end", &[("user", "alice")])
    });
    let (fds_before, _) = fds(pid);
    let rss_before = rss_kib(pid);

    // One round: a session fills every channel with what targets never read, then dies.
    let round = |n: usize| {
        let (ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&target)]);
        let mut targets = Vec::new();
        let mut pushers = Vec::new();
        let progress: Vec<Arc<AtomicUsize>> = (0..CHANNELS).map(|_| Arc::default()).collect();
        for p in &progress {
            let conn = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
            targets.push(sink.next());
            pushers.push(push(conn, PER_CHANNEL, p.clone(), IO_TIMEOUT));
        }
        // Every pusher got a window's worth out: the targets' sockets are full and warrend
        // holds what the channel windows let through, no more (flow control, no spill).
        let holding = eventually(Duration::from_secs(20), || {
            progress.iter().all(|p| p.load(Ordering::Relaxed) >= WINDOW)
        });
        assert!(
            holding,
            "round {n}: the pushers never got a window out: {:?}",
            progress
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        );
        assert_eq!(fds(pid).1, 0, "round {n}: a deleted file: {}", fd_list(pid));

        ssh.kill();
        let ended = Instant::now();
        let deadline = ended + Duration::from_secs(2);
        for (i, t) in targets.iter_mut().enumerate() {
            assert!(
                closed_by(t, deadline),
                "round {n}: target connection {i} still open {:?} after the session ended",
                ended.elapsed()
            );
        }
        assert!(
            eventually(
                deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100),
                || fds(pid) == (fds_before, 0)
            ),
            "round {n}: descriptors not back within 2 s: {:?}, before {fds_before}: {}",
            fds(pid),
            fd_list(pid)
        );
        let closes = w.wait_audit_count("every channel's close", CHANNELS * n, |v| {
            is(
                v,
                "channel_close",
                &[("target", &target), ("close_reason", "session closed")],
            )
        });
        assert_eq!(closes.len(), CHANNELS * n);
        for p in pushers {
            let _ = p.join();
        }
    };
    round(1);
    let after1 = rss_kib(pid);
    let peak1 = peak_rss_kib(pid);
    round(2);
    let peak2 = peak_rss_kib(pid);
    // Each stalled channel costs warrend at most its window and a relay buffer, whatever
    // the clients push (96 MiB a round here): the peak stays within that.
    let bound = (CHANNELS as u64) * 4 * 1024 + 16 * 1024;
    assert!(
        peak2.saturating_sub(rss_before) <= bound,
        "RSS {rss_before} KiB before, peak {peak2} KiB: more than {bound} KiB held"
    );
    // Memory: glibc keeps what a logout freed in its arenas, so warrend hands it back to
    // the kernel (src/memory.rs) at its next one-second check once it is idle. A round
    // here lasts about 0.2 s, so the estimate of what peers hold never sees it; RSS
    // does. Without that (before 2026-12-06) no trim came, and RSS stayed 1.2-9.6 MiB up
    // (7 runs; back within 1 MiB with it, 4 runs).
    let mut after2 = rss_kib(pid);
    let back = eventually(Duration::from_secs(2), || {
        after2 = rss_kib(pid);
        after2 <= rss_before + 4 * 1024
    });
    assert!(
        back,
        "RSS {rss_before} KiB before, peak {peak1} / {after1} after round 1, \
         peak {peak2} / {after2} 2 s after round 2"
    );
}

/// After a burst of channels ends, warrend gives the memory back to the kernel while the
/// sessions stay: glibc's malloc alone keeps a burst's pages resident for good (measured
/// in the benchmark: 829 MiB after 100,000 bridged connections closed, 774 with them all
/// open), which reads as a leak and starves the host. Channels here are rendezvous
/// bridges between two engine sessions, so the burst costs no descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_a_burst_of_channels_goes_back_to_the_kernel_when_it_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CHANNELS: usize = 10_000;
    const LIMIT: &str = "20000";
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user(
            "alice",
            &[&alice],
            "publish = [\"burst:80\"]\nreach = [\"burst:80\"]",
        ),
        &[
            ("max_channels_per_session", LIMIT),
            ("max_channels_per_user", LIMIT),
            ("max_channels", LIMIT),
        ],
    );
    let pid = w.proc().pid();
    let publisher = publish_echo(&w, &alice, "burst", CHANNELS).await;
    let reacher = scripted_login(&w, &alice, "alice").await;
    let before = rss_kib(pid);

    let mut open = Vec::with_capacity(CHANNELS);
    for i in 0..CHANNELS {
        let kind = ChannelKind::DirectTcpip {
            host: "burst".into(),
            port: 80,
            originator: "127.0.0.1".into(),
            originator_port: 1024 + i as u32,
        };
        let mut ch = reacher
            .open(kind)
            .await
            .unwrap_or_else(|e| panic!("channel {i} refused: {e}"));
        let tag = (i as u32).to_be_bytes();
        ch.write_all(&tag).await.unwrap();
        let mut back = [0u8; 4];
        ch.read_exact(&mut back).await.unwrap();
        assert_eq!(back, tag, "channel {i}");
        open.push(ch);
    }
    let during = rss_kib(pid);
    let grew = during.saturating_sub(before);
    assert!(
        grew >= 20 * 1024,
        "{CHANNELS} channels grew warrend only {grew} KiB (from {before}): not a burst"
    );

    drop(open);
    let closes = w.wait_audit_count("every bridged channel's close", CHANNELS, |v| {
        is(v, "channel_close", &[("kind", "rendezvous-reach")])
    });
    assert_eq!(closes.len(), CHANNELS);
    // Most of the burst back within 2 s of the last close (a third is left for what the
    // allocator cannot give back: pages still holding a live object).
    let settled = Instant::now();
    let back = |rss: u64| rss <= before + grew / 3;
    assert!(
        eventually(Duration::from_secs(2), || back(rss_kib(pid))),
        "RSS {before} KiB before, {during} with {CHANNELS} channels, still {} KiB {:?} after \
         they closed",
        rss_kib(pid),
        settled.elapsed()
    );
    // The sessions are still there and work.
    assert!(publisher.ended().is_none() && reacher.ended().is_none());
}

/// Logs in as `client`'s user, publishes `name`:80 and echoes on every channel warrend
/// brings to it (room for `channels` of them).
async fn publish_echo(
    w: &Warrend,
    client: &SshClient,
    name: &str,
    channels: usize,
) -> warren_ssh::driver::Handle {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use warren_ssh::driver::{AuthOutcome, Incoming};
    use warren_ssh::proto::{Config, GlobalRequest, Role};
    let mut config = Config::new(Role::Client);
    config.max_channels = channels;
    let (h, mut events, outcome) = engine_session(w.addr(), client, "alice", config).await;
    assert_eq!(outcome, AuthOutcome::Success);
    let echo = h.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Incoming::ChannelOpen { id, .. } = ev {
                let mut ch = echo.accept(id);
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = ch.read(&mut buf).await {
                        if n == 0 || ch.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    let request = GlobalRequest::TcpipForward {
        address: name.into(),
        port: 80,
    };
    let (ok, _) = h.global_request(request).await.unwrap();
    assert!(ok, "publishing {name} was refused");
    h
}

/// A target that never reads holds back only its own sender: warrend keeps at most the
/// channel's window for it (nothing on disk, no budget to run out of, nothing cut), the
/// same session's other channels go on, and once the target reads it gets every byte.
#[test]
fn a_target_that_never_reads_holds_back_its_own_sender_only() {
    const TOTAL: usize = 64 << 20;
    let alice = SshClient::new();
    let sink = SinkTarget::start();
    let echo = EchoServer::start();
    let sink_target = format!("127.0.0.1:{}", sink.port);
    let echo_target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start_with(
        &user(
            "alice",
            &[&alice],
            &format!("connect = [\"{sink_target}\", \"{echo_target}\"]"),
        ),
        &[("max_buffered_per_user", "\"8MiB\"")],
    );
    trust_all(&w, &[&alice]);
    let pid = w.proc().pid();
    let (ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&sink_target), Some(&echo_target)]);
    let rss_before = rss_kib(pid);

    let conn = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
    let mut held = sink.next();
    let progress = Arc::new(AtomicUsize::new(0));
    // The push ends when a write has made no progress for 2 s: the sender is held back.
    let pusher = push(
        conn.try_clone().unwrap(),
        TOTAL,
        progress.clone(),
        Duration::from_secs(2),
    );
    assert!(
        eventually(Duration::from_secs(20), || progress.load(Ordering::Relaxed)
            >= WINDOW),
        "the pusher never got a window out"
    );

    // Meanwhile the same session's other channels go on.
    let mut other = connect_with_retry(addrs[1], READY_TIMEOUT).unwrap();
    other.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let data = pattern_bytes(1 << 20, 3);
    other.write_all(&data).unwrap();
    let mut back = vec![0u8; data.len()];
    other.read_exact(&mut back).unwrap();
    assert!(back == data, "echo through the same session corrupted");

    // Flow control stopped the sender: it could not push everything, and what warrend
    // holds for the stalled channel is about one window, in memory only.
    let sent = pusher.join().unwrap();
    assert!(sent < TOTAL, "the client could push everything ({sent})");
    let peak = peak_rss_kib(pid);
    assert!(
        peak.saturating_sub(rss_before) <= 16 * 1024,
        "RSS {rss_before} KiB before, peak {peak} KiB: more than a window held"
    );
    assert_eq!(fds(pid).1, 0, "a deleted file: {}", fd_list(pid));
    // Held back, not cut.
    assert!(
        w.audit_matching(|v| is(v, "channel_close", &[("target", &sink_target)]))
            .is_empty(),
        "the stalled channel was closed"
    );

    // The target reads at last: everything the client got out arrives.
    held.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = vec![0u8; sent];
    held.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("the target got less than the {sent} bytes sent: {e}"));
    assert!(got.iter().all(|&b| b == 0x5a), "the target got other bytes");
    drop(ssh);
    drop(conn);
    assert!(
        closed_by(&mut held, Instant::now() + Duration::from_secs(2)),
        "the target socket stays open after the session ended"
    );
}

/// `ssh -v -N -R <spec>` as `login`; `Ok` once ssh says warrend accepted the forward,
/// `Err` with ssh's exit code when warrend refused it (ExitOnForwardFailure).
fn remote_forward(
    w: &Warrend,
    c: &SshClient,
    login: &str,
    spec: &str,
    listen: &str,
) -> Result<Proc, Proc> {
    let mut cmd = c.ssh_warrend(w);
    cmd.args(["-v", "-N", "-o", "ExitOnForwardFailure=yes", "-R", spec])
        .arg(SshClient::dest(login));
    let ssh = Proc::spawn(cmd);
    let ok = format!("remote forward success for: listen {listen},");
    let refused = "remote port forwarding failed for listen port";
    match ssh.wait_for_stderr(|l| l.contains(&ok) || l.contains(refused), READY_TIMEOUT) {
        Ok(_) if ssh.stderr_text().contains(&ok) => Ok(ssh),
        Ok(_) => Err(ssh),
        Err(e) => panic!("-R {spec}: no answer:\n{e}"),
    }
}

/// What `bob` gets back through `-W name:port` after sending `payload`.
fn reach(w: &Warrend, bob: &SshClient, target: &str, payload: &[u8]) -> Proc {
    let mut cmd = bob.ssh_warrend(w);
    cmd.args(["-W", target]).arg(SshClient::dest("bob"));
    let mut ssh = Proc::spawn_with_stdin(cmd);
    let mut stdin = ssh.take_stdin().unwrap();
    stdin.write_all(payload).unwrap();
    drop(stdin);
    ssh.expect_exit(READY_TIMEOUT);
    ssh
}

/// A TCP server that answers every connection with `tag` and closes.
fn tagged(tag: &'static str) -> TcpServer {
    TcpServer::start(move |mut s| {
        let _ = s.write_all(tag.as_bytes());
        let _ = s.shutdown(std::net::Shutdown::Both);
    })
}

#[test]
fn another_user_cannot_take_a_published_name_but_its_owner_can_after_reconnecting() {
    let alice = SshClient::new();
    let alice2 = SshClient::new();
    let mallory = SshClient::new();
    let bob = SshClient::new();
    let alice_side = tagged("alice");
    let alice_new_side = tagged("alice-again");
    let mallory_side = tagged("mallory");
    let w = Warrend::start(&format!(
        "{}{}{}",
        user("alice", &[&alice, &alice2], "publish = [\"pi-home:22\"]"),
        user("mallory", &[&mallory], "publish = [\"*:22\"]"),
        user("bob", &[&bob], "reach = [\"pi-home:22\"]"),
    ));
    trust_all(&w, &[&alice, &alice2, &mallory, &bob]);

    let first = remote_forward(
        &w,
        &alice,
        "alice",
        &format!("pi-home:22:127.0.0.1:{}", alice_side.port()),
        "pi-home:22",
    )
    .unwrap_or_else(|p| panic!("alice could not publish:\n{}", p.report("")));

    let hijack = remote_forward(
        &w,
        &mallory,
        "mallory",
        &format!("pi-home:22:127.0.0.1:{}", mallory_side.port()),
        "pi-home:22",
    );
    let refused = match hijack {
        Ok(p) => panic!("mallory took alice's name:\n{}", p.report("")),
        Err(p) => p,
    };
    let deny = w.wait_audit("mallory's refused publish", |v| {
        is(
            v,
            "listen_start",
            &[
                ("user", "mallory"),
                ("kind", "rendezvous-publish"),
                ("decision", "deny"),
            ],
        )
    });
    assert!(
        s(&deny, "reason").contains("published by another user"),
        "{deny}"
    );
    assert!(
        !s(&deny, "reason").contains("alice"),
        "the owner is not named: {deny}"
    );
    drop(refused);

    let ssh = reach(&w, &bob, "pi-home:22", b"");
    assert_eq!(ssh.stdout_text().trim(), "alice", "{}", ssh.report(""));

    // alice's device reconnects (another key of hers) while the old session lingers:
    // the name follows her at once.
    let second = remote_forward(
        &w,
        &alice2,
        "alice",
        &format!("pi-home:22:127.0.0.1:{}", alice_new_side.port()),
        "pi-home:22",
    )
    .unwrap_or_else(|p| {
        panic!(
            "alice's reconnect could not take her name:\n{}",
            p.report("")
        )
    });
    let ssh = reach(&w, &bob, "pi-home:22", b"");
    assert_eq!(
        ssh.stdout_text().trim(),
        "alice-again",
        "{}",
        ssh.report("")
    );
    drop(first);
    drop(second);
}

/// A client on Warren's own SSH engine that logs in as `login` with `client`'s key and
/// accepts any host key (the test just started this warrend): stock ssh never holds several
/// bare session channels open, so this scriptable client does what a hostile one would.
async fn engine_login(
    addr: SocketAddr,
    client: &SshClient,
    login: &str,
) -> (warren_ssh::driver::Handle, warren_ssh::driver::AuthOutcome) {
    let config = warren_ssh::proto::Config::new(warren_ssh::proto::Role::Client);
    let (handle, mut events, outcome) = engine_session(addr, client, login, config).await;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (handle, outcome)
}

/// Like [`engine_login`] with the engine's settings given, and the session's events left
/// to the caller.
async fn engine_session(
    addr: SocketAddr,
    client: &SshClient,
    login: &str,
    config: warren_ssh::proto::Config,
) -> (
    warren_ssh::driver::Handle,
    warren_ssh::driver::Events,
    warren_ssh::driver::AuthOutcome,
) {
    use warren_ssh::driver::{self, Incoming};
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to warrend");
    let (handle, mut events, run) = driver::start(tcp, std::sync::Arc::new(config));
    tokio::spawn(run);
    match events.recv().await {
        Some(Incoming::HostKey(_)) => {}
        other => panic!("expected warrend's host key, got {other:?}"),
    }
    let key =
        warren_ssh::ssh_key::PrivateKey::read_openssh_file(&client.key.private).expect("load key");
    let outcome = handle
        .auth_publickey(login, &key)
        .await
        .expect("authenticate");
    (handle, events, outcome)
}

async fn scripted_login(
    w: &Warrend,
    client: &SshClient,
    login: &str,
) -> warren_ssh::driver::Handle {
    let (handle, outcome) = engine_login(w.addr(), client, login).await;
    assert_eq!(
        outcome,
        warren_ssh::driver::AuthOutcome::Success,
        "{login} could not log in"
    );
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_channels_are_capped_and_audited() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[("max_session_channels", "3")],
    );
    trust_all(&w, &[&alice]);
    let session = scripted_login(&w, &alice, "alice").await;
    let mut open = Vec::new();
    for i in 0..3 {
        let ch = session
            .open(ChannelKind::Session)
            .await
            .unwrap_or_else(|e| panic!("session channel {i} refused: {e}"));
        open.push(ch);
    }
    let refused = session.open(ChannelKind::Session).await;
    assert!(refused.is_err(), "a fourth session channel was opened");
    let deny = w.wait_audit("the fourth session channel", |v| {
        is(
            v,
            "channel_open",
            &[("kind", "session"), ("decision", "deny")],
        )
    });
    assert!(
        s(&deny, "reason").contains("max_session_channels"),
        "{deny}"
    );
    let allowed = w.wait_audit_count("the allowed session channels", 3, |v| {
        is(
            v,
            "channel_open",
            &[("kind", "session"), ("decision", "allow")],
        )
    });
    assert_eq!(allowed.len(), 3);

    // Closing one frees its slot (and is audited).
    let first = open.remove(0);
    drop(first);
    w.wait_audit("the closed session channel", |v| {
        is(v, "channel_close", &[("kind", "session")])
    });
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ch) = session.open(ChannelKind::Session).await {
            again = Some(ch);
            break;
        }
        // The close crosses the connection once more before warrend frees the slot.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed slot was never given back");
}

/// `ssh -C` gets zlib@openssh.com, switched on only after login (nothing untrusted is
/// inflated before), and an idle session survives several keepalives sent compressed
/// (russh sent them uncompressed and the session died at the first one).
#[test]
fn ssh_c_gets_delayed_compression_and_idle_sessions_survive_keepalives() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start_with(
        &user("alice", &[&alice], &format!("connect = [\"{target}\"]")),
        &[("keepalive_interval", "\"1s\"")],
    );
    trust_all(&w, &[&alice]);
    let port = free_port();
    let mut cmd = alice.ssh_warrend(&w);
    // -C offers zlib@openssh.com and zlib first, as dbclient does by default.
    cmd.args(["-v", "-C", "-N", "-L"])
        .arg(format!("127.0.0.1:{port}:{target}"))
        .arg(SshClient::dest("alice"));
    let ssh = Proc::spawn(cmd);
    ssh.wait_for_stderr(|l| l == local_forward_ready(port), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("ssh -C not ready:\n{e}"));
    let text = ssh.stderr_text();
    assert!(
        text.contains("compression: zlib@openssh.com") && !text.contains("compression: zlib\n"),
        "{}",
        ssh.report("delayed compression was not negotiated")
    );
    ssh.wait_for_stderr(|l| l.contains("Enabling compression"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("compression never switched on:\n{e}"));
    // Idle across three keepalives, then the tunnel still carries data.
    let keepalives = || {
        ssh.stderr_lines()
            .iter()
            .filter(|l| l.contains("keepalive@openssh.com"))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(10), || keepalives() >= 3),
        "{}",
        ssh.report("no keepalives seen")
    );
    assert!(ssh.try_wait().is_none(), "{}", ssh.report("ssh died idle"));
    let mut conn =
        connect_with_retry(SocketAddr::from(([127, 0, 0, 1], port)), READY_TIMEOUT).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let data = pattern_bytes(256 * 1024, 9);
    conn.write_all(&data).unwrap();
    let mut back = vec![0u8; data.len()];
    conn.read_exact(&mut back).unwrap();
    assert!(back == data, "echo through the compressed session differs");
    assert!(ssh.try_wait().is_none(), "{}", ssh.report("ssh died"));
}

#[test]
fn default_host_keys_are_ed25519_and_ecdsa_never_rsa() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("warrend.toml");
    fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nstate_dir = {}\n",
            toml_str(&state)
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(warrend_bin());
    cmd.env_remove("RUST_LOG").arg("-f").arg(&config);
    let warrend = Proc::spawn(cmd);
    warrend
        .wait_for_stderr(|l| l.contains("warrend: listening on "), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("warrend did not start:\n{e}"));
    let mut names: Vec<String> = fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The control socket of `warrend ctl` lives there too.
        .filter(|n| !n.ends_with(".pub") && n != "ctl.sock")
        .collect();
    names.sort();
    assert_eq!(names, ["ssh_host_ecdsa_key", "ssh_host_ed25519_key"]);
    let announced = warrend.stderr_text();
    assert!(
        announced.contains("host key ED25519") && announced.contains("host key ECDSA"),
        "{announced}"
    );
    assert!(!announced.contains("RSA"), "{announced}");
}

#[test]
fn every_refused_request_is_audited_with_a_reason_and_without_secrets() {
    let alice = SshClient::new();
    let w = Warrend::start(&user("alice", &[&alice], "listen = [\"localhost:9000\"]"));
    trust_all(&w, &[&alice]);
    let secret = "hunter2-in-a-command";
    // X11 and environment forwarding, and a command: all refused.
    let mut cmd = alice.ssh_warrend(&w);
    // ssh asks for X11 forwarding only with a display (xauth may be missing: it then
    // sends made-up credentials, which is all this needs).
    cmd.env("DISPLAY", "127.0.0.1:0")
        .args(["-X", "-o", "SetEnv=WARREN_TOKEN=hunter2-value"])
        .arg(SshClient::dest("alice"))
        .arg(format!("echo {secret}"));
    let ssh = Proc::spawn(cmd);
    ssh.expect_exit(READY_TIMEOUT);
    // (ssh 9.2 here sends no auth-agent-req for -A under this fixture's config; warrend
    // answers it the same way, src/server/connection.rs agent_request.)
    for kind in ["x11-req", "env"] {
        let r = w.wait_audit(kind, |v| is(v, "session_request", &[("kind", kind)]));
        assert_eq!(s(&r, "decision"), "deny", "{r}");
        assert!(!s(&r, "reason").is_empty(), "{r}");
    }
    let exec = w.wait_audit("the exec", |v| {
        is(
            v,
            "channel_open",
            &[("kind", "session"), ("decision", "deny")],
        )
    });
    assert!(s(&exec, "target").starts_with("exec ("), "{exec}");
    let log = w.proc().stdout_text();
    assert!(
        !log.contains("hunter2"),
        "a secret reached the audit log:\n{log}"
    );
    assert!(
        log.contains("WARREN_TOKEN"),
        "the variable name is kept:\n{log}"
    );

    // A refused rendezvous publish is labelled as one; a unix-socket -R is audited.
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        "pi-home:22:127.0.0.1:22",
    ])
    .arg(SshClient::dest("alice"));
    Proc::spawn(cmd).expect_exit(READY_TIMEOUT);
    let publish = w.wait_audit("the refused publish", |v| {
        is(
            v,
            "listen_start",
            &[("kind", "rendezvous-publish"), ("decision", "deny")],
        )
    });
    assert!(!s(&publish, "reason").is_empty(), "{publish}");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!(
            "{}:127.0.0.1:22",
            dir.path().join("s.sock").display()
        ))
        .arg(SshClient::dest("alice"));
    Proc::spawn(cmd).expect_exit(READY_TIMEOUT);
    w.wait_audit("the refused unix-socket -R", |v| {
        is(
            v,
            "listen_start",
            &[("kind", "streamlocal-forward"), ("decision", "deny")],
        )
    });

    // An IPv6 target is written in brackets.
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args(["-W", "[::1]:5432"]).arg(SshClient::dest("alice"));
    Proc::spawn(cmd).expect_exit(READY_TIMEOUT);
    let v6 = w.wait_audit("the IPv6 target", |v| {
        is(v, "channel_open", &[("kind", "direct-tcpip")])
    });
    assert_eq!(s(&v6, "target"), "[::1]:5432", "{v6}");
}

#[test]
fn a_reload_ends_removed_users_sessions_and_live_sessions_follow_the_new_rules() {
    let alice = SshClient::new();
    let bob = SshClient::new();
    let echo = EchoServer::start();
    let other = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let other_target = format!("127.0.0.1:{}", other.port());
    let both = format!("connect = [\"{target}\", \"{other_target}\"]");
    let w = Warrend::start(&format!(
        "{}{}",
        user("alice", &[&alice], &both),
        user("bob", &[&bob], &both),
    ));
    trust_all(&w, &[&alice, &bob]);
    let (alice_ssh, alice_addrs) =
        alice.local_forwards(&w, "alice", &[Some(&target), Some(&other_target)]);
    let (bob_ssh, _) = bob.local_forwards(&w, "bob", &[Some(&target)]);
    let round_trip = |addr: SocketAddr| -> bool {
        let Ok(mut c) = connect_with_retry(addr, READY_TIMEOUT) else {
            return false;
        };
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut back = [0u8; 4];
        c.write_all(b"ping").is_ok() && c.read_exact(&mut back).is_ok() && &back == b"ping"
    };
    assert!(round_trip(alice_addrs[1]));

    // bob is removed; alice keeps only the first target.
    w.rewrite_users(&user(
        "alice",
        &[&alice],
        &format!("connect = [\"{target}\"]"),
    ));
    w.reload();
    bob_ssh.expect_exit(READY_TIMEOUT);
    let end = w.wait_audit("bob's revoked session", |v| {
        is(v, "session_end", &[("user", "bob")])
    });
    assert!(s(&end, "reason").contains("was removed"), "{end}");
    assert!(
        alice_ssh.try_wait().is_none(),
        "alice's session must survive"
    );
    assert!(
        round_trip(alice_addrs[0]),
        "alice's allowed target still works"
    );
    assert!(
        !round_trip(alice_addrs[1]),
        "a live session's new channel was judged by the old rules"
    );
    let deny = w.wait_audit("the re-judged channel", |v| {
        is(
            v,
            "channel_open",
            &[
                ("user", "alice"),
                ("target", &other_target),
                ("decision", "deny"),
            ],
        )
    });
    assert!(s(&deny, "reason").contains("no connect rule"), "{deny}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_text_cannot_forge_or_colour_diagnostic_lines() {
    let alice = SshClient::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warrend.toml");
    fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nstate_dir = {}\nhost_keys = [\"ssh_host_ed25519_key\"]\n\n[limits]\nauth_rejection_delay = \"1ms\"\n\n{}",
            toml_str(&dir.path().join("state")),
            user("alice", &[&alice], "")
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(warrend_bin());
    cmd.env_remove("RUST_LOG").arg("-v").arg("-f").arg(&config);
    let warrend = Proc::spawn(cmd);
    let line = warrend
        .wait_for_stderr(|l| l.contains("warrend: listening on "), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("warrend did not start:\n{e}"));
    let addr: SocketAddr = line
        .split("warrend: listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let forged = "mallory\n WARN forged line\u{1b}[2J";
    let (_session, outcome) = engine_login(addr, &alice, forged).await;
    assert_ne!(outcome, warren_ssh::driver::AuthOutcome::Success);
    warrend
        .wait_for_stderr(|l| l.contains("forged line"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("the refusal was not logged:\n{e}"));
    let text = warrend.stderr_text();
    assert!(
        !text.lines().any(|l| l.starts_with(" WARN forged")),
        "a client forged a log line:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "a raw escape reached stderr:\n{text}"
    );
    assert!(text.contains("\\n WARN forged line\\u{1b}[2J"), "{text}");
}

#[test]
fn channels_are_capped_per_user_across_sessions() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start_with(
        &user("alice", &[&alice], &format!("connect = [\"{target}\"]")),
        &[("max_channels_per_user", "2")],
    );
    trust_all(&w, &[&alice]);
    let ping = |c: &mut TcpStream| -> bool {
        c.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
        let mut b = [0u8; 1];
        c.write_all(b"!").is_ok() && c.read_exact(&mut b).is_ok()
    };
    let (_one, a) = alice.local_forwards(&w, "alice", &[Some(&target)]);
    let (_two, b) = alice.local_forwards(&w, "alice", &[Some(&target)]);
    let mut first = connect_with_retry(a[0], READY_TIMEOUT).unwrap();
    assert!(ping(&mut first));
    let mut second = connect_with_retry(b[0], READY_TIMEOUT).unwrap();
    assert!(ping(&mut second));
    let mut third = connect_with_retry(b[0], READY_TIMEOUT).unwrap();
    assert!(!ping(&mut third), "a third channel of the user was opened");
    let deny = w.wait_audit("the refused third channel", |v| {
        is(v, "channel_open", &[("decision", "deny")])
    });
    assert!(
        s(&deny, "reason").contains("max_channels_per_user"),
        "{deny}"
    );
    // Closing one (in the other session) makes room.
    drop(first);
    w.wait_audit("the first channel's close", |v| {
        is(v, "channel_close", &[("target", &target)])
    });
    let mut fourth = connect_with_retry(b[0], READY_TIMEOUT).unwrap();
    assert!(ping(&mut fourth));
    assert!(ping(&mut second));
}

#[test]
fn listeners_are_capped_per_user_across_sessions() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], "listen = [\"localhost:*\"]"),
        &[("max_listeners_per_user", "1")],
    );
    trust_all(&w, &[&alice]);
    let (p1, p2) = (free_port(), free_port());
    let _first = remote_forward(
        &w,
        &alice,
        "alice",
        &format!("{p1}:127.0.0.1:9"),
        &format!("{p1}"),
    )
    .unwrap_or_else(|p| panic!("the first -R was refused:\n{}", p.report("")));
    let second = remote_forward(
        &w,
        &alice,
        "alice",
        &format!("{p2}:127.0.0.1:9"),
        &format!("{p2}"),
    );
    assert!(second.is_err(), "a second -R of the user was allowed");
    let deny = w.wait_audit("the refused -R", |v| {
        is(v, "listen_start", &[("decision", "deny")])
    });
    assert!(
        s(&deny, "reason").contains("max_listeners_per_user"),
        "{deny}"
    );
}
