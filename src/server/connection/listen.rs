//! `-R` through global requests: listeners on real sockets and published rendezvous
//! names, each holding a slot of the listener limits and audited from start to stop.

use super::Connection;
use crate::server::audit::AuditEvent;
use crate::server::cluster::Published;
use crate::server::forward::reverse;
use crate::server::identity::Identity;
use crate::server::live_sessions::Listening;
use crate::server::policy::{Decision, ForwardPlan};
use crate::server::rendezvous::Owner;
use tracing::{info, warn};
use warren_ssh::driver::Handle;
use warren_ssh::proto::GlobalRequest;

impl Connection {
    /// Answers a global request: whether it succeeded, and the reply's data (the port
    /// chosen for a `-R` with port 0, as OpenSSH expects).
    pub(super) async fn on_global_request(
        &mut self,
        h: &Handle,
        request: GlobalRequest,
    ) -> (bool, Vec<u8>) {
        match request {
            GlobalRequest::TcpipForward { address, port } => {
                match self.tcpip_forward(h, &address, port).await {
                    Some(actual) if port == 0 => (true, actual.to_be_bytes().to_vec()),
                    Some(_) => (true, Vec::new()),
                    None => (false, Vec::new()),
                }
            }
            GlobalRequest::CancelTcpipForward { address, port } => {
                (self.cancel_tcpip_forward(&address, port).await, Vec::new())
            }
            GlobalRequest::StreamlocalForward { path } => {
                if let Some(identity) = self.identity.clone() {
                    let d = Decision::Deny {
                        reason: "unix-socket forwarding is not offered by warrend".into(),
                        rule: None,
                    };
                    self.audit_listen(&identity, "streamlocal-forward", &path, 0, &d)
                        .await;
                }
                (false, Vec::new())
            }
            _ => (false, Vec::new()),
        }
    }

    /// `tcpip-forward` (ssh -R): a listener or a published name. Returns the port the
    /// listener got, or `None` when refused.
    async fn tcpip_forward(&mut self, h: &Handle, address: &str, port: u32) -> Option<u32> {
        if let Some(reason) = self.shared.audit.refusal() {
            warn!(conn = self.id, address, port = port, "-R refused: {reason}");
            if let Some(identity) = self.identity.clone() {
                let d = Decision::Deny { reason, rule: None };
                self.audit_listen(&identity, "tcpip-forward", address, port, &d)
                    .await;
            }
            return None;
        }
        let identity = self.current_identity()?;
        let slot = identity.listeners.take_one();
        let fd = match &slot {
            Err(e) => crate::server::policy::ForwardDecision {
                decision: Decision::Deny {
                    reason: format!("too many listeners: {e}"),
                    rule: None,
                },
                plan: None,
            },
            Ok(_) => identity
                .policy
                .decide_tcpip_forward(&identity.options, address, port),
        };
        // Labelled by what was asked, also when refused (no plan).
        let publish = matches!(fd.plan, Some(ForwardPlan::Publish { .. }))
            || matches!(
                crate::server::policy::classify_bind_address(address),
                Ok(crate::server::policy::BindAddress::Rendezvous(_))
            );
        let (kind, decision) = if publish {
            ("rendezvous-publish", fd.decision.clone())
        } else {
            ("tcpip-forward", fd.decision.clone())
        };
        let (Some(plan), Ok(slot)) = (fd.plan, slot) else {
            self.audit_listen(&identity, kind, address, port, &decision)
                .await;
            info!(conn = self.id, address, port = port, "-R {decision}");
            return None;
        };
        match plan {
            ForwardPlan::Publish { name, port: p } => {
                // Cluster mode: etcd decides first, with the same rules cluster-wide.
                if let Some(cluster) = self.shared.cluster() {
                    match cluster
                        .publish(&name, p, &identity.user, &identity.key_fp, self.id)
                        .await
                    {
                        Ok(Published::Cluster { from: Some(node) }) => info!(
                            conn = self.id,
                            "{name:?}:{p} taken over from node {node} (same user)"
                        ),
                        Ok(Published::Cluster { from: None }) => {}
                        Ok(Published::LocalOnly { why }) => {
                            warn!(
                                conn = self.id,
                                "{name:?}:{p} served by this node only until etcd is back: {why}"
                            );
                        }
                        Err(reason) => {
                            let d = Decision::Deny { reason, rule: None };
                            self.audit_listen(&identity, kind, address, port, &d).await;
                            info!(conn = self.id, "-R {name:?}:{p} {d}");
                            return None;
                        }
                    }
                }
                let owner = Owner {
                    conn: self.id,
                    user: identity.user.clone(),
                    key_fp: identity.key_fp.clone(),
                    handle: h.clone(),
                    session: self.session.clone(),
                    ctx: self.ctx(&identity, "rendezvous-reach", format!("{name}:{p}")),
                    channel_seq: self.channel_seq.clone(),
                };
                match self.shared.registry.register(&name, p, owner) {
                    Ok(Some(old)) => info!(
                        conn = self.id,
                        "{name:?}:{p} taken over from connection {old} of the same user"
                    ),
                    Ok(None) => {}
                    Err(_) => {
                        if let Some(cluster) = self.shared.cluster() {
                            cluster.withdraw(&name, p, self.id);
                        }
                        // Neither who holds it nor anything else about them is said.
                        let d = Decision::Deny {
                            reason: format!("{name}:{p} is published by another user"),
                            rule: None,
                        };
                        self.audit_listen(&identity, kind, address, port, &d).await;
                        info!(
                            conn = self.id,
                            "-R {name:?}:{p} refused: published by another user"
                        );
                        return None;
                    }
                }
                self.published.push((name, p, slot));
                self.audit_listen(&identity, kind, address, port, &decision)
                    .await;
                Some(port)
            }
            ForwardPlan::Bind { addrs, port: p } => match reverse::bind(&addrs, p) {
                Ok((listeners, actual)) => {
                    let bound = listeners.iter().filter_map(|l| l.local_addr().ok());
                    self.shared.live.add_listener(
                        self.id,
                        Listening {
                            address: address.to_string(),
                            port: u32::from(actual),
                            bound: bound.collect(),
                        },
                    );
                    let ctx = self.ctx(&identity, "forwarded-tcpip", format!("{address}:{actual}"));
                    let task = tokio::spawn(reverse::accept_loop(
                        ctx,
                        listeners,
                        h.clone(),
                        address.to_string(),
                        u32::from(actual),
                    ));
                    self.listeners
                        .insert((address.to_string(), u32::from(actual)), (task, slot));
                    self.audit_listen(&identity, kind, address, u32::from(actual), &decision)
                        .await;
                    Some(u32::from(actual))
                }
                Err(e) => {
                    let d = Decision::Deny {
                        reason: format!("cannot listen: {e}"),
                        rule: None,
                    };
                    self.audit_listen(&identity, kind, address, port, &d).await;
                    warn!(conn = self.id, "-R {address}:{port}: cannot listen: {e}");
                    None
                }
            },
        }
    }

    async fn cancel_tcpip_forward(&mut self, address: &str, port: u32) -> bool {
        let Some(identity) = self.identity.clone() else {
            return false;
        };
        if let Some((task, _slot)) = self.listeners.remove(&(address.to_string(), port)) {
            task.abort();
            self.shared.live.remove_listener(self.id, address, port);
            self.audit_stop(
                &identity,
                "tcpip-forward",
                address,
                port,
                "cancelled by client",
            )
            .await;
            return true;
        }
        if let Ok(p) = u16::try_from(port)
            && let Some(i) = self
                .published
                .iter()
                .position(|(n, pp, _)| n == address && *pp == p)
        {
            let (name, p, _slot) = self.published.remove(i);
            self.shared.registry.unregister(&name, p, self.id);
            if let Some(cluster) = self.shared.cluster() {
                cluster.withdraw(&name, p, self.id);
            }
            self.audit_stop(
                &identity,
                "rendezvous-publish",
                address,
                port,
                "cancelled by client",
            )
            .await;
            return true;
        }
        false
    }

    async fn audit_listen(
        &self,
        identity: &Identity,
        kind: &str,
        address: &str,
        port: u32,
        decision: &Decision,
    ) {
        let (decision_s, rule, reason) = Decision::audit_fields(decision);
        self.audit(AuditEvent::ListenStart {
            user: identity.user.clone(),
            kind: kind.to_string(),
            address: address.to_string(),
            port,
            decision: decision_s,
            rule,
            reason,
        })
        .await;
    }

    async fn audit_stop(
        &self,
        identity: &Identity,
        kind: &str,
        address: &str,
        port: u32,
        reason: &str,
    ) {
        self.audit(AuditEvent::ListenStop {
            user: identity.user.clone(),
            kind: kind.to_string(),
            address: address.to_string(),
            port,
            reason: reason.to_string(),
        })
        .await;
    }
}
