//! Cluster mode (issue 18): three warrend nodes and one real etcd on loopback, reached
//! with stock OpenSSH and warren. A name published on one node is reached from the
//! others over the node links, with both nodes auditing one correlation id; the
//! single node's ownership rules hold cluster-wide; a dead node's names vanish within
//! the lease TTL while its publisher moves to another node behind a load balancer; and
//! an etcd outage stops new publishes (with the reason) but nothing that runs.

mod common;

use common::etcd::Etcd;
use common::warrend::{SshClient, Warrend, is, s, toml_str, user};
use common::{
    EchoServer, IO_TIMEOUT, Proc, READY_TIMEOUT, Sshd, free_port, pattern_bytes, sha256_hex,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Short, so a dead node's names are gone quickly; the assertion leaves slack on top.
const LEASE_TTL_SECS: u64 = 2;

/// Keys and ports of a cluster, fixed before any node starts (every node lists all).
struct Plan {
    dir: TempDir,
    ids: Vec<String>,
    /// Link ports, picked free but bound only when the node starts: a port another
    /// process took meanwhile is replaced by [`Plan::start`].
    links: Vec<std::cell::Cell<u16>>,
    /// One host key shared by every node: clients behind a load balancer must see the
    /// same host whichever node answers (as real deployments share it, or use host
    /// certificates).
    host_key: PathBuf,
    prefix: String,
    /// `[cluster] when_etcd_down`.
    when_etcd_down: &'static str,
}

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", ""])
        .arg("-f")
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("read the public key")
        .trim()
        .to_string()
}

impl Plan {
    fn new(n: usize) -> Plan {
        let dir = tempfile::Builder::new()
            .prefix("warren-cluster-")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("shared_host_key");
        keygen(&host_key);
        Plan {
            ids: (1..=n).map(|i| format!("n{i}")).collect(),
            links: (0..n).map(|_| free_port().into()).collect(),
            host_key,
            prefix: format!("/warren-test-{}/", std::process::id()),
            when_etcd_down: "refuse",
            dir,
        }
    }

    fn node_key(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}_key"))
    }

    /// `[cluster]` for node `i`.
    fn section(&self, i: usize, etcd: &Etcd, publics: &[String]) -> String {
        let mut nodes = String::new();
        for (id, line) in self.ids.iter().zip(publics) {
            nodes.push_str(&format!("{id} = \"{line}\"\n"));
        }
        format!(
            "\n[cluster]\nnode = \"{id}\"\nadvertise = \"127.0.0.1:{link}\"\nkey = {key}\n\
             when_etcd_down = \"{down}\"\n\
             [cluster.nodes]\n{nodes}\n[cluster.etcd]\nendpoints = [\"{ep}\"]\n\
             prefix = \"{prefix}\"\nlease_ttl = \"{LEASE_TTL_SECS}s\"\ntimeout = \"1s\"\n",
            id = self.ids[i],
            link = self.links[i].get(),
            key = toml_str(&self.node_key(&self.ids[i])),
            ep = etcd.endpoint(),
            prefix = self.prefix,
            down = self.when_etcd_down,
        )
    }

    /// Starts every node with the same `users` sections.
    fn start(&self, etcd: &Etcd, users: &str) -> Vec<Warrend> {
        let publics: Vec<String> = self
            .ids
            .iter()
            .map(|id| keygen(&self.node_key(id)))
            .collect();
        (0..self.ids.len())
            .map(|i| self.start_node(i, etcd, users, &publics))
            .collect()
    }

    /// Starts node `i` once its link listener is bound. The link port was free when the
    /// plan picked it, but an outgoing connection of a parallel test may take it before
    /// the node binds it (warrend then exits 3): pick another and start again.
    fn start_node(&self, i: usize, etcd: &Etcd, users: &str, publics: &[String]) -> Warrend {
        let host_keys = format!("[{}]", toml_str(&self.host_key));
        for _ in 0..5 {
            let config = format!("{users}{}", self.section(i, etcd, publics));
            let w = Warrend::start_with_server(&config, &[], &[("host_keys", &host_keys)]);
            match w
                .proc()
                .wait_for_stderr(|l| l.contains("warrend: cluster node "), READY_TIMEOUT)
            {
                Ok(_) => return w,
                Err(report) if report.contains("cannot listen for cluster links") => {
                    eprintln!("link port {} was taken; another", self.links[i].get());
                    self.links[i].set(free_port());
                }
                Err(report) => panic!("node {} did not start:\n{report}", self.ids[i]),
            }
        }
        panic!("node {}: no free link port in 5 tries", self.ids[i]);
    }
}

fn ctl_json(w: &Warrend, args: &[&str]) -> Value {
    let out = Command::new(common::warrend::warrend_bin())
        .env_remove("RUNTIME_DIRECTORY")
        .arg("ctl")
        .arg("-f")
        .arg(w.config_path())
        .args(args)
        .arg("--json")
        .output()
        .expect("run warrend ctl");
    assert!(
        out.status.success(),
        "warrend ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl --json prints JSON")
}

/// The node that serves `name:port` according to `w`'s copy of etcd, if any.
fn served_by(w: &Warrend, name: &str, port: u64) -> Option<String> {
    let names = ctl_json(w, &["names"]);
    names["names"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name && n["port"] == port)
        .and_then(|n| n["node"].as_str().map(str::to_string))
}

/// Waits until `w` sees `name:port` served by `node` (or by nobody, for `None`).
fn wait_served_by(w: &Warrend, name: &str, port: u64, node: Option<&str>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = served_by(w, name, port);
        if now.as_deref() == node {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}:{port}: expected {node:?}, still {now:?}\n{}",
            w.proc().report("warrend")
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `ssh -N -R name:port:127.0.0.1:target` as `login` via node `w`, once confirmed.
fn publish(w: &Warrend, c: &SshClient, login: &str, name: &str, port: u16, target: u16) -> Proc {
    let mut cmd = c.ssh_warrend(w);
    cmd.args(["-v", "-N", "-R"])
        .arg(format!("{name}:{port}:127.0.0.1:{target}"))
        .arg(SshClient::dest(login));
    let ssh = Proc::spawn(cmd);
    ssh.wait_for_stderr(
        |l| {
            l.contains(&format!(
                "remote forward success for: listen {name}:{port},"
            ))
        },
        READY_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{login} could not publish {name}:{port}:\n{e}"));
    ssh
}

/// Sends `data` through `addr` (an echo behind it) and checks every byte came back.
fn echo_hash(addr: SocketAddr, data: &[u8]) {
    let mut tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = tcp.try_clone().unwrap();
    let n = data.len();
    let got = thread::spawn(move || {
        let mut got = Vec::with_capacity(n);
        reader.read_to_end(&mut got).map(|_| got)
    });
    tcp.write_all(data).unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    let got = got.join().unwrap().expect("read the echo");
    assert_eq!(got.len(), data.len(), "bytes back");
    assert_eq!(sha256_hex(&got), sha256_hex(data), "echo hash");
}

/// True when a connection through `addr` is closed without an echo (a refused channel).
fn refused(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr) else {
        return true;
    };
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = tcp.write_all(b"hello");
    let mut buf = [0u8; 16];
    !matches!(tcp.read(&mut buf), Ok(n) if n > 0)
}

fn trust_nodes(c: &SshClient, nodes: &[&Warrend]) {
    for w in nodes {
        c.trust_warrend(w);
    }
}

#[test]
fn a_name_published_on_one_node_is_reached_from_the_others_and_owned_cluster_wide() {
    let etcd = Etcd::start();
    let alice = SshClient::new();
    let bob = SshClient::new();
    let carol = SshClient::new();
    let mallory = SshClient::new();
    let echo = EchoServer::start();
    let lan = Sshd::start();
    lan.authorize(&bob.key.public_line);
    bob.trust(&format!("alice-box {}", lan.host_public_keys()[0]));
    let users = format!(
        "{}{}{}{}",
        user(
            "alice",
            &[&alice],
            "publish = [\"alice-svc:80\", \"alice-box:22\"]"
        ),
        user(
            "bob",
            &[&bob],
            "reach = [\"alice-svc:80\", \"alice-box:22\"]"
        ),
        user("carol", &[&carol], ""),
        user("mallory", &[&mallory], "publish = [\"alice-svc:80\"]"),
    );
    let plan = Plan::new(3);
    let nodes = plan.start(&etcd, &users);
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    for c in [&alice, &bob, &carol, &mallory] {
        trust_nodes(c, &[n1, n2, n3]);
    }

    // Every node lists every live member (each joins etcd on its own, in the background).
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let status = ctl_json(n2, &["cluster"]);
        let ids: Vec<String> = status["cluster"]["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["node"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if ids == ["n1", "n2", "n3"] {
            assert_eq!(status["cluster"]["etcd"], "ok", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "members: {status}");
        thread::sleep(Duration::from_millis(50));
    }
    let _svc = publish(n1, &alice, "alice", "alice-svc", 80, echo.port());
    let _box = publish(n1, &alice, "alice", "alice-box", 22, lan.port());
    for w in [n2, n3] {
        wait_served_by(w, "alice-svc", 80, Some("n1"), READY_TIMEOUT);
        wait_served_by(w, "alice-box", 22, Some("n1"), READY_TIMEOUT);
    }

    // bob, logged in to node 2, reaches the name node 1 serves: 16 MiB both ways.
    let (_fwd, addrs) = bob.local_forwards(n2, "bob", &[Some("alice-svc:80")]);
    let data = pattern_bytes(16 << 20, 18);
    echo_hash(addrs[0], &data);
    let here = n2.wait_audit("bob's reach on node 2", |v| {
        is(
            v,
            "channel_close",
            &[("kind", "rendezvous-reach"), ("user", "bob")],
        )
    });
    assert_eq!(here["node"], "n2", "{here}");
    assert_eq!(here["to_node"], "n1", "{here}");
    assert_eq!(here["bytes_up"], 16u64 << 20, "{here}");
    let correlation = s(&here, "correlation").to_string();
    let open = n2.wait_audit("bob's allowed reach", |v| {
        is(
            v,
            "channel_open",
            &[("kind", "rendezvous-reach"), ("correlation", &correlation)],
        )
    });
    assert_eq!(s(&open, "rule"), "users.bob.reach[0]", "{open}");
    assert_eq!(open["resolved"], serde_json::json!(["rendezvous:alice@n1"]));
    // Node 1 audits the same connection, on the publisher's connection, with the id.
    let there = n1.wait_audit("the reach on node 1", |v| {
        is(
            v,
            "channel_close",
            &[("kind", "rendezvous-reach"), ("correlation", &correlation)],
        )
    });
    assert_eq!(there["node"], "n1", "{there}");
    assert_eq!(there["from_node"], "n2", "{there}");
    assert_eq!(there["user"], "bob", "{there}");
    assert_eq!(there["bytes_down"], 16u64 << 20, "{there}");

    // And through node 3 with -J to the sshd alice publishes.
    let mut cmd = bob.ssh();
    cmd.arg("-J")
        .arg(SshClient::jump(n3, "bob"))
        .arg("root@alice-box")
        .arg("echo reached");
    let ssh = Proc::spawn(cmd);
    ssh.expect_exit(IO_TIMEOUT);
    assert_eq!(
        ssh.stdout_text().trim(),
        "reached",
        "{}",
        ssh.report("bob -J via node 3")
    );

    // carol has no reach rule: refused on every node, before any link is used.
    for (i, w) in [n1, n2, n3].into_iter().enumerate() {
        let (_fwd, addrs) = carol.local_forwards(w, "carol", &[Some("alice-svc:80")]);
        assert!(
            refused(addrs[0]),
            "carol reached alice-svc via node {}",
            i + 1
        );
        w.wait_audit("carol refused", |v| {
            is(
                v,
                "channel_open",
                &[("user", "carol"), ("decision", "deny")],
            )
        });
    }

    // mallory may publish alice-svc by the rules, but alice holds it: refused on node 3.
    let mut cmd = mallory.ssh_warrend(n3);
    cmd.args(["-N", "-R"])
        .arg(format!("alice-svc:80:127.0.0.1:{}", echo.port()))
        .arg(SshClient::dest("mallory"));
    let ssh = Proc::spawn(cmd);
    let status = ssh.expect_exit(IO_TIMEOUT);
    assert!(!status.success(), "mallory's -R must fail");
    let denied = n3.wait_audit("mallory's publish refused", |v| {
        is(
            v,
            "listen_start",
            &[("user", "mallory"), ("decision", "deny")],
        )
    });
    assert!(
        s(&denied, "reason").contains("published by another user"),
        "{denied}"
    );
    assert_eq!(served_by(n2, "alice-svc", 80).as_deref(), Some("n1"));
}

/// A TCP load balancer in front of the nodes: each connection goes to the first
/// backend that accepts it (the way a health-checked balancer drains a dead node).
struct Balancer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let backends = backends.clone();
                thread::spawn(move || {
                    let Some(server) = backends.iter().find_map(|b| {
                        TcpStream::connect_timeout(b, Duration::from_millis(500)).ok()
                    }) else {
                        return;
                    };
                    let (mut c2, mut s2) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (mut c1, mut s1) = (client, server);
                    let up = thread::spawn(move || {
                        let _ = std::io::copy(&mut c1, &mut s1);
                        let _ = s1.shutdown(Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        Balancer { port, stop }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn a_dead_nodes_names_vanish_within_the_lease_and_its_publisher_moves_to_another_node() {
    let etcd = Etcd::start();
    let alice = SshClient::new();
    let pi = SshClient::new();
    let bob = SshClient::new();
    let echo = EchoServer::start();
    let users = format!(
        "{}{}{}",
        user("alice", &[&alice], "publish = [\"alice-svc:80\"]"),
        user("pi", &[&pi], "publish = [\"pi-home:80\"]"),
        user("bob", &[&bob], "reach = [\"alice-svc:80\", \"pi-home:80\"]"),
    );
    let plan = Plan::new(3);
    let nodes = plan.start(&etcd, &users);
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    let lb = Balancer::start(vec![n1.addr(), n2.addr()]);
    for c in [&alice, &pi, &bob] {
        trust_nodes(c, &[n1, n2, n3]);
        c.trust(&format!("[127.0.0.1]:{} {}", lb.port, n1.host_key()));
    }

    // alice's warren, through the balancer (so on node 1 first), heals by itself.
    let mut cmd = Command::new(common::warren_bin());
    alice.home.apply(&mut cmd);
    cmd.env_remove("RUST_LOG")
        .args([
            "-v",
            "-N",
            "-o",
            "BatchMode=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"])
        .arg("-p")
        .arg(lb.port.to_string())
        .arg("-i")
        .arg(&alice.key.private)
        .arg("-R")
        .arg(format!("alice-svc:80:127.0.0.1:{}", echo.port()))
        .arg("alice@127.0.0.1");
    let warren = Proc::spawn(cmd);
    warren
        .wait_for_stderr(
            |l| l.contains("forward ready: -R alice-svc:80"),
            READY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("alice's warren did not publish:\n{e}"));
    // pi uses stock ssh to node 1, with nothing to bring it back.
    let _pi = publish(n1, &pi, "pi", "pi-home", 80, echo.port());
    wait_served_by(n3, "alice-svc", 80, Some("n1"), READY_TIMEOUT);
    wait_served_by(n3, "pi-home", 80, Some("n1"), READY_TIMEOUT);
    let (_fwd, addrs) = bob.local_forwards(n3, "bob", &[Some("alice-svc:80"), Some("pi-home:80")]);
    echo_hash(addrs[0], b"before");
    echo_hash(addrs[1], b"before");

    let mark = warren.stderr_line_count();
    let killed = Instant::now();
    n1.proc().signal(libc::SIGKILL);
    // pi-home is nobody's now: gone from every node's view within the lease TTL.
    wait_served_by(
        n3,
        "pi-home",
        80,
        None,
        Duration::from_secs(LEASE_TTL_SECS + 4),
    );
    let gone = killed.elapsed();
    eprintln!("pi-home vanished {gone:?} after node 1 was killed (lease TTL {LEASE_TTL_SECS}s)");
    assert!(
        refused(addrs[1]),
        "pi-home still reachable after its node died"
    );

    // alice's warren is back through the balancer on node 2, which took the name over.
    warren
        .wait_for_stderr_from(
            mark,
            |l| l.contains("reconnected to"),
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("alice's warren did not come back:\n{e}"));
    wait_served_by(n3, "alice-svc", 80, Some("n2"), READY_TIMEOUT);
    echo_hash(addrs[0], &pattern_bytes(1 << 20, 7));
    drop(nodes);
}

#[test]
fn an_etcd_outage_refuses_new_publishes_with_the_reason_and_heals_by_itself() {
    let etcd = Etcd::start();
    let alice = SshClient::new();
    let dave = SshClient::new();
    let bob = SshClient::new();
    let echo = EchoServer::start();
    let users = format!(
        "{}{}{}",
        user("alice", &[&alice], "publish = [\"alice-svc:80\"]"),
        user("dave", &[&dave], "publish = [\"dave-svc:80\"]"),
        user(
            "bob",
            &[&bob],
            "reach = [\"alice-svc:80\", \"dave-svc:80\"]"
        ),
    );
    let plan = Plan::new(2);
    let nodes = plan.start(&etcd, &users);
    let [n1, n2] = [&nodes[0], &nodes[1]];
    for c in [&alice, &dave, &bob] {
        trust_nodes(c, &[n1, n2]);
    }
    let _svc = publish(n1, &alice, "alice", "alice-svc", 80, echo.port());
    wait_served_by(n2, "alice-svc", 80, Some("n1"), READY_TIMEOUT);
    let (_fwd, addrs) = bob.local_forwards(n2, "bob", &[Some("alice-svc:80")]);
    echo_hash(addrs[0], b"before the outage");

    etcd.stop();
    // What runs keeps running, and new connections to known names still cross nodes.
    echo_hash(addrs[0], &pattern_bytes(1 << 20, 3));
    // A new publish is refused, saying why.
    let mut cmd = dave.ssh_warrend(n2);
    cmd.args(["-N", "-R"])
        .arg(format!("dave-svc:80:127.0.0.1:{}", echo.port()))
        .arg(SshClient::dest("dave"));
    let ssh = Proc::spawn(cmd);
    assert!(
        !ssh.expect_exit(IO_TIMEOUT).success(),
        "publish during the outage"
    );
    let denied = n2.wait_audit("dave's refused publish", |v| {
        is(v, "listen_start", &[("user", "dave"), ("decision", "deny")])
    });
    assert!(
        s(&denied, "reason").contains("cluster registry cannot be reached"),
        "{denied}"
    );
    let status = ctl_json(n2, &["cluster"]);
    assert!(
        status["cluster"]["etcd"]
            .as_str()
            .unwrap_or("")
            .contains("unreachable"),
        "{status}"
    );

    etcd.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctl_json(n2, &["cluster"])["cluster"]["etcd"] != "ok" {
        assert!(Instant::now() < deadline, "node 2 never saw etcd again");
        thread::sleep(Duration::from_millis(100));
    }
    // No node was restarted: publishing works again, and the name crosses to node 1.
    let _dave = publish(n2, &dave, "dave", "dave-svc", 80, echo.port());
    wait_served_by(n1, "dave-svc", 80, Some("n2"), READY_TIMEOUT);
    let (_fwd1, addrs1) = bob.local_forwards(n1, "bob", &[Some("dave-svc:80")]);
    echo_hash(addrs1[0], b"after the outage");

    // A clean stop revokes the node's lease: its names go at once, not after the TTL.
    n2.proc().signal(libc::SIGTERM);
    wait_served_by(n1, "dave-svc", 80, None, Duration::from_millis(1500));
}

#[test]
fn with_when_etcd_down_local_a_publish_during_an_outage_is_served_here_then_everywhere() {
    let etcd = Etcd::start();
    let dave = SshClient::new();
    let bob = SshClient::new();
    let echo = EchoServer::start();
    let users = format!(
        "{}{}",
        user("dave", &[&dave], "publish = [\"dave-svc:80\"]"),
        user("bob", &[&bob], "reach = [\"dave-svc:80\"]"),
    );
    let mut plan = Plan::new(2);
    plan.when_etcd_down = "local";
    let nodes = plan.start(&etcd, &users);
    let [n1, n2] = [&nodes[0], &nodes[1]];
    for c in [&dave, &bob] {
        trust_nodes(c, &[n1, n2]);
    }

    etcd.stop();
    // Served by node 2 alone while etcd is away, and said so.
    let _dave = publish(n2, &dave, "dave", "dave-svc", 80, echo.port());
    assert_eq!(
        served_by(n2, "dave-svc", 80).as_deref(),
        Some("n2 (this node only)")
    );
    let (_fwd, here) = bob.local_forwards(n2, "bob", &[Some("dave-svc:80")]);
    echo_hash(here[0], b"during the outage, on the publisher's node");

    // Once etcd is back the name is published for every node.
    etcd.start_again();
    wait_served_by(n1, "dave-svc", 80, Some("n2"), Duration::from_secs(20));
    let (_fwd1, there) = bob.local_forwards(n1, "bob", &[Some("dave-svc:80")]);
    echo_hash(there[0], b"after the outage, from the other node");
}
