//! OpenSSH's client flags and the ssh_config keywords behind them, each against a real
//! sshd: the flag is accepted and has ssh's effect, seen from the server's log, the
//! listening sockets or the bytes that move. Also autossh driving warren as its ssh.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// warren for `user` against `sshd`, without -v (tests add what they check), known_hosts
/// trusting sshd under its 127.0.0.1 name whatever address is dialled.
fn warren(sshd: &Sshd, user: &WarrenUser) -> Command {
    let mut cmd = Command::new(warren_bin());
    user.home.apply(&mut cmd);
    cmd.env_remove("RUST_LOG")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .args(["-o", "HostKeyAlias=127.0.0.1"])
        .arg("-i")
        .arg(&user.key.private)
        .arg("-p")
        .arg(sshd.port().to_string());
    cmd
}

fn ready(p: &Proc, sshd: &Sshd) {
    if let Err(e) = p.wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT) {
        panic!("warren not ready:\n{e}\n--- sshd ---\n{}", sshd.logs());
    }
}

fn echo_ok(addr: std::net::SocketAddr) {
    let stream = connect_with_retry(addr, READY_TIMEOUT).expect("connect to the forward");
    let got = exchange(stream, b"through the tunnel", IO_TIMEOUT).expect("exchange");
    assert_eq!(got, b"through the tunnel");
}

fn sshd_with(extra: &[&str]) -> Sshd {
    Sshd::start_with(SshdOptions {
        extra_config: extra.iter().map(|s| s.to_string()).collect(),
        ..SshdOptions::default()
    })
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Waits until sshd's log holds `needle` at least `n` times.
fn wait_count(sshd: &Sshd, needle: &str, n: usize) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while count(&sshd.logs(), needle) < n {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not {n} times:\n{}",
            sshd.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn g_binds_every_interface_and_4_6_pick_the_family() {
    let sshd = sshd_with(&["ListenAddress ::1"]);
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let spec = format!("0:127.0.0.1:{}", echo.port());

    // -g: no bind address means every interface (ssh's GatewayPorts for -L/-D).
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-v", "-g", "-L", &spec, "-D", "0", "root@127.0.0.1"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    for kind in ["-L", "-D"] {
        let addrs = forward_addrs(&p, kind);
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_unspecified()),
            "{kind} with -g: {addrs:?}"
        );
    }
    let port = forward_addrs(&p, "-L")[0].port();
    echo_ok(([127, 0, 0, 1], port).into());
    drop(p);

    // -4 to "localhost": IPv4 to the server, and an IPv4-only loopback listener.
    let v4_before = count(&sshd.logs(), "Connection from 127.0.0.1 port");
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-v", "-4", "-L", &spec, "root@localhost"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    let addrs = forward_addrs(&p, "-L");
    assert!(addrs.iter().all(|a| a.is_ipv4()), "-4 listeners: {addrs:?}");
    echo_ok(addrs[0]);
    wait_count(&sshd, "Connection from 127.0.0.1 port", v4_before + 1);
    drop(p);

    // -6 to ::1: IPv6 to the server and an IPv6-only listener.
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-v", "-6", "-L", &spec, "root@::1"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    let addrs = forward_addrs(&p, "-L");
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| a.is_ipv6()),
        "-6 listeners: {addrs:?}"
    );
    echo_ok(addrs[0]);
    sshd.wait_for_log(|l| l.contains("Connection from ::1"), IO_TIMEOUT)
        .unwrap();
    drop(p);

    // The wrong family for the server's address: refused, as ssh does.
    for (flag, host) in [("-6", "127.0.0.1"), ("-4", "::1")] {
        let mut cmd = warren(&sshd, &user);
        cmd.args([flag, "-L", &spec, &format!("root@{host}")]);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{flag} {host}: {err}");
        assert!(err.contains("AddressFamily"), "{flag} {host}: {err}");
    }
}

#[test]
fn b_and_capital_b_choose_the_source_address() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-v", "-b", "127.0.0.2", "root@127.0.0.1"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    sshd.wait_for_log(|l| l.contains("Connection from 127.0.0.2 port"), IO_TIMEOUT)
        .unwrap();
    drop(p);

    // -B: the interface's address (lo: 127.0.0.1), not SO_BINDTODEVICE.
    let mut cmd = warren(&sshd, &user);
    cmd.args([
        "-v",
        "-B",
        "lo",
        "-o",
        "BindAddress=127.0.0.3",
        "root@127.0.0.1",
    ]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    // As ssh: BindAddress wins over BindInterface.
    sshd.wait_for_log(|l| l.contains("Connection from 127.0.0.3 port"), IO_TIMEOUT)
        .unwrap();
    drop(p);

    let mut cmd = warren(&sshd, &user);
    cmd.args(["-B", "no-such-if9", "root@127.0.0.1"]);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("BindInterface no-such-if9"), "{err}");
}

#[test]
fn c_and_m_are_what_sshd_negotiates_and_rekeylimit_rekeys() {
    let sshd = sshd_with(&["LogLevel DEBUG1"]);
    let user = warren_user(&sshd);
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-v", "-c", "aes256-gcm@openssh.com", "root@127.0.0.1"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    sshd.wait_for_log(
        |l| l.contains("kex: client->server cipher: aes256-gcm@openssh.com"),
        IO_TIMEOUT,
    )
    .unwrap();
    drop(p);

    let echo = EchoServer::start();
    let spec = format!("0:127.0.0.1:{}", echo.port());
    let before = count(&sshd.logs(), "SSH2_MSG_KEXINIT received");
    let mut cmd = warren(&sshd, &user);
    cmd.args([
        "-v",
        "-c",
        "aes128-ctr",
        "-m",
        "hmac-sha2-512-etm@openssh.com",
    ])
    .args(["-o", "RekeyLimit=64K", "-L", &spec, "root@127.0.0.1"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    sshd.wait_for_log(
        |l| l.contains("kex: client->server cipher: aes128-ctr MAC: hmac-sha2-512-etm@openssh.com"),
        IO_TIMEOUT,
    )
    .unwrap();
    let addr = forward_addrs(&p, "-L")[0];
    // Sixteen round trips of 128 KiB: each one crosses the limit.
    for seed in 0..16 {
        let data = pattern_bytes(128 << 10, seed);
        let stream = connect_with_retry(addr, READY_TIMEOUT).unwrap();
        let got = exchange(stream, &data, IO_TIMEOUT).unwrap();
        assert_eq!(sha256_hex(&got), sha256_hex(&data));
    }
    let kexes = count(&sshd.logs(), "SSH2_MSG_KEXINIT received") - before;
    // The default (1 GiB) would be the first key exchange only. The engine checks the
    // limit between batches of packets, so a burst overshoots it: count rekeys, not bytes.
    assert!(kexes >= 8, "only {kexes} key exchanges with RekeyLimit 64K");
    drop(p);

    // The time half: a rekey after 1 s with no traffic at all.
    let before = count(&sshd.logs(), "SSH2_MSG_KEXINIT received");
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-v", "-o", "RekeyLimit=default 1", "root@127.0.0.1"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    wait_count(&sshd, "SSH2_MSG_KEXINIT received", before + 2);
    drop(p);
}

#[test]
fn e_log_file_loglevel_and_syslog() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("warren.log");
    fs::write(&log, "earlier line\n").unwrap();
    let mut cmd = warren(&sshd, &user);
    cmd.arg("-E").arg(&log).args([
        "-v",
        "--print-ports",
        "-L",
        "0:127.0.0.1:9",
        "root@127.0.0.1",
    ]);
    let p = Proc::spawn(cmd);
    p.wait_for_stdout(|l| l.starts_with("WARREN_LOCAL_PORT="), READY_TIMEOUT)
        .unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("earlier line\n"), "-E appends: {text}");
    assert!(text.contains("ready: connected to"), "{text}");
    assert!(
        !p.stderr_text().contains("ready: connected"),
        "{}",
        p.stderr_text()
    );
    drop(p);

    // LogLevel from -o (and so from the config file) when no -v/-q is given.
    for (level, shown) in [("VERBOSE", true), ("DEBUG2", true), ("ERROR", false)] {
        let mut cmd = warren(&sshd, &user);
        cmd.args(["-o", &format!("LogLevel={level}"), "--print-ports"])
            .args(["-L", "0:127.0.0.1:9", "root@127.0.0.1"]);
        let p = Proc::spawn(cmd);
        p.wait_for_stdout(|l| l.starts_with("WARREN_LOCAL_PORT="), READY_TIMEOUT)
            .unwrap();
        if shown {
            p.wait_for_stderr(|l| l.contains("ready: connected"), READY_TIMEOUT)
                .unwrap();
        } else {
            assert!(!p.stderr_text().contains("ready"), "{}", p.stderr_text());
        }
    }

    // -y: to syslog, or to stderr with a note where there is none; with -f too.
    let echo = EchoServer::start();
    let pidfile = dir.path().join("pid");
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-y", "-v", "-f", "--print-ports", "--pidfile"])
        .arg(&pidfile)
        .args([
            "-L",
            &format!("0:127.0.0.1:{}", echo.port()),
            "root@127.0.0.1",
        ]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let port: u16 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WARREN_LOCAL_PORT="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port: {out:?}"));
    echo_ok(([127, 0, 0, 1], port).into());
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    send_signal(pid, 15).unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    while Path::new(&pidfile).exists() {
        assert!(Instant::now() < deadline, "-f -y child did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut cmd = warren(&sshd, &user);
    cmd.arg("-E")
        .arg(dir.path().join("missing/dir/log"))
        .arg("root@127.0.0.1");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn q_v_and_flags_accepted_or_refused_as_ssh_does() {
    let run = |args: &[&str]| {
        let home = ClientHome::new();
        let mut cmd = Command::new(warren_bin());
        home.apply(&mut cmd);
        cmd.args(args).output().unwrap()
    };
    let out = run(&["-Q", "cipher"]);
    assert_eq!(out.status.code(), Some(0));
    let ciphers = String::from_utf8_lossy(&out.stdout).into_owned();
    for c in [
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
    ] {
        assert!(ciphers.lines().any(|l| l == c), "{c} missing: {ciphers}");
    }
    let out = run(&["-Q", "help"]);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    for q in help.lines() {
        let out = run(&["-Q", q]);
        assert_eq!(out.status.code(), Some(0), "-Q {q}");
        assert!(!out.stdout.is_empty(), "-Q {q}");
    }
    let macs = String::from_utf8_lossy(&run(&["-Q", "MACs"]).stdout).into_owned();
    assert!(macs.contains("hmac-sha2-512-etm@openssh.com"), "{macs}");
    assert_eq!(run(&["-Q", "no-such-list"]).status.code(), Some(2));
    let out = run(&["-V"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warren"));

    // -G shows what the flags set, and -P's Tag selects `Match tagged` blocks.
    let home = ClientHome::new();
    home.write_ssh_config("Match tagged prod\n  Port 2222\n");
    let dash_g = |extra: &[&str]| {
        let mut cmd = Command::new(warren_bin());
        home.apply(&mut cmd);
        cmd.args([
            "-G",
            "-g",
            "-4",
            "-b",
            "127.0.0.2",
            "-B",
            "lo",
            "-c",
            "aes128-ctr",
        ])
        .args(["-m", "hmac-sha2-256", "-e", "none", "-A"])
        .args(["-o", "RekeyLimit=1G 1h", "-o", "LogLevel=DEBUG2"])
        .args(["-M", "-S", "/tmp/cm-%C", "-o", "ControlPersist=10m"])
        .args(extra)
        .arg("h");
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let shown = dash_g(&["-P", "prod"]);
    for line in [
        "port 2222",
        "tag prod",
        "gatewayports yes",
        "addressfamily inet",
        "bindaddress 127.0.0.2",
        "bindinterface lo",
        "ciphers aes128-ctr",
        "macs hmac-sha2-256",
        "escapechar none",
        "forwardagent yes",
        "rekeylimit 1073741824 3600",
        "loglevel DEBUG2",
        "controlmaster true",
        "controlpath /tmp/cm-%C",
        "controlpersist 10m",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line} missing:\n{shown}");
    }
    assert!(dash_g(&[]).lines().any(|l| l == "port 22"));

    for args in [
        &["-Z", "h"][..],
        &["-w", "tun0", "h"],
        &["-w", "1:2:3", "h"],
        &["-s", "h"],
        &["-e", "ab", "h"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let err = String::from_utf8_lossy(&run(&["-w", "x", "h"]).stderr).into_owned();
    assert!(err.contains("bad tun device 'x'"), "{err}");
    // -w is TunnelDevice, and turns Tunnel on, as ssh -G shows.
    let shown = dash_g(&["-w", "3:any"]);
    assert!(shown.lines().any(|l| l == "tunneldevice 3:any"), "{shown}");

    // Accepted and ignored or warned about, and the tunnel still comes up.
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let mut cmd = warren(&sshd, &user);
    cmd.args([
        "-v", "-x", "-X", "-Y", "-k", "-K", "-a", "-A", "-T", "-e", "none",
    ])
    .args(["-I", "/usr/lib/pkcs11.so", "-P", "prod", "root@127.0.0.1"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    let err = p.stderr_text();
    for warning in [
        "X11 forwarding is not supported",
        "GSSAPI",
        "PKCS#11",
        "no agent to forward",
    ] {
        assert!(err.contains(warning), "{warning}: {err}");
    }
}

#[test]
fn capital_a_forwards_the_agent_to_a_remote_command() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let agent = Agent::start();
    agent.add(&user.key);
    let fingerprint = user.key.fingerprint();
    let list = |flag: &str| {
        let mut cmd = warren(&sshd, &user);
        agent.apply(&mut cmd);
        cmd.args([flag, "-n", "root@127.0.0.1", "ssh-add", "-l"]);
        cmd.output().unwrap()
    };
    let out = list("-A");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains(&fingerprint), "{stdout}");
    // -a (the default): the remote command has no agent.
    let out = list("-a");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn s_runs_a_subsystem() {
    let sshd = sshd_with(&["Subsystem echo-back /bin/cat"]);
    let user = warren_user(&sshd);
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-s", "root@127.0.0.1", "echo-back"]);
    let mut p = Proc::spawn_with_stdin(cmd);
    {
        use std::io::Write;
        let mut stdin = p.take_stdin().unwrap();
        stdin.write_all(b"subsystem says hi\n").unwrap();
    }
    p.wait_for_stdout(|l| l == "subsystem says hi", IO_TIMEOUT)
        .unwrap();
    assert_eq!(p.expect_exit(IO_TIMEOUT).code(), Some(0));

    // Without -s the same word is a command the shell does not know.
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-n", "root@127.0.0.1", "echo-back"]);
    let out = cmd.output().unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn connection_attempts_wait_for_the_server_on_the_first_connection() {
    let mut sshd = Sshd::start();
    let user = warren_user(&sshd);
    sshd.stop();

    // ssh's default: one attempt, then 255.
    let mut cmd = warren(&sshd, &user);
    cmd.arg("root@127.0.0.1");
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut cmd = warren(&sshd, &user);
    cmd.args(["-v", "-o", "ConnectionAttempts=30", "root@127.0.0.1"]);
    let p = Proc::spawn(cmd);
    p.wait_for_stderr(|l| l.contains("connection attempt 2 of 30"), IO_TIMEOUT)
        .unwrap();
    sshd.restart();
    ready(&p, &sshd);
}

#[test]
fn autossh_runs_warren_as_its_ssh() {
    if Command::new("autossh").arg("-V").output().is_err() {
        panic!("autossh is not installed (apt-get install autossh; .ci/run does it)");
    }
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let port = free_port();
    let mut cmd = Command::new("autossh");
    user.home.apply(&mut cmd);
    cmd.env("AUTOSSH_PATH", warren_bin())
        .env("AUTOSSH_GATETIME", "0")
        .env_remove("RUST_LOG")
        .args(["-M", "0", "-N"])
        .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"])
        .args(["-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes"])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .arg("-i")
        .arg(&user.key.private)
        .args(["-p", &sshd.port().to_string()])
        .args(["-L", &format!("{port}:127.0.0.1:{}", echo.port())])
        .arg("root@127.0.0.1");
    let p = Proc::spawn(cmd);
    let addr = ([127, 0, 0, 1], port).into();
    let stream = connect_with_retry(addr, READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", p.report("autossh")));
    let got = exchange(stream, b"autossh", IO_TIMEOUT).unwrap();
    assert_eq!(got, b"autossh");
    sshd.wait_for_log(|l| l.contains("Accepted publickey"), IO_TIMEOUT)
        .unwrap();
}

#[test]
fn session_type_stdin_null_and_fork_after_authentication_keywords() {
    let sshd = sshd_with(&["Subsystem echo-back /bin/cat"]);
    let user = warren_user(&sshd);

    // SessionType subsystem is -s.
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-o", "SessionType=subsystem", "root@127.0.0.1", "echo-back"]);
    let mut p = Proc::spawn_with_stdin(cmd);
    {
        use std::io::Write;
        let mut stdin = p.take_stdin().unwrap();
        stdin.write_all(b"keyword says hi\n").unwrap();
    }
    p.wait_for_stdout(|l| l == "keyword says hi", IO_TIMEOUT)
        .unwrap();
    assert_eq!(p.expect_exit(IO_TIMEOUT).code(), Some(0));

    // StdinNull is -n: cat sees EOF at once although our stdin stays open.
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-o", "StdinNull=yes", "root@127.0.0.1", "cat"]);
    let mut p = Proc::spawn_with_stdin(cmd);
    let _open_stdin = p.take_stdin();
    assert_eq!(p.expect_exit(IO_TIMEOUT).code(), Some(0));

    // -N: no remote command, even when one is given; the tunnel is held instead.
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-v", "-N", "root@127.0.0.1", "echo", "ran"]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    assert!(p.stderr_text().contains("the remote command is not run"));
    assert!(p.try_wait().is_none() && !p.stdout_text().contains("ran"));
    drop(p);

    // ForkAfterAuthentication is -f: back to the shell once ready, the tunnel stays.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut cmd = warren(&sshd, &user);
    cmd.args(["-o", "ForkAfterAuthentication=yes", "--pidfile"])
        .arg(&pidfile)
        .arg("root@127.0.0.1");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    send_signal(pid, 15).unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    while pidfile.exists() {
        assert!(Instant::now() < deadline, "background warren did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tcp_keepalive_is_on_unless_turned_off() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let timers = |extra: &[&str]| {
        let mut cmd = warren(&sshd, &user);
        cmd.arg("-v").args(extra).arg("root@127.0.0.1");
        let p = Proc::spawn(cmd);
        ready(&p, &sshd);
        let out = Command::new("ss")
            .args(["-tnoH", "state", "established"])
            .arg(format!("dst 127.0.0.1:{}", sshd.port()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let on = timers(&["-o", "IPQoS=af21 throughput"]);
    // (IPQoS is not visible here; it is set on the socket and must not break it.)
    assert!(on.contains("timer:(keepalive"), "{on}");
    let off = timers(&["-o", "TCPKeepAlive=no"]);
    assert!(!off.is_empty() && !off.contains("keepalive"), "{off}");
}

#[test]
fn send_env_and_set_env_reach_a_remote_command() {
    let sshd = sshd_with(&["AcceptEnv WARREN_*"]);
    let user = warren_user(&sshd);
    let mut cmd = warren(&sshd, &user);
    cmd.env("WARREN_SENT", "from here")
        .env("WARREN_NOT_SENT", "stays")
        .args(["-o", "SendEnv=WARREN_S* WARREN_NOT_SENT -WARREN_NOT*"])
        .args([
            "-o",
            "SetEnv=WARREN_SET=fixed \"WARREN_SENT=overridden value\"",
        ])
        .args(["-n", "root@127.0.0.1"])
        .arg("echo \"[$WARREN_SENT] [$WARREN_SET] [$WARREN_NOT_SENT]\"");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[overridden value] [fixed] []"
    );
}

#[test]
fn stream_local_bind_unlink_and_clear_all_forwardings() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    // A socket file left behind by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let spec = format!("{}:127.0.0.1:{}", socket.display(), echo.port());

    let mut cmd = warren(&sshd, &user);
    cmd.args(["-L", &spec, "root@127.0.0.1"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    let mut cmd = warren(&sshd, &user);
    cmd.args([
        "-v",
        "-o",
        "StreamLocalBindUnlink=yes",
        "-L",
        &spec,
        "root@127.0.0.1",
    ]);
    let p = Proc::spawn(cmd);
    ready(&p, &sshd);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    {
        use std::io::{Read, Write};
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(b"unix").unwrap();
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"unix");
    }
    drop(p);

    // ClearAllForwardings: no forward at all, so not even a busy port stops the tunnel.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_spec = format!("{}:127.0.0.1:9", busy.local_addr().unwrap().port());
    let mut cmd = warren(&sshd, &user);
    cmd.args([
        "-v",
        "-o",
        "ClearAllForwardings=yes",
        "-L",
        &busy_spec,
        "-D",
        "0",
    ])
    .arg("root@127.0.0.1");
    let p = Proc::spawn(cmd);
    p.wait_for_stderr(
        |l| l.contains("ready: connected") && l.contains("0 forward(s)"),
        READY_TIMEOUT,
    )
    .unwrap();
}
