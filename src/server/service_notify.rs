//! What warrend tells systemd (`Type=notify`): READY=1 once every listener is bound, a
//! status line with the sessions logged in, RELOADING=1/READY=1 around each SIGHUP reload,
//! STOPPING=1, and watchdog pings. All of it is a no-op without `NOTIFY_SOCKET`.

use super::state::Shared;
use crate::systemd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The status line is rewritten at most this often, however fast sessions come and go:
/// each one is a datagram to PID 1.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Said before the counts until the next reload: a failed reload stays visible in
/// `systemctl status` rather than being overwritten by the next session count.
static NOTE: Mutex<String> = Mutex::new(String::new());

fn set_note(note: String) {
    *NOTE.lock().unwrap_or_else(|e| e.into_inner()) = note;
}

fn sessions(shared: &Shared) -> String {
    let (sessions, users) = shared.live.counts();
    let note = NOTE.lock().unwrap_or_else(|e| e.into_inner());
    format!("{note}{sessions} sessions, {users} users")
}

/// READY=1: the listeners are bound and the first connection will be served. Also starts
/// the status updates and, when the unit sets WatchdogSec=, the pings; both end with
/// `cancel`.
pub fn ready(shared: &Arc<Shared>, listening: &[String], cancel: &CancellationToken) {
    if !systemd::enabled() {
        return;
    }
    systemd::ready(&format!(
        "listening on {}; {}",
        listening.join(", "),
        sessions(shared)
    ));
    tokio::spawn(keep_status(shared.clone(), cancel.clone()));
    if let Some(interval) = systemd::watchdog_interval() {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = systemd::watchdog(interval) => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Rewrites the status when the counts change, checking once per [`STATUS_EVERY`].
async fn keep_status(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut last = sessions(&shared);
    let mut tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let now = sessions(&shared);
        if now != last {
            systemd::status(&now);
            last = now;
        }
    }
}

/// RELOADING=1 (with MONOTONIC_USEC), before a SIGHUP reload.
pub fn reloading() {
    systemd::reloading();
}

/// READY=1 after a reload, whether it worked or not: a failed reload leaves the previous
/// configuration running, and the status says so until the next reload.
pub fn reloaded(shared: &Shared, failure: Option<&str>) {
    set_note(match failure {
        None => String::new(),
        Some(e) => format!("reload failed, running the previous configuration: {e}; "),
    });
    systemd::ready(&sessions(shared));
}

/// STOPPING=1: sessions are being ended.
pub fn stopping() {
    systemd::stopping();
}
