//! `warren -R` through a real sshd: fixed and allocated ports, half-close, a LAN sshd
//! reached back by a real ssh client, refusals, and prompt release of the port on exit.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

/// Starts warren with `-R spec` and waits until it is ready.
fn warren_remote(sshd: &Sshd, user: &WarrenUser, specs: &[&str], extra: &[&str]) -> Proc {
    let mut cmd = warren_client(&user.home, sshd);
    cmd.arg("-i").arg(&user.key.private).args(extra);
    for s in specs {
        cmd.arg("-R").arg(s);
    }
    cmd.arg("root@127.0.0.1");
    let warren = Proc::spawn(cmd);
    if let Err(e) = warren.wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT) {
        panic!("warren not ready:\n{e}\n--- sshd ---\n{}", sshd.logs());
    }
    warren
}

/// The port from OpenSSH's "Allocated port N for remote forward to ..." line.
fn allocated_port(warren: &Proc, nth: usize) -> u16 {
    let lines: Vec<String> = warren
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("Allocated port "))
        .collect();
    let line = lines
        .get(nth)
        .unwrap_or_else(|| panic!("no allocation line {nth}: {}", warren.stderr_text()));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn server_side(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn fixed_and_allocated_ports_carry_data_and_half_close() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let sink = ReplyAfterEofServer::start();
    let fixed = free_port();
    let warren = warren_remote(
        &sshd,
        &user,
        &[
            &format!("127.0.0.1:{fixed}:127.0.0.1:{}", echo.port()),
            &format!("0:127.0.0.1:{}", sink.port()),
        ],
        &[],
    );
    let allocated = allocated_port(&warren, 0);
    assert!(
        warren.stderr_text().contains(&format!(
            "Allocated port {allocated} for remote forward to 127.0.0.1:{}",
            sink.port()
        )),
        "{}",
        warren.stderr_text()
    );
    let data = pattern_bytes(4 * 1024 * 1024, 3);
    let conn = connect_with_retry(server_side(fixed), READY_TIMEOUT).unwrap();
    assert!(
        exchange(conn, &data, IO_TIMEOUT).unwrap() == data,
        "echo through -R differs"
    );
    let conn = connect_with_retry(server_side(allocated), READY_TIMEOUT).unwrap();
    let reply = exchange(conn, &data, IO_TIMEOUT).unwrap();
    assert_eq!(String::from_utf8_lossy(&reply), sha256_hex(&data));
}

#[test]
fn lan_sshd_is_reached_back_through_the_gateway_by_real_ssh() {
    // "gateway" is the public sshd, "lan" the box behind NAT that runs warren -R.
    let gateway = Sshd::start();
    let lan = Sshd::start();
    let user = warren_user(&gateway);
    let warren = warren_remote(
        &gateway,
        &user,
        &[&format!("127.0.0.1:0:127.0.0.1:{}", lan.port())],
        &[],
    );
    let port = allocated_port(&warren, 0);

    // Someone on the gateway now logs in to the LAN box through the forwarded port.
    let visitor = ClientHome::new();
    let key = UserKey::generate(visitor.ssh_dir(), "ed25519", None);
    lan.authorize(&key.public_line);
    let lan_key = lan.known_hosts_line();
    let key_part = lan_key.split_once(' ').unwrap().1;
    std::fs::write(
        visitor.known_hosts(),
        format!("[127.0.0.1]:{port} {key_part}\n"),
    )
    .unwrap();
    let mut ssh = Command::new("ssh");
    visitor.apply(&mut ssh);
    ssh.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .arg("-o")
    .arg(format!(
        "UserKnownHostsFile={}",
        visitor.known_hosts().display()
    ))
    .arg("-i")
    .arg(&key.private)
    .args([
        "-p",
        &port.to_string(),
        "root@127.0.0.1",
        "echo reached-the-lan-box",
    ]);
    let out = ssh.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lan.logs()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "reached-the-lan-box"
    );
}

#[test]
fn refused_remote_forward_exits_3_or_continues_when_asked() {
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec!["AllowTcpForwarding local".into()],
        ..Default::default()
    });
    let user = warren_user(&sshd);
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["-R", "0:127.0.0.1:9", "root@127.0.0.1"]);
    let warren = Proc::spawn(cmd);
    let status = warren.expect_exit(READY_TIMEOUT);
    let err = warren.stderr_text();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        err.contains("remote port forwarding failed for listen port 0"),
        "{err}"
    );

    let warren = warren_remote(
        &sshd,
        &user,
        &["0:127.0.0.1:9"],
        &["-o", "ExitOnForwardFailure=no"],
    );
    assert!(warren.stderr_text().contains("continuing without it"));
}

#[test]
fn the_remote_port_is_released_when_warren_stops() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let spec = format!("0:127.0.0.1:{}", echo.port());
    let warren = warren_remote(&sshd, &user, &[&spec], &[]);
    let port = allocated_port(&warren, 0);
    let mut conn = connect_with_retry(server_side(port), READY_TIMEOUT).unwrap();
    conn.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).unwrap();
    drop(conn);
    warren.signal(libc::SIGTERM);
    assert_eq!(warren.expect_exit(READY_TIMEOUT).code(), Some(0));
    // cancel-tcpip-forward was acknowledged before exit, so the port is already closed.
    assert!(
        TcpStream::connect(server_side(port)).is_err(),
        "port {port} still listening"
    );
}

/// sshd leaves Nagle's algorithm on for `-N` sessions: when a forwarded connection ends,
/// sshd's last small packet can wait for warren's acknowledgement before the next channel
/// open leaves, and Linux delays that acknowledgement by 40 ms. OpenSSH's ssh pays it on
/// every -R connection (~27 connections/s); warren used to on about one in ten. It now
/// acknowledges as soon as it has nothing to send (src/transport.rs).
#[test]
fn short_connections_through_sshd_do_not_wait_for_delayed_acks() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let warren = warren_remote(
        &sshd,
        &user,
        &[&format!("0:127.0.0.1:{}", echo.port())],
        &[],
    );
    let port = allocated_port(&warren, 0);
    let mut cycles = Vec::new();
    for i in 0..150u8 {
        let start = std::time::Instant::now();
        let mut conn = connect_with_retry(server_side(port), READY_TIMEOUT).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conn.write_all(&[i]).unwrap();
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], i);
        drop(conn);
        cycles.push(start.elapsed());
    }
    // A delayed acknowledgement costs 40 ms or more; a cycle without one takes about a
    // millisecond, even in a debug build. A few slow cycles are allowed for a busy machine.
    let stalled = cycles
        .iter()
        .filter(|c| **c >= std::time::Duration::from_millis(39))
        .count();
    eprintln!("cycles of 39 ms or more: {stalled} of {}", cycles.len());
    assert!(
        stalled <= 3,
        "{stalled} of 150 cycles took 39 ms or more: {cycles:?}"
    );
}
