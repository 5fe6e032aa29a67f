//! Starting warrend: configuration, host keys, audit, sockets, signals; then serving
//! until SIGTERM/SIGINT. SIGHUP reloads the configuration without dropping sessions.

use super::audit::{AuditEvent, AuditSink};
use super::config::ServerConfig;
use super::exit_status::Stage;
use super::host_addresses;
use super::host_keys;
use super::listener;
use super::preflight;
use super::reload;
use super::service_notify;
use super::session_threads::SessionThreads;
use super::state::Shared;
use crate::logging::stamp;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use warren_ssh::proto::{Config, Role};

/// What the command line decided.
pub struct Options {
    pub config: Option<PathBuf>,
    /// Overrides `[server] listen` when not empty.
    pub listen: Vec<SocketAddr>,
}

/// The SSH engine's settings for every connection. Authentication policy (methods,
/// MaxAuthTries, the rejection delay) is not here: the connection answers each request.
fn engine_config(config: &ServerConfig, keys: Vec<warren_ssh::ssh_key::PrivateKey>) -> Config {
    let l = &config.limits;
    let mut c = Config::new(Role::Server);
    c.host_keys = keys;
    // Named, so that warren knows it may pipeline channel opens (client::compat).
    c.ident = concat!("SSH-2.0-warrend_", env!("CARGO_PKG_VERSION")).to_string();
    // zlib@openssh.com only (the engine never offers pre-auth "zlib"): nothing untrusted
    // is inflated before login, and keepalives go out compressed once it is on.
    c.compression = true;
    // Idle tunnels are legitimate; dead clients are found by keepalive instead.
    c.keepalive_interval = l.keepalive_interval.non_zero();
    c.keepalive_max = l.keepalive_max;
    // No window growth before login; each session gets its share of the user's
    // `max_buffered_per_user` when it logs in (connection::auth).
    c.window_budget = 0;
    // A session's channels are capped by the policy, which answers with an audited
    // refusal; the engine's own cap (which also counts -R connections warrend opens)
    // is only a backstop above it.
    let policy_cap = (l.max_channels_per_session as usize)
        .saturating_add(l.max_session_channels as usize)
        .saturating_add(16);
    c.max_channels = c.max_channels.max(policy_cap);
    c
}

/// Runs warrend until a stop signal.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    // Installed before the "listening on" line: from then on SIGHUP must reload, never
    // kill (the default action of an uncaught SIGHUP).
    let sigs = install_signals().context("installing signal handlers")?;
    let mut config = reload::load(&opts.config)?;
    preflight::inspect(&config).log_warnings();
    let keys = host_keys::load_or_generate(&config.host_key_paths(), config.state_dir())
        .context(Stage::config("host keys"))?;
    let described = host_keys::describe(&keys);
    for line in &described {
        eprintln!("{}warrend: host key {line}", stamp());
    }
    let (audit, writer) = AuditSink::open(&config.audit_destination()).with_context(|| {
        Stage::config(format!(
            "opening the audit log {:?}",
            config.audit_destination()
        ))
    })?;
    audit.set_on_failure(config.server.audit_on_failure);
    let writer = tokio::spawn(writer.run());
    let addrs = if opts.listen.is_empty() {
        config.server.listen.clone()
    } else {
        opts.listen.clone()
    };
    config.server.listen = addrs.clone();
    let control = super::admin::bind(&config).await?;
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for addr in &addrs {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| Stage::bind(format!("cannot listen on {addr}")))?;
        let local = l.local_addr()?;
        eprintln!("{}warrend: listening on {local}", stamp());
        bound.push(local.to_string());
        listeners.push(l);
    }
    // Bound before anything is announced, like the SSH listeners: a link port in use is
    // exit status 3, an unreadable node key 1.
    let cluster = match &config.cluster {
        Some(section) => {
            let prepared = super::cluster::Prepared::new(section, config.state_dir())?;
            eprintln!(
                "{}warrend: cluster node {} ({}), links on {}, node key {}",
                stamp(),
                section.node,
                section.advertise,
                prepared.link_addr()?,
                prepared.public_line()
            );
            audit.set_node(&section.node);
            Some((section.clone(), prepared))
        }
        None => None,
    };
    let ssh_config = Arc::new(engine_config(
        &config,
        keys.iter().map(|k| k.key.clone()).collect(),
    ));
    let shared = Shared::new(config, audit.clone());
    // Without the host's addresses the policy could not deny them: refuse to start.
    shared
        .host_addresses
        .refresh()
        .context("reading this host's interface addresses")?;
    audit
        .record(
            0,
            AuditEvent::ServerStart {
                listen: bound.clone(),
                host_keys: described,
            },
        )
        .await;

    let cancel = CancellationToken::new();
    if let Some((section, prepared)) = cluster {
        let config = shared.config();
        let resolve = |p: &std::path::Path| config.resolve(p);
        let cluster =
            super::cluster::Cluster::start(&section, &resolve, prepared, &shared, cancel.clone())?;
        shared.set_cluster(cluster);
    }
    let control_path = control.as_ref().map(|c| c.path.clone());
    if let Some(c) = control {
        info!("control socket {}", c.path.display());
        c.serve(shared.clone(), opts.config.clone(), cancel.clone());
    }
    if let Some(addr) = shared.config().metrics.listen {
        let l = super::metrics::http::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics ([metrics] listen) on {addr}"))?;
        eprintln!("warrend: metrics on http://{}/metrics", l.local_addr()?);
        tokio::spawn(super::metrics::http::serve(
            l,
            shared.clone(),
            cancel.clone(),
        ));
    }
    tokio::spawn(signals(
        cancel.clone(),
        shared.clone(),
        opts.config.clone(),
        sigs,
    ));
    tokio::spawn(
        shared
            .host_addresses
            .clone()
            .refresh_every(host_addresses::REFRESH_INTERVAL, cancel.clone()),
    );
    let trimmed = shared.clone();
    tokio::spawn(crate::memory::trim_after_shrinking(
        move || trimmed.held_estimate(),
        cancel.clone(),
    ));
    let threads = SessionThreads::per_core().context("starting the session threads")?;
    service_notify::ready(&shared, &bound, &cancel);
    listener::serve(listeners, threads, shared.clone(), ssh_config, cancel).await;
    if let Some(cluster) = shared.cluster() {
        // The names of this node's sessions go at once, not when the lease runs out.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), cluster.stopped()).await;
    }
    audit
        .record(
            0,
            AuditEvent::ServerStop {
                reason: "signal".into(),
            },
        )
        .await;
    if let Some(path) = &control_path {
        let _ = std::fs::remove_file(path);
    }
    // The writer drains the queue once every sink is gone; give it a moment to flush.
    drop(audit);
    drop(shared);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(())
}

/// TERM, INT and HUP, installed before anything is announced.
type SignalStreams = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

fn install_signals() -> std::io::Result<SignalStreams> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
        signal(SignalKind::hangup())?,
    ))
}

/// SIGTERM/SIGINT stop; SIGHUP reloads the config file (users, keys, rules, limits,
/// audit_on_failure) and reopens the audit file for logrotate. A broken file is reported
/// (and audited) and the running configuration kept.
async fn signals(
    cancel: CancellationToken,
    shared: Arc<Shared>,
    path: Option<PathBuf>,
    sigs: SignalStreams,
) {
    let (mut term, mut int, mut hup) = sigs;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = reload::reload(&shared, &path).await;
            }
        }
    }
    service_notify::stopping();
    cancel.cancel();
}
