//! A running cluster node: its etcd registry, its links to the other nodes, and the
//! bookkeeping that keeps etcd and this node's sessions in agreement.

use super::config::{ClusterSection, WhenEtcdDown};
use super::etcd::{ClusterRegistry, EtcdSettings, Health, Member, NameRecord, PublishError};
use super::link::{self, LinkStatus, Links, NodeKeys, PendingReach, ReachRequest};
use super::outcome::{Located, Published};
use crate::server::audit::AuditEvent;
use crate::server::state::Shared;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_ssh::driver::ChannelStream;
use warren_ssh::ssh_key::PublicKey;

/// One node of a cluster, alive as long as the process.
pub struct Cluster {
    node: String,
    registry: ClusterRegistry,
    links: Links,
    when_etcd_down: WhenEtcdDown,
    lease_ttl: Duration,
    /// What this node's sessions publish, as written to etcd: a withdraw deletes only a
    /// record still equal to it, and the reconciler removes anything else under this
    /// node's name.
    mine: Mutex<HashMap<(String, u16), NameRecord>>,
    withdraws: mpsc::UnboundedSender<(String, u16, NameRecord)>,
    /// Makes correlation ids unique across restarts of the node.
    boot: u32,
    reaches: AtomicU64,
}

/// The bound link listener and the node key, prepared before anything is announced so a
/// port in use or an unreadable key stops the start with the right exit status.
pub struct Prepared {
    listener: std::net::TcpListener,
    keys: Arc<NodeKeys>,
    public_line: String,
}

impl Prepared {
    /// Where the link listener is bound.
    pub fn link_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// `ssh-ed25519 AAAA...`: what the other nodes list for this one.
    pub fn public_line(&self) -> &str {
        &self.public_line
    }

    /// Loads (or creates) the node key, checks the node table against it and binds the
    /// link listener.
    pub fn new(section: &ClusterSection, state_dir: &Path) -> anyhow::Result<Prepared> {
        use anyhow::Context;
        let path = state_dir.join(&section.key);
        let key =
            crate::server::host_keys::load_or_generate(std::slice::from_ref(&path), state_dir)
                .with_context(|| format!("cluster node key {}", path.display()))?
                .remove(0)
                .key;
        let public = key.public_key().clone();
        let public_line = public
            .to_openssh()
            .map_err(|e| anyhow::anyhow!("cluster node key: {e}"))?;
        let mut peers = HashMap::new();
        for (id, line) in &section.nodes {
            let listed = PublicKey::from_openssh(line.trim())
                .map_err(|e| anyhow::anyhow!("cluster.nodes.{id}: {e}"))?;
            if id == &section.node {
                anyhow::ensure!(
                    listed.key_data() == public.key_data(),
                    "cluster.nodes.{id} is not this node's key: this node's key ({}) is {public_line}",
                    path.display()
                );
                continue;
            }
            peers.insert(id.clone(), listed);
        }
        let addr = section
            .link_listen()
            .ok_or_else(|| anyhow::anyhow!("cluster.listen is not set"))?;
        let listener = std::net::TcpListener::bind(addr).with_context(|| {
            crate::server::exit_status::Stage::bind(format!(
                "cannot listen for cluster links on {addr}"
            ))
        })?;
        listener.set_nonblocking(true)?;
        Ok(Prepared {
            listener,
            keys: Arc::new(NodeKeys {
                node: section.node.clone(),
                key,
                peers,
            }),
            public_line,
        })
    }
}

impl Cluster {
    /// Joins the cluster: the etcd registry (which connects in the background and never
    /// fails because etcd is down), the links, and this node's tasks. Everything ends
    /// with `cancel`.
    pub fn start(
        section: &ClusterSection,
        config_dir: &dyn Fn(&Path) -> std::path::PathBuf,
        prepared: Prepared,
        shared: &Arc<Shared>,
        cancel: CancellationToken,
    ) -> anyhow::Result<Arc<Cluster>> {
        let e = &section.etcd;
        let password = match &e.password_file {
            Some(p) => {
                let p = config_dir(p);
                let text = std::fs::read_to_string(&p).map_err(|err| {
                    anyhow::anyhow!("cluster.etcd.password_file {}: {err}", p.display())
                })?;
                Some(text.trim_end_matches(['\r', '\n']).to_string())
            }
            None => None,
        };
        let settings = EtcdSettings {
            endpoints: e.endpoints.clone(),
            prefix: e.prefix.clone(),
            lease_ttl: e.lease_ttl.0,
            timeout: e.timeout.0,
            user: e.user.clone(),
            password,
            ca: e.ca.as_deref().map(config_dir),
            cert: e.cert.as_deref().map(config_dir),
            key: e.key.as_deref().map(config_dir),
        };
        let me = Member {
            node: section.node.clone(),
            link: section.advertise.clone(),
            started: crate::server::audit::now_rfc3339(),
        };
        let registry = ClusterRegistry::start(settings, me, cancel.child_token())
            .map_err(|e| anyhow::anyhow!("cluster.etcd: {e}"))?;
        let links = Links::new(prepared.keys.clone(), cancel.child_token());
        let (withdraws, withdraw_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            node: section.node.clone(),
            registry,
            links,
            when_etcd_down: section.when_etcd_down,
            lease_ttl: e.lease_ttl.0,
            mine: Mutex::new(HashMap::new()),
            withdraws,
            boot: rand::random(),
            reaches: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::from_std(prepared.listener)?;
        let weak = Arc::downgrade(shared);
        let on_reach: Arc<dyn Fn(ReachRequest, PendingReach) + Send + Sync> =
            Arc::new(move |req, pending| match weak.upgrade() {
                Some(shared) => {
                    let tasks = shared.channels.clone();
                    tasks.spawn(super::reach::serve(shared, req, pending));
                }
                None => pending.reject(
                    warren_ssh::proto::reason::CONNECT_FAILED,
                    "the node is shutting down",
                ),
            });
        tokio::spawn(link::serve(
            listener,
            prepared.keys,
            on_reach,
            cancel.child_token(),
        ));
        tokio::spawn(withdrawer(cluster.clone(), withdraw_rx, cancel.clone()));
        tokio::spawn(watch_lost(
            Arc::downgrade(&cluster),
            Arc::downgrade(shared),
            cancel.clone(),
        ));
        tokio::spawn(reconcile(Arc::downgrade(&cluster), cancel));
        Ok(cluster)
    }

    /// Waits (bounded by etcd's request timeout) until a stopping node has revoked its
    /// lease, so its names vanish from every node at once.
    pub async fn stopped(&self) {
        self.registry.stopped().await
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Publishes `name:port` for a session of this node, with the single node's rules
    /// applied cluster-wide by one etcd transaction: free, or served by the same user
    /// (anywhere: a takeover), or refused. The error is the refusal's reason.
    pub async fn publish(
        &self,
        name: &str,
        port: u16,
        user: &str,
        key_fp: &str,
        conn: u64,
    ) -> Result<Published, String> {
        let record = NameRecord {
            user: user.to_string(),
            key_fp: key_fp.to_string(),
            node: self.node.clone(),
            conn,
            since: crate::server::audit::now_rfc3339(),
        };
        // Noted before etcd has it, so the reconciler never mistakes it for a leftover.
        let key = (name.to_string(), port);
        let before = self.mine_lock().insert(key.clone(), record.clone());
        // A refused publish leaves what this node published before (the same user's older
        // session may still serve the name), or nothing.
        let forget = || {
            let mut mine = self.mine_lock();
            if mine.get(&key).is_some_and(|r| r.conn == conn) {
                match before.clone() {
                    Some(older) => mine.insert(key.clone(), older),
                    None => mine.remove(&key),
                };
            }
        };
        match self.registry.publish(name, port, record.clone()).await {
            Ok(previous) => Ok(Published::Cluster {
                from: previous.filter(|p| p.node != self.node).map(|p| p.node),
            }),
            Err(PublishError::Taken) => {
                forget();
                Err(format!("{name}:{port} is published by another user"))
            }
            Err(PublishError::Unavailable(why)) => match self.when_etcd_down {
                WhenEtcdDown::Refuse => {
                    forget();
                    Err(format!(
                        "the cluster registry cannot be reached ({why}); names cannot be \
                         published until it can"
                    ))
                }
                WhenEtcdDown::Local => {
                    self.registry.publish_later(name, port, record);
                    Ok(Published::LocalOnly { why })
                }
            },
        }
    }

    /// Withdraws `name:port` if connection `conn` of this node still publishes it. Never
    /// waits: callable from `Drop`; the etcd delete happens in the background.
    pub fn withdraw(&self, name: &str, port: u16, conn: u64) {
        let key = (name.to_string(), port);
        let record = {
            let mut mine = self.mine_lock();
            match mine.get(&key) {
                Some(r) if r.conn == conn => mine.remove(&key),
                _ => None,
            }
        };
        if let Some(record) = record {
            let _ = self.withdraws.send((key.0, key.1, record));
        }
    }

    /// Where a reach to `name:port` goes, from the watched copy of etcd (no round trip).
    pub fn locate(&self, name: &str, port: u16) -> Located {
        match self.registry.lookup(name, port) {
            Some(record) if record.node != self.node => match self.registry.member(&record.node) {
                Some(m) => Located::Elsewhere {
                    link: m.link,
                    record,
                },
                None => Located::Gone { record },
            },
            _ => Located::Here,
        }
    }

    /// Opens a reach channel on the node that serves a name.
    pub async fn open_remote(
        &self,
        record: &NameRecord,
        link: &str,
        req: ReachRequest,
    ) -> Result<ChannelStream, String> {
        self.links.open(&record.node, link, req).await
    }

    /// A fresh id naming one cross-node connection in both nodes' audit records.
    pub fn correlation(&self) -> String {
        let n = self.reaches.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{:08x}-{n}", self.node, self.boot)
    }

    pub fn members(&self) -> Vec<Member> {
        self.registry.members()
    }

    pub fn names(&self) -> Vec<(String, u16, NameRecord)> {
        self.registry.names()
    }

    pub fn links(&self) -> Vec<LinkStatus> {
        self.links.status()
    }

    /// `None` while etcd answers, else since when and why not.
    pub fn etcd_trouble(&self) -> Option<String> {
        match self.registry.health() {
            Health::Ok => None,
            Health::Unavailable { since, why } => {
                let ago = since.elapsed().unwrap_or_default().as_secs();
                Some(format!("etcd unreachable for {ago}s: {why}"))
            }
        }
    }

    fn mine_lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), NameRecord>> {
        self.mine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn withdrawer(
    cluster: Arc<Cluster>,
    mut rx: mpsc::UnboundedReceiver<(String, u16, NameRecord)>,
    cancel: CancellationToken,
) {
    // Concurrent: a session holding thousands of names ends with thousands of withdraws,
    // and one at a time (a durable etcd write each) took tens of seconds during which the
    // names still looked taken.
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            next = rx.recv(), if inflight.len() < WITHDRAWS_IN_FLIGHT => match next {
                Some((name, port, record)) => {
                    let c = cluster.clone();
                    inflight.spawn(async move { c.registry.withdraw(&name, port, &record).await });
                }
                None => break,
            },
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
        }
    }
    while inflight.join_next().await.is_some() {}
}

/// etcd requests a node's withdrawals may have in flight at once.
const WITHDRAWS_IN_FLIGHT: usize = 64;

/// Names this node lost to another node (the same user published them there, or another
/// user holds them after an etcd outage): the local table lets them go and the audit log
/// says where they went. The session that published keeps running; its own end later
/// changes nothing.
async fn watch_lost(cluster: Weak<Cluster>, shared: Weak<Shared>, cancel: CancellationToken) {
    let Some(mut lost) = cluster.upgrade().map(|c| c.registry.lost()) else {
        return;
    };
    loop {
        let (name, port, reported) = tokio::select! {
            _ = cancel.cancelled() => return,
            next = lost.recv() => match next {
                Ok(n) => n,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!("cluster: {n} lost-name notices skipped; the reconciler will catch up");
                    continue;
                }
                Err(_) => return,
            },
        };
        let (Some(cluster), Some(shared)) = (cluster.upgrade(), shared.upgrade()) else {
            return;
        };
        let key = (name.clone(), port);
        let ours = {
            let mut mine = cluster.mine_lock();
            match mine.get(&key) {
                Some(r) if r.conn == reported.conn => mine.remove(&key),
                _ => None,
            }
        };
        let Some(ours) = ours else { continue };
        let whereto = match cluster.registry.lookup(&name, port) {
            Some(now) if now.user == ours.user => {
                format!("taken over by {}'s session on node {}", now.user, now.node)
            }
            Some(now) => format!(
                "held by another user on node {} after an etcd outage",
                now.node
            ),
            None => "lost from the cluster registry".to_string(),
        };
        if shared.registry.unregister(&name, port, ours.conn) {
            info!(conn = ours.conn, "{name}:{port} {whereto}");
            shared
                .audit
                .record(
                    ours.conn,
                    AuditEvent::ListenStop {
                        user: ours.user.clone(),
                        kind: "rendezvous-publish".into(),
                        address: name,
                        port: u32::from(port),
                        reason: whereto,
                    },
                )
                .await;
        }
    }
}

/// Every lease period: anything etcd holds under this node's id that no session of
/// this node publishes (a withdraw lost to an etcd outage, a crash between the etcd write
/// and the session's end) is deleted, so no name stays squatted by a dead session.
async fn reconcile(cluster: Weak<Cluster>, cancel: CancellationToken) {
    let every = match cluster.upgrade() {
        Some(c) => c.lease_ttl,
        None => return,
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let stale: Vec<_> = {
            let mine = cluster.mine_lock();
            cluster
                .registry
                .names()
                .into_iter()
                .filter(|(n, p, r)| r.node == cluster.node && mine.get(&(n.clone(), *p)) != Some(r))
                .collect()
        };
        let stale: Vec<_> = stale
            .into_iter()
            // Read again: a publish may have landed since the snapshot.
            .filter(|(n, p, r)| cluster.mine_lock().get(&(n.clone(), *p)) != Some(r))
            .collect();
        if stale.is_empty() {
            continue;
        }
        // One line per pass, not per name: a mass logout must not flood the log.
        let first: Vec<String> = stale
            .iter()
            .take(3)
            .map(|(n, p, _)| format!("{n}:{p}"))
            .collect();
        warn!(
            "cluster: removing {} name(s) etcd holds for sessions of this node that are gone \
             (e.g. {})",
            stale.len(),
            first.join(", ")
        );
        let mut inflight = tokio::task::JoinSet::new();
        for (name, port, record) in stale {
            if inflight.len() >= WITHDRAWS_IN_FLIGHT {
                inflight.join_next().await;
            }
            let c = cluster.clone();
            inflight.spawn(async move { c.registry.withdraw(&name, port, &record).await });
        }
        while inflight.join_next().await.is_some() {}
    }
}
