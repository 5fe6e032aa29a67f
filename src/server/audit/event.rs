//! What one audit record says: the events, the record around them and the connection ids
//! that join them to the diagnostic log. Plain data, so what counts them (metrics) needs
//! nothing of the writing side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;

/// The `conn` of events that belong to the server rather than to one
/// connection ([`AuditEvent::ServerStart`], [`AuditEvent::ConfigReload`], ...).
/// [`next_conn_id`] never returns it.
pub const SERVER_CONN: u64 = 0;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh connection id, unique for the life of the process.
///
/// Put it in the connection's tracing span as well as in its audit records,
/// so diagnostic logs and the audit log can be correlated.
pub fn next_conn_id() -> u64 {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// One line of the audit log.
#[derive(Serialize, Clone, Debug)]
pub struct AuditRecord {
    /// When the event happened (not when it was written), RFC 3339 UTC with
    /// milliseconds.
    pub ts: String,
    /// Connection id from [`next_conn_id`], or [`SERVER_CONN`].
    pub conn: u64,
    /// The cluster node that wrote the record (cluster mode only): several nodes' logs
    /// merged stay readable, and conn ids are per node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened; its `event` tag and fields sit at the top level.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// What happened. Serialized with an `event` tag in snake_case
/// (`"event": "channel_open"`) next to the variant's fields.
///
/// Free-form values (`kind`, `decision`, `reason`, ...) are strings rather
/// than enums so that the log stays readable by tools that know nothing of
/// warrend, and so a new kind of channel does not change the schema.
#[derive(Serialize, Clone, Debug)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A TCP connection was accepted, before any SSH traffic.
    SessionStart {
        /// Peer `ip:port`.
        source: String,
    },
    /// A user logged in.
    AuthSuccess {
        /// SSH user name.
        user: String,
        /// `publickey` or `certificate`.
        method: String,
        /// `SHA256:...` of the key (of the certificate's key for certificates).
        key_fp: String,
        /// Which trust entry accepted the key, as `file:line`, so a review
        /// can find and revoke it.
        key_source: Option<String>,
        /// Peer `ip:port`.
        source: String,
    },
    /// A login attempt was refused. Offering a key that is not authorized is
    /// normal SSH behaviour, so expect several of these before a success.
    AuthFailure {
        /// SSH user name as sent by the peer (untrusted).
        user: String,
        /// Method the peer tried (`publickey`, `certificate`, `password`, `none`, ...).
        method: String,
        /// `SHA256:...` of the offered key, when there was one.
        key_fp: Option<String>,
        /// Peer `ip:port`.
        source: String,
        /// Why it was refused.
        reason: String,
    },
    /// The connection ended.
    SessionEnd {
        /// The authenticated user, if the peer got that far.
        user: Option<String>,
        /// Peer `ip:port`.
        source: String,
        /// Time since [`AuditEvent::SessionStart`].
        duration_ms: u64,
        /// Why it ended (`client disconnect`, `idle timeout`, `server shutdown`, ...).
        reason: String,
    },
    /// The peer asked for a channel; records the policy decision, whether
    /// or not the channel was then opened.
    ChannelOpen {
        /// Per-connection channel number, matching the [`AuditEvent::ChannelClose`].
        channel: u64,
        /// `direct-tcpip`, `forwarded-tcpip`, `rendezvous-reach`, `session`, ...
        kind: String,
        /// Authenticated user.
        user: String,
        /// What the peer asked for, `host:port` as sent.
        target: String,
        /// Addresses the target resolved to, as the policy saw them.
        resolved: Vec<String>,
        /// `allow` or `deny`.
        decision: String,
        /// The rule that decided, as written in the config.
        rule: Option<String>,
        /// Why it was denied or failed.
        reason: Option<String>,
        /// Cluster mode, a connection across two nodes: correlation id and other node.
        #[serde(flatten)]
        hop: Option<Hop>,
    },
    /// An allowed channel closed.
    ChannelClose {
        /// Per-connection channel number, matching the [`AuditEvent::ChannelOpen`].
        channel: u64,
        /// Same as in the open.
        kind: String,
        /// Authenticated user.
        user: String,
        /// Same as in the open.
        target: String,
        /// Bytes from the SSH client towards the target.
        bytes_up: u64,
        /// Bytes from the target towards the SSH client.
        bytes_down: u64,
        /// Time the channel was open.
        duration_ms: u64,
        /// `eof`, `error: ...`, `session closed`, ...
        close_reason: String,
        /// Same as in the open.
        #[serde(flatten)]
        hop: Option<Hop>,
    },
    /// The peer asked the server to listen for it; records the decision.
    ListenStart {
        /// Authenticated user.
        user: String,
        /// `tcpip-forward`, `rendezvous-publish`, ...
        kind: String,
        /// Bind address as requested.
        address: String,
        /// Port actually bound (the allocated one when 0 was requested), or
        /// the requested port when denied. `u32` because that is what SSH sends.
        port: u32,
        /// `allow` or `deny`.
        decision: String,
        /// The rule that decided.
        rule: Option<String>,
        /// Why it was denied or failed.
        reason: Option<String>,
    },
    /// A listener started by [`AuditEvent::ListenStart`] went away.
    ListenStop {
        /// Authenticated user.
        user: String,
        /// Same as in the start.
        kind: String,
        /// Same as in the start.
        address: String,
        /// Same as in the start.
        port: u32,
        /// `cancelled`, `session closed`, ...
        reason: String,
    },
    /// A request on a session channel that warrend does not serve (X11, agent or
    /// environment forwarding); a review sees what a client tried.
    SessionRequest {
        /// Authenticated user.
        user: String,
        /// `x11-req`, `auth-agent-req@openssh.com`, `env`, ...
        kind: String,
        /// What was asked, minus anything secret (never an X11 cookie or a value).
        detail: String,
        /// Always `deny` today.
        decision: String,
        /// Why.
        reason: String,
    },
    /// A connection or attempt was refused by a rate or resource limit.
    Throttled {
        /// Peer `ip:port`.
        source: String,
        /// Which limit.
        reason: String,
    },
    /// The server is up and accepting connections.
    ServerStart {
        /// Bound addresses.
        listen: Vec<String>,
        /// Host key fingerprints, so clients' known_hosts can be checked against the log.
        host_keys: Vec<String>,
    },
    /// The server is stopping.
    ServerStop {
        /// `signal SIGTERM`, `fatal error: ...`, ...
        reason: String,
    },
    /// The configuration was re-read (SIGHUP); changes to who may reach
    /// what are themselves audit-worthy.
    ConfigReload {
        /// The config file, if there is one.
        path: Option<String>,
        /// Whether the new config took effect; on failure the old one stays.
        ok: bool,
        /// Why it was rejected.
        error: Option<String>,
    },
    /// Events were lost before this record (the queue was full on a
    /// non-waiting path, or the writer had failed), so a reviewer knows the
    /// log has a gap rather than trusting it as complete.
    AuditDropped {
        /// How many since the previous `audit_dropped` record.
        count: u64,
    },
}

impl AuditRecord {
    pub(super) fn now(conn: u64, event: AuditEvent) -> AuditRecord {
        AuditRecord {
            ts: now_rfc3339(),
            conn,
            node: None,
            event,
        }
    }

    pub(super) fn on(mut self, node: Option<&String>) -> AuditRecord {
        self.node = node.cloned();
        self
    }
}

/// Now, as every timestamp warrend writes: RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The cross-node part of a channel's records (cluster mode): the same correlation id
/// is written by both nodes, so one connection can be followed across their logs.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub correlation: String,
    /// On the serving node: the node where the reaching user is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_node: Option<String>,
    /// On the reaching user's node: the node that serves the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_node: Option<String>,
}
