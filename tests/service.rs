//! warren as a service: the systemd notify protocol seen from a real notify socket (READY=1
//! only once the forwards work, STATUS= through a reconnect, watchdog pings, STOPPING=1),
//! the ports chosen by `-L 0`/`-D 0` printed without -v, and the shipped unit files checked
//! by systemd's own verifier.

mod common;

use common::notify::{NotifySocket, with_watchdog};
use common::*;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn allocated(lines: &[String], what: &str) -> u16 {
    lines
        .iter()
        .find(|l| l.starts_with("Allocated port ") && l.contains(what))
        .unwrap_or_else(|| panic!("no 'Allocated port ... {what}' line in {lines:?}"))
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

enum Pipe {
    Stdout,
    Stderr,
}

/// The port of an "Allocated port" line, waiting for it: a process's output reaches our
/// pipe readers some time after the process wrote it (or even exited).
fn allocated_on(proc: &Proc, pipe: Pipe, what: &str) -> u16 {
    let pred = |l: &str| l.starts_with("Allocated port ") && l.contains(what);
    let found = match pipe {
        Pipe::Stdout => proc.wait_for_stdout(pred, READY_TIMEOUT),
        Pipe::Stderr => proc.wait_for_stderr(pred, READY_TIMEOUT),
    };
    allocated(&[found.unwrap_or_else(|e| panic!("{e}"))], what)
}

fn echo_once(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{addr} not connectable: {e}"));
    let data = pattern_bytes(64 * 1024, port.into());
    assert!(exchange(conn, &data, IO_TIMEOUT).unwrap() == data);
}

#[test]
fn notify_socket_gets_ready_after_the_forwards_then_status_watchdog_and_stopping() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let mut notify = NotifySocket::bind();
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["-L", &format!("0:127.0.0.1:{}", echo.port())])
        .args(["-R", &format!("0:127.0.0.1:{}", echo.port())])
        .arg("root@127.0.0.1")
        .env("NOTIFY_SOCKET", &notify.path);
    let warren = Proc::spawn(with_watchdog(&cmd, 300_000));

    let ready = notify.wait_for("READY=1", |l| l == "READY=1");
    assert!(
        ready.contains("STATUS=connected to"),
        "READY=1 comes with a status: {ready:?}"
    );
    // At READY=1 the server already listens for the -R, and the -L port (printed on
    // stdout without -v being needed for it) carries data.
    // The lines were written before READY=1, but our pipe readers may not have read them yet.
    let remote = allocated_on(&warren, Pipe::Stderr, "remote forward");
    echo_once(remote);
    let local = allocated_on(
        &warren,
        Pipe::Stdout,
        &format!("local forward to 127.0.0.1:{}", echo.port()),
    );
    echo_once(local);
    notify.wait_for("a watchdog ping", |l| l == "WATCHDOG=1");

    // SIGHUP drops the session: the status says so, then counts the reconnect.
    warren.signal(libc::SIGHUP);
    notify.wait_for("the reconnected status", |l| {
        l.starts_with("STATUS=") && l.contains("reconnected 1 time(s)")
    });
    assert!(
        notify
            .seen
            .iter()
            .any(|m| m.contains("STATUS=reconnecting to")),
        "the outage was not reported: {:?}",
        notify.seen
    );
    echo_once(local);

    warren.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1");
    assert!(warren.expect_exit(READY_TIMEOUT).success());
    assert_eq!(
        notify
            .seen
            .iter()
            .filter(|m| m.lines().any(|l| l == "READY=1"))
            .count(),
        1,
        "READY=1 exactly once: {:?}",
        notify.seen
    );
}

#[test]
fn an_exec_command_does_not_inherit_the_notify_socket_and_d0_is_printed() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let notify = NotifySocket::bind();
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["-D", "0"])
        .arg("root@127.0.0.1")
        .env("NOTIFY_SOCKET", &notify.path)
        .args(["--exec", "--", "sh", "-c", "test -z \"$NOTIFY_SOCKET\""]);
    let warren = Proc::spawn(cmd);
    let status = warren.expect_exit(READY_TIMEOUT);
    assert!(
        status.success(),
        "the --exec command saw NOTIFY_SOCKET (or failed): {status:?}\n{}",
        warren.stderr_text()
    );
    let port = allocated_on(&warren, Pipe::Stdout, "dynamic forward");
    assert_ne!(port, 0);
}

#[test]
fn quiet_prints_no_allocated_port_lines() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-q")
        .arg("-i")
        .arg(&user.key.private)
        .args(["-L", &format!("0:127.0.0.1:{}", echo.port())])
        .arg("root@127.0.0.1")
        .args(["--exec", "--", "true"]);
    let warren = Proc::spawn(cmd);
    assert!(warren.expect_exit(READY_TIMEOUT).success());
    assert!(
        !warren.stdout_text().contains("Allocated port"),
        "{}",
        warren.stdout_text()
    );
}

/// The unit files as shipped, with the program path pointed at this build, must pass
/// `systemd-analyze verify` without a single complaint (an unknown key or a bad value is
/// only a warning to systemd, and would silently weaken a hardened unit).
#[test]
fn shipped_unit_files_pass_systemd_analyze_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = warren_bin();
    for (file, program) in [
        ("user/warren@.service", "%h/.cargo/bin/warren"),
        ("system/warren@.service", "/usr/local/bin/warren"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(text.contains(program), "{file}: ExecStart moved?");
        assert!(text.contains("Type=notify"), "{file}");
        let unit = dir.path().join("warren@db.service");
        std::fs::write(&unit, text.replace(program, &bin.display().to_string())).unwrap();
        let out = Command::new(analyze)
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("warren@db.service"),
            "{file}: systemd-analyze verify: {}\n{stderr}",
            out.status
        );
    }
}

/// Field `n` (1-based, as proc(5) counts) of /proc/PID/stat, past the parenthesised name.
fn stat_field(pid: i32, n: usize) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(n - 3).unwrap().parse().unwrap()
}

/// `-f` detaches as ssh -f does (daemon(3)): once ready, the tunnel is the leader of a
/// session of its own, so the terminal's hangup and the shell's job control miss it.
#[test]
fn background_tunnel_leaves_the_terminal_session() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut cmd = warren_client(&user.home, &sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(["-f", "--pidfile"])
        .arg(&pidfile)
        .args(["-L", &format!("0:127.0.0.1:{}", echo.port())])
        .arg("root@127.0.0.1");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (session, tty) = (stat_field(pid, 6), stat_field(pid, 7));
    let ours = stat_field(std::process::id() as i32, 6);
    send_signal(pid, libc::SIGTERM).unwrap();
    assert_eq!(
        session,
        i64::from(pid),
        "the -f tunnel is not a session leader (ours is {ours})"
    );
    assert_eq!(tty, 0, "the -f tunnel still has a controlling terminal");
    let port = allocated(
        &String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
        "local forward",
    );
    assert_ne!(port, 0, "the allocated port passes through the -f parent");
}
