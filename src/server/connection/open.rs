//! Channels the client opens: `direct-tcpip` to the network or to a rendezvous name, the
//! "session" channel (see [`super::session`]), and refusals for everything else.

use super::Connection;
use crate::server::audit::Hop;
use crate::server::cluster::Located;
use crate::server::forward::{ChannelCtx, PendingOpen, direct};
use crate::server::policy::{Decision, DirectRoute};
use tracing::{info, warn};
use warren_ssh::driver::Handle;
use warren_ssh::proto::{ChannelId, ChannelKind, reason};

impl Connection {
    pub(super) async fn on_channel_open(&mut self, h: &Handle, id: ChannelId, kind: ChannelKind) {
        let reply = PendingOpen::new(h.clone(), id);
        match kind {
            ChannelKind::Session => self.open_session(reply).await,
            ChannelKind::DirectTcpip {
                host,
                port,
                originator,
                originator_port,
            } => {
                self.open_direct(reply, &host, port, (originator, originator_port))
                    .await
            }
            ChannelKind::DirectStreamlocal { path } => {
                if let Some(identity) = self.identity.clone() {
                    let ctx = self.ctx(&identity, "direct-streamlocal", path);
                    let d = Decision::Deny {
                        reason: "unix-socket forwarding is not offered by warrend".into(),
                        rule: None,
                    };
                    self.deny_channel(reply, &ctx, d, reason::ADMINISTRATIVELY_PROHIBITED)
                        .await;
                } else {
                    reply.reject(reason::ADMINISTRATIVELY_PROHIBITED);
                }
            }
            ChannelKind::Tun { .. } => {
                const WHY: &str =
                    "warrend forwards ports only: tunnel devices (ssh -w) are not offered";
                match self.identity.clone() {
                    Some(identity) => {
                        let ctx = self.ctx(&identity, "tun", "tun@openssh.com".into());
                        ctx.audit_open(
                            &Decision::Deny {
                                reason: WHY.into(),
                                rule: None,
                            },
                            &[],
                        )
                        .await;
                        info!(conn = self.id, "{WHY}");
                        reply.reject_with(reason::ADMINISTRATIVELY_PROHIBITED, WHY);
                    }
                    None => reply.reject(reason::ADMINISTRATIVELY_PROHIBITED),
                }
            }
            // forwarded-tcpip and the like go from a server to its client, never back.
            _ => reply.reject(reason::UNKNOWN_CHANNEL_TYPE),
        }
    }

    /// Refuses a channel and records why.
    pub(super) async fn deny_channel(
        &self,
        reply: PendingOpen,
        ctx: &ChannelCtx,
        decision: Decision,
        code: u32,
    ) {
        ctx.audit_open(&decision, &[]).await;
        info!(conn = self.id, target = %ctx.target, "{decision}");
        reply.reject(code);
    }

    async fn open_direct(
        &mut self,
        reply: PendingOpen,
        host: &str,
        port_to_connect: u32,
        origin: (String, u32),
    ) {
        if let Some(why) = self.shared.audit.refusal() {
            let target = format!("{host}:{port_to_connect}");
            warn!(conn = self.id, ?target, "channel refused: {why}");
            match self.identity.clone() {
                Some(identity) => {
                    let ctx = self.ctx(&identity, "direct-tcpip", target);
                    let d = Decision::Deny {
                        reason: why,
                        rule: None,
                    };
                    self.deny_channel(reply, &ctx, d, reason::RESOURCE_SHORTAGE)
                        .await;
                }
                None => reply.reject(reason::RESOURCE_SHORTAGE),
            }
            return;
        }
        let Some(identity) = self.current_identity() else {
            reply.reject(reason::ADMINISTRATIVELY_PROHIBITED);
            return;
        };
        let mut ctx = self.ctx(
            &identity,
            "direct-tcpip",
            show_target(host, port_to_connect),
        );
        let slot = match identity.channels.take_one() {
            Ok(slot) => slot,
            Err(e) => {
                let d = Decision::Deny {
                    reason: format!("too many channels open: {e}"),
                    rule: None,
                };
                self.deny_channel(reply, &ctx, d, reason::RESOURCE_SHORTAGE)
                    .await;
                return;
            }
        };
        let Ok(port) = u16::try_from(port_to_connect) else {
            let d = Decision::Deny {
                reason: "port out of range".into(),
                rule: None,
            };
            self.deny_channel(reply, &ctx, d, reason::CONNECT_FAILED)
                .await;
            return;
        };
        match identity.policy.route_direct(host) {
            Err(decision) => {
                self.deny_channel(reply, &ctx, decision, reason::ADMINISTRATIVELY_PROHIBITED)
                    .await
            }
            Ok(DirectRoute::Rendezvous { name }) => {
                ctx.kind = "rendezvous-reach".into();
                let decision =
                    identity
                        .policy
                        .decide_reach(&identity.options, &name, port_to_connect);
                if !decision.is_allowed() {
                    self.deny_channel(reply, &ctx, decision, reason::ADMINISTRATIVELY_PROHIBITED)
                        .await;
                    return;
                }
                if let Some(cluster) = self.shared.cluster() {
                    match cluster.locate(&name, port) {
                        Located::Here => {}
                        Located::Elsewhere { record, link } => {
                            ctx.hop = Some(Hop {
                                correlation: cluster.correlation(),
                                from_node: None,
                                to_node: Some(record.node.clone()),
                            });
                            ctx.audit_open(
                                &decision,
                                &[format!("rendezvous:{}@{}", record.user, record.node)],
                            )
                            .await;
                            let task = direct::rendezvous_remote(
                                ctx,
                                reply,
                                cluster.clone(),
                                (record, link),
                                name,
                                port,
                                origin,
                            );
                            self.shared.channels.spawn(async move {
                                let _slot = slot;
                                task.await
                            });
                            return;
                        }
                        Located::Gone { record } => {
                            let d = Decision::Deny {
                                reason: format!(
                                    "{name}:{port} is served by node {}, which is not a live \
                                     member of the cluster",
                                    record.node
                                ),
                                rule: None,
                            };
                            self.deny_channel(reply, &ctx, d, reason::CONNECT_FAILED)
                                .await;
                            return;
                        }
                    }
                }
                let Some(owner) = self.shared.registry.lookup(&name, port) else {
                    let d = Decision::Deny {
                        reason: format!("nobody publishes {name}:{port} right now"),
                        rule: None,
                    };
                    self.deny_channel(reply, &ctx, d, reason::CONNECT_FAILED)
                        .await;
                    return;
                };
                ctx.audit_open(&decision, &[format!("rendezvous:{}", owner.user)])
                    .await;
                let task = direct::rendezvous(ctx, reply, owner, name, port, origin);
                self.shared.channels.spawn(async move {
                    let _slot = slot;
                    task.await
                });
            }
            Ok(DirectRoute::Network(target)) => {
                let raw = host.to_string();
                let task = direct::network(ctx, reply, identity, target, raw, port);
                self.shared.channels.spawn(async move {
                    let _slot = slot;
                    task.await
                });
            }
        }
    }
}

/// `host:port` as the audit log shows a target: IPv6 literals in brackets, so the
/// port cannot be mistaken for part of the address.
fn show_target(host: &str, port: u32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
