//! The cluster registry (src/server/cluster/etcd.rs) against a real etcd: several
//! `ClusterRegistry` instances in one process, each one a "node".

mod common;

use std::time::{Duration, Instant};

use common::etcd::Etcd;
use tokio_util::sync::CancellationToken;
use warren::server::cluster::etcd::{
    ClusterRegistry, EtcdSettings, Health, Member, NameRecord, PublishError,
};

const WAIT: Duration = Duration::from_secs(10);

fn settings(etcd: &Etcd, ttl: Duration) -> EtcdSettings {
    EtcdSettings {
        endpoints: vec![etcd.endpoint()],
        prefix: "/warren/".into(),
        lease_ttl: ttl,
        timeout: Duration::from_secs(1),
        user: None,
        password: None,
        ca: None,
        cert: None,
        key: None,
    }
}

fn rec(user: &str, node: &str, conn: u64) -> NameRecord {
    NameRecord {
        user: user.into(),
        key_fp: format!("SHA256:{user}"),
        node: node.into(),
        conn,
        since: "2026-12-03T12:00:00Z".into(),
    }
}

struct Node {
    reg: ClusterRegistry,
    cancel: CancellationToken,
}

fn node(s: EtcdSettings, name: &str) -> Node {
    let cancel = CancellationToken::new();
    let me = Member {
        node: name.into(),
        link: format!("127.0.0.1:{}", 7000 + name.len()),
        started: "2026-12-03T12:00:00Z".into(),
    };
    let reg = ClusterRegistry::start(s, me, cancel.clone()).expect("start registry");
    Node { reg, cancel }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Polls a condition on the local cache (no etcd round trip) until it holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn healthy(n: &Node) {
    until("registry healthy", || n.reg.health() == Health::Ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_taken_takeover_withdraw() {
    let etcd = Etcd::start();
    // Long TTL: a name that vanishes quickly below was withdrawn or revoked, not expired.
    let s = settings(&etcd, Duration::from_secs(30));
    let (n1, n2) = (node(s.clone(), "n1"), node(s, "n2"));
    healthy(&n1).await;
    healthy(&n2).await;
    // Each node learns of the other through its own watch: wait for both views.
    until("both members, on both nodes", || {
        n1.reg.members().len() == 2 && n2.reg.members().len() == 2
    })
    .await;
    assert_eq!(n2.reg.member("n1").unwrap().link, "127.0.0.1:7002");

    let a1 = rec("alice", "n1", 1);
    assert_eq!(n1.reg.publish("web", 80, a1.clone()).await, Ok(None));
    until("n2 sees alice's name", || {
        n2.reg.lookup("web", 80) == Some(a1.clone())
    })
    .await;
    assert_eq!(n2.reg.lookup("web", 81), None);

    // Another user cannot take it, on any node.
    let m = rec("mallory", "n2", 9);
    assert_eq!(
        n2.reg.publish("web", 80, m.clone()).await,
        Err(PublishError::Taken)
    );
    assert_eq!(n1.reg.publish("web", 80, m).await, Err(PublishError::Taken));

    // Names that look like paths or keys stay names.
    let odd = rec("alice", "n1", 3);
    for name in ["../../members/n1", "a:1", "web/80", "%2F"] {
        n1.reg.publish(name, 1, odd.clone()).await.unwrap();
    }
    until("odd names", || n2.reg.names().len() == 5).await;
    assert_eq!(
        n2.reg.members().len(),
        2,
        "a name must not look like a member"
    );
    assert_eq!(n2.reg.lookup("../../members/n1", 1), Some(odd.clone()));

    // Alice reconnects to n2: she takes her name over; n1 is told.
    let mut lost = n1.reg.lost();
    let a2 = rec("alice", "n2", 2);
    assert_eq!(
        n2.reg.publish("web", 80, a2.clone()).await,
        Ok(Some(a1.clone()))
    );
    let got = tokio::time::timeout(WAIT, lost.recv())
        .await
        .expect("lost in time")
        .unwrap();
    assert_eq!(got, ("web".to_string(), 80, a1.clone()));
    until("n1 sees the takeover", || {
        n1.reg.lookup("web", 80) == Some(a2.clone())
    })
    .await;

    // n1's old session ends: its withdraw must not delete the name that now lives on n2.
    n1.reg.withdraw("web", 80, &a1).await;
    n1.reg.publish("sync", 1, odd.clone()).await.unwrap();
    until("n2 sees the sync name", || {
        n2.reg.lookup("sync", 1).is_some()
    })
    .await;
    assert_eq!(n2.reg.lookup("web", 80), Some(a2.clone()));

    n2.reg.withdraw("web", 80, &a2).await;
    until("withdrawn", || n1.reg.lookup("web", 80).is_none()).await;

    // A clean stop revokes the lease: n1's names and member key go at once, not in 30 s.
    n1.cancel.cancel();
    let took = until("n1's names gone after a clean stop", || {
        n2.reg.names().is_empty()
    })
    .await;
    until("n1's member key gone", || n2.reg.member("n1").is_none()).await;
    println!("clean stop: names gone after {took:?}");
    assert!(took < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_loses_its_names_within_the_lease_ttl() {
    let etcd = Etcd::start();
    let ttl = Duration::from_secs(2);
    let (n1, n2) = (
        node(settings(&etcd, ttl), "n1"),
        node(settings(&etcd, ttl), "n2"),
    );
    healthy(&n1).await;
    healthy(&n2).await;
    n1.reg
        .publish("dev", 22, rec("alice", "n1", 1))
        .await
        .unwrap();
    until("n2 sees it", || n2.reg.lookup("dev", 22).is_some()).await;

    n1.reg.halt_without_revoke();
    let took = until("the name expires", || n2.reg.lookup("dev", 22).is_none()).await;
    println!("SIGKILL-like stop: name gone after {took:?} (lease TTL {ttl:?})");
    // etcd checks expiry every 500 ms; a bit over the TTL is expected, never much more.
    assert!(
        took > Duration::from_millis(500),
        "gone too early: revoked? {took:?}"
    );
    assert!(took < ttl + Duration::from_secs(2), "{took:?}");
    assert!(n2.reg.member("n1").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_fails_fast_and_heals() {
    let etcd = Etcd::start();
    let s = settings(&etcd, Duration::from_secs(2));
    let (n1, n2) = (node(s.clone(), "n1"), node(s.clone(), "n2"));
    healthy(&n1).await;
    healthy(&n2).await;
    let kept = rec("alice", "n1", 1);
    n1.reg.publish("kept", 1, kept.clone()).await.unwrap();
    until("n2 sees kept", || n2.reg.lookup("kept", 1).is_some()).await;

    etcd.stop();
    until("n1 notices the outage", || n1.reg.health() != Health::Ok).await;
    let Health::Unavailable { why, .. } = n1.reg.health() else {
        unreachable!()
    };
    println!("health during the outage: {why}");
    assert!(!why.is_empty());
    let t0 = Instant::now();
    let r = n1.reg.publish("new", 1, rec("bob", "n1", 2)).await;
    let took = t0.elapsed();
    println!("publish during the outage: {r:?} after {took:?}");
    assert!(matches!(r, Err(PublishError::Unavailable(_))), "{r:?}");
    assert!(took <= s.timeout + Duration::from_millis(200), "{took:?}");
    // Reads keep working from the cache.
    assert_eq!(n2.reg.lookup("kept", 1), Some(kept.clone()));
    // Served locally meanwhile; published once etcd is back.
    let later = rec("carol", "n1", 3);
    n1.reg.publish_later("later", 1, later.clone());

    etcd.start_again();
    healthy(&n1).await;
    healthy(&n2).await;
    assert_eq!(
        n1.reg.publish("new", 1, rec("bob", "n1", 2)).await,
        Ok(None)
    );
    until("n2 sees everything", || n2.reg.names().len() == 3).await;
    assert_eq!(n2.reg.lookup("later", 1), Some(later));
    assert_eq!(n2.reg.lookup("kept", 1), Some(kept));
    // n1's cache learns of its own writes from the same watch, which may be a step behind
    // n2's (CI once compared them in between).
    until("n1 sees everything", || n1.reg.names().len() == 3).await;
    // No stale or duplicate entries after the re-read.
    assert_eq!(n1.reg.names(), n2.reg.names());
    assert_eq!(n2.reg.members().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_names() {
    let etcd = Etcd::start();
    let s = settings(&etcd, Duration::from_secs(10));
    let (n1, n2) = (node(s.clone(), "n1"), node(s, "n2"));
    healthy(&n1).await;
    healthy(&n2).await;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..20u64 {
        let reg = n1.reg.clone();
        tasks.spawn(async move {
            for i in 0..50u64 {
                let r = rec("fleet", "n1", t * 50 + i);
                reg.publish(&format!("dev{}", t * 50 + i), 22, r)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let published = t0.elapsed();
    until("n2 sees 1000 names", || n2.reg.names().len() == 1000).await;
    println!(
        "1000 names: published in {published:?}, all visible on the other node after {:?}",
        t0.elapsed()
    );
    assert_eq!(n2.reg.lookup("dev999", 22).map(|r| r.conn), Some(999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_user_and_password() {
    let etcd = Etcd::start();
    // Set up as an operator would with etcdctl: root, a "warren" user limited to /warren/.
    let mut admin = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.user_add("warren", "s3cret", None).await.unwrap();
    admin.role_add("warren").await.unwrap();
    let perm = etcd_client::Permission::read_write("/warren/").with_prefix();
    admin.role_grant_permission("warren", perm).await.unwrap();
    admin.user_grant_role("warren", "warren").await.unwrap();
    admin.auth_enable().await.unwrap();

    let mut s = settings(&etcd, Duration::from_secs(5));
    s.user = Some("warren".into());
    s.password = Some("s3cret".into());
    let good = node(s.clone(), "good");
    healthy(&good).await;
    good.reg
        .publish("web", 80, rec("alice", "good", 1))
        .await
        .unwrap();
    until("own cache", || good.reg.lookup("web", 80).is_some()).await;

    s.password = Some("wrong".into());
    let bad = node(s, "bad");
    until(
        "a reason",
        || matches!(bad.reg.health(), Health::Unavailable { ref why, .. } if why.contains("auth")),
    )
    .await;
    let Health::Unavailable { why, .. } = bad.reg.health() else {
        unreachable!()
    };
    println!("wrong password: {why}");
    assert!(
        !why.contains("wrong"),
        "the password leaked into the reason: {why}"
    );
    assert!(matches!(
        bad.reg.publish("x", 1, rec("bob", "bad", 1)).await,
        Err(PublishError::Unavailable(_))
    ));
}

/// The lease is gone while the node lives (as after a partition longer than the TTL; here
/// revoked by an operator): the node takes a new lease and re-publishes what it still owns;
/// a name someone else took meanwhile is reported lost, not taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_is_replaced_and_names_republished() {
    let etcd = Etcd::start();
    let s = settings(&etcd, Duration::from_secs(3));
    let (n1, n2) = (node(s.clone(), "n1"), node(s, "n2"));
    healthy(&n1).await;
    healthy(&n2).await;
    let (x, y) = (rec("alice", "n1", 1), rec("alice", "n1", 2));
    n1.reg.publish("x", 1, x.clone()).await.unwrap();
    n1.reg.publish("y", 1, y.clone()).await.unwrap();
    until("n2 sees both", || n2.reg.names().len() == 2).await;
    let mut lost = n1.reg.lost();

    let mut admin = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let leases = admin.leases().await.unwrap();
    let mut revoked = 0;
    for l in leases.leases() {
        let ttl = admin
            .lease_time_to_live(
                l.id(),
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .unwrap();
        if ttl.keys().iter().any(|k| k.ends_with(b"names/x:1")) {
            admin.lease_revoke(l.id()).await.unwrap();
            revoked += 1;
        }
    }
    assert_eq!(revoked, 1);
    // Someone else's record lands on x before n1 notices (its keepalive runs every TTL/3).
    let m = rec("mallory", "n9", 9);
    let value = serde_json::to_vec(&m).unwrap();
    admin.put("/warren/names/x:1", value, None).await.unwrap();

    let got = tokio::time::timeout(WAIT, lost.recv())
        .await
        .expect("lost in time")
        .unwrap();
    assert_eq!(got, ("x".to_string(), 1, x));
    until("y went with the revoked lease", || {
        n2.reg.lookup("y", 1).is_none()
    })
    .await;
    let took = until("y is back under a new lease", || {
        n2.reg.lookup("y", 1) == Some(y.clone()) && n2.reg.member("n1").is_some()
    })
    .await;
    println!("lease revoked: y re-published after {took:?}");
    assert_eq!(n2.reg.lookup("x", 1), Some(m));
    healthy(&n1).await;
    let r = n1.reg.publish("z", 1, rec("alice", "n1", 3)).await;
    assert_eq!(r, Ok(None));
}

/// Runs openssl with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_pki(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca: Vec<&str> = ["req", "-x509"]
        .into_iter()
        .chain(ec)
        .chain([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ])
        .collect();
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext).unwrap();
        let req: Vec<&str> = ["req"]
            .into_iter()
            .chain(ec)
            .chain(["-keyout", &key, "-out", &csr, "-subj", "/CN=test"])
            .collect();
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &extfile,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    make_pki(dir);
    let etcd = Etcd::start_tls(common::etcd::Tls {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: dir.join("ca.pem"),
    });
    let mut s = settings(&etcd, Duration::from_secs(5));
    s.ca = Some(dir.join("ca.pem"));
    s.cert = Some(dir.join("client.pem"));
    s.key = Some(dir.join("client.key"));
    let n1 = node(s.clone(), "n1");
    healthy(&n1).await;
    n1.reg
        .publish("web", 443, rec("alice", "n1", 1))
        .await
        .unwrap();
    until("own cache", || n1.reg.lookup("web", 443).is_some()).await;

    // Without a client certificate etcd refuses the node.
    s.cert = None;
    s.key = None;
    let anon = node(s, "anon");
    until("a reason", || {
        matches!(anon.reg.health(), Health::Unavailable { ref why, .. } if why.to_lowercase().contains("certificate"))
    })
    .await;
    let Health::Unavailable { why, .. } = anon.reg.health() else {
        unreachable!()
    };
    println!("TLS without a client certificate: {why}");
}
