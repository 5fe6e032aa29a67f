//! The interop matrix beyond OpenSSH: dropbear's dbclient, Python's asyncssh and paramiko as
//! clients of warrend (-L and -R, hash-checked), and warren against dropbear's and asyncssh's
//! servers (-L, -R, exec). Every peer is a real implementation started by the test on loopback.

mod common;

use common::warrend::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// The same bytes the Python scripts generate: `(i * 7 + 3) % 251`.
fn py_pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + 3) % 251) as u8).collect()
}

/// Runs a Python client script to completion and checks its "L"/"R" hashes against `want`.
fn run_python_client(mut cmd: Command, size: usize) {
    let want = sha256_hex(&py_pattern(size));
    let p = Proc::spawn({
        cmd.env_remove("SSH_AUTH_SOCK");
        cmd
    });
    let status = p.expect_exit(IO_TIMEOUT);
    assert!(status.success(), "{}", p.report("python client failed"));
    let out = p.stdout_lines();
    for path in ["L", "R"] {
        let line = out
            .iter()
            .find(|l| l.starts_with(&format!("{path} ")))
            .unwrap_or_else(|| panic!("no {path} line: {}", p.report("missing output")));
        assert_eq!(&line[2..], want, "{path} differs: {}", p.report("hash"));
    }
}

fn warrend_for(alice: &SshClient, echo: &EchoServer, limits: &[(&str, &str)]) -> Warrend {
    let w = Warrend::start_with(
        &user(
            "alice",
            &[alice],
            &format!(
                "connect = [\"127.0.0.1:{}\"]\nlisten = [\"127.0.0.1:*\"]",
                echo.port()
            ),
        ),
        limits,
    );
    trust_all(&w, &[alice]);
    w
}

/// The post-quantum hybrid key exchange; Debian 12's OpenSSH (9.2) predates it, asyncssh
/// has it when its `cryptography` provides ML-KEM (`.ci/run` makes sure it does).
const MLKEM: &str = "mlkem768x25519-sha256";

/// asyncssh as warrend's client, -L and -R hash-checked; `kex`: the only exchange it offers.
fn asyncssh_client_through_warrend(kex: Option<&str>, size: usize) {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let w = warrend_for(&alice, &echo, &[]);
    let mut cmd = Command::new("python3");
    cmd.arg(script("asyncssh_client.py"))
        .arg(w.port().to_string())
        .arg(&alice.key.private)
        .arg(alice.home.known_hosts())
        .arg("alice")
        .arg(echo.port().to_string())
        .arg(size.to_string())
        .args(kex);
    run_python_client(cmd, size);
}

#[test]
fn asyncssh_client_forwards_both_ways_through_warrend() {
    asyncssh_client_through_warrend(None, 3 * MIB);
}

/// warrend's server side of mlkem768x25519-sha256 against another implementation: asyncssh
/// offers nothing else, so the session exists only if both sides computed the same secret.
#[test]
fn asyncssh_client_and_warrend_agree_on_mlkem768x25519() {
    asyncssh_client_through_warrend(Some(MLKEM), MIB);
}

#[test]
fn paramiko_client_forwards_both_ways_through_warrend() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let w = warrend_for(&alice, &echo, &[]);
    let mut cmd = Command::new("python3");
    cmd.arg(script("paramiko_client.py"))
        .arg(w.port().to_string())
        .arg(&alice.key.private)
        .arg(w.host_key())
        .arg("alice")
        .arg(echo.port().to_string())
        .arg((3 * MIB).to_string());
    run_python_client(cmd, 3 * MIB);
}

/// dropbear's client wants its own key format.
fn dropbear_key(openssh_key: &Path) -> PathBuf {
    let out = openssh_key.with_extension("dropbear");
    let st = Command::new("dropbearconvert")
        .args(["openssh", "dropbear"])
        .arg(openssh_key)
        .arg(&out)
        .output()
        .expect("dropbearconvert runs");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// dbclient (-L and -R, 4 MiB each, hash-checked), then idle for three of warrend's keepalive
/// intervals: dbclient negotiates zlib@openssh.com by default, which russh-based warrend
/// broke at the first keepalive.
#[test]
fn dbclient_forwards_both_ways_and_survives_keepalives() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let w = warrend_for(
        &alice,
        &echo,
        &[("keepalive_interval", "\"1s\""), ("keepalive_max", "2")],
    );
    let key = dropbear_key(&alice.key.private);
    let (lport, rport) = (free_port(), free_port());
    let mut cmd = Command::new("dbclient");
    alice.home.apply(&mut cmd);
    // -yy: no host key check and nothing written to any known_hosts (this test is about the
    // transport; host key checking is OpenSSH's and warren's tests' business).
    cmd.args(["-yy", "-N", "-p"])
        .arg(w.port().to_string())
        .arg("-i")
        .arg(&key)
        .arg("-L")
        .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", echo.port()))
        .arg("-R")
        .arg(format!("127.0.0.1:{rport}:127.0.0.1:{}", echo.port()))
        .arg("alice@127.0.0.1");
    let db = Proc::spawn(cmd);
    let data = pattern_bytes(4 * MIB, 9);
    for port in [lport, rport] {
        let conn = connect_with_retry(loopback(port), READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", db.report("dbclient forward")));
        let back = exchange(conn, &data, IO_TIMEOUT).unwrap();
        assert!(
            back == data,
            "{}",
            db.report("echo through dbclient differs")
        );
    }
    // Three keepalive intervals of silence; the session must still carry data afterwards.
    // Idle for three keepalive intervals: the passing of time is the scenario here, not a
    // readiness wait.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        db.try_wait().is_none(),
        "{}",
        db.report("dbclient exited while idle")
    );
    let conn = connect_with_retry(loopback(lport), READY_TIMEOUT).unwrap();
    let back = exchange(conn, b"after the keepalives", IO_TIMEOUT).unwrap();
    assert_eq!(back, b"after the keepalives");
}

/// `warren -v` isolated like the rest of the fixture, with `key`, against 127.0.0.1:`port`.
fn warren_cmd(home: &ClientHome, port: u16, key: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(warren_bin());
    home.apply(&mut c);
    c.args([
        "-v",
        "-o",
        "BatchMode=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    ])
    .arg("-p")
    .arg(port.to_string())
    .arg("-i")
    .arg(key)
    .args(args);
    c
}

/// `warren -N -L ... -R ... dest` to an echo server: 4 MiB each way through each, compared.
fn forwards_carry_both_ways(warren: &dyn Fn(&[&str]) -> Command, dest: &str, seed: u64) {
    let echo = EchoServer::start();
    let (lport, rport) = (free_port(), free_port());
    let lspec = format!("127.0.0.1:{lport}:127.0.0.1:{}", echo.port());
    let rspec = format!("127.0.0.1:{rport}:127.0.0.1:{}", echo.port());
    let fwd = Proc::spawn(warren(&["-N", "-L", &lspec, "-R", &rspec, dest]));
    let data = pattern_bytes(4 * MIB, seed);
    for p in [lport, rport] {
        let conn = connect_with_retry(loopback(p), READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", fwd.report("warren forward")));
        let back = exchange(conn, &data, IO_TIMEOUT).unwrap();
        assert!(
            back == data,
            "{}",
            fwd.report("echo through the forward differs")
        );
    }
}

/// An asyncssh server: warren's -L, -R and exec against it.
#[test]
fn warren_forwards_and_runs_commands_against_asyncssh() {
    warren_against_asyncssh(None);
}

/// warren's client side of mlkem768x25519-sha256 against asyncssh's server, which offers
/// nothing else (and warren is told the same).
#[test]
fn warren_and_asyncssh_server_agree_on_mlkem768x25519() {
    warren_against_asyncssh(Some(MLKEM));
}

fn warren_against_asyncssh(kex: Option<&str>) {
    let home = ClientHome::new();
    let user = UserKey::generate(home.ssh_dir(), "ed25519", None);
    let host = UserKey::generate(home.path(), "ed25519", None);
    let auth = home.path().join("authorized_keys");
    std::fs::write(&auth, format!("{}\n", user.public_line)).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(script("asyncssh_server.py"))
        .arg(&host.private)
        .arg(&auth)
        .args(kex);
    let server = Proc::spawn(cmd);
    let line = server
        .wait_for_stdout(|l| l.starts_with("listening "), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let port: u16 = line[10..].trim().parse().unwrap();
    let host_line: Vec<&str> = host.public_line.split_whitespace().take(2).collect();
    std::fs::write(
        home.known_hosts(),
        format!("[127.0.0.1]:{port} {}\n", host_line.join(" ")),
    )
    .unwrap();
    let kex_option = kex.map(|k| format!("KexAlgorithms={k}"));
    let warren = |args: &[&str]| {
        let mut c = warren_cmd(&home, port, &user.private, &[]);
        if let Some(o) = &kex_option {
            c.args(["-o", o]);
        }
        c.args(args);
        c
    };

    // exec: output and exit status come back.
    let out = warren(&["u@127.0.0.1", "hello world"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran: hello world\n");

    // -L and -R with 4 MiB each.
    forwards_carry_both_ways(&warren, "u@127.0.0.1", 4);
}

/// `ssh -C` (zlib@openssh.com, switched on only after authentication) idle for three of
/// warrend's keepalive intervals stays connected and still forwards. On russh the first
/// keepalive went out before delayed compression started and killed the session.
#[test]
fn ssh_with_compression_survives_warrend_keepalives() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let w = warrend_for(
        &alice,
        &echo,
        &[("keepalive_interval", "\"1s\""), ("keepalive_max", "2")],
    );
    let lport = free_port();
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args(["-v", "-N", "-C", "-L"])
        .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", echo.port()))
        .arg(SshClient::dest("alice"));
    let ssh = Proc::spawn(cmd);
    ssh.wait_for_stderr(|l| l.contains("compression: zlib"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("no compression negotiated:\n{e}"));
    let conn = connect_with_retry(loopback(lport), READY_TIMEOUT).unwrap();
    assert_eq!(exchange(conn, b"before", IO_TIMEOUT).unwrap(), b"before");
    // Idle for three keepalive intervals (the scenario, not a readiness wait).
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        ssh.try_wait().is_none(),
        "{}",
        ssh.report("ssh -C died while idle")
    );
    let conn = connect_with_retry(loopback(lport), READY_TIMEOUT).unwrap();
    assert_eq!(exchange(conn, b"after", IO_TIMEOUT).unwrap(), b"after");
}

/// warrend's server side of sntrup761x25519-sha512 against OpenSSH's client, which has had
/// it (as the @openssh.com name) since 9.0 and offers it first up to 9.8: with it as the only
/// exchange offered the session exists only if both computed the same secret, and a
/// hash-checked 4 MiB goes through -L.
#[test]
fn openssh_client_and_warrend_agree_on_sntrup761x25519() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let w = warrend_for(&alice, &echo, &[]);
    let lport = free_port();
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args([
        "-v",
        "-N",
        "-o",
        "KexAlgorithms=sntrup761x25519-sha512@openssh.com",
        "-L",
    ])
    .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", echo.port()))
    .arg(SshClient::dest("alice"));
    let ssh = Proc::spawn(cmd);
    ssh.wait_for_stderr(
        |l| l.contains("kex: algorithm: sntrup761x25519-sha512@openssh.com"),
        READY_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("sntrup761x25519 not negotiated:\n{e}"));
    let payload = pattern_bytes(4 * MIB, 761);
    let conn = connect_with_retry(loopback(lport), READY_TIMEOUT).unwrap();
    let back = exchange(conn, &payload, IO_TIMEOUT).unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&payload), "echo through -L");
}

/// A dropbear server: warren's -L, -R and exec against it. dropbear reads the login user's
/// ~/.ssh/authorized_keys from the passwd entry, so it runs in a private mount namespace
/// where root's home is a temporary directory: the real /root is never read or written.
#[test]
fn warren_forwards_and_runs_commands_against_dropbear() {
    let home = ClientHome::new();
    let user = UserKey::generate(home.ssh_dir(), "ed25519", None);
    let fake_root = tempfile::Builder::new()
        .prefix("warren-dropbear-home-")
        .tempdir()
        .unwrap();
    let ssh_dir = fake_root.path().join(".ssh");
    std::fs::create_dir(&ssh_dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let auth = ssh_dir.join("authorized_keys");
    std::fs::write(&auth, format!("{}\n", user.public_line)).unwrap();
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
    let host_key = fake_root.path().join("dropbear_ed25519_host_key");
    let out = Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(&host_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .expect("dropbearkey prints the public key")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let port = free_port();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$1\" /root && exec dropbear -F -E -s -p \"127.0.0.1:$2\" -r \"$3\" -P \"$1/pid\"",
        )
        .arg("sh")
        .arg(fake_root.path())
        .arg(port.to_string())
        .arg(&host_key);
    let server = Proc::spawn(cmd);
    connect_with_retry(loopback(port), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.report("dropbear did not listen")));
    std::fs::write(home.known_hosts(), format!("[127.0.0.1]:{port} {public}\n")).unwrap();
    let warren = |args: &[&str]| warren_cmd(&home, port, &user.private, args);

    let out = warren(&["root@127.0.0.1", "echo from dropbear; exit 4"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.report("dropbear")
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from dropbear\n");

    forwards_carry_both_ways(&warren, "root@127.0.0.1", 6);
}
