//! `warren --route` (sshuttle mode) and `--dns` in three network namespaces the test
//! creates: client <-> bastion <-> private. The client has a default route through the
//! bastion, which does not forward packets, so the private network is unreachable from
//! the client until warren routes it through a stock OpenSSH sshd on the bastion. Real
//! curl, ssh, getent, nft and dnsmasq; needs root (CI runs as root).

mod common;

use common::netns::Netns;
use common::*;
use nix::sched::{CloneFlags, setns};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

const BASTION: &str = "10.201.0.2";
const PRIVATE: &str = "10.202.0.2";
const PRIVATE6: &str = "fd52::2";
const BODY: &str = "hello from the private network";

/// Runs `body` on a thread inside `ns`: sockets it makes live there.
fn inside<T: Send>(ns: &Netns, body: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name);
    thread::scope(|scope| {
        scope
            .spawn(|| {
                let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
                body()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// `ip netns exec NS PROGRAM`.
fn exec_in(ns: &Netns, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name]).arg(program);
    c
}

fn output(mut c: Command) -> Output {
    c.output().expect("run command")
}

/// Serves each accepted connection with `handler` on its own thread.
fn serve(l: TcpListener, handler: fn(TcpStream)) {
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || handler(s));
        }
    });
}

fn echo(mut s: TcpStream) {
    let mut r = s.try_clone().expect("clone");
    let _ = std::io::copy(&mut r, &mut s);
    let _ = s.shutdown(std::net::Shutdown::Write);
}

fn http(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    let mut req = Vec::new();
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let _ = write!(
        s,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
}

struct Net {
    client: Netns,
    bastion: Netns,
    private: Netns,
    echo_port: u16,
    http_port: u16,
}

impl Net {
    fn new() -> Net {
        let client = Netns::create("wr-c");
        let bastion = Netns::create("wr-b");
        let private = Netns::create("wr-p");
        client.ip(&[
            "link",
            "add",
            "c0",
            "type",
            "veth",
            "peer",
            "name",
            "b0",
            "netns",
            &bastion.name,
        ]);
        bastion.ip(&[
            "link",
            "add",
            "b1",
            "type",
            "veth",
            "peer",
            "name",
            "p0",
            "netns",
            &private.name,
        ]);
        for (ns, dev, v4, v6) in [
            (&client, "c0", "10.201.0.1/24", "fd51::1/64"),
            (&bastion, "b0", "10.201.0.2/24", "fd51::2/64"),
            (&bastion, "b1", "10.202.0.1/24", "fd52::1/64"),
            (&private, "p0", "10.202.0.2/24", "fd52::2/64"),
        ] {
            ns.ip(&["addr", "add", v4, "dev", dev]);
            ns.ip(&["addr", "add", v6, "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        // Like any machine: a default route (the kernel must find a route before the nat
        // hook sees a packet); the bastion does not forward, so it leads nowhere.
        client.ip(&["route", "add", "default", "via", BASTION]);
        client.ip(&["-6", "route", "add", "default", "via", "fd51::2"]);
        let (echo_port, http_port) = inside(&private, || {
            let e = TcpListener::bind("[::]:0").expect("bind echo");
            let h = TcpListener::bind("[::]:0").expect("bind http");
            let ports = (
                e.local_addr().unwrap().port(),
                h.local_addr().unwrap().port(),
            );
            serve(e, echo);
            serve(h, http);
            ports
        });
        Net {
            client,
            bastion,
            private,
            echo_port,
            http_port,
        }
    }

    fn connect_from_client(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        inside(&self.client, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        })
    }

    fn nft_ruleset(&self) -> String {
        let out = output({
            let mut e = exec_in(&self.client, "nft");
            e.args(["list", "ruleset"]);
            e
        });
        assert!(out.status.success(), "nft list ruleset: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn curl(&self, url: &str) -> Output {
        let mut c = exec_in(&self.client, "curl");
        c.args(["-sS", "--max-time", "10", "--noproxy", "*", url]);
        output(c)
    }
}

/// The bastion's stock sshd and a user warren logs in as.
struct Bastion {
    sshd: Sshd,
    user: WarrenUser,
}

fn bastion(net: &Net) -> Bastion {
    let sshd = Sshd::start_in_netns(&net.bastion.name, BASTION, SshdOptions::default());
    let user = warren_user(&sshd);
    let known: String = sshd
        .host_public_keys()
        .iter()
        .map(|k| format!("[{BASTION}]:{} {k}\n", sshd.port()))
        .collect();
    std::fs::write(user.home.known_hosts(), known).expect("known_hosts");
    Bastion { sshd, user }
}

/// `ip netns exec client warren -v ... EXTRA root@BASTION AFTER`, with `wrapper` in front
/// of warren (e.g. setpriv).
fn warren_cmd(net: &Net, b: &Bastion, wrapper: &[&str], extra: &[&str], after: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &net.client.name]);
    c.args(wrapper);
    c.arg(warren_bin());
    b.user.home.apply(&mut c);
    c.env("XDG_RUNTIME_DIR", b.user.home.path())
        .env_remove("RUST_LOG")
        .args([
            "-v",
            "-o",
            "BatchMode=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-p")
        .arg(b.sshd.port().to_string())
        .arg("-i")
        .arg(&b.user.key.private)
        .args(extra)
        .arg(format!("root@{BASTION}"))
        .args(after);
    c
}

fn start_warren(net: &Net, b: &Bastion, extra: &[&str]) -> Proc {
    let mut args = vec!["-N"];
    args.extend_from_slice(extra);
    let p = Proc::spawn(warren_cmd(net, b, &[], &args, &[]));
    if let Err(e) = p.wait_for_stderr(|l| l.contains("route ready:"), READY_TIMEOUT) {
        panic!(
            "warren --route not ready:\n{e}\n--- sshd ---\n{}",
            b.sshd.logs()
        );
    }
    p
}

fn assert_no_warren_table(net: &Net, when: &str) {
    let rules = net.nft_ruleset();
    assert!(
        !rules.contains("warren_"),
        "{when}: a warren table is left:\n{rules}"
    );
}

/// Waits for warren to exit (the rules are removed before it does).
fn wait_exit(p: &Proc, when: &str) {
    assert!(
        p.wait_timeout(Duration::from_secs(15)).is_some(),
        "{when}: warren did not exit\n{}",
        p.stderr_text()
    );
}

#[test]
fn route_carries_tcp_to_a_private_subnet_v4_and_v6_with_ssh_login_and_cleans_up() {
    let net = Net::new();
    let mut b = bastion(&net);
    let echo4: SocketAddr = format!("{PRIVATE}:{}", net.echo_port).parse().unwrap();
    let echo6: SocketAddr = format!("[{PRIVATE6}]:{}", net.echo_port).parse().unwrap();

    // Before: nothing reaches the private network from the client.
    assert!(
        net.connect_from_client(echo4).is_err(),
        "private v4 reachable without warren"
    );
    assert!(
        net.connect_from_client(echo6).is_err(),
        "private v6 reachable without warren"
    );

    // A real sshd in the private network, for a real ssh login through the route.
    let private_sshd = Sshd::start_in_netns(&net.private.name, PRIVATE, SshdOptions::default());
    private_sshd.authorize(&b.user.key.public_line);

    let warren = start_warren(
        &net,
        &b,
        &["--route", "10.202.0.0/24", "--route", "fd52::/64"],
    );

    // curl with no proxy settings.
    let out = net.curl(&format!("http://{PRIVATE}:{}/", net.http_port));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        BODY,
        "curl v4: {out:?}\n{}",
        warren.stderr_text()
    );
    let out = net.curl(&format!("http://[{PRIVATE6}]:{}/", net.http_port));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        BODY,
        "curl v6: {out:?}\n{}",
        warren.stderr_text()
    );

    // 64 MiB, hash-checked, both ways at once.
    let data = pattern_bytes(64 << 20, 15);
    let t = Instant::now();
    let back = inside(&net.client, || {
        let s = TcpStream::connect_timeout(&echo4, Duration::from_secs(5)).expect("connect v4");
        exchange(s, &data, Duration::from_secs(30)).expect("64 MiB echo")
    });
    assert_eq!(sha256_hex(&back), sha256_hex(&data), "64 MiB echo differs");
    eprintln!("64 MiB echo through --route: {:?}", t.elapsed());
    let small = pattern_bytes(1 << 20, 6);
    let back6 = inside(&net.client, || {
        let s = TcpStream::connect_timeout(&echo6, Duration::from_secs(5)).expect("connect v6");
        exchange(s, &small, Duration::from_secs(30)).expect("v6 echo")
    });
    assert_eq!(sha256_hex(&back6), sha256_hex(&small));

    // A real ssh login to the private sshd.
    let mut ssh = exec_in(&net.client, "ssh");
    ssh.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
    ])
    .args([
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
    ])
    .arg("-i")
    .arg(&b.user.key.private)
    .arg("-p")
    .arg(private_sshd.port().to_string())
    .arg(format!("root@{PRIVATE}"))
    .arg("echo private-login-ok");
    let out = output(ssh);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "private-login-ok",
        "ssh through --route: {out:?}\n--- private sshd ---\n{}",
        private_sshd.logs()
    );

    // The bastion's own address is excluded (no loop), the connection is warren's own.
    assert_eq!(
        b.sshd.logs().matches("Accepted publickey").count(),
        1,
        "one SSH session carries everything:\n{}",
        b.sshd.logs()
    );

    // The listener is no open proxy: a connection made to it directly (not redirected by
    // the rules) is closed without a channel.
    let ready = warren
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("route ready:"))
        .unwrap();
    let port: u16 = ready
        .rsplit("listener port ")
        .next()
        .and_then(|p| p.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no listener port in {ready}"));
    let closed = inside(&net.client, || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the listener");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read(&mut [0u8; 16]).map(|n| n == 0).unwrap_or(true)
    });
    assert!(
        closed,
        "a direct connection to the route listener was served"
    );

    // `warren status` counts connections and bytes per route.
    let mut status = Command::new(warren_bin());
    status
        .env("XDG_RUNTIME_DIR", b.user.home.path())
        .args(["status", "--json"]);
    let out = output(status);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"));
    let routes = &json[0]["routes"];
    assert_eq!(routes[0]["route"], "10.202.0.0/24", "{json}");
    assert!(routes[0]["connections"].as_u64().unwrap() >= 3, "{json}");
    assert!(
        routes[0]["bytes_up"].as_u64().unwrap() >= 64 << 20,
        "{json}"
    );
    assert_eq!(routes[1]["route"], "fd52::/64", "{json}");
    assert!(routes[1]["connections"].as_u64().unwrap() >= 2, "{json}");

    // Reconnect: the bastion's sshd restarts; new connections work again through the
    // same rules (not reinstalled).
    let table = format!("warren_{}", warren.pid());
    let before = net.nft_ruleset();
    b.sshd.restart();
    let out = net.curl(&format!("http://{PRIVATE}:{}/", net.http_port));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        BODY,
        "curl after sshd restart: {out:?}\n{}",
        warren.stderr_text()
    );
    assert_eq!(
        net.nft_ruleset(),
        before,
        "rules changed across the reconnect"
    );
    assert!(before.contains(&table));

    // SIGTERM: rules gone.
    warren.signal(libc::SIGTERM);
    wait_exit(&warren, "SIGTERM");
    assert_no_warren_table(&net, "after SIGTERM");
    assert!(
        net.connect_from_client(echo4).is_err(),
        "still routed after exit"
    );
}

#[test]
fn route_rules_are_removed_on_every_exit_path() {
    let net = Net::new();
    let mut b = bastion(&net);
    let route = ["--route", "10.202.0.0/24"];

    // SIGINT.
    let w = start_warren(&net, &b, &route);
    w.signal(libc::SIGINT);
    wait_exit(&w, "SIGINT");
    assert_no_warren_table(&net, "after SIGINT");

    // SIGKILL leaves the table; the next warren removes it.
    let w = start_warren(&net, &b, &route);
    let dead = w.pid();
    w.kill();
    assert!(
        net.nft_ruleset().contains(&format!("warren_{dead}")),
        "no table to go stale"
    );
    let w = start_warren(&net, &b, &route);
    let rules = net.nft_ruleset();
    assert!(
        !rules.contains(&format!("warren_{dead}")),
        "stale table kept:\n{rules}"
    );
    w.signal(libc::SIGTERM);
    wait_exit(&w, "SIGTERM");
    assert_no_warren_table(&net, "after SIGKILL + new warren");

    // --exec: the command's end ends warren, and the route worked for the command.
    let url = format!("http://{PRIVATE}:{}/", net.http_port);
    let out = output(warren_cmd(
        &net,
        &b,
        &[],
        &["--route", "10.202.0.0/24"],
        &["--exec", "--", "curl", "-sS", "--max-time", "10", &url],
    ));
    assert!(out.status.success(), "--exec run: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);
    assert_no_warren_table(&net, "after --exec end");

    // A fatal error (the server goes away, no reconnect).
    let w = start_warren(&net, &b, &["--route", "10.202.0.0/24", "--no-reconnect"]);
    b.sshd.stop();
    let status = w
        .wait_timeout(Duration::from_secs(15))
        .expect("warren exits when its server is gone");
    assert!(!status.success());
    assert_no_warren_table(&net, "after a fatal error");

    // Without CAP_NET_ADMIN: exit 2, the fix named, nothing installed.
    b.sshd.restart();
    let out = output(warren_cmd(
        &net,
        &b,
        &[
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-net_admin",
            "--",
        ],
        &["-N", "--route", "10.202.0.0/24"],
        &[],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CAP_NET_ADMIN") && stderr.contains("root"),
        "{stderr}"
    );
    assert_no_warren_table(&net, "without CAP_NET_ADMIN");
}

/// dnsmasq in `ns` on `addr`, answering `name` with `answer` and nothing else.
fn dnsmasq(ns: &Netns, addr: &str, name: &str, answer: &str) -> Proc {
    let mut c = exec_in(ns, "dnsmasq");
    c.args([
        "-d",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--bind-interfaces",
        &format!("--listen-address={addr}"),
        &format!("--host-record={name},{answer}"),
        "--pid-file=",
    ]);
    let p = Proc::spawn(c);
    p.wait_for_stderr(|l| l.contains("started"), READY_TIMEOUT)
        .expect("dnsmasq started");
    p
}

fn getent(net: &Net, name: &str) -> Output {
    let mut c = exec_in(&net.client, "getent");
    c.args(["hosts", name]);
    output(c)
}

#[test]
fn dns_resolves_private_names_through_the_tunnel() {
    let net = Net::new();
    // The client's own resolver knows only its own names; the private one exists only
    // behind the bastion, and the bastion's resolv.conf names it (warren reads it there).
    net.client
        .etc_file("resolv.conf", "nameserver 10.201.0.1\n");
    net.bastion
        .etc_file("resolv.conf", &format!("nameserver {PRIVATE}\n"));
    let _private_dns = dnsmasq(&net.private, PRIVATE, "db.private", PRIVATE);
    let _local_dns = dnsmasq(
        &net.client,
        "10.201.0.1",
        "printer.local.example",
        "10.201.0.9",
    );
    let b = bastion(&net);
    // Before: the private name is unknown here.
    assert!(!String::from_utf8_lossy(&getent(&net, "db.private").stdout).contains(PRIVATE));
    let warren = start_warren(
        &net,
        &b,
        &[
            "--route",
            "10.202.0.0/24",
            "--dns",
            "--dns-domain",
            "private",
        ],
    );

    let out = getent(&net, "db.private");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(PRIVATE),
        "getent hosts db.private: {out:?}\n{}",
        warren.stderr_text()
    );
    let out = net.curl(&format!("http://db.private:{}/", net.http_port));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        BODY,
        "curl by name: {out:?}"
    );
    // Outside --dns-domain: the original resolver answers (through warren's marked socket).
    let out = getent(&net, "printer.local.example");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.201.0.9"),
        "a local name: {out:?}\n{}",
        warren.stderr_text()
    );
    // TCP DNS too (`options use-vc` makes glibc ask over TCP).
    net.client
        .etc_file("resolv.conf", "nameserver 10.201.0.1\noptions use-vc\n");
    for (name, want) in [
        ("db.private", PRIVATE),
        ("printer.local.example", "10.201.0.9"),
    ] {
        let out = getent(&net, name);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(want),
            "{name} over TCP: {out:?}"
        );
    }
    warren.signal(libc::SIGTERM);
    wait_exit(&warren, "SIGTERM");
    assert_no_warren_table(&net, "after --dns");
}
