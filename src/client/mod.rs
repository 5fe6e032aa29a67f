//! The `warren` client: one SSH session to an OpenSSH-compatible server carrying the
//! user's forwards.
//!
//! Flow: [`settings`] resolves flags and options; `-L` listeners are bound first (so a busy
//! port fails fast); [`session`] dials, checks the host key ([`host_key`],
//! [`known_hosts`]) and authenticates ([`auth`]); then each listener serves through the
//! session until a signal or the connection's end.

pub mod agent;
pub mod auth;
pub mod background;
pub mod backoff;
pub mod cli;
pub mod cli_help;
pub mod commands;
pub mod compat;
pub mod control;
pub mod early;
pub mod error;
pub mod exec;
pub mod flags;
pub mod handler;
pub mod host_cert;
pub mod host_key;
pub mod key_file;
pub mod known_hosts;
pub mod live;
pub mod out;
pub mod prompt;
pub mod proxy_command;
pub mod route;
pub mod service;
pub mod session;
pub mod settings;
pub mod source;
pub mod supervisor;
pub mod tun;

pub use cli::Cli;
pub use error::ClientError;

use crate::config::forward::Endpoint;
use crate::forward::dynamic::DynamicListener;
use crate::forward::local::LocalListener;
use crate::forward::stdio;
use crate::proxy::ProxyCredentials;
use session::Session;
use settings::Settings;
use std::sync::Arc;
use std::time::Duration;
use supervisor::{ReconnectPolicy, SessionSlot, Supervisor};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The runtime warren runs on. One thread, like ssh: a tunnel's work is a chain of short
/// hand-offs (socket -> session -> channel -> socket), and on a multi-threaded runtime each
/// hand-off may wake another thread. Measured on loopback, one thread opens ~10-20 % more
/// forwarded connections per second and moves bulk data with less CPU; the SSH session is
/// one task either way, so more threads never bought parallel crypto. Blocking work
/// (prompts, host-key file updates) runs on tokio's blocking pool.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs the client until SIGINT/SIGTERM, the end of a remote command, -W stream or --exec
/// command (`Ok` with the exit status), or a failure (`Err`, with its own exit status).
pub async fn run(cli: Cli) -> Result<u8, ClientError> {
    if cli.print_config {
        out::print(&settings::print_config(&cli)?);
        return Ok(0);
    }
    flags::check(&cli)?;
    let settings = Settings::resolve(&cli)?;
    let ctl = settings.control.clone();
    if let Some(op) = cli.control_command.as_deref() {
        return Ok(control::client_command(&cli, &ctl, op).await);
    }
    if cli.exec && settings.command.is_none() {
        return Err(ClientError::Usage(
            "--exec needs a command: warren [forwards] host --exec -- COMMAND [ARGS...]".into(),
        ));
    }
    let proxy_auth = match cli.proxy_auth.as_deref() {
        None => None,
        Some(s) => match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Some(ProxyCredentials::new(u, p)),
            _ => {
                return Err(ClientError::Usage(
                    "--proxy-auth / WARREN_PROXY_AUTH: expected USER:PASSWORD".into(),
                ));
            }
        },
    };
    let routing = route::RouteOptions::from_cli(&cli)?;
    if let Some(r) = &routing {
        if settings.stdio.is_some() || (settings.command.is_some() && !cli.exec) {
            return Err(ClientError::Usage(
                "--route and --dns run with the tunnel (-N, or --exec), not -W or a remote command"
                    .into(),
            ));
        }
        r.preflight()?;
    }
    // ControlMaster auto/no: a warren already holding this ControlPath takes our forwards
    // (not routes: they are this process's rules).
    if settings.command.is_none()
        && settings.stdio.is_none()
        && routing.is_none()
        && let Some(status) = control::join_master(&cli, &ctl).await
    {
        return Ok(status);
    }
    let cancel = CancellationToken::new();
    let reconnect_now = Arc::new(Notify::new());
    tokio::spawn(signals(cancel.clone(), reconnect_now.clone()));

    let announce = service::Announce::new(
        settings.connect.quiet,
        settings.stdio.is_some() || (settings.command.is_some() && !cli.exec),
    );
    // Listeners first: a busy port fails before any prompt or network round trip.
    let mut locals = Vec::new();
    for fwd in &settings.local_forwards {
        if let (true, crate::config::forward::Listen::Unix(path)) =
            (settings.stream_local_bind_unlink, &fwd.listen)
        {
            unlink_socket(path);
        }
        match LocalListener::bind_with(fwd, settings.gateway_ports, settings.address_family).await {
            Ok(l) => {
                announce.local(fwd, &l.addresses());
                locals.push(l.with_preconnect(cli.preconnect));
            }
            Err(e) if settings.exit_on_forward_failure => {
                return Err(ClientError::Forward(e.to_string()));
            }
            Err(e) => warn!("{e}; continuing without it (ExitOnForwardFailure=no)"),
        }
    }
    let mut dynamics = Vec::new();
    for fwd in &settings.dynamic_forwards {
        let bound = DynamicListener::bind_with(
            fwd,
            settings.gateway_ports,
            settings.address_family,
            proxy_auth.clone(),
        );
        match bound.await {
            Ok(l) => {
                announce.dynamic(fwd, &l.addresses());
                dynamics.push(l);
            }
            Err(e) if settings.exit_on_forward_failure => {
                return Err(ClientError::Forward(e.to_string()));
            }
            Err(e) => warn!("{e}; continuing without it (ExitOnForwardFailure=no)"),
        }
    }

    // The local tunnel device, like the listeners, before the network: no root fails now.
    let tun_device = match (&settings.tunnel, settings.stdio.is_some()) {
        (Some(t), false) => Some(Arc::new(
            tun::Device::open(
                t.device.local,
                t.mode == crate::config::values::TunnelMode::Ethernet,
            )
            .map_err(ClientError::Forward)?,
        )),
        _ => None,
    };
    if let Some(d) = &tun_device {
        info!("tunnel device {} created", d.name());
    }

    // One-shot modes: the session is the job, so it is not re-established.
    let remote_command = settings
        .command
        .clone()
        .filter(|_| !cli.exec && !settings.no_remote_command);
    if settings.stdio.is_some() || remote_command.is_some() {
        let session = tokio::select! {
            s = Session::connect(&settings.connect) => Arc::new(s?),
            _ = cancel.cancelled() => return Ok(0),
        };
        if let Some(target) = &settings.stdio {
            let result = stdio_forward(&session, target).await;
            supervisor::shutdown(&session).await;
            return result.map(|()| 0);
        }
        for fwd in &settings.remote_forwards {
            if let Err(e) = supervisor::request_remote(&session, fwd, settings.connect.quiet).await
            {
                if settings.exit_on_forward_failure {
                    supervisor::shutdown(&session).await;
                    return Err(ClientError::Forward(format!("{e} (-R {})", fwd.spec)));
                }
                warn!("{e} (-R {}); continuing without it", fwd.spec);
            }
        }
        let mut tunnel_task = None;
        if let (Some(dev), Some(t)) = (tun_device.clone(), settings.tunnel) {
            match tun::open(&session, &t).await {
                Ok(ch) => {
                    tunnel_task = Some(tokio::spawn(async move {
                        let why = tun::relay(
                            &dev,
                            &ch,
                            t.mode == crate::config::values::TunnelMode::Ethernet,
                        )
                        .await;
                        info!("tunnel: {why}");
                    }))
                }
                Err(e) if settings.exit_on_forward_failure => {
                    supervisor::shutdown(&session).await;
                    return Err(ClientError::Forward(e));
                }
                Err(e) => warn!("{e}; continuing without it"),
            }
        }
        let tracker = serve_listeners(locals, dynamics, session.clone(), &cancel);
        let command = remote_command.unwrap_or_default();
        let result = tokio::select! {
            r = exec::run(&session, &command, settings.subsystem, settings.null_stdin) => r,
            _ = cancel.cancelled() => Ok(0),
            reason = session.closed() => Err(ClientError::Lost { host: settings.connect.host.clone(), reason }),
        };
        cancel.cancel();
        if let Some(t) = tunnel_task {
            t.abort();
        }
        drain(&tracker).await;
        supervisor::shutdown(&session).await;
        return result;
    }

    // Tunnel mode: a supervised session that heals itself.
    let slot = SessionSlot::new(Duration::from_secs(30));
    let local_ports: Vec<u16> = locals.iter().map(|l| first_port(&l.addresses())).collect();
    let dynamic_ports: Vec<u16> = dynamics
        .iter()
        .map(|l| first_port(&l.addresses()))
        .collect();
    // The forward set is live: -O forward / -O cancel change it while the tunnel runs.
    let remotes = supervisor::RemoteSet::new(settings.remote_forwards.clone());
    let live = Arc::new(live::Live::new(
        slot.clone(),
        remotes.clone(),
        cancel.clone(),
        settings.gateway_ports,
        cli.preconnect,
        proxy_auth.clone(),
        settings.connect.quiet,
    ));
    let listener_count = locals.len() + dynamics.len();
    for l in locals {
        info!(
            "forward ready: -L {} listening on {}",
            l.spec,
            l.addresses().join(" ")
        );
        live.serve_local(l, None);
    }
    for d in dynamics {
        info!(
            "forward ready: -D {} listening on {}",
            d.spec,
            d.addresses().join(" ")
        );
        live.serve_dynamic(d, None);
    }
    // A tunnel runs for weeks: what a burst of connections held goes back to the kernel.
    let held = slot.clone();
    tokio::spawn(crate::memory::trim_after_shrinking(
        move || held.get().map_or(0, |s| s.held_estimate()),
        cancel.clone(),
    ));
    let tracker = live.tracker.clone();
    let session_stop = CancellationToken::new();
    let supervisor = Supervisor {
        connect: settings.connect.clone(),
        remote_forwards: remotes,
        health: live.health.clone(),
        exit_on_forward_failure: settings.exit_on_forward_failure,
        reconnect: ReconnectPolicy {
            enabled: !cli.no_reconnect,
            max_attempts: cli.max_reconnects,
        },
        quiet: settings.connect.quiet,
        slot: slot.clone(),
        // Its own token: on stop, the session outlives the listeners by the drain time.
        cancel: session_stop.clone(),
        reconnect_now,
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let mut supervised = tokio::spawn(supervisor.run(ready_tx));
    let mut tunnel_first = None;
    if let (Some(dev), Some(t)) = (tun_device.clone(), settings.tunnel) {
        let (tx, rx) = oneshot::channel();
        tunnel_first = Some(rx);
        tokio::spawn(tun::serve(dev, slot.clone(), t, Some(tx), cancel.clone()));
    }
    let ready = tokio::select! {
        r = ready_rx => r.ok(),
        _ = cancel.cancelled() => None,
    };
    let Some(ready) = ready else {
        cancel.cancel();
        session_stop.cancel();
        tracker.close();
        tracker.wait().await;
        return match supervised.await {
            Ok(Err(e)) => Err(e),
            _ => Ok(0),
        };
    };
    // Ready means the tunnel device carries packets too (or ExitOnForwardFailure=no).
    if let Some(first) = tunnel_first {
        let outcome = tokio::select! {
            r = first => r.unwrap_or_else(|_| Err("the tunnel device task ended".into())),
            _ = cancel.cancelled() => Ok(()),
        };
        if let Err(e) = outcome {
            if settings.exit_on_forward_failure {
                cancel.cancel();
                session_stop.cancel();
                tracker.close();
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut supervised).await;
                return Err(ClientError::Forward(e));
            }
            warn!("{e}; continuing without it (ExitOnForwardFailure=no)");
        }
    }
    // Rules once connected; removed when `routes` drops, on every way out of here.
    let routes = match &routing {
        None => None,
        Some(r) => match route::start(r, &slot, &settings.connect, &cancel, &tracker).await {
            Ok(running) => Some(running),
            Err(e) => {
                cancel.cancel();
                session_stop.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut supervised).await;
                return Err(e);
            }
        },
    };
    // Control sockets exist before anyone is told the tunnel is ready.
    let exit_now = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let control_sockets = control::bind(ctl.serves_path().as_deref());
    tokio::spawn(control::serve(
        control_sockets,
        Arc::new(control::Control {
            live: live.clone(),
            id: ctl.id.clone(),
            destination: ready.destination.clone(),
            control_path: ctl.serves_path(),
            cancel: cancel.clone(),
            exit_now: exit_now.clone(),
            routes: routes.as_ref().map(|r| r.counters.clone()),
        }),
    ));
    let count = listener_count + settings.remote_forwards.len();
    info!(
        "ready: connected to {}, {count} forward(s)",
        ready.destination
    );

    let ports = PortEnv::new(&local_ports, &dynamic_ports, &ready.remote_ports);
    if cli.print_ports {
        let lines: String = ports
            .vars()
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        out::print_if_read(&lines);
    }
    let _pidfile = cli.pidfile.as_deref().map(PidFile::write).transpose()?;
    if background::is_child() {
        background::signal_ready();
    }
    service::report_ready(&slot, &ready.destination, count);

    let result = match cli.exec {
        true => {
            let status = tokio::select! {
                s = run_local(&cli.command, &ports) => s,
                r = &mut supervised => Err(r.unwrap_or(Ok(())).err().unwrap_or(ClientError::Lost {
                    host: settings.connect.host.clone(),
                    reason: "the tunnel ended before the command".into(),
                })),
                _ = cancel.cancelled() => Ok(130),
            };
            cancel.cancel();
            status
        }
        false => tokio::select! {
            r = &mut supervised => match r {
                Ok(r) => r.map(|()| 0),
                Err(e) => Err(ClientError::Other(e.into())),
            },
            _ = cancel.cancelled() => {
                info!("stopping: no new connections; letting active ones finish (up to {}s)", DRAIN.as_secs());
                Ok(0)
            }
        },
    };
    cancel.cancel();
    crate::systemd::stopping();
    tracker.close();
    // -O exit: at once, without letting open connections finish.
    if !supervised.is_finished() && !exit_now.load(std::sync::atomic::Ordering::Relaxed) {
        drain(&tracker).await;
    }
    session_stop.cancel();
    // Lets the supervisor cancel -R forwards and say goodbye (it may already be done, and
    // a finished JoinHandle must not be polled again).
    if !supervised.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut supervised).await;
    }
    // Whatever was still running ended with the session.
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    if background::is_child() && result.is_ok() {
        background::remove_log();
    }
    result
}

/// StreamLocalBindUnlink: removes `path` if it is a socket (never a regular file).
fn unlink_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// How long a stop waits for connections that are already open to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// Waits (bounded) for the listeners' active connections after they stopped accepting.
async fn drain(tracker: &TaskTracker) {
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        warn!("closing connections still open after {}s", DRAIN.as_secs());
    }
}

/// Starts serving every listener through `opener`; the tracker ends when they do.
fn serve_listeners<O: crate::forward::Opener>(
    locals: Vec<LocalListener>,
    dynamics: Vec<DynamicListener>,
    opener: Arc<O>,
    cancel: &CancellationToken,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    for l in locals {
        tracker.spawn(l.serve(opener.clone(), cancel.clone()));
    }
    for d in dynamics {
        tracker.spawn(d.serve(opener.clone(), cancel.clone()));
    }
    tracker.close();
    tracker
}

fn first_port(addrs: &[String]) -> u16 {
    addrs
        .iter()
        .find_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The environment --exec passes and --print-ports prints.
struct PortEnv(Vec<(String, String)>);

impl PortEnv {
    fn new(local: &[u16], dynamic: &[u16], remote: &[u32]) -> PortEnv {
        let mut v = Vec::new();
        if let Some(p) = local.first() {
            v.push(("WARREN_LOCAL_PORT".to_string(), p.to_string()));
        }
        for (i, p) in local.iter().enumerate() {
            v.push((format!("WARREN_LOCAL_PORT_{}", i + 1), p.to_string()));
        }
        for (i, p) in dynamic.iter().enumerate() {
            v.push((format!("WARREN_DYNAMIC_PORT_{}", i + 1), p.to_string()));
        }
        for (i, p) in remote.iter().enumerate() {
            v.push((format!("WARREN_REMOTE_PORT_{}", i + 1), p.to_string()));
        }
        PortEnv(v)
    }

    fn vars(&self) -> &[(String, String)] {
        &self.0
    }
}

/// --exec: the local command, with the ports in its environment; its status is ours
/// (128+signal when killed, as a shell reports it).
async fn run_local(argv: &[String], ports: &PortEnv) -> Result<u8, ClientError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| ClientError::Usage("--exec: empty command".into()))?;
    let mut cmd = tokio::process::Command::new(program);
    // The command is not the service: its notifications must not reach our unit.
    cmd.args(args)
        .kill_on_drop(true)
        .env_remove(crate::systemd::NOTIFY_SOCKET);
    for (k, v) in ports.vars() {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| ClientError::Usage(format!("--exec: cannot run '{program}': {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 255,
    })
}

/// --pidfile: written once ready, removed on exit.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(path: &std::path::Path) -> Result<PidFile, ClientError> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            ClientError::Other(anyhow::anyhow!(
                "cannot write pidfile {}: {e}",
                path.display()
            ))
        })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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

/// SIGINT and SIGTERM stop cleanly (listeners closed, -R cancelled, goodbye said, exit 0);
/// SIGHUP drops the session and reconnects at once.
async fn signals(cancel: CancellationToken, reconnect_now: Arc<Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => reconnect_now.notify_one(),
        }
    }
    cancel.cancel();
}
