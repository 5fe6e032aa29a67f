//! A notify socket like systemd's (`NOTIFY_SOCKET`), for tests of Type=notify services:
//! every datagram the service sends, as text, with what was seen kept for failure reports.

use super::READY_TIMEOUT;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

pub struct NotifySocket {
    pub path: PathBuf,
    messages: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send(text).is_err() {
                    break;
                }
            }
        });
        NotifySocket {
            path,
            messages,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// Waits for a message with a line satisfying `pred`; returns the whole message.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(m) => {
                    self.seen.push(m.clone());
                    if m.lines().any(&pred) {
                        return m;
                    }
                }
                Err(_) => panic!("no {what} on the notify socket; got {:?}", self.seen),
            }
        }
    }
}

/// `cmd` run through `sh -c 'WATCHDOG_PID=$$ exec ...'`, so the watchdog variables name
/// the process `cmd` becomes, as systemd sets them.
pub fn with_watchdog(cmd: &Command, usec: u64) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env("WATCHDOG_USEC", usec.to_string());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh
}
