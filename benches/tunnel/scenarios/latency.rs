//! Request/response latency of small messages on one connection: one
//! message in flight at a time, each echoed in full before the next.

use std::time::Instant;

use anyhow::{Context, Result};

use super::echo_once;
use crate::route::Route;
use crate::stats::Samples;
use crate::targets::Target;

/// Exchanges before measuring: the first ones pay for lazy setup
/// (buffers, window updates) that says nothing about steady latency.
const WARMUP: usize = 100;

#[derive(Clone, Copy, Debug, Default)]
pub struct LatencyRun {
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

pub async fn run(route: &Route, msgs: usize, size: usize) -> Result<LatencyRun> {
    let mut s = route.dial(Target::Echo).await.context("connect to echo")?;
    let mut msg = vec![0u8; size.max(1)];
    let mut back = vec![0u8; msg.len()];
    let mut samples = Samples::with_capacity(msgs);
    for i in 0..WARMUP + msgs {
        msg[0] = i as u8;
        let t = Instant::now();
        echo_once(&mut s, &msg, &mut back)
            .await
            .with_context(|| format!("message {i}"))?;
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    Ok(LatencyRun {
        p50_us: samples.percentile_us(50.0),
        p99_us: samples.percentile_us(99.0),
    })
}
