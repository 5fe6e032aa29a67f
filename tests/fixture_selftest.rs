//! Proves the shared fixture (`tests/common`) with the real OpenSSH client:
//! if these pass, a failing warren test points at warren, not at the fixture.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use common::*;

/// What `ssh -v` (OpenSSH 9.2) prints once a `-L` listener is bound, which
/// happens only after authentication succeeded.
fn local_forward_ready(port: u16) -> String {
    format!("debug1: Local forwarding listening on 127.0.0.1 port {port}.")
}

/// A client set up to trust `sshd` and authorized with a fresh key.
struct Client {
    home: ClientHome,
    key: UserKey,
}

fn client_for(sshd: &Sshd) -> Client {
    let home = ClientHome::new();
    let key = UserKey::generate(home.ssh_dir(), "ed25519", None);
    sshd.authorize(&key.public_line);
    sshd.write_known_hosts(home.known_hosts());
    Client { home, key }
}

/// Starts `ssh -v -N -o ExitOnForwardFailure=yes -i key -L ...` for each
/// (listen port, target) pair and waits until every listener is up.
fn ssh_forward(sshd: &Sshd, c: &Client, forwards: &[(u16, SocketAddr)]) -> Proc {
    let mut cmd = openssh_client(&c.home, sshd);
    cmd.args(["-v", "-N", "-o", "ExitOnForwardFailure=yes", "-i"])
        .arg(&c.key.private);
    for (listen, target) in forwards {
        cmd.arg("-L").arg(format!(
            "127.0.0.1:{listen}:{}:{}",
            target.ip(),
            target.port()
        ));
    }
    cmd.arg("root@127.0.0.1");
    let ssh = Proc::spawn(cmd);
    for (listen, _) in forwards {
        let ready = local_forward_ready(*listen);
        if let Err(e) = ssh.wait_for_stderr(|l| l == ready, READY_TIMEOUT) {
            panic!("ssh forward not ready:\n{e}\n--- sshd ---\n{}", sshd.logs());
        }
    }
    ssh
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn local_forward_carries_8_mib_echo_half_close_and_download() {
    let sshd = Sshd::start();
    let c = client_for(&sshd);
    let echo = EchoServer::start();
    let reply = ReplyAfterEofServer::start();
    let source = SourceServer::start(3 * 1024 * 1024 + 17);
    let (p_echo, p_reply, p_source) = (free_port(), free_port(), free_port());
    let ssh = ssh_forward(
        &sshd,
        &c,
        &[
            (p_echo, echo.addr()),
            (p_reply, reply.addr()),
            (p_source, source.addr()),
        ],
    );

    // The server really authenticated our key.
    let accepted = sshd
        .wait_for_log(
            |l| l.starts_with("Accepted publickey for root"),
            READY_TIMEOUT,
        )
        .unwrap();
    assert!(accepted.contains(&c.key.fingerprint()), "{accepted}");

    // 8 MiB both ways through the echo; the echo's EOF comes back after ours.
    let data = pattern_bytes(8 * 1024 * 1024, 1);
    let stream = connect_with_retry(local(p_echo), READY_TIMEOUT).unwrap();
    let back = exchange(stream, &data, IO_TIMEOUT).unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    assert_eq!(echo.connections(), 1);

    // Half-close: our EOF reaches the server, its reply still comes back.
    let payload = pattern_bytes(100_000, 2);
    let mut s = connect_with_retry(local(p_reply), READY_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, sha256_hex(&payload));

    // Download: the server's close ends our read with the full payload.
    let s = connect_with_retry(local(p_source), READY_TIMEOUT).unwrap();
    let got = exchange(s, &[], IO_TIMEOUT).unwrap();
    assert_eq!(got.len(), source.len());
    assert_eq!(sha256_hex(&got), source.expected_sha256());

    assert!(ssh.try_wait().is_none(), "{}", ssh.report("ssh exited"));
}

#[test]
fn agent_auth_with_encrypted_key_held_only_by_agent() {
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    // Encrypted and not given to ssh: with BatchMode only the agent can sign.
    let key = UserKey::generate(home.ssh_dir(), "ecdsa", Some("correct horse"));
    sshd.authorize(&key.public_line);
    let agent = Agent::start();
    agent.add(&key);
    assert_eq!(agent.list().len(), 1);

    let echo = EchoServer::start();
    let port = free_port();
    let mut cmd = openssh_client(&home, &sshd);
    cmd.args(["-v", "-N", "-o", "ExitOnForwardFailure=yes"])
        .args(["-o", "IdentitiesOnly=no"])
        .arg("-o")
        .arg(format!("IdentityAgent={}", agent.socket().display()))
        .arg("-L")
        .arg(format!("127.0.0.1:{port}:{}", echo.addr()))
        .arg("root@127.0.0.1");
    let ssh = Proc::spawn(cmd);
    let ready = local_forward_ready(port);
    ssh.wait_for_stderr(|l| l == ready, READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n--- sshd ---\n{}", sshd.logs()));
    let fp = key.fingerprint();
    ssh.wait_for_stderr(
        |l| {
            l.starts_with("debug1: Server accepts key:") && l.contains(&fp) && l.ends_with(" agent")
        },
        READY_TIMEOUT,
    )
    .unwrap();
    let accepted = sshd
        .wait_for_log(
            |l| l.starts_with("Accepted publickey for root"),
            READY_TIMEOUT,
        )
        .unwrap();
    assert!(accepted.contains(&fp), "{accepted}");

    let s = connect_with_retry(local(port), READY_TIMEOUT).unwrap();
    assert_eq!(exchange(s, b"via agent", IO_TIMEOUT).unwrap(), b"via agent");
}

#[test]
fn wrong_known_hosts_is_rejected() {
    let sshd = Sshd::start();
    let c = client_for(&sshd);
    // Same name, a different key: must be a hard failure, not a prompt.
    let impostor = Sshd::start();
    let line = format!(
        "[127.0.0.1]:{} {}\n",
        sshd.port(),
        impostor.host_public_keys()[0]
    );
    std::fs::write(c.home.known_hosts(), line).unwrap();

    let mut cmd = openssh_client(&c.home, &sshd);
    cmd.args(["-N", "-i"])
        .arg(&c.key.private)
        .arg("root@127.0.0.1");
    let ssh = Proc::spawn(cmd);
    let status = ssh.expect_exit(READY_TIMEOUT);
    assert!(!status.success());
    let err = ssh.stderr_text();
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    assert!(err.contains("Host key verification failed."), "{err}");
    assert!(
        !sshd.logs().contains("Accepted publickey"),
        "{}",
        sshd.logs()
    );
}

#[test]
fn unauthorized_key_is_rejected() {
    let sshd = Sshd::start();
    let c = client_for(&sshd);
    let stranger = UserKey::generate(c.home.ssh_dir(), "ed25519", None);
    let mut cmd = openssh_client(&c.home, &sshd);
    cmd.args(["-N", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&stranger.private)
        .arg("root@127.0.0.1");
    let ssh = Proc::spawn(cmd);
    assert!(!ssh.expect_exit(READY_TIMEOUT).success());
    assert!(
        ssh.stderr_text().contains("Permission denied (publickey)"),
        "{}",
        ssh.stderr_text()
    );
}

#[test]
fn rsa_and_ecdsa_host_keys_extra_config_and_reconnect() {
    let mut sshd = Sshd::start_with(SshdOptions {
        host_key_types: vec!["ed25519", "rsa", "ecdsa"],
        // Overrides the fixture's own "AllowTcpForwarding yes".
        extra_config: vec!["AllowTcpForwarding local".into(), "MaxSessions 3".into()],
    });
    assert_eq!(sshd.known_hosts_lines().len(), 3);
    let c = client_for(&sshd);

    // Pin the RSA host key so the known_hosts entry for it is the one used.
    let echo = EchoServer::start();
    let port = free_port();
    let mut cmd = openssh_client(&c.home, &sshd);
    cmd.args(["-v", "-N", "-o", "ExitOnForwardFailure=yes"])
        .args(["-o", "HostKeyAlgorithms=rsa-sha2-512", "-i"])
        .arg(&c.key.private)
        .arg("-L")
        .arg(format!("127.0.0.1:{port}:{}", echo.addr()))
        .arg("root@127.0.0.1");
    let ssh = Proc::spawn(cmd);
    let ready = local_forward_ready(port);
    ssh.wait_for_stderr(|l| l == ready, READY_TIMEOUT).unwrap();
    ssh.wait_for_stderr(
        |l| l.contains("is known and matches the RSA host key"),
        READY_TIMEOUT,
    )
    .unwrap();

    // Remote forwarding was disabled by extra_config: the server refuses it.
    let mut cmd = openssh_client(&c.home, &sshd);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-i"])
        .arg(&c.key.private)
        .arg("-R")
        .arg(format!("127.0.0.1:0:{}", echo.addr()))
        .arg("root@127.0.0.1");
    let refused = Proc::spawn(cmd);
    assert!(!refused.expect_exit(READY_TIMEOUT).success());
    assert!(
        refused
            .stderr_text()
            .contains("remote port forwarding failed"),
        "{}",
        refused.stderr_text()
    );

    // Cutting connections ends the client's session but keeps the listener.
    assert!(sshd.drop_connections() > 0);
    assert!(!ssh.expect_exit(READY_TIMEOUT).success());
    assert!(sshd.is_running());

    // A restart keeps port and host keys: the same known_hosts still works.
    let old_pid = sshd.pid();
    sshd.restart();
    assert_ne!(sshd.pid(), old_pid);
    let ssh2 = ssh_forward(&sshd, &c, &[(free_port(), echo.addr())]);
    assert!(ssh2.try_wait().is_none());
    assert!(sshd.logs().contains("=== sshd stopped ==="));
}

#[test]
fn proc_captures_output_signals_and_exit() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo out; echo err >&2; echo ready >&2; exec cat"]);
    let mut p = Proc::spawn_with_stdin(cmd);
    p.wait_for_stderr(|l| l == "ready", READY_TIMEOUT).unwrap();
    assert_eq!(
        p.wait_for_stdout(|l| l == "out", READY_TIMEOUT).unwrap(),
        "out"
    );
    assert_eq!(p.stderr_lines(), vec!["err", "ready"]);
    let n = p.stderr_line_count();
    let err = p
        .wait_for_stderr_from(n, |l| l == "err", Duration::from_millis(50))
        .unwrap_err();
    assert!(
        err.contains("timed out") && err.contains("still running"),
        "{err}"
    );
    let mut stdin = p.take_stdin().unwrap();
    writeln!(stdin, "echoed").unwrap();
    p.wait_for_stdout(|l| l == "echoed", READY_TIMEOUT).unwrap();
    p.signal(libc::SIGTERM);
    let status = p.expect_exit(READY_TIMEOUT);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    drop(stdin);
    let err = p
        .wait_for_stderr(|l| l == "never", READY_TIMEOUT)
        .unwrap_err();
    assert!(
        err.contains("closed without a matching line") && err.contains("exited"),
        "{err}"
    );
}
