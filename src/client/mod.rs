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
pub mod exec;
pub mod handler;
pub mod host_key;
pub mod known_hosts;
pub mod prompt;
pub mod proxy_command;
pub mod session;
pub mod settings;

pub use cli::Cli;
pub use error::ClientError;

use crate::config::forward::{Endpoint, Listen, RemoteForward};
use crate::forward::local::LocalListener;
use crate::forward::stdio;
use session::Session;
use settings::Settings;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Runs the client until SIGINT/SIGTERM, the end of a remote command or -W stream
/// (`Ok` with the exit status), or a failure (`Err`, with its own exit status).
pub async fn run(cli: Cli) -> Result<u8, ClientError> {
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
    if !settings.dynamic_forwards.is_empty() {
        return Err(ClientError::Usage("-D is not wired in yet".into()));
    }

    let session = tokio::select! {
        s = Session::connect(&settings.connect) => Arc::new(s?),
        _ = cancel.cancelled() => return Ok(0),
    };

    for fwd in &settings.remote_forwards {
        if let Err(e) = request_remote(&session, fwd, settings.connect.quiet).await {
            if settings.exit_on_forward_failure {
                shutdown(&session).await;
                return Err(ClientError::Forward(format!("{e} (-R {})", fwd.spec)));
            }
            warn!(
                "{e} (-R {}); continuing without it (ExitOnForwardFailure=no)",
                fwd.spec
            );
        }
    }

    if let Some(target) = &settings.stdio {
        let result = stdio_forward(&session, target).await;
        shutdown(&session).await;
        return result.map(|()| 0);
    }

    let tracker = TaskTracker::new();
    let count = listeners.len() + settings.remote_forwards.len();
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

    let lost = |reason: String| ClientError::Lost {
        host: settings.connect.host.clone(),
        reason,
    };
    let result = match &settings.command {
        Some(command) => tokio::select! {
            r = exec::run(&session, command, settings.null_stdin) => r,
            _ = cancel.cancelled() => Ok(0),
            reason = session.closed() => Err(lost(reason)),
        },
        None => tokio::select! {
            _ = cancel.cancelled() => {
                info!("stopping");
                Ok(0)
            }
            reason = session.closed() => Err(lost(reason)),
        },
    };
    cancel.cancel();
    tracker.wait().await;
    shutdown(&session).await;
    result
}

/// Asks for one -R and reports the port, with OpenSSH's wording for allocated ports
/// (scripts parse it).
async fn request_remote(session: &Session, fwd: &RemoteForward, quiet: bool) -> Result<(), String> {
    let port = session.request_remote(fwd).await?;
    let target = match &fwd.connect {
        Some(Endpoint::Tcp { host, port }) => format!("{host}:{port}"),
        Some(Endpoint::Unix(p)) => p.display().to_string(),
        None => "dynamic (SOCKS/HTTP proxy)".to_string(),
    };
    if matches!(fwd.listen, Listen::Tcp { port: 0, .. }) && !quiet {
        eprintln!("Allocated port {port} for remote forward to {target}");
    }
    info!(
        "forward ready: -R {} listening on the server at port {port}",
        fwd.spec
    );
    Ok(())
}

/// -W: one channel to `target`, carried by stdin and stdout.
async fn stdio_forward(session: &Session, target: &Endpoint) -> Result<(), ClientError> {
    let channel = session
        .open_channel(target, None)
        .await
        .map_err(|e| ClientError::Forward(format!("stdio forwarding to {target} failed: {e}")))?;
    info!("ready: stdio forwarded to {target}");
    stdio::pump(
        channel,
        tokio::io::stdin(),
        tokio::io::stdout(),
        stdio::close_stdout,
    )
    .await
    .map_err(|e| ClientError::Lost {
        host: session.destination.clone(),
        reason: format!("stdio forward: {e}"),
    })
}

/// Cancels -R listeners and says goodbye, bounded so a dead server cannot hold us.
async fn shutdown(session: &Session) {
    let bye = async {
        session.cancel_remotes().await;
        session.disconnect().await;
    };
    if tokio::time::timeout(std::time::Duration::from_secs(3), bye)
        .await
        .is_err()
    {
        warn!("the server did not acknowledge the shutdown in time");
    }
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
