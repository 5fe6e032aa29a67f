//! Connection setup through an established tunnel: open, 1-byte echo,
//! close, one after the other. Each cycle is a new channel (and for -D a
//! SOCKS handshake), so this is what a client making many short requests
//! through the tunnel pays.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::echo_once;
use crate::rig::Rig;
use crate::stats::Samples;
use crate::targets::Target;

#[derive(Clone, Copy, Debug, Default)]
pub struct SetupRun {
    /// Cycles completed (fewer than asked when the time budget ran out).
    pub conns: usize,
    pub conns_per_sec: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// CPU time per cycle of the client and of the server: what each side itself spends
    /// on a connection, apart from the time it waits for the others (/proc ticks are
    /// 10 ms, so with 1,000 cycles this is good to about ±10 µs).
    pub client_cpu_us: Option<f64>,
    pub server_cpu_us: Option<f64>,
}

/// Runs `conns` cycles back to back, or as many as fit in `budget`.
pub async fn run(rig: &Rig, conns: usize, budget: Duration) -> Result<SetupRun> {
    run_paced(rig, conns, budget, Duration::ZERO).await
}

/// [`run`] with `pause` between cycles (not counted in their times): a client that
/// makes a request now and then rather than a stream of them.
pub async fn run_paced(
    rig: &Rig,
    conns: usize,
    budget: Duration,
    pause: Duration,
) -> Result<SetupRun> {
    let route = &rig.route;
    let mut samples = Samples::with_capacity(conns);
    let (c0, s0) = rig.usage();
    let start = Instant::now();
    let mut back = [0u8; 1];
    for i in 0..conns {
        let t = Instant::now();
        let mut s = tokio::time::timeout(super::SMALL_TIMEOUT, route.dial(Target::Echo))
            .await
            .with_context(|| format!("connection {i}: connect timed out"))?
            .with_context(|| format!("connection {i}: connect"))?;
        echo_once(&mut s, &[i as u8], &mut back)
            .await
            .with_context(|| format!("connection {i}"))?;
        drop(s);
        samples.push(t.elapsed());
        if start.elapsed() > budget {
            break;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (c1, s1) = rig.usage();
    let n = samples.len().max(1) as f64;
    let per_cycle = |a: Option<crate::procs::Usage>, b: Option<crate::procs::Usage>| {
        Some((b?.cpu - a?.cpu) * 1e6 / n)
    };
    Ok(SetupRun {
        client_cpu_us: per_cycle(c0, c1),
        server_cpu_us: per_cycle(s0, s1),
        conns: samples.len(),
        conns_per_sec: samples.len() as f64 / secs,
        p50_us: samples.percentile_us(50.0),
        p99_us: samples.percentile_us(99.0),
    })
}
