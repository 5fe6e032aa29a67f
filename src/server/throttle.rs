//! Per-source accounting: failed logins within a window, and connections not yet
//! authenticated, both grouped by network prefix so one IPv6 /64 counts as one source.

use ipnet::IpNet;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits as configured.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    pub max_failures: u32,
    pub window: Duration,
    pub max_unauthenticated_per_source: u32,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
}

/// Shared by every connection of the server.
pub struct Throttle {
    limits: Mutex<ThrottleLimits>,
    failures: Mutex<HashMap<IpNet, VecDeque<Instant>>>,
    pending: Mutex<HashMap<IpNet, u32>>,
}

impl Throttle {
    pub fn new(limits: ThrottleLimits) -> Throttle {
        Throttle {
            limits: Mutex::new(limits),
            failures: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Applies new limits (SIGHUP) without forgetting what was counted.
    pub fn set_limits(&self, limits: ThrottleLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    fn limits(&self) -> ThrottleLimits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn block(&self, ip: IpAddr) -> IpNet {
        let l = self.limits();
        let prefix = if ip.is_ipv4() {
            l.prefix_v4
        } else {
            l.prefix_v6
        };
        IpNet::new(ip, prefix)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(ip))
    }

    /// Why `ip` may not start another login right now, if it may not.
    pub fn refuse(&self, ip: IpAddr, now: Instant) -> Option<String> {
        self.refuse_login(ip, now)
            .or_else(|| self.refuse_pending(ip))
    }

    fn refuse_pending(&self, ip: IpAddr) -> Option<String> {
        let l = self.limits();
        let block = self.block(ip);
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.get(&block).copied().unwrap_or(0) >= l.max_unauthenticated_per_source {
            return Some(format!("too many unauthenticated connections from {block}"));
        }
        None
    }

    /// Why a connection from `ip`, already admitted (and so counted among the pending),
    /// may not authenticate: too many recent failures.
    pub fn refuse_login(&self, ip: IpAddr, now: Instant) -> Option<String> {
        let l = self.limits();
        let block = self.block(ip);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = failures.get_mut(&block) {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > l.window)
            {
                times.pop_front();
            }
            if times.len() as u32 >= l.max_failures {
                return Some(format!(
                    "{} failed logins from {block} within {:?}",
                    times.len(),
                    l.window
                ));
            }
        }
        None
    }

    /// Counts a connection that ended without logging in after failing at least once.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let block = self.block(ip);
        let max = self.limits().max_failures as usize;
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let times = failures.entry(block).or_default();
        times.push_back(now);
        while times.len() > max.max(1) {
            times.pop_front();
        }
    }

    /// Marks a connection from `ip` as not yet authenticated; the guard releases it.
    pub fn pending(self: &std::sync::Arc<Self>, ip: IpAddr) -> PendingGuard {
        let block = self.block(ip);
        *self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(block)
            .or_default() += 1;
        PendingGuard {
            throttle: self.clone(),
            block,
        }
    }
}

/// Held while a connection is unauthenticated.
pub struct PendingGuard {
    throttle: std::sync::Arc<Throttle>,
    block: IpNet,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut pending = self
            .throttle
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pending.get_mut(&self.block) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            max_failures: 3,
            window: Duration::from_secs(60),
            max_unauthenticated_per_source: 2,
            prefix_v4: 32,
            prefix_v6: 64,
        }
    }

    #[test]
    fn failures_age_out_and_v6_groups_by_prefix() {
        let t = Throttle::new(limits());
        let now = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.refuse(a, now).is_none());
            t.record_failure(a, now);
        }
        assert!(t.refuse(b, now).is_some(), "same /64");
        assert!(t.refuse("2001:db9::1".parse().unwrap(), now).is_none());
        assert!(
            t.refuse(a, now + Duration::from_secs(61)).is_none(),
            "aged out"
        );
    }

    #[test]
    fn pending_connections_are_capped_per_source() {
        let t = Arc::new(Throttle::new(limits()));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let g1 = t.pending(ip);
        let _g2 = t.pending(ip);
        assert!(t.refuse(ip, Instant::now()).is_some());
        drop(g1);
        assert!(t.refuse(ip, Instant::now()).is_none());
    }
}
