//! Connection setup through an established tunnel: open, 1-byte echo,
//! close, one after the other. Each cycle is a new channel (and for -D a
//! SOCKS handshake), so this is what a client making many short requests
//! through the tunnel pays.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::echo_once;
use crate::route::Route;
use crate::stats::Samples;
use crate::targets::Target;

#[derive(Clone, Copy, Debug, Default)]
pub struct SetupRun {
    /// Cycles completed (fewer than asked when the time budget ran out).
    pub conns: usize,
    pub conns_per_sec: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// Runs `conns` cycles, or as many as fit in `budget`.
pub async fn run(route: &Route, conns: usize, budget: Duration) -> Result<SetupRun> {
    let mut samples = Samples::with_capacity(conns);
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
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(SetupRun {
        conns: samples.len(),
        conns_per_sec: samples.len() as f64 / secs,
        p50_us: samples.percentile_us(50.0),
        p99_us: samples.percentile_us(99.0),
    })
}
