//! `--dns`: a local DNS forwarder on loopback that nft sends the system resolvers' port 53
//! to. Queries (UDP or TCP) are answered from the cache or sent as DNS-over-TCP through a
//! direct-tcpip channel to the DNS server on the far side; with --dns-domain, names
//! outside those domains go to the original resolver untouched.

pub mod cache;
pub mod message;

use super::nft::MARK;
use crate::config::forward::Endpoint;
use crate::forward::Opener;
use cache::Cache;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// One query's whole round trip (channel open included).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// A TCP client that sends nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
const CACHE_ENTRIES: usize = 4096;
/// Queries in flight at once; beyond that new ones are dropped (clients retry), so a local
/// flood cannot open channels without bound.
const IN_FLIGHT: usize = 256;

/// Where queries go.
#[derive(Debug, Clone)]
pub struct DnsTargets {
    /// The DNS server as seen from the SSH server (port 53).
    pub server: Endpoint,
    /// Only names under these go through the tunnel (empty: all).
    pub domains: Vec<String>,
    /// The original resolver, for the other names.
    pub fallback: Option<IpAddr>,
}

/// Queries answered, for `warren status`.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub answered: AtomicU64,
    pub from_cache: AtomicU64,
}

pub struct DnsForwarder {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    pub port: u16,
}

impl DnsForwarder {
    /// UDP and TCP on 127.0.0.1 and (where possible) ::1, all on one port, since one nft
    /// `redirect to :port` covers both protocols.
    pub fn bind() -> std::io::Result<DnsForwarder> {
        let mut last = None;
        for _ in 0..16 {
            let udp4 = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            let port = udp4.local_addr()?.port();
            let tcp4 = match std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                Ok(t) => t,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let mut udp = vec![udp4];
            let mut tcp = vec![tcp4];
            if let (Ok(u6), Ok(t6)) = (
                std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, port)),
                std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, port)),
            ) {
                udp.push(u6);
                tcp.push(t6);
            }
            let udp = udp
                .into_iter()
                .map(|s| {
                    s.set_nonblocking(true)?;
                    UdpSocket::from_std(s)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            let tcp = tcp
                .into_iter()
                .map(|s| {
                    s.set_nonblocking(true)?;
                    TcpListener::from_std(s)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            return Ok(DnsForwarder { udp, tcp, port });
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    pub fn serve<O: Opener>(
        self,
        opener: Arc<O>,
        targets: DnsTargets,
        stats: Arc<DnsStats>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let shared = Arc::new(Shared {
            opener,
            targets,
            cache: Mutex::new(Cache::new(CACHE_ENTRIES)),
            stats,
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        });
        for socket in self.udp {
            let (shared, cancel, t) = (shared.clone(), cancel.clone(), tracker.clone());
            tracker.spawn(serve_udp(Arc::new(socket), shared, cancel, t));
        }
        for l in self.tcp {
            let (shared, cancel, t) = (shared.clone(), cancel.clone(), tracker.clone());
            tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = cancel.cancelled() => return,
                        a = l.accept() => a,
                    };
                    match accepted {
                        Ok((stream, _)) => {
                            t.spawn(serve_tcp_client(stream, shared.clone()));
                        }
                        Err(e) => {
                            warn!("--dns: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
    }
}

struct Shared<O> {
    opener: Arc<O>,
    targets: DnsTargets,
    cache: Mutex<Cache>,
    stats: Arc<DnsStats>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl<O: Opener> Shared<O> {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer to one query, or `None` (the client retries or times out).
    async fn resolve(&self, query: &[u8], over_udp: bool) -> Option<Vec<u8>> {
        let q = message::question(query)?;
        let Ok(_permit) = self.in_flight.try_acquire() else {
            debug!(
                "--dns: {IN_FLIGHT} queries in flight; dropping one for {}",
                q.name
            );
            return None;
        };
        let tunnelled = self.targets.domains.is_empty()
            || self
                .targets
                .domains
                .iter()
                .any(|d| message::is_under(&q.name, d));
        if !tunnelled {
            let server = SocketAddr::new(self.targets.fallback?, 53);
            let r = tokio::time::timeout(QUERY_TIMEOUT, fallback(server, query, over_udp)).await;
            return match r {
                Ok(Ok(answer)) => Some(answer),
                Ok(Err(e)) => {
                    debug!("--dns: {server} for {}: {e}", q.name);
                    None
                }
                Err(_) => None,
            };
        }
        if let Some(hit) = self.cache().get(query, Instant::now()) {
            self.stats.from_cache.fetch_add(1, Ordering::Relaxed);
            self.stats.answered.fetch_add(1, Ordering::Relaxed);
            return Some(hit);
        }
        let r = tokio::time::timeout(QUERY_TIMEOUT, async {
            let mut ch = self
                .opener
                .open(&self.targets.server, None)
                .await
                .map_err(|e| e.to_string())?;
            exchange_tcp(&mut ch, query)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match r {
            Ok(Ok(answer)) => {
                self.cache().put(&answer, Instant::now());
                self.stats.answered.fetch_add(1, Ordering::Relaxed);
                Some(answer)
            }
            Ok(Err(e)) => {
                warn!("--dns: {} via {}: {e}", q.name, self.targets.server);
                None
            }
            Err(_) => {
                warn!(
                    "--dns: {} via {}: no answer within {QUERY_TIMEOUT:?}",
                    q.name, self.targets.server
                );
                None
            }
        }
    }
}

/// One DNS-over-TCP exchange: a length-prefixed query, a length-prefixed answer.
async fn exchange_tcp<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    query: &[u8],
) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed).await?;
    s.flush().await?;
    read_framed(s).await
}

async fn read_framed<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let n = s.read_u16().await?;
    let mut buf = vec![0; usize::from(n)];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The original resolver, from a marked socket so our own rules let it through.
async fn fallback(server: SocketAddr, query: &[u8], over_udp: bool) -> std::io::Result<Vec<u8>> {
    let domain = socket2::Domain::for_address(server);
    if over_udp {
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
        s.set_mark(MARK)?;
        s.set_nonblocking(true)?;
        let s = UdpSocket::from_std(s.into())?;
        s.connect(server).await?;
        s.send(query).await?;
        let mut buf = vec![0; 65535];
        loop {
            let n = s.recv(&mut buf).await?;
            if message::id(&buf[..n]) == message::id(query) {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    s.set_mark(MARK)?;
    s.set_nonblocking(true)?;
    let std: std::net::TcpStream = s.into();
    let mut tcp = tokio::net::TcpSocket::from_std_stream(std)
        .connect(server)
        .await?;
    exchange_tcp(&mut tcp, query).await
}

async fn serve_udp<O: Opener>(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared<O>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut buf = vec![0; 65535];
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let Ok((n, peer)) = received else { continue };
        let query = buf[..n].to_vec();
        let (socket, shared) = (socket.clone(), shared.clone());
        tracker.spawn(async move {
            let Some(mut answer) = shared.resolve(&query, true).await else {
                return;
            };
            if answer.len() > message::udp_limit(&query) {
                match message::truncated(&answer) {
                    Some(t) => answer = t,
                    None => return,
                }
            }
            let _ = socket.send_to(&answer, peer).await;
        });
    }
}

async fn serve_tcp_client<O: Opener>(mut stream: TcpStream, shared: Arc<Shared<O>>) {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Ok(Ok(q)) => q,
            _ => return,
        };
        let Some(answer) = shared.resolve(&query, false).await else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// The first `nameserver` of a resolv.conf.
pub fn first_nameserver(resolv_conf: &str) -> Option<IpAddr> {
    nameservers(resolv_conf).into_iter().next()
}

/// Every `nameserver` address of a resolv.conf (zone suffixes such as `%eth0` dropped).
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers() {
        let conf = "# x\nsearch example\nnameserver 10.0.2.53\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(
            nameservers(conf),
            vec![
                "10.0.2.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(first_nameserver("options ndots:1\n"), None);
    }
}
