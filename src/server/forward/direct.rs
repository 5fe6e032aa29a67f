//! `direct-tcpip` (ssh -L, -W, -D, -J): resolve, decide on the resolved addresses, dial,
//! then relay; or reach a rendezvous through its publisher's session.

use super::{Answer, ChannelCtx, PendingOpen};
use crate::server::address::Host;
use crate::server::identity::Identity;
use crate::server::policy::Decision;
use crate::server::rendezvous::Owner;
use crate::server::resolver::Resolver;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpStream;
use tracing::info;
use warren_ssh::proto::{ChannelKind, reason};

/// A network destination: the name is resolved here and the policy judges every address
/// it resolves to, so a name pointing inside cannot slip past a rule. Only the judged
/// addresses are dialed.
pub async fn network(
    ctx: ChannelCtx,
    reply: PendingOpen,
    identity: Identity,
    host: Host,
    raw_host: String,
    port: u16,
) {
    let resolved: Vec<IpAddr> = match &host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            // A name no connect rule could allow is refused before any DNS query.
            if let Some(deny) = identity.policy.refuse_before_resolving(
                &identity.options,
                &raw_host,
                u32::from(port),
            ) {
                ctx.audit_open(&deny, &[]).await;
                info!(conn = ctx.conn, target = %ctx.target, "{deny}");
                reply.reject(reason::ADMINISTRATIVELY_PROHIBITED);
                return;
            }
            let limits = (&identity.config.limits).into();
            match Resolver::global().lookup(&limits, &ctx.user, name).await {
                Ok(addrs) => addrs,
                Err(why) => {
                    return refuse(&ctx, reply, why, reason::CONNECT_FAILED).await;
                }
            }
        }
    };
    let shown: Vec<String> = resolved.iter().map(|a| a.to_string()).collect();
    let decision =
        identity
            .policy
            .decide_connect(&identity.options, &raw_host, u32::from(port), &resolved);
    if !decision.is_allowed() {
        ctx.audit_open(&decision, &shown).await;
        info!(conn = ctx.conn, target = %ctx.target, "{decision}");
        reply.reject(reason::ADMINISTRATIVELY_PROHIBITED);
        return;
    }
    let mut last = String::from("no address");
    for ip in &resolved {
        let addr = SocketAddr::new(*ip, port);
        let dial = tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(addr));
        match ctx.unless_session_ends(dial).await {
            Some(Ok(Ok(mut tcp))) => {
                let _ = tcp.set_nodelay(true);
                ctx.audit_open(&decision, &[addr.to_string()]).await;
                let mut stream = reply.accept();
                let cut = ctx
                    .relay(&mut stream, &mut tcp, std::future::pending())
                    .await;
                super::close_tcp(tcp, cut);
                return;
            }
            Some(Ok(Err(e))) => last = format!("{addr}: {e}"),
            Some(Err(_)) => last = format!("{addr}: timed out"),
            None => {
                last = "the session closed while connecting".into();
                break;
            }
        }
    }
    // Allowed, but the target could not be reached: the audit says both.
    let why = format!("connect failed: {last}");
    info!(conn = ctx.conn, target = %ctx.target, "{why}");
    ctx.audit_open_failed(&decision, &shown, why).await;
    reply.reject(reason::CONNECT_FAILED);
}

/// A rendezvous: open a forwarded-tcpip channel on the publisher's session, as if its
/// `-R` port had been connected to, and splice the two channels. `reply` is the reaching
/// user's channel on this node, or a link channel from the node where that user is.
pub async fn rendezvous(
    ctx: ChannelCtx,
    reply: impl Answer,
    owner: Owner,
    name: String,
    port: u16,
    origin: (String, u32),
) {
    let opened = tokio::time::timeout(
        ctx.connect_timeout,
        owner.handle.open(ChannelKind::ForwardedTcpip {
            address: name.clone(),
            port: u32::from(port),
            originator: origin.0,
            originator_port: origin.1,
        }),
    );
    let Some(opened) = ctx.unless_session_ends(opened).await else {
        return refuse_answer(
            &ctx,
            reply,
            "the session closed while the publisher was asked".into(),
            reason::CONNECT_FAILED,
        )
        .await;
    };
    match opened {
        Ok(Ok(mut b)) => {
            let reply_is_link = reply.on_shared_session();
            let mut a = reply.accept();
            if reply_is_link {
                // A reach from another node: the link channel carries the publisher's
                // connection here, so it is charged to the publisher like `b`.
                ctx.charge_link_channel(&a);
            }
            // Two channels spliced: each side's window is granted back only as the other
            // side reads, so a slow reader on either end slows its own sender and warrend
            // holds at most a window each way. The relay ends with either session.
            let publisher_gone = owner.session.clone();
            let stop = async move {
                publisher_gone.cancelled().await;
                "error: the publisher's session closed".to_string()
            };
            ctx.relay(&mut a, &mut b, stop).await;
        }
        Ok(Err(e)) => {
            refuse_answer(
                &ctx,
                reply,
                format!("the publisher of {name}:{port} refused: {e}"),
                reason::CONNECT_FAILED,
            )
            .await
        }
        Err(_) => {
            refuse_answer(
                &ctx,
                reply,
                format!("the publisher of {name}:{port} did not answer"),
                reason::CONNECT_FAILED,
            )
            .await
        }
    }
}

/// A rendezvous another node serves: a reach channel over the link to that node, which
/// opens the publisher's side; the two channels are spliced here. Fails fast, with the
/// reason, when that node cannot be reached.
pub async fn rendezvous_remote(
    ctx: ChannelCtx,
    reply: PendingOpen,
    cluster: std::sync::Arc<crate::server::cluster::Cluster>,
    located: (crate::server::cluster::NameRecord, String),
    name: String,
    port: u16,
    origin: (String, u32),
) {
    let (record, link) = located;
    let req = crate::server::cluster::ReachRequest {
        name: name.clone(),
        port,
        user: ctx.user.clone(),
        from_node: cluster.node().to_string(),
        correlation: ctx
            .hop
            .as_ref()
            .map(|h| h.correlation.clone())
            .unwrap_or_default(),
        originator: origin.0,
        originator_port: origin.1,
    };
    let opened = tokio::time::timeout(
        ctx.connect_timeout,
        cluster.open_remote(&record, &link, req),
    );
    let Some(opened) = ctx.unless_session_ends(opened).await else {
        return;
    };
    match opened {
        Ok(Ok(mut b)) => {
            // The link channel carries this user's connection: their budget, not only the link's.
            ctx.charge_link_channel(&b);
            let mut a = reply.accept();
            ctx.relay(&mut a, &mut b, std::future::pending()).await;
        }
        Ok(Err(why)) => {
            refuse_answer(
                &ctx,
                reply,
                format!("{name}:{port} on node {}: {why}", record.node),
                reason::CONNECT_FAILED,
            )
            .await
        }
        Err(_) => {
            refuse_answer(
                &ctx,
                reply,
                format!(
                    "node {} did not answer for {name}:{port} in time",
                    record.node
                ),
                reason::CONNECT_FAILED,
            )
            .await
        }
    }
}

/// Refuses a rendezvous channel, saying why to the asking side and the audit log.
async fn refuse_answer(ctx: &ChannelCtx, reply: impl Answer, why: String, code: u32) {
    info!(conn = ctx.conn, target = %ctx.target, "{why}");
    ctx.audit_open(
        &Decision::Deny {
            reason: why.clone(),
            rule: None,
        },
        &[],
    )
    .await;
    reply.refuse(code, &why);
}

async fn refuse(ctx: &ChannelCtx, reply: PendingOpen, why: String, code: u32) {
    info!(conn = ctx.conn, target = %ctx.target, "{why}");
    ctx.audit_open(
        &Decision::Deny {
            reason: why,
            rule: None,
        },
        &[],
    )
    .await;
    reply.reject(code);
}
