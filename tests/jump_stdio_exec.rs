//! Chains and pipes through real sshds: `-J` over two hops with `-L` through it, `-W` as
//! OpenSSH's ProxyCommand and as a pipe with half-close, warren's own ProxyCommand, and
//! remote commands with their output and exit status.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

fn jump_spec(hops: &[&Sshd]) -> String {
    hops.iter()
        .map(|s| format!("root@127.0.0.1:{}", s.port()))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn two_hop_jump_chain_carries_a_local_forward() {
    let (a, b, target) = (Sshd::start(), Sshd::start(), Sshd::start());
    let user = warren_user_for(&[&a, &b, &target]);
    let echo = EchoServer::start();
    let mut cmd = warren_client(&user.home, &target);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["-J", &jump_spec(&[&a, &b])])
        .args(["-L", &format!("127.0.0.1:0:127.0.0.1:{}", echo.port())])
        .arg("root@127.0.0.1");
    let warren = Proc::spawn(cmd);
    warren
        .wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = forward_addrs(&warren, "-L").into_iter().next().unwrap();
    let data = pattern_bytes(2 * 1024 * 1024, 11);
    let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    assert!(exchange(conn, &data, IO_TIMEOUT).unwrap() == data);
    // Each hop authenticated on its own.
    for s in [&a, &b, &target] {
        assert_eq!(
            s.logs().matches("Accepted publickey").count(),
            1,
            "{}",
            s.logs()
        );
    }
    // The forward's channel was opened by the last hop, not by a jump host.
    assert!(target.logs().contains("direct-tcpip") || target.logs().contains("Accepted publickey"));
}

#[test]
fn each_jump_hop_has_its_own_host_key_check() {
    let (a, target) = (Sshd::start(), Sshd::start());
    let user = warren_user_for(&[&target]); // the jump host's key is not known
    let mut cmd = warren_client(&user.home, &target);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["-J", &jump_spec(&[&a])])
        .arg("root@127.0.0.1");
    a.authorize(&user.key.public_line);
    let warren = Proc::spawn(cmd);
    let status = warren.expect_exit(READY_TIMEOUT);
    let err = warren.stderr_text();
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("[127.0.0.1]:{}", a.port())),
        "names the hop: {err}"
    );
}

#[test]
fn openssh_uses_warren_dash_w_as_its_proxy_command() {
    let (bastion, inner) = (Sshd::start(), Sshd::start());
    let user = warren_user_for(&[&bastion, &inner]);
    let proxy = format!(
        "ProxyCommand={} -q -o BatchMode=yes -o GlobalKnownHostsFile=/dev/null -i {} -p {} -W %h:%p root@127.0.0.1",
        warren_bin().display(),
        user.key.private.display(),
        bastion.port()
    );
    let mut ssh = openssh_client(&user.home, &inner);
    ssh.arg("-o")
        .arg(proxy)
        .arg("-i")
        .arg(&user.key.private)
        .args(["root@127.0.0.1", "echo via-warren"]);
    let out = ssh.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n--- bastion ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        bastion.logs()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "via-warren");
}

#[test]
fn dash_w_pipes_stdin_and_stdout_with_half_close() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let sink = ReplyAfterEofServer::start();
    let data = pattern_bytes(3 * 1024 * 1024, 5);
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-q")
        .arg("-i")
        .arg(&user.key.private)
        .args([
            "-W",
            &format!("127.0.0.1:{}", sink.port()),
            "root@127.0.0.1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let payload = data.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&payload).unwrap(); // then EOF by drop
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), sha256_hex(&data));
}

#[test]
fn proxy_command_carries_the_connection() {
    let (bastion, inner) = (Sshd::start(), Sshd::start());
    let user = warren_user_for(&[&bastion, &inner]);
    // OpenSSH's own ssh -W as warren's transport.
    let proxy = format!(
        "ProxyCommand=ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -i {} -p {} -W %h:%p root@127.0.0.1",
        user.home.known_hosts().display(),
        user.key.private.display(),
        bastion.port()
    );
    let mut cmd = warren_client(&user.home, &inner);
    cmd.arg("-i")
        .arg(&user.key.private)
        .arg("-o")
        .arg(proxy)
        .args(["root@127.0.0.1", "echo via-proxy-command"]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "via-proxy-command"
    );
    assert_eq!(bastion.logs().matches("Accepted publickey").count(), 1);
}

#[test]
fn remote_command_output_stdin_and_exit_status() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["root@127.0.0.1", "echo out; echo err >&2; exit 7"]);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));

    // stdin reaches the command; args are joined with spaces as ssh does.
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["root@127.0.0.1", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"tunnel\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "TUNNEL\n");
}

#[test]
fn remote_command_through_a_jump_host() {
    let (bastion, worker) = (Sshd::start(), Sshd::start());
    let user = warren_user_for(&[&bastion, &worker]);
    let log = worker.dir().join("app.log");
    fs::write(
        &log,
        (1..=300).map(|i| format!("line {i}\n")).collect::<String>(),
    )
    .unwrap();
    let mut cmd = warren_client(&user.home, &worker);
    cmd.arg("-n")
        .arg("-i")
        .arg(&user.key.private)
        .args(["-J", &jump_spec(&[&bastion])])
        .args(["root@127.0.0.1", "tail", "-n", "2"])
        .arg(&log);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line 299\nline 300\n");
}

#[test]
fn dash_t_is_refused_with_a_clear_message() {
    let home = ClientHome::new();
    let out = Command::new(warren_bin())
        .env("HOME", home.path())
        .args(["-t", "root@127.0.0.1", "top"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pseudo-terminal"));
}
