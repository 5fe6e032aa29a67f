//! Bulk, connection setup and latency through one path (-L, -D or -R).

use std::collections::HashMap;

use super::Bench;
use crate::opts::{Pair, PathKind, format_size};
use crate::report::Better;
use crate::rig::{Rig, RigOptions};
use crate::scenarios::bulk::{self, BulkRun};
use crate::scenarios::latency::{self, LatencyRun};
use crate::scenarios::setup::{self, SetupRun};
use crate::stats::median;
use crate::targets::Target;

/// Results of one path phase, per pair.
#[derive(Default)]
struct PathRuns {
    bulk: HashMap<Pair, Vec<BulkRun>>,
    setup: HashMap<Pair, Vec<SetupRun>>,
    latency: HashMap<Pair, Vec<LatencyRun>>,
}

impl Bench {
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
            match Rig::start(
                &self.env,
                &self.targets,
                pair,
                path,
                &wanted,
                &RigOptions::default(),
            ) {
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
                let r = self.measure(rig, &failed, |b| b.rt.block_on(setup::run(rig, n, budget)));
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
            let (cc, sc) = (m(|x| x.client_cpu_us), m(|x| x.server_cpu_us));
            r.num(
                s,
                "setup: client CPU µs per connection",
                Better::Lower,
                p,
                cc,
            );
            r.num(
                s,
                "setup: server CPU µs per connection",
                Better::Lower,
                p,
                sc,
            );
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
}
