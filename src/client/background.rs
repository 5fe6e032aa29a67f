//! `-f`: return to the shell only once the tunnel is really up.
//!
//! Forking a running async runtime is unsound, so the parent starts a second `warren` with
//! the same arguments (marked by an environment variable), which leaves the terminal's session once ready, and
//! waits for that child to say "ready" on its stdout. Errors before then (bad key, busy
//! port, unreachable host) reach the user through the child's stderr and the parent's exit
//! status, which is the child's: `warren -f ... && use-the-tunnel` is safe.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

/// Set in the child's environment; its value is irrelevant.
pub const CHILD_ENV: &str = "WARREN_BACKGROUND_CHILD";
/// The line the child prints when every forward is up.
const READY: &str = "WARREN-READY";

/// Whether this process is the background child of a `-f` parent.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs in the parent: starts the child and returns its readiness as an exit status (0 once
/// ready; the child's own status if it exits first). Lines the child prints before ready
/// (`--print-ports`) are passed through to our stdout.
pub fn spawn_and_wait() -> u8 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warren: -f: cannot find my own executable: {e}");
            return 1;
        }
    };
    let mut child = match Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // In the parent's process group until ready, so a Ctrl-C at a passphrase prompt
        // ends both; `signal_ready` then leaves the terminal's session (as ssh -f's
        // daemon(3) does), which a process-group leader could not.
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warren: -f: cannot start the background process: {e}");
            return 1;
        }
    };
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line == READY {
                return 0;
            }
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    }
    match child.wait() {
        Ok(status) => status.code().map(|c| c as u8).unwrap_or(255),
        Err(_) => 255,
    }
}

/// Runs in the child once ready: tells the parent, then lets go of the caller's stdout
/// and stderr, so `out=$(warren -f ... 2>&1)` returns instead of waiting for the tunnel
/// to end. Later diagnostics go to `<control dir>/<pid>.log`.
pub fn signal_ready() {
    use std::os::fd::AsRawFd;
    // A new session without a controlling terminal: closing the terminal, or job control
    // in the shell that started us, no longer reaches the tunnel.
    if let Err(e) = nix::unistd::setsid() {
        tracing::debug!("-f: setsid: {e}");
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{READY}");
    let _ = stdout.flush();
    crate::forward::stdio::close_stdout();
    let dir = super::control::control_dir();
    let _ = super::control::create_private_dir(&dir);
    let log = dir.join(format!("{}.log", std::process::id()));
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .or_else(|_| std::fs::OpenOptions::new().write(true).open("/dev/null"));
    if let Ok(file) = opened {
        crate::forward::stdio::replace_fd(&file, std::io::stderr().as_raw_fd());
    }
}

/// Removes the background log when the tunnel ends cleanly.
pub fn remove_log() {
    let _ = std::fs::remove_file(
        super::control::control_dir().join(format!("{}.log", std::process::id())),
    );
}
