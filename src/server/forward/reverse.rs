//! `tcpip-forward` (ssh -R) with real sockets: bind what the policy allowed, and send each
//! accepted connection to the client as a forwarded-tcpip channel.

use super::ChannelCtx;
use crate::forward::bind::listen;
use crate::server::policy::Decision;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, warn};
use warren_ssh::driver::Handle;
use warren_ssh::proto::ChannelKind;

/// Binds every address on `port`; with 0, the first bind picks the port for all.
pub fn bind(addrs: &[IpAddr], port: u16) -> std::io::Result<(Vec<TcpListener>, u16)> {
    let mut port = port;
    let mut out = Vec::new();
    for ip in addrs {
        let l = listen(SocketAddr::new(*ip, port))?;
        if port == 0 {
            port = l.local_addr()?.port();
        }
        out.push(l);
    }
    Ok((out, port))
}

/// Accepts on every listener until aborted (cancel, disconnect), opening one forwarded
/// channel per connection. `address` is what the client asked for: OpenSSH clients find
/// their forward by it.
pub async fn accept_loop(
    ctx: ChannelCtx,
    listeners: Vec<TcpListener>,
    handle: Handle,
    address: String,
    port: u32,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let (ctx, handle, address) = (ctx.clone(), handle.clone(), address.clone());
        tasks.spawn(async move {
            loop {
                match l.accept().await {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        ctx.tasks.spawn(one(
                            ctx.clone(),
                            handle.clone(),
                            address.clone(),
                            port,
                            tcp,
                            peer,
                        ));
                    }
                    Err(e) => {
                        warn!("-R {address}:{port}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn one(
    mut ctx: ChannelCtx,
    handle: Handle,
    address: String,
    port: u32,
    mut tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    ctx.target = format!("{address}:{port} from {peer}");
    // A listener granted before an audit outage must not carry unaudited connections
    // during it: refused like new channels, until the log can be written again.
    if let Some(reason) = ctx.audit.refusal() {
        warn!(
            conn = ctx.conn,
            "-R {address}:{port}: connection from {peer} refused: {reason}"
        );
        ctx.audit_open(&Decision::Deny { reason, rule: None }, &[peer.to_string()])
            .await;
        return;
    }
    // Connections to a -R port come from anyone who can reach it: they count against
    // the user's and the server's channel limits like the user's own channels.
    let _open = match ctx.open.take_one() {
        Ok(slot) => slot,
        Err(e) => {
            ctx.audit_open(
                &Decision::Deny {
                    reason: format!("too many channels open: {e}"),
                    rule: None,
                },
                &[peer.to_string()],
            )
            .await;
            return;
        }
    };
    let opened = tokio::time::timeout(
        ctx.connect_timeout,
        handle.open(ChannelKind::ForwardedTcpip {
            address: address.clone(),
            port,
            originator: peer.ip().to_string(),
            originator_port: u32::from(peer.port()),
        }),
    );
    let Some(opened) = ctx.unless_session_ends(opened).await else {
        return;
    };
    match opened {
        Ok(Ok(mut stream)) => {
            ctx.audit_open(
                &Decision::Allow {
                    rule: format!("listener {address}:{port}"),
                },
                &[peer.to_string()],
            )
            .await;
            let cut = ctx
                .relay(&mut tcp, &mut stream, std::future::pending())
                .await;
            super::close_tcp(tcp, cut);
        }
        Ok(Err(e)) => {
            debug!("client refused forwarded connection: {e}");
            ctx.audit_open(
                &Decision::Deny {
                    reason: format!("the client refused: {e}"),
                    rule: None,
                },
                &[peer.to_string()],
            )
            .await;
        }
        Err(_) => {
            ctx.audit_open(
                &Decision::Deny {
                    reason: "the client did not answer".into(),
                    rule: None,
                },
                &[peer.to_string()],
            )
            .await;
        }
    }
}
