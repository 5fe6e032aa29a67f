//! `--route` (sshuttle mode): TCP to whole networks goes through the tunnel with no proxy
//! settings. nft redirects the machine's own connections to those networks to a loopback
//! listener ([`listener`]), which reads where each was going ([`original_dst`]) and opens
//! it as a direct-tcpip channel through the session; `--dns` adds a DNS forwarder
//! ([`dns`]). The rules ([`nft`]) are installed once the first session is up and stay
//! through reconnects; dropping [`Running`] removes them. Design: docs/design/route.md.

pub mod cidr;
pub mod dns;
pub mod listener;
pub mod nft;
pub mod original_dst;

use super::cli::Cli;
use super::error::ClientError;
use super::session::{ConnectSettings, Session, Transport};
use super::supervisor::SessionSlot;
use crate::config::forward::Endpoint;
use crate::forward::local::ForwardStats;
use cidr::Cidr;
use dns::{DnsForwarder, DnsStats, DnsTargets};
use listener::{RouteEntry, RouteListener};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The fwmark for warren's own connections to the server (and to every jump host), when
/// --route or --dns is on: the rules let marked packets pass, so the tunnel never captures
/// itself. A setting of each connection (`ConnectSettings::fwmark`), decided from the
/// command line alone, so the session code needs nothing from here.
pub fn socket_mark(cli: &Cli) -> Option<u32> {
    (!cli.route.is_empty() || cli.dns.is_some()).then_some(nft::MARK)
}

/// --route, --exclude, --dns, --dns-domain as given.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    pub routes: Vec<Cidr>,
    pub excludes: Vec<Cidr>,
    /// `Some(None)`: --dns without a server (the server's own resolver).
    pub dns: Option<Option<String>>,
    pub dns_domains: Vec<String>,
}

impl RouteOptions {
    /// `None` when none of the flags is given.
    pub fn from_cli(cli: &Cli) -> Result<Option<RouteOptions>, ClientError> {
        if cli.route.is_empty() && cli.dns.is_none() {
            if !cli.exclude.is_empty() || !cli.dns_domain.is_empty() {
                return Err(ClientError::Usage(
                    "--exclude and --dns-domain go with --route or --dns".into(),
                ));
            }
            return Ok(None);
        }
        let parse = |flag: &str, v: &[String]| {
            v.iter()
                .map(|s| {
                    s.parse::<Cidr>()
                        .map_err(|e| ClientError::Usage(format!("{flag} {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        if !cfg!(target_os = "linux") {
            return Err(ClientError::Usage(
                "--route and --dns need Linux (nftables)".into(),
            ));
        }
        let dns = cli
            .dns
            .as_ref()
            .map(|s| Some(s.clone()).filter(|s| !s.is_empty()));
        if let Some(Some(server)) = &dns
            && (server.is_empty() || server.contains(char::is_whitespace))
        {
            return Err(ClientError::Usage(format!(
                "--dns={server}: expected an address or name"
            )));
        }
        Ok(Some(RouteOptions {
            routes: parse("--route", &cli.route)?,
            excludes: parse("--exclude", &cli.exclude)?,
            dns,
            dns_domains: cli.dns_domain.clone(),
        }))
    }

    /// Before anything is connected: the privilege and the tool are there (exit 2 with the
    /// fix otherwise) and tables of warren processes killed earlier are gone.
    pub fn preflight(&self) -> Result<(), ClientError> {
        nft::preflight().map_err(ClientError::Usage)?;
        nft::remove_stale();
        Ok(())
    }
}

/// One route as `warren status` reports it (part of its `--json` output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStatus {
    /// "10.0.1.0/24", or "dns" for the DNS forwarder.
    pub route: String,
    pub active: u64,
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// DNS queries answered (the "dns" row only).
    #[serde(default)]
    pub dns_answered: u64,
}

/// Running routes; dropping it removes the rules.
pub struct Running {
    pub counters: Arc<Counters>,
    _rules: nft::Installed,
}

/// The routes' counters, apart from the rules so that a reader (the control socket)
/// never keeps the rules alive.
pub struct Counters {
    routes: Arc<Vec<RouteEntry>>,
    dns: Option<Arc<DnsStats>>,
}

impl Counters {
    pub fn snapshot(&self) -> Vec<RouteStatus> {
        let mut out: Vec<RouteStatus> = self
            .routes
            .iter()
            .map(|r| RouteStatus {
                route: r.cidr.to_string(),
                active: r.stats.active(),
                connections: r.stats.connections(),
                bytes_up: r.stats.bytes_up(),
                bytes_down: r.stats.bytes_down(),
                dns_answered: 0,
            })
            .collect();
        if let Some(d) = &self.dns {
            out.push(RouteStatus {
                route: "dns".into(),
                active: 0,
                connections: 0,
                bytes_up: 0,
                bytes_down: 0,
                dns_answered: d.answered.load(Ordering::Relaxed),
            });
        }
        out
    }
}

/// Binds the listeners, finds the DNS server, installs the rules and starts serving
/// through `slot`. Called once the first session is up.
pub async fn start(
    opts: &RouteOptions,
    slot: &Arc<SessionSlot>,
    connect: &ConnectSettings,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Running, ClientError> {
    let fail = |what: &str, e: String| ClientError::Forward(format!("--route: {what}: {e}"));
    let listener =
        RouteListener::bind().map_err(|e| fail("cannot listen on loopback", e.to_string()))?;
    let mut excludes = opts.excludes.clone();
    // Belt and braces beside the socket mark: a ProxyCommand's own connection is not ours
    // to mark, so the server's addresses are never routed either.
    for ip in server_addresses(connect).await {
        excludes.push(Cidr::host(ip));
    }
    let mut dns_plan = None;
    let mut dns_run = None;
    if let Some(server) = &opts.dns {
        let server = match server {
            Some(s) => s.clone(),
            None => remote_nameserver(slot).await?.to_string(),
        };
        let local_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolvers = dns::nameservers(&local_conf);
        if resolvers.is_empty() {
            return Err(fail(
                "--dns",
                "no nameserver in /etc/resolv.conf to take over".into(),
            ));
        }
        let fwd = DnsForwarder::bind()
            .map_err(|e| fail("--dns: cannot listen on loopback", e.to_string()))?;
        dns_plan = Some((resolvers.clone(), fwd.port));
        let targets = DnsTargets {
            server: Endpoint::Tcp {
                host: server.trim_matches(['[', ']']).to_string(),
                port: 53,
            },
            domains: opts.dns_domains.clone(),
            fallback: resolvers.first().copied(),
        };
        info!(
            "--dns: queries{} go to {server} through the tunnel",
            match opts.dns_domains.is_empty() {
                true => String::new(),
                false => format!(" under {}", opts.dns_domains.join(", ")),
            }
        );
        dns_run = Some((fwd, targets));
    }
    let plan = nft::Plan {
        routes: opts.routes.clone(),
        excludes: excludes.clone(),
        tcp_port: listener.port,
        dns: dns_plan,
    };
    let rules = nft::install(&plan).map_err(|e| fail("cannot install nftables rules", e))?;
    let routes: Arc<Vec<RouteEntry>> = Arc::new(
        opts.routes
            .iter()
            .map(|&cidr| RouteEntry {
                cidr,
                stats: Arc::<ForwardStats>::default(),
            })
            .collect(),
    );
    let port = listener.port;
    listener.serve(
        slot.clone(),
        routes.clone(),
        Arc::new(excludes),
        cancel.clone(),
        tracker,
    );
    let dns_stats = dns_run.map(|(fwd, targets)| {
        let stats = Arc::new(DnsStats::default());
        fwd.serve(
            slot.clone(),
            targets,
            stats.clone(),
            cancel.clone(),
            tracker,
        );
        stats
    });
    let list: Vec<String> = opts.routes.iter().map(Cidr::to_string).collect();
    info!(
        "route ready: {} through the tunnel (table inet {}, listener port {port})",
        if list.is_empty() {
            "DNS only".into()
        } else {
            list.join(" ")
        },
        nft::table_name(std::process::id())
    );
    Ok(Running {
        counters: Arc::new(Counters {
            routes,
            dns: dns_stats,
        }),
        _rules: rules,
    })
}

/// Where our connection goes first (the server, or the first jump host), resolved.
async fn server_addresses(connect: &ConnectSettings) -> Vec<IpAddr> {
    let (host, port) = match &connect.transport {
        Transport::Jump(hops) => match hops.first() {
            Some(h) => (h.host.clone(), h.port),
            None => return Vec::new(),
        },
        _ => (connect.host.clone(), connect.port),
    };
    match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => {
            warn!("--route: cannot resolve {host} to exclude it: {e}");
            Vec::new()
        }
    }
}

/// The first nameserver of the server's /etc/resolv.conf (one remote `cat`).
async fn remote_nameserver(slot: &Arc<SessionSlot>) -> Result<IpAddr, ClientError> {
    let err = |e: String| {
        ClientError::Forward(format!(
            "--dns: cannot read the server's /etc/resolv.conf ({e}); name the DNS server: --dns=ADDRESS"
        ))
    };
    let session: Arc<Session> = slot.get().ok_or_else(|| err("not connected".into()))?;
    let read = async {
        let (mut channel, _events) = session
            .exec("cat /etc/resolv.conf", false)
            .await
            .map_err(|e| e.to_string())?;
        let id = channel.id();
        let mut text = Vec::new();
        // A resolv.conf is small; more than this is not one.
        let r = (&mut channel).take(64 * 1024).read_to_end(&mut text).await;
        session.exec_finished(id);
        r.map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&text).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| err("no answer within 10s".into()))?
        .map_err(err)?;
    dns::first_nameserver(&text).ok_or_else(|| err("it names no nameserver".into()))
}
