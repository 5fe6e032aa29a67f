//! Putting a re-read config file in force while warrend runs (SIGHUP, `warrend ctl
//! reload`), apart from the daemon that starts everything, so the admin socket below the
//! daemon can ask for a reload without importing it.

use super::audit::AuditEvent;
use super::config::ServerConfig;
use super::preflight;
use super::service_notify;
use super::state::Shared;
use crate::logging::stamp;
use std::path::PathBuf;
use tracing::{info, warn};

/// The config file (none: the embedded default), parsed and validated.
pub fn load(path: &Option<PathBuf>) -> anyhow::Result<ServerConfig> {
    match path {
        Some(p) => Ok(ServerConfig::load(p)?),
        None => Ok(ServerConfig::default_embedded()),
    }
}

/// One reload at a time: SIGHUP and `warrend ctl reload` may come together.
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Re-reads the config file and puts it in force (SIGHUP, `warrend ctl reload`); also
/// reopens the audit file for logrotate. A broken file is reported (and audited), the
/// running configuration kept, and the error returned.
pub async fn reload(shared: &Shared, path: &Option<PathBuf>) -> Result<(), String> {
    let _one = RELOADING.lock().await;
    // SIGHUP and `ctl reload` alike tell systemd, so `systemctl status` shows either.
    service_notify::reloading();
    let shown = path.as_ref().map(|p| p.display().to_string());
    // Before the reload's own record, so that record opens the new file.
    shared.audit.reopen();
    match load(path) {
        Ok(mut new) => {
            preflight::inspect(&new).log_warnings();
            new.server.listen = shared.config().server.listen.clone();
            // The node's identity, etcd session and links live as long as the process.
            let running = shared.config().cluster.clone();
            if new.cluster != running {
                warn!(
                    "[cluster] changed in the file: cluster settings take effect at the next start"
                );
                eprintln!(
                    "{}warrend: [cluster] changed in the file; cluster settings take effect at the next start",
                    stamp()
                );
                new.cluster = running;
            }
            shared.audit.set_on_failure(new.server.audit_on_failure);
            shared.reload(new);
            shared
                .audit
                .record(
                    0,
                    AuditEvent::ConfigReload {
                        path: shown,
                        ok: true,
                        error: None,
                    },
                )
                .await;
            end_revoked_sessions(shared).await;
            service_notify::reloaded(shared, None);
            info!("configuration reloaded");
            eprintln!("{}warrend: configuration reloaded", stamp());
            Ok(())
        }
        Err(e) => {
            let error = format!("{e:#}");
            service_notify::reloaded(shared, Some(&error));
            shared
                .audit
                .record(
                    0,
                    AuditEvent::ConfigReload {
                        path: shown,
                        ok: false,
                        error: Some(error.clone()),
                    },
                )
                .await;
            warn!("reload failed, keeping the running configuration: {error}");
            eprintln!(
                "{}warrend: reload failed, keeping the running configuration: {error}",
                stamp()
            );
            Err(error)
        }
    }
}

/// Disconnects the sessions the reloaded configuration no longer admits (user removed,
/// key no longer listed, user CA gone); each one's `session_end` record says why.
async fn end_revoked_sessions(shared: &Shared) {
    for (conn, handle, reason) in shared.live.revoke(&shared.config()) {
        info!(conn, "ending session: {reason}");
        handle.disconnect(&reason);
    }
}
