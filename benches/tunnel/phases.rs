//! The phases of a run, each turning scenario results into report rows.
//!
//! Repeated measurements are interleaved across pairs (run 1 of every pair,
//! then run 2 of every pair, ...), so that a disturbance on the machine
//! lands on all pairs alike instead of skewing one pair's ratio.

use std::collections::HashMap;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use crate::ceiling::openssl_speed;
use crate::env::Env;
use crate::opts::{Options, Pair, PathKind, format_size};
use crate::report::{Better, Report};
use crate::rig::Rig;
use crate::scenarios::bulk::{self, BulkRun};
use crate::scenarios::concurrency::{self, ConcurrencyRun};
use crate::scenarios::latency::{self, LatencyRun};
use crate::scenarios::setup::{self, SetupRun};
use crate::scenarios::slow_reader::{self, STALL};
use crate::scenarios::startup::{self, StartupRun};
use crate::servers::Server;
use crate::stats::median;
use crate::targets::{Target, Targets, touched_buffer};

/// Results of one path phase, per pair.
#[derive(Default)]
struct PathRuns {
    bulk: HashMap<Pair, Vec<BulkRun>>,
    setup: HashMap<Pair, Vec<SetupRun>>,
    latency: HashMap<Pair, Vec<LatencyRun>>,
}

pub struct Bench {
    pub opts: Options,
    pub env: Env,
    pub rt: Runtime,
    pub targets: Targets,
    pub report: Report,
    /// Receive buffer for downloads and the slow reader, touched once.
    buf: Vec<u8>,
}

const KIB_PER_MIB: f64 = 1024.0;

impl Bench {
    pub fn new(opts: Options, env: Env, rt: Runtime, targets: Targets) -> Bench {
        let buf = touched_buffer(opts.max_payload());
        Bench {
            opts,
            env,
            rt,
            targets,
            report: Report::default(),
            buf,
        }
    }

    fn tunnel_pairs(&self) -> Vec<Pair> {
        let pairs = self.opts.pairs.iter().copied();
        pairs.filter(|p| *p != Pair::Direct).collect()
    }

    fn error(&mut self, pair: Pair, what: &str, e: &anyhow::Error) {
        self.report
            .errors
            .push(format!("{} {what}: {e:#}", pair.name()));
    }

    /// `openssl speed` for the two AEAD ciphers SSH negotiates.
    pub fn ceiling(&mut self) {
        let mut lines = vec![
            "### Crypto ceiling (`openssl speed -evp CIPHER -bytes 16384 -seconds 1`, one core)"
                .to_string(),
            String::new(),
            "| cipher | MiB/s |".to_string(),
            "| --- | ---: |".to_string(),
        ];
        for c in ["aes-256-gcm", "chacha20-poly1305"] {
            match openssl_speed(c, 1) {
                Some(v) => lines.push(format!("| {c} | {v:.0} |")),
                None => lines.push(format!("| {c} | (openssl speed failed) |")),
            }
        }
        lines.push(String::new());
        self.report.notes.extend(lines);
    }

    /// Cipher and time to the first forward: one server per pair, the
    /// verbose client started `startup_reps` times against it.
    pub fn startup(&mut self) {
        let section = format!(
            "Startup: time to first -L forward ready (median of {} starts)",
            self.opts.startup_reps
        );
        let mut servers: Vec<(Pair, Server)> = Vec::new();
        for pair in self.tunnel_pairs() {
            let kind = pair.server().expect("tunnel pair");
            match Server::start(&self.env, kind, &self.targets.all_ports()) {
                Ok(s) => servers.push((pair, s)),
                Err(e) => self.error(pair, "startup: server", &e),
            }
        }
        let mut runs: HashMap<Pair, Vec<StartupRun>> = HashMap::new();
        let echo = self.targets.port(Target::Echo);
        for _ in 0..self.opts.startup_reps {
            for (pair, server) in &servers {
                let kind = pair.client().expect("tunnel pair");
                match startup::run(&self.rt, &self.env, kind, server, echo) {
                    Ok(r) => runs.entry(*pair).or_default().push(r),
                    Err(e) => {
                        let e = e.context(server.tail());
                        self.report
                            .errors
                            .push(format!("{} startup: {e:#}", pair.name()));
                    }
                }
            }
        }
        for (pair, rs) in &runs {
            let r = &mut self.report;
            let cipher = rs.iter().find_map(|r| r.cipher.clone());
            r.text(
                &section,
                "negotiated cipher",
                *pair,
                cipher.unwrap_or("?".into()),
            );
            let ready = median(rs.iter().map(|r| Some(r.ready_ms)));
            r.num(
                &section,
                "spawn → ready line, ms",
                Better::Lower,
                *pair,
                ready,
            );
            let echo = median(rs.iter().map(|r| Some(r.first_echo_ms)));
            r.num(
                &section,
                "spawn → first echo, ms",
                Better::Lower,
                *pair,
                echo,
            );
        }
    }

    /// Bulk, connection setup and latency through `path` for every pair
    /// (the direct connection only in the -L section, as the upper bound).
    pub fn path(&mut self, path: PathKind) {
        let size = match path {
            PathKind::Local => self.opts.bulk_size,
            _ => self.opts.side_bulk_size,
        };
        let mut rigs = Vec::new();
        for pair in self.opts.pairs.clone() {
            if pair == Pair::Direct && path != PathKind::Local {
                continue;
            }
            let wanted = [Target::Echo, Target::Source, Target::Sink];
            match Rig::start(&self.env, &self.targets, pair, path, &wanted, false) {
                Ok(rig) => rigs.push(rig),
                Err(e) => self.error(pair, path.flag(), &e),
            }
        }
        let runs = self.path_runs(&rigs, path, size);
        drop(rigs);
        self.file_path(path, size, &runs);
    }

    /// Runs bulk, then setup, then latency, each `runs` times over all rigs.
    fn path_runs(&mut self, rigs: &[Rig], path: PathKind, size: usize) -> PathRuns {
        let mut out = PathRuns::default();
        let mut failed: Vec<Pair> = Vec::new();
        let what = |s: &str| format!("{} {s}", path.flag());
        for _ in 0..self.opts.runs {
            for rig in rigs {
                let r = self.measure(rig, &failed, |b| {
                    let (rt, targets, buf) = (&b.rt, &b.targets, &mut b.buf);
                    rt.block_on(bulk::run(rig, targets, size, buf))
                });
                self.keep(rig, r, &mut out.bulk, &mut failed, &what("bulk"));
            }
        }
        for _ in 0..self.opts.runs {
            for rig in rigs {
                let (n, budget) = (self.opts.setup_conns, self.opts.setup_budget);
                let r = self.measure(rig, &failed, |b| {
                    b.rt.block_on(setup::run(&rig.route, n, budget))
                });
                self.keep(rig, r, &mut out.setup, &mut failed, &what("setup"));
            }
        }
        for _ in 0..self.opts.runs {
            for rig in rigs {
                let (n, size) = (self.opts.latency_msgs, self.opts.msg_size);
                let r = self.measure(rig, &failed, |b| {
                    b.rt.block_on(latency::run(&rig.route, n, size))
                });
                self.keep(rig, r, &mut out.latency, &mut failed, &what("latency"));
            }
        }
        out
    }

    /// Medians of a path's runs into its report section.
    fn file_path(&mut self, path: PathKind, size: usize, runs: &PathRuns) {
        let title = match path {
            PathKind::Local => "-L local forward",
            PathKind::Dynamic => "-D SOCKS5 proxy",
            PathKind::Remote => "-R remote forward",
        };
        let s = &format!(
            "{title}: bulk ({} each way), setup, latency (median of {} runs)",
            format_size(size),
            self.opts.runs
        );
        let (n, budget, msg) = (
            self.opts.setup_conns,
            self.opts.setup_budget.as_secs(),
            self.opts.msg_size,
        );
        let r = &mut self.report;
        for (&p, runs) in &runs.bulk {
            let m = |f: fn(&BulkRun) -> Option<f64>| median(runs.iter().map(f));
            let all = |f: fn(&BulkRun) -> f64| {
                let v: Vec<String> = runs.iter().map(|b| format!("{:.0}", f(b))).collect();
                v.join(" / ")
            };
            let (up, down) = (m(|b| Some(b.up_mibs)), m(|b| Some(b.down_mibs)));
            r.num(s, "bulk upload to target, MiB/s", Better::Higher, p, up);
            r.text(s, "upload, every run", p, all(|b| b.up_mibs));
            r.num(
                s,
                "bulk download from target, MiB/s",
                Better::Higher,
                p,
                down,
            );
            r.text(s, "download, every run", p, all(|b| b.down_mibs));
            let (cc, sc) = (m(|b| b.client_cpu_per_gib), m(|b| b.server_cpu_per_gib));
            r.num(s, "client CPU s per GiB", Better::Lower, p, cc);
            r.num(s, "server CPU s per GiB", Better::Lower, p, sc);
        }
        for (&p, runs) in &runs.setup {
            let m = |f: fn(&SetupRun) -> Option<f64>| median(runs.iter().map(f));
            let metric = format!("setup (open, 1-byte echo, close; {n} or {budget} s): conn/s");
            r.num(s, &metric, Better::Higher, p, m(|x| Some(x.conns_per_sec)));
            let done = m(|x| Some(x.conns as f64)).unwrap_or(0.0);
            r.text(s, "setup cycles per run", p, format!("{done:.0}"));
            r.num(s, "setup p50, µs", Better::Lower, p, m(|x| x.p50_us));
            r.num(s, "setup p99, µs", Better::Lower, p, m(|x| x.p99_us));
        }
        for (&p, runs) in &runs.latency {
            let m = |f: fn(&LatencyRun) -> Option<f64>| median(runs.iter().map(f));
            let (p50, p99) = (m(|x| x.p50_us), m(|x| x.p99_us));
            r.num(
                s,
                &format!("latency {msg}-byte echo p50, µs"),
                Better::Lower,
                p,
                p50,
            );
            r.num(
                s,
                &format!("latency {msg}-byte echo p99, µs"),
                Better::Lower,
                p,
                p99,
            );
        }
    }

    /// Runs `f` unless the rig already failed or its client died.
    fn measure<T>(
        &mut self,
        rig: &Rig,
        failed: &[Pair],
        f: impl FnOnce(&mut Bench) -> Result<T>,
    ) -> Option<Result<T>> {
        if failed.contains(&rig.pair) {
            return None;
        }
        Some(rig.check_alive().and_then(|()| f(self)))
    }

    /// Files a result, or the error (once per rig: later runs are skipped).
    fn keep<T>(
        &mut self,
        rig: &Rig,
        r: Option<Result<T>>,
        into: &mut HashMap<Pair, Vec<T>>,
        failed: &mut Vec<Pair>,
        what: &str,
    ) {
        match r {
            Some(Ok(v)) => into.entry(rig.pair).or_default().push(v),
            Some(Err(e)) => {
                let e = e.context(rig.tails());
                self.error(rig.pair, what, &e);
                failed.push(rig.pair);
            }
            None => {}
        }
    }

    /// The slow-reader scenario, on a fresh rig per pair.
    pub fn slow_reader(&mut self) {
        let (size, stall) = (self.opts.slow_size, self.opts.stall);
        let section = format!(
            "Slow reader: A ({}) unread for {:.0} s, 1-byte echoes on B, same session (-L)",
            format_size(size),
            stall.as_secs_f64()
        );
        for pair in self.opts.pairs.clone() {
            let wanted = [Target::Echo, Target::Source];
            let run = Rig::start(
                &self.env,
                &self.targets,
                pair,
                PathKind::Local,
                &wanted,
                false,
            )
            .and_then(|rig| {
                let (rt, targets, buf) = (&self.rt, &self.targets, &mut self.buf);
                rt.block_on(slow_reader::run(&rig, targets, size, stall, buf))
                    .with_context(|| rig.tails())
            });
            let run = match run {
                Ok(r) => r,
                Err(e) => {
                    self.error(pair, "slow reader", &e);
                    continue;
                }
            };
            let s = section.as_str();
            let r = &mut self.report;
            let ms = |v: Option<f64>| v.map(|us| us / 1e3);
            r.num(
                s,
                "B echo p50, ms",
                Better::Lower,
                pair,
                ms(run.pings.percentile_us(50.0)),
            );
            r.num(
                s,
                "B echo p99, ms",
                Better::Lower,
                pair,
                ms(run.pings.percentile_us(99.0)),
            );
            r.num(
                s,
                "B echo max, ms",
                Better::Lower,
                pair,
                ms(run.pings.max_us()),
            );
            let over = run.pings.count_over(STALL);
            let n = run.pings.len();
            let text = format!("{over} of {n}, {} failed", run.ping_failures);
            r.text(s, "B echoes > 1 s", pair, text);
            r.text(s, "A complete, SHA-256 ok", pair, "yes");
            r.num(
                s,
                "A drain after reading resumes, s",
                Better::Lower,
                pair,
                Some(run.drain_secs),
            );
            let mib = |v: Option<f64>| v.map(|k| k / KIB_PER_MIB);
            r.num(
                s,
                "client RSS growth while stalled, MiB",
                Better::Lower,
                pair,
                mib(run.client_growth_kib),
            );
            r.num(
                s,
                "server RSS growth while stalled, MiB",
                Better::Lower,
                pair,
                mib(run.server_growth_kib),
            );
            let (cf, sf) = (run.client_file_mib, run.server_file_mib);
            r.num(
                s,
                "client open-file growth while stalled, MiB",
                Better::Lower,
                pair,
                cf,
            );
            r.num(
                s,
                "server open-file growth while stalled, MiB",
                Better::Lower,
                pair,
                sf,
            );
            let max_s = run.pings.max_us().unwrap_or(0.0) / 1e6;
            if over > 0 || run.ping_failures > 0 || n == 0 {
                r.findings.push(format!(
                    "{}: one unread connection stalled the session: {over} of {n} echoes on another \
                     connection took over 1 s (max {max_s:.1} s), {} failed",
                    pair.name(),
                    run.ping_failures
                ));
            }
        }
    }

    /// Concurrent connections through one session, a fresh rig per level and pair.
    pub fn concurrency(&mut self) {
        let section = "Concurrency: N connections held open through one session (-L)";
        for level in self.opts.concurrency.clone() {
            for pair in self.opts.pairs.clone() {
                let wanted = [Target::EchoConc];
                let rig = match Rig::start(
                    &self.env,
                    &self.targets,
                    pair,
                    PathKind::Local,
                    &wanted,
                    false,
                ) {
                    Ok(rig) => rig,
                    Err(e) => {
                        self.error(pair, &format!("concurrency {level}"), &e);
                        continue;
                    }
                };
                let run = self.rt.block_on(concurrency::run(&rig, level));
                let alive = rig.check_alive();
                self.file_concurrency(section, pair, &run);
                if run.ok < run.wanted {
                    let mut msg = format!(
                        "{}: {} of {level} concurrent connections worked; failures: {:?}",
                        pair.name(),
                        run.ok,
                        run.failures
                    );
                    if let Err(e) = alive {
                        msg.push_str(&format!("; {e:#}"));
                    }
                    if self.opts.smoke {
                        self.report.errors.push(format!("{msg}\n{}", rig.tails()));
                    } else {
                        self.report.findings.push(msg);
                    }
                }
            }
        }
    }

    fn file_concurrency(&mut self, s: &str, pair: Pair, run: &ConcurrencyRun) {
        let n = run.wanted;
        let r = &mut self.report;
        r.text(
            s,
            &format!("{n}: connections that worked"),
            pair,
            format!("{} / {n}", run.ok),
        );
        r.num(
            s,
            &format!("{n}: time to open all, s"),
            Better::Lower,
            pair,
            Some(run.open_secs),
        );
        let mib = |k: u64| k as f64 / KIB_PER_MIB;
        r.num(
            s,
            &format!("{n}: client peak RSS, MiB"),
            Better::Lower,
            pair,
            run.client.map(|c| mib(c.peak_kib)),
        );
        r.num(
            s,
            &format!("{n}: server peak RSS, MiB"),
            Better::Lower,
            pair,
            run.server.map(|c| mib(c.peak_kib)),
        );
        r.num(
            s,
            &format!("{n}: client RSS per connection, KiB"),
            Better::Lower,
            pair,
            run.client.map(|c| c.per_conn_kib),
        );
        r.num(
            s,
            &format!("{n}: server RSS per connection, KiB"),
            Better::Lower,
            pair,
            run.server.map(|c| c.per_conn_kib),
        );
    }
}
