//! The transparent listener: every TCP connection nft redirects here is opened as a
//! direct-tcpip channel to the address the program meant, through the tunnel's session.

use super::cidr::Cidr;
use super::original_dst::original_dst;
use crate::config::forward::Endpoint;
use crate::forward::Opener;
use crate::forward::local::ForwardStats;
use crate::forward::relay::relay;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// As -L: sshd answers a channel open only after its own connect.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One routed network and its counters (`warren status`).
#[derive(Debug)]
pub struct RouteEntry {
    pub cidr: Cidr,
    pub stats: Arc<ForwardStats>,
}

pub struct RouteListener {
    sockets: Vec<TcpListener>,
    pub port: u16,
}

impl RouteListener {
    /// 127.0.0.1 on a free port, and ::1 on the same port where the host has IPv6
    /// (nft's `redirect` sends local traffic to exactly these two addresses).
    pub fn bind() -> std::io::Result<RouteListener> {
        let v4 = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = v4.local_addr()?.port();
        let mut sockets = vec![v4];
        match std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
            Ok(v6) => sockets.push(v6),
            Err(e) => {
                warn!("--route: no IPv6 listener on [::1]:{port} ({e}); IPv6 routes will not work")
            }
        }
        let sockets = sockets
            .into_iter()
            .map(|s| {
                s.set_nonblocking(true)?;
                TcpListener::from_std(s)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(RouteListener { sockets, port })
    }

    /// Accepts until `cancel`; accepted connections run on `tracker` and may finish.
    pub fn serve<O: Opener>(
        self,
        opener: Arc<O>,
        routes: Arc<Vec<RouteEntry>>,
        excludes: Arc<Vec<Cidr>>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) {
        for l in self.sockets {
            let (opener, routes, excludes, cancel, t) = (
                opener.clone(),
                routes.clone(),
                excludes.clone(),
                cancel.clone(),
                tracker.clone(),
            );
            tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = cancel.cancelled() => return,
                        a = l.accept() => a,
                    };
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            warn!("--route: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Some((target, stats)) = destination(&stream, &routes, &excludes) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    t.spawn(forward_one(stream, peer, target, opener.clone(), stats));
                }
            });
        }
    }
}

/// The original destination and its route, or `None` (the connection is dropped) for one
/// that was not redirected by our rules: someone connecting to the listener directly
/// must not get a channel to anywhere outside the routed networks.
fn destination(
    stream: &TcpStream,
    routes: &[RouteEntry],
    excludes: &[Cidr],
) -> Option<(SocketAddr, Arc<ForwardStats>)> {
    let local = stream.local_addr().ok()?;
    let dst = match original_dst(stream, local) {
        Ok(d) => d,
        Err(e) => {
            debug!("--route: no original destination ({e}); closing");
            return None;
        }
    };
    let ip = dst.ip();
    if dst == local || excludes.iter().any(|c| c.contains(ip)) {
        debug!("--route: {dst} is not routed; closing");
        return None;
    }
    let route = routes.iter().find(|r| r.cidr.contains(ip))?;
    Some((dst, route.stats.clone()))
}

async fn forward_one<O: Opener>(
    mut local: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    opener: Arc<O>,
    stats: Arc<ForwardStats>,
) {
    let _active = stats.enter();
    let target = Endpoint::Tcp {
        host: match dst.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => v6.to_string(),
        },
        port: dst.port(),
    };
    let mut tunnel =
        match tokio::time::timeout(OPEN_TIMEOUT, opener.open(&target, Some(peer))).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                warn!("--route: {dst}: {e}; closing this connection");
                return;
            }
            Err(_) => {
                warn!("--route: {dst}: no answer within {OPEN_TIMEOUT:?}; closing this connection");
                return;
            }
        };
    debug!("--route: {peer} -> {dst}");
    match relay(&mut local, &mut tunnel).await {
        Ok((up, down)) => stats.add_bytes(up, down),
        Err(e) => debug!("--route: {dst}: {e}"),
    }
}
