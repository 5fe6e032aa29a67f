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

#[cfg(test)]
mod tests {
    use super::*;

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
