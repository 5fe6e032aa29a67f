//! The cluster phase (issue 18): three warrend nodes sharing one rendezvous namespace
//! through one etcd, all on loopback.
//!
//! Reach: a publisher (`-N -R bench-…:80:127.0.0.1:TARGET`) logs in to node 1; one reacher
//! (`-N -L P:bench-…:80`) logs in to node 1 as well (same node) and one to node 2 (cross
//! node: node 2 carries each connection over its SSH link to node 1). Both reachers run
//! side by side and are measured in turn with the same scenarios as the loopback paths:
//! sequential connection setup, echo latency on one connection, one bulk stream each way
//! (hash-checked). The CPU the nodes spend per GiB is read from /proc around the bulk
//! run: the relaying node(s) are what the cross-node hop adds to. Clients are ssh (both
//! roles) and then warren (both roles).
//!
//! Names: see [`super::cluster_names`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Bench;
use crate::clients::{ClientOptions, base_command, connected, destination};
use crate::cluster_rig::{Cluster, NAME_PORT, NAME_PREFIX, etcd_binary};
use crate::env::{Env, free_port};
use crate::opts::{ClientKind, Pair, format_size};
use crate::procs::{Proc, Stream, Usage};
use crate::report::format_num;
use crate::rig::Rig;
use crate::route::Route;
use crate::scenarios::{bulk, latency, setup};
use crate::stats::median;
use crate::targets::Target;

const READY: Duration = Duration::from_secs(30);
/// The targets each publisher publishes, each under its own name.
const PUBLISHED: [(Target, &str); 3] = [
    (Target::Echo, "echo"),
    (Target::Sink, "sink"),
    (Target::Source, "source"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The reacher logs in to the publisher's node.
    Same,
    /// The reacher logs in to another node.
    Cross,
}

impl Place {
    const ALL: [Place; 2] = [Place::Same, Place::Cross];
}

/// Every run's figures of one client kind and place.
#[derive(Default)]
struct Figures {
    setup_rate: Vec<f64>,
    setup_p50_us: Vec<f64>,
    setup_p99_us: Vec<f64>,
    /// Both nodes' CPU per connection of the setup round.
    nodes_us_per_conn: Vec<f64>,
    lat_p50_us: Vec<f64>,
    lat_p99_us: Vec<f64>,
    up_mibs: Vec<f64>,
    down_mibs: Vec<f64>,
    /// CPU seconds per GiB moved (both directions together), node 1 and node 2.
    n1_per_gib: Vec<f64>,
    n2_per_gib: Vec<f64>,
    both_per_gib: Vec<f64>,
}

/// One column of the reach table.
struct Column {
    kind: ClientKind,
    place: Place,
    figures: Result<Figures>,
}

/// The sizes of the reach measurements.
#[derive(Clone, Copy)]
struct Sizes {
    runs: usize,
    conns: usize,
    budget: Duration,
    msgs: usize,
    bulk: usize,
}

impl Bench {
    pub fn cluster(&mut self) {
        let Some(etcd) = etcd_binary() else {
            self.report.notes.push(
                "\n### Cluster\n\nSkipped: etcd is not installed (apt-get install etcd-server)."
                    .to_string(),
            );
            return;
        };
        let mut out = String::new();
        match self.cluster_reach(&etcd) {
            Ok(t) => out.push_str(&t),
            Err(e) => self.report.errors.push(format!("cluster reach: {e:#}")),
        }
        match self.cluster_names(&etcd) {
            Ok(t) => out.push_str(&t),
            Err(e) => self.report.errors.push(format!("cluster names: {e:#}")),
        }
        if !out.is_empty() {
            self.report.notes.push(out);
        }
    }

    fn cluster_reach(&mut self, etcd: &std::path::Path) -> Result<String> {
        let sizes = Sizes {
            runs: self.opts.runs.min(3),
            conns: self.opts.setup_conns,
            budget: self.opts.setup_budget,
            msgs: self.opts.latency_msgs,
            bulk: self.opts.side_bulk_size,
        };
        let cluster = Cluster::start(&self.env, etcd, 3)?;
        let mut columns = Vec::new();
        for kind in [ClientKind::Ssh, ClientKind::Warren] {
            match self.reach_kind(&cluster, kind, sizes) {
                Ok(figs) => {
                    for (place, f) in Place::ALL.into_iter().zip(figs) {
                        columns.push(Column {
                            kind,
                            place,
                            figures: Ok(f),
                        });
                    }
                }
                Err(e) => {
                    self.report
                        .errors
                        .push(format!("cluster reach with {kind:?}: {e:#}"));
                    for place in Place::ALL {
                        columns.push(Column {
                            kind,
                            place,
                            figures: Err(anyhow::anyhow!("failed")),
                        });
                    }
                }
            }
        }
        Ok(reach_table(&columns, sizes))
    }

    /// Publisher and both reachers of `kind`, measured `runs` times, same and cross node
    /// interleaved.
    fn reach_kind(
        &mut self,
        cluster: &Cluster,
        kind: ClientKind,
        sizes: Sizes,
    ) -> Result<[Figures; 2]> {
        let [n1, n2] = [&cluster.nodes[0], &cluster.nodes[1]];
        let tag = match kind {
            ClientKind::Ssh => "ssh",
            ClientKind::Warren => "warren",
        };
        let prefix = format!("{NAME_PREFIX}{tag}-");
        let published: Vec<(Target, String)> = PUBLISHED
            .iter()
            .map(|(t, n)| (*t, format!("{prefix}{n}")))
            .collect();
        let publisher = start_publisher(&self.env, kind, n1.port, &published, &self.targets)?;
        cluster
            .wait_names(
                &prefix,
                published.len(),
                Some(&n1.id),
                READY,
                Some(&publisher),
            )
            .context("the published names never reached every node")?;
        let reachers = [
            Reacher::start(&self.env, kind, n1.port, &published)?,
            Reacher::start(&self.env, kind, n2.port, &published)?,
        ];
        let pair = match kind {
            ClientKind::Ssh => Pair::SshWarrend,
            ClientKind::Warren => Pair::WarrenWarrend,
        };
        let rigs: Vec<Rig> = reachers
            .iter()
            .map(|r| Rig::external(pair, Route::Ports(r.ports.clone())))
            .collect();
        // One echo through each before the clocks run: the first cross-node reach also
        // brings up node 2's link to node 1, which is not what a steady reach costs.
        for (rig, r) in rigs.iter().zip(&reachers) {
            let msgs = 1;
            self.rt
                .block_on(latency::run(&rig.route, msgs, 1))
                .with_context(|| {
                    format!(
                        "first reach\n{}{}{}",
                        r.proc.tail(),
                        publisher.tail(),
                        cluster.tails()
                    )
                })?;
        }
        let mut figs = [Figures::default(), Figures::default()];
        let nodes = || [n1.usage(), n2.usage()];
        let cpu = |a: &[Usage; 2], b: &[Usage; 2], i: usize| b[i].cpu - a[i].cpu;
        for _ in 0..sizes.runs {
            for (i, rig) in rigs.iter().enumerate() {
                let alive = || -> Result<()> {
                    for p in [&reachers[i].proc, &publisher] {
                        if p.exit_status().is_some() {
                            bail!("a client exited\n{}", p.tail());
                        }
                    }
                    Ok(())
                };
                alive()?;
                let f = &mut figs[i];
                let a = nodes();
                let s = self
                    .rt
                    .block_on(setup::run(rig, sizes.conns, sizes.budget))
                    .with_context(|| reachers[i].proc.tail())?;
                let b = nodes();
                f.setup_rate.push(s.conns_per_sec);
                f.setup_p50_us.extend(s.p50_us);
                f.setup_p99_us.extend(s.p99_us);
                let conns = s.conns.max(1) as f64;
                f.nodes_us_per_conn
                    .push((cpu(&a, &b, 0) + cpu(&a, &b, 1)) * 1e6 / conns);
                let l = self
                    .rt
                    .block_on(latency::run(&rig.route, sizes.msgs, self.opts.msg_size))
                    .with_context(|| reachers[i].proc.tail())?;
                f.lat_p50_us.extend(l.p50_us);
                f.lat_p99_us.extend(l.p99_us);
                let a = nodes();
                let (rt, targets, buf) = (&self.rt, &self.targets, &mut self.buf);
                let run = rt
                    .block_on(bulk::run(rig, targets, sizes.bulk, buf))
                    .with_context(|| reachers[i].proc.tail())?;
                let b = nodes();
                let gib = 2.0 * sizes.bulk as f64 / (1u64 << 30) as f64;
                f.up_mibs.push(run.up_mibs);
                f.down_mibs.push(run.down_mibs);
                f.n1_per_gib.push(cpu(&a, &b, 0) / gib);
                f.n2_per_gib.push(cpu(&a, &b, 1) / gib);
                f.both_per_gib.push((cpu(&a, &b, 0) + cpu(&a, &b, 1)) / gib);
            }
        }
        Ok(figs)
    }
}

/// `-R name:80:127.0.0.1:TARGET` for every published target, logged in to `port`.
fn start_publisher(
    env: &Env,
    kind: ClientKind,
    port: u16,
    published: &[(Target, String)],
    targets: &crate::targets::Targets,
) -> Result<Proc> {
    let mut cmd = base_command(env, kind, port, ClientOptions::default());
    for (t, name) in published {
        cmd.arg("-R")
            .arg(format!("{name}:{NAME_PORT}:127.0.0.1:{}", targets.port(*t)));
    }
    cmd.arg(destination(env));
    Proc::spawn(cmd)
}

/// A client with one `-L` per published name, logged in to one node.
struct Reacher {
    ports: HashMap<Target, u16>,
    proc: Proc,
}

impl Reacher {
    fn start(
        env: &Env,
        kind: ClientKind,
        port: u16,
        published: &[(Target, String)],
    ) -> Result<Reacher> {
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut cmd: Command = base_command(env, kind, port, ClientOptions::default());
            let mut ports = HashMap::new();
            for (t, name) in published {
                let local = free_port()?;
                ports.insert(*t, local);
                cmd.arg("-L")
                    .arg(format!("127.0.0.1:{local}:{name}:{NAME_PORT}"));
            }
            cmd.arg(destination(env));
            let proc = Proc::spawn(cmd)?;
            let ready = published
                .iter()
                .enumerate()
                .try_for_each(|(k, (t, _))| -> Result<()> {
                    let local = ports[t];
                    match kind {
                        ClientKind::Ssh => connected(&proc, local).map(drop),
                        ClientKind::Warren => {
                            let key = format!("WARREN_LOCAL_PORT_{}={local}", k + 1);
                            proc.wait_line(Stream::Stdout, READY, |l| l == key)
                                .map(drop)
                        }
                    }
                });
            match ready {
                Ok(()) => return Ok(Reacher { ports, proc }),
                Err(e) => {
                    last = format!("{e:#}");
                    // A local port taken between choosing and binding it: try others.
                    if !proc.tail().contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        bail!("{kind:?} reacher did not come up: {last}")
    }
}

fn reach_table(columns: &[Column], sizes: Sizes) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Cluster: reach through a rendezvous name, same node vs cross node (3 warrend nodes + etcd on loopback; ratios: cross node vs same node with the same client)\n"
    );
    let _ = write!(out, "| metric |");
    for c in columns {
        let place = match c.place {
            Place::Same => "same node",
            Place::Cross => "cross node",
        };
        let _ = write!(out, " {} {place} |", kind_name(c.kind));
    }
    let _ = write!(out, "\n| --- |");
    for _ in columns {
        let _ = write!(out, " ---: |");
    }
    out.push('\n');
    type Pick = fn(&Figures) -> &Vec<f64>;
    let rows: [(String, Pick, f64); 11] = [
        (
            format!(
                "connection setup (up to {} in a row), conn/s ↑",
                sizes.conns
            ),
            |f| &f.setup_rate,
            1.0,
        ),
        (
            "setup round (connect + 1-byte echo + close) p50, ms ↓".into(),
            |f| &f.setup_p50_us,
            1e-3,
        ),
        ("setup round p99, ms ↓".into(), |f| &f.setup_p99_us, 1e-3),
        (
            "nodes' CPU per connection (node 1 + node 2), µs ↓".into(),
            |f| &f.nodes_us_per_conn,
            1.0,
        ),
        (
            "echo latency on one connection p50, µs ↓".into(),
            |f| &f.lat_p50_us,
            1.0,
        ),
        ("echo latency p99, µs ↓".into(), |f| &f.lat_p99_us, 1.0),
        (
            format!("bulk up ({}), MiB/s ↑", format_size(sizes.bulk)),
            |f| &f.up_mibs,
            1.0,
        ),
        (
            format!("bulk down ({}), MiB/s ↑", format_size(sizes.bulk)),
            |f| &f.down_mibs,
            1.0,
        ),
        (
            "CPU per GiB, node 1 (publisher's), s ↓".into(),
            |f| &f.n1_per_gib,
            1.0,
        ),
        (
            "CPU per GiB, node 2 (cross: reacher's), s ↓".into(),
            |f| &f.n2_per_gib,
            1.0,
        ),
        (
            "CPU per GiB, both nodes, s ↓".into(),
            |f| &f.both_per_gib,
            1.0,
        ),
    ];
    let value = |c: &Column, pick: Pick, scale: f64| -> Option<f64> {
        let f = c.figures.as_ref().ok()?;
        Some(median(pick(f).iter().map(|v| Some(*v)))? * scale)
    };
    for (name, pick, scale) in &rows {
        let _ = write!(out, "| {name} |");
        for c in columns {
            let same = columns
                .iter()
                .find(|s| s.kind == c.kind && s.place == Place::Same);
            let v = value(c, *pick, *scale);
            let r = same.and_then(|s| value(s, *pick, *scale));
            let cell = match (v, r) {
                (Some(v), Some(r)) if c.place == Place::Cross && r > 0.0 => {
                    format!("{} (×{:.2})", format_num(v), v / r)
                }
                (Some(v), _) => format_num(v),
                (None, _) => "–".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    let runs = match sizes.runs {
        1 => "One run".to_string(),
        n => format!("Medians of {n} runs"),
    };
    let _ = writeln!(
        out,
        "\n{runs}, same and cross node interleaved. Same node: publisher and reacher on \
         node 1. Cross node: the reacher on node 2, which carries each connection over its \
         SSH link to node 1. CPU per GiB counts {} up and {} down (/proc ticks are 10 ms).",
        format_size(sizes.bulk),
        format_size(sizes.bulk)
    );
    out
}

fn kind_name(kind: ClientKind) -> &'static str {
    match kind {
        ClientKind::Ssh => "ssh",
        ClientKind::Warren => "warren",
    }
}
