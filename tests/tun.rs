//! `warren -w` (tun@openssh.com) against a stock OpenSSH sshd with PermitTunnel: IPv4 and
//! IPv6 packets cross between a local tun device and sshd's, the local device (with its
//! addresses) survives a reconnect and carries again, a refusal ends warren with the
//! server's reason, and warrend refuses tunnels in words.
//!
//! Both tun devices are born in the test's own namespace (warren and sshd create them
//! there, unaddressed) and are moved at once into two namespaces the test made, where
//! the only addresses live; nothing is ever addressed on the host.

mod common;

use common::netns::Netns;
use common::warrend::*;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Device numbers unlikely to collide with anything else on the machine.
fn units() -> (u32, u32) {
    let base = 7000 + (std::process::id() % 900) * 2;
    (base, base + 1)
}

/// Waits until `dev` exists in the test's own namespace (the creator just made it).
fn wait_device(dev: &str, proc: &Proc) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let out = Command::new("ip")
            .args(["link", "show", "dev", dev])
            .output()
            .expect("run ip");
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{dev} never appeared\n{}",
            proc.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Moves `dev` into `ns` and gives it its point-to-point addresses there.
fn place(ns: &Netns, dev: &str, v4: (&str, &str), v6: &str) {
    let out = Command::new("ip")
        .args(["link", "set", dev, "netns", &ns.name])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "moving {dev}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ns.ip(&["addr", "add", v4.0, "peer", v4.1, "dev", dev]);
    ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"]);
    ns.ip(&["link", "set", dev, "up"]);
}

const ECHO_SERVER: &str = r#"
import socket, sys, threading
# Bound and listening before "ready", with FREEBIND: the addresses may be placed on the
# tunnel device only after this starts.
def listener(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET:
        s.setsockopt(socket.SOL_IP, 15, 1)          # IP_FREEBIND
    else:
        s.setsockopt(socket.IPPROTO_IPV6, 78, 1)    # IPV6_FREEBIND
    s.bind((addr, 7007)); s.listen(8)
    return s
def serve(s):
    while True:
        c, _ = s.accept()
        def echo(c):
            while True:
                b = c.recv(65536)
                if not b: break
                c.sendall(b)
            c.close()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
for fam, a in ((socket.AF_INET, "10.77.0.2"), (socket.AF_INET6, "fd77::2")):
    threading.Thread(target=serve, args=(listener(fam, a),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

const ECHO_CLIENT: &str = r#"
import hashlib, os, socket, sys, threading
host, size = sys.argv[1], int(sys.argv[2])
data = os.urandom(size)
s = socket.create_connection((host, 7007), timeout=20)
got = bytearray()
def reader():
    while len(got) < size:
        b = s.recv(65536)
        if not b: break
        got.extend(b)
t = threading.Thread(target=reader); t.start()
s.sendall(data); t.join()
print("ok" if hashlib.sha256(got).digest() == hashlib.sha256(data).digest() else "differs %d" % len(got))
"#;

/// A hash-checked echo of `size` bytes from the client namespace to `host`.
fn echo(cli: &Netns, host: &str, size: usize) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &cli.name,
            "python3",
            "-c",
            ECHO_CLIENT,
            host,
        ])
        .arg(size.to_string())
        .output()
        .expect("run python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "echo via {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `warren -w LU:RU` (plus `extra`), ready and with both devices present.
fn start_tunnel(
    sshd: &Sshd,
    user: &WarrenUser,
    extra: &[&str],
    (lu, ru): (u32, u32),
    (ldev, rdev): (&str, &str),
) -> Proc {
    let mut cmd = warren_client(&user.home, sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(extra)
        .arg("-w")
        .arg(format!("{lu}:{ru}"))
        .arg("root@127.0.0.1");
    let warren = Proc::spawn(cmd);
    warren
        .wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n--- sshd ---\n{}", sshd.logs()));
    wait_device(ldev, &warren);
    wait_device(rdev, &warren);
    warren
}

fn tunnel_sshd(permit: &str) -> Sshd {
    Sshd::start_with(SshdOptions {
        extra_config: vec![format!("PermitTunnel {permit}")],
        ..Default::default()
    })
}

#[test]
fn packets_cross_both_ways_and_the_local_device_survives_a_reconnect() {
    let (lu, ru) = units();
    let (ldev, rdev) = (format!("tun{lu}"), format!("tun{ru}"));
    let cli = Netns::create("tun-cli");
    let srv = Netns::create("tun-srv");
    let server = Proc::spawn({
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &srv.name, "python3", "-c", ECHO_SERVER]);
        c
    });
    let mut sshd = tunnel_sshd("point-to-point");
    let user = warren_user(&sshd);
    let warren = start_tunnel(&sshd, &user, &[], (lu, ru), (&ldev, &rdev));
    place(&cli, &ldev, ("10.77.0.1", "10.77.0.2"), "fd77::1/64");
    place(&srv, &rdev, ("10.77.0.2", "10.77.0.1"), "fd77::2/64");
    server
        .wait_for_stdout(|l| l == "ready", READY_TIMEOUT)
        .expect("echo server");
    echo(&cli, "10.77.0.2", 4 << 20);
    echo(&cli, "fd77::2", 1 << 20);

    // The server side goes away (sshd restarts, its device with it); warren reconnects
    // and opens the tunnel again. Only the server's new device needs placing: the local
    // one kept its namespace, addresses and routes.
    let before = warren.stderr_line_count();
    sshd.restart();
    warren
        .wait_for_stderr_from(before, |l| l.contains("carries packets"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("no reopen: {e}"));
    wait_device(&rdev, &warren);
    place(&srv, &rdev, ("10.77.0.2", "10.77.0.1"), "fd77::2/64");
    echo(&cli, "10.77.0.2", 1 << 20);
    echo(&cli, "fd77::2", 1 << 20);

    // The device ends with warren, as ssh's does.
    warren.signal(libc::SIGTERM);
    warren.expect_exit(READY_TIMEOUT);
    let gone = Command::new("ip")
        .args(["-n", &cli.name, "link", "show", "dev", &ldev])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "{ldev} outlived warren");
    server.kill();
}

/// Tunnel=ethernet: tap devices, frames rather than packets (ARP included).
#[test]
fn ethernet_mode_joins_two_tap_devices() {
    let (lu, ru) = units();
    let (lu, ru) = (lu + 6000, ru + 6000);
    let (ldev, rdev) = (format!("tap{lu}"), format!("tap{ru}"));
    let cli = Netns::create("tap-cli");
    let srv = Netns::create("tap-srv");
    let server = Proc::spawn({
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &srv.name, "python3", "-c", ECHO_SERVER]);
        c
    });
    let sshd = tunnel_sshd("ethernet");
    let user = warren_user(&sshd);
    let _warren = start_tunnel(
        &sshd,
        &user,
        &["-o", "Tunnel=ethernet"],
        (lu, ru),
        (&ldev, &rdev),
    );
    for (ns, dev, v4, v6) in [
        (&cli, &ldev, "10.77.0.1/24", "fd77::1/64"),
        (&srv, &rdev, "10.77.0.2/24", "fd77::2/64"),
    ] {
        let out = Command::new("ip")
            .args(["link", "set", dev, "netns", &ns.name])
            .output()
            .expect("run ip");
        assert!(out.status.success(), "moving {dev}");
        ns.ip(&["addr", "add", v4, "dev", dev]);
        ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    server
        .wait_for_stdout(|l| l == "ready", READY_TIMEOUT)
        .expect("echo server");
    echo(&cli, "10.77.0.2", 1 << 20);
    echo(&cli, "fd77::2", 1 << 20);
    server.kill();
}

#[test]
fn a_refused_tunnel_ends_warren_with_the_reason() {
    let (lu, _) = units();
    let sshd = tunnel_sshd("no");
    let user = warren_user(&sshd);
    let mut cmd = warren_client(&user.home, &sshd);
    // A different local unit from the other test, which may run at the same time.
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["-w", &format!("{}:any", lu + 2000)])
        .arg("root@127.0.0.1");
    let warren = Proc::spawn(cmd);
    let status = warren.expect_exit(READY_TIMEOUT);
    assert!(!status.success());
    let err = warren.stderr_text();
    assert!(err.contains("tunnel device forwarding failed"), "{err}");
}

#[test]
fn warrend_refuses_tunnels_in_words_and_audits_it() {
    let (lu, _) = units();
    let alice = SshClient::new();
    let w = Warrend::start(&user("alice", &[&alice], "connect = []"));
    trust_all(&w, &[&alice]);
    let mut cmd = alice.warren(&w);
    cmd.args(["-w", &format!("{}:any", lu + 4000)])
        .arg(SshClient::dest("alice"));
    let warren = Proc::spawn(cmd);
    let status = warren.expect_exit(READY_TIMEOUT);
    assert!(!status.success());
    let err = warren.stderr_text();
    assert!(err.contains("warrend forwards ports only"), "{err}");
    w.wait_audit("the refusal", |v| {
        is(v, "channel_open", &[("kind", "tun"), ("decision", "deny")])
    });
}
