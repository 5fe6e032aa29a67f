//! The concurrency phase: 1,000 and 10,000 connections through one session.

use super::{Bench, KIB_PER_MIB};
use crate::opts::{Pair, PathKind};
use crate::report::Better;
use crate::rig::{Rig, RigOptions};
use crate::scenarios::concurrency::{self, ConcurrencyRun};
use crate::targets::Target;

impl Bench {
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
                    &RigOptions::default(),
                ) {
                    Ok(rig) => rig,
                    Err(e) => {
                        self.error(pair, &format!("concurrency {level}"), &e);
                        continue;
                    }
                };
                let run = self.rt.block_on(concurrency::run(&rig, level, None));
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

    pub(super) fn file_concurrency(&mut self, s: &str, pair: Pair, run: &ConcurrencyRun) {
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
        let secs = crate::scenarios::concurrency::AFTER_CLOSE.as_secs();
        let after =
            |h: Option<crate::scenarios::concurrency::Held>| h.and_then(|h| h.after_kib).map(mib);
        r.num(
            s,
            &format!("{n}: client RSS {secs} s after all closed, MiB"),
            Better::Lower,
            pair,
            after(run.client),
        );
        r.num(
            s,
            &format!("{n}: server RSS {secs} s after all closed, MiB"),
            Better::Lower,
            pair,
            after(run.server),
        );
    }
}
