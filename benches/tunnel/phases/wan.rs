//! The wan phase: one stream each way through every pair while its SSH
//! connection crosses a delay line of each round trip, with and without a
//! rate cap, next to direct TCP across the same kind of line (the upper
//! bound every ratio here is relative to). A tunnel whose channel window
//! does not cover the link's bandwidth-delay product is held to window / RTT.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::Bench;
use crate::link::{QUEUE_BYTES, Shape};
use crate::opts::{Pair, PathKind, format_ms, format_rate};
use crate::report::{Better, format_num};
use crate::rig::{Rig, RigOptions};
use crate::scenarios::wan::{self, WanRun};
use crate::targets::Target;

/// OpenSSH's channel window (CHAN_TCP_WINDOW_DEFAULT): what it can have in
/// flight per channel, whatever the link.
const OPENSSH_WINDOW: f64 = 2.0 * 1048576.0;

/// Direct TCP below this share of a rate cap means the line, not the
/// tunnels, sets the ceiling: worth a finding.
const LINE_OK: f64 = 0.9;

impl Bench {
    pub fn wan(&mut self) {
        for rate in self.opts.wan_rates.clone() {
            let section = self.wan_section(rate);
            self.report.reference(&section, Pair::Direct);
            let mut lines = Vec::new();
            for rtt in self.opts.wan_rtts.clone() {
                let shape = Shape {
                    one_way: rtt / 2,
                    rate,
                };
                let measured = self.line_rtt(shape);
                let (down, up) = self.wan_runs(shape);
                let rtt_ms = format_ms(rtt);
                let r = &mut self.report;
                for (dir, runs) in [("download", &down), ("upload", &up)] {
                    let metric = format!("{dir}, {rtt_ms} ms RTT, MiB/s");
                    for (&p, run) in runs {
                        r.num(&section, &metric, Better::Higher, p, Some(run.mibs()));
                    }
                    let metric = format!("{dir}, {rtt_ms} ms RTT, second half, MiB/s");
                    for (&p, run) in runs {
                        if let Some(late) = run.late_mibs() {
                            r.num(&section, &metric, Better::Higher, p, Some(late));
                        }
                    }
                }
                let limit = shape.limit() / 1048576.0;
                let mut line = format!("{rtt_ms} ms");
                if let Some(ms) = measured {
                    let _ = write!(line, " (measured {} ms)", format_num(ms));
                }
                let _ = write!(
                    line,
                    ": line limit {} MiB/s, OpenSSH's 2 MiB window / RTT {} MiB/s",
                    format_num(limit),
                    format_num(OPENSSH_WINDOW / 1048576.0 / rtt.as_secs_f64().max(1e-6)),
                );
                if let Some(d) = down.get(&Pair::Direct) {
                    let share = d.mibs() / limit;
                    let _ = write!(
                        line,
                        ", direct download at {:.0} % of the limit",
                        share * 100.0
                    );
                    // (A size-limited transfer is mostly ramp-up: no verdict.)
                    let timed = self.opts.wan_size.is_none();
                    if timed && rate.is_some() && share < LINE_OK {
                        self.report.findings.push(format!(
                            "wan, {}, {rtt_ms} ms: direct TCP reached only {:.0} % of the rate cap \
                             ({} of {} MiB/s): the line or this machine, not the tunnels, limits \
                             these rows",
                            format_rate(rate),
                            share * 100.0,
                            format_num(d.mibs()),
                            format_num(limit)
                        ));
                    }
                }
                lines.push(line);
            }
            self.report
                .notes
                .push(format!("{}: {}.", section_short(rate), lines.join("; ")));
        }
        self.report.notes.push(wan_note(&self.opts.wan_size));
        self.report.notes.push(String::new());
    }

    fn wan_section(&self, rate: Option<u64>) -> String {
        let what = match self.opts.wan_size {
            Some(n) => format!(
                "{:.0} s or {}",
                self.opts.wan_secs.as_secs_f64(),
                crate::opts::format_size(n as usize)
            ),
            None => format!("{:.0} s", self.opts.wan_secs.as_secs_f64()),
        };
        format!(
            "Wan: one -L stream each way for {what} across a user-space line, {} (×ratio to direct over the same line)",
            format_rate(rate)
        )
    }

    /// A download and an upload through every pair across a line shaped so.
    fn wan_runs(&mut self, shape: Shape) -> (HashMap<Pair, WanRun>, HashMap<Pair, WanRun>) {
        let what = format!(
            "wan {} ms, {}",
            format_ms(shape.one_way * 2),
            format_rate(shape.rate)
        );
        let mut rigs = Vec::new();
        for pair in self.opts.pairs.clone() {
            let opts = RigOptions {
                link: Some((self.rt.handle().clone(), shape)),
                ..RigOptions::default()
            };
            let wanted = [Target::Stream, Target::Check];
            match Rig::start(
                &self.env,
                &self.targets,
                pair,
                PathKind::Local,
                &wanted,
                &opts,
            ) {
                Ok(rig) => rigs.push(rig),
                Err(e) => self.error(pair, &what, &e),
            }
        }
        let (secs, size) = (self.opts.wan_secs, self.opts.wan_size);
        let mut down: HashMap<Pair, Vec<WanRun>> = HashMap::new();
        let mut up: HashMap<Pair, Vec<WanRun>> = HashMap::new();
        let mut failed = Vec::new();
        for rig in &rigs {
            let r = self.measure(rig, &failed, |b| {
                b.rt.block_on(wan::download(rig, &b.targets, secs, size))
            });
            self.keep(rig, r, &mut down, &mut failed, &format!("{what} download"));
        }
        for rig in &rigs {
            let r = self.measure(rig, &failed, |b| {
                b.rt.block_on(wan::upload(rig, &b.targets, secs, size))
            });
            self.keep(rig, r, &mut up, &mut failed, &format!("{what} upload"));
        }
        drop(rigs);
        let first = |m: HashMap<Pair, Vec<WanRun>>| {
            m.into_iter()
                .filter_map(|(p, v)| Some((p, *v.first()?)))
                .collect()
        };
        (first(down), first(up))
    }
}

fn section_short(rate: Option<u64>) -> String {
    format!("Wan, {}", format_rate(rate))
}

fn wan_note(size: &Option<u64>) -> String {
    let until = match size {
        Some(_) => "for the time given or until the size crossed, whichever came first",
        None => {
            "for the time given (a fresh connection and channel each, so the rate includes their ramp-up)"
        }
    };
    format!(
        "Wan: the SSH connection (for direct, the TCP connection itself) crosses a user-space \
         delay line (benches/tunnel/link.rs) that holds each chunk for half the round trip in each \
         direction, after a token bucket when the line is capped; chunks waiting for the bucket \
         may fill one round trip's worth of the rate, and the line holds at most {} MiB per \
         direction, so an uncapped line's limit is that over the one-way delay. The line ends TCP \
         on both sides: no losses and no TCP round trips, so an SSH channel window smaller than \
         rate × RTT is the only thing that holds a tunnel below the line. One stream runs \
         {until}: download = the target sends the pattern repeated through the tunnel to the \
         benchmark's -L connection (MiB/s from the request to the last byte), upload = the \
         benchmark sends it to a sink (to the sink's EOF, after everything sent arrived); both \
         compared byte for byte with the pattern. The \"second half\" rows count only the \
         run's second half (bytes read, or for uploads written, once windows have ramped up): \
         what a long transfer gets. One run per cell, fresh client and server per \
         line; the ratio is to direct TCP over the same line.",
        QUEUE_BYTES >> 20
    )
}
