//! The serving end of node links: SSH with this node's key as host key, logins only by peer
//! nodes with exactly their listed key, and only `reach@warren` channels.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use warren_ssh::driver::{self, ChannelStream, Handle, Incoming};
use warren_ssh::hostkey::ParsedKey;
use warren_ssh::proto::{AuthMethod, AuthReply, ChannelId, ChannelKind, Role, reason};

use super::{NodeKeys, REACH_CHANNEL, ReachRequest, engine_config, fingerprint};
use crate::server::throttle::{Throttle, ThrottleLimits};

/// Time to log in: a peer node does it in milliseconds; anything slower holds a slot for
/// nothing.
const LOGIN_GRACE: Duration = Duration::from_secs(10);

/// Failed attempts on one connection before it is dropped (sshd MaxAuthTries).
const MAX_AUTH_TRIES: u32 = 6;

/// Per-source limits on the link port. Peers are a handful of known machines that never
/// fail to log in; anyone else failing is a scanner or a misconfigured node, and either is
/// slowed down as warrend slows down failed logins.
const THROTTLE: ThrottleLimits = ThrottleLimits {
    max_failures: 10,
    window: Duration::from_secs(600),
    max_unauthenticated_per_source: 8,
    prefix_v4: 32,
    prefix_v6: 64,
};

/// Connections not logged in yet, from all sources together: a flood from many addresses
/// cannot pile up tasks, and the few real peers log in within milliseconds anyway.
const MAX_UNAUTHENTICATED: usize = 64;

/// Penalty for holding a connection open without logging in (doubles on repeat, capped).
const PENALTY_BASE: Duration = Duration::from_secs(30);
const PENALTY_MAX: Duration = Duration::from_secs(600);

/// How long shutdown waits for links to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the serving node decides about one reach: connect it to the publisher and
/// [`accept`](Self::accept), or [`reject`](Self::reject) with the reason the dialing node
/// passes on to its user. Dropped unanswered, it is refused.
pub struct PendingReach {
    handle: Handle,
    id: ChannelId,
    answered: bool,
}

impl PendingReach {
    pub fn accept(mut self) -> ChannelStream {
        self.answered = true;
        self.handle.accept(self.id)
    }

    /// `code`: an RFC 4254 reason (`warren_ssh::proto::reason`).
    pub fn reject(mut self, code: u32, why: &str) {
        self.answered = true;
        self.handle.reject(self.id, code, why);
    }
}

impl Drop for PendingReach {
    fn drop(&mut self) {
        if !self.answered {
            self.handle.reject(
                self.id,
                reason::CONNECT_FAILED,
                "the reach was not answered",
            );
        }
    }
}

type OnReach = Arc<dyn Fn(ReachRequest, PendingReach) + Send + Sync>;

/// Serves node links on `listener` until `cancel`: SSH with `keys.key` as host key; a
/// client logs in with user name = its node id and publickey auth by exactly
/// `peers[node id]` (anything else refused, failures throttled per source like warrend's
/// logins); only `reach@warren` channels are accepted (sessions, forwards and global
/// requests are refused); `from_node` in a request must equal the authenticated node id.
/// `on_reach` runs on the link's event task: it must answer (or hand the [`PendingReach`] to
/// a task of its own) without blocking, or every reach on that link waits behind it.
/// Returns once `cancel` fired and every link has ended (the listener is closed first).
pub async fn serve(
    listener: TcpListener,
    keys: Arc<NodeKeys>,
    on_reach: OnReach,
    cancel: CancellationToken,
) {
    let config = Arc::new(engine_config(Role::Server, &keys, None));
    let throttle = Arc::new(Throttle::new(THROTTLE));
    let unauthenticated = Arc::new(Semaphore::new(MAX_UNAUTHENTICATED));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin; the next accept may work.
                    warn!("cluster link: accept failed: {e}");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let now = Instant::now();
        if let Some(why) = throttle
            .refuse_penalised(peer.ip(), now)
            .or_else(|| throttle.refuse(peer.ip(), now))
        {
            debug!("cluster link: refused {peer}: {why}");
            continue;
        }
        let Ok(slot) = unauthenticated.clone().try_acquire_owned() else {
            debug!("cluster link: refused {peer}: {MAX_UNAUTHENTICATED} connections not logged in");
            continue;
        };
        let conn = Conn {
            keys: keys.clone(),
            on_reach: on_reach.clone(),
            throttle: throttle.clone(),
            config: config.clone(),
            peer,
        };
        tracker.spawn(conn.run(stream, slot, cancel.clone()));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("cluster link: some links did not end within {SHUTDOWN_GRACE:?}");
    }
}

struct Conn {
    keys: Arc<NodeKeys>,
    on_reach: OnReach,
    throttle: Arc<Throttle>,
    config: Arc<warren_ssh::proto::Config>,
    peer: SocketAddr,
}

impl Conn {
    async fn run(self, stream: TcpStream, slot: OwnedSemaphorePermit, cancel: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let mut pending = Some((self.throttle.pending(self.peer.ip()), slot));
        let (handle, mut events, driver) = driver::start(stream, self.config.clone());
        let driver = tokio::spawn(driver);
        let grace = tokio::time::sleep(LOGIN_GRACE);
        tokio::pin!(grace);
        let mut node: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => {
                    handle.disconnect("warrend is shutting down");
                    break;
                }
                _ = &mut grace, if node.is_none() => {
                    self.throttle
                        .penalise(self.peer.ip(), PENALTY_BASE, PENALTY_MAX, Instant::now());
                    info!("cluster link: {} did not log in within {LOGIN_GRACE:?}", self.peer);
                    handle.disconnect("login grace time over");
                    break;
                }
                ev = events.recv() => match ev {
                    Some(ev) => ev,
                    None => break,
                },
            };
            match ev {
                Incoming::AuthRequest { id, user, method } => match self.auth(&user, &method) {
                    Verdict::Probe => {
                        if let AuthMethod::PublicKey { alg, key_blob, .. } = &method {
                            handle.auth_pk_ok(id, alg, key_blob);
                        }
                    }
                    Verdict::Accept => {
                        info!("cluster link: node {user} logged in from {}", self.peer);
                        handle.auth_reply(id, AuthReply::Accept);
                        node = Some(user);
                        pending = None;
                    }
                    Verdict::Reject(why) => {
                        failures += 1;
                        info!("cluster link: refused login from {}: {why}", self.peer);
                        handle.auth_reply(
                            id,
                            AuthReply::Reject {
                                methods: vec!["publickey".into()],
                                partial: false,
                            },
                        );
                        if failures >= MAX_AUTH_TRIES {
                            handle.disconnect("too many authentication failures");
                            break;
                        }
                    }
                },
                Incoming::ChannelOpen { id, kind } => self.open(&handle, node.as_deref(), id, kind),
                Incoming::GlobalRequest {
                    request_id,
                    want_reply,
                    ..
                } => {
                    if want_reply {
                        handle.global_reply(request_id, false, &[]);
                    }
                }
                Incoming::ChannelRequest {
                    id,
                    request_id,
                    want_reply,
                    ..
                } => {
                    if want_reply {
                        handle.channel_request_reply(id, request_id, false);
                    }
                }
                Incoming::HostKey(_) | Incoming::Banner(_) | Incoming::Stderr { .. } => {}
            }
        }
        if node.is_none() && failures > 0 {
            self.throttle.record_failure(self.peer.ip(), Instant::now());
        }
        drop(pending);
        // The driver ends once the disconnect is out or the peer is gone; the events
        // receiver is dropped first so a peer cannot hold it with unread events.
        drop(events);
        let mut driver = driver;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut driver)
            .await
            .is_err()
        {
            driver.abort();
        }
        if let Some(node) = node {
            info!("cluster link: node {node} ({}) gone", self.peer);
        }
    }

    /// A login: the user name is the peer's node id, the key must be exactly the one
    /// listed for it. Certificates are refused: a node is its key, not whatever a CA says.
    fn auth(&self, user: &str, method: &AuthMethod) -> Verdict {
        let AuthMethod::PublicKey { key, signature, .. } = method else {
            return Verdict::Reject(format!("node {user:?}: only publickey is accepted"));
        };
        let Some(expected) = self.keys.peers.get(user) else {
            return Verdict::Reject(format!("{user:?} is not a peer node"));
        };
        let ParsedKey::Plain(offered) = key else {
            return Verdict::Reject(format!("node {user}: certificates are not accepted"));
        };
        if offered.key_data() != expected.key_data() {
            return Verdict::Reject(format!(
                "node {user}: key {} is not its configured key {}",
                fingerprint(offered),
                fingerprint(expected)
            ));
        }
        match signature {
            None => Verdict::Probe,
            Some(true) => Verdict::Accept,
            Some(false) => Verdict::Reject(format!("node {user}: bad signature")),
        }
    }

    fn open(&self, handle: &Handle, node: Option<&str>, id: ChannelId, kind: ChannelKind) {
        let Some(node) = node else {
            handle.reject(id, reason::ADMINISTRATIVELY_PROHIBITED, "not logged in");
            return;
        };
        let data = match kind {
            ChannelKind::Extension { kind, data } if kind == REACH_CHANNEL => data,
            other => {
                debug!("cluster link: node {node} asked for {other:?}: refused");
                handle.reject(
                    id,
                    reason::ADMINISTRATIVELY_PROHIBITED,
                    "a node link carries only reach@warren channels",
                );
                return;
            }
        };
        let req = match ReachRequest::decode(&data) {
            Ok(r) => r,
            Err(why) => {
                handle.reject(id, reason::ADMINISTRATIVELY_PROHIBITED, &why);
                return;
            }
        };
        if req.from_node != node {
            warn!(
                "cluster link: node {node} sent a reach claiming to come from node {:?}",
                req.from_node
            );
            handle.reject(
                id,
                reason::ADMINISTRATIVELY_PROHIBITED,
                &format!(
                    "from_node {:?} is not the authenticated node {node}",
                    req.from_node
                ),
            );
            return;
        }
        let pending = PendingReach {
            handle: handle.clone(),
            id,
            answered: false,
        };
        (self.on_reach)(req, pending);
    }
}

enum Verdict {
    Probe,
    Accept,
    Reject(String),
}
