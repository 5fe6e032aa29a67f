//! Controlling a running warren against a real sshd: `-O check|forward|cancel|exit` over
//! the ControlPath (-S, with ssh's %C), forwards added and removed without a second login,
//! ControlMaster auto handing forwards to the master, `warren status --json` / `--check`,
//! `warren stop` with several tunnels, a closed stdout pipe, completions and the man page.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A tunnel-mode warren with the control directory in `runtime`.
fn start_warren(sshd: &Sshd, user: &WarrenUser, runtime: &Path, args: &[&str]) -> Proc {
    let mut cmd = warren_client(&user.home, sshd);
    cmd.env("XDG_RUNTIME_DIR", runtime)
        .arg("-i")
        .arg(&user.key.private)
        .args(args)
        .arg("root@127.0.0.1");
    let proc = Proc::spawn(cmd);
    if let Err(e) = proc.wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT) {
        panic!("warren not ready:\n{e}\n--- sshd ---\n{}", sshd.logs());
    }
    proc
}

/// `warren ARGS root@127.0.0.1` (a control client: -O, or a second warren).
fn warren_to(sshd: &Sshd, user: &WarrenUser, runtime: &Path, args: &[&str]) -> Output {
    let mut cmd = warren_client(&user.home, sshd);
    cmd.env("XDG_RUNTIME_DIR", runtime)
        .arg("-i")
        .arg(&user.key.private)
        .args(args)
        .arg("root@127.0.0.1")
        .stdin(Stdio::null());
    run_bounded(cmd)
}

/// `warren SUBCOMMAND ...` (status, stop, ...).
fn warren_sub(runtime: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(warren_bin());
    cmd.env("XDG_RUNTIME_DIR", runtime)
        .args(args)
        .stdin(Stdio::null());
    run_bounded(cmd)
}

fn run_bounded(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(IO_TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = send_signal(pid, libc::SIGKILL);
            panic!("{cmd:?} did not finish within {IO_TIMEOUT:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status_json(runtime: &Path) -> Vec<Value> {
    let out = warren_sub(runtime, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(a)) => a,
        other => panic!("status --json: {other:?}\n{}", text(&out.stdout)),
    }
}

fn forward<'a>(tunnel: &'a Value, kind: &str, spec: &str) -> Option<&'a Value> {
    tunnel["forwards"]
        .as_array()?
        .iter()
        .find(|f| f["kind"] == kind && f["spec"] == spec)
}

fn logins(sshd: &Sshd) -> usize {
    sshd.logs()
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count()
}

fn refused_within(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn echo_through(addr: SocketAddr, data: &[u8]) {
    let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    assert_eq!(exchange(conn, data, IO_TIMEOUT).unwrap(), data);
}

fn printed_port(out: &Output) -> u16 {
    let s = text(&out.stdout);
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no port on stdout: {s:?} / {}", text(&out.stderr)))
}

/// The ControlPath `ssh -G` computes for this destination: the reference for %C.
fn ssh_control_path(sshd: &Sshd, pattern: &str) -> PathBuf {
    let out = Command::new("ssh")
        .args(["-G", "-F", "/dev/null", "-o"])
        .arg(format!("ControlPath={pattern}"))
        .args(["-p", &sshd.port().to_string(), "root@127.0.0.1"])
        .output()
        .unwrap();
    let s = text(&out.stdout);
    let line = s
        .lines()
        .find_map(|l| l.strip_prefix("controlpath "))
        .unwrap_or_else(|| panic!("ssh -G printed no controlpath: {s}"));
    PathBuf::from(line)
}

#[test]
fn forwards_added_and_cancelled_on_a_running_tunnel_without_a_second_login() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let runtime = tempfile::tempdir().unwrap();
    let ctl_dir = tempfile::tempdir().unwrap();
    let pattern = format!("{}/cm-%C", ctl_dir.path().display());
    let ctl_path = ssh_control_path(&sshd, &pattern);

    let warren = start_warren(
        &sshd,
        &user,
        runtime.path(),
        &["-M", "-S", &pattern, "-D", "127.0.0.1:0"],
    );
    assert!(
        ctl_path.exists(),
        "{} (ssh's %C) not created",
        ctl_path.display()
    );
    let socks = forward_addrs(&warren, "-D")[0];
    let s = ctl_path.to_str().unwrap();

    // -O check, as ssh words it.
    let out = warren_to(&sshd, &user, runtime.path(), &["-S", s, "-O", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("Master running (pid={})", warren.pid())),
        "{}",
        text(&out.stderr)
    );

    // -O forward -L: the chosen port is printed and carries bytes to a real echo.
    let l_spec = format!("127.0.0.1:0:127.0.0.1:{}", echo.port());
    let out = warren_to(
        &sshd,
        &user,
        runtime.path(),
        &["-S", s, "-O", "forward", "-L", &l_spec],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let l_addr: SocketAddr = ([127, 0, 0, 1], printed_port(&out)).into();
    echo_through(l_addr, b"added at runtime");

    // -O forward -R: the server listens and connections come back to the echo.
    let r_spec = format!("0:127.0.0.1:{}", echo.port());
    let out = warren_to(
        &sshd,
        &user,
        runtime.path(),
        &["-S", s, "-O", "forward", "-R", &r_spec],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r_port = printed_port(&out);
    let r_addr: SocketAddr = ([127, 0, 0, 1], r_port).into();
    echo_through(r_addr, b"remote added at runtime");

    // ControlMaster auto with the master alive: the second warren hands its -L to the
    // master and exits instead of logging in again.
    let l2_port = free_port();
    let l2_spec = format!("127.0.0.1:{l2_port}:127.0.0.1:{}", echo.port());
    let out = warren_to(
        &sshd,
        &user,
        runtime.path(),
        &["-o", "ControlMaster=auto", "-S", &pattern, "-L", &l2_spec],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    echo_through(([127, 0, 0, 1], l2_port).into(), b"via the master");

    // status --json: every kind, the allocated ports, live -D counts.
    let tunnels = status_json(runtime.path());
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    let t = &tunnels[0];
    assert_eq!(t["pid"], warren.pid());
    assert_eq!(t["connected"], true);
    assert_eq!(t["healthy"], true);
    assert_eq!(t["reconnects"], 0);
    assert_eq!(t["control_path"], s);
    let l = forward(t, "L", &l_spec).unwrap_or_else(|| panic!("{t}"));
    assert_eq!(l["port"], u64::from(l_addr.port()));
    assert!(l["connections"].as_u64() >= Some(1), "{l}");
    let r = forward(t, "R", &r_spec).unwrap_or_else(|| panic!("{t}"));
    assert_eq!(r["connections"].as_u64(), Some(1), "{r}");
    assert_eq!(
        (r["port"].as_u64(), &r["up"]),
        (Some(u64::from(r_port)), &Value::Bool(true))
    );
    let d = forward(t, "D", "127.0.0.1:0").unwrap_or_else(|| panic!("{t}"));
    assert_eq!(
        (d["active"].as_u64(), d["connections"].as_u64()),
        (Some(0), Some(0))
    );
    let mut held = socks5_connect(socks, echo.addr());
    held.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    held.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let t = &status_json(runtime.path())[0];
        let d = forward(t, "D", "127.0.0.1:0").unwrap();
        // Counted live: the SOCKS handshake (3 + 10 bytes up, 2 + 10 down) and the ping.
        if (d["active"].as_u64(), d["connections"].as_u64()) == (Some(1), Some(1))
            && d["bytes_up"].as_u64() == Some(17)
            && d["bytes_down"].as_u64() == Some(16)
        {
            break;
        }
        assert!(Instant::now() < deadline, "-D counts never moved: {d}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);

    // The human listing has them all too.
    let out = warren_sub(runtime.path(), &["status"]);
    let listing = text(&out.stdout);
    for want in [
        format!("-L {l_spec}"),
        format!("-R {r_spec}"),
        format!("server localhost:{r_port}"),
        "-D 127.0.0.1:0".into(),
        "0 reconnects".into(),
    ] {
        assert!(listing.contains(&want), "{want} not in\n{listing}");
    }

    // status --check: healthy by pid, destination or name; 2 for no such tunnel.
    for name in [
        warren.pid().to_string(),
        "127.0.0.1".into(),
        format!("root@127.0.0.1:{}", sshd.port()),
    ] {
        let out = warren_sub(runtime.path(), &["status", "--check", &name]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = warren_sub(runtime.path(), &["status", "--check", "no-such-tunnel"]);
    assert_eq!(out.status.code(), Some(2));

    // -O cancel: the listeners close, the server stops listening.
    let out = warren_to(
        &sshd,
        &user,
        runtime.path(),
        &["-S", s, "-O", "cancel", "-L", &l_spec],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        TcpStream::connect(l_addr).is_err(),
        "-L port still open after -O cancel"
    );
    let out = warren_to(
        &sshd,
        &user,
        runtime.path(),
        &["-S", s, "-O", "cancel", "-R", &r_spec],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        refused_within(r_addr, READY_TIMEOUT),
        "-R port still open after -O cancel"
    );
    let t = &status_json(runtime.path())[0];
    assert!(
        forward(t, "L", &l_spec).is_none() && forward(t, "R", &r_spec).is_none(),
        "{t}"
    );

    // All of it on the one session.
    assert_eq!(logins(&sshd), 1, "{}", sshd.logs());
    assert!(
        !warren.stderr_text().contains("reconnect"),
        "{}",
        warren.stderr_text()
    );

    // -O exit: the master goes at once; then nothing answers (255, ssh's wording).
    let out = warren_to(&sshd, &user, runtime.path(), &["-S", s, "-O", "exit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Exit request sent."));
    assert!(
        warren.expect_exit(READY_TIMEOUT).success(),
        "{}",
        warren.stderr_text()
    );
    let out = warren_to(&sshd, &user, runtime.path(), &["-S", s, "-O", "check"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains(&format!("Control socket connect({s})")),
        "{}",
        text(&out.stderr)
    );
    assert!(!ctl_path.exists(), "ControlPath left behind");
}

#[test]
fn stop_needs_a_name_when_several_tunnels_run_and_all_stops_all() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let runtime = tempfile::tempdir().unwrap();
    let ctl = runtime.path().join("ctl");
    let ctl = ctl.to_str().unwrap();
    let a = start_warren(
        &sshd,
        &user,
        runtime.path(),
        &["-M", "-S", ctl, "-L", "127.0.0.1:0:127.0.0.1:9"],
    );
    // ControlMaster yes while a live master holds the path: ssh's warning, and a session
    // of its own.
    let b = start_warren(
        &sshd,
        &user,
        runtime.path(),
        &["-M", "-S", ctl, "-D", "127.0.0.1:0"],
    );
    assert!(
        b.stderr_text().contains(&format!(
            "ControlSocket {ctl} already exists, disabling multiplexing"
        )),
        "{}",
        b.stderr_text()
    );

    // A stock ssh cannot drive a warren (different protocol) but is not held up by one:
    // its mux client gives up at once and connects on its own.
    let t0 = Instant::now();
    let mut ssh = openssh_client(&user.home, &sshd);
    ssh.arg("-i").arg(&user.key.private);
    ssh.args(["-S", ctl, "-O", "check", "root@127.0.0.1"]);
    let out = run_bounded(ssh);
    assert!(
        text(&out.stderr).contains("master hello exchange failed"),
        "{}",
        text(&out.stderr)
    );
    let mut ssh = openssh_client(&user.home, &sshd);
    ssh.arg("-i").arg(&user.key.private);
    ssh.args([
        "-o",
        "ControlMaster=auto",
        "-S",
        ctl,
        "root@127.0.0.1",
        "echo",
        "direct",
    ]);
    let out = run_bounded(ssh);
    assert_eq!(text(&out.stdout).trim(), "direct", "{}", text(&out.stderr));
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "ssh waited {:?}",
        t0.elapsed()
    );

    let out = warren_sub(runtime.path(), &["stop"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let listed = text(&out.stderr);
    assert!(
        listed.contains(&a.pid().to_string()) && listed.contains(&b.pid().to_string()),
        "{listed}"
    );
    assert!(
        a.try_wait().is_none() && b.try_wait().is_none(),
        "nothing stopped"
    );

    let out = warren_sub(runtime.path(), &["stop", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(a.expect_exit(READY_TIMEOUT).success());
    assert!(b.expect_exit(READY_TIMEOUT).success());
    assert_eq!(
        warren_sub(runtime.path(), &["status"]).status.code(),
        Some(1)
    );
}

#[test]
fn status_into_a_closed_pipe_exits_0() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let runtime = tempfile::tempdir().unwrap();
    // Enough forwards that the listing (about 100 KB) overflows the pipe: warren is still
    // writing when head has gone.
    let mut args = Vec::new();
    for _ in 0..800 {
        args.extend(["-L", "127.0.0.1:0:127.0.0.1:9"]);
    }
    let _warren = start_warren(&sshd, &user, runtime.path(), &args);
    let out = Command::new("bash")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' status | head -1",
            warren_bin().display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("warren "),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_man_page_and_a_host_named_status() {
    let runtime = tempfile::tempdir().unwrap();
    let out = warren_sub(runtime.path(), &["completions", "bash"]);
    assert!(out.status.success() && text(&out.stdout).contains("-L"));
    for shell in ["zsh", "fish"] {
        let out = warren_sub(runtime.path(), &["completions", shell]);
        assert!(
            out.status.success() && text(&out.stdout).contains("status"),
            "{shell}"
        );
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' man | grep -q '\\\\-L'",
            warren_bin().display()
        ))
        .status()
        .unwrap();
    assert!(out.success(), "man page without -L");
    let out = warren_sub(runtime.path(), &["man", "status"]);
    assert!(out.status.success() && text(&out.stdout).contains("\\-\\-check"));
    assert_eq!(
        warren_sub(runtime.path(), &["completions", "tcsh"])
            .status
            .code(),
        Some(2)
    );
    let out = warren_sub(runtime.path(), &["status", "--help"]);
    assert!(out.status.success() && text(&out.stdout).contains("--check"));

    // The subcommand word only counts first: a host named "status" is still reachable.
    let home = ClientHome::new();
    for args in [&["-G", "ssh://status"][..], &["-G", "-p", "22", "status"]] {
        let mut cmd = Command::new(warren_bin());
        home.apply(&mut cmd).args(args);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("hostname status"),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn a_remote_forward_added_at_runtime_is_asked_for_again_after_a_reconnect() {
    let mut sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let runtime = tempfile::tempdir().unwrap();
    let warren = start_warren(&sshd, &user, runtime.path(), &["-D", "127.0.0.1:0"]);
    let r_port = free_port();
    let r_spec = format!("{r_port}:127.0.0.1:{}", echo.port());
    // No -S: -O finds the running warren for this destination.
    let out = warren_to(
        &sshd,
        &user,
        runtime.path(),
        &["-O", "forward", "-R", &r_spec],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r_addr: SocketAddr = ([127, 0, 0, 1], r_port).into();
    echo_through(r_addr, b"before");

    let out = warren_sub(runtime.path(), &["status", "--check", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Server gone: the tunnel is not healthy (1), and says why.
    let from = warren.stderr_line_count();
    sshd.stop();
    warren
        .wait_for_stderr_from(from, |l| l.contains("lost"), READY_TIMEOUT)
        .unwrap();
    let out = warren_sub(runtime.path(), &["status", "--check", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("not connected"),
        "{}",
        text(&out.stdout)
    );
    let t = &status_json(runtime.path())[0];
    assert_eq!(
        (&t["connected"], &t["healthy"]),
        (&Value::Bool(false), &Value::Bool(false)),
        "{t}"
    );
    sshd.restart();
    warren
        .wait_for_stderr_from(from, |l| l.contains("reconnected to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.logs()));
    // The server may still hold the port for the dead session a moment: retried.
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let t = &status_json(runtime.path())[0];
        let r = forward(t, "R", &r_spec).unwrap_or_else(|| panic!("{t}"));
        if r["up"] == true {
            assert_eq!(t["reconnects"], 1, "{t}");
            assert!(t["last_error"].is_string(), "{t}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "-R not back after the reconnect: {t}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    echo_through(r_addr, b"after");
    assert_eq!(logins(&sshd), 2, "{}", sshd.logs());

    // -O stop: a graceful end (the server's -R port is cancelled on the way out).
    let out = warren_to(&sshd, &user, runtime.path(), &["-O", "stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Stop listening request sent."));
    assert!(
        warren.expect_exit(READY_TIMEOUT).success(),
        "{}",
        warren.stderr_text()
    );
    assert!(refused_within(r_addr, READY_TIMEOUT), "-R left behind");
    let out = warren_to(&sshd, &user, runtime.path(), &["-O", "check"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("No ControlPath specified"),
        "{}",
        text(&out.stderr)
    );
}

/// A control request is read up to a bound: an endless line (a confused or hostile local
/// program) gets a refusal once the bound is reached, instead of being buffered until the
/// 5 s request timeout, and the tunnel's control keeps working.
#[test]
fn an_oversized_control_request_is_cut_off_and_refused() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let runtime = tempfile::tempdir().unwrap();
    let ctl_dir = tempfile::tempdir().unwrap();
    let ctl = ctl_dir.path().join("ctl");
    let ctl_s = ctl.to_str().unwrap();
    let _warren = start_warren(&sshd, &user, runtime.path(), &["-M", "-S", ctl_s]);

    let mut conn = UnixStream::connect(&ctl).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut writer = conn.try_clone().unwrap();
    // 1 MiB without a newline; the writes after the cut fail, which is the point.
    let flood = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..16 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    flood.join().unwrap();
    let reply = text(&reply);
    assert!(
        reply.contains("error") && started.elapsed() < Duration::from_secs(3),
        "no prompt refusal ({:?}): {reply:?}",
        started.elapsed()
    );

    let out = warren_to(&sshd, &user, runtime.path(), &["-S", ctl_s, "-O", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
