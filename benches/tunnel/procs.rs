//! The processes the benchmark starts (sshd, warrend, ssh, warren): their
//! output, captured line by line with the instant each line arrived (so the
//! time to a readiness line is exact even when it is read later), and what
//! /proc says about their CPU time and memory.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// One line of output and when the reader thread saw it.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

#[derive(Default)]
struct Captured {
    stdout: Vec<Line>,
    stderr: Vec<Line>,
    open_pipes: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Captured>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which output stream to look at.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A started child. Dropping it stops the child and every process it forked.
pub struct Proc {
    name: String,
    pid: i32,
    started: Instant,
    child: Mutex<Child>,
    shared: Arc<Shared>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and both outputs captured.
    pub fn spawn(mut cmd: Command) -> Result<Proc> {
        let name = Path::new(cmd.get_program())
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let shared = Arc::new(Shared::default());
        shared.lock().open_pipes = 2;
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        read_lines(&name, Stream::Stdout, out, shared.clone());
        read_lines(&name, Stream::Stderr, err, shared.clone());
        Ok(Proc {
            name,
            pid: child.id() as i32,
            started,
            child: Mutex::new(child),
            shared,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The instant just before the process was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for a line on `stream` satisfying `pred`; fails with the
    /// process's output when it exits or `timeout` passes first.
    pub fn wait_line(
        &self,
        stream: Stream,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Line> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            let lines = match stream {
                Stream::Stdout => &st.stdout,
                Stream::Stderr => &st.stderr,
            };
            if let Some(l) = lines.iter().find(|l| pred(&l.text)) {
                return Ok(l.clone());
            }
            let now = Instant::now();
            if st.open_pipes == 0 || now >= deadline {
                let why = if st.open_pipes == 0 {
                    "exited"
                } else {
                    "timed out"
                };
                drop(st);
                return Err(anyhow!(
                    "{} {why} waiting for a line\n{}",
                    self.name,
                    self.tail()
                ));
            }
            st = match self.shared.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Every line seen so far on `stream`.
    pub fn lines(&self, stream: Stream) -> Vec<Line> {
        let st = self.shared.lock();
        match stream {
            Stream::Stdout => st.stdout.clone(),
            Stream::Stderr => st.stderr.clone(),
        }
    }

    /// Whether the process has exited (and with what).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// The last lines of both outputs, for error messages.
    pub fn tail(&self) -> String {
        let st = self.shared.lock();
        let mut s = format!(
            "--- {} (pid {}) stderr, last lines ---\n",
            self.name, self.pid
        );
        let from = st.stderr.len().saturating_sub(25);
        for l in &st.stderr[from..] {
            s.push_str(&l.text);
            s.push('\n');
        }
        let from = st.stdout.len().saturating_sub(5);
        if from < st.stdout.len() {
            s.push_str("--- stdout, last lines ---\n");
            for l in &st.stdout[from..] {
                s.push_str(&l.text);
                s.push('\n');
            }
        }
        s
    }

    /// SIGTERM, a few seconds to exit, then SIGKILL for it and every process
    /// it forked (sshd's per-connection processes outlive their listener).
    pub fn stop(&self) {
        let tree = descendants(self.pid);
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.try_wait().ok().flatten().is_none() {
            signal(self.pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in tree {
            signal(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_lines(name: &str, stream: Stream, pipe: impl Read + Send + 'static, shared: Arc<Shared>) {
    let mine = shared.clone();
    let spawned = thread::Builder::new()
        .name(format!("{name}-{stream:?}"))
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf).trim_end().to_string();
                        let line = Line {
                            at: Instant::now(),
                            text,
                        };
                        let mut st = shared.lock();
                        match stream {
                            Stream::Stdout => st.stdout.push(line),
                            Stream::Stderr => st.stderr.push(line),
                        }
                        drop(st);
                        shared.changed.notify_all();
                    }
                }
            }
            shared.lock().open_pipes -= 1;
            shared.changed.notify_all();
        });
    if spawned.is_err() {
        mine.lock().open_pipes -= 1;
    }
}

/// Sends `sig` to one process the benchmark started (never a group: pid > 0).
#[allow(unsafe_code)]
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) takes two integers and has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Every live descendant of `pid`, from the parent links in /proc.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (p, stat) in all_stats() {
        if let Some(ppid) = stat_field(&stat, 4).and_then(|f| f.parse().ok()) {
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn all_stats() -> Vec<(i32, String)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, fs::read_to_string(format!("/proc/{p}/stat")).ok()?)))
        .collect()
}

/// Field `n` (1-based, as in proc(5)) of a /proc/PID/stat line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last ')'.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

/// CPU time and memory of a process and all its descendants, summed: sshd
/// serves a connection from forked processes, warrend and the clients from
/// one process, and both must be counted the same way.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User + system CPU seconds so far.
    pub cpu: f64,
    /// Resident memory now, KiB.
    pub rss_kib: u64,
    /// Peak resident memory (VmHWM), KiB.
    pub hwm_kib: u64,
    /// Size of the regular files it holds open: where a tunnel that parks
    /// data on disk instead of in memory (a spill file) keeps it.
    pub file_bytes: u64,
}

impl Usage {
    pub fn of_tree(pid: i32) -> Usage {
        let tick = clock_ticks();
        let mut u = Usage::default();
        for p in std::iter::once(pid).chain(descendants(pid)) {
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let ticks: u64 = [14, 15]
                .iter()
                .filter_map(|&f| stat_field(&stat, f)?.parse::<u64>().ok())
                .sum();
            u.cpu += ticks as f64 / tick;
            let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            u.rss_kib += status_kib(&status, "VmRSS:");
            u.hwm_kib += status_kib(&status, "VmHWM:");
            u.file_bytes += open_file_bytes(p);
        }
        u
    }
}

/// Sum of the sizes of the regular files `pid` has open (deleted ones too:
/// /proc/PID/fd/N reaches the file itself).
fn open_file_bytes(pid: i32) -> u64 {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| fs::metadata(fd.path()).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Files a tunnel parks data in: descriptors of `pid` and its descendants
/// that point at a deleted regular file (an anonymous temporary file, as
/// `tempfile::tempfile()` makes with O_TMPFILE, or one unlinked after
/// opening) or at a file in the temp directory outside `own` (the
/// benchmark's own directory, where warrend's audit log is). Returns how
/// many, and their total size in bytes.
pub fn scratch_files(pid: i32, own: &Path) -> (usize, u64) {
    let tmp = std::env::temp_dir();
    let (mut count, mut bytes) = (0, 0);
    for p in std::iter::once(pid).chain(descendants(pid)) {
        let Ok(fds) = fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let deleted = target.to_string_lossy().ends_with(" (deleted)");
            let scratch = deleted || (target.starts_with(&tmp) && !target.starts_with(own));
            match fs::metadata(fd.path()) {
                Ok(m) if scratch && m.is_file() => {
                    count += 1;
                    bytes += m.len();
                }
                _ => {}
            }
        }
    }
    (count, bytes)
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Raises this process's open-file limit (soft, and hard if allowed) to at
/// least `want`, before any child is spawned so that sshd, warrend, ssh and
/// warren inherit it: 10,000 tunnelled connections need 10,000 descriptors
/// in this process, in the client, in the server and in the echo helper.
/// Without the privilege to raise the hard limit, the soft limit goes up to
/// it. Returns the soft limit in effect.
#[allow(unsafe_code)]
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        // Not allowed to raise the hard limit (not root): go as far as it allows.
        let capped = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &capped) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}
