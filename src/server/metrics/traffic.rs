//! Bytes relayed, per session (for `warrend ctl sessions`) and in all (for
//! `warrend_bytes_total`), counted while they move rather than when a channel closes,
//! so a long-lived tunnel shows its traffic as it flows.
//!
//! The relay adds to its session's [`Traffic`] with relaxed atomic adds (a session's
//! channels all run on one session thread, so the counter's cache line stays there).
//! The server-wide total is summed at scrape time instead of kept in one counter all
//! session threads would write. A session's traffic stays in the sum while anything
//! still holds it (its relays may outlive the session by a moment), and is folded into
//! the retired total under the same lock, so the total never goes back.

use crate::forward::relay::RelayTotals;
use std::sync::{Arc, Mutex};

/// One session's bytes: `from_a` = up (from the channel's client side towards its
/// target), `from_b` = down, as the audit's `bytes_up`/`bytes_down`.
pub type Traffic = RelayTotals;

/// Every session's traffic.
#[derive(Default)]
pub struct TrafficTotals {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    retired: (u64, u64),
    live: Vec<Arc<Traffic>>,
    /// Prune when `live` reaches this length, so registering stays O(1) amortised.
    prune_at: usize,
}

impl Inner {
    fn prune(&mut self) {
        let mut retired = self.retired;
        self.live.retain(|t| {
            if Arc::strong_count(t) > 1 {
                return true;
            }
            let (up, down) = t.get();
            retired.0 = retired.0.saturating_add(up);
            retired.1 = retired.1.saturating_add(down);
            false
        });
        self.retired = retired;
        self.prune_at = (self.live.len() * 2).max(64);
    }
}

impl TrafficTotals {
    /// A counter for a new session, included in [`TrafficTotals::totals`].
    pub fn session(&self) -> Arc<Traffic> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.live.len() >= inner.prune_at {
            inner.prune();
        }
        let t = Arc::new(Traffic::default());
        inner.live.push(t.clone());
        t
    }

    /// Bytes up and down over every session so far.
    pub fn totals(&self) -> (u64, u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.prune();
        inner.live.iter().fold(inner.retired, |(u, d), t| {
            let (up, down) = t.get();
            (u.saturating_add(up), d.saturating_add(down))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_keep_what_ended_sessions_moved() {
        let totals = TrafficTotals::default();
        let a = totals.session();
        let b = totals.session();
        a.add(10, 1);
        b.add(5, 2);
        assert_eq!(totals.totals(), (15, 3));
        drop(a);
        assert_eq!(totals.totals(), (15, 3));
        b.add(1, 1);
        drop(b);
        for _ in 0..200 {
            drop(totals.session());
        }
        assert_eq!(totals.totals(), (16, 4));
    }
}
