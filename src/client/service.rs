//! What a script or service manager learns about a running tunnel without -v: the ports
//! picked for `-L 0` / `-D 0`, and (under systemd) readiness, a live status line and
//! watchdog pings.

use super::supervisor::SessionSlot;
use crate::config::forward::{DynamicForward, Listen, LocalForward};
use crate::systemd;
use std::io::Write;
use std::sync::Arc;

/// Where "Allocated port" lines go: stdout in tunnel mode (a script reads them there,
/// `-f` passes them through), stderr when stdout carries a remote command's output or -W.
#[derive(Clone, Copy)]
pub enum Announce {
    Stdout,
    Stderr,
    Quiet,
}

impl Announce {
    pub fn new(quiet: bool, stdout_carries_data: bool) -> Announce {
        match (quiet, stdout_carries_data) {
            (true, _) => Announce::Quiet,
            (false, true) => Announce::Stderr,
            (false, false) => Announce::Stdout,
        }
    }

    fn line(self, text: &str) {
        // A closed stdout (a script that stopped reading) must not end the tunnel.
        let _ = match self {
            Announce::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}").and_then(|()| out.flush())
            }
            Announce::Stderr => writeln!(std::io::stderr(), "{text}"),
            Announce::Quiet => Ok(()),
        };
    }

    /// For `-L 0:...`, the port the kernel picked.
    pub fn local(self, fwd: &LocalForward, bound: &[String]) {
        if let (Listen::Tcp { port: 0, .. }, Some(port)) = (&fwd.listen, first_port(bound)) {
            self.line(&format!(
                "Allocated port {port} for local forward to {}",
                fwd.connect
            ));
        }
    }

    /// For `-D 0`, the port the kernel picked.
    pub fn dynamic(self, fwd: &DynamicForward, bound: &[String]) {
        if let (0, Some(port)) = (fwd.port, first_port(bound)) {
            self.line(&format!("Allocated port {port} for dynamic forward"));
        }
    }
}

fn first_port(addrs: &[String]) -> Option<u16> {
    addrs
        .iter()
        .find_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
}

/// Under systemd: READY=1 now (every forward is up), then a status line that follows the
/// session through reconnects, and watchdog pings if the unit asked for them. The tasks
/// end with the runtime.
pub fn report_ready(slot: &Arc<SessionSlot>, destination: &str, forwards: usize) {
    if !systemd::enabled() {
        return;
    }
    let up = format!("connected to {destination}, {forwards} forward(s)");
    systemd::ready(&up);
    let mut session = slot.subscribe();
    let destination = destination.to_owned();
    tokio::spawn(async move {
        let mut reconnects = 0u64;
        let mut connected = true;
        while session.changed().await.is_ok() {
            let now = session.borrow_and_update().is_some();
            if now == connected {
                continue;
            }
            connected = now;
            if now {
                reconnects += 1;
                systemd::status(&format!("{up}; reconnected {reconnects} time(s)"));
            } else {
                systemd::status(&format!(
                    "reconnecting to {destination}; ports held, new connections wait"
                ));
            }
        }
    });
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(systemd::watchdog(interval));
    }
}
