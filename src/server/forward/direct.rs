//! `direct-tcpip` (ssh -L, -W, -D, -J): resolve, decide on the resolved addresses, dial,
//! then relay; or reach a rendezvous through its publisher's session.

use super::ChannelCtx;
use crate::forward::decouple::decouple;
use crate::server::address::Host;
use crate::server::connection::Identity;
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
        match tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(mut tcp)) => {
                let _ = tcp.set_nodelay(true);
                ctx.audit_open(&decision, &[addr.to_string()]).await;
                reply.accept().await;
                let mut stream = decouple(channel);
                ctx.relay(&mut stream, &mut tcp).await;
                stream.close().await;
                return;
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: timed out"),
        }
    }
    refuse(
        &ctx,
        reply,
        format!("connect failed: {last}"),
        ChannelOpenFailure::ConnectFailed,
    )
    .await;
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
    )
    .await;
    match opened {
        Ok(Ok(peer)) => {
            reply.accept().await;
            let mut a = decouple(channel);
            let mut b = decouple(peer);
            ctx.relay(&mut a, &mut b).await;
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
