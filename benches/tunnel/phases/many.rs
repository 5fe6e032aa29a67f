//! The many phase: the 100,000 concurrent forwarded connections through
//! one session, with memory per connection on both sides.
//!
//! Connections enter through the client's -D port: a SOCKS request names the
//! target, so they are spread over the echo helper's ports, and the benchmark
//! dials from several loopback source addresses; with one address and port on
//! each hop, the 28,000 ephemeral ports of Linux's default range would end the
//! test before the tunnel does. By default only warren → warrend runs: OpenSSH's
//! ssh and sshd poll every channel's descriptor on each turn of their loop, so
//! opening 100,000 channels through them takes hours (10,000 took ssh about a
//! minute in the concurrency phase; the cost grows with the square).

use std::sync::Arc;

use super::Bench;
use crate::opts::{Pair, PathKind};
use crate::rig::{Rig, RigOptions};
use crate::scenarios::concurrency;
use crate::targets::Target;

/// Descriptors kept free for everything else a process holds (listeners, the SSH
/// connection, the audit log, the benchmark's targets).
const FD_RESERVE: usize = 1500;

impl Bench {
    pub fn many(&mut self) {
        // Every process on the path (this one, the echo helper, the client, the server)
        // holds one descriptor per connection. Where the hard limit cannot be raised (no
        // CAP_SYS_RESOURCE), run as many as it allows and say so.
        let limit = crate::procs::raise_nofile(0) as usize;
        let room = limit.saturating_sub(FD_RESERVE);
        let n = self.opts.many.min(room.max(1));
        if n < self.opts.many {
            self.report.findings.push(format!(
                "many: {} connections were asked for, but a process here may hold only {limit} \
                 descriptors (the hard limit; raising it needs CAP_SYS_RESOURCE, which this \
                 machine does not grant), and each process on the path holds one per \
                 connection: ran {n}",
                self.opts.many
            ));
        }
        let section = format!(
            "Many: {n} connections held open through one session (-D, spread over {} source \
             addresses and {} target ports)",
            crate::route::SOURCES,
            self.targets.echo_ports.len()
        );
        let ports = Arc::new(self.targets.echo_ports.clone());
        for pair in self.opts.many_pairs() {
            let rig = match Rig::start(
                &self.env,
                &self.targets,
                pair,
                PathKind::Dynamic,
                &[Target::EchoConc],
                &RigOptions::default(),
            ) {
                Ok(rig) => rig,
                Err(e) => {
                    self.error(pair, &format!("many {n}"), &e);
                    continue;
                }
            };
            let run = self
                .rt
                .block_on(concurrency::run(&rig, n, Some(ports.clone())));
            let alive = rig.check_alive();
            self.file_concurrency(&section, pair, &run);
            if run.ok < run.wanted || alive.is_err() {
                let mut msg = format!(
                    "{}: {} of {n} concurrent connections worked; failures: {:?}",
                    pair.name(),
                    run.ok,
                    run.failures
                );
                if let Err(e) = alive {
                    msg.push_str(&format!("; {e:#}"));
                }
                self.report.errors.push(format!("{msg}\n{}", rig.tails()));
            }
        }
        // The same count where no process needs a descriptor per connection.
        self.many_rendezvous(self.opts.many);
        self.report.notes.push(format!(
            "Many: each connection is opened through the client's SOCKS port and echoes one \
             byte, all are held, then all echo once more at the same time; RSS per connection \
             is (RSS with all open − RSS before) / connections. Pairs: {} (OpenSSH's ssh and \
             sshd poll every channel on each turn of their loop, which makes opening this many \
             take hours; `--only` adds them).",
            self.opts
                .many_pairs()
                .iter()
                .map(|p: &Pair| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}
