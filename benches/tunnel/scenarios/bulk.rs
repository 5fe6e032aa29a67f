//! Bulk throughput of one TCP stream each way, verified by SHA-256, with the
//! CPU time client and server spent on it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rig::Rig;
use crate::targets::{Target, Targets, sha256};

/// One run: `size` bytes up (to the sink), then `size` bytes down (from the source).
#[derive(Clone, Copy, Debug, Default)]
pub struct BulkRun {
    /// MiB/s from the benchmark through the tunnel to the target.
    pub up_mibs: f64,
    /// MiB/s from the target through the tunnel to the benchmark.
    pub down_mibs: f64,
    /// CPU seconds per GiB moved (both directions together).
    pub client_cpu_per_gib: Option<f64>,
    pub server_cpu_per_gib: Option<f64>,
}

/// Generous deadline for moving `size` bytes: a tunnel slower than 5 MiB/s
/// is broken, not slow.
fn deadline(size: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_secs_f64(size as f64 / (5.0 * 1048576.0))
}

/// Runs one upload and one download of `size` bytes; `down` is a touched
/// buffer of at least `size` bytes to receive into.
pub async fn run(rig: &Rig, targets: &Targets, size: usize, down: &mut [u8]) -> Result<BulkRun> {
    let (c0, s0) = rig.usage();
    let up_secs = tokio::time::timeout(deadline(size), upload(rig, targets, size))
        .await
        .context("upload timed out")??;
    let down_secs = tokio::time::timeout(deadline(size), download(rig, size, down))
        .await
        .context("download timed out")??;
    let (c1, s1) = rig.usage();
    // Verified after the clocks stopped (hashing competes for the same CPUs).
    ensure!(
        sha256(&down[..size]) == targets.pattern.sha256(size),
        "download: SHA-256 mismatch"
    );
    let gib = 2.0 * size as f64 / (1u64 << 30) as f64;
    let per_gib = |a: Option<crate::procs::Usage>, b: Option<crate::procs::Usage>| {
        Some((b?.cpu - a?.cpu) / gib)
    };
    let mib = size as f64 / 1048576.0;
    Ok(BulkRun {
        up_mibs: mib / up_secs,
        down_mibs: mib / down_secs,
        client_cpu_per_gib: per_gib(c0, c1),
        server_cpu_per_gib: per_gib(s0, s1),
    })
}

/// Sends `size` bytes to the sink; returns the seconds until the sink saw
/// EOF (same process, same clock), after checking its hash and length.
async fn upload(rig: &Rig, targets: &Targets, size: usize) -> Result<f64> {
    targets.take_sink_report();
    let mut s = rig
        .route
        .dial(Target::Sink)
        .await
        .context("connect to sink")?;
    let start = Instant::now();
    s.write_all(targets.pattern.prefix(size))
        .await
        .context("upload write")?;
    s.shutdown().await.context("upload shutdown")?;
    let mut reply = [0u8; 40];
    s.read_exact(&mut reply).await.context("sink reply")?;
    let report = targets
        .take_sink_report()
        .context("the sink did not report")?;
    let len = u64::from_le_bytes(reply[32..].try_into().unwrap_or_default()) as usize;
    ensure!(len == size, "upload: sink received {len} of {size} bytes");
    ensure!(
        reply[..32] == targets.pattern.sha256(size),
        "upload: SHA-256 mismatch"
    );
    Ok(report.eof_at.duration_since(start).as_secs_f64())
}

/// Asks the source for `size` bytes and reads them into `buf`; returns the
/// seconds from the request to the last byte.
async fn download(rig: &Rig, size: usize, buf: &mut [u8]) -> Result<f64> {
    let mut s = rig
        .route
        .dial(Target::Source)
        .await
        .context("connect to source")?;
    let start = Instant::now();
    s.write_u64_le(size as u64).await?;
    let mut got = 0;
    while got < size {
        let n = s.read(&mut buf[got..size]).await.context("download read")?;
        if n == 0 {
            bail!("download: EOF after {got} of {size} bytes");
        }
        got += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut extra = [0u8; 16];
    let n = s.read(&mut extra).await.context("download EOF")?;
    ensure!(n == 0, "download: more than {size} bytes");
    Ok(secs)
}
