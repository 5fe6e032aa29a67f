//! -L connection setup across a slower link: the same open, 1-byte echo,
//! close cycles as the -L path phase, with a [`DelayLine`] between client
//! and server, so that round trips rather than CPU decide the rate. Each
//! cycle costs two round trips (channel open, then the echo) with a plain
//! client; warren's opt-in `--preconnect` opens the next channel ahead of
//! need and saves the first.

use std::collections::HashMap;

use anyhow::Context;

use super::Bench;
use crate::clients::ClientOptions;
use crate::link::{DelayLine, Shape};
use crate::opts::{ClientKind, Pair, PathKind, format_ms};
use crate::report::{Better, Report, format_num};
use crate::rig::{Rig, RigOptions};
use crate::route::Route;
use crate::scenarios::echo_once;
use crate::scenarios::setup::{self, SetupRun};
use crate::stats::{Samples, median};
use crate::targets::Target;

/// Suffix of the rows whose warren columns hold `--preconnect` figures; the
/// ssh columns repeat the plain figures, so the ratio is to plain ssh→sshd.
const PRECONNECT_ROWS: &str = " — warren --preconnect (ssh as above)";

/// Echoes through the delay line alone, to state its real round trip.
const LINE_PINGS: usize = 20;

impl Bench {
    /// -L setup through a delayed link for every tunnel pair, and for warren
    /// clients a second rig with `--preconnect`.
    pub fn link(&mut self) {
        let rtt = self.opts.link_rtt;
        let one_way = rtt / 2;
        let line_rtt = self.line_rtt(Shape::delay(one_way));
        let mut rigs: Vec<(Rig, bool)> = Vec::new();
        for pair in self.tunnel_pairs() {
            let warren = pair.client() == Some(ClientKind::Warren);
            for preconnect in [false, true] {
                if preconnect && !warren {
                    continue;
                }
                let opts = RigOptions {
                    client: ClientOptions {
                        preconnect,
                        ..ClientOptions::default()
                    },
                    link: Some((self.rt.handle().clone(), Shape::delay(one_way))),
                };
                let wanted = [Target::Echo];
                match Rig::start(
                    &self.env,
                    &self.targets,
                    pair,
                    PathKind::Local,
                    &wanted,
                    &opts,
                ) {
                    Ok(rig) => rigs.push((rig, preconnect)),
                    Err(e) => self.error(pair, what(preconnect), &e),
                }
            }
        }
        // Index 0: plain clients, 1: warren --preconnect. Two rigs share a
        // pair, so results and failures are kept apart per variant.
        let mut runs: [HashMap<Pair, Vec<SetupRun>>; 2] = Default::default();
        let mut paced: [HashMap<Pair, Vec<SetupRun>>; 2] = Default::default();
        let mut failed: [Vec<Pair>; 2] = Default::default();
        let (n, budget) = (self.opts.link_conns, self.opts.setup_budget);
        for _ in 0..self.opts.runs {
            for (rig, preconnect) in &rigs {
                let i = usize::from(*preconnect);
                let r = self.measure(rig, &failed[i], |b| {
                    b.rt.block_on(setup::run(rig, n, budget))
                });
                self.keep(rig, r, &mut runs[i], &mut failed[i], what(*preconnect));
            }
        }
        // The same cycles with a pause of two round trips after each: a client
        // making a request now and then, where a spare has time to arrive.
        let pause = rtt * 2;
        let n = (n / 2).max(1);
        for _ in 0..self.opts.runs {
            for (rig, preconnect) in &rigs {
                let i = usize::from(*preconnect);
                let r = self.measure(rig, &failed[i], |b| {
                    b.rt.block_on(setup::run_paced(rig, n, budget, pause))
                });
                self.keep(rig, r, &mut paced[i], &mut failed[i], what(*preconnect));
            }
        }
        drop(rigs);
        self.file_link(&runs, &paced, line_rtt);
    }

    /// p50 of 1-byte echoes through a delay line straight to the echo
    /// target: the link's real round trip in ms (an error goes into the
    /// report).
    pub(super) fn line_rtt(&mut self, shape: Shape) -> Option<f64> {
        let echo = self.targets.port(Target::Echo);
        let r = DelayLine::start(self.rt.handle(), echo, shape).and_then(|line| {
            self.rt.block_on(async {
                let route = Route::Ports(HashMap::from([(Target::Echo, line.port())]));
                let mut s = route.dial(Target::Echo).await.context("connect")?;
                let mut samples = Samples::with_capacity(LINE_PINGS);
                let mut back = [0u8; 1];
                for i in 0..LINE_PINGS {
                    let t = tokio::time::Instant::now();
                    echo_once(&mut s, &[i as u8], &mut back).await?;
                    samples.push(t.elapsed());
                }
                Ok::<_, anyhow::Error>(samples.percentile_us(50.0))
            })
        });
        match r {
            Ok(us) => us.map(|us| us / 1e3),
            Err(e) => {
                let e = e.context("echo through the delay line alone");
                self.report.errors.push(format!("link: {e:#}"));
                None
            }
        }
    }

    /// Medians of the link runs into their section, and the note saying
    /// what the link is.
    fn file_link(
        &mut self,
        runs: &[HashMap<Pair, Vec<SetupRun>>; 2],
        paced: &[HashMap<Pair, Vec<SetupRun>>; 2],
        line_rtt: Option<f64>,
    ) {
        let rtt = format_ms(self.opts.link_rtt);
        let s = &format!(
            "-L setup across a link with {rtt} ms round trip (user-space delay line), median of {} runs",
            self.opts.runs
        );
        let pairs = self.tunnel_pairs();
        let apart = format!(", {} ms apart", format_ms(self.opts.link_rtt * 2));
        let r = &mut self.report;
        for &p in &pairs {
            if let Some(v) = runs[0].get(&p) {
                file_rows(r, s, "", p, v);
            }
        }
        for &p in &pairs {
            let plain = p.client() == Some(ClientKind::Ssh);
            if let Some(v) = runs[usize::from(!plain)].get(&p) {
                file_rows(r, s, PRECONNECT_ROWS, p, v);
            }
        }
        for &p in &pairs {
            if let Some(v) = paced[0].get(&p) {
                file_latency_rows(r, s, &apart, p, v);
            }
        }
        for &p in &pairs {
            let plain = p.client() == Some(ClientKind::Ssh);
            if let Some(v) = paced[usize::from(!plain)].get(&p) {
                file_latency_rows(r, s, &format!("{apart}{PRECONNECT_ROWS}"), p, v);
            }
        }
        let measured = match line_rtt {
            Some(ms) => format!(
                " (measured here: {} ms, p50 of {LINE_PINGS} 1-byte echoes through the line alone)",
                format_num(ms)
            ),
            None => String::new(),
        };
        let note = format!(
            "Link: the SSH connection crosses a user-space delay line (benches/tunnel/link.rs; \
             the machine has no netem) that holds every chunk for half the {rtt} ms round trip \
             in each direction; the benchmark's connections, the client's -L port and the target \
             stay on loopback. A run is {} open, 1-byte echo, close cycles (or {} s) back to back, \
             then half as many with a pause of two round trips after each (rows \"ms apart\"): \
             two round trips each (channel open, echo), one when `--preconnect` has a channel \
             open ahead. \
             Waits are timer sleeps (about 0.1-0.2 ms late, where tokio's 1 ms timer was 1.3 ms \
             late), so the real round trip is slightly above nominal{measured}. The line ends \
             TCP on both sides, so acknowledgements come from it at once or by the kernel's \
             delayed-ACK rules, not a round trip later; sshd, whose socket holds small packets \
             for an acknowledgement (Nagle), waits on those and loses a round trip on some \
             cycles.",
            self.opts.link_conns,
            self.opts.setup_budget.as_secs(),
        );
        let r = &mut self.report;
        r.notes.push(note);
        r.notes.push(String::new());
    }
}

/// conn/s, p50 and p99 of one pair's runs; `suffix` names the variant.
fn file_rows(r: &mut Report, s: &str, suffix: &str, p: Pair, runs: &[SetupRun]) {
    let m = |f: fn(&SetupRun) -> Option<f64>| median(runs.iter().map(f));
    let ms = |us: Option<f64>| us.map(|us| us / 1e3);
    let rate = m(|x| Some(x.conns_per_sec));
    r.num(s, &format!("setup conn/s{suffix}"), Better::Higher, p, rate);
    let p50 = ms(m(|x| x.p50_us));
    r.num(s, &format!("setup p50, ms{suffix}"), Better::Lower, p, p50);
    let p99 = ms(m(|x| x.p99_us));
    r.num(s, &format!("setup p99, ms{suffix}"), Better::Lower, p, p99);
}

/// p50 and p99 of paced runs (their rate counts the pauses, so it is left out).
fn file_latency_rows(r: &mut Report, s: &str, suffix: &str, p: Pair, runs: &[SetupRun]) {
    let m = |f: fn(&SetupRun) -> Option<f64>| median(runs.iter().map(f));
    let ms = |us: Option<f64>| us.map(|us| us / 1e3);
    let p50 = ms(m(|x| x.p50_us));
    r.num(s, &format!("setup p50, ms{suffix}"), Better::Lower, p, p50);
    let p99 = ms(m(|x| x.p99_us));
    r.num(s, &format!("setup p99, ms{suffix}"), Better::Lower, p, p99);
}

/// What a failure is filed under.
fn what(preconnect: bool) -> &'static str {
    if preconnect {
        "link --preconnect"
    } else {
        "link"
    }
}
