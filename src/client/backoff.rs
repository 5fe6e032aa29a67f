//! Reconnect pacing: capped exponential backoff with jitter, reset after a stable period,
//! so a flapping link is not hammered and a fleet of clients does not reconnect in step.

use std::time::Duration;

/// The delays between reconnect attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next wait: base·2ⁿ capped, then scaled by `jitter` in [0.5, 1.0] (so waits
    /// spread out but never exceed the cap). `jitter` is a parameter so tests are exact.
    pub fn next_with(&mut self, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        exp.min(self.cap).mul_f64(jitter.clamp(0.5, 1.0))
    }

    /// [`Backoff::next_with`] with random jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(0.5 + rand::random::<f64>() / 2.0)
    }

    /// Back to the first, shortest wait: called once a connection has proved stable.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// While the server does not even accept TCP, a connect attempt costs one SYN: probing
/// this often puts the tunnel back within a fraction of a second of the server's return.
const PROBE_EVERY: Duration = Duration::from_millis(150);
/// After this long an outage is not a restart: probe at [`PROBE_SLOW`] instead.
const PROBE_FAST_FOR: Duration = Duration::from_secs(60);
const PROBE_SLOW: Duration = Duration::from_secs(1);

/// The wait between two TCP probes `outage` into an outage, scaled by `jitter` (clamped
/// to [0.7, 1.3]) so a fleet of clients does not probe in step.
pub fn probe_interval_with(outage: Duration, jitter: f64) -> Duration {
    let base = if outage < PROBE_FAST_FOR {
        PROBE_EVERY
    } else {
        PROBE_SLOW
    };
    base.mul_f64(jitter.clamp(0.7, 1.3))
}

/// [`probe_interval_with`] with random jitter.
pub fn probe_interval(outage: Duration) -> Duration {
    probe_interval_with(outage, 0.7 + rand::random::<f64>() * 0.6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_frequent_then_slow_down_and_stay_jittered() {
        let ms = |d: Duration| d.as_millis() as u64;
        assert_eq!(ms(probe_interval_with(Duration::ZERO, 1.0)), 150);
        assert_eq!(ms(probe_interval_with(Duration::from_secs(59), 0.0)), 105);
        assert_eq!(ms(probe_interval_with(Duration::from_secs(59), 9.0)), 195);
        assert_eq!(ms(probe_interval_with(Duration::from_secs(61), 1.0)), 1000);
        for _ in 0..100 {
            let d = probe_interval(Duration::from_secs(1));
            assert!(d >= Duration::from_millis(105) && d <= Duration::from_millis(195));
        }
    }

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let waits: Vec<u64> = (0..7)
            .map(|_| b.next_with(1.0).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(
            b.next_with(0.5),
            Duration::from_secs(4),
            "jitter only shortens"
        );
        b.reset();
        assert_eq!(b.next_with(1.0), Duration::from_millis(500));
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(8) && d >= Duration::from_millis(250));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_follow_the_schedule_in_virtual_time() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            tokio::time::sleep(b.next_with(1.0)).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2 + 4 + 8));
    }
}
