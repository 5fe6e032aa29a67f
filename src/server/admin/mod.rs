//! Live administration: `warrend ctl` and the control socket it talks to.
//!
//! The daemon side ([`start`]) serves requests from the shared state: sessions with
//! their counters, -R listeners, rendezvous names, kick, reload, budgets in use. The
//! client side ([`cli`]) is the `warrend ctl` subcommand. They speak [`protocol`].

pub mod cli;
pub mod commands;
pub mod protocol;
pub mod sections;
pub mod settings;
pub mod socket;
mod table;

pub use sections::{AdminSection, MetricsSection};

use crate::server::config::ServerConfig;
use crate::server::state::Shared;
use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The control socket, bound but not served yet.
pub struct Control {
    listener: tokio::net::UnixListener,
    pub path: PathBuf,
}

/// Binds the control socket (unless `[admin] socket = ""`). Done before the SSH
/// listeners, so that once warrend says it listens (and tells systemd it is ready)
/// `warrend ctl` works. An error (a live warrend on the same socket, a directory others
/// can write) stops warrend at start: an admin interface that silently is not there,
/// or is reachable by others, is worse than a refusal to start.
pub async fn bind(config: &ServerConfig) -> anyhow::Result<Option<Control>> {
    let Some(path) = settings::server_socket(config, |k| std::env::var(k).ok()) else {
        return Ok(None);
    };
    // The default places are warrend's own to create; a configured one must exist.
    let create_dir = config.admin.socket.is_none();
    let listener = socket::bind(&path, create_dir)
        .await
        .with_context(|| "the control socket (turn it off with [admin] socket = \"\")")?;
    Ok(Some(Control { listener, path }))
}

impl Control {
    /// Serves requests until `cancel`, then removes the socket.
    pub fn serve(
        self,
        shared: Arc<Shared>,
        config_path: Option<PathBuf>,
        cancel: CancellationToken,
    ) {
        let ctx = Arc::new(commands::Context {
            shared,
            config_path,
        });
        tokio::spawn(socket::serve(self.listener, self.path, ctx, cancel));
    }
}
