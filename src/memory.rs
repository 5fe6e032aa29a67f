//! Giving freed memory back to the kernel once a long-running process's working set
//! has shrunk.
//!
//! glibc's malloc keeps what a closed channel or session freed in its arenas, to reuse;
//! it returns pages to the kernel only from the top of a heap. After a burst, a server's
//! RSS therefore stays at its peak. Measured (`cargo bench --bench tunnel -- --phases
//! many`, 100,000 connections bridged by warrend's rendezvous and then closed): 19 MiB
//! before, 774 MiB with all open, 829 MiB after every channel had closed. An operator
//! reads that as a leak, and the host cannot use the memory. `malloc_trim` hands the
//! free pages of every arena back (madvise), so warrend and warren's tunnel mode call it
//! when their own estimate of what they hold has fallen well below the high-water mark
//! since the last trim: once after a burst ends, never in steady state, where the same
//! memory is reused. A trim walks the arenas (about 50–190 ms on a 1.3 GiB heap of small
//! chunks, measured), so it runs on a blocking thread and at most once per check.
//!
//! The estimate is only sampled once per check, so a burst that comes and goes between two
//! checks (a session that fills a few windows and logs out within the second) never shows
//! in it. An idle process therefore also reads its own RSS and trims when that has grown
//! since the last trim: what happened between samples shows there.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the estimate is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How far (bytes) the estimate must fall below its high-water mark before a trim: far
/// more than steady churn moves it, little enough that a few thousand closed channels
/// (about 8 KiB each in warrend) count.
pub const SHRINK_BY: u64 = 16 << 20;

/// How far (bytes) an idle process's RSS must have grown since its last trim before it
/// trims again: more than an idle process's own wobble, less than one window.
pub const IDLE_GROWTH: u64 = 2 << 20;

/// Decides when the working set has shrunk enough to trim.
#[derive(Debug, Default)]
pub struct Shrink {
    high: u64,
    /// RSS right after the last trim (or at the first idle check).
    idle_rss: Option<u64>,
}

impl Shrink {
    /// Feeds the current estimate, and the process's RSS when the estimate is 0 (`rss` is
    /// read only then); true when the estimate is at least [`SHRINK_BY`] below the
    /// highest seen since the last trim (which it then starts over from), when the last
    /// peer let go of everything (an idle process gives back all it can), or when an idle
    /// process's RSS has grown by [`IDLE_GROWTH`] since its last trim (a burst between two
    /// samples).
    pub fn shrunk(&mut self, now: u64, rss: impl FnOnce() -> Option<u64>) -> bool {
        if now > self.high {
            self.high = now;
            return false;
        }
        if self.high - now >= SHRINK_BY || (now == 0 && self.high > 0) {
            self.high = now;
            return true;
        }
        if now != 0 {
            return false;
        }
        let Some(rss) = rss() else {
            return false;
        };
        match self.idle_rss {
            Some(base) if rss >= base.saturating_add(IDLE_GROWTH) => true,
            Some(_) => false,
            None => {
                self.idle_rss = Some(rss);
                false
            }
        }
    }

    /// Records what a trim left, the base for [`IDLE_GROWTH`].
    pub fn trimmed(&mut self, rss: Option<u64>) {
        self.idle_rss = rss;
    }
}

/// Until `cancel`, trims whenever `estimate` (bytes the process holds for its peers)
/// has shrunk by [`SHRINK_BY`].
pub async fn trim_after_shrinking(estimate: impl Fn() -> u64, cancel: CancellationToken) {
    let mut shrink = Shrink::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if shrink.shrunk(estimate(), rss) {
            // Walking the arenas takes a while on a large heap; not on a session thread.
            let took = tokio::task::spawn_blocking(|| {
                let start = std::time::Instant::now();
                trim();
                start.elapsed()
            })
            .await;
            shrink.trimmed(rss());
            if let Ok(took) = took {
                tracing::debug!(?took, "returned freed memory to the kernel");
            }
        }
    }
}

/// The process's resident set (bytes), from /proc; `None` where there is none.
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib << 10)
}

/// Returns the free pages of every malloc arena to the kernel.
#[allow(unsafe_code)]
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases pages malloc holds free; it takes the arenas'
    // own locks and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// An RSS reading that the estimate's rule must not need.
    fn no_rss() -> Option<u64> {
        panic!("RSS read while peers hold memory")
    }

    #[test]
    fn trims_once_after_a_burst_or_when_idle_and_never_while_the_load_only_wobbles() {
        let mut s = Shrink::default();
        // Growth never trims.
        assert!(!s.shrunk(0, || None));
        for mib in [10, 200, 800] {
            assert!(!s.shrunk(mib * MIB, no_rss));
        }
        // Wobbling below the high-water mark by less than SHRINK_BY does not either.
        assert!(!s.shrunk(800 * MIB - SHRINK_BY + 1, no_rss));
        assert!(!s.shrunk(800 * MIB, no_rss));
        // The burst ends: one trim, then none while it stays low.
        assert!(s.shrunk(20 * MIB, no_rss));
        assert!(!s.shrunk(20 * MIB, no_rss));
        assert!(!s.shrunk(19 * MIB, no_rss));
        // A second burst and its end trim again.
        assert!(!s.shrunk(300 * MIB, no_rss));
        assert!(s.shrunk(5 * MIB, no_rss));
        // The last session leaves: a trim, however little it held; idle stays quiet.
        assert!(s.shrunk(0, no_rss));
        s.trimmed(Some(30 * MIB));
        assert!(!s.shrunk(0, || Some(30 * MIB)));
        assert!(!s.shrunk(64 << 10, no_rss));
        assert!(s.shrunk(0, no_rss));
    }

    #[test]
    fn an_idle_process_whose_rss_grew_between_samples_trims_once() {
        let mut s = Shrink::default();
        // The first idle check only takes its base.
        assert!(!s.shrunk(0, || Some(20 * MIB)));
        assert!(!s.shrunk(0, || Some(20 * MIB + IDLE_GROWTH - 1)));
        // A session came, filled its windows and left between two checks: the estimate
        // never saw it, the RSS did.
        assert!(s.shrunk(0, || Some(29 * MIB)));
        s.trimmed(Some(21 * MIB));
        // What the trim could not give back is the new base, not a reason to trim again.
        assert!(!s.shrunk(0, || Some(21 * MIB)));
        assert!(!s.shrunk(0, || Some(22 * MIB)));
        assert!(s.shrunk(0, || Some(23 * MIB)));
        // Without /proc nothing is read and nothing trims.
        let mut blind = Shrink::default();
        for _ in 0..3 {
            assert!(!blind.shrunk(0, || None));
        }
    }
}
