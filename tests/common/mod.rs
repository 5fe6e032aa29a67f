//! Shared integration-test fixture for Warren.
//!
//! Every integration test that talks SSH goes through these helpers so that it
//! runs against a *real* OpenSSH server (never a mock), on loopback addresses
//! only, on ephemeral ports only, inside temporary directories only, and waits
//! on real readiness signals (a log line, a successful connect, a process exit)
//! with a deadline instead of sleeping. On timeout every helper fails with a
//! message that contains what the processes involved printed.
//!
//! Included with `mod common;` by several test files, so not every item is used
//! by every one of them.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Absolute path of the OpenSSH server: sshd refuses to re-exec itself for
/// each connection unless it was started through an absolute path.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Default deadline for readiness waits (sshd listening, a forward ready, ...).
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default deadline for a single data transfer in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times `Sshd::start*` retries when its ephemeral port was stolen
/// between choosing it and sshd binding it.
const SSHD_START_ATTEMPTS: usize = 5;

// ---------------------------------------------------------------------------
// Small pure helpers
// ---------------------------------------------------------------------------

/// Lower-case hex SHA-256 of `data`: the way tests compare large payloads
/// that went through a tunnel without printing megabytes on failure.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `n` deterministic pseudo-random bytes (splitmix64 of `seed`): payloads
/// that are incompressible and position-dependent, so reordered, dropped or
/// duplicated chunks change the hash, yet are reproducible from the seed.
pub fn pattern_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Path of the `warren` binary built by cargo for this test run.
pub fn warren_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warren"))
}

/// Runs `cmd` to completion (stdin closed) and panics with its output unless
/// it succeeded: for one-shot helper tools (ssh-keygen, ssh-add, ...).
pub fn run_ok(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    let desc = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    if !out.status.success() {
        panic!(
            "{desc} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Sends `sig` to process `pid` (libc `kill(2)`): lets tests deliver SIGTERM,
/// SIGHUP, SIGSTOP/SIGCONT ... to warren or sshd, and lets the fixture kill
/// whole process trees. Refuses pids <= 0, which would address process groups.
#[allow(unsafe_code)]
pub fn send_signal(pid: i32, sig: i32) -> io::Result<()> {
    assert!(pid > 0, "refusing to signal pid {pid} (process group)");
    // SAFETY: kill(2) takes two integers and has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// All live descendants of `pid` (children, grandchildren, ...), read from
/// /proc: sshd forks one privilege-separated process pair per connection, and
/// these must be found to cut connections or to avoid leaking processes.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may contain spaces and parens.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let _state = fields.next();
            if let Some(ppid) = fields.next().and_then(|s| s.parse::<i32>().ok()) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        if let Some(kids) = children.get(&p) {
            for &k in kids {
                out.push(k);
                queue.push(k);
            }
        }
    }
    out
}

/// Kills every descendant of `pid` (not `pid` itself) with SIGKILL after
/// freezing them with SIGSTOP, so none can fork a replacement in between.
/// Returns how many were killed.
fn kill_descendants(pid: i32) -> usize {
    let mut seen: HashSet<i32> = HashSet::new();
    loop {
        let new: Vec<i32> = descendants(pid)
            .into_iter()
            .filter(|p| !seen.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            let _ = send_signal(p, libc::SIGSTOP);
            seen.insert(p);
        }
    }
    for &p in &seen {
        let _ = send_signal(p, libc::SIGKILL);
    }
    seen.len()
}

/// Kills `pid` and all its descendants; the root is frozen first so that its
/// children are still attached to it (not re-parented) when they are listed.
fn kill_tree(pid: i32) {
    let _ = send_signal(pid, libc::SIGSTOP);
    kill_descendants(pid);
    let _ = send_signal(pid, libc::SIGKILL);
}

// ---------------------------------------------------------------------------
// Proc: a spawned child whose output is captured line by line
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Stream {
    lines: Vec<String>,
    /// Bytes after the last newline (e.g. a prompt); shown in reports only.
    partial: String,
    eof: bool,
}

impl Stream {
    fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        if !self.lines.is_empty() {
            s.push('\n');
        }
        s.push_str(&self.partial);
        s
    }
}

#[derive(Default)]
struct Captured {
    stdout: Stream,
    stderr: Stream,
    status: Option<ExitStatus>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Captured>,
    /// Notified on every new line, on EOF of a pipe and on process exit.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pipe {
    Stdout,
    Stderr,
}

impl Pipe {
    fn of(self, c: &Captured) -> &Stream {
        match self {
            Pipe::Stdout => &c.stdout,
            Pipe::Stderr => &c.stderr,
        }
    }
    fn of_mut(self, c: &mut Captured) -> &mut Stream {
        match self {
            Pipe::Stdout => &mut c.stdout,
            Pipe::Stderr => &mut c.stderr,
        }
    }
}

fn spawn_reader(
    name: String,
    pipe: Pipe,
    mut src: impl Read + Send + 'static,
    shared: Arc<Shared>,
) {
    let echo = std::env::var_os("WARREN_TEST_ECHO").is_some();
    thread::Builder::new()
        .name(format!("{name}-{pipe:?}"))
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => 0,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let mut st = shared.lock();
                let stream = pipe.of_mut(&mut st);
                if n == 0 {
                    if !pending.is_empty() {
                        let line = String::from_utf8_lossy(&pending).into_owned();
                        stream.lines.push(line);
                    }
                    stream.partial.clear();
                    stream.eof = true;
                    drop(st);
                    shared.changed.notify_all();
                    return;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let mut line: Vec<u8> = pending.drain(..=i).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let line = String::from_utf8_lossy(&line).into_owned();
                    if echo {
                        eprintln!("[{name} {pipe:?}] {line}");
                    }
                    stream.lines.push(line);
                }
                stream.partial = String::from_utf8_lossy(&pending).into_owned();
                drop(st);
                shared.changed.notify_all();
            }
        })
        .expect("spawn output reader thread");
}

/// A spawned child process (warren, ssh, sshd, ssh-agent, ...) whose stdout
/// and stderr are captured line by line by background threads, so tests can
/// wait for a real readiness line with a deadline and get everything the
/// process printed in the failure message. Dropping it kills the process and
/// all its descendants, so no test leaks processes, even when it panics (the
/// captured output is then printed to help diagnose the failure).
pub struct Proc {
    name: String,
    pid: u32,
    shared: Arc<Shared>,
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured. Panics (with
    /// the command line) if it cannot be started.
    pub fn spawn(cmd: Command) -> Proc {
        Self::spawn_inner(cmd, false)
    }

    /// Like [`Proc::spawn`] but with a pipe on stdin, see [`Proc::take_stdin`]
    /// (e.g. to feed a passphrase or to test behaviour on stdin EOF).
    pub fn spawn_with_stdin(cmd: Command) -> Proc {
        Self::spawn_inner(cmd, true)
    }

    fn spawn_inner(mut cmd: Command, piped_stdin: bool) -> Proc {
        let name = Path::new(cmd.get_program())
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "proc".to_string());
        cmd.stdin(if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let pid = child.id();
        let shared = Arc::new(Shared::default());
        spawn_reader(
            name.clone(),
            Pipe::Stdout,
            child.stdout.take().expect("stdout piped"),
            shared.clone(),
        );
        spawn_reader(
            name.clone(),
            Pipe::Stderr,
            child.stderr.take().expect("stderr piped"),
            shared.clone(),
        );
        let stdin = child.stdin.take();
        let waiter_shared = shared.clone();
        thread::Builder::new()
            .name(format!("{name}-wait"))
            .spawn(move || {
                let status = child.wait().expect("wait for child");
                // Publish the status only once the output pipes are drained,
                // so that "exited" implies "all output captured". A pipe kept
                // open by a surviving grandchild only delays this by a moment.
                let grace = Instant::now() + Duration::from_secs(2);
                let mut st = waiter_shared.lock();
                while !(st.stdout.eof && st.stderr.eof) {
                    let now = Instant::now();
                    if now >= grace {
                        break;
                    }
                    st = match waiter_shared.changed.wait_timeout(st, grace - now) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                }
                st.status = Some(status);
                drop(st);
                waiter_shared.changed.notify_all();
            })
            .expect("spawn waiter thread");
        Proc {
            name,
            pid,
            shared,
            stdin,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The stdin pipe when spawned with [`Proc::spawn_with_stdin`] (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Everything captured on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.shared.lock().stderr.text()
    }

    /// Everything captured on stdout so far.
    pub fn stdout_text(&self) -> String {
        self.shared.lock().stdout.text()
    }

    /// Complete stderr lines captured so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.shared.lock().stderr.lines.clone()
    }

    /// Complete stdout lines captured so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.shared.lock().stdout.lines.clone()
    }

    /// Number of complete stderr lines so far: remember it, then use
    /// [`Proc::wait_for_stderr_from`] to wait only for lines printed later.
    pub fn stderr_line_count(&self) -> usize {
        self.shared.lock().stderr.lines.len()
    }

    /// Waits until a stderr line (printed at any time) satisfies `pred`;
    /// returns that line, or an error with all captured output and the exit
    /// status on timeout or when stderr was closed without a match.
    pub fn wait_for_stderr(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        self.wait_for_line(Pipe::Stderr, 0, pred, timeout)
    }

    /// Like [`Proc::wait_for_stderr`] but only considers lines with index
    /// `>= start` (see [`Proc::stderr_line_count`]).
    pub fn wait_for_stderr_from(
        &self,
        start: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        self.wait_for_line(Pipe::Stderr, start, pred, timeout)
    }

    /// Like [`Proc::wait_for_stderr`], on stdout.
    pub fn wait_for_stdout(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        self.wait_for_line(Pipe::Stdout, 0, pred, timeout)
    }

    fn wait_for_line(
        &self,
        pipe: Pipe,
        start: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        let mut checked = start;
        loop {
            let stream = pipe.of(&st);
            if let Some(line) = stream.lines.iter().skip(checked).find(|l| pred(l)) {
                return Ok(line.clone());
            }
            checked = checked.max(stream.lines.len());
            if stream.eof {
                // No line can come any more; give the exit status a moment to
                // be reaped so that the report can show it.
                let grace = Instant::now() + Duration::from_secs(2);
                while st.status.is_none() {
                    let now = Instant::now();
                    if now >= grace {
                        break;
                    }
                    st = self.wait_changed(st, grace - now);
                }
                return Err(
                    self.report_locked(&st, &format!("{pipe:?} closed without a matching line"))
                );
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.report_locked(
                    &st,
                    &format!("timed out after {timeout:?} waiting for a matching {pipe:?} line"),
                ));
            }
            st = self.wait_changed(st, deadline - now);
        }
    }

    fn wait_changed<'a>(
        &self,
        st: MutexGuard<'a, Captured>,
        d: Duration,
    ) -> MutexGuard<'a, Captured> {
        match self.shared.changed.wait_timeout(st, d) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        }
    }

    /// Exit status if the process has exited (never blocks). Once this is
    /// `Some`, everything the process printed has been captured.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.shared.lock().status
    }

    /// Waits up to `d` for the process to exit.
    pub fn wait_timeout(&self, d: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + d;
        let mut st = self.shared.lock();
        loop {
            if let Some(s) = st.status {
                return Some(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self.wait_changed(st, deadline - now);
        }
    }

    /// Waits up to `d` for the process to exit and panics with the captured
    /// output if it does not.
    pub fn expect_exit(&self, d: Duration) -> ExitStatus {
        self.wait_timeout(d)
            .unwrap_or_else(|| panic!("{}", self.report(&format!("did not exit within {d:?}"))))
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the process, if it is
    /// still running.
    pub fn signal(&self, sig: i32) {
        if self.try_wait().is_none() {
            let _ = send_signal(self.pid as i32, sig);
        }
    }

    /// SIGKILLs the process and all its descendants and waits for it.
    pub fn kill(&self) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            kill_tree(self.pid as i32);
        }
        self.wait_timeout(Duration::from_secs(10))
    }

    /// A failure message: `msg`, exit status, and all captured output.
    pub fn report(&self, msg: &str) -> String {
        let st = self.shared.lock();
        self.report_locked(&st, msg)
    }

    fn report_locked(&self, st: &Captured, msg: &str) -> String {
        let status = match st.status {
            Some(s) => format!("exited: {s}"),
            None => "still running".to_string(),
        };
        format!(
            "{} (pid {}): {msg}; {status}\n--- {} stderr ---\n{}\n--- {} stdout ---\n{}\n--- end {} ---",
            self.name,
            self.pid,
            self.name,
            st.stderr.text(),
            self.name,
            st.stdout.text(),
            self.name
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.report("test panicked; output so far"));
        }
        self.stdin.take();
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Sshd: a private OpenSSH server
// ---------------------------------------------------------------------------

/// Options for [`Sshd::start_with`].
#[derive(Clone, Debug)]
pub struct SshdOptions {
    /// Host key types to generate: any of "ed25519", "rsa" (3072 bits), "ecdsa".
    pub host_key_types: Vec<&'static str>,
    /// Extra sshd_config lines. sshd uses the *first* value of a keyword, so
    /// these lines are written before the fixture's defaults and override
    /// them; everything from the first `Match` line on is written at the end
    /// of the file instead, as sshd requires.
    pub extra_config: Vec<String>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            host_key_types: vec!["ed25519"],
            extra_config: Vec::new(),
        }
    }
}

/// One generated host key of an [`Sshd`].
#[derive(Clone, Debug)]
pub struct HostKey {
    /// "ed25519", "rsa" or "ecdsa".
    pub kind: String,
    /// Private key file (usable as a HostKey by another server).
    pub private: PathBuf,
    /// "<algorithm> <base64>" (no comment).
    pub public_line: String,
}

/// A private OpenSSH server (`/usr/sbin/sshd -D -e`) on 127.0.0.1 and an
/// ephemeral port, with its own host keys, config and authorized_keys in a
/// temporary directory: the real server warren must interoperate with. Never
/// touches the system sshd or its config. Dropping it kills sshd and every
/// per-connection sshd process it forked.
pub struct Sshd {
    dir: TempDir,
    port: u16,
    config: PathBuf,
    authorized_keys: PathBuf,
    host_keys: Vec<HostKey>,
    proc: Option<Proc>,
    /// Logs of earlier runs (before `stop`/`restart`) and failed attempts.
    past_logs: String,
    /// The address listened on (127.0.0.1 unless started in a namespace).
    listen: String,
    /// Run inside this network namespace (`ip netns exec`).
    netns: Option<String>,
}

impl Sshd {
    /// Starts sshd with default options (one ed25519 host key).
    pub fn start() -> Sshd {
        Self::start_with(SshdOptions::default())
    }

    /// Starts sshd with `opts`; panics with sshd's logs if it does not come up.
    pub fn start_with(opts: SshdOptions) -> Sshd {
        Self::start_at(opts, None, "127.0.0.1")
    }

    /// Starts sshd inside network namespace `netns`, listening on `listen` (an address of
    /// that namespace): a server on another "machine" of a test's virtual network.
    pub fn start_in_netns(netns: &str, listen: &str, opts: SshdOptions) -> Sshd {
        Self::start_at(opts, Some(netns.to_string()), listen)
    }

    fn start_at(opts: SshdOptions, netns: Option<String>, listen: &str) -> Sshd {
        ensure_privsep_dir();
        let dir = tempfile::Builder::new()
            .prefix("warren-sshd-")
            .tempdir()
            .expect("create sshd tempdir");
        let mut host_keys = Vec::new();
        for kind in &opts.host_key_types {
            let private = dir.path().join(format!("ssh_host_{kind}_key"));
            let mut cmd = Command::new("ssh-keygen");
            cmd.args(["-q", "-N", "", "-t", kind, "-C", ""]);
            if *kind == "rsa" {
                cmd.args(["-b", "3072"]);
            }
            cmd.arg("-f").arg(&private);
            run_ok(cmd);
            let public_line = read_public_line(&private.with_extension("pub"));
            host_keys.push(HostKey {
                kind: kind.to_string(),
                private,
                public_line,
            });
        }
        let authorized_keys = dir.path().join("authorized_keys");
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&authorized_keys)
            .expect("create authorized_keys");
        let config = dir.path().join("sshd_config");
        let mut sshd = Sshd {
            port: 0,
            config,
            authorized_keys,
            host_keys,
            proc: None,
            past_logs: String::new(),
            listen: listen.to_string(),
            netns,
            dir,
        };
        for attempt in 1..=SSHD_START_ATTEMPTS {
            sshd.port = free_port();
            sshd.write_config(&opts.extra_config);
            match sshd.launch() {
                Ok(()) => return sshd,
                Err(e) => {
                    let _ = writeln!(
                        sshd.past_logs,
                        "=== attempt {attempt} on port {} failed ===\n{e}",
                        sshd.port
                    );
                }
            }
        }
        panic!(
            "sshd did not start after {SSHD_START_ATTEMPTS} attempts:\n{}",
            sshd.past_logs
        );
    }

    fn write_config(&self, extra: &[String]) {
        let split = extra
            .iter()
            .position(|l| l.trim_start().to_ascii_lowercase().starts_with("match "))
            .unwrap_or(extra.len());
        let d = self.dir.path().display();
        let mut cfg = String::new();
        for l in &extra[..split] {
            cfg.push_str(l);
            cfg.push('\n');
        }
        let _ = writeln!(cfg, "Port {}", self.port);
        let _ = writeln!(cfg, "ListenAddress {}", self.listen);
        for k in &self.host_keys {
            let _ = writeln!(cfg, "HostKey {}", k.private.display());
        }
        let _ = writeln!(cfg, "PidFile {d}/sshd.pid");
        let _ = writeln!(cfg, "AuthorizedKeysFile {}", self.authorized_keys.display());
        cfg.push_str(
            "StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             AllowTcpForwarding yes\n\
             GatewayPorts no\n\
             LogLevel VERBOSE\n",
        );
        for l in &extra[split..] {
            cfg.push_str(l);
            cfg.push('\n');
        }
        fs::write(&self.config, cfg).expect("write sshd_config");
    }

    /// Spawns sshd on `self.port` and waits for its "Server listening" line.
    fn launch(&mut self) -> Result<(), String> {
        let mut cmd = match &self.netns {
            // `ip netns exec` execs sshd in place: the process is sshd itself.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, SSHD]);
                c
            }
            None => Command::new(SSHD),
        };
        cmd.arg("-D").arg("-e").arg("-f").arg(&self.config);
        let proc = Proc::spawn(cmd);
        let ready = format!("Server listening on {} port {}.", self.listen, self.port);
        let res = proc.wait_for_stderr(
            |l| {
                l.starts_with(&ready)
                    || (l.contains("Bind to port") && l.contains("failed"))
                    || l.contains("Cannot bind any address")
            },
            READY_TIMEOUT,
        );
        match res {
            Ok(line) if line.starts_with(&ready) => {
                self.proc = Some(proc);
                Ok(())
            }
            Ok(line) => {
                proc.kill();
                Err(proc.report(&format!("bind failed: {line}")))
            }
            Err(e) => {
                proc.kill();
                Err(e)
            }
        }
    }

    /// Port sshd listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's temporary directory (config, keys, pid file, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated sshd_config.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The authorized_keys file the server reads for every user.
    pub fn authorized_keys_path(&self) -> &Path {
        &self.authorized_keys
    }

    /// Generated host keys, in `host_key_types` order.
    pub fn host_keys(&self) -> &[HostKey] {
        &self.host_keys
    }

    /// Host public keys as "<algorithm> <base64>" lines.
    pub fn host_public_keys(&self) -> Vec<String> {
        self.host_keys
            .iter()
            .map(|k| k.public_line.clone())
            .collect()
    }

    /// known_hosts lines `[127.0.0.1]:PORT <algorithm> <base64>`, one per host key.
    pub fn known_hosts_lines(&self) -> Vec<String> {
        self.host_keys
            .iter()
            .map(|k| format!("[127.0.0.1]:{} {}", self.port, k.public_line))
            .collect()
    }

    /// [`Sshd::known_hosts_lines`] as newline-terminated text.
    pub fn known_hosts_line(&self) -> String {
        self.known_hosts_lines()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Writes (replaces) a known_hosts file trusting exactly this server.
    pub fn write_known_hosts(&self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create known_hosts dir");
        }
        fs::write(path, self.known_hosts_line()).expect("write known_hosts");
    }

    /// Appends a line (a public key, optionally prefixed with key options
    /// such as `permitopen="..."`) to authorized_keys. Takes effect for the
    /// next authentication; no restart needed.
    pub fn authorize(&self, pubkey_line: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .expect("open authorized_keys");
        writeln!(f, "{}", pubkey_line.trim_end()).expect("append authorized_keys");
    }

    /// The listening sshd's pid; panics if it is stopped.
    pub fn pid(&self) -> u32 {
        self.running().pid()
    }

    fn running(&self) -> &Proc {
        self.proc
            .as_ref()
            .expect("sshd is stopped (call restart first)")
    }

    /// Whether the listening sshd process is alive.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| p.try_wait().is_none())
    }

    /// All sshd logs: earlier runs, then the current run. Per-connection
    /// processes log here too ("Accepted publickey for root ...").
    pub fn logs(&self) -> String {
        let mut s = self.past_logs.clone();
        if let Some(p) = &self.proc {
            s.push_str(&p.stderr_text());
        }
        s
    }

    /// Waits for a log line of the current run satisfying `pred`.
    pub fn wait_for_log(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        self.running().wait_for_stderr(pred, timeout)
    }

    /// The current run's log as a [`Proc`] (for line counts, signals, ...).
    pub fn proc(&self) -> &Proc {
        self.running()
    }

    /// Kills every per-connection sshd process, keeping the listener: the
    /// client sees its connection dropped (TCP FIN) and can reconnect to the
    /// same server. Returns how many processes were killed.
    pub fn drop_connections(&self) -> usize {
        kill_descendants(self.pid() as i32)
    }

    /// Kills sshd and all its connections and waits; idempotent.
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill();
            self.past_logs.push_str(&p.stderr_text());
            let _ = writeln!(self.past_logs, "=== sshd stopped ===");
        }
    }

    /// Stops sshd (if running) and starts it again on the same port with the
    /// same host keys and config: the "server came back" half of reconnect
    /// tests. Panics with logs if it cannot bind the port again.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!("sshd restart on port {} failed:\n{e}", self.port);
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if thread::panicking() && self.proc.is_none() && !self.past_logs.is_empty() {
            eprintln!("--- sshd logs of earlier runs ---\n{}", self.past_logs);
        }
        // Proc's Drop kills sshd and its per-connection processes.
        self.proc.take();
    }
}

/// sshd refuses to start without its privilege-separation directory.
fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if !dir.is_dir() {
        fs::create_dir_all(dir).expect("create /run/sshd");
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}

/// First two fields ("<algorithm> <base64>") of a .pub file.
fn read_public_line(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let fields: Vec<&str> = text.split_whitespace().take(2).collect();
    assert_eq!(
        fields.len(),
        2,
        "malformed public key {}: {text:?}",
        path.display()
    );
    fields.join(" ")
}

// ---------------------------------------------------------------------------
// UserKey, Agent, ClientHome
// ---------------------------------------------------------------------------

static KEY_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A client key pair made by `ssh-keygen`, in OpenSSH's own file format, so
/// warren is tested on the exact files users have.
#[derive(Clone, Debug)]
pub struct UserKey {
    /// Private key file (mode 0600).
    pub private: PathBuf,
    /// `.pub` file next to it.
    pub public: PathBuf,
    /// "<algorithm> <base64> <comment>" as in the .pub file (trimmed); can be
    /// passed to [`Sshd::authorize`].
    pub public_line: String,
    /// The passphrase the private key is encrypted with, if any.
    pub passphrase: Option<String>,
    /// "ed25519", "ecdsa" or "rsa".
    pub kind: String,
}

impl UserKey {
    /// Generates a key of `kind` ("ed25519", "ecdsa", "rsa" = 3072 bits) in
    /// `dir` as `id_<kind>` (or `id_<kind>_<n>` if taken), optionally
    /// encrypted with `passphrase`.
    pub fn generate(dir: impl AsRef<Path>, kind: &str, passphrase: Option<&str>) -> UserKey {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).expect("create key dir");
        let mut private = dir.join(format!("id_{kind}"));
        while private.exists() {
            let n = KEY_COUNTER.fetch_add(1, Ordering::Relaxed) + 2;
            private = dir.join(format!("id_{kind}_{n}"));
        }
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", kind, "-N", passphrase.unwrap_or("")])
            .args(["-C", &format!("warren-test-{kind}")]);
        if kind == "rsa" {
            cmd.args(["-b", "3072"]);
        }
        cmd.arg("-f").arg(&private);
        run_ok(cmd);
        let public = PathBuf::from(format!("{}.pub", private.display()));
        let public_line = fs::read_to_string(&public)
            .expect("read .pub")
            .trim()
            .to_string();
        UserKey {
            private,
            public,
            public_line,
            passphrase: passphrase.map(str::to_string),
            kind: kind.to_string(),
        }
    }

    /// "SHA256:..." fingerprint, as sshd logs it on "Accepted publickey".
    pub fn fingerprint(&self) -> String {
        public_file_fingerprint(&self.public)
    }
}

/// "SHA256:..." of the public key file at `path`, computed by ssh-keygen.
pub fn public_file_fingerprint(path: &Path) -> String {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-l", "-E", "sha256", "-f"]).arg(path);
    let out = run_ok(cmd);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

/// A private `ssh-agent` on a socket in a temporary directory, so agent
/// authentication is tested without ever touching the developer's agent.
/// Dropping it kills the agent.
pub struct Agent {
    dir: TempDir,
    socket: PathBuf,
    proc: Proc,
}

impl Agent {
    /// Starts the agent and waits until its socket accepts connections.
    pub fn start() -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("warren-agent-")
            .tempdir()
            .expect("create agent tempdir");
        let socket = dir.path().join("agent.sock");
        let mut cmd = Command::new("ssh-agent");
        cmd.arg("-D").arg("-a").arg(&socket);
        let proc = Proc::spawn(cmd);
        // In -D mode ssh-agent prints its environment lines only after the
        // socket is bound and listening.
        if let Err(e) = proc.wait_for_stdout(|l| l.starts_with("echo Agent pid"), READY_TIMEOUT) {
            panic!("ssh-agent did not start:\n{e}");
        }
        if let Err(e) = UnixStream::connect(&socket) {
            panic!(
                "{}",
                proc.report(&format!("cannot connect to {}: {e}", socket.display()))
            );
        }
        Agent { dir, socket, proc }
    }

    /// The agent socket (value for SSH_AUTH_SOCK / IdentityAgent).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sets SSH_AUTH_SOCK on `cmd` to this agent.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("SSH_AUTH_SOCK", &self.socket)
    }

    /// Adds `key` with `ssh-add`; an encrypted key is unlocked through an
    /// SSH_ASKPASS helper that prints its passphrase.
    pub fn add(&self, key: &UserKey) {
        let mut cmd = Command::new("ssh-add");
        self.apply(&mut cmd);
        cmd.arg(&key.private);
        if let Some(pass) = &key.passphrase {
            let n = KEY_COUNTER.fetch_add(1, Ordering::Relaxed);
            let pass_file = self.dir.path().join(format!("pass{n}"));
            fs::write(&pass_file, pass).expect("write passphrase");
            let script = self.dir.path().join(format!("askpass{n}.sh"));
            fs::write(
                &script,
                format!("#!/bin/sh\ncat '{}'\necho\n", pass_file.display()),
            )
            .expect("write askpass");
            fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).expect("chmod askpass");
            cmd.env("SSH_ASKPASS", &script)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
        run_ok(cmd);
    }

    /// Public keys held by the agent (`ssh-add -L`).
    pub fn list(&self) -> Vec<String> {
        let mut cmd = Command::new("ssh-add");
        self.apply(&mut cmd).arg("-L").stdin(Stdio::null());
        let out = cmd.output().expect("run ssh-add -L");
        if !out.status.success() {
            return Vec::new(); // exit 1: "The agent has no identities."
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The agent process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// A temporary HOME with a `.ssh/` directory (0700), so a client under test
/// never reads or writes the real ~/.ssh (keys, config, known_hosts).
///
/// Note: OpenSSH's `ssh` ignores `$HOME` and takes `~` from the passwd
/// entry, so for `ssh` use explicit `-F`, `-i` and `-o UserKnownHostsFile`
/// (see [`openssh_client`]); warren is expected to honour `$HOME`.
pub struct ClientHome {
    dir: TempDir,
    ssh_dir: PathBuf,
}

impl ClientHome {
    /// Creates the temporary home and its `.ssh/` directory.
    pub fn new() -> ClientHome {
        let dir = tempfile::Builder::new()
            .prefix("warren-home-")
            .tempdir()
            .expect("create home tempdir");
        let ssh_dir = dir.path().join(".ssh");
        fs::create_dir(&ssh_dir).expect("create .ssh");
        fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700)).expect("chmod .ssh");
        ClientHome { dir, ssh_dir }
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<home>/.ssh`.
    pub fn ssh_dir(&self) -> &Path {
        &self.ssh_dir
    }

    /// `<home>/.ssh/known_hosts`.
    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir.join("known_hosts")
    }

    /// `<home>/.ssh/config`.
    pub fn ssh_config(&self) -> PathBuf {
        self.ssh_dir.join("config")
    }

    /// Writes (replaces) `<home>/.ssh/config`.
    pub fn write_ssh_config(&self, text: &str) {
        fs::write(self.ssh_config(), text).expect("write .ssh/config");
    }

    /// Points `cmd` at this home: sets HOME and removes SSH_AUTH_SOCK so that
    /// the developer's agent is never used by accident.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("HOME", self.path()).env_remove("SSH_AUTH_SOCK")
    }
}

impl Default for ClientHome {
    fn default() -> Self {
        Self::new()
    }
}

/// The real OpenSSH client, isolated from every system and user file and
/// pinned to `sshd`: `ssh -F /dev/null -o BatchMode=yes -o
/// UserKnownHostsFile=<home>/.ssh/known_hosts -o GlobalKnownHostsFile=/dev/null
/// -o StrictHostKeyChecking=yes -p PORT` with HOME set and SSH_AUTH_SOCK
/// removed. Append options and `root@127.0.0.1`. Used as the reference
/// behaviour warren must match, and to prove this fixture.
pub fn openssh_client(home: &ClientHome, sshd: &Sshd) -> Command {
    let mut cmd = Command::new("ssh");
    home.apply(&mut cmd);
    cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            home.known_hosts().display()
        ))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-p")
        .arg(sshd.port().to_string());
    cmd
}

// ---------------------------------------------------------------------------
// TCP helpers
// ---------------------------------------------------------------------------

/// A currently free TCP port on 127.0.0.1, for listen addresses that a test hands to a
/// program which binds them later.
///
/// Picked at random *below* the kernel's ephemeral range: every outgoing connection of
/// the tests running in parallel takes a port from that range, so a port from
/// `bind(0)` could be taken by one of them before the program binds it (a cluster
/// node's link port was, 1 run in 9). Below the range only another test's pick can
/// collide, one chance in thousands. Without such room (a range starting near 1024), a
/// port from `bind(0)`.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const FLOOR: u16 = 10_000;
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if low > FLOOR + 1_000 {
        for _ in 0..100 {
            let r = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let port = FLOOR + (r % u64::from(low - FLOOR)) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Connects to `addr`, retrying refused connections until `timeout`: waits
/// for a listener (e.g. a forward) to be up, using the successful connect as
/// the readiness signal. Retries are paced (a few ms, growing) to not spin.
pub fn connect_with_retry(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1))) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if Instant::now() + pause >= deadline {
                    return Err(format!("cannot connect to {addr} within {timeout:?}: {e}"));
                }
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// Writes all of `data` to `stream` from a helper thread, then half-closes
/// (shutdown write), while reading everything the peer sends until EOF, with
/// `timeout` as read timeout: the standard way to push a payload through a
/// tunnel both ways without deadlocking on full buffers.
pub fn exchange(stream: TcpStream, data: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let data = data.to_vec();
    let w = thread::spawn(move || -> io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut reader = stream;
    let mut received = Vec::new();
    let read_res = reader.read_to_end(&mut received);
    let write_res = w.join().expect("writer thread panicked");
    read_res?;
    write_res?;
    Ok(received)
}

struct ServerCore {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// A TCP server on 127.0.0.1:<ephemeral> that runs `handler` on a thread for
/// each connection: the generic "destination" behind a forward. Dropping it
/// stops accepting and shuts down every open connection.
pub struct TcpServer {
    core: ServerCore,
}

impl TcpServer {
    /// Starts the server.
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let thread = {
            let (stop, conns, accepted) = (stop.clone(), conns.clone(), accepted.clone());
            thread::Builder::new()
                .name(format!("tcp-server-{}", addr.port()))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        accepted.fetch_add(1, Ordering::SeqCst);
                        if let Ok(c) = stream.try_clone() {
                            conns.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                        }
                        let handler = handler.clone();
                        thread::spawn(move || handler(stream));
                    }
                })
                .expect("spawn accept thread")
        };
        TcpServer {
            core: ServerCore {
                addr,
                stop,
                conns,
                accepted,
                thread: Some(thread),
            },
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.core.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.core.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ServerCore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a real connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Reads until EOF and discards, so that closing afterwards never turns into
/// a TCP reset that could destroy data still in flight to the peer.
fn drain(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Echoes every byte back; on EOF from the client it shuts down its write
/// side after everything was echoed, so half-close is observable end to end.
pub struct EchoServer(TcpServer);

impl EchoServer {
    /// Starts the echo server.
    pub fn start() -> EchoServer {
        EchoServer(TcpServer::start(|mut s| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        let _ = s.shutdown(Shutdown::Write);
                        return;
                    }
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        }))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.0.connections()
    }
}

/// Reads until EOF, then replies with the lower-case hex SHA-256 (64 bytes,
/// no newline) of everything it read and closes: proves that the client's
/// half-close travels through the tunnel while the reverse direction stays
/// open.
pub struct ReplyAfterEofServer(TcpServer);

impl ReplyAfterEofServer {
    /// Starts the server.
    pub fn start() -> ReplyAfterEofServer {
        ReplyAfterEofServer(TcpServer::start(|mut s| {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            let reply = hex(&hasher.finalize());
            if s.write_all(reply.as_bytes()).is_ok() {
                let _ = s.shutdown(Shutdown::Write);
            }
        }))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.0.connections()
    }
}

/// Sends the same `n` deterministic bytes (`pattern_bytes(n, seed)`) to every
/// client, then closes its write side: a download whose integrity the test
/// checks with [`SourceServer::expected_sha256`].
pub struct SourceServer {
    server: TcpServer,
    len: usize,
    sha256: String,
}

impl SourceServer {
    /// Seed of the payload.
    pub const SEED: u64 = 0x5EED_0F5A_77E4;

    /// Starts the server with an `n_bytes` payload.
    pub fn start(n_bytes: usize) -> SourceServer {
        let data = Arc::new(pattern_bytes(n_bytes, Self::SEED));
        let sha256 = sha256_hex(&data);
        let server = TcpServer::start(move |mut s| {
            if s.write_all(&data).is_ok() {
                let _ = s.shutdown(Shutdown::Write);
                drain(&mut s);
            }
        });
        SourceServer {
            server,
            len: n_bytes,
            sha256,
        }
    }

    /// Hex SHA-256 of the payload.
    pub fn expected_sha256(&self) -> &str {
        &self.sha256
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }
}

// ---------------------------------------------------------------------------
// warren
// ---------------------------------------------------------------------------

/// A warren user: a private HOME trusting `sshd`'s host keys, and a key that
/// `sshd` accepts.
pub struct WarrenUser {
    pub home: ClientHome,
    pub key: UserKey,
}

/// A user whose ed25519 key is authorized and whose known_hosts trusts `sshd`.
pub fn warren_user(sshd: &Sshd) -> WarrenUser {
    let home = ClientHome::new();
    let key = UserKey::generate(home.ssh_dir(), "ed25519", None);
    sshd.authorize(&key.public_line);
    sshd.write_known_hosts(home.known_hosts());
    WarrenUser { home, key }
}

/// `warren -v` isolated like [`openssh_client`]: HOME set, no agent, BatchMode,
/// no global known_hosts, pointed at `sshd`. Append flags and the destination.
pub fn warren_client(home: &ClientHome, sshd: &Sshd) -> Command {
    let mut cmd = Command::new(warren_bin());
    home.apply(&mut cmd);
    cmd.env_remove("RUST_LOG")
        .args([
            "-v",
            "-o",
            "BatchMode=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-p")
        .arg(sshd.port().to_string());
    cmd
}

/// Parses warren's `forward ready: -L SPEC listening on ADDR [ADDR...]` line:
/// the first address, which with `-L 127.0.0.1:0:...` is the kernel-chosen one.
/// `None` for a unix-socket listener.
pub fn forward_addr(line: &str) -> Option<SocketAddr> {
    let addrs = line
        .split(" listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("not a forward ready line: {line}"));
    addrs.split_whitespace().next()?.parse().ok()
}

/// Starts `warren -N -i key -L spec...` for `user` and waits for its ready
/// line; returns the process and the bound address of each TCP forward, in order
/// (unix-socket listeners are skipped).
pub fn warren_forwards(sshd: &Sshd, user: &WarrenUser, specs: &[&str]) -> (Proc, Vec<SocketAddr>) {
    let mut cmd = warren_client(&user.home, sshd);
    cmd.arg("-i").arg(&user.key.private);
    for s in specs {
        cmd.arg("-L").arg(s);
    }
    cmd.arg("root@127.0.0.1");
    let proc = Proc::spawn(cmd);
    if let Err(e) = proc.wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT) {
        panic!("warren not ready:\n{e}\n--- sshd ---\n{}", sshd.logs());
    }
    let addrs = proc
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("forward ready: "))
        .filter_map(|l| forward_addr(l))
        .collect();
    (proc, addrs)
}
pub mod etcd;
pub mod netns;
pub mod notify;
pub mod warrend;

/// A user authorized on every sshd in `sshds`, whose known_hosts trusts all of them (for
/// jump chains and config-driven tests).
pub fn warren_user_for(sshds: &[&Sshd]) -> WarrenUser {
    let home = ClientHome::new();
    let key = UserKey::generate(home.ssh_dir(), "ed25519", None);
    let mut known = String::new();
    for s in sshds {
        s.authorize(&key.public_line);
        for line in s.known_hosts_lines() {
            known.push_str(&line);
            known.push('\n');
        }
    }
    fs::write(home.known_hosts(), known).expect("write known_hosts");
    WarrenUser { home, key }
}

/// The bound TCP address of each of warren's `forward ready: -L`/`-D` lines, in order
/// (`kind` is "-L" or "-D").
pub fn forward_addrs(warren: &Proc, kind: &str) -> Vec<SocketAddr> {
    let needle = format!("forward ready: {kind}");
    warren
        .stderr_lines()
        .iter()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| forward_addr(l))
        .collect()
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory `pid` ever had, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A `kB` field of /proc/PID/status.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Polls `cond` until it holds or `within` runs out; returns whether it held.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A SOCKS5 CONNECT to `target` through the -D at `proxy`, left open.
pub fn socks5_connect(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut s = connect_with_retry(proxy, READY_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut r = [0u8; 2];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r, [5, 0]);
    let SocketAddr::V4(t) = target else {
        panic!("v4 only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 reply {reply:?}");
    s
}
