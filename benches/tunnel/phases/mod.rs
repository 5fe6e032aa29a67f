//! The phases of a run, each turning scenario results into report rows.
//!
//! Repeated measurements are interleaved across pairs (run 1 of every pair,
//! then run 2 of every pair, ...), so that a disturbance on the machine
//! lands on all pairs alike instead of skewing one pair's ratio.

mod cluster;
mod cluster_names;
mod concurrency;
mod consumer;
mod floor;
mod link;
mod many;
mod many_rendezvous;
mod path;
mod reconnect;
mod slow;
mod startup;
mod subnet;
mod wan;

use std::collections::HashMap;

use anyhow::Result;
use tokio::runtime::Runtime;

use crate::env::Env;
use crate::opts::{Options, Pair};
use crate::report::Report;
use crate::rig::Rig;
use crate::targets::{Targets, touched_buffer};

/// Everything a run shares: options, processes' world, runtime, targets,
/// and the report the phases fill in.
pub struct Bench {
    pub opts: Options,
    pub env: Env,
    pub rt: Runtime,
    pub targets: Targets,
    pub report: Report,
    /// Receive buffer for downloads and the slow reader, touched once.
    buf: Vec<u8>,
}

/// For RSS figures, which /proc gives in KiB.
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
}
