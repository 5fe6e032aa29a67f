//! The benchmark's command line: the pairs, paths and phases it runs, and
//! the sizes of the full and the smoke run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Which SSH client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKind {
    Ssh,
    Warren,
}

/// Which SSH server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerKind {
    Sshd,
    Warrend,
}

/// A client/server combination, or no tunnel at all (the upper bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pair {
    SshSshd,
    WarrenSshd,
    SshWarrend,
    WarrenWarrend,
    Direct,
}

impl Pair {
    /// Every pair, the OpenSSH reference first (the report's column order).
    pub const ALL: [Pair; 5] = [
        Pair::SshSshd,
        Pair::WarrenSshd,
        Pair::SshWarrend,
        Pair::WarrenWarrend,
        Pair::Direct,
    ];

    /// The pair every ratio is relative to.
    pub const REFERENCE: Pair = Pair::SshSshd;

    /// Name on the command line (`--only warren-sshd`).
    pub fn name(self) -> &'static str {
        match self {
            Pair::SshSshd => "ssh-sshd",
            Pair::WarrenSshd => "warren-sshd",
            Pair::SshWarrend => "ssh-warrend",
            Pair::WarrenWarrend => "warren-warrend",
            Pair::Direct => "direct",
        }
    }

    /// Column heading in the report.
    pub fn label(self) -> &'static str {
        match self {
            Pair::SshSshd => "ssh→sshd (ref)",
            Pair::WarrenSshd => "warren→sshd",
            Pair::SshWarrend => "ssh→warrend",
            Pair::WarrenWarrend => "warren→warrend",
            Pair::Direct => "direct",
        }
    }

    /// The client, `None` for the direct connection.
    pub fn client(self) -> Option<ClientKind> {
        match self {
            Pair::SshSshd | Pair::SshWarrend => Some(ClientKind::Ssh),
            Pair::WarrenSshd | Pair::WarrenWarrend => Some(ClientKind::Warren),
            Pair::Direct => None,
        }
    }

    /// The server, `None` for the direct connection.
    pub fn server(self) -> Option<ServerKind> {
        match self {
            Pair::SshSshd | Pair::WarrenSshd => Some(ServerKind::Sshd),
            Pair::SshWarrend | Pair::WarrenWarrend => Some(ServerKind::Warrend),
            Pair::Direct => None,
        }
    }

    fn parse(s: &str) -> Result<Pair> {
        Pair::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .with_context(|| {
                let names: Vec<_> = Pair::ALL.iter().map(|p| p.name()).collect();
                format!("unknown pair {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// How a connection enters the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    /// `-L`: the client listens, the server connects to the target.
    Local,
    /// `-D`: the client is a SOCKS5 proxy, the server connects to the target.
    Dynamic,
    /// `-R`: the server listens, the client connects to the target.
    Remote,
}

impl PathKind {
    pub fn flag(self) -> &'static str {
        match self {
            PathKind::Local => "-L",
            PathKind::Dynamic => "-D",
            PathKind::Remote => "-R",
        }
    }
}

/// A part of the run, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// `openssl speed`: the crypto ceiling.
    Openssl,
    /// Cipher and time to the first forward.
    Startup,
    /// Bulk, setup and latency through one path.
    Path(PathKind),
    /// -L connection setup against a plaintext mux: the floor.
    Floor,
    /// -L connection setup across a slower (delayed) link.
    Link,
    /// One stream each way across delayed (and rate-capped) links.
    Wan,
    /// One unread connection next to an echoing one.
    Slow,
    /// A local reader slower than the target's offer.
    Consumer,
    /// Many connections held open at once.
    Concurrency,
    /// 100,000 connections through one warrend session.
    Many,
    /// How soon a tunnel works again after its server was away.
    Reconnect,
    /// A private subnet through a bastion: sshuttle, warren --route, ssh -D, warren -L.
    Subnet,
    /// Several warrend nodes and etcd: cross-node vs same-node reach, many published names.
    Cluster,
}

impl Phase {
    pub const ALL: [Phase; 15] = [
        Phase::Openssl,
        Phase::Startup,
        Phase::Path(PathKind::Local),
        Phase::Floor,
        Phase::Path(PathKind::Dynamic),
        Phase::Path(PathKind::Remote),
        Phase::Link,
        Phase::Wan,
        Phase::Slow,
        Phase::Consumer,
        Phase::Concurrency,
        Phase::Many,
        Phase::Reconnect,
        Phase::Subnet,
        Phase::Cluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Openssl => "openssl",
            Phase::Startup => "startup",
            Phase::Path(p) => p.flag(),
            Phase::Floor => "floor",
            Phase::Link => "link",
            Phase::Wan => "wan",
            Phase::Slow => "slow",
            Phase::Consumer => "consumer",
            Phase::Concurrency => "concurrency",
            Phase::Many => "many",
            Phase::Reconnect => "reconnect",
            Phase::Subnet => "subnet",
            Phase::Cluster => "cluster",
        }
    }

    fn parse(s: &str) -> Result<Phase> {
        let want = match s {
            "L" | "D" | "R" => format!("-{s}"),
            _ => s.to_string(),
        };
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == want)
            .with_context(|| {
                format!(
                    "unknown phase {s:?}; expected openssl, startup, L, floor, D, R, link, wan, slow, consumer, concurrency, many, reconnect, subnet, cluster"
                )
            })
    }
}

/// Everything the run does, decided once from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub smoke: bool,
    pub pairs: Vec<Pair>,
    /// What to run, in [`Phase::ALL`] order.
    pub phases: Vec<Phase>,
    /// Bytes per direction of one `-L` bulk run.
    pub bulk_size: usize,
    /// Bytes per direction of one `-D` / `-R` bulk run.
    pub side_bulk_size: usize,
    /// Repetitions of bulk, setup and latency; the report shows medians.
    pub runs: usize,
    /// Sequential open/echo/close cycles per setup run...
    pub setup_conns: usize,
    /// ...or fewer if this time is up first (sshd's -R path manages about
    /// 30 connections a second; 1,000 of them would take half a minute).
    pub setup_budget: Duration,
    /// Request/response exchanges per latency run.
    pub latency_msgs: usize,
    /// Size of one latency request (and its echo).
    pub msg_size: usize,
    /// Client starts measured for the time to the first ready forward.
    pub startup_reps: usize,
    /// Round trip of the delayed link of the link phase (half each way).
    pub link_rtt: Duration,
    /// Sequential open/echo/close cycles per link run (or fewer if
    /// `setup_budget` is up first).
    pub link_conns: usize,
    /// Round trips of the wan phase's links.
    pub wan_rtts: Vec<Duration>,
    /// Rate caps of the wan phase's links, bytes/s (`None`: no cap); every
    /// round trip is measured with each.
    pub wan_rates: Vec<Option<u64>>,
    /// How long one wan transfer runs...
    pub wan_secs: Duration,
    /// ...or until this many bytes have crossed, if set (the smoke run).
    pub wan_size: Option<u64>,
    /// How fast the slow consumer reads, bytes/s.
    pub consumer_rate: u64,
    /// How long it reads.
    pub consumer_secs: Duration,
    /// What the target offers it, as fast as the tunnel takes it.
    pub consumer_offer: u64,
    /// Concurrent connection counts through one session.
    pub concurrency: Vec<usize>,
    /// Connections of the many phase.
    pub many: usize,
    /// Names the cluster phase publishes over its nodes.
    pub cluster_names: usize,
    /// Modes of the subnet phase to run (empty: all), as named by `--subnet-modes`.
    pub subnet_modes: Vec<String>,
    /// How long the reconnect phase's server stays away...
    pub reconnect_outage: Duration,
    /// ...and how many times, per pair.
    pub reconnect_reps: usize,
    /// Whether `--only` named the pairs (the many phase then runs those).
    pub pairs_given: bool,
    /// What the stalled connection of the slow-reader scenario is sent.
    pub slow_size: usize,
    /// How long that connection is not read.
    pub stall: Duration,
    /// Where the markdown report is written as well as stdout.
    pub report: PathBuf,
}

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
/// 1 Gbit/s in bytes per second.
const GBIT: u64 = 125_000_000;

const USAGE: &str = "\
usage: cargo bench --bench tunnel -- [OPTIONS]

  --smoke              tiny functional run (a few MiB, tens of connections, 1 run);
                       the default when not started by `cargo bench` (e.g. `cargo test --benches`)
  --full               the full run even when not started by `cargo bench`
  --only PAIR[,PAIR]   pairs to run: ssh-sshd, warren-sshd, ssh-warrend, warren-warrend, direct
  --phases P[,P]       what to run (default all): openssl, startup, L, floor, D, R, link, wan,
                       slow, consumer, concurrency, many, reconnect, subnet, cluster
  --size SIZE          bytes per direction of a -L bulk run (e.g. 1GiB, 256MiB)
  --side-size SIZE     bytes per direction of a -D/-R bulk run
  --runs N             repetitions of bulk/setup/latency/link (medians are reported)
  --conns N            sequential connections per setup run
  --msgs N             request/response messages per latency run
  --starts N           client starts measured for the time to ready
  --link-rtt MS        round trip of the link phase's delayed link, in ms (default 10)
  --link-conns N       sequential -L connections per link run (default 200)
  --wan-rtts MS[,MS]   round trips of the wan phase's links (default 10,50,100)
  --wan-rate R[,R]     their rate caps: 1gbit, 200mbit, 100MiB (bytes/s) or none (default 1gbit,none)
  --wan-secs SECS      duration of one wan transfer (default 3)
  --wan-size SIZE      ...or until SIZE has crossed, whichever is first (smoke: 4MiB)
  --consumer-rate SIZE bytes per second the slow consumer reads (default 2MiB; 2MB means the same)
  --consumer-secs SECS how long it reads (default 20)
  --consumer-offer SIZE what the target offers it (default 1536MiB)
  --concurrency N[,N]  concurrent connection counts (default 1000,10000)
  --many N             connections of the many phase (default 100000; warren-warrend
                       unless --only names pairs)
  --cluster-names N    names the cluster phase publishes over 3 nodes (default 10000)
  --subnet-modes M[,M] modes of the subnet phase (default all): direct, sshuttle,
                       sshuttle-fast, route, socks, L
  --outage SECS        how long the reconnect phase's server is away (default 3)
  --outages N          outages per pair in the reconnect phase (default 3)
  --slow-size SIZE     bytes sent to the stalled connection (slow reader)
  --stall SECS         how long the slow reader does not read
  --report FILE        markdown report path (default target/bench-report.md)
";

impl Options {
    /// Parses the arguments after `--`. `cargo bench` adds `--bench`;
    /// without it (`cargo test --benches`, which CI may run) the default is
    /// the smoke run, so that no test command starts a 10-minute benchmark.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options> {
        let mut args: Vec<String> = args.into_iter().collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        let smoke = has("--smoke") || !(has("--bench") || has("--full"));
        args.retain(|a| !["--bench", "--smoke", "--full"].contains(&a.as_str()));
        let mut o = if smoke {
            Options::smoke()
        } else {
            Options::full()
        };
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                print!("{USAGE}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--only" => {
                    o.pairs = list(&value, Pair::parse)?;
                    o.pairs_given = true;
                }
                "--phases" => {
                    o.phases = list(&value, Phase::parse)?;
                    o.phases.sort();
                    o.phases.dedup();
                }
                "--size" => o.bulk_size = parse_size(&value)?,
                "--side-size" => o.side_bulk_size = parse_size(&value)?,
                "--runs" => o.runs = number(&flag, &value)?.max(1),
                "--conns" => o.setup_conns = number(&flag, &value)?.max(1),
                "--msgs" => o.latency_msgs = number(&flag, &value)?.max(1),
                "--starts" => o.startup_reps = number(&flag, &value)?.max(1),
                "--link-rtt" => o.link_rtt = parse_ms(&flag, &value)?,
                "--wan-rtts" => o.wan_rtts = list(&value, |s| parse_ms(&flag, s))?,
                "--wan-rate" => o.wan_rates = list(&value, parse_rate)?,
                "--wan-secs" => o.wan_secs = parse_secs(&flag, &value)?,
                "--wan-size" => o.wan_size = Some(parse_size(&value)? as u64),
                "--consumer-rate" => o.consumer_rate = (parse_size(&value)? as u64).max(1),
                "--consumer-secs" => o.consumer_secs = parse_secs(&flag, &value)?,
                "--consumer-offer" => o.consumer_offer = parse_size(&value)? as u64,
                "--link-conns" => o.link_conns = number(&flag, &value)?.max(1),
                "--concurrency" => o.concurrency = list(&value, |s| number(&flag, s))?,
                "--many" => o.many = number(&flag, &value)?.max(1),
                "--cluster-names" => o.cluster_names = number(&flag, &value)?.max(1),
                "--subnet-modes" => o.subnet_modes = list(&value, |m| Ok(m.to_string()))?,
                "--outage" => o.reconnect_outage = parse_secs(&flag, &value)?,
                "--outages" => o.reconnect_reps = number(&flag, &value)?.max(1),
                "--slow-size" => o.slow_size = parse_size(&value)?,
                "--stall" => o.stall = parse_secs(&flag, &value)?,
                "--report" => o.report = PathBuf::from(value),
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(o)
    }

    fn full() -> Options {
        Options {
            smoke: false,
            pairs: Pair::ALL.to_vec(),
            phases: Phase::ALL.to_vec(),
            bulk_size: GIB,
            side_bulk_size: GIB,
            runs: 5,
            setup_conns: 1000,
            setup_budget: Duration::from_secs(10),
            latency_msgs: 5000,
            msg_size: 64,
            startup_reps: 5,
            link_rtt: Duration::from_millis(10),
            link_conns: 200,
            wan_rtts: [10, 50, 100].map(Duration::from_millis).to_vec(),
            wan_rates: vec![Some(GBIT), None],
            wan_secs: Duration::from_secs(3),
            wan_size: None,
            consumer_rate: 2 * MIB as u64,
            consumer_secs: Duration::from_secs(20),
            consumer_offer: 1536 * MIB as u64,
            concurrency: vec![1000, 10_000],
            many: 100_000,
            cluster_names: 10_000,
            subnet_modes: Vec::new(),
            reconnect_outage: Duration::from_secs(3),
            reconnect_reps: 3,
            pairs_given: false,
            slow_size: 256 * MIB,
            stall: Duration::from_secs(5),
            report: default_report(),
        }
    }

    fn smoke() -> Options {
        Options {
            smoke: true,
            bulk_size: 4 * MIB,
            side_bulk_size: 2 * MIB,
            runs: 1,
            setup_conns: 20,
            latency_msgs: 100,
            startup_reps: 1,
            link_conns: 20,
            // One short round trip, capped (the cap is the code a smoke run
            // should reach), a few MiB each way.
            wan_rtts: vec![Duration::from_millis(10)],
            wan_rates: vec![Some(GBIT)],
            wan_size: Some(4 * MIB as u64),
            consumer_secs: Duration::from_secs(2),
            consumer_offer: 32 * MIB as u64,
            concurrency: vec![50],
            many: 200,
            cluster_names: 200,
            subnet_modes: Vec::new(),
            reconnect_outage: Duration::from_millis(500),
            reconnect_reps: 1,
            slow_size: 8 * MIB,
            stall: Duration::from_secs(1),
            // The ceiling is a timing, which a smoke run has no use for.
            phases: Phase::ALL[1..].to_vec(),
            ..Options::full()
        }
    }

    /// Pairs of the many phase: those `--only` named (but direct), else warren → warrend.
    pub fn many_pairs(&self) -> Vec<Pair> {
        if self.pairs_given {
            self.pairs
                .iter()
                .copied()
                .filter(|p| *p != Pair::Direct)
                .collect()
        } else {
            vec![Pair::WarrenWarrend]
        }
    }

    /// Descriptors each process of the run may need: every held connection, plus room.
    pub fn fds(&self) -> u64 {
        let most = self.concurrency.iter().copied().max().unwrap_or(0);
        let many = if self.phases.contains(&Phase::Many) {
            self.many
        } else {
            0
        };
        most.max(many) as u64 + 4096
    }

    /// The largest payload any scenario sends: the size of the shared pattern.
    pub fn max_payload(&self) -> usize {
        self.bulk_size.max(self.side_bulk_size).max(self.slow_size)
    }
}

/// `target/bench-report.md` next to the binaries cargo built.
fn default_report() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-report.md")
}

fn list<T>(value: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse(s.trim()))
        .collect()
}

fn number(flag: &str, value: &str) -> Result<usize> {
    value
        .replace('_', "")
        .parse()
        .with_context(|| format!("{flag}: not a number: {value:?}"))
}

/// `10`, `0.5ms`: a time in milliseconds.
fn parse_ms(flag: &str, value: &str) -> Result<Duration> {
    let t = value.trim();
    let ms: f64 = t
        .strip_suffix("ms")
        .unwrap_or(t)
        .trim()
        .parse()
        .ok()
        .filter(|ms: &f64| ms.is_finite() && *ms >= 0.0)
        .with_context(|| format!("{flag}: not a time in ms: {value:?}"))?;
    Ok(Duration::from_secs_f64(ms / 1e3))
}

/// `20`, `0.5`: a time in seconds.
fn parse_secs(flag: &str, value: &str) -> Result<Duration> {
    let secs: f64 = value
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite())
        .with_context(|| format!("{flag}: not a time in seconds: {value:?}"))?;
    Ok(Duration::from_secs_f64(secs.max(0.0)))
}

/// A link's rate cap in bytes per second: `none`, a bit rate (`1gbit`,
/// `200mbit`, `1.5gbit`; decimal prefixes, as links are sold) or a byte
/// rate as a size per second (`100MiB`).
fn parse_rate(s: &str) -> Result<Option<u64>> {
    let t = s.trim().to_ascii_lowercase();
    if t == "none" {
        return Ok(None);
    }
    let Some(num) = t.strip_suffix("bit").or_else(|| t.strip_suffix("bps")) else {
        return Ok(Some((parse_size(&t)? as u64).max(1)));
    };
    let (num, mult) = match num.strip_suffix(['k', 'm', 'g']) {
        Some(n) if num.ends_with('k') => (n, 1e3),
        Some(n) if num.ends_with('m') => (n, 1e6),
        Some(n) => (n, 1e9),
        None => (num, 1.0),
    };
    let bits: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|b: &f64| b.is_finite() && *b > 0.0)
        .with_context(|| format!("bad rate {s:?}; use e.g. 1gbit, 200mbit, 100MiB or none"))?;
    Ok(Some(((bits * mult / 8.0) as u64).max(1)))
}

/// `1 Gbit/s`, `no cap`: a rate cap as the report prints it.
pub fn format_rate(rate: Option<u64>) -> String {
    let Some(bytes) = rate else {
        return "no cap".to_string();
    };
    let bits = bytes as f64 * 8.0;
    let (v, unit) = if bits >= 1e9 {
        (bits / 1e9, "Gbit/s")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbit/s")
    } else {
        (bits / 1e3, "kbit/s")
    };
    let v = format!("{v:.2}");
    format!("{} {unit}", v.trim_end_matches('0').trim_end_matches('.'))
}

/// `1GiB`, `256MiB`, `64KiB`, `1G`, `4M` or a plain byte count.
pub fn parse_size(s: &str) -> Result<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().with_context(|| format!("bad size {s:?}"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => MIB,
        "g" | "gib" | "gb" => GIB,
        _ => bail!("bad size unit in {s:?}; use KiB, MiB or GiB"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size {s:?} too large"))
}

/// `1.0 GiB`, `256 MiB`: sizes as the report prints them.
pub fn format_size(n: usize) -> String {
    if n >= GIB && n.is_multiple_of(GIB) {
        format!("{} GiB", n / GIB)
    } else if n >= MIB {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} B")
    }
}

/// `10`, `0.5`: a duration in milliseconds, as the report prints it.
pub fn format_ms(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1000) {
        format!("{}", us / 1000)
    } else {
        let t = format!("{:.3}", us as f64 / 1e3);
        t.trim_end_matches('0').to_string()
    }
}
