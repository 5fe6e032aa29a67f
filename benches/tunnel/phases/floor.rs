//! The setup floor: the -L setup cycles of the path phase through a
//! plaintext mux (see `floor.rs`), run interleaved with ssh→sshd, to show
//! how far below the 1.5× setup target the cheapest possible two-process
//! tunnel already is on this machine.

use anyhow::Result;

use super::Bench;
use crate::floor::Mux;
use crate::opts::{Pair, PathKind};
use crate::report::format_num;
use crate::rig::{Rig, RigOptions};
use crate::route::Route;
use crate::scenarios::setup::{self, SetupRun};
use crate::stats::median;
use crate::targets::Target;

/// The target for the connection setup rate, as a ratio to ssh→sshd.
const TARGET: f64 = 1.5;

/// One way connections are set up in this phase.
enum Way {
    Reference(Rig),
    Mux { rig: Rig, eager: bool, _mux: Mux },
}

impl Way {
    fn rig(&self) -> &Rig {
        match self {
            Way::Reference(rig) | Way::Mux { rig, .. } => rig,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Way::Reference(_) => "ssh→sshd",
            Way::Mux { eager: false, .. } => "plaintext mux",
            Way::Mux { eager: true, .. } => "plaintext mux, data sent with the open",
        }
    }
}

impl Bench {
    pub fn floor(&mut self) {
        let mut ways = Vec::new();
        if self.opts.pairs.contains(&Pair::REFERENCE) {
            let wanted = [Target::Echo];
            let opts = RigOptions::default();
            match Rig::start(
                &self.env,
                &self.targets,
                Pair::REFERENCE,
                PathKind::Local,
                &wanted,
                &opts,
            ) {
                Ok(rig) => ways.push(Way::Reference(rig)),
                Err(e) => self.error(Pair::REFERENCE, "setup floor", &e),
            }
        }
        for eager in [false, true] {
            match self.start_mux(eager) {
                Ok(way) => ways.push(way),
                Err(e) => self
                    .report
                    .errors
                    .push(format!("setup floor, plaintext mux: {e:#}")),
            }
        }
        let mut runs: Vec<Vec<SetupRun>> = ways.iter().map(|_| Vec::new()).collect();
        let mut failed = vec![false; ways.len()];
        let (n, budget) = (self.opts.setup_conns, self.opts.setup_budget);
        for _ in 0..self.opts.runs {
            for (i, way) in ways.iter().enumerate() {
                if failed[i] {
                    continue;
                }
                let rig = way.rig();
                match rig
                    .check_alive()
                    .and_then(|()| self.rt.block_on(setup::run(rig, n, budget)))
                {
                    Ok(r) => runs[i].push(r),
                    Err(e) => {
                        failed[i] = true;
                        let e = e.context(rig.tails());
                        self.report
                            .errors
                            .push(format!("setup floor, {}: {e:#}", way.label()));
                    }
                }
            }
        }
        self.file_floor(&ways, &runs);
    }

    /// A mux in front of the echo target, and a rig (no client or server of
    /// its own to measure) whose route enters it.
    fn start_mux(&self, eager: bool) -> Result<Way> {
        let mux = Mux::start(self.targets.port(Target::Echo), eager)?;
        let route = Route::Ports([(Target::Echo, mux.port)].into_iter().collect());
        Ok(Way::Mux {
            rig: Rig::external(Pair::Direct, route),
            eager,
            _mux: mux,
        })
    }

    fn file_floor(&mut self, ways: &[Way], runs: &[Vec<SetupRun>]) {
        let rate = |r: &[SetupRun]| median(r.iter().map(|x| Some(x.conns_per_sec)));
        let p50 = |r: &[SetupRun]| median(r.iter().map(|x| x.p50_us));
        let reference = ways
            .iter()
            .zip(runs)
            .find(|(w, _)| matches!(w, Way::Reference(_)))
            .and_then(|(_, r)| rate(r));
        let mut parts = Vec::new();
        for (way, r) in ways.iter().zip(runs) {
            let Some(v) = rate(r) else { continue };
            let ratio = match (way, reference) {
                (Way::Mux { .. }, Some(base)) if base > 0.0 => format!(" (×{:.2})", v / base),
                _ => String::new(),
            };
            let p50 = p50(r).map_or(String::new(), |us| format!(", p50 {} µs", format_num(us)));
            parts.push(format!(
                "{} {} conn/s{ratio}{p50}",
                way.label(),
                format_num(v)
            ));
        }
        if parts.is_empty() {
            return;
        }
        let target = reference.map_or(String::new(), |base| {
            format!(
                " The {TARGET}× setup target would be {} conn/s.",
                format_num(base * TARGET)
            )
        });
        self.report.notes.push(format!(
            "Setup floor (-L, {} cycles per run, median of {} runs interleaved): {}.{target} \
             The mux (benches/tunnel/floor.rs) makes the hops an SSH forward makes (accept, \
             open, connect, confirmation, data, EOF, close) between two one-thread processes, \
             with no encryption, MAC, window or padding, on tokio like warren: an SSH client \
             and server could set up connections faster than it only by spending less per hop \
             than a bare tokio socket task does, not by anything in SSH. \"Data sent with the \
             open\" also skips the confirmation's round trip, which SSH cannot (data needs the \
             channel number the confirmation carries).",
            self.opts.setup_conns,
            self.opts.runs,
            parts.join("; "),
        ));
        self.report.notes.push(String::new());
    }
}
