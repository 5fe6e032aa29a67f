//! warrend against the real OpenSSH client (and curl, and warren): `-L`, `-R`, `-D`,
//! `-W`, `-J`, rendezvous between users, the refused shell, brute-force throttling, key
//! reloads, and every spelling of loopback a client might try to slip past the rules.
//! Each test runs its own warrend in its own temporary directory, on loopback and
//! ephemeral ports, and checks the audit log warrend writes on stdout.

mod common;

use common::warrend::*;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::{Command, Stdio};

const MIB: usize = 1024 * 1024;

/// The port in OpenSSH's (and warren's) "Allocated port N for remote forward to ..." line.
fn allocated_port(proc: &Proc, target: &str) -> u16 {
    let suffix = format!(" for remote forward to {target}");
    let line = proc
        .wait_for_stderr(
            |l| l.starts_with("Allocated port ") && l.ends_with(&suffix),
            READY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("no allocated port:\n{e}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"))
}

/// Sends `data` through `addr`, half-closes, and returns everything that came back.
fn round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    exchange(conn, data, IO_TIMEOUT).unwrap()
}

/// A connection through a forward that was refused: closed by ssh at once, no data.
fn refused_through(addr: SocketAddr) {
    let mut conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = conn.write_all(b"hello?");
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got); // EOF or reset, never a hang
    assert!(got.is_empty(), "a refused channel returned data: {got:?}");
}

/// Waits until `n` stderr lines of `proc` contain `needle`.
fn wait_stderr_count(proc: &Proc, needle: &str, n: usize) {
    // Each line is offered to the predicate once, in order.
    let seen = std::cell::Cell::new(0);
    let res = proc.wait_for_stderr(
        |l| {
            if l.contains(needle) {
                seen.set(seen.get() + 1);
            }
            seen.get() >= n
        },
        READY_TIMEOUT,
    );
    if let Err(e) = res {
        panic!(
            "expected {n} lines with {needle:?}, saw {}:\n{e}",
            seen.get()
        );
    }
}

/// The direct-tcpip `channel_open` records for `target`.
fn opens(w: &Warrend, target: &str) -> Vec<Value> {
    w.audit_matching(|v| is(v, "channel_open", &[("target", target)]))
}

#[test]
fn local_forward_to_allowed_target_carries_data_and_is_audited() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let sink = ReplyAfterEofServer::start();
    let ruled = EchoServer::start(); // allowed by a rule, but loopback is a denied network
    let unruled = EchoServer::start(); // no rule at all
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!(
            "connect = [\"127.0.0.1:{}\", \"127.0.0.1:{}\", \"*:{}\"]",
            echo.port(),
            sink.port(),
            ruled.port()
        ),
    ));
    trust_all(&w, &[&alice]);
    let echo_t = format!("127.0.0.1:{}", echo.port());
    let sink_t = format!("127.0.0.1:{}", sink.port());
    let ruled_t = format!("127.0.0.1:{}", ruled.port());
    let unruled_t = format!("127.0.0.1:{}", unruled.port());
    let (ssh, addrs) = alice.local_forwards(
        &w,
        "alice",
        &[
            Some(&echo_t),
            Some(&sink_t),
            Some(&ruled_t),
            Some(&unruled_t),
        ],
    );

    // Allowed: a few MiB each way, and an upload answered only after EOF.
    let data = pattern_bytes(4 * MIB, 11);
    let back = round_trip(addrs[0], &data);
    assert_eq!(back.len(), data.len());
    assert_eq!(
        sha256_hex(&back),
        sha256_hex(&data),
        "echo through -L differs"
    );
    let up = pattern_bytes(MIB + 123, 12);
    let reply = round_trip(addrs[1], &up);
    assert_eq!(String::from_utf8_lossy(&reply), sha256_hex(&up));

    let open = w.wait_audit("channel_open allow for the echo", |v| {
        is(
            v,
            "channel_open",
            &[("target", &echo_t), ("decision", "allow")],
        )
    });
    assert_eq!(s(&open, "kind"), "direct-tcpip", "{open}");
    assert_eq!(s(&open, "user"), "alice", "{open}");
    assert_eq!(s(&open, "rule"), "users.alice.connect[0]", "{open}");
    let close = w.wait_audit("channel_close of the echo", |v| {
        is(v, "channel_close", &[("target", &echo_t)])
    });
    assert_eq!(close["channel"], open["channel"], "{close}");
    assert_eq!(close["conn"], open["conn"], "{close}");
    assert_eq!(n(&close, "bytes_up"), data.len() as u64, "{close}");
    assert_eq!(n(&close, "bytes_down"), data.len() as u64, "{close}");
    // Directions told apart: the sink gets MiB+123 and answers 64 bytes.
    let close = w.wait_audit("channel_close of the sink", |v| {
        is(v, "channel_close", &[("target", &sink_t)])
    });
    assert_eq!(n(&close, "bytes_up"), up.len() as u64, "{close}");
    assert_eq!(n(&close, "bytes_down"), 64, "{close}");
    let open = &opens(&w, &sink_t)[0];
    assert_eq!(s(open, "rule"), "users.alice.connect[1]", "{open}");

    // Denied: a rule matches but 127.0.0.1 is in a deny network; and no rule at all.
    refused_through(addrs[2]);
    refused_through(addrs[3]);
    let deny = w.wait_audit("deny of the ruled target", |v| {
        is(
            v,
            "channel_open",
            &[("target", &ruled_t), ("decision", "deny")],
        )
    });
    // No deny_networks in the config: the built-in list decided.
    assert_eq!(
        s(&deny, "rule"),
        "default deny_networks 127.0.0.0/8",
        "{deny}"
    );
    assert!(
        s(&deny, "reason").contains("users.alice.connect[2]")
            && s(&deny, "reason").contains("127.0.0.0/8"),
        "{deny}"
    );
    let deny = w.wait_audit("deny of the unruled target", |v| {
        is(
            v,
            "channel_open",
            &[("target", &unruled_t), ("decision", "deny")],
        )
    });
    assert!(deny["rule"].is_null(), "nothing allowed it: {deny}");
    assert!(s(&deny, "reason").contains("no connect rule"), "{deny}");
    wait_stderr_count(&ssh, "open failed: administratively prohibited", 2);
    assert_eq!(ruled.connections(), 0);
    assert_eq!(unruled.connections(), 0);
    assert_eq!(opens(&w, &ruled_t).len(), 1);
    assert_eq!(opens(&w, &unruled_t).len(), 1);

    // The session survives the refusals.
    assert_eq!(round_trip(addrs[0], b"still here"), b"still here");
    assert!(ssh.try_wait().is_none(), "ssh must keep running");
}

#[test]
fn remote_forward_fixed_allocated_and_denied_ports() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let sink = ReplyAfterEofServer::start();
    let fixed = free_port();
    let denied = free_port();
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!("listen = [\"127.0.0.1:{fixed}\", \"127.0.0.1:0\"]"),
    ));
    trust_all(&w, &[&alice]);

    let mut cmd = alice.ssh_warrend(&w);
    cmd.args(["-v", "-N"])
        .arg("-R")
        .arg(format!("127.0.0.1:{fixed}:127.0.0.1:{}", echo.port()))
        .arg("-R")
        .arg(format!("127.0.0.1:0:127.0.0.1:{}", sink.port()))
        .arg(SshClient::dest("alice"));
    let ssh = Proc::spawn(cmd);
    let allocated = allocated_port(&ssh, &format!("127.0.0.1:{}", sink.port()));
    ssh.wait_for_stderr(
        |l| {
            l.contains(&format!(
                "remote forward success for: listen 127.0.0.1:{fixed},"
            ))
        },
        READY_TIMEOUT,
    )
    .unwrap();
    assert_ne!(allocated, 0);

    let data = pattern_bytes(2 * MIB, 21);
    let back = round_trip(loopback(fixed), &data);
    assert!(back == data, "echo through the fixed -R port differs");
    let reply = round_trip(loopback(allocated), &data);
    assert_eq!(String::from_utf8_lossy(&reply), sha256_hex(&data));

    let fixed_start = w.wait_audit("listen_start of the fixed port", |v| {
        is(v, "listen_start", &[("decision", "allow")]) && n(v, "port") == u64::from(fixed)
    });
    assert_eq!(
        s(&fixed_start, "rule"),
        "users.alice.listen[0]",
        "{fixed_start}"
    );
    assert_eq!(s(&fixed_start, "kind"), "tcpip-forward", "{fixed_start}");
    let alloc_start = w.wait_audit("listen_start of the allocated port", |v| {
        is(v, "listen_start", &[("decision", "allow")]) && n(v, "port") == u64::from(allocated)
    });
    assert_eq!(
        s(&alloc_start, "rule"),
        "users.alice.listen[1]",
        "{alloc_start}"
    );
    w.wait_audit("forwarded connection on the fixed port", |v| {
        is(v, "channel_close", &[("kind", "forwarded-tcpip")])
            && s(v, "target").starts_with(&format!("127.0.0.1:{fixed} from "))
    });

    // A port no listen rule allows: ssh gives up (ExitOnForwardFailure).
    let mut cmd = alice.ssh_warrend(&w);
    cmd.arg("-N")
        .arg("-R")
        .arg(format!("127.0.0.1:{denied}:127.0.0.1:{}", echo.port()))
        .arg(SshClient::dest("alice"));
    let refused = Proc::spawn(cmd);
    assert_eq!(exit_code(&refused, READY_TIMEOUT), Some(255));
    assert!(
        refused.stderr_text().contains(&format!(
            "remote port forwarding failed for listen port {denied}"
        )),
        "{}",
        refused.stderr_text()
    );
    let deny = w.wait_audit("listen_start deny", |v| {
        is(v, "listen_start", &[("decision", "deny")]) && n(v, "port") == u64::from(denied)
    });
    assert!(deny["rule"].is_null(), "{deny}");
    assert!(s(&deny, "reason").contains("no listen rule"), "{deny}");

    // The first session's forwards are untouched by the refusal.
    assert_eq!(round_trip(loopback(fixed), b"again"), b"again");
    assert!(ssh.try_wait().is_none());
}

/// `-R '*:P'` binds 0.0.0.0 and ::; the example config's rule pair (one rule per family)
/// must allow it together, and both families must then carry data.
#[test]
fn all_interfaces_remote_forward_is_allowed_by_a_rule_per_family() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let port = free_port();
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!(
            "listen = [\"0.0.0.0:{port}\", \"[::]:{port}\"]\ngateway_ports = \"clientspecified\""
        ),
    ));
    trust_all(&w, &[&alice]);
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args(["-v", "-N"])
        .arg("-R")
        .arg(format!("*:{port}:127.0.0.1:{}", echo.port()))
        .arg(SshClient::dest("alice"));
    let ssh = Proc::spawn(cmd);
    ssh.wait_for_stderr(
        |l| l.contains(&format!("remote forward success for: listen *:{port},")),
        READY_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", ssh.stderr_text()));
    let start = w.wait_audit("listen_start", |v| {
        is(v, "listen_start", &[("decision", "allow")]) && n(v, "port") == u64::from(port)
    });
    assert_eq!(
        s(&start, "rule"),
        "users.alice.listen[0] + users.alice.listen[1]",
        "{start}"
    );
    for addr in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ] {
        let data = pattern_bytes(256 * 1024, u64::from(port));
        assert!(round_trip(addr, &data) == data, "echo through {addr}");
    }
}

/// A one-page HTTP/1.0 server on loopback: answers every request with `body`.
fn http_server(body: &'static str) -> TcpServer {
    TcpServer::start(move |mut s| {
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let resp = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(resp.as_bytes());
        let _ = s.shutdown(Shutdown::Write);
    })
}

fn curl_via_socks(socks: SocketAddr, url: &str) -> std::process::Output {
    let mut cmd = Command::new("curl");
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(["-sS", "--max-time", "10", "--socks5-hostname"])
        .arg(socks.to_string())
        .arg(url)
        .stdin(Stdio::null());
    cmd.output().expect("run curl")
}

#[test]
fn dynamic_forward_serves_curl_and_refuses_denied_targets() {
    const BODY: &str = "hello from behind warrend\n";
    let alice = SshClient::new();
    let http = http_server(BODY);
    let other = http_server("must never be seen\n");
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!("connect = [\"127.0.0.1:{}\"]", http.port()),
    ));
    trust_all(&w, &[&alice]);
    let (ssh, addrs) = alice.local_forwards(&w, "alice", &[None]);

    let out = curl_via_socks(addrs[0], &format!("http://127.0.0.1:{}/", http.port()));
    assert!(
        out.status.success(),
        "curl failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ssh.stderr_text()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);
    let open = w.wait_audit("allow of the http server", |v| {
        is(
            v,
            "channel_open",
            &[
                ("target", &format!("127.0.0.1:{}", http.port())),
                ("decision", "allow"),
            ],
        )
    });
    assert_eq!(s(&open, "rule"), "users.alice.connect[0]", "{open}");

    let out = curl_via_socks(addrs[0], &format!("http://127.0.0.1:{}/", other.port()));
    assert!(
        !out.status.success(),
        "curl reached a denied target: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(other.connections(), 0);
    w.wait_audit("deny of the other server", |v| {
        is(
            v,
            "channel_open",
            &[
                ("target", &format!("127.0.0.1:{}", other.port())),
                ("decision", "deny"),
            ],
        )
    });
    ssh.wait_for_stderr(
        |l| l.contains("open failed: administratively prohibited"),
        READY_TIMEOUT,
    )
    .unwrap();
}

#[test]
fn stdio_forward_carries_half_close() {
    let alice = SshClient::new();
    let sink = ReplyAfterEofServer::start();
    let target = format!("127.0.0.1:{}", sink.port());
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!("connect = [\"{target}\"]"),
    ));
    trust_all(&w, &[&alice]);
    let data = pattern_bytes(3 * MIB, 31);

    let mut cmd = alice.ssh_warrend(&w);
    cmd.arg("-W").arg(&target).arg(SshClient::dest("alice"));
    let mut ssh = Proc::spawn_with_stdin(cmd);
    let mut stdin = ssh.take_stdin().unwrap();
    let payload = data.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&payload).unwrap();
        // Dropping stdin is the EOF that must reach the sink as a half-close.
    });
    let status = ssh.expect_exit(IO_TIMEOUT);
    writer.join().unwrap();
    assert!(status.success(), "{}", ssh.report("ssh -W failed"));
    assert_eq!(ssh.stdout_text().trim(), sha256_hex(&data));

    let close = w.wait_audit("channel_close of -W", |v| {
        is(v, "channel_close", &[("target", &target)])
    });
    assert_eq!(n(&close, "bytes_up"), data.len() as u64, "{close}");
    assert_eq!(n(&close, "bytes_down"), 64, "{close}");
}

#[test]
fn jump_through_warrend_to_a_real_sshd() {
    let alice = SshClient::new();
    let sshd = Sshd::start();
    sshd.authorize(&alice.key.public_line);
    let target = format!("127.0.0.1:{}", sshd.port());
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!("connect = [\"{target}\"]"),
    ));
    trust_all(&w, &[&alice]);
    alice.trust(&sshd.known_hosts_line());

    let mut cmd = alice.ssh();
    cmd.arg("-J")
        .arg(SshClient::jump(&w, "alice"))
        .arg("-p")
        .arg(sshd.port().to_string())
        .arg("root@127.0.0.1")
        .arg("echo jumped");
    let ssh = Proc::spawn(cmd);
    let status = ssh.expect_exit(IO_TIMEOUT);
    assert!(
        status.success(),
        "{}\n--- sshd ---\n{}",
        ssh.report("ssh -J failed"),
        sshd.logs()
    );
    assert_eq!(ssh.stdout_text().trim(), "jumped");
    let open = w.wait_audit("the jump's channel", |v| {
        is(
            v,
            "channel_open",
            &[("target", &target), ("decision", "allow")],
        )
    });
    assert_eq!(s(&open, "kind"), "direct-tcpip", "{open}");
    assert_eq!(s(&open, "rule"), "users.alice.connect[0]", "{open}");
    assert!(sshd.logs().contains("Accepted publickey for root"));
}

/// `ssh -N -R pi-home:22:127.0.0.1:<lan sshd>` as pi, once warrend confirmed the publish.
fn publish_pi_home(w: &Warrend, pi: &SshClient, lan: &Sshd, nth: usize) -> Proc {
    let mut cmd = pi.ssh_warrend(w);
    cmd.args(["-v", "-N"])
        .arg("-R")
        .arg(format!("pi-home:22:127.0.0.1:{}", lan.port()))
        .arg(SshClient::dest("pi"));
    let ssh = Proc::spawn(cmd);
    ssh.wait_for_stderr(
        |l| l.contains("remote forward success for: listen pi-home:22,"),
        READY_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("pi could not publish:\n{e}"));
    w.wait_audit_count("rendezvous-publish allowed", nth, |v| {
        is(
            v,
            "listen_start",
            &[
                ("kind", "rendezvous-publish"),
                ("decision", "allow"),
                ("rule", "users.pi.publish[0]"),
            ],
        )
    });
    ssh
}

/// `ssh -J <login>@warrend root@pi-home echo reached`, returning the finished ssh.
fn reach_pi_home(w: &Warrend, c: &SshClient, login: &str) -> Proc {
    let mut cmd = c.ssh();
    cmd.arg("-J")
        .arg(SshClient::jump(w, login))
        .arg("root@pi-home")
        .arg("echo reached");
    let ssh = Proc::spawn(cmd);
    ssh.expect_exit(IO_TIMEOUT);
    ssh
}

#[test]
fn rendezvous_reaches_the_published_sshd_and_follows_takeover() {
    let pi = SshClient::new();
    let bob = SshClient::new();
    let lan1 = Sshd::start();
    let lan2 = Sshd::start();
    for lan in [&lan1, &lan2] {
        lan.authorize(&bob.key.public_line);
        // Both boxes answer as pi-home (port 22 through the rendezvous).
        bob.trust(&format!("pi-home {}", lan.host_public_keys()[0]));
    }
    let w = Warrend::start(&format!(
        "{}{}",
        user("pi", &[&pi], "publish = [\"pi-home:22\"]"),
        user("bob", &[&bob], "reach = [\"pi-home:22\"]"),
    ));
    trust_all(&w, &[&pi, &bob]);

    let first = publish_pi_home(&w, &pi, &lan1, 1);
    let ssh = reach_pi_home(&w, &bob, "bob");
    assert!(
        ssh.try_wait().unwrap().success(),
        "{}\n--- lan1 ---\n{}\n--- pi ---\n{}",
        ssh.report("bob could not reach pi-home"),
        lan1.logs(),
        first.stderr_text()
    );
    assert_eq!(ssh.stdout_text().trim(), "reached");
    assert!(lan1.logs().contains("Accepted publickey for root"));
    let open = w.wait_audit("bob's rendezvous-reach", |v| {
        is(
            v,
            "channel_open",
            &[
                ("kind", "rendezvous-reach"),
                ("user", "bob"),
                ("decision", "allow"),
            ],
        )
    });
    assert_eq!(s(&open, "target"), "pi-home:22", "{open}");
    assert_eq!(s(&open, "rule"), "users.bob.reach[0]", "{open}");
    assert_eq!(
        open["resolved"],
        serde_json::json!(["rendezvous:pi"]),
        "{open}"
    );

    // pi reconnects (say, after a network change) while the old session still looks
    // alive: the new session takes the name over at once.
    let second = publish_pi_home(&w, &pi, &lan2, 2);
    let ssh = reach_pi_home(&w, &bob, "bob");
    assert!(
        ssh.try_wait().unwrap().success(),
        "{}\n--- lan2 ---\n{}",
        ssh.report("bob could not reach the new pi-home"),
        lan2.logs()
    );
    assert_eq!(ssh.stdout_text().trim(), "reached");
    assert!(
        lan2.logs().contains("Accepted publickey for root"),
        "the new publisher must serve pi-home:\n{}",
        lan2.logs()
    );
    assert_eq!(
        lan1.logs().matches("Accepted publickey for root").count(),
        1,
        "the old publisher must not serve pi-home any more"
    );

    // The old session going away must not unregister the name it lost.
    first.kill();
    w.wait_audit("the old session's end", |v| {
        is(v, "session_end", &[("user", "pi")])
    });
    let ssh = reach_pi_home(&w, &bob, "bob");
    assert!(
        ssh.try_wait().unwrap().success(),
        "{}",
        ssh.report("pi-home lost with the old session")
    );
    assert_eq!(
        lan2.logs().matches("Accepted publickey for root").count(),
        2
    );
    drop(second);
}

#[test]
fn rendezvous_is_denied_to_a_user_without_a_reach_rule() {
    let pi = SshClient::new();
    let eve = SshClient::new();
    let lan = Sshd::start();
    lan.authorize(&eve.key.public_line);
    eve.trust(&format!("pi-home {}", lan.host_public_keys()[0]));
    let w = Warrend::start(&format!(
        "{}{}",
        user("pi", &[&pi], "publish = [\"pi-home:22\"]"),
        user("eve", &[&eve], ""),
    ));
    trust_all(&w, &[&pi, &eve]);
    let _pi = publish_pi_home(&w, &pi, &lan, 1);

    let ssh = reach_pi_home(&w, &eve, "eve");
    assert_eq!(ssh.try_wait().unwrap().code(), Some(255));
    assert!(!ssh.stdout_text().contains("reached"));
    assert!(!lan.logs().contains("Accepted publickey"));
    let deny = w.wait_audit("eve's denied channel", |v| {
        is(v, "channel_open", &[("user", "eve")])
    });
    assert_eq!(s(&deny, "decision"), "deny", "{deny}");
    assert!(deny["rule"].is_null(), "no rule may be named: {deny}");
    assert!(
        ssh.stderr_text()
            .contains("open failed: administratively prohibited"),
        "{}\naudit: {deny}",
        ssh.stderr_text()
    );
}

#[test]
fn shell_and_commands_are_refused_with_the_message() {
    let alice = SshClient::new();
    let w = Warrend::start(&user("alice", &[&alice], ""));
    trust_all(&w, &[&alice]);
    for command in [Some("echo hi"), None] {
        let mut cmd = alice.ssh_warrend(&w);
        cmd.arg(SshClient::dest("alice"));
        if let Some(c) = command {
            cmd.arg(c);
        }
        let ssh = Proc::spawn(cmd);
        assert_eq!(
            exit_code(&ssh, READY_TIMEOUT),
            Some(1),
            "{}",
            ssh.stderr_text()
        );
        assert!(
            ssh.stderr_text().contains(NO_SHELL),
            "{}",
            ssh.stderr_text()
        );
        assert!(!ssh.stdout_text().contains("hi"));
    }
    let exec = w.wait_audit("the refused exec", |v| {
        is(
            v,
            "channel_open",
            &[("kind", "session"), ("target", "exec (7 bytes)")],
        )
    });
    assert_eq!(s(&exec, "decision"), "deny", "{exec}");
    w.wait_audit("the refused shell", |v| {
        is(
            v,
            "channel_open",
            &[
                ("kind", "session"),
                ("target", "shell"),
                ("decision", "deny"),
            ],
        )
    });
}

#[test]
fn failed_logins_throttle_the_source() {
    let alice = SshClient::new();
    let guesser = SshClient::new(); // a key warrend does not know
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[
            ("max_failed_auth_per_source", "3"),
            ("failed_auth_window", "\"10m\""),
        ],
    );
    trust_all(&w, &[&alice, &guesser]);
    assert!(
        can_log_in(&w, &alice, "alice"),
        "the real key works at first"
    );

    for i in 1..=3 {
        assert!(!can_log_in(&w, &guesser, "alice"), "guess {i} got in");
        // The failure is counted when the connection ends.
        w.wait_audit_count("failed connection ended", i, |v| {
            is(
                v,
                "session_end",
                &[("reason", "closed before authentication")],
            )
        });
    }
    assert!(
        w.audit_matching(|v| is(v, "throttled", &[])).is_empty(),
        "three failures are still within the limit"
    );

    // Now even the right key is turned away, before any SSH is spoken.
    let mut cmd = alice.ssh_warrend(&w);
    cmd.arg(SshClient::dest("alice")).arg("true");
    let ssh = Proc::spawn(cmd);
    assert_eq!(exit_code(&ssh, READY_TIMEOUT), Some(255));
    assert!(
        !ssh.stderr_text().contains(NO_SHELL),
        "{}",
        ssh.stderr_text()
    );
    let t = w.wait_audit("throttled", |v| is(v, "throttled", &[]));
    assert!(s(&t, "source").starts_with("127.0.0.1:"), "{t}");
    assert!(s(&t, "reason").contains("failed logins"), "{t}");
    assert!(!can_log_in(&w, &alice, "alice"));
    // The refusal's record is written in the background; wait for it, then count.
    w.wait_audit_count("both refusals", 2, |v| is(v, "throttled", &[]));
    assert_eq!(w.audit_matching(|v| is(v, "throttled", &[])).len(), 2);
    assert_eq!(
        w.audit_matching(|v| is(v, "auth_success", &[])).len(),
        1,
        "only the first login succeeded"
    );
}

#[test]
fn authorized_keys_file_and_sighup_reload_end_sessions_of_removed_keys() {
    let a = SshClient::new();
    let b = SshClient::new();
    let c = SshClient::new();
    let echo = EchoServer::start();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_file = keys_dir.path().join("alice_authorized_keys");
    std::fs::write(&keys_file, "").unwrap();
    let rules = format!(
        "authorized_keys = {}\nconnect = [\"127.0.0.1:{}\"]",
        toml_str(&keys_file),
        echo.port()
    );
    let w = Warrend::start(&user("alice", &[&a], &rules));
    trust_all(&w, &[&a, &b, &c]);

    // A session with key A, and a connection through it that stays open.
    let target = format!("127.0.0.1:{}", echo.port());
    let (session, addrs) = a.local_forwards(&w, "alice", &[Some(&target)]);
    let mut live = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
    live.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0u8; 6];
    live.write_all(b"before").unwrap();
    live.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"before");

    assert!(!can_log_in(&w, &b, "alice"));
    assert!(!can_log_in(&w, &c, "alice"));

    // The authorized_keys file is read at each login: no reload needed.
    std::fs::write(&keys_file, format!("{}\n", c.key.public_line)).unwrap();
    assert!(can_log_in(&w, &c, "alice"));
    let ok = w.wait_audit("C's login", |v| {
        is(v, "auth_success", &[("key_fp", &c.key.fingerprint())])
    });
    assert!(
        s(&ok, "key_source").starts_with(&keys_file.display().to_string()),
        "{ok}"
    );

    // Inline keys need SIGHUP. Add B and drop A at the same time.
    assert!(!can_log_in(&w, &b, "alice"), "B must wait for the reload");
    w.rewrite_users(&user("alice", &[&b], &rules));
    w.reload();
    assert!(can_log_in(&w, &b, "alice"));
    assert!(!can_log_in(&w, &a, "alice"), "A was removed");
    assert!(can_log_in(&w, &c, "alice"), "the file still counts");

    // A's session from before the reload ends with it: removing a key is how an
    // operator locks someone out (sshd would let it run on). Its record says why.
    session.expect_exit(READY_TIMEOUT);
    let end = w.wait_audit("A's revoked session", |v| {
        is(v, "session_end", &[("user", "alice")])
            && s(v, "reason").contains("no longer authorized")
    });
    assert!(s(&end, "reason").contains(&a.key.fingerprint()), "{end}");
    let mut rest = Vec::new();
    let _ = live.read_to_end(&mut rest);
    let _ = addrs;
}

#[test]
fn sighup_reload_is_recorded_in_the_audit_log() {
    let a = SshClient::new();
    let b = SshClient::new();
    let w = Warrend::start(&user("alice", &[&a], ""));
    trust_all(&w, &[&a, &b]);
    // A login first, so that warrend is surely past installing its signal handlers
    // (see sighup_right_after_startup_reloads_instead_of_killing).
    assert!(can_log_in(&w, &a, "alice"));
    w.rewrite_users(&user("alice", &[&a, &b], ""));
    w.reload();
    assert!(can_log_in(&w, &b, "alice"));
    // Who may reach what just changed: the audit log must say so
    // (AuditEvent::ConfigReload: "changes to who may reach what are themselves
    // audit-worthy").
    let ev = w.wait_audit("config_reload ok", |v| is(v, "config_reload", &[]));
    assert_eq!(ev["ok"], Value::Bool(true), "{ev}");
    assert_eq!(
        s(&ev, "path"),
        w.config_path().display().to_string(),
        "{ev}"
    );
}

#[test]
fn sighup_right_after_startup_reloads_instead_of_killing() {
    let a = SshClient::new();
    // "listening on" is the readiness line: from then on SIGHUP must mean reload
    // (systemd's ExecReload may send it at any time after start). The window, if
    // there is one, is short, so try a few fresh servers.
    for round in 0..8 {
        let w = Warrend::start(&user("alice", &[&a], ""));
        w.rewrite_users(&user("alice", &[&a], "connect = [\"10.0.0.0/8:*\"]"));
        w.proc().signal(libc::SIGHUP);
        let line = w.proc().wait_for_stderr(
            |l| l.contains("configuration reloaded") || l.contains("reload failed"),
            READY_TIMEOUT,
        );
        assert!(
            line.is_ok() && w.proc().try_wait().is_none(),
            "round {round}: SIGHUP right after the listening line killed warrend: {}",
            w.proc().report("")
        );
        assert!(line.unwrap().contains("configuration reloaded"));
    }
}

#[test]
fn every_spelling_of_loopback_is_denied() {
    let alice = SshClient::new(); // narrow rules that never name loopback
    let mallory = SshClient::new(); // rules wide enough to contain loopback
    let echo = EchoServer::start();
    let p = echo.port();
    let w = Warrend::start(&format!(
        "{}{}",
        user(
            "alice",
            &[&alice],
            &format!(
                "connect = [\"10.0.0.0/8:*\", \"db.internal:5432\", \"*.internal:{p}\", \"[fd00::/8]:*\"]"
            )
        ),
        user(
            "mallory",
            &[&mallory],
            &format!("connect = [\"*:{p}\", \"0.0.0.0/0:{p}\", \"[::/0]:{p}\"]")
        ),
    ));
    trust_all(&w, &[&alice, &mallory]);
    // (as given to ssh -W, as ssh sends it)
    let spellings: &[(&str, &str)] = &[
        ("localhost", "localhost"),
        ("LocalHost", "LocalHost"),
        ("127.1", "127.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1."),
        ("0177.0.0.1", "0177.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("0", "0"),
        ("0.0.0.0", "0.0.0.0"),
        ("2130706433", "2130706433"),
        ("0x7f000001", "0x7f000001"),
        ("017700000001", "017700000001"),
        ("[::1]", "::1"),
        ("[::]", "::"),
    ];
    let mut attempts = Vec::new();
    for (login, client) in [("alice", &alice), ("mallory", &mallory)] {
        for (given, sent) in spellings {
            let mut cmd = client.ssh_warrend(&w);
            cmd.arg("-W")
                .arg(format!("{given}:{p}"))
                .arg(SshClient::dest(login));
            attempts.push((login, *given, *sent, Proc::spawn(cmd)));
        }
    }
    for (login, given, _, ssh) in &attempts {
        let code = exit_code(ssh, IO_TIMEOUT);
        assert_eq!(
            code,
            Some(255),
            "{login} -W {given}:{p}: {}",
            ssh.stderr_text()
        );
        assert!(
            ssh.stderr_text()
                .contains("open failed: administratively prohibited"),
            "{login} -W {given}:{p}: {}",
            ssh.stderr_text()
        );
    }
    for (login, given, sent, _) in &attempts {
        // The audit writes IPv6 literals in brackets, so the port stands apart.
        let target = if sent.contains(':') {
            format!("[{sent}]:{p}")
        } else {
            format!("{sent}:{p}")
        };
        let recs = w.wait_audit(&format!("{login}'s deny of {given}"), |v| {
            is(v, "channel_open", &[("user", *login), ("target", &target)])
        });
        assert_eq!(s(&recs, "decision"), "deny", "{login} {given}: {recs}");
        let all =
            w.audit_matching(|v| is(v, "channel_open", &[("user", *login), ("target", &target)]));
        assert_eq!(all.len(), 1, "one record per attempt: {all:?}");
    }
    assert!(
        w.audit_matching(|v| is(v, "channel_open", &[("decision", "allow")]))
            .is_empty()
    );
    // Mallory's wide rules matched, so the deny names the deny network that stopped them.
    let mallory_denies = w.audit_matching(|v| {
        is(
            v,
            "channel_open",
            &[("user", "mallory"), ("decision", "deny")],
        )
    });
    for d in &mallory_denies {
        assert!(s(d, "rule").starts_with("default deny_networks "), "{d}");
    }
    assert_eq!(echo.connections(), 0, "something reached the echo server");
}

#[test]
fn warren_forwards_through_warrend() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let sink = ReplyAfterEofServer::start();
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!(
            "connect = [\"127.0.0.1:{}\"]\nlisten = [\"localhost:0\"]",
            echo.port()
        ),
    ));
    trust_all(&w, &[&alice]);

    let mut cmd = alice.warren(&w);
    cmd.arg("-L")
        .arg(format!("127.0.0.1:0:127.0.0.1:{}", echo.port()))
        .arg("-R")
        .arg(format!("0:127.0.0.1:{}", sink.port()))
        .arg("alice@127.0.0.1");
    let warren = Proc::spawn(cmd);
    warren
        .wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("warren not ready:\n{e}\n{}", w.proc().stderr_text()));
    let line = warren
        .wait_for_stderr(|l| l.contains("forward ready: -L"), READY_TIMEOUT)
        .unwrap();
    let local = forward_addr(&line).expect("a TCP listener");
    let allocated = allocated_port(&warren, &format!("127.0.0.1:{}", sink.port()));

    let data = pattern_bytes(2 * MIB, 51);
    assert!(
        round_trip(local, &data) == data,
        "echo through warren -L differs"
    );
    let reply = round_trip(loopback(allocated), &data);
    assert_eq!(String::from_utf8_lossy(&reply), sha256_hex(&data));

    w.wait_audit("warren's -L channel", |v| {
        is(
            v,
            "channel_close",
            &[("target", &format!("127.0.0.1:{}", echo.port()))],
        ) && n(v, "bytes_up") == data.len() as u64
    });
    let listen = w.wait_audit("warren's -R", |v| {
        is(v, "listen_start", &[("decision", "allow")]) && n(v, "port") == u64::from(allocated)
    });
    assert_eq!(s(&listen, "rule"), "users.alice.listen[0]", "{listen}");
}

/// A target that stops reading must not stall the other channels of the same SSH session
/// (warrend's side of the slow-reader problem: russh would block its whole session loop,
/// shared/notes/russh.md §4.5), and gets every byte once it reads again.
#[test]
fn a_target_that_stops_reading_does_not_stall_the_session_and_loses_nothing() {
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    // The stalled target: accepts, waits for the go, then reads everything and reports.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = listener.local_addr().unwrap().port();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = go_rx.recv();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let _ = done_tx.send(all);
    });
    let echo = EchoServer::start();
    let alice = SshClient::new();
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!(
            "connect = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
            sink_port,
            echo.port()
        ),
    ));
    trust_all(&w, &[&alice]);
    let sink_t = format!("127.0.0.1:{sink_port}");
    let echo_t = format!("127.0.0.1:{}", echo.port());
    let (ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&sink_t), Some(&echo_t)]);

    // Far more than the target's socket buffers and one SSH window hold.
    let data = pattern_bytes(48 * MIB, 21);
    let expected = sha256_hex(&data);
    let mut up = connect_with_retry(addrs[0], READY_TIMEOUT).unwrap();
    let writer = std::thread::spawn(move || {
        up.write_all(&data).unwrap();
        up.shutdown(Shutdown::Write).unwrap();
        up
    });

    // Meanwhile the other channel keeps answering, for several seconds.
    let mut echo_conn = connect_with_retry(addrs[1], READY_TIMEOUT).unwrap();
    echo_conn
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let window = Instant::now();
    let (mut worst, mut rounds) = (Duration::ZERO, 0);
    while window.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        echo_conn.write_all(b"!").unwrap();
        let mut b = [0u8; 1];
        echo_conn
            .read_exact(&mut b)
            .expect("echo answered while the target stalls");
        worst = worst.max(t.elapsed());
        rounds += 1;
    }
    assert!(
        worst < Duration::from_secs(1),
        "an echo took {worst:?} while a target stalled"
    );
    assert!(rounds > 100, "only {rounds} round trips");

    // The target reads again: every byte, in order.
    go_tx.send(()).unwrap();
    let got = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the target got its data");
    assert_eq!(got.len(), 48 * MIB);
    assert_eq!(sha256_hex(&got), expected);
    drop(writer.join().unwrap());
    assert!(ssh.try_wait().is_none(), "the session survived");
}

/// A P-256 host key from ssh-keygen whose private scalar is a 31-byte mpint (about one in
/// 512 is): ssh-key alone refuses to load it. warrend must serve with it, and OpenSSH must
/// accept its signatures against the `.pub` file.
#[test]
fn an_ecdsa_host_key_whose_scalar_is_short_serves_openssh() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/ssh/src/openssh_key/testdata");
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("ssh_host_ecdsa_key");
    std::fs::copy(data.join("p256_short_scalar"), &key).unwrap();
    std::fs::copy(
        data.join("p256_short_scalar.pub"),
        keys.path().join("ssh_host_ecdsa_key.pub"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let alice = SshClient::new();
    let w = Warrend::start_with_server(
        &user("alice", &[&alice], ""),
        &[],
        &[("host_keys", &format!("[{}]", toml_str(&key)))],
    );
    assert!(
        w.host_key().starts_with("ecdsa-sha2-nistp256 "),
        "{}",
        w.host_key()
    );
    trust_all(&w, &[&alice]);
    assert!(can_log_in(&w, &alice, "alice"));
}
