//! A slow consumer: the benchmark reads one -L connection at a fixed, low
//! rate while the target behind it offers far more, as fast as the tunnel
//! takes it. A tunnel with per-channel flow control holds about one window
//! of it; one without pulls whatever it can into memory or a file. What
//! arrives is compared with what the target sent.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use super::echo_once;
use crate::procs::{Usage, scratch_files};
use crate::rig::Rig;
use crate::targets::{Target, Targets};

/// How often the reader may read, and /proc is sampled.
const TICK: Duration = Duration::from_millis(10);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct ConsumerRun {
    pub received: u64,
    /// Offset of the first byte that differs from what the target sent.
    pub first_bad: Option<u64>,
    /// When and how the connection ended early (`None`: open at the end).
    pub ended: Option<(f64, String)>,
    /// Bytes the target's socket took, at the end.
    pub pushed: Option<u64>,
    /// Seconds until the target had pushed its whole offer, if it did.
    pub offer_gone_secs: Option<f64>,
    /// A 1-byte echo through the same tunnel afterwards: `Err` says why not.
    pub session: Result<(), String>,
    pub client: Option<Side>,
    pub server: Option<Side>,
}

/// What one process tree did while the consumer read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Side {
    /// VmRSS at the end minus before, KiB.
    pub rss_growth_kib: f64,
    /// Highest VmRSS seen minus before, KiB.
    pub rss_peak_growth_kib: f64,
    /// Most scratch files (deleted or temporary, see
    /// [`scratch_files`]) open at once, and their largest total size.
    pub files: usize,
    pub file_bytes: u64,
}

/// Reads the stream target through `rig` at `rate` bytes/s for `secs`,
/// the target offering `offer` bytes. `own` is the benchmark's directory
/// (files there are not the tunnel's).
pub async fn run(
    rig: &Rig,
    targets: &Targets,
    own: &Path,
    rate: u64,
    secs: Duration,
    offer: u64,
) -> Result<ConsumerRun> {
    targets.forget_stream();
    let mut a = timeout(super::SMALL_TIMEOUT, rig.route.dial(Target::Stream))
        .await
        .context("connect to stream timed out")?
        .context("connect to stream")?;
    let (c0, s0) = rig.usage();
    let sampler = Sampler::start(rig, own);
    let mut out = ConsumerRun {
        received: 0,
        first_bad: None,
        ended: None,
        pushed: None,
        offer_gone_secs: None,
        session: Ok(()),
        client: None,
        server: None,
    };
    let start = Instant::now();
    let end = start + secs;
    a.write_u64_le(offer).await.context("stream request")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if out.offer_gone_secs.is_none() && targets.pushed() == Some(offer) {
            out.offer_gone_secs = Some(now.duration_since(start).as_secs_f64());
        }
        let due = (now.duration_since(start).as_secs_f64() * rate as f64) as u64;
        let allowed = due.saturating_sub(got).min(buf.len() as u64) as usize;
        if allowed == 0 {
            tokio::time::sleep(TICK.min(end - now)).await;
            continue;
        }
        match timeout_at(end, a.read(&mut buf[..allowed])).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                out.ended = Some((start.elapsed().as_secs_f64(), "closed (EOF)".into()));
                break;
            }
            Ok(Ok(n)) => {
                if out.first_bad.is_none() && !targets.pattern.matches_cycled(got, &buf[..n]) {
                    out.first_bad = Some(got);
                }
                got += n as u64;
            }
            Ok(Err(e)) => {
                let why = format!("failed ({})", e.kind());
                out.ended = Some((start.elapsed().as_secs_f64(), why));
                break;
            }
        }
    }
    out.received = got;
    out.pushed = targets.pushed();
    if out.offer_gone_secs.is_none() && out.pushed == Some(offer) {
        out.offer_gone_secs = Some(start.elapsed().as_secs_f64());
    }
    let (c1, s1) = rig.usage();
    let peaks = sampler.stop();
    drop(a);
    out.session = match rig.check_alive() {
        Err(e) => Err(format!("{e:#}").lines().next().unwrap_or("").to_string()),
        Ok(()) => match rig.route.dial(Target::Echo).await {
            Err(e) => Err(format!("connect: {}", e.kind())),
            Ok(mut b) => echo_once(&mut b, b"c", &mut [0u8])
                .await
                .map_err(|e| format!("{:#}", e.root_cause())),
        },
    };
    let side = |before: Option<Usage>, after: Option<Usage>, peak: Peak| {
        let (b, a) = (before?, after?);
        Some(Side {
            rss_growth_kib: a.rss_kib as f64 - b.rss_kib as f64,
            rss_peak_growth_kib: peak.rss_kib.max(a.rss_kib) as f64 - b.rss_kib as f64,
            files: peak.files,
            file_bytes: peak.file_bytes,
        })
    };
    out.client = side(c0, c1, peaks.0);
    out.server = side(s0, s1, peaks.1);
    Ok(out)
}

/// The highest figures one process tree showed while sampled.
#[derive(Clone, Copy, Debug, Default)]
struct Peak {
    rss_kib: u64,
    files: usize,
    file_bytes: u64,
}

impl Peak {
    fn sample(&mut self, pid: Option<i32>, own: &Path) {
        let Some(pid) = pid else { return };
        self.rss_kib = self.rss_kib.max(Usage::of_tree(pid).rss_kib);
        let (files, bytes) = scratch_files(pid, own);
        self.files = self.files.max(files);
        self.file_bytes = self.file_bytes.max(bytes);
    }
}

/// Samples client and server on a thread of its own, so that reading /proc
/// never delays the consumer.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Peak, Peak)>,
}

impl Sampler {
    fn start(rig: &Rig, own: &Path) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, server) = rig.pids();
        let own = own.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut c, mut s) = (Peak::default(), Peak::default());
            loop {
                c.sample(client, &own);
                s.sample(server, &own);
                if flag.load(Ordering::Relaxed) {
                    return (c, s);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> (Peak, Peak) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
