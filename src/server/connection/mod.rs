//! One client connection: answers what the client asks once the SSH engine has parsed it.
//! Authentication against the configured keys and CA ([`auth`]), "session" channels that
//! exist only to refuse shells in words ([`session`]), forwarded channels ([`open`]), and
//! `-R` listeners and rendezvous names ([`listen`]), each through the policy and audited.
//!
//! Requests are answered one at a time, in the order they came ([`Connection::serve`]).
//! Anything that waits on the network (DNS, dialing, opening channels on another session)
//! is spawned with the channel's [`PendingOpen`](super::forward::PendingOpen), which
//! accepts or refuses the channel when the answer is known.

mod auth;
mod listen;
mod open;
mod session;

use super::audit::AuditEvent;
use super::forward::ChannelCtx;
use super::identity::Identity;
use super::policy::UserPolicy;
use super::state::{Shared, UserSession};
use super::throttle::PendingGuard;
use crate::forward::budget::BudgetGuard;
use crate::forward::budget::WindowPoolOf;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use warren_ssh::driver::{Handle, Incoming};
use warren_ssh::proto::ChannelId;

/// Per-connection state.
pub struct Connection {
    pub id: u64,
    peer: SocketAddr,
    /// The engine's handle on this connection.
    ssh: Handle,
    shared: Arc<Shared>,
    started: Instant,
    identity: Option<Identity>,
    failures: u32,
    /// Set once authenticated; the login-grace timer reads it.
    pub authenticated: Arc<AtomicBool>,
    /// Shared with this connection's published names (cross-node reaches number their
    /// channels on the publisher's connection).
    channel_seq: Arc<std::sync::atomic::AtomicU64>,
    /// -R listeners and published names, each holding its slot of the listener limits.
    listeners: HashMap<(String, u32), (JoinHandle<()>, BudgetGuard)>,
    published: Vec<(String, u16, BudgetGuard)>,
    user_session: Option<UserSession>,
    /// This session's part of the user's `max_buffered_per_user`, lent to the engine as
    /// its window budget.
    /// Set at login, handed to the engine once the client was told it is in.
    window_pool: Option<(std::sync::Arc<WindowPoolOf>, u64)>,
    unauth_permit: Option<OwnedSemaphorePermit>,
    pending: Option<PendingGuard>,
    /// Cancelled when this connection ends (the handler is dropped): every task it
    /// started (relays, dials, listeners' connections) ends with it.
    session: CancellationToken,
    /// Open "session" channels, for max_session_channels and their close records.
    session_channels: HashMap<ChannelId, session::SessionChannel>,
    /// Session channels the client closed (id, audit number), reported by their watchers.
    session_closed: mpsc::UnboundedSender<(ChannelId, u64)>,
    session_closed_rx: Option<mpsc::UnboundedReceiver<(ChannelId, u64)>>,
    /// Bytes this session's channels move (`warrend ctl sessions`, metrics).
    traffic: Arc<crate::server::metrics::Traffic>,
}

impl Connection {
    pub fn new(
        id: u64,
        peer: SocketAddr,
        ssh: Handle,
        shared: Arc<Shared>,
        unauth_permit: OwnedSemaphorePermit,
        pending: PendingGuard,
    ) -> Connection {
        let (session_closed, session_closed_rx) = mpsc::unbounded_channel();
        Connection {
            id,
            peer,
            ssh,
            started: Instant::now(),
            identity: None,
            failures: 0,
            authenticated: Arc::new(AtomicBool::new(false)),
            channel_seq: Arc::default(),
            listeners: HashMap::new(),
            published: Vec::new(),
            user_session: None,
            window_pool: None,
            unauth_permit: Some(unauth_permit),
            pending: Some(pending),
            session: CancellationToken::new(),
            session_channels: HashMap::new(),
            session_closed,
            session_closed_rx: Some(session_closed_rx),
            traffic: shared.traffic.session(),
            shared,
        }
    }

    /// Answers the client's requests until the connection ends. Dropping the returned
    /// future (the socket was cut) is as good as its end: `Drop` does the cleanup.
    pub async fn serve(mut self, mut incoming: warren_ssh::driver::Events) {
        let Some(mut closed) = self.session_closed_rx.take() else {
            return;
        };
        let h = self.ssh.clone();
        loop {
            tokio::select! {
                ev = incoming.recv() => match ev {
                    Some(ev) => self.on_event(&h, ev).await,
                    None => break,
                },
                Some((id, number)) = closed.recv() => self.session_channel_closed(id, number),
            }
        }
    }

    async fn on_event(&mut self, h: &Handle, ev: Incoming) {
        match ev {
            Incoming::AuthRequest { id, user, method } => {
                self.on_auth_request(h, id, user, method).await
            }
            Incoming::ChannelOpen { id, kind } => self.on_channel_open(h, id, kind).await,
            Incoming::ChannelRequest {
                id,
                request_id,
                request,
                want_reply,
            } => {
                self.on_channel_request(h, id, request_id, request, want_reply)
                    .await
            }
            Incoming::GlobalRequest {
                request_id,
                request,
                want_reply,
            } => {
                let (ok, data) = self.on_global_request(h, request).await;
                if want_reply {
                    h.global_reply(request_id, ok, &data);
                }
            }
            // What a server's peer never causes (host key, banner) or warrend never asks
            // for (stderr of a command it runs).
            Incoming::HostKey(_) | Incoming::Banner(_) | Incoming::Stderr { .. } => {}
        }
    }

    async fn audit(&self, event: AuditEvent) {
        self.shared.audit.record(self.id, event).await;
    }

    fn source(&self) -> String {
        self.peer.to_string()
    }

    /// The login's identity judged by the rules in force now: after a reload, a live
    /// session's next channel or listener follows the new rules (a removed user's
    /// session is being closed; until then it may do nothing).
    fn current_identity(&self) -> Option<Identity> {
        let mut identity = self.identity.clone()?;
        let config = self.shared.config();
        if !Arc::ptr_eq(&config, &identity.config) {
            identity.policy = config
                .policy()
                .user(&identity.user)
                .cloned()
                .unwrap_or_else(|| UserPolicy {
                    user: identity.user.clone(),
                    ..UserPolicy::default()
                });
            identity.config = config;
        }
        Some(identity)
    }

    fn next_channel(&mut self) -> u64 {
        self.channel_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn ctx(&mut self, identity: &Identity, kind: &str, target: String) -> ChannelCtx {
        ChannelCtx {
            conn: self.id,
            channel: self.next_channel(),
            kind: kind.to_string(),
            user: identity.user.clone(),
            target,
            audit: self.shared.audit.clone(),
            open: identity.channels.clone(),
            buffers: self.user_session.as_ref().map(|s| s.share.bytes.clone()),
            connect_timeout: identity.config.limits.connect_timeout.0,
            idle_timeout: identity.config.limits.channel_idle_timeout.non_zero(),
            tasks: self.shared.channels.clone(),
            session: self.session.clone(),
            ssh: self.ssh.clone(),
            traffic: self.traffic.clone(),
            hop: None,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.session.cancel();
        for (_, ch) in std::mem::take(&mut self.session_channels) {
            self.audit_session_close(&ch, "session closed");
            ch.abort();
        }
        let listeners = std::mem::take(&mut self.listeners);
        let published = std::mem::take(&mut self.published);
        let user = self.identity.as_ref().map(|i| i.user.clone());
        let stop = |kind: &str, address: String, port: u32| {
            if let Some(user) = &user {
                self.shared.audit.try_record(
                    self.id,
                    AuditEvent::ListenStop {
                        user: user.clone(),
                        kind: kind.to_string(),
                        address,
                        port,
                        reason: "session closed".into(),
                    },
                );
            }
        };
        for ((address, port), (task, _slot)) in listeners {
            task.abort();
            stop("tcpip-forward", address, port);
        }
        for (name, port, _slot) in published {
            self.shared.registry.unregister(&name, port, self.id);
            if let Some(cluster) = self.shared.cluster() {
                cluster.withdraw(&name, port, self.id);
            }
            stop("rendezvous-publish", name, u32::from(port));
        }
        let authenticated = self.authenticated.load(Ordering::SeqCst);
        if !authenticated && self.failures > 0 {
            self.shared
                .throttle
                .record_failure(self.peer.ip(), Instant::now());
        }
        let revoked = self.shared.live.remove(self.id);
        debug!(conn = self.id, "connection closed");
        self.shared.audit.try_record(
            self.id,
            AuditEvent::SessionEnd {
                user: self.identity.as_ref().map(|i| i.user.clone()),
                source: self.source(),
                duration_ms: self.started.elapsed().as_millis() as u64,
                reason: match (authenticated, revoked) {
                    (_, Some(why)) => why,
                    (true, None) => "closed".into(),
                    (false, None) => "closed before authentication".into(),
                },
            },
        );
    }
}
