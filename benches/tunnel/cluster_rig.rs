//! Several warrend nodes and the etcd they share, for the cluster phase (issue 18): one
//! etcd on loopback with its own data directory, and warrend nodes with a `[cluster]`
//! section, each with its own state directory and control socket, all with one shared
//! host key (as nodes behind one name share it), node keys made with ssh-keygen and
//! listed in every node's `[cluster.nodes]`.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::env::{Env, free_port, keygen};
use crate::procs::{Proc, Stream, Usage};

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Every key the run's nodes write is under this prefix.
const PREFIX: &str = "/warren-bench/";
/// What the bench user may publish and reach: every name the phase uses.
pub const NAME_PREFIX: &str = "bench-";
/// The port of every published name.
pub const NAME_PORT: u16 = 80;

/// etcd, where the cluster phase looks for it.
pub fn etcd_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/bin".into());
    dirs.into_iter()
        .map(|d| d.join("etcd"))
        .find(|f| f.is_file())
}

/// One etcd member on 127.0.0.1; stopped when dropped.
pub struct Etcd {
    pub client_port: u16,
    proc: Proc,
}

impl Etcd {
    pub fn start(env: &Env, binary: &Path) -> Result<Etcd> {
        let mut last = String::new();
        // Ports are chosen free and bound by etcd a moment later: retry on a clash.
        for _ in 0..3 {
            let dir = env.subdir("etcd")?;
            let (client_port, peer_port) = (free_port()?, free_port()?);
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let mut cmd = Command::new(binary);
            cmd.arg("--name")
                .arg("bench")
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("bench={peer}")])
                .args(["--log-level", "warn", "--logger", "zap"]);
            let proc = Proc::spawn(cmd)?;
            let etcd = Etcd { client_port, proc };
            match etcd.wait_healthy() {
                Ok(()) => return Ok(etcd),
                Err(e) => last = format!("{e:#}"),
            }
        }
        bail!("etcd did not start: {last}")
    }

    /// Until `/health` says so: the client port answering is not yet a leader elected.
    fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(body) = http_get(self.client_port, "/health")
                && body.contains("\"health\":\"true\"")
            {
                return Ok(());
            }
            if self.proc.exit_status().is_some() || Instant::now() > deadline {
                bail!("etcd never became healthy\n{}", self.proc.tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn usage(&self) -> Usage {
        Usage::of_tree(self.proc.pid())
    }

    /// A gauge or counter from etcd's Prometheus endpoint (the value of its first
    /// unlabelled sample).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.client_port, "/metrics").ok()?;
        body.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
            rest.trim().parse().ok()
        })
    }

    pub fn tail(&self) -> String {
        self.proc.tail()
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (etcd's /health and /metrics); the body.
fn http_get(port: u16, path: &str) -> Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// The nodes' shared parts: ids, their keys, the host key, the users' section.
struct Plan {
    ids: Vec<String>,
    node_keys: Vec<PathBuf>,
    publics: Vec<String>,
    host_key: PathBuf,
}

/// A running warrend node; stopped when dropped.
pub struct Node {
    pub id: String,
    /// The SSH port clients log in to.
    pub port: u16,
    socket: PathBuf,
    proc: Proc,
}

impl Node {
    pub fn usage(&self) -> Usage {
        Usage::of_tree(self.proc.pid())
    }

    pub fn tail(&self) -> String {
        self.proc.tail()
    }

    /// `warrend ctl ARGS --json` against this node.
    pub fn ctl(&self, warrend: &Path, args: &[&str]) -> Result<Value> {
        let out = Command::new(warrend)
            .env_remove("RUNTIME_DIRECTORY")
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .arg("--json")
            .stdin(Stdio::null())
            .output()
            .context("run warrend ctl")?;
        if !out.status.success() {
            bail!(
                "warrend ctl {args:?} on {}: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("warrend ctl --json printed no JSON")
    }

    /// How many names starting with `prefix` this node's view of the cluster lists,
    /// and how many of them `node` serves.
    pub fn count_names(&self, warrend: &Path, prefix: &str, node: &str) -> Result<(usize, usize)> {
        let v = self.ctl(warrend, &["names"])?;
        let rows = v["names"].as_array().context("ctl names: no list")?;
        let mine: Vec<&Value> = rows
            .iter()
            .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .collect();
        let served = mine.iter().filter(|r| r["node"] == node).count();
        Ok((mine.len(), served))
    }
}

/// etcd and `n` nodes, every node up, seeing etcd and every other node.
pub struct Cluster {
    // Nodes first: fields drop in order, and nodes should leave before their etcd.
    pub nodes: Vec<Node>,
    pub etcd: Etcd,
    pub host_public: String,
    pub warrend: PathBuf,
}

impl Cluster {
    pub fn start(env: &Env, etcd_bin: &Path, n: usize) -> Result<Cluster> {
        let etcd = Etcd::start(env, etcd_bin)?;
        let dir = env.subdir("cluster")?;
        let host_key = dir.join("shared_host_key");
        let host_public = keygen(&host_key)?;
        let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let node_keys: Vec<PathBuf> = ids.iter().map(|id| dir.join(format!("{id}_key"))).collect();
        let publics = node_keys.iter().map(|k| keygen(k)).collect::<Result<_>>()?;
        let plan = Plan {
            ids,
            node_keys,
            publics,
            host_key,
        };
        let mut nodes = Vec::new();
        for i in 0..n {
            let node = start_node(env, &plan, &etcd, i)
                .with_context(|| format!("node n{}\n{}", i + 1, etcd.tail()))?;
            nodes.push(node);
        }
        let cluster = Cluster {
            nodes,
            etcd,
            host_public,
            warrend: env.warrend.clone(),
        };
        cluster.wait_members()?;
        Ok(cluster)
    }

    /// Until every node has etcd and lists every node as a member.
    fn wait_members(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &self.nodes {
            loop {
                let v = node.ctl(&self.warrend, &["cluster"]);
                let ready = v.as_ref().is_ok_and(|v| {
                    v["cluster"]["etcd"] == "ok"
                        && v["cluster"]["members"]
                            .as_array()
                            .is_some_and(|m| m.len() == self.nodes.len())
                });
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {} never saw etcd and all {} nodes: {v:?}\n{}",
                        node.id,
                        self.nodes.len(),
                        node.tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Until every node lists `want` names starting with `prefix` (the ones `node` serves
    /// when given, else all); fails after `within`, or as soon as `publisher` exits (a
    /// refused forward ends ssh with ExitOnForwardFailure).
    pub fn wait_names(
        &self,
        prefix: &str,
        want: usize,
        node: Option<&str>,
        within: Duration,
        publisher: Option<&Proc>,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        for n in &self.nodes {
            loop {
                let got = n.count_names(&self.warrend, prefix, node.unwrap_or(""))?;
                let have = if node.is_some() { got.1 } else { got.0 };
                if have == want {
                    break;
                }
                if let Some(p) = publisher
                    && p.exit_status().is_some()
                {
                    bail!("the publisher exited\n{}\n{}", p.tail(), n.tail());
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {} lists {have} of {want} names {prefix}*\n{}",
                        n.id,
                        n.tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    pub fn tails(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&n.tail());
        }
        s.push_str(&self.etcd.tail());
        s
    }
}

fn start_node(env: &Env, plan: &Plan, etcd: &Etcd, i: usize) -> Result<Node> {
    let mut last = String::new();
    for _ in 0..3 {
        let dir = env.subdir(&format!("node-{}", plan.ids[i]))?;
        let config = dir.join("warrend.toml");
        let socket = dir.join("ctl.sock");
        let link = free_port()?;
        fs::write(
            &config,
            node_config(env, plan, etcd, i, &dir, &socket, link),
        )?;
        let mut cmd = Command::new(&env.warrend);
        cmd.env_remove("RUST_LOG")
            .env_remove("RUNTIME_DIRECTORY")
            .arg("-f")
            .arg(&config);
        let proc = Proc::spawn(cmd)?;
        let line = proc.wait_line(Stream::Stderr, START_TIMEOUT, |l| {
            l.contains("warrend: listening on ")
        });
        match line {
            Ok(line) => {
                let port = line
                    .text
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse().ok())
                    .with_context(|| format!("bad listening line {:?}", line.text))?;
                return Ok(Node {
                    id: plan.ids[i].clone(),
                    port,
                    socket,
                    proc,
                });
            }
            Err(e) => {
                last = format!("{e:#}");
                // The link port taken between choosing and binding it: try another.
                if !last.contains("in use") {
                    break;
                }
            }
        }
    }
    bail!("warrend did not start: {last}")
}

/// One user (the run's key) who may publish and reach every `bench-*:80` name; listener
/// limits high enough for the 10,000 names (a rendezvous counts as a listener); the
/// audit log in a file, as in production.
fn node_config(
    env: &Env,
    plan: &Plan,
    etcd: &Etcd,
    i: usize,
    dir: &Path,
    socket: &Path,
    link: u16,
) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nstate_dir = {}\nhost_keys = [{}]\naudit_log = {}\n\n\
         [admin]\nsocket = {}\n",
        toml_str(dir),
        toml_str(&plan.host_key),
        toml_str(&dir.join("audit.log")),
        toml_str(socket),
    );
    c.push_str(crate::servers::LIMITS);
    c.push_str(
        "max_listeners_per_session = 1000000\n\
         max_listeners_per_user = 1000000\n\
         max_listeners = 1000000\n\n",
    );
    let _ = writeln!(
        c,
        "[users.{user}]\nkeys = [{key}]\npublish = [\"{NAME_PREFIX}*:{NAME_PORT}\"]\n\
         reach = [\"{NAME_PREFIX}*:{NAME_PORT}\"]\n",
        user = toml_key(&env.user),
        key = serde_json::to_string(&env.public_line).unwrap_or_default(),
    );
    let _ = writeln!(
        c,
        "[cluster]\nnode = \"{id}\"\nadvertise = \"127.0.0.1:{link}\"\nkey = {key}\n\n[cluster.nodes]",
        id = plan.ids[i],
        key = toml_str(&plan.node_keys[i]),
    );
    for (id, line) in plan.ids.iter().zip(&plan.publics) {
        let _ = writeln!(
            c,
            "{id} = {}",
            serde_json::to_string(line).unwrap_or_default()
        );
    }
    let _ = writeln!(
        c,
        "\n[cluster.etcd]\nendpoints = [\"{}\"]\nprefix = \"{PREFIX}\"\nlease_ttl = \"10s\"\ntimeout = \"2s\"",
        etcd.endpoint()
    );
    c
}

fn toml_str(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}

fn toml_key(k: &str) -> String {
    if k.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        serde_json::to_string(k).unwrap_or_default()
    }
}
