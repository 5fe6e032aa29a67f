//! The cluster phase's many names: `--cluster-names` (10,000) rendezvous names published
//! over three nodes, a few sessions per node, by Warren's own SSH engine used directly
//! (one `tcpip-forward` global request per name, [`WINDOW`] in flight per session: what
//! a fleet of devices reconnecting at once asks of the nodes, without a process per
//! name).
//!
//! Measured: the time from the first request until every publisher has its answers, and
//! until every node's view (`warrend ctl names`, its watched copy of etcd) lists every
//! name; etcd's load (database size and keys from its /metrics, its RSS and CPU); each
//! node's RSS growth per name and CPU; and, when the sessions close, the time until no
//! node lists any of the names.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use warren_ssh::driver::Handle;
use warren_ssh::proto::GlobalRequest;
use warren_ssh::ssh_key::PrivateKey;

use super::Bench;
use crate::cluster_rig::{Cluster, NAME_PORT, NAME_PREFIX};
use crate::engine_session::{answer_keepalives, client_config, login};
use crate::procs::Usage;
use crate::report::format_num;

const NODES: usize = 3;
/// Sessions publishing on each node.
const SESSIONS_PER_NODE: usize = 4;
/// Requests in flight per session.
const WINDOW: usize = 64;

/// What one registration of every name showed.
struct NamesRun {
    names: usize,
    /// First request to the last answer.
    confirmed: Duration,
    /// First request until every node lists every name.
    visible: Duration,
    /// Sessions closed until no node lists any.
    withdrawn: Option<Duration>,
    nodes_before: Vec<Usage>,
    nodes_after: Vec<Usage>,
    etcd_before: Usage,
    etcd_after: Usage,
    /// `etcd_mvcc_db_total_size_in_bytes` before and after.
    db: (Option<f64>, Option<f64>),
    /// `etcd_debugging_mvcc_keys_total` before and after.
    keys: (Option<f64>, Option<f64>),
}

impl Bench {
    pub(super) fn cluster_names(&mut self, etcd: &Path) -> Result<String> {
        let n = self.opts.cluster_names;
        // A fresh cluster: its memory before the names is that of idle nodes.
        let cluster = Cluster::start(&self.env, etcd, NODES)?;
        let run = self
            .names_run(&cluster, n)
            .with_context(|| cluster.tails())?;
        Ok(names_table(&cluster, &run))
    }

    fn names_run(&mut self, cluster: &Cluster, n: usize) -> Result<NamesRun> {
        let key =
            Arc::new(PrivateKey::read_openssh_file(&self.env.key).context("read the run's key")?);
        let user = self.env.user.clone();
        let host = cluster.host_public.clone();
        let ports: Vec<u16> = cluster.nodes.iter().map(|x| x.port).collect();
        // Every session logged in before the clock starts.
        let sessions: Vec<Handle> = self.rt.block_on(async {
            let mut v = Vec::new();
            for port in &ports {
                for _ in 0..SESSIONS_PER_NODE {
                    let (h, events) = login(*port, client_config(0), &key, &user, &host).await?;
                    answer_keepalives(&h, events);
                    v.push(h);
                }
            }
            anyhow::Ok(v)
        })?;
        // Name i goes to node i % NODES, and round robin over that node's sessions.
        let mut batches: Vec<Vec<String>> = vec![Vec::new(); sessions.len()];
        for i in 0..n {
            let node = i % NODES;
            let s = node * SESSIONS_PER_NODE + (i / NODES) % SESSIONS_PER_NODE;
            batches[s].push(format!("{NAME_PREFIX}n{i}"));
        }
        let prefix = format!("{NAME_PREFIX}n");
        let usage = || -> Vec<Usage> { cluster.nodes.iter().map(|x| x.usage()).collect() };
        let (nodes_before, etcd_before) = (usage(), cluster.etcd.usage());
        let db0 = cluster.etcd.metric("etcd_mvcc_db_total_size_in_bytes");
        let keys0 = cluster.etcd.metric("etcd_debugging_mvcc_keys_total");

        let start = Instant::now();
        self.rt.block_on(async {
            let mut set = JoinSet::new();
            for (h, names) in sessions.iter().zip(batches) {
                set.spawn(publish(h.clone(), names));
            }
            while let Some(r) = set.join_next().await {
                r.context("publishing task")??;
            }
            anyhow::Ok(())
        })?;
        let confirmed = start.elapsed();
        let within = Duration::from_secs(60) + Duration::from_millis(n as u64 * 10);
        cluster.wait_names(&prefix, n, None, within, None)?;
        let visible = start.elapsed();
        let (nodes_after, etcd_after) = (usage(), cluster.etcd.usage());
        let db = (db0, cluster.etcd.metric("etcd_mvcc_db_total_size_in_bytes"));
        let keys = (keys0, cluster.etcd.metric("etcd_debugging_mvcc_keys_total"));

        let closed = Instant::now();
        for h in &sessions {
            h.disconnect("benchmark done");
        }
        let withdrawn = cluster
            .wait_names(&prefix, 0, None, within, None)
            .ok()
            .map(|()| closed.elapsed());
        Ok(NamesRun {
            names: n,
            confirmed,
            visible,
            withdrawn,
            nodes_before,
            nodes_after,
            etcd_before,
            etcd_after,
            db,
            keys,
        })
    }
}

/// Publishes every name on one session, [`WINDOW`] requests in flight; fails if any
/// is refused.
async fn publish(h: Handle, names: Vec<String>) -> Result<()> {
    let total = names.len();
    let window = Arc::new(Semaphore::new(WINDOW));
    let mut set = JoinSet::new();
    for name in names {
        let permit = window.clone().acquire_owned().await?;
        let h = h.clone();
        set.spawn(async move {
            let request = GlobalRequest::TcpipForward {
                address: name.clone(),
                port: u32::from(NAME_PORT),
            };
            let r = h.global_request(request).await;
            drop(permit);
            (name, r)
        });
    }
    let mut refused = Vec::new();
    while let Some(j) = set.join_next().await {
        let (name, r) = j.context("request task")?;
        match r {
            Ok((true, _)) => {}
            Ok((false, _)) => refused.push(name),
            Err(e) => return Err(e).with_context(|| format!("publishing {name}")),
        }
    }
    if let Some(first) = refused.first() {
        bail!(
            "{} of {total} names refused (e.g. {first}; see the node's audit log)",
            refused.len()
        );
    }
    Ok(())
}

fn names_table(cluster: &Cluster, r: &NamesRun) -> String {
    let mut out = String::new();
    let n = r.names as f64;
    let sessions = NODES * SESSIONS_PER_NODE;
    let _ = writeln!(
        out,
        "\n### Cluster: {} names published over {NODES} nodes ({sessions} sessions of Warren's SSH engine, {WINDOW} requests in flight each)\n",
        r.names
    );
    let _ = writeln!(out, "| metric | value |\n| --- | ---: |");
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let _ = writeln!(
        out,
        "| first request → every publish answered, s ↓ | {} |",
        secs(r.confirmed)
    );
    let _ = writeln!(
        out,
        "| publishes answered per second ↑ | {} |",
        format_num(n / r.confirmed.as_secs_f64().max(1e-9))
    );
    let _ = writeln!(
        out,
        "| first request → every node lists every name, s ↓ | {} |",
        secs(r.visible)
    );
    let _ = writeln!(
        out,
        "| sessions closed → no node lists any, s ↓ | {} |",
        r.withdrawn.map_or("did not happen".into(), secs)
    );
    let mib = |b: f64| format_num(b / (1u64 << 20) as f64);
    let _ = writeln!(
        out,
        "| etcd database size before → after, MiB | {} → {} |",
        r.db.0.map_or("–".into(), mib),
        r.db.1.map_or("–".into(), mib),
    );
    let _ = writeln!(
        out,
        "| etcd keys before → after | {} → {} |",
        r.keys.0.map_or("–".into(), format_num),
        r.keys.1.map_or("–".into(), format_num),
    );
    let _ = write!(out, "\n| per process |");
    for node in &cluster.nodes {
        let _ = write!(out, " warrend {} |", node.id);
    }
    let _ = write!(out, " etcd |\n| --- |");
    for _ in 0..=cluster.nodes.len() {
        let _ = write!(out, " ---: |");
    }
    out.push('\n');
    let mut before = r.nodes_before.clone();
    before.push(r.etcd_before);
    let mut after = r.nodes_after.clone();
    after.push(r.etcd_after);
    let row = |out: &mut String, name: &str, f: &dyn Fn(&Usage, &Usage) -> String| {
        let _ = write!(out, "| {name} |");
        for (a, b) in before.iter().zip(&after) {
            let _ = write!(out, " {} |", f(a, b));
        }
        out.push('\n');
    };
    let kib_mib = |k: u64| format_num(k as f64 / 1024.0);
    row(&mut out, "RSS before, MiB", &|a, _| kib_mib(a.rss_kib));
    row(&mut out, "RSS with every name, MiB", &|_, b| {
        kib_mib(b.rss_kib)
    });
    row(
        &mut out,
        "RSS growth per name (of all), bytes ↓",
        &|a, b| format_num((b.rss_kib as f64 - a.rss_kib as f64) * 1024.0 / n),
    );
    row(
        &mut out,
        "CPU until every node listed every name, s ↓",
        &|a, b| format!("{:.2}", b.cpu - a.cpu),
    );
    let _ = writeln!(
        out,
        "\nEach node serves a third of the names and keeps a watched copy of all of them; \
         \"every node lists\" is polled with `warrend ctl names` every 50 ms or so once \
         every publish was answered."
    );
    out
}
