//! The dialing end of node links: one long-lived session per peer node, dialed on first
//! use, kept alive by keepalives, re-dialed after it breaks with a backoff that grows
//! while the peer stays unreachable. Within the backoff a reach fails at once with the
//! reason, so users of a dead node hear it immediately instead of waiting on a timeout.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use warren_ssh::driver::{self, AuthOutcome, ChannelStream, Handle, Incoming, OpenFailure};
use warren_ssh::hostkey::ParsedKey;
use warren_ssh::proto::{ChannelKind, Role, reason};
use warren_ssh::ssh_key::PublicKey;

use super::{
    LinkState, LinkStatus, NodeKeys, REACH_CHANNEL, ReachRequest, engine_config, fingerprint,
};

/// First wait after a failed dial, doubled on each further failure up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Connect, key exchange and login together: a peer on the cluster's network answers in
/// milliseconds, so anything slower is treated as down rather than keeping users waiting.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a link given up (shutdown) may take to send its goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The links of this node to its peers.
pub struct Links {
    keys: Arc<NodeKeys>,
    cancel: CancellationToken,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    dials: AtomicU64,
}

struct Peer {
    node: String,
    /// One dial at a time per peer: concurrent opens wait for it and share its session.
    dialing: tokio::sync::Mutex<()>,
    state: Mutex<PeerState>,
}

#[derive(Default)]
struct PeerState {
    addr: String,
    live: Option<Live>,
    down: Option<Down>,
    /// Counts sessions, so a session's end does not touch the state of its successor.
    generation: u64,
}

struct Live {
    handle: Handle,
    since: SystemTime,
    generation: u64,
}

struct Down {
    since: SystemTime,
    why: String,
    retry_at: Instant,
    /// The wait that was chosen; the next failure doubles it. Zero after a session broke.
    backoff: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Links {
    pub fn new(keys: Arc<NodeKeys>, cancel: CancellationToken) -> Links {
        Links {
            keys,
            cancel,
            peers: Mutex::new(HashMap::new()),
            dials: AtomicU64::new(0),
        }
    }

    /// Opens a reach channel to `node` at `addr` (host:port from etcd's member record). The
    /// peer's host key must equal `peers[node]`. Fails fast with a clear reason when the
    /// peer is down or within its backoff; a refusal by the peer carries its reason. `addr`
    /// is dialed only when there is no live session: a session keeps serving a peer that
    /// re-registered at another address until it breaks.
    pub async fn open(
        &self,
        node: &str,
        addr: &str,
        req: ReachRequest,
    ) -> Result<ChannelStream, String> {
        let expected = self
            .keys
            .peers
            .get(node)
            .ok_or_else(|| format!("node {node} is not a configured peer"))?;
        let peer = self.peer(node);
        let handle = self.link(&peer, addr, expected).await?;
        let kind = ChannelKind::Extension {
            kind: REACH_CHANNEL.to_string(),
            data: req.encode(),
        };
        handle.open(kind).await.map_err(|e| {
            match e.get_ref().and_then(|x| x.downcast_ref::<OpenFailure>()) {
                Some(f) if f.reason == reason::UNKNOWN_CHANNEL_TYPE => {
                    format!(
                        "node {node} ({addr}) does not serve reaches: {}",
                        f.description
                    )
                }
                Some(f) => format!("node {node} refused: {}", f.description),
                None => format!("node {node} ({addr}): the link broke: {e}"),
            }
        })
    }

    /// Each peer link's state, for `warrend ctl`.
    pub fn status(&self) -> Vec<LinkStatus> {
        let peers: Vec<Arc<Peer>> = lock(&self.peers).values().cloned().collect();
        let mut out: Vec<LinkStatus> = peers
            .iter()
            .map(|p| {
                let st = lock(&p.state);
                let state = match (&st.live, &st.down) {
                    (Some(l), _) if l.handle.ended().is_none() => LinkState::Connected {
                        since: l.since,
                        channels: l.handle.channel_count(),
                    },
                    (_, Some(d)) => LinkState::Unreachable {
                        since: d.since,
                        why: d.why.clone(),
                    },
                    _ => LinkState::Dialing,
                };
                LinkStatus {
                    node: p.node.clone(),
                    addr: st.addr.clone(),
                    state,
                }
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Dial attempts made so far (a healthy link is dialed once).
    pub fn dials(&self) -> u64 {
        self.dials.load(Ordering::Relaxed)
    }

    fn peer(&self, node: &str) -> Arc<Peer> {
        lock(&self.peers)
            .entry(node.to_string())
            .or_insert_with(|| {
                Arc::new(Peer {
                    node: node.to_string(),
                    dialing: tokio::sync::Mutex::new(()),
                    state: Mutex::new(PeerState::default()),
                })
            })
            .clone()
    }

    /// The live session to `peer`, dialing it if there is none and the backoff allows.
    async fn link(
        &self,
        peer: &Arc<Peer>,
        addr: &str,
        expected: &PublicKey,
    ) -> Result<Handle, String> {
        if let Some(ready) = usable(peer, addr) {
            return ready;
        }
        let _dialing = peer.dialing.lock().await;
        // Whoever held the lock before may have dialed (or failed) meanwhile.
        if let Some(ready) = usable(peer, addr) {
            return ready;
        }
        if self.cancel.is_cancelled() {
            return Err("warrend is shutting down".into());
        }
        self.dials.fetch_add(1, Ordering::Relaxed);
        let dialed = tokio::select! {
            _ = self.cancel.cancelled() => Err("warrend is shutting down".to_string()),
            r = tokio::time::timeout(DIAL_TIMEOUT, dial(&self.keys, &peer.node, addr, expected)) => {
                r.unwrap_or_else(|_| Err(format!("no answer within {DIAL_TIMEOUT:?}")))
            }
        };
        let mut st = lock(&peer.state);
        st.addr = addr.to_string();
        match dialed {
            Ok((handle, events, driver)) => {
                st.generation += 1;
                let generation = st.generation;
                st.live = Some(Live {
                    handle: handle.clone(),
                    since: SystemTime::now(),
                    generation,
                });
                st.down = None;
                drop(st);
                info!("cluster link: connected to node {} ({addr})", peer.node);
                tokio::spawn(watch(
                    peer.clone(),
                    handle.clone(),
                    events,
                    driver,
                    generation,
                    self.cancel.clone(),
                ));
                Ok(handle)
            }
            Err(why) => {
                let backoff = st
                    .down
                    .as_ref()
                    .map_or(BACKOFF_MIN, |d| d.backoff.saturating_mul(2))
                    .clamp(BACKOFF_MIN, BACKOFF_MAX);
                let since = st.down.as_ref().map_or_else(SystemTime::now, |d| d.since);
                st.live = None;
                let down = Down {
                    since,
                    why,
                    retry_at: Instant::now() + backoff,
                    backoff,
                };
                let msg = unreachable(&peer.node, addr, &down, Instant::now());
                debug!("cluster link: {msg}");
                st.down = Some(down);
                Err(msg)
            }
        }
    }
}

/// The live session, or the fast refusal while the peer is within its backoff; None when a
/// dial is due.
fn usable(peer: &Peer, addr: &str) -> Option<Result<Handle, String>> {
    let st = lock(&peer.state);
    if let Some(l) = &st.live
        && l.handle.ended().is_none()
    {
        return Some(Ok(l.handle.clone()));
    }
    let now = Instant::now();
    match &st.down {
        // A new address (the peer moved, per etcd) is worth a try at once.
        Some(d) if st.addr == addr && now < d.retry_at => {
            Some(Err(unreachable(&peer.node, addr, d, now)))
        }
        _ => None,
    }
}

fn unreachable(node: &str, addr: &str, d: &Down, now: Instant) -> String {
    let left = d.retry_at.saturating_duration_since(now).as_millis();
    format!(
        "node {node} ({addr}) is unreachable: {}; next try in {left} ms",
        d.why
    )
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut => "connection timed out".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        _ => e.to_string(),
    }
}

type Driver = JoinHandle<Result<(), String>>;

/// Aborts the driver of a dial that did not finish (failed, timed out or cancelled).
struct AbortOnDrop(Option<Driver>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.abort();
        }
    }
}

/// Connects, checks the host key against the configured one, logs in as this node.
async fn dial(
    keys: &NodeKeys,
    node: &str,
    addr: &str,
    expected: &PublicKey,
) -> Result<(Handle, driver::Events, Driver), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| describe(&e))?;
    let _ = stream.set_nodelay(true);
    let config = engine_config(Role::Client, keys, Some(expected));
    let (handle, mut events, run) = driver::start(stream, Arc::new(config));
    let mut driver = AbortOnDrop(Some(tokio::spawn(run)));
    let key = loop {
        match events.recv().await {
            Some(Incoming::HostKey(k)) => break k,
            Some(_) => continue,
            None => {
                let why = match driver.0.take() {
                    Some(d) => d.await.ok().and_then(Result::err),
                    None => None,
                };
                return Err(why
                    .or_else(|| handle.ended())
                    .unwrap_or_else(|| "closed during key exchange".into()));
            }
        }
    };
    let matches = matches!(&key, ParsedKey::Plain(k) if k.key_data() == expected.key_data());
    if !matches {
        handle.disconnect("host key mismatch");
        let shown = match &key {
            ParsedKey::Plain(k) => fingerprint(k),
            ParsedKey::Certificate(_) => "a certificate".into(),
        };
        return Err(format!(
            "its host key {shown} is not the key configured for node {node} ({})",
            fingerprint(expected)
        ));
    }
    let outcome = handle
        .auth_publickey(&keys.node, &keys.key)
        .await
        .map_err(|e| format!("login failed: {e}"))?;
    if outcome != AuthOutcome::Success {
        handle.disconnect("login refused");
        return Err(format!(
            "it refused our login as node {} (is this node's key in its peers?)",
            keys.node
        ));
    }
    let driver = driver.0.take().ok_or("driver gone")?;
    Ok((handle, events, driver))
}

/// Serves one link's events until it ends (or `cancel`): the peer may open nothing and
/// ask nothing of us. Then marks the peer for a re-dial on next use.
async fn watch(
    peer: Arc<Peer>,
    handle: Handle,
    mut events: driver::Events,
    mut driver: Driver,
    generation: u64,
    cancel: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => {
                handle.disconnect("warrend is shutting down");
                break;
            }
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
        };
        match ev {
            Incoming::ChannelOpen { id, .. } => handle.reject(
                id,
                reason::ADMINISTRATIVELY_PROHIBITED,
                "a node link is opened by the dialing node only",
            ),
            Incoming::GlobalRequest {
                request_id,
                want_reply: true,
                ..
            } => handle.global_reply(request_id, false, &[]),
            Incoming::ChannelRequest {
                id,
                request_id,
                want_reply: true,
                ..
            } => handle.channel_request_reply(id, request_id, false),
            _ => {}
        }
    }
    drop(events);
    let why = match tokio::time::timeout(CLOSE_GRACE, &mut driver).await {
        Ok(Ok(Err(e))) => e,
        Ok(_) => "closed".to_string(),
        Err(_) => {
            driver.abort();
            "closed".to_string()
        }
    };
    let mut st = lock(&peer.state);
    if st.live.as_ref().is_some_and(|l| l.generation == generation) {
        info!("cluster link: link to node {} lost: {why}", peer.node);
        st.live = None;
        st.down = Some(Down {
            since: SystemTime::now(),
            why: format!("link lost: {why}"),
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
        });
    }
}
