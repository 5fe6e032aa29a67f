//! One TCP stream for a fixed time (or size) through a tunnel whose SSH
//! connection crosses a delay line: what one stream gets of the line. The
//! data is the repeated pattern, compared as it arrives (a comparison, not
//! a hash: cheap enough to run during the transfer), so a stream of any
//! length is checked without storing it.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use crate::rig::Rig;
use crate::targets::{Target, Targets};

/// Bytes read or written per call.
const IO: usize = 256 * 1024;

/// Time allowed, after the writer stopped, for what is still in the tunnel
/// to reach the sink: a window of 64 MiB at 20 MiB/s takes a few seconds.
const DRAIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, Default)]
pub struct WanRun {
    pub bytes: u64,
    /// From the request (download) or the first write (upload) to the last
    /// byte's arrival.
    pub secs: f64,
    /// Bytes read (download) or written (upload) in the second half of the
    /// run, and how long that half lasted: the rate once windows and buffers
    /// have ramped up, which is what a long transfer gets. Zero for runs cut
    /// short by a size.
    pub late_bytes: u64,
    pub late_secs: f64,
}

impl WanRun {
    pub fn mibs(&self) -> f64 {
        self.bytes as f64 / 1048576.0 / self.secs.max(1e-9)
    }

    /// The second half's rate; `None` when the run had no second half.
    pub fn late_mibs(&self) -> Option<f64> {
        (self.late_secs > 0.0).then(|| self.late_bytes as f64 / 1048576.0 / self.late_secs)
    }
}

/// Counts what moved after the run's midpoint.
struct Halves {
    mid: Instant,
    at_mid: Option<u64>,
}

impl Halves {
    fn new(start: Instant, secs: Duration) -> Halves {
        Halves {
            mid: start + secs / 2,
            at_mid: None,
        }
    }

    /// Called with the running total before each new count is added.
    fn note(&mut self, total_before: u64, now: Instant) {
        if self.at_mid.is_none() && now >= self.mid {
            self.at_mid = Some(total_before);
        }
    }

    fn finish(&self, total: u64, end: Instant) -> (u64, f64) {
        match self.at_mid {
            Some(m) if end > self.mid => (total - m, end.duration_since(self.mid).as_secs_f64()),
            _ => (0, 0.0),
        }
    }
}

/// Target → tunnel → benchmark: reads the stream for `secs`, or until
/// `size` bytes arrived.
pub async fn download(
    rig: &Rig,
    targets: &Targets,
    secs: Duration,
    size: Option<u64>,
) -> Result<WanRun> {
    let mut s = timeout(super::SMALL_TIMEOUT, rig.route.dial(Target::Stream))
        .await
        .context("connect to stream timed out")?
        .context("connect to stream")?;
    let want = size.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; IO];
    let start = Instant::now();
    let deadline = start + secs;
    s.write_u64_le(want).await.context("stream request")?;
    let (mut got, mut last) = (0u64, start);
    let mut halves = Halves::new(start, secs);
    // Bytes per second of the run, printed to stderr: a mean hides a stream that
    // stalls and recovers, or ramps late.
    let mut per_sec: Vec<u64> = Vec::new();
    while got < want {
        let n = match timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break,
            Ok(r) => r.context("download read")?,
        };
        halves.note(got, Instant::now());
        if n == 0 {
            bail!("download: EOF after {got} bytes");
        }
        ensure!(
            targets.pattern.matches_cycled(got, &buf[..n]),
            "download: the bytes from offset {got} differ from what the target sent"
        );
        got += n as u64;
        last = Instant::now();
        let sec = last.duration_since(start).as_secs() as usize;
        if per_sec.len() <= sec {
            per_sec.resize(sec + 1, 0);
        }
        per_sec[sec] += n as u64;
    }
    let timeline: Vec<String> = per_sec
        .iter()
        .map(|b| format!("{:.0}", *b as f64 / 1048576.0))
        .collect();
    eprintln!("  download MiB per second: {}", timeline.join(" "));
    ensure!(got > 0, "download: nothing arrived in {secs:?}");
    let (late_bytes, late_secs) = if got < want {
        halves.finish(got, last)
    } else {
        (0, 0.0)
    };
    Ok(WanRun {
        bytes: got,
        secs: last.duration_since(start).as_secs_f64(),
        late_bytes,
        late_secs,
    })
}

/// Benchmark → tunnel → target: writes for `secs` or `size` bytes, then
/// waits for the sink to see all of it (the time ends at the sink's EOF).
pub async fn upload(
    rig: &Rig,
    targets: &Targets,
    secs: Duration,
    size: Option<u64>,
) -> Result<WanRun> {
    targets.take_sink_report();
    let mut s = timeout(super::SMALL_TIMEOUT, rig.route.dial(Target::Check))
        .await
        .context("connect to check sink timed out")?
        .context("connect to check sink")?;
    let want = size.unwrap_or(u64::MAX);
    let start = Instant::now();
    let deadline = start + secs;
    let mut sent = 0u64;
    let mut halves = Halves::new(start, secs);
    let mut cut = false;
    while sent < want {
        let chunk = targets
            .pattern
            .cycled(sent, (want - sent).min(IO as u64) as usize);
        match timeout_at(deadline, s.write(chunk)).await {
            Err(_) => {
                cut = true;
                break;
            }
            Ok(r) => {
                let n = r.context("upload write")? as u64;
                halves.note(sent, Instant::now());
                sent += n;
            }
        }
    }
    // Writes are held back by the tunnel's window, so once it is full the rate of
    // writes is the rate of delivery.
    let (late_bytes, late_secs) = if cut {
        halves.finish(sent, deadline)
    } else {
        (0, 0.0)
    };
    s.shutdown().await.context("upload shutdown")?;
    let mut reply = [0u8; 9];
    timeout(DRAIN, s.read_exact(&mut reply))
        .await
        .context("upload: the sink did not see EOF in time")?
        .context("sink reply")?;
    let report = targets
        .take_sink_report()
        .context("the sink did not report")?;
    let len = u64::from_le_bytes(reply[..8].try_into().unwrap_or_default());
    ensure!(len == sent, "upload: sink received {len} of {sent} bytes");
    ensure!(
        reply[8] == 1,
        "upload: the sink received other bytes than were sent"
    );
    Ok(WanRun {
        bytes: len,
        secs: report.eof_at.duration_since(start.into_std()).as_secs_f64(),
        late_bytes,
        late_secs,
    })
}
