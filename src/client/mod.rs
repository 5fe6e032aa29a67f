//! The `warren` client: one SSH session to an OpenSSH-compatible server carrying the
//! user's forwards.
//!
//! Flow: [`settings`] resolves flags and options; `-L` listeners are bound first (so a busy
//! port fails fast); [`session`] dials, checks the host key ([`host_key`],
//! [`known_hosts`]) and authenticates ([`auth`]); then each listener serves through the
//! session until a signal or the connection's end.

pub mod auth;
pub mod cli;
pub mod error;
pub mod handler;
pub mod host_key;
pub mod known_hosts;
pub mod prompt;
pub mod session;
pub mod settings;

pub use cli::Cli;
pub use error::ClientError;

use crate::forward::local::LocalListener;
use session::Session;
use settings::Settings;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Runs the client until SIGINT/SIGTERM (`Ok`) or a failure (`Err`, with its exit status).
pub async fn run(cli: Cli) -> Result<(), ClientError> {
    if !cli.command.is_empty() {
        return Err(ClientError::Usage(format!(
            "remote commands are not supported yet ('{}'); warren holds tunnels (like ssh -N)",
            cli.command.join(" ")
        )));
    }
    let settings = Settings::resolve(&cli)?;
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));

    let mut listeners = Vec::new();
    for fwd in &settings.local_forwards {
        match LocalListener::bind(fwd, settings.gateway_ports).await {
            Ok(l) => listeners.push(l),
            Err(e) if settings.exit_on_forward_failure => {
                return Err(ClientError::Forward(e.to_string()));
            }
            Err(e) => warn!("{e}; continuing without it (ExitOnForwardFailure=no)"),
        }
    }

    let session = tokio::select! {
        s = Session::connect(&settings.connect) => Arc::new(s?),
        _ = cancel.cancelled() => return Ok(()),
    };

    let tracker = TaskTracker::new();
    let count = listeners.len();
    for l in listeners {
        info!(
            "forward ready: -L {} listening on {}",
            l.spec,
            l.addresses().join(" ")
        );
        tracker.spawn(l.serve(session.clone(), cancel.clone()));
    }
    tracker.close();
    info!(
        "ready: connected to {}, {count} forward(s)",
        session.destination
    );

    let result = tokio::select! {
        _ = cancel.cancelled() => {
            info!("stopping");
            Ok(())
        }
        reason = session.closed() => Err(ClientError::Lost {
            host: settings.connect.host.clone(),
            reason,
        }),
    };
    cancel.cancel();
    tracker.wait().await;
    session.disconnect().await;
    result
}

/// SIGINT and SIGTERM both mean "stop cleanly": close listeners, say goodbye, exit 0.
async fn stop_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    cancel.cancel();
}
