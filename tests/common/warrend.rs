//! A private `warrend` for integration tests, and OpenSSH / warren clients pointed at it.
//!
//! Same rules as the rest of the fixture: loopback and ephemeral ports only
//! (warrend listens on `127.0.0.1:0` and the test reads the port from its
//! `... warrend: listening on 127.0.0.1:PORT` line), a temporary directory for
//! the config, state (host key) and client files, and readiness taken from
//! real signals: warrend's stderr, its audit log (JSON lines on stdout,
//! captured by [`Proc`]) and `ssh -v`'s own "listening" lines.

use super::{ClientHome, Proc, READY_TIMEOUT, UserKey, free_port, warren_bin};
use serde_json::Value;
use std::cell::Cell;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// Path of the `warrend` binary built by cargo for this test run.
pub fn warrend_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warrend"))
}

/// `[limits]` every fixture warrend starts with: no rejection delay worth
/// waiting for, and a brute-force limit no ordinary test reaches. A test
/// overrides any of them (or adds others) with [`Warrend::start_with`].
const DEFAULT_LIMITS: &[(&str, &str)] = &[
    ("auth_rejection_delay", "\"1ms\""),
    ("max_failed_auth_per_source", "1000"),
    ("max_unauthenticated_per_source", "64"),
];

/// A running warrend with its own config, state directory and audit log.
/// Dropping it kills warrend (and with it every session).
pub struct Warrend {
    dir: TempDir,
    config: PathBuf,
    header: String,
    port: u16,
    host_key: String,
    proc: Proc,
}

impl Warrend {
    /// Starts warrend with the fixture's limits and `users` (TOML text of
    /// `[users.NAME]` sections, written verbatim after `[server]` and `[limits]`).
    pub fn start(users: &str) -> Warrend {
        Self::start_with(users, &[])
    }

    /// Like [`Warrend::start`], with `limits` (`("key", "toml value")`)
    /// replacing or adding to the fixture's `[limits]`.
    pub fn start_with(users: &str, limits: &[(&str, &str)]) -> Warrend {
        Self::start_with_server(users, limits, &[])
    }

    /// A TCP connection to warrend from the loopback address `from` (any of
    /// 127.0.0.0/8, so per-source limits can be told from server-wide ones).
    pub fn connect_from(&self, from: [u8; 4]) -> std::net::TcpStream {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from((from, 0)).into())
            .unwrap_or_else(|e| panic!("bind {from:?}: {e}"));
        socket
            .connect_timeout(&self.addr().into(), READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect from {from:?}: {e}"));
        socket.into()
    }

    /// The port warrend listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The temporary directory holding the config (relative paths in it,
    /// such as `authorized_keys = "bob.keys"`, are relative to this one).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The warrend process (stderr diagnostics, stdout audit, signals).
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The host key as "<algorithm> <base64>".
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// `[127.0.0.1]:PORT <algorithm> <base64>` for a known_hosts file.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key)
    }

    /// Replaces the `[users...]` part of the config file (the server and
    /// limits sections stay); takes effect on [`Warrend::reload`].
    pub fn rewrite_users(&self, users: &str) {
        fs::write(&self.config, format!("{}{users}", self.header)).expect("rewrite warrend.toml");
    }

    /// Sends SIGHUP and waits until warrend says it reloaded; panics if it
    /// kept the old configuration.
    pub fn reload(&self) {
        let from = self.proc.stderr_line_count();
        self.proc.signal(libc::SIGHUP);
        let line = self
            .proc
            .wait_for_stderr_from(
                from,
                |l| l.contains("configuration reloaded") || l.contains("reload failed"),
                READY_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("no reload line:\n{e}"));
        assert!(line.contains("configuration reloaded"), "{line}");
    }

    /// Every audit record so far.
    pub fn audit(&self) -> Vec<Value> {
        self.proc
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Audit records so far that satisfy `pred`.
    pub fn audit_matching(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.audit().into_iter().filter(|v| pred(v)).collect()
    }

    /// Waits until the audit log has a record satisfying `pred` and returns it.
    pub fn wait_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_audit_count(what, 1, pred).remove(0)
    }

    /// Waits until `n` audit records satisfy `pred`; returns them in order.
    pub fn wait_audit_count(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        // The predicate sees each stdout line once, in order, so counting
        // the matches it has seen tells when the n-th one arrived.
        let seen = Cell::new(0usize);
        let res = self.proc.wait_for_stdout(
            |l| {
                if serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v)) {
                    seen.set(seen.get() + 1);
                }
                seen.get() >= n
            },
            READY_TIMEOUT,
        );
        if let Err(e) = res {
            panic!(
                "audit: expected {n} record(s) of {what}, saw {}:\n{e}",
                seen.get()
            );
        }
        let all = self.audit_matching(pred);
        assert!(all.len() >= n, "audit: {what}: {all:?}");
        all
    }
}

/// A TOML basic string holding `path`.
pub fn toml_str(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("json string")
}

/// `v[key]` as a string ("" when missing or not a string).
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `v[key]` as a number (`u64::MAX` when missing).
pub fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(u64::MAX)
}

/// True for an audit record of `event` whose `fields` all equal the given strings.
pub fn is(v: &Value, event: &str, fields: &[(&str, &str)]) -> bool {
    s(v, "event") == event && fields.iter().all(|(k, want)| s(v, k) == *want)
}

/// A client of warrend: a private HOME with a fresh ed25519 key, a
/// known_hosts file trusting warrend, and an ssh_config holding every
/// isolation option, so that `ssh -F <config>` (which OpenSSH also passes to
/// the jump ssh of `-J`) never reads the developer's files or agent.
pub struct SshClient {
    pub home: ClientHome,
    pub key: UserKey,
    config: PathBuf,
}

impl SshClient {
    /// A client with a fresh key and an empty known_hosts: generate the
    /// keys first, start warrend with them, then [`SshClient::trust_warrend`].
    pub fn new() -> SshClient {
        let home = ClientHome::new();
        let key = UserKey::generate(home.ssh_dir(), "ed25519", None);
        fs::write(home.known_hosts(), "").expect("write known_hosts");
        let config = home.ssh_dir().join("test_ssh_config");
        fs::write(
            &config,
            format!(
                "Host *\n\
                 \x20 BatchMode yes\n\
                 \x20 IdentitiesOnly yes\n\
                 \x20 IdentityAgent none\n\
                 \x20 IdentityFile {key}\n\
                 \x20 UserKnownHostsFile {kh}\n\
                 \x20 GlobalKnownHostsFile /dev/null\n\
                 \x20 StrictHostKeyChecking yes\n\
                 \x20 UpdateHostKeys no\n\
                 \x20 ExitOnForwardFailure yes\n\
                 \x20 PasswordAuthentication no\n\
                 \x20 KbdInteractiveAuthentication no\n\
                 \x20 ControlMaster no\n\
                 \x20 ControlPath none\n\
                 \x20 ConnectTimeout 10\n",
                key = key.private.display(),
                kh = home.known_hosts().display(),
            ),
        )
        .expect("write ssh config");
        SshClient { home, key, config }
    }

    /// Trusts `warrend`'s host key (`[127.0.0.1]:PORT` in known_hosts).
    pub fn trust_warrend(&self, warrend: &Warrend) {
        self.trust(&warrend.known_hosts_line());
    }

    /// This client's public key line as a TOML string, for `keys = [...]`.
    pub fn key_toml(&self) -> String {
        serde_json::to_string(&self.key.public_line).expect("json string")
    }

    /// Adds a known_hosts line (e.g. `pi-home ssh-ed25519 AAAA...`).
    pub fn trust(&self, line: &str) {
        let mut text = fs::read_to_string(self.home.known_hosts()).unwrap_or_default();
        text.push_str(line.trim_end());
        text.push('\n');
        fs::write(self.home.known_hosts(), text).expect("write known_hosts");
    }

    /// The ssh_config file (for `-F`).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// `ssh -F <config>` with no agent and HOME set; append options, a
    /// destination and a command.
    pub fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        self.home.apply(&mut cmd);
        cmd.arg("-F").arg(&self.config);
        cmd
    }

    /// `ssh -F <config> -p <warrend port>`; append options, then
    /// [`SshClient::dest`] and possibly a command.
    pub fn ssh_warrend(&self, warrend: &Warrend) -> Command {
        let mut cmd = self.ssh();
        cmd.arg("-p").arg(warrend.port().to_string());
        cmd
    }

    /// `user@127.0.0.1`.
    pub fn dest(user: &str) -> String {
        format!("{user}@127.0.0.1")
    }

    /// `user@127.0.0.1:<warrend port>`, for `-J`.
    pub fn jump(warrend: &Warrend, user: &str) -> String {
        format!("{user}@127.0.0.1:{}", warrend.port())
    }

    /// Starts `ssh -v -N` logged in to warrend as `user` with one local
    /// listener per entry of `targets`: `-L 127.0.0.1:P:<target>` for `Some(target)`,
    /// `-D 127.0.0.1:P` for `None`. Waits until ssh says every listener is up
    /// (it binds them only after authentication) and returns their
    /// addresses. Listen ports come from [`free_port`]; if one was taken in
    /// the meantime ssh exits (ExitOnForwardFailure) and this tries again.
    pub fn local_forwards(
        &self,
        warrend: &Warrend,
        user: &str,
        targets: &[Option<&str>],
    ) -> (Proc, Vec<SocketAddr>) {
        let mut failures = String::new();
        for _attempt in 0..5 {
            let ports: Vec<u16> = targets.iter().map(|_| free_port()).collect();
            let mut cmd = self.ssh_warrend(warrend);
            cmd.args(["-v", "-N"]);
            for (port, target) in ports.iter().zip(targets) {
                match target {
                    Some(t) => cmd.arg("-L").arg(format!("127.0.0.1:{port}:{t}")),
                    None => cmd.arg("-D").arg(format!("127.0.0.1:{port}")),
                };
            }
            cmd.arg(Self::dest(user));
            let proc = Proc::spawn(cmd);
            let mut ok = true;
            for port in &ports {
                let ready = local_forward_ready(*port);
                if let Err(e) = proc.wait_for_stderr(|l| l == ready, READY_TIMEOUT) {
                    if proc.stderr_text().contains("Address already in use") {
                        failures.push_str(&e);
                        ok = false;
                        break;
                    }
                    panic!("ssh forwards not ready:\n{e}");
                }
            }
            if ok {
                // ssh logs "listening" just before it calls listen(): wait for the socket
                // to be in LISTEN, without connecting (a connection would open a channel).
                for port in &ports {
                    wait_listening(*port);
                }
                let addrs = ports
                    .iter()
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                    .collect();
                return (proc, addrs);
            }
        }
        panic!("could not bind local forwards in 5 attempts:\n{failures}");
    }

    /// `warren -v` with this client's HOME (whose known_hosts trusts
    /// warrend), no agent, BatchMode, pointed at warrend, with this
    /// client's key. Append flags and the destination.
    pub fn warren(&self, warrend: &Warrend) -> Command {
        let mut cmd = Command::new(warren_bin());
        self.home.apply(&mut cmd);
        cmd.env_remove("RUST_LOG")
            .args([
                "-v",
                "-o",
                "BatchMode=yes",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
            ])
            .arg("-p")
            .arg(warrend.port().to_string())
            .arg("-i")
            .arg(&self.key.private);
        cmd
    }
}

/// Waits until 127.0.0.1:`port` is a listening TCP socket, in this thread's network
/// namespace (tests run some threads inside one they made).
pub fn wait_listening(port: u16) {
    let want = format!("0100007F:{port:04X}");
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let table = fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default();
        let listening = table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        });
        if listening {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "127.0.0.1:{port} never listened"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What `ssh -v` (OpenSSH 9.2) prints once a `-L`/`-D` listener is bound.
pub fn local_forward_ready(port: u16) -> String {
    format!("debug1: Local forwarding listening on 127.0.0.1 port {port}.")
}

/// Waits for `proc` to exit and returns its exit code, panicking with its
/// output after `timeout`.
pub fn exit_code(proc: &Proc, timeout: Duration) -> Option<i32> {
    proc.expect_exit(timeout).code()
}

impl Default for SshClient {
    fn default() -> Self {
        Self::new()
    }
}

/// What warrend tells `ssh host` and `ssh host command`.
pub const NO_SHELL: &str = "this server only forwards ports; use ssh -N";

/// A `[users.NAME]` section with `clients`' keys inline and `rules` (TOML lines).
pub fn user(name: &str, clients: &[&SshClient], rules: &str) -> String {
    let keys: Vec<String> = clients.iter().map(|c| c.key_toml()).collect();
    format!("[users.{name}]\nkeys = [{}]\n{rules}\n\n", keys.join(", "))
}

/// Trusts `w` in every client's known_hosts.
pub fn trust_all(w: &Warrend, clients: &[&SshClient]) {
    for c in clients {
        c.trust_warrend(w);
    }
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs `ssh <dest> true` as `login` and tells whether warrend let it in: a logged-in
/// session is refused its command with exit 1 and [`NO_SHELL`]; a refused login ends
/// with 255.
pub fn can_log_in(w: &Warrend, c: &SshClient, login: &str) -> bool {
    let mut cmd = c.ssh_warrend(w);
    cmd.arg(SshClient::dest(login)).arg("true");
    logged_in(&Proc::spawn(cmd))
}

/// [`can_log_in`]'s verdict on an `ssh ... true` already started.
pub fn logged_in(ssh: &Proc) -> bool {
    match exit_code(ssh, READY_TIMEOUT) {
        Some(1) if ssh.stderr_text().contains(NO_SHELL) => true,
        Some(255) => false,
        other => panic!("{}", ssh.report(&format!("unexpected exit {other:?}"))),
    }
}

impl Warrend {
    /// Like [`Warrend::start_with`], with `server` (`("key", "toml value")`) replacing or
    /// adding to the fixture's `[server]` keys, e.g. an `audit_log` file instead of
    /// stdout. Readiness comes from warrend's "listening on" line on stderr, which does
    /// not depend on where the audit goes; with a file, [`Warrend::audit`] is empty.
    pub fn start_with_server(
        users: &str,
        limits: &[(&str, &str)],
        server: &[(&str, &str)],
    ) -> Warrend {
        let dir = tempfile::Builder::new()
            .prefix("warrend-")
            .tempdir()
            .expect("create warrend tempdir");
        let state = dir.path().join("state");
        let merge = |base: Vec<(String, String)>, over: &[(&str, &str)]| {
            let mut merged = base;
            for (k, v) in over {
                match merged.iter_mut().find(|(mk, _)| mk == k) {
                    Some(slot) => slot.1 = v.to_string(),
                    None => merged.push((k.to_string(), v.to_string())),
                }
            }
            merged
        };
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let server_keys = merge(
            vec![
                ("listen".into(), "[\"127.0.0.1:0\"]".into()),
                ("state_dir".into(), toml_str(&state)),
                ("host_keys".into(), "[\"ssh_host_ed25519_key\"]".into()),
                ("audit_log".into(), "\"stdout\"".into()),
            ],
            server,
        );
        let limit_keys = merge(owned(DEFAULT_LIMITS), limits);
        let mut header = String::from("[server]\n");
        for (k, v) in &server_keys {
            let _ = writeln!(header, "{k} = {v}");
        }
        header.push_str("\n[limits]\n");
        for (k, v) in &limit_keys {
            let _ = writeln!(header, "{k} = {v}");
        }
        header.push('\n');
        let config = dir.path().join("warrend.toml");
        fs::write(&config, format!("{header}{users}")).expect("write warrend.toml");

        let mut cmd = Command::new(warrend_bin());
        cmd.env_remove("RUST_LOG").arg("-f").arg(&config);
        let proc = Proc::spawn(cmd);
        let line = proc
            .wait_for_stderr(|l| l.contains("warrend: listening on "), READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("warrend did not start:\n{e}"));
        // After the timestamp warrend puts before each line.
        let addr: SocketAddr = line
            .split("warrend: listening on ")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad listening line {line:?}: {e}"));
        assert!(addr.ip().is_loopback(), "{line}");
        // The first host key, as configured (relative to the state dir, or absolute).
        let first_key = server_keys
            .iter()
            .find(|(k, _)| k == "host_keys")
            .and_then(|(_, v)| v.split('"').nth(1).map(str::to_string))
            .unwrap_or_else(|| "ssh_host_ed25519_key".into());
        let pub_file = PathBuf::from(format!("{}.pub", state.join(first_key).display()));
        let text = fs::read_to_string(&pub_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", pub_file.display()));
        let host_key: Vec<&str> = text.split_whitespace().take(2).collect();
        assert_eq!(host_key.len(), 2, "malformed host key {text:?}");
        Warrend {
            host_key: host_key.join(" "),
            dir,
            config,
            header,
            port: addr.port(),
            proc,
        }
    }
}
