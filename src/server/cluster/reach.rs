//! The serving half of a cross-node reach: another node (which checked the reaching
//! user's `reach` rules) asks this node for a name one of its sessions publishes. The
//! connection is the publisher's, as if its `-R` port had been connected to: it counts
//! against the publisher's limits, is audited on the publisher's connection with the
//! other node's correlation id, and ends with the publisher's session.

use super::link::{PendingReach, ReachRequest};
use crate::server::audit::Hop;
use crate::server::forward::direct;
use crate::server::policy::Decision;
use crate::server::state::Shared;
use std::sync::Arc;
use warren_ssh::proto::reason;

pub async fn serve(shared: Arc<Shared>, req: ReachRequest, pending: PendingReach) {
    let Some(owner) = shared.registry.lookup(&req.name, req.port) else {
        // The other node's copy of etcd was behind (the publisher just left or moved).
        pending.reject(
            reason::CONNECT_FAILED,
            &format!("nobody publishes {}:{} on this node", req.name, req.port),
        );
        return;
    };
    let mut ctx = owner.remote_ctx();
    ctx.kind = "rendezvous-reach".into();
    ctx.user = req.user.clone();
    ctx.target = format!("{}:{}", req.name, req.port);
    ctx.hop = Some(Hop {
        correlation: req.correlation.clone(),
        from_node: Some(req.from_node.clone()),
        to_node: None,
    });
    if let Some(why) = shared.audit.refusal() {
        let d = Decision::Deny {
            reason: why.clone(),
            rule: None,
        };
        ctx.audit_open(&d, &[]).await;
        pending.reject(reason::ADMINISTRATIVELY_PROHIBITED, &why);
        return;
    }
    let _slot = match ctx.open.take_one() {
        Ok(slot) => slot,
        Err(e) => {
            let why = format!("too many channels open: {e}");
            let d = Decision::Deny {
                reason: why.clone(),
                rule: None,
            };
            ctx.audit_open(&d, &[]).await;
            pending.reject(reason::RESOURCE_SHORTAGE, &why);
            return;
        }
    };
    let allowed = Decision::Allow {
        rule: format!(
            "reach checked on node {}; published by {}",
            req.from_node, owner.user
        ),
    };
    ctx.audit_open(&allowed, &[format!("rendezvous:{}", owner.user)])
        .await;
    let origin = (req.originator.clone(), req.originator_port);
    direct::rendezvous(ctx, pending, owner, req.name, req.port, origin).await;
}

impl crate::server::forward::Answer for PendingReach {
    fn on_shared_session(&self) -> bool {
        true
    }

    fn accept(self) -> warren_ssh::driver::ChannelStream {
        PendingReach::accept(self)
    }

    fn refuse(self, code: u32, why: &str) {
        self.reject(code, why);
    }
}
