//! One slow reader must not stall the rest of its session (issue #6).
//!
//! Connection A asks the source for a large payload and is then not read
//! for a while, so the tunnel fills up behind it. Meanwhile connection B of
//! the same session does 1-byte echo round trips; if the tunnel blocks on A,
//! B's round trips stall. Afterwards A is read to the end and must hash
//! correctly: the stall must not lose data.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::echo_once;
use crate::procs::Usage;
use crate::rig::Rig;
use crate::stats::Samples;
use crate::targets::{Target, Targets, sha256};

/// Pause between B's round trips: thousands of samples without turning the
/// pinger into a CPU load that would slow the processes under test.
const PING_GAP: Duration = Duration::from_millis(5);

/// A round trip this slow counts as a stall (the threshold).
pub const STALL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default)]
pub struct SlowRun {
    /// B's round trips while A was not read (and the one in flight when
    /// reading resumed).
    pub pings: Samples,
    /// B's round trips that failed (error or 30 s timeout).
    pub ping_failures: usize,
    /// Seconds to read A to the end once reading resumed.
    pub drain_secs: f64,
    /// RSS growth while A was stalled, KiB (what the tunnel buffered).
    pub client_growth_kib: Option<f64>,
    pub server_growth_kib: Option<f64>,
    /// Growth of the open files while A was stalled, MiB (what the tunnel
    /// buffered on disk).
    pub client_file_mib: Option<f64>,
    pub server_file_mib: Option<f64>,
}

pub async fn run(
    rig: &Rig,
    targets: &Targets,
    size: usize,
    stall: Duration,
    buf: &mut [u8],
) -> Result<SlowRun> {
    let mut b = rig.route.dial(Target::Echo).await.context("connect B")?;
    echo_once(&mut b, b"w", &mut [0u8])
        .await
        .context("B warm-up")?;
    let (c0, s0) = rig.usage();
    let mut a = rig.route.dial(Target::Source).await.context("connect A")?;
    a.write_u64_le(size as u64).await.context("request on A")?;

    let pinger = tokio::spawn(async move {
        let mut pings = Samples::with_capacity(2048);
        let mut failures = 0;
        let start = Instant::now();
        while start.elapsed() < stall {
            let t = Instant::now();
            match echo_once(&mut b, b"p", &mut [0u8]).await {
                Ok(()) => pings.push(t.elapsed()),
                Err(_) => {
                    failures += 1;
                    break;
                }
            }
            tokio::time::sleep(PING_GAP).await;
        }
        (pings, failures)
    });

    // The stall itself: A is deliberately left unread for `stall`.
    tokio::time::sleep(stall).await;
    let (c1, s1) = rig.usage();

    let drain_start = Instant::now();
    let mut got = 0;
    let read_all = async {
        while got < size {
            let n = a.read(&mut buf[got..size]).await.context("read A")?;
            if n == 0 {
                bail!("A: EOF after {got} of {size} bytes");
            }
            got += n;
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), read_all)
        .await
        .context("A: not fully delivered within 120 s of reading again")??;
    let drain_secs = drain_start.elapsed().as_secs_f64();
    ensure!(
        sha256(&buf[..size]) == targets.pattern.sha256(size),
        "A: SHA-256 mismatch after the stall (data lost or corrupted)"
    );
    let (pings, ping_failures) = pinger.await.context("pinger")?;
    let growth = |a: Option<Usage>, b: Option<Usage>| Some(b?.rss_kib as f64 - a?.rss_kib as f64);
    let files = |a: Option<Usage>, b: Option<Usage>| {
        Some((b?.file_bytes as f64 - a?.file_bytes as f64) / 1048576.0)
    };
    Ok(SlowRun {
        pings,
        ping_failures,
        drain_secs,
        client_growth_kib: growth(c0, c1),
        server_growth_kib: growth(s0, s1),
        client_file_mib: files(c0, c1),
        server_file_mib: files(s0, s1),
    })
}
