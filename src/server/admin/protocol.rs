//! What `warrend ctl` and warrend say over the control socket: one JSON object per
//! line, one request and one response per connection. The field names are the
//! `--json` output's, and stable: scripts read them.

use crate::server::state::{InUse, Usage};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest request line warrend reads; more is refused (a real request is tens of bytes).
pub const MAX_REQUEST: usize = 4096;
/// Time a client has to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Control connections served at once; more are closed at once.
pub const MAX_CLIENTS: usize = 8;
/// Longest response the client reads (every session of a large bastion fits).
pub const MAX_RESPONSE: usize = 64 << 20;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Sessions,
    Listeners,
    Names,
    /// One session by id, or every session of a user.
    Kick {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    Reload,
    Limits,
    /// Cluster mode: the members, their links and etcd's state.
    Cluster,
}

/// The answer: `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: Reply) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(why: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(why.into()),
        }
    }
}

/// What a successful request returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Sessions { sessions: Vec<SessionRow> },
    Listeners { listeners: Vec<ListenerRow> },
    Names { names: Vec<NameRow> },
    Kicked { kicked: Vec<u64> },
    Reloaded { reloaded: bool },
    Limits(Box<LimitsReply>),
    Cluster { cluster: ClusterReply },
}

/// `warrend ctl cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterReply {
    /// This node's id.
    pub node: String,
    /// `ok`, or since when and why etcd cannot be reached.
    pub etcd: String,
    pub members: Vec<MemberRow>,
}

/// One live member of the cluster, as etcd lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRow {
    pub node: String,
    /// `host:port` of its link listener.
    pub link: String,
    pub started: String,
    /// This node's link to it: `self`, `connected ...`, `unreachable ...`, `idle`.
    pub link_state: String,
}

/// One authenticated session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRow {
    /// The connection id, as the audit log's `conn`; what `kick` takes.
    pub id: u64,
    pub user: String,
    /// `SHA256:...` of the key (of the certificate's key for certificates).
    pub key_fp: String,
    /// `publickey` or `certificate`.
    pub method: String,
    /// Peer `ip:port`.
    pub source: String,
    /// Login time, RFC 3339 UTC.
    pub since: String,
    /// Forwarded channels open now.
    pub channels: u64,
    /// -R listeners on real sockets.
    pub listeners: u64,
    /// Bytes from the channels' client side towards their targets, and back (as the
    /// audit's `bytes_up`/`bytes_down`), counted as they move.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// One -R listener on real sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerRow {
    pub session: u64,
    pub user: String,
    /// As the client asked (`localhost`, `*`, an address).
    pub address: String,
    pub port: u32,
    /// What warrend bound, `ip:port`.
    pub bound: Vec<String>,
}

/// One published rendezvous name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameRow {
    pub name: String,
    pub port: u16,
    pub user: String,
    /// The publishing session's id on the node that serves the name.
    pub session: u64,
    pub key_fp: String,
    /// Cluster mode: the node that serves the name (every node lists every name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `ctl limits`: budgets in use against their limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LimitsReply {
    /// Authenticated sessions (no server-wide cap: `limit` is 0).
    pub sessions: InUse,
    /// TCP connections not logged in yet (`max_unauthenticated`).
    pub unauthenticated: InUse,
    /// Forwarded channels open (`max_channels`).
    pub channels: InUse,
    /// -R listeners and published names (`max_listeners`).
    pub listeners: InUse,
    /// Window and relay buffer growth held (`max_buffered`), bytes.
    pub buffered: InUse,
    /// DNS lookups in flight (`max_dns_lookups`).
    pub dns_lookups: InUse,
    /// Source netblocks serving a penalty now (no cap: `limit` is 0).
    pub penalised_sources: InUse,
    /// Audit records waiting to be written (queue capacity).
    pub audit_queue: InUse,
    /// Each user holding something, against the per-user limits.
    pub users: Vec<crate::server::state::UserUsage>,
}

impl LimitsReply {
    pub fn new(usage: Usage, extra: [InUse; 5]) -> LimitsReply {
        let [
            sessions,
            unauthenticated,
            dns_lookups,
            penalised_sources,
            audit_queue,
        ] = extra;
        LimitsReply {
            sessions,
            unauthenticated,
            channels: usage.channels,
            listeners: usage.listeners,
            buffered: usage.buffered,
            dns_lookups,
            penalised_sources,
            audit_queue,
            users: usage.users,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_shape_and_unknown_ones_are_refused() {
        let kick = Request::Kick {
            session: Some(7),
            user: None,
        };
        let line = serde_json::to_string(&kick).unwrap();
        assert_eq!(line, r#"{"command":"kick","session":7}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), kick);
        assert!(serde_json::from_str::<Request>(r#"{"command":"kick","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"shell"}"#).is_err());
    }
}
