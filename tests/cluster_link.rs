//! The node-to-node link of cluster mode (issue 18): two in-process endpoints on loopback
//! with node keys made by ssh-keygen, talking warren's own engine; one stock OpenSSH `ssh`
//! knocking on the link port with a key of its own.
//!
//! Waits are on real signals (a channel's data or EOF, a link's state, a task ending, a port
//! binding again) with deadlines; durations measured are assertions.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pattern_bytes, sha256_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warren::server::cluster::link::{
    LinkState, Links, NodeKeys, PendingReach, ReachRequest, serve,
};
use warren_ssh::proto::reason;
use warren_ssh::ssh_key::{PrivateKey, PublicKey};

const DEADLINE: Duration = Duration::from_secs(20);

fn node_key(dir: &Path, name: &str) -> PrivateKey {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success());
    PrivateKey::read_openssh_file(&path).expect("read node key")
}

/// Node keys for a small cluster: `node1` serves, `node2` dials; each trusts the other.
struct Cluster {
    dir: tempfile::TempDir,
    k1: PrivateKey,
    k2: PrivateKey,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let k1 = node_key(dir.path(), "node1");
        let k2 = node_key(dir.path(), "node2");
        Cluster { dir, k1, k2 }
    }

    fn keys(&self, node: &str, key: &PrivateKey, peers: &[(&str, &PrivateKey)]) -> Arc<NodeKeys> {
        Arc::new(NodeKeys {
            node: node.into(),
            key: key.clone(),
            peers: peers
                .iter()
                .map(|(n, k)| (n.to_string(), k.public_key().clone()))
                .collect::<HashMap<String, PublicKey>>(),
        })
    }

    fn server_keys(&self) -> Arc<NodeKeys> {
        self.keys("node1", &self.k1, &[("node2", &self.k2)])
    }

    fn dialer(&self) -> (Links, CancellationToken) {
        let cancel = CancellationToken::new();
        let keys = self.keys("node2", &self.k2, &[("node1", &self.k1)]);
        (Links::new(keys, cancel.clone()), cancel)
    }
}

type OnReach = Arc<dyn Fn(ReachRequest, PendingReach) + Send + Sync>;

/// Accepts every reach and echoes its data, passing the dialer's EOF back.
fn echo() -> OnReach {
    Arc::new(|_req, pending: PendingReach| {
        let stream = pending.accept();
        tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
            let _ = wr.shutdown().await;
        });
    })
}

struct Server {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_server(keys: Arc<NodeKeys>, on_reach: OnReach, at: Option<SocketAddr>) -> Server {
    let listener = TcpListener::bind(at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
        .await
        .expect("bind link port");
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serve(listener, keys, on_reach, cancel.clone()));
    Server { addr, cancel, task }
}

fn request(user: &str) -> ReachRequest {
    ReachRequest {
        name: "printer".into(),
        port: 631,
        user: user.into(),
        from_node: "node2".into(),
        correlation: format!("corr-{user}"),
        originator: "127.0.0.1".into(),
        originator_port: 40_000,
    }
}

/// Sends `data` through an echoing channel and returns what came back; the writer's
/// shutdown must come back as EOF or this never returns.
async fn round_trip(links: &Links, addr: SocketAddr, user: &str, data: Arc<Vec<u8>>) -> Vec<u8> {
    let stream = links
        .open("node1", &addr.to_string(), request(user))
        .await
        .expect("reach opens");
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
        wr
    });
    let mut back = Vec::new();
    tokio::time::timeout(DEADLINE, rd.read_to_end(&mut back))
        .await
        .expect("echo and EOF within the deadline")
        .unwrap();
    drop(writer.await.unwrap());
    back
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reach_carries_16_mib_both_ways_with_eof_and_many_channels_share_one_session() {
    let c = Cluster::new();
    let seen: Arc<Mutex<Vec<ReachRequest>>> = Arc::default();
    let on_reach: OnReach = {
        let seen = seen.clone();
        let echo = echo();
        Arc::new(move |req, p| {
            seen.lock().unwrap().push(req.clone());
            echo(req, p)
        })
    };
    let server = start_server(c.server_keys(), on_reach, None).await;
    let (links, _cancel) = c.dialer();

    let data = Arc::new(pattern_bytes(16 << 20, 18));
    let back = round_trip(&links, server.addr, "bob", data.clone()).await;
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    assert_eq!(
        seen.lock().unwrap()[0],
        request("bob"),
        "the request arrives whole"
    );

    // Eight at once over the same session: no second dial.
    let small = Arc::new(pattern_bytes(256 << 10, 7));
    let links = Arc::new(links);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (links, small) = (links.clone(), small.clone());
            tokio::spawn(async move {
                round_trip(&links, server.addr, &format!("user{i}"), small).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(sha256_hex(&t.await.unwrap()), sha256_hex(&small));
    }
    assert_eq!(links.dials(), 1, "one session carries every reach");
    assert_eq!(seen.lock().unwrap().len(), 9);
    let status = links.status();
    assert_eq!(status.len(), 1);
    assert!(
        matches!(status[0].state, LinkState::Connected { .. }) && status[0].node == "node1",
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_with_an_unlisted_key_is_refused() {
    let c = Cluster::new();
    let server = start_server(c.server_keys(), echo(), None).await;
    let stranger = node_key(c.dir.path(), "node3");
    for (name, key) in [("node3", &stranger), ("node2", &stranger)] {
        // It trusts node1 rightly; node1 does not list this key (under either name).
        let keys = c.keys(name, key, &[("node1", &c.k1)]);
        let links = Links::new(keys, CancellationToken::new());
        let err = links
            .open("node1", &server.addr.to_string(), request("bob"))
            .await
            .err()
            .expect("refused");
        assert!(
            err.contains("refused our login") && err.contains(name),
            "{name}: {err}"
        );
    }
    // Failing again and again from one source: throttled like warrend's logins, dropped
    // before any SSH once over the limit (fresh dialers, so no backoff hides it).
    let keys = c.keys("node3", &stranger, &[("node1", &c.k1)]);
    let mut refused_at_login = 2;
    let throttled = loop {
        let links = Links::new(keys.clone(), CancellationToken::new());
        let err = links
            .open("node1", &server.addr.to_string(), request("bob"))
            .await
            .err()
            .expect("refused");
        if !err.contains("refused our login") {
            break err;
        }
        refused_at_login += 1;
        assert!(refused_at_login <= 40, "never throttled");
    };
    assert!(
        refused_at_login >= 10,
        "throttled after {refused_at_login}: {throttled}"
    );
    assert!(
        throttled.contains("is unreachable: connection"),
        "{throttled}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_host_key_is_not_the_listed_one_is_refused_by_the_dialer() {
    let c = Cluster::new();
    let reached = Arc::new(AtomicUsize::new(0));
    let on_reach: OnReach = {
        let reached = reached.clone();
        Arc::new(move |_, _| {
            reached.fetch_add(1, Ordering::SeqCst);
        })
    };
    // An impostor at node1's address: it knows node2's key, but its own key is not node1's.
    let impostor = node_key(c.dir.path(), "impostor");
    let server = start_server(
        c.keys("node1", &impostor, &[("node2", &c.k2)]),
        on_reach,
        None,
    )
    .await;
    let (links, _cancel) = c.dialer();
    let err = links
        .open("node1", &server.addr.to_string(), request("bob"))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("host key") && err.contains("node1"), "{err}");
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_from_node_and_rejected_reaches_return_the_reason() {
    let c = Cluster::new();
    let reached = Arc::new(AtomicUsize::new(0));
    let on_reach: OnReach = {
        let reached = reached.clone();
        Arc::new(move |req: ReachRequest, p: PendingReach| {
            reached.fetch_add(1, Ordering::SeqCst);
            p.reject(
                reason::ADMINISTRATIVELY_PROHIBITED,
                &format!("no published name {}", req.name),
            );
        })
    };
    let server = start_server(c.server_keys(), on_reach, None).await;
    let (links, _cancel) = c.dialer();
    let addr = server.addr.to_string();

    let spoofed = ReachRequest {
        from_node: "node3".into(),
        ..request("bob")
    };
    let err = links
        .open("node1", &addr, spoofed)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("not the authenticated node node2"), "{err}");
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "never shown to the callback"
    );

    let err = links
        .open("node1", &addr, request("bob"))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("no published name printer"), "{err}");
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    assert_eq!(links.dials(), 1, "refusals do not break the link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_down_fails_fast_backs_off_and_comes_back_and_cancel_ends_everything() {
    let c = Cluster::new();
    let server = start_server(c.server_keys(), echo(), None).await;
    let at = server.addr;
    let addr = at.to_string();
    let (links, links_cancel) = c.dialer();
    let one = Arc::new(b"ping".to_vec());
    assert_eq!(round_trip(&links, at, "bob", one.clone()).await, *one);

    // Cancel ends the server's tasks and releases its port; the link sees it go.
    server.cancel.cancel();
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("serve returns after cancel")
        .unwrap();
    drop(std::net::TcpListener::bind(at).expect("the link port is free again"));
    wait_until("the link to notice node1 is gone", || {
        !matches!(links.status()[0].state, LinkState::Connected { .. })
    })
    .await;

    let t = Instant::now();
    let err = links
        .open("node1", &addr, request("bob"))
        .await
        .err()
        .expect("down");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        err.contains(&format!(
            "node node1 ({addr}) is unreachable: connection refused; next try in"
        )),
        "{err}"
    );
    let dials = links.dials();
    let t = Instant::now();
    let err = links
        .open("node1", &addr, request("bob"))
        .await
        .err()
        .expect("backoff");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert!(err.contains("connection refused; next try in"), "{err}");
    assert_eq!(links.dials(), dials, "no dial within the backoff");
    assert!(
        matches!(&links.status()[0].state, LinkState::Unreachable { why, .. } if why.contains("connection refused")),
        "{:?}",
        links.status()
    );

    // Back on the same port: a reach after the backoff works again.
    let server = start_server(c.server_keys(), echo(), Some(at)).await;
    let deadline = Instant::now() + DEADLINE;
    let stream = loop {
        match links.open("node1", &addr, request("bob")).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "never came back: {e}");
                assert!(e.contains("next try in"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop(stream);
    assert!(links.dials() <= dials + 2, "{} dials", links.dials());

    // The dialer's cancel ends its link; nothing new is dialed after it.
    links_cancel.cancel();
    wait_until("the link to end on cancel", || {
        !matches!(links.status()[0].state, LinkState::Connected { .. })
    })
    .await;
    let err = links
        .open("node1", &addr, request("bob"))
        .await
        .err()
        .expect("cancelled");
    assert!(err.contains("shutting down"), "{err}");
    server.cancel.cancel();
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("serve returns after cancel")
        .unwrap();
}

/// A stock OpenSSH client with a key of its own, as a stranger or under a node's name: no
/// login, whatever it tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_ssh_with_a_random_key_is_refused() {
    let c = Cluster::new();
    let server = start_server(c.server_keys(), echo(), None).await;
    let random = c.dir.path().join("random");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-f"])
        .arg(&random)
        .status()
        .unwrap();
    assert!(st.success());
    for user in ["node2", "mallory"] {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(&random)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=10",
                "-p",
            ])
            .arg(server.addr.port().to_string())
            .arg(format!("{user}@127.0.0.1"))
            .arg("true")
            .kill_on_drop(true);
        let out = tokio::time::timeout(DEADLINE, cmd.output())
            .await
            .expect("ssh ends")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{user}: {stderr}");
        assert!(
            stderr.contains("Permission denied (publickey)"),
            "{user}: {stderr}"
        );
    }
}

/// A peer node logged in with its own key gets reach channels and nothing else: no session,
/// no direct-tcpip, no remote forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_peer_gets_nothing_but_reach_channels() {
    use warren_ssh::driver::{self, AuthOutcome, Incoming};
    use warren_ssh::proto::{ChannelKind, Config, GlobalRequest, Role};
    let c = Cluster::new();
    let server = start_server(c.server_keys(), echo(), None).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (handle, mut events, run) = driver::start(stream, Arc::new(Config::new(Role::Client)));
    tokio::spawn(run);
    assert!(matches!(events.recv().await, Some(Incoming::HostKey(_))));
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    assert_eq!(
        handle.auth_publickey("node2", &c.k2).await.unwrap(),
        AuthOutcome::Success
    );
    for kind in [
        ChannelKind::Session,
        ChannelKind::DirectTcpip {
            host: "127.0.0.1".into(),
            port: 22,
            originator: "127.0.0.1".into(),
            originator_port: 1,
        },
        ChannelKind::Extension {
            kind: "other@warren".into(),
            data: vec![],
        },
    ] {
        let err = handle.open(kind.clone()).await.err().expect("refused");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{kind:?}: {err}"
        );
    }
    let (ok, _) = handle
        .global_request(GlobalRequest::TcpipForward {
            address: "127.0.0.1".into(),
            port: 0,
        })
        .await
        .unwrap();
    assert!(!ok, "remote forwards are refused");
    // Still a working link after all that.
    let mut reach = handle
        .open(ChannelKind::Extension {
            kind: "reach@warren".into(),
            data: request("bob").encode(),
        })
        .await
        .expect("a reach opens");
    reach.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    tokio::time::timeout(DEADLINE, reach.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hi");
}
