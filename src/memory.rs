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

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the estimate is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How far (bytes) the estimate must fall below its high-water mark before a trim: far
/// more than steady churn moves it, little enough that a few thousand closed channels
/// (about 8 KiB each in warrend) count.
pub const SHRINK_BY: u64 = 16 << 20;

/// Decides when the working set has shrunk enough to trim.
#[derive(Debug, Default)]
pub struct Shrink {
    high: u64,
}

impl Shrink {
    /// Feeds the current estimate; true when it is at least [`SHRINK_BY`] below the
    /// highest seen since the last trim (which it then starts over from), or when the
    /// last peer let go of everything (an idle process gives back all it can).
    pub fn shrunk(&mut self, now: u64) -> bool {
        if now >= self.high {
            self.high = now;
            return false;
        }
        if self.high - now >= SHRINK_BY || now == 0 {
            self.high = now;
            return true;
        }
        false
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
        if shrink.shrunk(estimate()) {
            // Walking the arenas takes a while on a large heap; not on a session thread.
            let took = tokio::task::spawn_blocking(|| {
                let start = std::time::Instant::now();
                trim();
                start.elapsed()
            })
            .await;
            if let Ok(took) = took {
                tracing::debug!(?took, "returned freed memory to the kernel");
            }
        }
    }
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

    #[test]
    fn trims_once_after_a_burst_or_when_idle_and_never_while_the_load_only_wobbles() {
        let mut s = Shrink::default();
        // Growth never trims.
        for mib in [0, 10, 200, 800] {
            assert!(!s.shrunk(mib << 20));
        }
        // Wobbling below the high-water mark by less than SHRINK_BY does not either.
        assert!(!s.shrunk((800 << 20) - SHRINK_BY + 1));
        assert!(!s.shrunk(800 << 20));
        // The burst ends: one trim, then none while it stays low.
        assert!(s.shrunk(20 << 20));
        assert!(!s.shrunk(20 << 20));
        assert!(!s.shrunk(19 << 20));
        // A second burst and its end trim again.
        assert!(!s.shrunk(300 << 20));
        assert!(s.shrunk(5 << 20));
        // The last session leaves: a trim, however little it held; idle stays quiet.
        assert!(s.shrunk(0));
        assert!(!s.shrunk(0));
        assert!(!s.shrunk(64 << 10));
        assert!(s.shrunk(0));
    }
}
