//! warrend's name resolution against a resolver that never answers (issue 14, M4), with
//! the real OpenSSH client.
//!
//! The test makes its own network namespace, whose /etc/resolv.conf (bind-mounted by
//! `ip netns exec` from /etc/netns/NAME/) points at 127.0.0.1:53, where the test holds a
//! UDP socket that reads queries and never answers, and whose /etc/hosts names the echo
//! server. The test binary runs itself again inside the namespace, so warrend, ssh, the
//! echo server and the black-hole resolver all live there and the fixture is used as is.
//! The namespace and its /etc/netns directory are removed afterwards, also on failure.

mod common;

use common::netns::Netns;
use common::warrend::*;
use common::*;
use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set (to the namespace's name) in the copy of this test running inside the namespace.
const INSIDE: &str = "WARREN_DNS_TEST_NETNS";
/// First line of the namespace's resolv.conf, so the inner run knows it got it.
const MARKER: &str = "# warren-dns test: a resolver that never answers";
const TEST: &str = "stuck_dns_costs_one_users_share_and_address_rules_send_no_query";

/// The test's namespace, with a resolv.conf pointing at a resolver that never answers and
/// a hosts file naming the echo target.
fn dns_namespace() -> Netns {
    let ns = Netns::create("warren-dns");
    ns.etc_file("resolv.conf", &format!("{MARKER}\nnameserver 127.0.0.1\n"));
    ns.etc_file(
        "hosts",
        "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 echo.test\n",
    );
    ns
}

#[test]
fn stuck_dns_costs_one_users_share_and_address_rules_send_no_query() {
    if std::env::var_os(INSIDE).is_some() {
        return inside_the_namespace();
    }
    let ns = dns_namespace();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(std::env::current_exe().expect("current exe"))
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, &ns.name)
        .output()
        .expect("run the test inside the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "inside {}: {report}", ns.name);
    assert!(
        stdout.contains("1 passed"),
        "the inner test did not run: {report}"
    );
}

/// The test's name server: counts the queries it gets and answers none.
struct BlackHole {
    socket: UdpSocket,
    seen: usize,
}

impl BlackHole {
    fn bind() -> BlackHole {
        let socket = UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53 in the namespace");
        BlackHole { socket, seen: 0 }
    }

    /// Queries received so far (all of them already sent are queued on the socket).
    fn count(&mut self) -> usize {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 1500];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(_) => self.seen += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return self.seen,
                Err(e) => panic!("recv on the black hole: {e}"),
            }
        }
    }

    /// Waits (on the socket) until `n` queries have arrived.
    fn wait_for(&mut self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        while self.count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "only {} of {n} queries arrived", self.seen);
            self.socket.set_nonblocking(false).expect("blocking");
            self.socket.set_read_timeout(Some(left)).expect("timeout");
            if self.socket.recv(&mut buf).is_ok() {
                self.seen += 1;
            }
        }
    }
}

fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/PID/task")
        .count()
}

/// An echo round trip through `addr`, and how long it took.
fn timed_echo(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    let back = exchange(conn, b"ping", IO_TIMEOUT).expect("echo through the forward");
    assert_eq!(back, b"ping");
    started.elapsed()
}

fn denial_reason(w: &Warrend, user: &str, target: &str, what: &str) -> String {
    let rec = w.wait_audit(what, |v| {
        is(v, "channel_open", &[("user", user), ("target", target)])
    });
    assert_eq!(s(&rec, "decision"), "deny", "{rec}");
    s(&rec, "reason").to_string()
}

fn inside_the_namespace() {
    let resolv = fs::read_to_string("/etc/resolv.conf").expect("read resolv.conf");
    assert!(
        resolv.starts_with(MARKER),
        "not the namespace's resolv.conf: {resolv}"
    );
    let mut dns = BlackHole::bind();
    let echo = EchoServer::start();
    let p = echo.port();
    let alice = SshClient::new(); // reaches the echo server by address and by hosts name
    let mallory = SshClient::new(); // may reach any name: floods the resolver
    let ivan = SshClient::new(); // address rules only
    let w = Warrend::start_with(
        &format!(
            "{}{}{}",
            user(
                "alice",
                &[&alice],
                &format!("connect = [\"127.0.0.1:{p}\", \"echo.test:{p}\"]")
            ),
            user("mallory", &[&mallory], &format!("connect = [\"*:{p}\"]")),
            user(
                "ivan",
                &[&ivan],
                "connect = [\"10.0.0.0/8:*\", \"192.0.2.7:22\"]"
            ),
        ),
        &[
            ("dns_timeout", "\"8s\""),
            ("max_dns_lookups", "16"),
            ("max_dns_lookups_per_user", "4"),
        ],
    );
    trust_all(&w, &[&alice, &mallory, &ivan]);

    // A user with address rules only cannot make warrend ask DNS anything.
    let mut cmd = ivan.ssh_warrend(&w);
    cmd.args(["-W", "secret-data.exfil.example:22"])
        .arg(SshClient::dest("ivan"));
    let ssh = Proc::spawn(cmd);
    assert_eq!(
        exit_code(&ssh, IO_TIMEOUT),
        Some(255),
        "{}",
        ssh.stderr_text()
    );
    let why = denial_reason(&w, "ivan", "secret-data.exfil.example:22", "ivan's refusal");
    assert!(why.contains("no connect rule for user ivan"), "{why}");

    // Alice by address and by a hosts-file name: neither needs a query.
    let (_alice_fwd, alice_addrs) = alice.local_forwards(
        &w,
        "alice",
        &[
            Some(&format!("127.0.0.1:{p}")),
            Some(&format!("echo.test:{p}")),
        ],
    );
    for addr in &alice_addrs {
        timed_echo(*addr);
    }
    assert_eq!(
        dns.count(),
        0,
        "a query left warrend before any name needed DNS"
    );
    let pid = w.proc().pid();
    let before = threads(pid);

    // Mallory opens 40 channels to a name only the black hole could answer.
    let (_mallory_fwd, mallory_addrs) =
        mallory.local_forwards(&w, "mallory", &[Some(&format!("stuck.example:{p}"))]);
    let held: Vec<TcpStream> = (0..40)
        .map(|_| connect_with_retry(mallory_addrs[0], READY_TIMEOUT).unwrap())
        .collect();
    // Her share (4) waits on the resolver; the other 36 are refused at once.
    let over = |v: &serde_json::Value| {
        is(
            v,
            "channel_open",
            &[("user", "mallory"), ("decision", "deny")],
        ) && s(v, "reason").contains("too many DNS lookups in flight for user mallory")
    };
    let refused = w.wait_audit_count("mallory's lookups over her share", 36, over);
    assert_eq!(refused.len(), 36, "{refused:?}");
    dns.wait_for(4, READY_TIMEOUT);
    let during = threads(pid);
    assert!(
        during <= before + 8,
        "warrend went from {before} to {during} threads with mallory's lookups stuck"
    );

    eprintln!(
        "warrend threads: {before} before, {during} with mallory's lookups stuck; {} queries \
         at the black hole",
        dns.count()
    );

    // Meanwhile alice is served at once, by address and by hosts-file name.
    for addr in &alice_addrs {
        let took = timed_echo(*addr);
        assert!(took < Duration::from_secs(2), "{addr}: {took:?}");
    }
    let mut cmd = alice.ssh_warrend(&w);
    cmd.arg("-W")
        .arg(format!("echo.test:{p}"))
        .arg(SshClient::dest("alice"));
    let mut ssh = Proc::spawn_with_stdin(cmd);
    let started = Instant::now();
    {
        use std::io::Write;
        let mut stdin = ssh.take_stdin().expect("stdin");
        stdin.write_all(b"hello through -W\n").expect("write");
    }
    ssh.wait_for_stdout(|l| l == "hello through -W", IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("-W echo.test: {e}"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The stuck ones end at dns_timeout, with a reason in the audit log.
    let timed_out = w.wait_audit_count("mallory's stuck lookups ending", 4, |v| {
        is(
            v,
            "channel_open",
            &[("user", "mallory"), ("decision", "deny")],
        ) && s(v, "reason").contains("timed out after 8s (limits.dns_timeout)")
    });
    assert_eq!(timed_out.len(), 4, "{timed_out:?}");
    drop(held);
}
