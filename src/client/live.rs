//! The forwards of a running tunnel, as a set that `-O forward` and `-O cancel` change
//! while it runs: a -L/-D added later is served like one from the command line, and an
//! added -R is asked for again after every reconnect (it lives in the supervisor's
//! [`RemoteSet`]), all without touching the SSH session.

use super::supervisor::{self, Health, RemoteSet, SessionSlot};
use crate::config::forward::{self, DynamicForward, Listen, LocalForward, RemoteForward};
use crate::forward::dynamic::DynamicListener;
use crate::forward::local::{ForwardStats, LocalListener};
use crate::proxy::ProxyCredentials;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// Which flag a forward came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    L,
    R,
    D,
}

impl Kind {
    pub fn flag(self) -> &'static str {
        match self {
            Kind::L => "-L",
            Kind::R => "-R",
            Kind::D => "-D",
        }
    }
}

/// One forward as `warren status` reports it (part of the documented `--json` output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardStatus {
    /// "L", "R" or "D".
    pub kind: Kind,
    /// The spec as given.
    pub spec: String,
    /// Local addresses listened on (-L/-D), or for -R the server side as "address:port".
    pub listening: Vec<String>,
    /// The port listened on (the chosen one for port 0); for -R the server's; 0 for unix
    /// sockets and for a -R not granted (yet).
    pub port: u32,
    /// Listening (-L/-D) or granted by the server (-R).
    pub up: bool,
    /// Connections open now and in total.
    pub active: u64,
    pub connections: u64,
    /// Bytes sent to and received from the tunnel: -L and -R count them when a connection
    /// ends, -D as they pass (its SOCKS/HTTP handshakes included).
    pub bytes_up: u64,
    pub bytes_down: u64,
}

struct Listening {
    kind: Kind,
    spec: String,
    /// Parsed, to match a cancel written differently (or with the chosen port for 0).
    local: Option<LocalForward>,
    dynamic: Option<DynamicForward>,
    addresses: Vec<String>,
    stats: Arc<ForwardStats>,
    stop: CancellationToken,
    closed: CancellationToken,
}

/// Everything needed to add and remove forwards on the running tunnel.
pub struct Live {
    pub slot: Arc<SessionSlot>,
    pub remotes: Arc<RemoteSet>,
    pub health: Arc<Health>,
    /// Stops every listener (the tunnel is stopping); each has a child token of its own.
    stop: CancellationToken,
    /// The listeners' tasks, waited for (bounded) when the tunnel stops.
    pub tracker: TaskTracker,
    listening: Mutex<Vec<Listening>>,
    pub gateway_ports: bool,
    pub preconnect: bool,
    pub proxy_auth: Option<ProxyCredentials>,
    pub quiet: bool,
}

impl Live {
    pub fn new(
        slot: Arc<SessionSlot>,
        remotes: Arc<RemoteSet>,
        stop: CancellationToken,
        gateway_ports: bool,
        preconnect: bool,
        proxy_auth: Option<ProxyCredentials>,
        quiet: bool,
    ) -> Live {
        Live {
            slot,
            remotes,
            health: Arc::default(),
            stop,
            tracker: TaskTracker::new(),
            listening: Mutex::new(Vec::new()),
            gateway_ports,
            preconnect,
            proxy_auth,
            quiet,
        }
    }

    fn listening(&self) -> std::sync::MutexGuard<'_, Vec<Listening>> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves a bound -L through the tunnel's session until the tunnel stops or it is
    /// cancelled.
    pub fn serve_local(&self, l: LocalListener, fwd: Option<LocalForward>) {
        let stop = self.stop.child_token();
        let entry = Listening {
            kind: Kind::L,
            spec: l.spec.clone(),
            local: fwd.or_else(|| forward::parse_local(&l.spec).ok()),
            dynamic: None,
            addresses: l.addresses(),
            stats: l.stats.clone(),
            stop: stop.clone(),
            closed: l.closed(),
        };
        self.listening().push(entry);
        self.tracker.spawn(l.serve(self.slot.clone(), stop));
    }

    /// As [`Live::serve_local`], for a -D.
    pub fn serve_dynamic(&self, d: DynamicListener, fwd: Option<DynamicForward>) {
        let stop = self.stop.child_token();
        let entry = Listening {
            kind: Kind::D,
            spec: d.spec.clone(),
            local: None,
            dynamic: fwd.or_else(|| forward::parse_dynamic(&d.spec).ok()),
            addresses: d.addresses(),
            stats: d.stats.clone(),
            stop: stop.clone(),
            closed: d.closed(),
        };
        self.listening().push(entry);
        self.tracker.spawn(d.serve(self.slot.clone(), stop));
    }

    /// `-O forward`: binds or requests the forward now. Returns the port listened on.
    pub async fn add(&self, kind: Kind, spec: &str) -> Result<u32, String> {
        match kind {
            Kind::L => {
                let fwd = forward::parse_local(spec).map_err(|e| e.to_string())?;
                if self.find(kind, spec).is_some() {
                    return Err(format!("-L {spec} is already forwarded"));
                }
                let l = LocalListener::bind(&fwd, self.gateway_ports)
                    .await
                    .map_err(|e| e.to_string())?
                    .with_preconnect(self.preconnect);
                let port = first_port(&l.addresses());
                info!(
                    "forward ready: -L {} listening on {}",
                    l.spec,
                    l.addresses().join(" ")
                );
                self.serve_local(l, Some(fwd));
                Ok(u32::from(port))
            }
            Kind::D => {
                let fwd = forward::parse_dynamic(spec).map_err(|e| e.to_string())?;
                if self.find(kind, spec).is_some() {
                    return Err(format!("-D {spec} is already forwarded"));
                }
                let d = DynamicListener::bind(&fwd, self.gateway_ports, self.proxy_auth.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                let port = first_port(&d.addresses());
                info!(
                    "forward ready: -D {} listening on {}",
                    d.spec,
                    d.addresses().join(" ")
                );
                self.serve_dynamic(d, Some(fwd));
                Ok(u32::from(port))
            }
            Kind::R => {
                let fwd = forward::parse_remote(spec).map_err(|e| e.to_string())?;
                if !self.remotes.push(fwd.clone()) {
                    return Err(format!("-R {spec} is already forwarded"));
                }
                // While reconnecting, the supervisor asks for it with the others.
                let Some(session) = self.slot.get() else {
                    return Ok(0);
                };
                let stats = self
                    .remotes
                    .list()
                    .into_iter()
                    .find(|r| r.fwd == fwd)
                    .map(|r| r.stats);
                let stats = stats.unwrap_or_default();
                match supervisor::request_remote_counted(&session, &fwd, stats, self.quiet).await {
                    Ok(port) => {
                        self.remotes.set_port(&fwd, Some(port));
                        Ok(port)
                    }
                    Err(e) => {
                        self.remotes.remove(&fwd);
                        Err(e)
                    }
                }
            }
        }
    }

    /// `-O cancel`: closes the listener (-L/-D; open connections may finish) or cancels
    /// the server's (-R). Returns once the port is closed.
    pub async fn cancel(&self, kind: Kind, spec: &str) -> Result<(), String> {
        match kind {
            Kind::L | Kind::D => {
                let i = self
                    .find(kind, spec)
                    .ok_or_else(|| format!("no {} {spec} to cancel", kind.flag()))?;
                let entry = self.listening().remove(i);
                entry.stop.cancel();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), entry.closed.cancelled()).await;
                info!("forward cancelled: {} {}", kind.flag(), entry.spec);
                Ok(())
            }
            Kind::R => {
                let fwd = forward::parse_remote(spec).map_err(|e| e.to_string())?;
                let state = self
                    .find_remote(&fwd)
                    .ok_or_else(|| format!("no -R {spec} to cancel"))?;
                self.remotes.remove(&state.fwd);
                if let (Some(session), Some(port)) = (self.slot.get(), state.port) {
                    session.cancel_remote(&state.fwd, port).await?;
                }
                info!("forward cancelled: -R {}", state.fwd.spec);
                Ok(())
            }
        }
    }

    /// The -R a cancel means: the same spec, or the same one with the granted port in
    /// place of 0.
    fn find_remote(&self, fwd: &RemoteForward) -> Option<supervisor::RemoteState> {
        let all = self.remotes.list();
        if let Some(r) = all
            .iter()
            .find(|r| r.fwd.listen == fwd.listen && r.fwd.connect == fwd.connect)
        {
            return Some(r.clone());
        }
        let Listen::Tcp { bind, port } = &fwd.listen else {
            return None;
        };
        all.into_iter().find(|r| {
            matches!(&r.fwd.listen, Listen::Tcp { bind: b, port: 0 } if b == bind)
                && r.port == Some(u32::from(*port))
                && r.fwd.connect == fwd.connect
        })
    }

    /// Index of the -L/-D a spec means: the same text, the same forward, or the same one
    /// with the chosen port in place of 0.
    fn find(&self, kind: Kind, spec: &str) -> Option<usize> {
        let local = (kind == Kind::L)
            .then(|| forward::parse_local(spec).ok())
            .flatten();
        let dynamic = (kind == Kind::D)
            .then(|| forward::parse_dynamic(spec).ok())
            .flatten();
        let entries = self.listening();
        entries.iter().position(|e| {
            if e.kind != kind {
                return false;
            }
            if e.spec == spec {
                return true;
            }
            let bound = first_port(&e.addresses);
            match (&e.local, &local, &e.dynamic, &dynamic) {
                (Some(have), Some(want), _, _) => {
                    let same_or_chosen = have.listen == want.listen
                        || matches!((&have.listen, &want.listen),
                            (Listen::Tcp { bind: b1, port: 0 }, Listen::Tcp { bind: b2, port })
                                if b1 == b2 && *port == bound);
                    have.connect == want.connect && same_or_chosen
                }
                (_, _, Some(have), Some(want)) => {
                    have.bind == want.bind
                        && (have.port == want.port || (have.port == 0 && want.port == bound))
                }
                _ => false,
            }
        })
    }

    /// Every forward with its counters, -L and -D first, then -R.
    pub fn snapshot(&self) -> Vec<ForwardStatus> {
        let mut out: Vec<ForwardStatus> = self
            .listening()
            .iter()
            .map(|e| ForwardStatus {
                kind: e.kind,
                spec: e.spec.clone(),
                listening: e.addresses.clone(),
                port: u32::from(first_port(&e.addresses)),
                up: !e.closed.is_cancelled(),
                active: e.stats.active(),
                connections: e.stats.connections(),
                bytes_up: e.stats.bytes_up(),
                bytes_down: e.stats.bytes_down(),
            })
            .collect();
        for r in self.remotes.list() {
            let listening = match (&r.fwd.listen, r.port) {
                (Listen::Unix(p), Some(_)) => vec![p.display().to_string()],
                (Listen::Tcp { bind, .. }, Some(port)) => {
                    vec![format!("{}:{port}", bind.as_deref().unwrap_or("localhost"))]
                }
                _ => Vec::new(),
            };
            out.push(ForwardStatus {
                kind: Kind::R,
                spec: r.fwd.spec.clone(),
                listening,
                port: r.port.unwrap_or(0),
                up: r.port.is_some(),
                active: r.stats.active(),
                connections: r.stats.connections(),
                bytes_up: r.stats.bytes_up(),
                bytes_down: r.stats.bytes_down(),
            });
        }
        out
    }
}

/// The port of the first TCP address (0 for unix sockets).
pub fn first_port(addrs: &[String]) -> u16 {
    addrs
        .iter()
        .find_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or(0)
}
