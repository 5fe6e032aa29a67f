//! warrend denies its host's own interface addresses to wide connect rules (issue 14, M2).
//!
//! A service bound to `0.0.0.0` answers on every address of the host, so `*:*` or
//! `0.0.0.0/0:*` must not reach it through a non-loopback address either. Each test
//! makes a network namespace of its own (deleted on drop, also when the test fails),
//! gives its loopback extra addresses that stand for the host's LAN addresses, and runs
//! warrend, the real OpenSSH client and the destination inside it: nothing here touches
//! any address outside that namespace.

mod common;

use common::netns::Netns;
use common::warrend::*;
use common::*;
use nix::sched::{CloneFlags, setns};
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an added address may take to be denied: warrend re-reads its addresses
/// every 10 s; the rest is slack for a loaded machine.
const REFRESH_DEADLINE: Duration = Duration::from_secs(40);

/// What these tests do with their namespace beyond creating it.
trait HostNetns {
    fn add_address(&self, addr: &str);
    fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T;
}

impl HostNetns for Netns {
    /// Adds `addr` (with prefix) to the namespace's loopback.
    fn add_address(&self, addr: &str) {
        let mut args = vec!["addr", "add", addr, "dev", "lo"];
        if addr.contains(':') {
            // Usable at once, without duplicate address detection.
            args.push("nodad");
        }
        self.ip(&args);
    }

    /// Runs `body` on a thread that entered the namespace: its sockets live there, and
    /// so do the processes it starts (warrend, ssh), which inherit the thread's
    /// namespace as `ip netns exec` would give them. A panic inside is re-raised here.
    fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|scope| {
            let inside = scope.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {path}: {e}"));
                body()
            });
            inside
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// An echo server on a wildcard address (`0.0.0.0:0` or `[::]:0`), like the services
/// the finding is about. Dropping it stops accepting and closes its connections.
struct WildcardEcho {
    port: u16,
    wake: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WildcardEcho {
    fn start(wildcard: &str, wake_ip: &str) -> WildcardEcho {
        let listener =
            TcpListener::bind(wildcard).unwrap_or_else(|e| panic!("bind {wildcard}: {e}"));
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut conns: Vec<(TcpStream, JoinHandle<()>)> = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let Ok(handle) = stream.try_clone() else {
                        continue;
                    };
                    conns.push((handle, thread::spawn(move || echo(stream))));
                }
                for (c, t) in conns {
                    let _ = c.shutdown(Shutdown::Both);
                    let _ = t.join();
                }
            })
        };
        WildcardEcho {
            port,
            wake: SocketAddr::new(wake_ip.parse().expect("literal"), port),
            stop,
            thread: Some(thread),
        }
    }
}

fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                let _ = s.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) if s.write_all(&buf[..n]).is_ok() => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return,
        }
    }
}

impl Drop for WildcardEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a real connection.
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a line through a local forward and returns what came back: the line for an
/// allowed channel, nothing for one warrend refused (ssh closes the connection).
fn through(forward: SocketAddr) -> Vec<u8> {
    let mut conn = connect_with_retry(forward, READY_TIMEOUT).expect("connect to the forward");
    conn.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let _ = conn.write_all(b"hello host\n");
    let _ = conn.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got); // EOF or reset, never a hang
    got
}

/// Is `v` the `channel_open` of `user` decided by `rule`?
fn open_by(v: &Value, user: &str, decision: &str, rule: &str) -> bool {
    is(
        v,
        "channel_open",
        &[("user", user), ("decision", decision), ("rule", rule)],
    )
}

#[test]
fn wide_rules_cannot_reach_the_hosts_own_addresses_but_explicit_ones_can() {
    let netns = Netns::create("warren-test");
    netns.add_address("10.213.7.1/32");
    netns.add_address("fd00:7::1/128");
    netns.run(|| {
        let echo4 = WildcardEcho::start("0.0.0.0:0", "127.0.0.1");
        let echo6 = WildcardEcho::start("[::]:0", "::1");
        let (p4, p6) = (echo4.port, echo6.port);
        let (alice, bob, carol) = (SshClient::new(), SshClient::new(), SshClient::new());
        let w = Warrend::start(&format!(
            "{}{}{}",
            user("alice", &[&alice], "connect = [\"*:*\"]"),
            user("bob", &[&bob], "connect = [\"0.0.0.0/0:*\", \"[::/0]:*\"]"),
            user(
                "carol",
                &[&carol],
                &format!("connect = [\"10.213.7.1:{p4}\", \"[fd00:7::1]:{p6}\"]"),
            ),
        ));
        trust_all(&w, &[&alice, &bob, &carol]);
        let v4 = format!("10.213.7.1:{p4}");
        let v6 = format!("[fd00:7::1]:{p6}");
        let targets = [Some(v4.as_str()), Some(v6.as_str())];

        for (client, name) in [(&alice, "alice"), (&bob, "bob")] {
            let (_ssh, fwd) = client.local_forwards(&w, name, &targets);
            for (forward, addr) in fwd.iter().zip(["10.213.7.1", "fd00:7::1"]) {
                let got = through(*forward);
                assert!(
                    got.is_empty(),
                    "{name} reached the host's own {addr} through a wide rule: {:?}",
                    String::from_utf8_lossy(&got)
                );
                let rule = format!("host address {addr} (default deny)");
                let d = w.wait_audit(&format!("{name} denied {addr}"), |v| {
                    open_by(v, name, "deny", &rule)
                });
                assert!(
                    s(&d, "reason").contains("is an address of this host"),
                    "{d}"
                );
            }
        }

        // Naming the address is deliberate: carol gets through, to both families.
        let (_ssh, fwd) = carol.local_forwards(&w, "carol", &targets);
        for (i, forward) in fwd.iter().enumerate() {
            assert_eq!(through(*forward), b"hello host\n");
            let rule = format!("users.carol.connect[{i}]");
            w.wait_audit(&format!("carol allowed by {rule}"), |v| {
                open_by(v, "carol", "allow", &rule)
            });
        }
    });
}

#[test]
fn addresses_added_after_start_are_denied_after_a_refresh_or_reload() {
    let netns = Netns::create("warren-test");
    netns.run(|| {
        let echo = WildcardEcho::start("0.0.0.0:0", "127.0.0.1");
        let alice = SshClient::new();
        let w = Warrend::start(&user("alice", &[&alice], "connect = [\"*:*\"]"));
        trust_all(&w, &[&alice]);
        let t2 = format!("10.213.7.2:{}", echo.port);
        let t3 = format!("10.213.7.3:{}", echo.port);
        let (_ssh, fwd) = alice.local_forwards(&w, "alice", &[Some(&t2), Some(&t3)]);

        // Added while warrend runs: the periodic refresh must pick it up. Until it
        // does, the address is just another destination `*:*` allows.
        netns.add_address("10.213.7.2/32");
        let rule = "host address 10.213.7.2 (default deny)";
        let deadline = Instant::now() + REFRESH_DEADLINE;
        let mut pause = Duration::from_millis(50);
        let mut attempts = 0;
        loop {
            let got = through(fwd[0]);
            attempts += 1;
            if got.is_empty() {
                // Refused, and it must be for being this host.
                w.wait_audit(rule, |v| open_by(v, "alice", "deny", rule));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "10.213.7.2 was still allowed after {attempts} attempts in {REFRESH_DEADLINE:?}:\n{}",
                w.proc().stderr_text()
            );
            // Paced polling, bounded by the deadline above.
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        assert!(through(fwd[0]).is_empty(), "denied once, then allowed again");

        // SIGHUP re-reads the addresses at once: no waiting for the timer.
        netns.add_address("10.213.7.3/32");
        w.reload();
        assert!(through(fwd[1]).is_empty(), "10.213.7.3 allowed after reload");
        w.wait_audit("the refusal of 10.213.7.3", |v| {
            open_by(v, "alice", "deny", "host address 10.213.7.3 (default deny)")
        });
    });
}
