//! The slow-reader phase: does one unread connection stall its session?

use anyhow::Context;

use super::{Bench, KIB_PER_MIB};
use crate::opts::{PathKind, format_size};
use crate::report::Better;
use crate::rig::{Rig, RigOptions};
use crate::scenarios::slow_reader::{self, STALL};
use crate::targets::Target;

impl Bench {
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
                &RigOptions::default(),
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
}
