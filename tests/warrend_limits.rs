//! warrend's limits, certificates and key restrictions against the real OpenSSH client:
//! a trusted user CA, authorized_keys options, max_channels_per_session,
//! max_sessions_per_user, max_auth_tries, login_grace_time, max_unauthenticated (server
//! wide and per source), channel_idle_timeout, keepalive freeing a dead client's -R port
//! and rendezvous name, accept errors (EMFILE), SIGTERM, and the audit records all of
//! these leave (listen_stop and byte counts when a session dies, server_stop last).
//!
//! Same rules as tests/warrend.rs: each test runs its own warrend in its own temporary
//! directory, on loopback and ephemeral ports, and waits on real signals (audit records,
//! ssh's own lines, process exits, connects and EOFs) with deadlines. Durations measured
//! here (how long until warrend closed something) are assertions, never readiness waits.

mod common;

use common::warrend::*;
use common::*;
use serde_json::Value;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A `[users.NAME]` section with `keys` (TOML strings) and `rules`.
fn user_keys(name: &str, keys: &[String], rules: &str) -> String {
    format!("[users.{name}]\nkeys = [{}]\n{rules}\n\n", keys.join(", "))
}

/// `client`'s public key line prefixed with authorized_keys `options`, as a TOML string.
fn key_with_options(options: &str, client: &SshClient) -> String {
    toml_string(&format!("{options} {}", client.key.public_line))
}

/// `text` as a TOML basic string (JSON string syntax is valid TOML here).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("json string")
}

/// `ssh -v -N -R <spec>` as `login`, once ssh says warrend accepted the forward.
fn remote_forward(w: &Warrend, c: &SshClient, login: &str, spec: &str, listen: &str) -> Proc {
    let mut cmd = c.ssh_warrend(w);
    cmd.args(["-v", "-N", "-R", spec])
        .arg(SshClient::dest(login));
    let ssh = Proc::spawn(cmd);
    let want = format!("remote forward success for: listen {listen},");
    ssh.wait_for_stderr(|l| l.contains(&want), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("-R {spec} not accepted:\n{e}"));
    ssh
}

/// `ssh -N -R <spec>` that warrend must refuse: ssh gives up (ExitOnForwardFailure).
fn remote_forward_refused(w: &Warrend, c: &SshClient, login: &str, spec: &str, port: u16) {
    let mut cmd = c.ssh_warrend(w);
    cmd.args(["-N", "-R", spec]).arg(SshClient::dest(login));
    let ssh = Proc::spawn(cmd);
    assert_eq!(
        exit_code(&ssh, READY_TIMEOUT),
        Some(255),
        "{}",
        ssh.report("")
    );
    let want = format!("remote port forwarding failed for listen port {port}");
    assert!(ssh.stderr_text().contains(&want), "{}", ssh.report(""));
}

/// A TCP connection with `IO_TIMEOUT` on reads.
fn connect(addr: SocketAddr) -> TcpStream {
    let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}

/// One byte to an echo (through a tunnel) and the same byte back.
fn ping(conn: &mut TcpStream, b: u8) -> io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(&[b])?;
    let mut got = [0u8; 1];
    conn.read_exact(&mut got)?;
    if got[0] == b {
        Ok(())
    } else {
        Err(io::Error::other(format!("sent {b}, got {}", got[0])))
    }
}

/// Reads whatever `conn` receives until the peer closes it (EOF or reset) or `within`
/// runs out. Returns the data and, if it was closed, after how long.
fn read_until_closed(conn: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let deadline = start + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, None);
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return (got, Some(start.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return (got, Some(start.elapsed())),
        }
    }
}

/// Whether `conn` was closed by its peer within `wait` (no data may arrive).
fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected data: {:?}", &buf[..n]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

/// A raw TCP connection to warrend from `from` that has read warrend's SSH banner, so
/// warrend has accepted it and counts it as unauthenticated.
fn raw_client(w: &Warrend, from: [u8; 4]) -> TcpStream {
    let mut conn = w.connect_from(from);
    conn.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match conn.read(&mut b) {
            Ok(1) => line.push(b[0]),
            other => panic!(
                "no SSH banner from warrend ({other:?}) after {:?}\n{}",
                String::from_utf8_lossy(&line),
                w.proc().report("")
            ),
        }
    }
    assert!(line.starts_with(b"SSH-2.0-"), "{line:?}");
    conn
}

/// A connection from `from` that warrend must drop at once, without a word of SSH.
fn assert_dropped_unheard(w: &Warrend, from: [u8; 4]) {
    let mut conn = w.connect_from(from);
    let (got, closed) = read_until_closed(&mut conn, READY_TIMEOUT);
    assert!(
        closed.is_some(),
        "the connection from {from:?} was not dropped"
    );
    assert!(
        got.is_empty(),
        "the connection from {from:?} got SSH: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// The `conn` number of an audit record.
fn conn_of(v: &Value) -> u64 {
    n(v, "conn")
}

/// A user CA made by ssh-keygen.
struct Ca {
    _dir: TempDir,
    key: PathBuf,
    public_line: String,
}

impl Ca {
    fn new() -> Ca {
        let dir = tempfile::Builder::new().prefix("ca-").tempdir().unwrap();
        let key = dir.path().join("user_ca");
        let mut cmd = Command::new("ssh-keygen");
        cmd.args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "warren-test-ca",
            "-f",
        ])
        .arg(&key);
        run_ok(cmd);
        let public_line = fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string();
        Ca {
            _dir: dir,
            key,
            public_line,
        }
    }

    /// Signs `client`'s key (`ssh-keygen -s`), writing the `-cert.pub` that ssh picks up
    /// next to the private key by itself.
    fn sign(&self, client: &SshClient, id: &str, principals: &str, validity: &str) {
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-s"])
            .arg(&self.key)
            .args(["-I", id, "-n", principals, "-V", validity])
            .arg(&client.key.public);
        run_ok(cmd);
        let cert = PathBuf::from(format!("{}-cert.pub", client.key.private.display()));
        assert!(cert.exists(), "no {}", cert.display());
    }

    /// `[user_ca]` trusting this CA.
    fn section(&self) -> String {
        format!("[user_ca]\nkeys = [{}]\n\n", toml_string(&self.public_line))
    }
}

// ---------------------------------------------------------------------------
// User CA
// ---------------------------------------------------------------------------

#[test]
fn user_ca_certificates_log_in_and_principals_and_validity_are_checked() {
    let ca = Ca::new();
    let good = SshClient::new();
    let bob_cert = SshClient::new();
    let expired = SshClient::new();
    ca.sign(&good, "alice-laptop", "alice", "+1h");
    ca.sign(&bob_cert, "bob-laptop", "bob", "+1h");
    ca.sign(&expired, "alice-old", "alice", "20200101:20200102");
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    // alice has rules but no keys at all: only certificates can log her in.
    let w = Warrend::start(&format!(
        "{}[users.alice]\nconnect = [\"{target}\"]\n\n",
        ca.section()
    ));
    trust_all(&w, &[&good, &bob_cert, &expired]);

    let (ssh, addrs) = good.local_forwards(&w, "alice", &[Some(&target)]);
    let data = pattern_bytes(256 * 1024, 61);
    let back = exchange(connect(addrs[0]), &data, IO_TIMEOUT).unwrap();
    assert!(back == data, "echo through the certificate's -L differs");
    let ok = w.wait_audit("the certificate login", |v| {
        is(v, "auth_success", &[("user", "alice")])
    });
    assert_eq!(s(&ok, "method"), "certificate", "{ok}");
    assert_eq!(s(&ok, "key_fp"), good.key.fingerprint(), "{ok}");
    assert!(s(&ok, "key_source").contains("alice-laptop"), "{ok}");
    w.wait_audit("the forwarded channel", |v| {
        is(
            v,
            "channel_close",
            &[("user", "alice"), ("target", &target)],
        ) && n(v, "bytes_up") == data.len() as u64
    });
    drop(ssh);

    assert!(
        !can_log_in(&w, &bob_cert, "alice"),
        "a certificate for bob logged in as alice"
    );
    let f = w.wait_audit("the refused principal", |v| {
        is(
            v,
            "auth_failure",
            &[
                ("method", "certificate"),
                ("key_fp", &bob_cert.key.fingerprint()),
            ],
        )
    });
    assert!(s(&f, "reason").contains("principals"), "{f}");

    assert!(
        !can_log_in(&w, &expired, "alice"),
        "an expired certificate logged in"
    );
    // The expired certificate reaches warrend (the engine judges no certificate), so
    // the refusal is audited with its reason.
    let f = w.wait_audit("the expired certificate's refusal", |v| {
        is(
            v,
            "auth_failure",
            &[
                ("method", "certificate"),
                ("key_fp", &expired.key.fingerprint()),
            ],
        )
    });
    assert!(s(&f, "reason").contains("validity"), "{f}");
    assert!(s(&f, "reason").contains("alice-old"), "{f}");
    assert_eq!(
        w.audit_matching(|v| is(v, "auth_success", &[])).len(),
        1,
        "only the valid certificate logged in"
    );
}

// ---------------------------------------------------------------------------
// authorized_keys options
// ---------------------------------------------------------------------------

#[test]
fn with_a_user_ca_the_key_probe_does_not_tell_which_users_exist() {
    let ca = Ca::new();
    let stranger = SshClient::new();
    let w = Warrend::start(&format!("{}[users.alice]\nconnect = []\n\n", ca.section()));
    trust_all(&w, &[&stranger]);
    // The same uncertified key, as an existing and as an unknown user: the probe's
    // answer must not differ, and neither may log in.
    let probe = |login: &str| -> (bool, String) {
        let mut cmd = stranger.ssh_warrend(&w);
        cmd.args(["-v", "-N"]).arg(SshClient::dest(login));
        let ssh = Proc::spawn(cmd);
        let code = exit_code(&ssh, READY_TIMEOUT);
        assert_eq!(code, Some(255), "{}", ssh.report(""));
        let text = ssh.stderr_text();
        (text.contains("Server accepts key"), text)
    };
    let (known, known_text) = probe("alice");
    let (unknown, unknown_text) = probe("nosuchuser");
    assert_eq!(
        known, unknown,
        "the probe answers differ:\n--- alice ---\n{known_text}\n--- nosuchuser ---\n{unknown_text}"
    );
    w.wait_audit("the unknown user's refusal", |v| {
        is(v, "auth_failure", &[("user", "nosuchuser")])
    });
}

#[test]
fn restrict_key_logs_in_but_cannot_forward() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start(&user_keys(
        "alice",
        &[key_with_options("restrict", &alice)],
        &format!("connect = [\"{target}\"]"),
    ));
    trust_all(&w, &[&alice]);

    let mut cmd = alice.ssh_warrend(&w);
    cmd.arg("-W").arg(&target).arg(SshClient::dest("alice"));
    let ssh = Proc::spawn(cmd);
    assert_eq!(
        exit_code(&ssh, READY_TIMEOUT),
        Some(255),
        "{}",
        ssh.report("")
    );
    assert!(
        ssh.stderr_text()
            .contains("open failed: administratively prohibited"),
        "{}",
        ssh.report("")
    );
    w.wait_audit("the restricted key's login", |v| {
        is(v, "auth_success", &[("user", "alice")])
    });
    let deny = w.wait_audit("the refused -W", |v| {
        is(
            v,
            "channel_open",
            &[("target", &target), ("decision", "deny")],
        )
    });
    assert!(
        s(&deny, "rule").ends_with("restrict/no-port-forwarding"),
        "{deny}"
    );
    assert_eq!(echo.connections(), 0);
}

#[test]
fn permitopen_narrows_the_connect_rules() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let other = EchoServer::start(); // allowed by a rule, not by the key
    let echo_t = format!("127.0.0.1:{}", echo.port());
    let other_t = format!("127.0.0.1:{}", other.port());
    let w = Warrend::start(&user_keys(
        "alice",
        &[key_with_options(
            &format!("restrict,port-forwarding,permitopen=\"{echo_t}\""),
            &alice,
        )],
        &format!("connect = [\"{echo_t}\", \"{other_t}\"]"),
    ));
    trust_all(&w, &[&alice]);
    let (ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&echo_t), Some(&other_t)]);

    assert_eq!(
        exchange(connect(addrs[0]), b"through", IO_TIMEOUT).unwrap(),
        b"through"
    );
    let allow = w.wait_audit("the permitted channel", |v| {
        is(
            v,
            "channel_open",
            &[("target", &echo_t), ("decision", "allow")],
        )
    });
    assert!(s(&allow, "rule").contains("permitopen[0]"), "{allow}");

    let back = exchange(connect(addrs[1]), b"hello?", IO_TIMEOUT).unwrap_or_default();
    assert!(back.is_empty(), "the unpermitted target answered: {back:?}");
    let deny = w.wait_audit("the unpermitted channel", |v| {
        is(
            v,
            "channel_open",
            &[("target", &other_t), ("decision", "deny")],
        )
    });
    assert!(s(&deny, "reason").contains("permitopen"), "{deny}");
    ssh.wait_for_stderr(
        |l| l.contains("open failed: administratively prohibited"),
        READY_TIMEOUT,
    )
    .unwrap();
    assert_eq!(other.connections(), 0);
}

#[test]
fn permitlisten_narrows_remote_forwards() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let (permitted, other) = (free_port(), free_port());
    let w = Warrend::start(&user_keys(
        "alice",
        &[key_with_options(
            &format!("permitlisten=\"{permitted}\""),
            &alice,
        )],
        &format!("listen = [\"127.0.0.1:{permitted}\", \"127.0.0.1:{other}\"]"),
    ));
    trust_all(&w, &[&alice]);

    let ssh = remote_forward(
        &w,
        &alice,
        "alice",
        &format!("127.0.0.1:{permitted}:127.0.0.1:{}", echo.port()),
        &format!("127.0.0.1:{permitted}"),
    );
    assert_eq!(
        exchange(connect(loopback(permitted)), b"back", IO_TIMEOUT).unwrap(),
        b"back"
    );
    let allow = w.wait_audit("the permitted -R", |v| {
        is(v, "listen_start", &[("decision", "allow")]) && n(v, "port") == u64::from(permitted)
    });
    assert!(s(&allow, "rule").contains("permitlisten[0]"), "{allow}");

    remote_forward_refused(
        &w,
        &alice,
        "alice",
        &format!("127.0.0.1:{other}:127.0.0.1:{}", echo.port()),
        other,
    );
    let deny = w.wait_audit("the unpermitted -R", |v| {
        is(v, "listen_start", &[("decision", "deny")]) && n(v, "port") == u64::from(other)
    });
    assert!(s(&deny, "reason").contains("permitlisten"), "{deny}");
    assert!(
        TcpStream::connect(loopback(other)).is_err(),
        "{other} is bound"
    );
    assert!(ssh.try_wait().is_none());
}

#[test]
fn from_and_expiry_time_refuse_the_key() {
    let remote = SshClient::new();
    let expired = SshClient::new();
    let w = Warrend::start(&format!(
        "{}{}",
        user_keys(
            "alice",
            &[key_with_options("from=\"10.0.0.0/8\"", &remote)],
            ""
        ),
        user_keys(
            "bob",
            &[key_with_options("expiry-time=\"20200101\"", &expired)],
            ""
        ),
    ));
    trust_all(&w, &[&remote, &expired]);

    assert!(!can_log_in(&w, &remote, "alice"), "from= was ignored");
    let f = w.wait_audit("the from= refusal", |v| {
        is(v, "auth_failure", &[("user", "alice")])
    });
    assert!(
        s(&f, "reason").contains("not allowed from 127.0.0.1"),
        "{f}"
    );
    assert!(!can_log_in(&w, &expired, "bob"), "expiry-time was ignored");
    let f = w.wait_audit("the expiry-time refusal", |v| {
        is(v, "auth_failure", &[("user", "bob")])
    });
    assert!(s(&f, "reason").contains("expired"), "{f}");
    assert!(w.audit_matching(|v| is(v, "auth_success", &[])).is_empty());
}

#[test]
fn unknown_option_refuses_the_key_and_says_why() {
    let odd = SshClient::new();
    let fine = SshClient::new();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_file = keys_dir.path().join("authorized_keys");
    fs::write(
        &keys_file,
        format!(
            "frobnicate {}\nno-pty {}\n",
            odd.key.public_line, fine.key.public_line
        ),
    )
    .unwrap();
    let w = Warrend::start(&format!(
        "[users.alice]\nauthorized_keys = {}\n\n",
        toml_str(&keys_file)
    ));
    trust_all(&w, &[&odd, &fine]);

    assert!(
        !can_log_in(&w, &odd, "alice"),
        "the unknown option was ignored"
    );
    let line = w
        .proc()
        .wait_for_stderr(|l| l.contains("unknown option 'frobnicate'"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("warrend did not say why:\n{e}"));
    assert!(
        line.contains(&format!("{}:1", keys_file.display())),
        "the log must name file and line: {line}"
    );
    // Only the line with the unknown option is refused, not the whole file.
    assert!(can_log_in(&w, &fine, "alice"));
    let ok = w.wait_audit("the other line's login", |v| {
        is(v, "auth_success", &[("user", "alice")])
    });
    assert_eq!(
        s(&ok, "key_source"),
        format!("{}:2", keys_file.display()),
        "{ok}"
    );
}

// ---------------------------------------------------------------------------
// Per-session and per-user limits
// ---------------------------------------------------------------------------

#[test]
fn max_channels_per_session_refuses_the_third_channel() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start_with(
        &user("alice", &[&alice], &format!("connect = [\"{target}\"]")),
        &[("max_channels_per_session", "2")],
    );
    trust_all(&w, &[&alice]);
    let (ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&target)]);

    // Two channels, each relaying (so counted) before the next is opened.
    let mut first = connect(addrs[0]);
    ping(&mut first, 1).unwrap();
    let mut second = connect(addrs[0]);
    ping(&mut second, 2).unwrap();

    let mut third = connect(addrs[0]);
    let _ = third.write_all(b"x");
    let (got, closed) = read_until_closed(&mut third, READY_TIMEOUT);
    assert!(got.is_empty(), "the third channel carried data: {got:?}");
    assert!(closed.is_some(), "the third connection was left hanging");
    ssh.wait_for_stderr(
        |l| l.contains("open failed: resource shortage"),
        READY_TIMEOUT,
    )
    .unwrap();
    let deny = w.wait_audit("the refused third channel", |v| {
        is(v, "channel_open", &[("decision", "deny")])
    });
    assert!(
        s(&deny, "reason").contains("max_channels_per_session"),
        "{deny}"
    );

    // The first two are untouched; closing one makes room again.
    ping(&mut first, 3).unwrap();
    ping(&mut second, 4).unwrap();
    drop(first);
    w.wait_audit("the first channel's close", |v| {
        is(v, "channel_close", &[("target", &target)])
    });
    let mut fourth = connect(addrs[0]);
    ping(&mut fourth, 5).unwrap();
    ping(&mut second, 6).unwrap();
    assert_eq!(
        w.audit_matching(|v| is(v, "channel_open", &[("decision", "deny")]))
            .len(),
        1
    );
}

#[test]
fn concurrent_channel_opens_cannot_exceed_max_channels_per_session() {
    const MAX: usize = 2;
    const TRIES: usize = 24;
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let p = echo.port();
    // A name, as a browser behind -D would ask for: warrend resolves it before it dials.
    let target = format!("localhost:{p}");
    let w = Warrend::start_with(
        &user(
            "alice",
            &[&alice],
            &format!("connect = [\"localhost:{p}\", \"127.0.0.1:{p}\", \"[::1]:{p}\"]"),
        ),
        &[("max_channels_per_session", &MAX.to_string())],
    );
    trust_all(&w, &[&alice]);
    let (_ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&target)]);

    // Open them all at once and keep them open.
    let mut conns: Vec<TcpStream> = (0..TRIES).map(|_| connect(addrs[0])).collect();
    let mut through = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        if ping(c, i as u8).is_ok() {
            through += 1;
        }
    }
    let allowed = w.audit_matching(|v| is(v, "channel_open", &[("decision", "allow")]));
    assert!(
        through <= MAX && allowed.len() <= MAX,
        "max_channels_per_session = {MAX}, yet {through} of {TRIES} simultaneous \
         connections got through ({} allowed in the audit)",
        allowed.len()
    );
}

#[test]
fn max_sessions_per_user_refuses_a_second_login() {
    let alice = SshClient::new();
    let bob = SshClient::new();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start_with(
        &format!(
            "{}{}",
            user("alice", &[&alice], &format!("connect = [\"{target}\"]")),
            user("bob", &[&bob], "")
        ),
        &[("max_sessions_per_user", "1")],
    );
    trust_all(&w, &[&alice, &bob]);
    let (first, addrs) = alice.local_forwards(&w, "alice", &[Some(&target)]);

    assert!(!can_log_in(&w, &alice, "alice"), "a second session got in");
    let f = w.wait_audit("the refused second session", |v| {
        is(v, "auth_failure", &[("user", "alice")])
    });
    assert!(s(&f, "reason").contains("max_sessions_per_user"), "{f}");
    assert!(can_log_in(&w, &bob, "bob"), "the limit is per user");
    assert_eq!(
        exchange(connect(addrs[0]), b"first", IO_TIMEOUT).unwrap(),
        b"first"
    );

    // The slot is freed when the first session ends.
    let first_conn = conn_of(&w.wait_audit("alice's login", |v| {
        is(v, "auth_success", &[("user", "alice")])
    }));
    first.kill();
    w.wait_audit("the first session's end", |v| {
        is(v, "session_end", &[("user", "alice")]) && conn_of(v) == first_conn
    });
    assert!(can_log_in(&w, &alice, "alice"));
}

#[test]
fn max_auth_tries_counts_refused_keys_like_sshd() {
    let alice = SshClient::new();
    let dir = alice.home.ssh_dir().join("others");
    let wrong: Vec<UserKey> = (0..2)
        .map(|_| UserKey::generate(&dir, "ed25519", None))
        .collect();
    let w = Warrend::start_with(&user("alice", &[&alice], ""), &[("max_auth_tries", "2")]);
    trust_all(&w, &[&alice]);
    let attempt = |wrong: &[UserKey]| {
        // -i keys come before the config's IdentityFile (alice's real key).
        let mut cmd = alice.ssh_warrend(&w);
        for k in wrong {
            cmd.arg("-i").arg(&k.private);
        }
        cmd.arg(SshClient::dest("alice")).arg("true");
        Proc::spawn(cmd)
    };

    // sshd's MaxAuthTries 2 lets one refused key pass before the right one (the
    // client's initial "none" request is not a failure)...
    let one = attempt(&wrong[..1]);
    assert!(
        logged_in(&one),
        "{}\n{}",
        one.report("max_auth_tries = 2 refused a client whose second key was right"),
        w.proc().report("")
    );
    // ...and disconnects after the second refused key.
    let two = attempt(&wrong);
    assert!(
        !logged_in(&two),
        "{}",
        two.report("max_auth_tries = 2 let a third key be tried")
    );
    assert!(
        two.stderr_text().contains("Too many authentication"),
        "{}",
        two.report("")
    );
}

// ---------------------------------------------------------------------------
// Before authentication: login grace time, unauthenticated connection caps
// ---------------------------------------------------------------------------

#[test]
fn login_grace_time_drops_a_silent_client() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[("login_grace_time", "\"1s\"")],
    );
    trust_all(&w, &[&alice]);
    let mut silent = connect(w.addr());
    let (got, closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    let closed = closed.unwrap_or_else(|| {
        panic!(
            "a client that says nothing is still connected after 5 s (login_grace_time 1s)\n{}",
            w.proc().report("")
        )
    });
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );
    assert!(got.starts_with(b"SSH-2.0-"), "{got:?}");
    w.wait_audit("the silent client's end", |v| {
        is(
            v,
            "session_end",
            &[("reason", "closed before authentication")],
        )
    });
    // A real login is quicker than the grace time.
    assert!(can_log_in(&w, &alice, "alice"));
}

#[test]
fn login_grace_time_drops_a_client_that_stops_after_its_banner() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[
            ("login_grace_time", "\"1s\""),
            ("max_unauthenticated", "1"),
            ("max_unauthenticated_per_source", "1"),
        ],
    );
    trust_all(&w, &[&alice]);
    let mut stalled = raw_client(&w, [127, 0, 0, 1]);
    stalled
        .write_all(b"SSH-2.0-OpenSSH_9.2 stalled\r\n")
        .unwrap();
    // warrend answers with its KEXINIT, then the client never sends its own.
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(5));
    assert!(
        closed.is_some(),
        "a client that stopped after its banner is still connected after 5 s \
         (login_grace_time 1s)\n{}",
        w.proc().report("")
    );
    // The test keeps its end open: warrend must not wait for it to be closed before
    // freeing the connection's unauthenticated slot (max_unauthenticated = 1).
    w.wait_audit("the stalled client's end", |v| {
        is(
            v,
            "session_end",
            &[("reason", "closed before authentication")],
        )
    });
    assert!(can_log_in(&w, &alice, "alice"));
    drop(stalled);
}

/// After the idle `conns` are closed and warrend has ended them, a real login works.
fn idle_gone_login_works(w: &Warrend, alice: &SshClient, conns: Vec<TcpStream>) {
    let count = conns.len();
    drop(conns);
    w.wait_audit_count("the idle connections' ends", count, |v| {
        is(
            v,
            "session_end",
            &[("reason", "closed before authentication")],
        )
    });
    assert!(can_log_in(w, alice, "alice"));
}

#[test]
fn max_unauthenticated_drops_connections_beyond_the_cap() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[
            ("max_unauthenticated", "2"),
            ("max_unauthenticated_per_source", "2"),
        ],
    );
    trust_all(&w, &[&alice]);
    // Two sources, one idle connection each: the server-wide cap is full, no source's is.
    let idle = vec![
        raw_client(&w, [127, 0, 0, 2]),
        raw_client(&w, [127, 0, 0, 3]),
    ];

    assert_dropped_unheard(&w, [127, 0, 0, 4]);
    let t = w.wait_audit("the throttled connection", |v| is(v, "throttled", &[]));
    assert!(s(&t, "reason").contains("max_unauthenticated"), "{t}");
    assert!(s(&t, "source").starts_with("127.0.0.4:"), "{t}");
    assert!(
        !can_log_in(&w, &alice, "alice"),
        "a login got past max_unauthenticated"
    );

    idle_gone_login_works(&w, &alice, idle);
    assert_eq!(w.audit_matching(|v| is(v, "throttled", &[])).len(), 2);
}

#[test]
fn max_unauthenticated_per_source_drops_connections_beyond_the_cap() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[("max_unauthenticated_per_source", "2")],
    );
    trust_all(&w, &[&alice]);
    let mut idle = vec![
        raw_client(&w, [127, 0, 0, 1]),
        raw_client(&w, [127, 0, 0, 1]),
    ];

    assert_dropped_unheard(&w, [127, 0, 0, 1]);
    let t = w.wait_audit("the throttled connection", |v| is(v, "throttled", &[]));
    assert!(
        s(&t, "reason").contains("too many unauthenticated connections from 127.0.0.1/32"),
        "{t}"
    );
    assert!(s(&t, "source").starts_with("127.0.0.1:"), "{t}");
    // Another source is not affected.
    idle.push(raw_client(&w, [127, 0, 0, 2]));
    assert!(
        !can_log_in(&w, &alice, "alice"),
        "a login from 127.0.0.1 got past max_unauthenticated_per_source"
    );

    idle_gone_login_works(&w, &alice, idle);
    assert_eq!(w.audit_matching(|v| is(v, "throttled", &[])).len(), 2);
}

#[test]
fn max_unauthenticated_per_source_does_not_count_a_login_against_itself() {
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[("max_unauthenticated_per_source", "1")],
    );
    trust_all(&w, &[&alice]);
    // One connection from the source, and it is the one logging in: within the limit.
    assert!(
        can_log_in(&w, &alice, "alice"),
        "max_unauthenticated_per_source = 1 refused the only connection:\n{}",
        w.proc().stdout_text()
    );
    assert!(w.audit_matching(|v| is(v, "auth_failure", &[])).is_empty());
}

// ---------------------------------------------------------------------------
// Idle channels and dead clients
// ---------------------------------------------------------------------------

#[test]
fn channel_idle_timeout_closes_idle_channels_only() {
    const WINDOW: Duration = Duration::from_millis(2500);
    const PACE: Duration = Duration::from_millis(100);
    let alice = SshClient::new();
    let quiet = EchoServer::start();
    let chatty = EchoServer::start();
    let quiet_t = format!("127.0.0.1:{}", quiet.port());
    let chatty_t = format!("127.0.0.1:{}", chatty.port());
    let w = Warrend::start_with(
        &user(
            "alice",
            &[&alice],
            &format!("connect = [\"{quiet_t}\", \"{chatty_t}\"]"),
        ),
        &[("channel_idle_timeout", "\"1s\"")],
    );
    trust_all(&w, &[&alice]);
    let (ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&quiet_t), Some(&chatty_t)]);
    let mut idle = connect(addrs[0]);
    ping(&mut idle, 1).unwrap();
    let mut busy = connect(addrs[1]);
    ping(&mut busy, 1).unwrap();

    // For WINDOW, a byte each way on `busy` every PACE, where the pace is the wait for
    // `idle` to be closed (or, once it is, for stray data on `busy`).
    let start = Instant::now();
    let mut idle_closed = None;
    let mut i = 0u8;
    while start.elapsed() < WINDOW {
        i = i.wrapping_add(1);
        ping(&mut busy, i)
            .unwrap_or_else(|e| panic!("busy channel broke after {:?}: {e}", start.elapsed()));
        if idle_closed.is_none() {
            if closed_within(&mut idle, PACE) {
                idle_closed = Some(start.elapsed());
            }
        } else {
            assert!(!closed_within(&mut busy, PACE), "busy channel closed");
        }
    }
    let idle_closed = idle_closed.or_else(|| read_until_closed(&mut idle, READY_TIMEOUT).1);
    let idle_closed = idle_closed.unwrap_or_else(|| {
        panic!(
            "the idle channel was not closed (channel_idle_timeout 1s)\n{}",
            w.proc().report("")
        )
    });
    assert!(
        idle_closed >= Duration::from_millis(900),
        "closed after only {idle_closed:?}"
    );
    let close = w.wait_audit("the idle channel's close", |v| {
        is(v, "channel_close", &[("target", &quiet_t)])
    });
    assert!(s(&close, "close_reason").contains("idle"), "{close}");
    assert_eq!(n(&close, "bytes_up"), 1, "{close}");

    // The busy one outlived the timeout several times over and still works.
    ping(&mut busy, 0).unwrap();
    assert!(
        w.audit_matching(|v| is(v, "channel_close", &[("target", &chatty_t)]))
            .is_empty(),
        "the busy channel was closed"
    );
    drop(busy);
    let close = w.wait_audit("the busy channel's close", |v| {
        is(v, "channel_close", &[("target", &chatty_t)])
    });
    assert!(!s(&close, "close_reason").contains("idle"), "{close}");
    assert!(ssh.try_wait().is_none(), "the session must survive");
}

/// warrend with keepalive_interval 1s and keepalive_max 2: a client that stops
/// answering is dropped about 3 s after it last spoke.
const KEEPALIVE: &[(&str, &str)] = &[("keepalive_interval", "\"1s\""), ("keepalive_max", "2")];

/// How long a stopped client may keep its session: 3 s of keepalives and some slack.
const DEAD_CLIENT_DEADLINE: Duration = Duration::from_secs(6);

/// SIGSTOPs `ssh` (logged in as `login`, connection `conn`) and waits for warrend to
/// end its session; returns how long that took.
fn stop_and_wait_for_session_end(w: &Warrend, ssh: &Proc, login: &str, conn: u64) -> Duration {
    let stopped = Instant::now();
    ssh.signal(libc::SIGSTOP);
    w.wait_audit("the dead client's session_end", |v| {
        is(v, "session_end", &[("user", login)]) && conn_of(v) == conn
    });
    let took = stopped.elapsed();
    assert!(
        took < DEAD_CLIENT_DEADLINE,
        "the dead client kept its session for {took:?}"
    );
    took
}

#[test]
fn keepalive_frees_a_dead_clients_remote_forward_port() {
    let a = SshClient::new();
    let b = SshClient::new();
    let echo = EchoServer::start();
    let port = free_port();
    let listen = format!("listen = [\"127.0.0.1:{port}\"]");
    let w = Warrend::start_with(
        &format!("{}{}", user("a", &[&a], &listen), user("b", &[&b], &listen)),
        KEEPALIVE,
    );
    trust_all(&w, &[&a, &b]);
    let spec = format!("127.0.0.1:{port}:127.0.0.1:{}", echo.port());
    let bound = format!("127.0.0.1:{port}");

    let first = remote_forward(&w, &a, "a", &spec, &bound);
    let a_conn = conn_of(&w.wait_audit("a's login", |v| is(v, "auth_success", &[("user", "a")])));
    assert_eq!(
        exchange(connect(loopback(port)), b"a", IO_TIMEOUT).unwrap(),
        b"a"
    );
    // While a lives, the port is a's.
    remote_forward_refused(&w, &b, "b", &spec, port);

    stop_and_wait_for_session_end(&w, &first, "a", a_conn);

    let second = remote_forward(&w, &b, "b", &spec, &bound);
    assert_eq!(
        exchange(connect(loopback(port)), b"b", IO_TIMEOUT).unwrap(),
        b"b"
    );
    assert!(second.try_wait().is_none());
    first.kill();
}

#[test]
fn keepalive_unpublishes_a_dead_clients_rendezvous_name() {
    let pi = SshClient::new();
    let pi2 = SshClient::new();
    let bob = SshClient::new();
    let echo = EchoServer::start();
    let w = Warrend::start_with(
        &format!(
            "{}{}",
            user("pi", &[&pi, &pi2], "publish = [\"pi-home:7\"]"),
            user("bob", &[&bob], "reach = [\"pi-home:7\"]"),
        ),
        KEEPALIVE,
    );
    trust_all(&w, &[&pi, &pi2, &bob]);
    let spec = format!("pi-home:7:127.0.0.1:{}", echo.port());
    let reach = |payload: &[u8]| {
        let mut cmd = bob.ssh_warrend(&w);
        cmd.args(["-W", "pi-home:7"]).arg(SshClient::dest("bob"));
        let mut ssh = Proc::spawn_with_stdin(cmd);
        let mut stdin = ssh.take_stdin().unwrap();
        stdin.write_all(payload).unwrap();
        drop(stdin);
        ssh.expect_exit(READY_TIMEOUT);
        ssh
    };

    let first = remote_forward(&w, &pi, "pi", &spec, "pi-home:7");
    let pi_conn =
        conn_of(&w.wait_audit("pi's login", |v| is(v, "auth_success", &[("user", "pi")])));
    let ssh = reach(b"first");
    assert_eq!(ssh.stdout_text().trim(), "first", "{}", ssh.report(""));

    stop_and_wait_for_session_end(&w, &first, "pi", pi_conn);
    // The name is gone with the session: refused at once, not after a connect timeout.
    let started = Instant::now();
    let ssh = reach(b"nobody");
    assert_eq!(
        ssh.try_wait().unwrap().code(),
        Some(255),
        "{}",
        ssh.report("")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let deny = w.wait_audit("the reach of a dead name", |v| {
        is(
            v,
            "channel_open",
            &[("kind", "rendezvous-reach"), ("decision", "deny")],
        )
    });
    assert!(s(&deny, "reason").contains("nobody publishes"), "{deny}");

    let _second = remote_forward(&w, &pi2, "pi", &spec, "pi-home:7");
    let ssh = reach(b"second");
    assert_eq!(ssh.stdout_text().trim(), "second", "{}", ssh.report(""));
    first.kill();
}

#[test]
fn listeners_of_an_ended_session_are_audited_as_stopped() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let port = free_port();
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!("listen = [\"127.0.0.1:{port}\"]\npublish = [\"pi-home:7\"]"),
    ));
    trust_all(&w, &[&alice]);
    let mut cmd = alice.ssh_warrend(&w);
    cmd.args(["-v", "-N", "-R"])
        .arg(format!("127.0.0.1:{port}:127.0.0.1:{}", echo.port()))
        .arg("-R")
        .arg(format!("pi-home:7:127.0.0.1:{}", echo.port()))
        .arg(SshClient::dest("alice"));
    let ssh = Proc::spawn(cmd);
    w.wait_audit_count("both listen_start allows", 2, |v| {
        is(v, "listen_start", &[("decision", "allow")])
    });
    let conn = conn_of(&w.wait_audit("alice's login", |v| is(v, "auth_success", &[])));

    ssh.kill();
    w.wait_audit("the session's end", |v| {
        is(v, "session_end", &[("user", "alice")]) && conn_of(v) == conn
    });
    // The listeners die with the session (in the same drop that records its end), so
    // their stops are in the log by now, like a cancel's would be.
    let stops = w.audit_matching(|v| is(v, "listen_stop", &[]) && conn_of(v) == conn);
    for (kind, address, p) in [
        ("tcpip-forward", "127.0.0.1", u64::from(port)),
        ("rendezvous-publish", "pi-home", 7),
    ] {
        assert!(
            stops.iter().any(
                |v| is(v, "listen_stop", &[("kind", kind), ("address", address)])
                    && n(v, "port") == p
            ),
            "no listen_stop for the {kind} {address}:{p} of the ended session: {stops:?}\n{}",
            w.proc().stdout_text()
        );
    }
}

#[test]
fn a_channel_cut_by_the_clients_death_keeps_its_byte_counts() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!("connect = [\"{target}\"]"),
    ));
    trust_all(&w, &[&alice]);
    let (ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&target)]);
    let mut conn = connect(addrs[0]);
    let data = pattern_bytes(1000, 71);
    conn.write_all(&data).unwrap();
    let mut back = vec![0u8; data.len()];
    conn.read_exact(&mut back).unwrap();
    assert!(back == data);

    ssh.kill(); // the channel never sees an EOF
    let close = w.wait_audit("the cut channel's close", |v| {
        is(v, "channel_close", &[("target", &target)])
    });
    assert_eq!(n(&close, "bytes_up"), 1000, "{close}");
    assert_eq!(n(&close, "bytes_down"), 1000, "{close}");
}

// ---------------------------------------------------------------------------
// Accept errors and SIGTERM
// ---------------------------------------------------------------------------

/// Number of file descriptors `pid` has open.
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

#[test]
fn accept_errors_do_not_stop_the_server() {
    const CONNS: usize = 24;
    let alice = SshClient::new();
    let w = Warrend::start_with(
        &user("alice", &[&alice], ""),
        &[
            ("max_unauthenticated", "1000"),
            ("max_unauthenticated_per_source", "1000"),
        ],
    );
    trust_all(&w, &[&alice]);
    assert!(can_log_in(&w, &alice, "alice"));
    let pid = w.proc().pid();
    // Room for a few more descriptors than warrend holds now.
    let limit = open_fds(pid) + 6;
    let mut cmd = Command::new("prlimit");
    cmd.arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={limit}:{limit}"));
    run_ok(cmd);

    let flood: Vec<TcpStream> = (0..CONNS).map(|_| connect(w.addr())).collect();
    w.proc()
        .wait_for_stderr(|l| l.contains("accept failed"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("warrend never ran out of descriptors:\n{e}"));
    assert!(w.proc().try_wait().is_none(), "warrend died of EMFILE");

    // Once the flood is gone every queued connection is accepted (and ends), and a real
    // login works again.
    drop(flood);
    w.wait_audit_count("the flood's ends", CONNS, |v| {
        is(
            v,
            "session_end",
            &[("reason", "closed before authentication")],
        )
    });
    assert!(can_log_in(&w, &alice, "alice"));
    assert!(w.proc().try_wait().is_none());
}

#[test]
fn sigterm_disconnects_sessions_and_exits() {
    const LIVE: usize = 16;
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!("connect = [\"{target}\"]"),
    ));
    trust_all(&w, &[&alice]);
    let (ssh, addrs) = alice.local_forwards(&w, "alice", &[Some(&target)]);
    let mut live: Vec<TcpStream> = (0..LIVE).map(|_| connect(addrs[0])).collect();
    for (i, c) in live.iter_mut().enumerate() {
        ping(c, i as u8).unwrap();
    }

    let started = Instant::now();
    w.proc().signal(libc::SIGTERM);
    let status = w.proc().expect_exit(READY_TIMEOUT);
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", w.proc().report(""));
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?}");

    // The client heard why, and its forwarded connection ended.
    let status = ssh.expect_exit(READY_TIMEOUT);
    assert_eq!(status.code(), Some(255), "{}", ssh.report(""));
    assert!(
        ssh.stderr_text().contains("warrend is shutting down"),
        "{}",
        ssh.report("")
    );
    for c in &mut live {
        let (_, closed) = read_until_closed(c, READY_TIMEOUT);
        assert!(closed.is_some(), "a forwarded connection is still open");
    }

    let err = TcpStream::connect(w.addr()).expect_err("warrend still accepts");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    // The audit log is complete and ends with server_stop: every channel's close and
    // the session's end come before it.
    let audit = w.audit();
    let names: Vec<&str> = audit.iter().map(|v| s(v, "event")).collect();
    assert_eq!(
        names.iter().filter(|e| **e == "channel_close").count(),
        LIVE,
        "{names:?}"
    );
    assert!(names.contains(&"session_end"), "{names:?}");
    assert_eq!(
        names.last(),
        Some(&"server_stop"),
        "records after server_stop: {names:?}"
    );
}

/// Waits until connecting to `addr` is refused.
fn wait_refused(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(()),
            other => {
                if Instant::now() + pause >= deadline {
                    return Err(format!("{addr} still not refused: {other:?}"));
                }
                // Paces the connect attempts, which are the signal waited for.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn sigterm_stops_accepting_at_once_even_while_a_client_hangs() {
    let alice = SshClient::new();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let w = Warrend::start(&user(
        "alice",
        &[&alice],
        &format!("connect = [\"{target}\"]"),
    ));
    trust_all(&w, &[&alice]);
    let (hung, _) = alice.local_forwards(&w, "alice", &[Some(&target)]);
    w.wait_audit("alice's login", |v| is(v, "auth_success", &[]));
    hung.signal(libc::SIGSTOP); // will never answer the disconnect

    let started = Instant::now();
    w.proc().signal(libc::SIGTERM);
    wait_refused(w.addr(), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.proc().report("")));
    // Within warrend's shutdown grace for sessions that do not say goodbye, and a margin.
    let status = w.proc().expect_exit(READY_TIMEOUT);
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", w.proc().report(""));
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    let audit = w.audit();
    assert_eq!(
        s(audit.last().unwrap(), "event"),
        "server_stop",
        "{audit:#?}"
    );
    hung.kill();
}
