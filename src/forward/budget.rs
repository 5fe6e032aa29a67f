//! Budgets for what we hold on a peer's behalf: bytes, or open channels.
//!
//! Channels and listeners are held on a peer's behalf: each one costs memory, a socket
//! and a task. A per-session cap bounds one connection, but a user with many sessions (or
//! many users) could still make a server hold their product. A [`Budget`] is shared by everything one owner holds, and budgets nest:
//! a user's budget inside the server's, so no user can take more than their share and
//! all users together no more than the server's. Charging fails rather than waits: the
//! caller ends the connection that asked for more, and the others go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Units (bytes, channels) held for one owner, with a limit; optionally inside a parent
/// budget.
#[derive(Debug)]
pub struct Budget {
    /// Says whose budget ran out, e.g. `max_buffered_per_user (alice)`.
    name: String,
    /// Atomic so that a reload (SIGHUP) can resize a budget that live sessions share.
    limit: AtomicU64,
    used: AtomicU64,
    parent: Option<Arc<Budget>>,
}

impl Budget {
    /// A top-level budget of `limit` bytes.
    pub fn new(name: impl Into<String>, limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            name: name.into(),
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            parent: None,
        })
    }

    /// A budget of `limit` bytes whose charges also count against `parent`.
    pub fn within(parent: &Arc<Budget>, name: impl Into<String>, limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            name: name.into(),
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            parent: Some(parent.clone()),
        })
    }

    /// Takes `n` bytes from this budget and every parent, or from none of them. The
    /// error names the budget that ran out.
    pub fn try_charge(&self, n: u64) -> Result<(), String> {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= limit)
            })
            .map_err(|used| format!("{used} of {limit} already in use ({})", self.name))?;
        if let Some(parent) = &self.parent
            && let Err(e) = parent.try_charge(n)
        {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    /// Gives back `n` bytes taken by [`Budget::try_charge`].
    pub fn release(&self, n: u64) {
        if n == 0 {
            return;
        }
        // Saturating: a release never exceeds what was charged, but an accounting slip
        // must not wrap the counter around and lock everyone out.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
        if let Some(parent) = &self.parent {
            parent.release(n);
        }
    }

    /// The limit in force now.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// Applies a new limit (a reload). What is held stays held: lowering the limit
    /// below it takes nothing back, it refuses new charges until enough is released.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Release);
    }

    /// Units held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes one unit, given back when the returned guard is dropped.
    pub fn take_one(self: &Arc<Self>) -> Result<BudgetGuard, String> {
        self.try_charge(1)?;
        Ok(BudgetGuard(self.clone()))
    }
}

/// One unit of a [`Budget`], held while this lives (an open channel, say).
pub struct BudgetGuard(Arc<Budget>);

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.0.release(1);
    }
}

/// A user's `max_buffered_per_user` (inside the server's `max_buffered`) as the pool the
/// engine draws window growth from: a session's channel windows grow beyond their initial
/// size only while the user's and the server's budgets have room, and pay it back as they
/// shrink when idle, close, or the session ends. Idle sessions hold none of it, so one busy
/// session of a user can use the user's whole share.
#[derive(Debug)]
pub struct WindowPoolOf(pub Arc<Budget>);

/// Smallest piece worth growing a window by; below it the pool answers "nothing".
const MIN_GROWTH: u64 = 256 * 1024;

impl warren_ssh::channel::WindowPool for WindowPoolOf {
    fn take(&self, want: u64) -> u64 {
        let mut bytes = want;
        while bytes >= MIN_GROWTH.min(want) && bytes > 0 {
            if self.0.try_charge(bytes).is_ok() {
                return bytes;
            }
            bytes /= 2;
        }
        0
    }

    fn give(&self, n: u64) {
        self.0.release(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_pool_lends_what_the_nested_budgets_have_and_takes_it_back() {
        use warren_ssh::channel::WindowPool;
        let server = Budget::new("server", 8 << 20);
        let alice = Budget::within(&server, "alice", 6 << 20);
        let pool = WindowPoolOf(alice.clone());
        assert_eq!(pool.take(4 << 20), 4 << 20);
        // 2 MiB left for alice: 4 MiB -> 2 MiB.
        assert_eq!(pool.take(4 << 20), 2 << 20);
        assert_eq!(pool.take(4 << 20), 0);
        assert_eq!(server.used(), 6 << 20);
        pool.give(6 << 20);
        assert_eq!((alice.used(), server.used()), (0, 0));
    }

    #[test]
    fn a_child_cannot_exceed_its_limit_or_its_parents() {
        let server = Budget::new("server", 100);
        let alice = Budget::within(&server, "alice", 60);
        let bob = Budget::within(&server, "bob", 60);
        assert!(alice.try_charge(60).is_ok());
        let e = alice.try_charge(1).unwrap_err();
        assert!(e.contains("alice"), "{e}");
        // Bob's own limit allows 50, the server's only 40 more.
        let e = bob.try_charge(50).unwrap_err();
        assert!(e.contains("server"), "{e}");
        assert_eq!(
            bob.used(),
            0,
            "a refused charge takes nothing from the child"
        );
        assert!(bob.try_charge(40).is_ok());
        assert_eq!(server.used(), 100);
        alice.release(60);
        assert_eq!(server.used(), 40);
        assert!(bob.try_charge(20).is_ok());
        bob.release(60);
        assert_eq!((server.used(), bob.used()), (0, 0));
    }

    #[test]
    fn a_new_limit_applies_to_the_next_charge_and_takes_nothing_back() {
        let server = Budget::new("server", 4);
        let alice = Budget::within(&server, "alice", 4);
        alice.try_charge(3).unwrap();
        server.set_limit(2);
        assert!(alice.try_charge(1).unwrap_err().contains("server"));
        assert_eq!(alice.used(), 3, "held units stay held");
        alice.release(2);
        assert!(alice.try_charge(1).is_ok(), "back under the new limit");
        server.set_limit(10);
        alice.set_limit(8);
        assert!(alice.try_charge(6).is_ok());
        assert!(alice.try_charge(1).unwrap_err().contains("alice"));
    }

    #[test]
    fn over_release_saturates_instead_of_wrapping() {
        let b = Budget::new("b", 10);
        b.try_charge(5).unwrap();
        b.release(7);
        assert_eq!(b.used(), 0);
        assert!(b.try_charge(10).is_ok());
    }
}
