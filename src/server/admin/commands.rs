//! Answers to `warrend ctl` requests, read from the server's shared state.

use super::protocol::{LimitsReply, ListenerRow, NameRow, Reply, Request, Response, SessionRow};
use crate::server::audit::QUEUE_CAPACITY;
use crate::server::live_sessions::{KICKED, Kick};
use crate::server::state::{InUse, Shared};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

/// What the control socket needs from the daemon.
pub struct Context {
    pub shared: Arc<Shared>,
    /// The config file a reload reads (none: the embedded default).
    pub config_path: Option<PathBuf>,
}

/// Answers one request.
pub async fn answer(ctx: &Context, request: Request) -> Response {
    let shared = &ctx.shared;
    match request {
        Request::Sessions => Response::ok(Reply::Sessions {
            sessions: sessions(shared),
        }),
        Request::Listeners => Response::ok(Reply::Listeners {
            listeners: listeners(shared),
        }),
        Request::Names => Response::ok(Reply::Names {
            names: names(shared),
        }),
        Request::Kick { session, user } => kick(shared, session, user),
        Request::Reload => match crate::server::reload::reload(shared, &ctx.config_path).await {
            Ok(()) => Response::ok(Reply::Reloaded { reloaded: true }),
            Err(e) => Response::error(format!(
                "reload failed, the running configuration is kept: {e}"
            )),
        },
        Request::Limits => Response::ok(Reply::Limits(Box::new(limits(shared)))),
        Request::Cluster => cluster(shared),
    }
}

#[cfg(feature = "cluster")]
fn cluster(shared: &Shared) -> Response {
    use super::protocol::{ClusterReply, MemberRow};
    let Some(cluster) = shared.cluster() else {
        return Response::error("this warrend is not in a cluster (no [cluster] section)");
    };
    let links = cluster.links();
    let members = cluster
        .members()
        .into_iter()
        .map(|m| {
            let link_state = if m.node == cluster.node() {
                "self".to_string()
            } else {
                links
                    .iter()
                    .find(|l| l.node == m.node)
                    .map(|l| link_state(&l.state))
                    .unwrap_or_else(|| "idle".into())
            };
            MemberRow {
                node: m.node,
                link: m.link,
                started: m.started,
                link_state,
            }
        })
        .collect();
    Response::ok(Reply::Cluster {
        cluster: ClusterReply {
            node: cluster.node().to_string(),
            etcd: cluster.etcd_trouble().unwrap_or_else(|| "ok".into()),
            members,
        },
    })
}

#[cfg(feature = "cluster")]
fn link_state(state: &crate::server::cluster::link::LinkState) -> String {
    use crate::server::cluster::link::LinkState;
    let at = |t: &std::time::SystemTime| humantime::format_rfc3339_seconds(*t).to_string();
    match state {
        LinkState::Dialing => "dialing".into(),
        LinkState::Connected { since, channels } => {
            format!("connected since {}, {channels} channel(s)", at(since))
        }
        LinkState::Unreachable { since, why } => format!("unreachable since {}: {why}", at(since)),
    }
}

#[cfg(not(feature = "cluster"))]
fn cluster(_: &Shared) -> Response {
    Response::error("this warrend was built without cluster support")
}

fn sessions(shared: &Shared) -> Vec<SessionRow> {
    shared.live.each(|id, s| {
        let (bytes_up, bytes_down) = s.traffic.get();
        SessionRow {
            id,
            user: s.user.clone(),
            key_fp: s.key_fp.clone(),
            method: if s.certificate {
                "certificate"
            } else {
                "publickey"
            }
            .into(),
            source: s.source.to_string(),
            since: humantime::format_rfc3339_seconds(s.since).to_string(),
            channels: s.channels.used(),
            listeners: s.listeners.len() as u64,
            bytes_up,
            bytes_down,
        }
    })
}

fn listeners(shared: &Shared) -> Vec<ListenerRow> {
    shared
        .live
        .each(|id, s| {
            s.listeners
                .iter()
                .map(|l| ListenerRow {
                    session: id,
                    user: s.user.clone(),
                    address: l.address.clone(),
                    port: l.port,
                    bound: l.bound.iter().map(|a| a.to_string()).collect(),
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect()
}

fn names(shared: &Shared) -> Vec<NameRow> {
    let local = shared
        .registry
        .list()
        .into_iter()
        .map(|(name, port, owner)| NameRow {
            name,
            port,
            user: owner.user,
            session: owner.conn,
            key_fp: owner.key_fp,
            node: None,
        })
        .collect();
    cluster_names(shared, local)
}

/// Cluster mode: every node's names as etcd has them, plus this node's names etcd does
/// not have yet (served locally during an etcd outage).
#[cfg(feature = "cluster")]
fn cluster_names(shared: &Shared, local: Vec<NameRow>) -> Vec<NameRow> {
    let Some(cluster) = shared.cluster() else {
        return local;
    };
    let mut rows: Vec<NameRow> = cluster
        .names()
        .into_iter()
        .map(|(name, port, r)| NameRow {
            name,
            port,
            user: r.user,
            session: r.conn,
            key_fp: r.key_fp,
            node: Some(r.node),
        })
        .collect();
    for mut row in local {
        if !rows
            .iter()
            .any(|r| r.name == row.name && r.port == row.port)
        {
            row.node = Some(format!("{} (this node only)", cluster.node()));
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
    rows
}

#[cfg(not(feature = "cluster"))]
fn cluster_names(_: &Shared, local: Vec<NameRow>) -> Vec<NameRow> {
    local
}

fn kick(shared: &Shared, session: Option<u64>, user: Option<String>) -> Response {
    let which = match (&session, &user) {
        (Some(id), None) => Kick::Session(*id),
        (None, Some(user)) => Kick::User(user),
        _ => return Response::error("kick needs a session id or a user, not both"),
    };
    let kicked = shared.live.kick(which);
    if kicked.is_empty() {
        return Response::error(match (session, user) {
            (Some(id), _) => format!("no session {id} (see warrend ctl sessions)"),
            (_, Some(user)) => format!("user {user:?} has no session"),
            _ => "nothing to kick".into(),
        });
    }
    let mut ids = Vec::new();
    for (conn, handle) in kicked {
        info!(conn, "{KICKED}");
        handle.disconnect(KICKED);
        ids.push(conn);
    }
    Response::ok(Reply::Kicked { kicked: ids })
}

fn limits(shared: &Shared) -> LimitsReply {
    let config = shared.config();
    let l = &config.limits;
    let (unauthenticated, penalised) = shared.throttle.counts(Instant::now());
    let extra = [
        InUse {
            used: shared.live.len() as u64,
            limit: 0,
        },
        InUse {
            used: unauthenticated,
            limit: u64::from(l.max_unauthenticated),
        },
        InUse {
            used: u64::from(shared.resolver.in_flight()),
            limit: u64::from(l.max_dns_lookups),
        },
        InUse {
            used: penalised,
            limit: 0,
        },
        InUse {
            used: shared.audit.queue_depth(),
            limit: QUEUE_CAPACITY as u64,
        },
    ];
    LimitsReply::new(shared.usage(), extra)
}
