//! The slow-consumer phase: how far ahead of a slow local reader each
//! tunnel pulls from a fast target, and what it does with it.

use super::{Bench, KIB_PER_MIB};
use crate::opts::{PathKind, format_size};
use crate::report::Better;
use crate::rig::{Rig, RigOptions};
use crate::scenarios::consumer::{self, ConsumerRun, Side};
use crate::targets::Target;

const MIB: f64 = 1048576.0;

impl Bench {
    pub fn consumer(&mut self) {
        let (rate, secs, offer) = (
            self.opts.consumer_rate,
            self.opts.consumer_secs,
            self.opts.consumer_offer,
        );
        let section = format!(
            "Slow consumer: the -L side reads at {} MiB/s for {:.0} s while the target offers {}",
            crate::report::format_num(rate as f64 / MIB),
            secs.as_secs_f64(),
            format_size(offer as usize)
        );
        for pair in self.opts.pairs.clone() {
            let wanted = [Target::Stream, Target::Echo];
            let run = Rig::start(
                &self.env,
                &self.targets,
                pair,
                PathKind::Local,
                &wanted,
                &RigOptions::default(),
            )
            .and_then(|rig| {
                let own = self.env.path();
                let r =
                    self.rt
                        .block_on(consumer::run(&rig, &self.targets, own, rate, secs, offer));
                r.map_err(|e| e.context(rig.tails()))
            });
            match run {
                Ok(run) => self.file_consumer(&section, pair, &run, offer),
                Err(e) => self.error(pair, "slow consumer", &e),
            }
        }
        self.report.notes.push(format!(
            "Slow consumer: the benchmark reads one -L connection at most {} bytes per second \
             (in steps of 10 ms) while the stream target behind it writes its offer as fast as its \
             socket takes it, counting what it wrote (\"pushed\"). Pulled ahead = pushed − \
             received: everything the tunnel and both sides' sockets hold. Growth is VmRSS of the \
             process tree at the end minus before the request, and the highest sample (every \
             200 ms); scratch files are descriptors pointing at deleted files or into the temp \
             directory (a spill file), most seen at once with their size. The connection is \
             \"open\" if it delivered until the end; then a 1-byte echo on a new connection \
             through the same tunnel says whether the session still works.",
            rate
        ));
        self.report.notes.push(String::new());
    }

    fn file_consumer(&mut self, s: &str, pair: crate::opts::Pair, run: &ConsumerRun, offer: u64) {
        let mib = |b: u64| b as f64 / MIB;
        let r = &mut self.report;
        r.num(
            s,
            "received, MiB",
            Better::Neither,
            pair,
            Some(mib(run.received)),
        );
        let intact = match run.first_bad {
            None => "yes".to_string(),
            Some(at) => format!("no (from byte {at})"),
        };
        r.text(s, "received intact", pair, intact);
        let conn = match &run.ended {
            None => "open".to_string(),
            Some((t, why)) => format!("{why} after {t:.1} s"),
        };
        r.text(s, "connection at the end", pair, conn);
        let session = match &run.session {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        r.text(s, "session afterwards (1-byte echo)", pair, session);
        let pushed = run.pushed.map(mib);
        r.num(s, "target pushed, MiB", Better::Lower, pair, pushed);
        let ahead = run.pushed.map(|p| mib(p.saturating_sub(run.received)));
        r.num(
            s,
            "pulled ahead of the reader, MiB",
            Better::Lower,
            pair,
            ahead,
        );
        let gone = run
            .offer_gone_secs
            .map_or("no".to_string(), |t| format!("after {t:.1} s"));
        r.text(s, "whole offer pushed", pair, gone);
        for (who, side) in [("client", run.client), ("server", run.server)] {
            let Some(side) = side else { continue };
            let Side {
                rss_growth_kib,
                rss_peak_growth_kib,
                files,
                file_bytes,
            } = side;
            let m = |k: f64| Some(k / KIB_PER_MIB);
            r.num(
                s,
                &format!("{who} RSS growth, MiB"),
                Better::Lower,
                pair,
                m(rss_growth_kib),
            );
            let peak = format!("{who} RSS growth at its peak, MiB");
            r.num(s, &peak, Better::Lower, pair, m(rss_peak_growth_kib));
            let text = if files == 0 {
                "none".to_string()
            } else {
                format!("{files} ({})", format_size(file_bytes as usize))
            };
            r.text(
                s,
                &format!("{who} scratch files (most at once)"),
                pair,
                text,
            );
        }
        let name = pair.name();
        if let Some(at) = run.first_bad {
            self.report.errors.push(format!(
                "{name} slow consumer: the bytes from offset {at} differ from what the target sent"
            ));
        }
        if let Some((t, why)) = &run.ended {
            self.report.findings.push(format!(
                "{name}: the slow consumer's connection {why} after {t:.1} s, {} MiB received of \
                 {} MiB pushed",
                crate::report::format_num(mib(run.received)),
                crate::report::format_num(run.pushed.map_or(0.0, mib)),
            ));
        }
        let spilled = [run.client, run.server]
            .iter()
            .flatten()
            .any(|s| s.files > 0);
        if spilled {
            self.report.findings.push(format!(
                "{name}: the tunnel parked the slow consumer's data in a file (target pushed {} of {} MiB)",
                crate::report::format_num(run.pushed.map_or(0.0, mib)),
                crate::report::format_num(mib(offer)),
            ));
        }
        if let Err(e) = &run.session {
            self.report.findings.push(format!(
                "{name}: after the slow consumer, the tunnel no longer forwards: {e}"
            ));
        }
    }
}
