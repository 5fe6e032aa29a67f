//! Telling a service manager how we are: readiness, a one-line status, watchdog pings.
//!
//! systemd's `Type=notify` starts dependent units only after READY=1, so a unit that needs
//! the tunnel (`After=warren@db.service`) starts once the forward is really connectable,
//! not merely once the process exists. Everything here is a no-op without `NOTIFY_SOCKET`,
//! so the same binary runs unchanged outside systemd.

use std::time::Duration;
use tracing::debug;

/// The notify socket's variable, kept in our environment (we notify more than once) but
/// removed from the environment of anything we start.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Whether a service manager is listening.
pub fn enabled() -> bool {
    std::env::var_os(NOTIFY_SOCKET).is_some_and(|v| !v.is_empty())
}

/// READY=1 together with a status line.
pub fn ready(status: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&clean(status)),
    ]);
}

/// A status line (`systemctl status` shows it).
pub fn status(status: &str) {
    send(&[sd_notify::NotifyState::Status(&clean(status))]);
}

/// STOPPING=1: the unit is going down on purpose.
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// RELOADING=1 with the monotonic time systemd wants alongside it (`Type=notify-reload`).
pub fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[sd_notify::NotifyState::Reloading, now]),
        Err(_) => send(&[sd_notify::NotifyState::Reloading]),
    }
}

/// The watchdog interval the unit asked for (WatchdogSec=), if it is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    (enabled() && sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
        .then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval for as long as the runtime turns: a wedged
/// event loop stops the pings and systemd restarts the unit.
pub async fn watchdog(interval: Duration) {
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        send(&[sd_notify::NotifyState::Watchdog]);
    }
}

fn send(states: &[sd_notify::NotifyState]) {
    if !enabled() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        debug!("cannot notify the service manager: {e}");
    }
}

/// The protocol is newline-separated assignments: a status must stay one line.
fn clean(status: &str) -> String {
    status
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_cannot_inject_another_assignment() {
        assert_eq!(clean("up\nREADY=1"), "up READY=1");
    }
}
