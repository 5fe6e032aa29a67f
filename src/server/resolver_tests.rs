//! The resolver's budget against a name server that never answers (a UDP socket on
//! 127.0.0.1 that reads nothing): every lookup ends, the caps refuse at once, and no
//! thread is spent waiting.

use super::*;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, String>> + 'a>>;

/// A name server that never answers; the socket stays open so queries are not refused.
fn silent_server() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = socket.local_addr().expect("local addr");
    (socket, addr)
}

/// A resolver asking only `servers` (UDP), with `hosts` (hosts-file text) instead of
/// the system's files.
fn with_name_servers(servers: &[SocketAddr], hosts: &str) -> Resolver {
    let servers = servers
        .iter()
        .map(|s| {
            let mut ns = NameServerConfig::udp(s.ip());
            for c in &mut ns.connections {
                c.port = s.port();
            }
            ns
        })
        .collect();
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    );
    tune(builder.options_mut());
    let resolver = builder.build().map_err(|e| e.to_string());
    let mut parsed = Hosts::default();
    parsed
        .read_hosts_conf(hosts.as_bytes())
        .expect("hosts text");
    Resolver::with(Dns {
        resolver,
        hosts: parsed,
    })
}

fn limits(timeout_ms: u64, total: u32, per_user: u32) -> DnsLimits {
    DnsLimits {
        timeout: Duration::from_millis(timeout_ms),
        max_in_flight: total,
        max_in_flight_per_user: per_user,
    }
}

/// Polls `lookup` once, so it takes its slot and sends its queries; it must then wait.
async fn start(lookup: &mut Lookup<'_>) {
    let first = std::future::poll_fn(|cx| Poll::Ready(lookup.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "finished at once: {first:?}");
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .count()
}

#[tokio::test]
async fn a_silent_server_costs_at_most_the_timeout() {
    let (server, addr) = silent_server();
    let r = with_name_servers(&[addr], "");
    let started = Instant::now();
    let err = r
        .lookup(&limits(300, 4, 4), "alice", "stuck.example.")
        .await
        .expect_err("nobody answers");
    let took = started.elapsed();
    assert!(
        err.contains("resolving stuck.example. timed out after 300ms"),
        "{err}"
    );
    assert!(err.contains("limits.dns_timeout"), "{err}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The query did go out: the timeout, not a quick refusal, ended it.
    server.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    assert!(server.recv(&mut buf).is_ok(), "no query reached the server");
    // Its slot is free again.
    let one = limits(300, 1, 1);
    let mut again: Lookup = Box::pin(r.lookup(&one, "alice", "stuck.example."));
    start(&mut again).await;
}

#[tokio::test]
async fn over_the_caps_lookups_are_refused_at_once() {
    let (_server, addr) = silent_server();
    let r = with_name_servers(&[addr], "192.0.2.10 db.test\n2001:db8::10 db.test\n");
    let l = limits(30_000, 3, 2);
    let mut mallory: Vec<Lookup> = Vec::new();
    for _ in 0..2 {
        let mut f: Lookup = Box::pin(r.lookup(&l, "mallory", "stuck.example."));
        start(&mut f).await;
        mallory.push(f);
    }
    // Mallory's third is refused at once, not queued behind the two stuck ones.
    let started = Instant::now();
    let err = r
        .lookup(&l, "mallory", "other.example.")
        .await
        .expect_err("over mallory's share");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(
        err.contains("too many DNS lookups in flight for user mallory"),
        "{err}"
    );
    assert!(err.contains("max_dns_lookups_per_user = 2"), "{err}");
    // Another user is not held up: hosts-file names (and localhost) need no query and
    // count against nothing.
    let started = Instant::now();
    let mut ips = r.lookup(&l, "alice", "db.test").await.expect("hosts file");
    ips.sort();
    assert_eq!(
        ips,
        vec![
            "192.0.2.10".parse::<IpAddr>().unwrap(),
            "2001:db8::10".parse().unwrap()
        ]
    );
    assert_eq!(
        r.lookup(&l, "alice", "localhost").await.expect("localhost"),
        LOOPBACK.to_vec()
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    // Alice takes the last server-wide slot; then even a fresh user is refused.
    let mut alice: Lookup = Box::pin(r.lookup(&l, "alice", "stuck.example."));
    start(&mut alice).await;
    let err = r
        .lookup(&l, "bob", "stuck.example.")
        .await
        .expect_err("server full");
    assert!(
        err.contains("too many DNS lookups in flight on this server (limits.max_dns_lookups = 3)"),
        "{err}"
    );
    // A cancelled lookup (the channel went away) gives its slot back.
    mallory.pop();
    let mut bob: Lookup = Box::pin(r.lookup(&l, "bob", "stuck.example."));
    start(&mut bob).await;
    drop((mallory, alice, bob));
    let mut f: Lookup = Box::pin(r.lookup(&l, "mallory", "stuck.example."));
    start(&mut f).await;
}

#[tokio::test]
async fn stuck_lookups_hold_no_threads() {
    let (_server, addr) = silent_server();
    let r = with_name_servers(&[addr], "");
    let l = limits(30_000, 64, 64);
    let names: Vec<String> = (0..64).map(|i| format!("n{i}.example.")).collect();
    let before = threads();
    let mut stuck: Vec<Lookup> = Vec::new();
    for name in &names {
        let mut f: Lookup = Box::pin(r.lookup(&l, "mallory", name));
        start(&mut f).await;
        stuck.push(f);
    }
    // getaddrinfo would hold 64 blocking threads here; other tests of this binary may
    // start a few threads meanwhile.
    let after = threads();
    assert!(
        after < before + 16,
        "{before} threads before, {after} with 64 lookups stuck"
    );
}
