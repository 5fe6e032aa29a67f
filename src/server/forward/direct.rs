//! `direct-tcpip` (ssh -L, -W, -D, -J): resolve, decide on the resolved addresses, dial,
//! then relay; or reach a rendezvous through its publisher's session.

use super::ChannelCtx;
use crate::forward::decouple::decouple_budgeted;
use crate::server::address::Host;
use crate::server::identity::Identity;
use crate::server::policy::Decision;
use crate::server::rendezvous::Owner;
use crate::server::resolver::Resolver;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpStream;
use tracing::info;

/// A network destination: the name is resolved here and the policy judges every address
/// it resolves to, so a name pointing inside cannot slip past a rule. Only the judged
/// addresses are dialed.
pub async fn network(
    ctx: ChannelCtx,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
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
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return;
            }
            let limits = (&identity.config.limits).into();
            match Resolver::global().lookup(&limits, &ctx.user, name).await {
                Ok(addrs) => addrs,
                Err(reason) => {
                    return refuse(&ctx, reply, reason, ChannelOpenFailure::ConnectFailed).await;
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
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
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
                reply.accept().await;
                let mut stream = decouple_budgeted(channel, ctx.budget.clone());
                let failed = stream.failure();
                let cut = ctx.relay(&mut stream, &mut tcp, failed).await;
                super::close_tcp(tcp, cut);
                stream.close().await;
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
    let reason = format!("connect failed: {last}");
    info!(conn = ctx.conn, target = %ctx.target, "{reason}");
    ctx.audit_open_failed(&decision, &shown, reason).await;
    reply.reject(ChannelOpenFailure::ConnectFailed).await;
}

/// A rendezvous: open a forwarded-tcpip channel on the publisher's session, as if its
/// `-R` port had been connected to, and splice the two channels.
pub async fn rendezvous(
    ctx: ChannelCtx,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    owner: Owner,
    name: String,
    port: u16,
    origin: (String, u32),
) {
    let opened = tokio::time::timeout(
        ctx.connect_timeout,
        owner.handle.channel_open_forwarded_tcpip(
            name.clone(),
            u32::from(port),
            origin.0,
            origin.1,
        ),
    );
    let Some(opened) = ctx.unless_session_ends(opened).await else {
        return refuse(
            &ctx,
            reply,
            "the session closed while the publisher was asked".into(),
            ChannelOpenFailure::ConnectFailed,
        )
        .await;
    };
    match opened {
        Ok(Ok(peer)) => {
            reply.accept().await;
            // What each side's slow reader makes us hold is charged to the user who
            // sent it; the relay ends with either session.
            let mut a = decouple_budgeted(channel, ctx.budget.clone());
            let mut b = decouple_budgeted(peer, owner.budget.clone());
            let (fa, fb) = (a.failure(), b.failure());
            let publisher_gone = owner.session.clone();
            let failed = async move {
                tokio::select! {
                    r = fa => r,
                    r = fb => r,
                    _ = publisher_gone.cancelled() => "the publisher's session closed".into(),
                }
            };
            ctx.relay(&mut a, &mut b, failed).await;
            a.close().await;
            b.close().await;
        }
        Ok(Err(e)) => {
            refuse(
                &ctx,
                reply,
                format!("the publisher of {name}:{port} refused: {e}"),
                ChannelOpenFailure::ConnectFailed,
            )
            .await
        }
        Err(_) => {
            refuse(
                &ctx,
                reply,
                format!("the publisher of {name}:{port} did not answer"),
                ChannelOpenFailure::ConnectFailed,
            )
            .await
        }
    }
}

async fn refuse(
    ctx: &ChannelCtx,
    reply: ChannelOpenHandle,
    reason: String,
    failure: ChannelOpenFailure,
) {
    info!(conn = ctx.conn, target = %ctx.target, "{reason}");
    ctx.audit_open(&Decision::Deny { reason, rule: None }, &[])
        .await;
    reply.reject(failure).await;
}
