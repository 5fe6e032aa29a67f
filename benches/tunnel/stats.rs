//! Percentiles of one run and medians over runs.

use std::time::Duration;

/// Latency samples of one run.
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile `p` (0..=100), in microseconds.
    pub fn percentile_us(&self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        let i = rank.clamp(1, v.len()) - 1;
        Some(v[i].as_secs_f64() * 1e6)
    }

    pub fn max_us(&self) -> Option<f64> {
        self.0.iter().max().map(|d| d.as_secs_f64() * 1e6)
    }

    /// How many samples exceed `limit`.
    pub fn count_over(&self, limit: Duration) -> usize {
        self.0.iter().filter(|d| **d > limit).count()
    }
}

/// Median of the values present (the mean of the middle two for an even
/// count); `None` if there are none.
pub fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}
