//! Per-source accounting: failed logins within a window, connections not yet
//! authenticated, and penalties for sources that hold slots without logging in, all
//! grouped by network prefix so one IPv6 /64 counts as one source. Also the random early
//! drop of unauthenticated connections (sshd `MaxStartups start:rate:full`).

use ipnet::IpNet;
use rand::RngExt;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources remembered with a penalty (sshd `PerSourcePenalties` max-sources): a flood
/// from many networks cannot grow the table without end; beyond it the penalty that
/// ends soonest is forgotten first.
const MAX_PENALISED: usize = 65_536;

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
    penalties: Mutex<HashMap<IpNet, Penalty>>,
}

/// A source's current penalty.
#[derive(Debug, Clone, Copy)]
struct Penalty {
    until: Instant,
    /// The last penalty's length: the next offence doubles it unless the source has
    /// behaved for at least as long since it ended.
    length: Duration,
}

impl Penalty {
    /// When the source's record is forgotten, and its next penalty starts afresh.
    fn forgotten(&self) -> Instant {
        self.until + self.length
    }
}

impl Throttle {
    pub fn new(limits: ThrottleLimits) -> Throttle {
        Throttle {
            limits: Mutex::new(limits),
            failures: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            penalties: Mutex::new(HashMap::new()),
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

    /// Why `ip` may not connect at all right now: its netblock is serving a penalty.
    pub fn refuse_penalised(&self, ip: IpAddr, now: Instant) -> Option<String> {
        let block = self.block(ip);
        let penalties = self.penalties.lock().unwrap_or_else(|e| e.into_inner());
        let p = penalties.get(&block)?;
        (p.until > now).then(|| {
            // Whole seconds, rounded up: "0s left" would read as a bug.
            let left = (p.until - now).as_millis().div_ceil(1000);
            format!(
                "penalised: {block} held connections without logging in ({left}s of {:?} left)",
                p.length
            )
        })
    }

    /// Penalises `ip`'s netblock for holding a connection without logging in: `base` for
    /// a first offence (or one long after the last penalty ended), else double the last
    /// penalty, at most `max`. Returns the penalty's length and netblock.
    pub fn penalise(
        &self,
        ip: IpAddr,
        base: Duration,
        max: Duration,
        now: Instant,
    ) -> (Duration, IpNet) {
        let block = self.block(ip);
        let mut penalties = self.penalties.lock().unwrap_or_else(|e| e.into_inner());
        if penalties.len() >= MAX_PENALISED && !penalties.contains_key(&block) {
            penalties.retain(|_, p| p.forgotten() > now);
            if penalties.len() >= MAX_PENALISED
                && let Some(soonest) = penalties
                    .iter()
                    .min_by_key(|(_, p)| p.until)
                    .map(|(k, _)| *k)
            {
                penalties.remove(&soonest);
            }
        }
        let length = match penalties.get(&block) {
            Some(p) if p.forgotten() > now => p.length.saturating_mul(2).max(base),
            _ => base,
        }
        .min(max);
        // An offence while penalised (from a connection admitted before) never shortens it.
        let until = penalties
            .get(&block)
            .map_or(now, |p| p.until)
            .max(now + length);
        penalties.insert(block, Penalty { until, length });
        (length, block)
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

    /// Connections not authenticated yet, and source netblocks serving a penalty now
    /// (`warrend ctl limits`).
    pub fn counts(&self, now: Instant) -> (u64, u64) {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let unauthenticated = pending.values().map(|n| u64::from(*n)).sum();
        drop(pending);
        let penalties = self.penalties.lock().unwrap_or_else(|e| e.into_inner());
        let penalised = penalties.values().filter(|p| p.until > now).count() as u64;
        (unauthenticated, penalised)
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

/// sshd's `MaxStartups start:rate:full`: from `start` unauthenticated connections on, a
/// new one is dropped with a chance rising linearly from `rate` percent to 100 percent at
/// `full`. Unlike a hard cap alone, a flood of silent connections then leaves a client
/// that retries a fair chance instead of none until the login grace time frees slots.
#[derive(Debug, Clone, Copy)]
pub struct EarlyDrop {
    pub start: u32,
    pub rate: u32,
    pub full: u32,
}

impl EarlyDrop {
    /// The chance (0 to 1) that a new connection is dropped while `unauthenticated`
    /// others are.
    pub fn probability(&self, unauthenticated: u32) -> f64 {
        if unauthenticated >= self.full {
            return 1.0;
        }
        if unauthenticated < self.start {
            return 0.0;
        }
        let rate = f64::from(self.rate.min(100)) / 100.0;
        let span = f64::from(self.full - self.start);
        let above = f64::from(unauthenticated - self.start);
        (rate + (1.0 - rate) * above / span).clamp(0.0, 1.0)
    }

    /// Whether to drop a new connection while `unauthenticated` others are.
    pub fn drop(&self, unauthenticated: u32, rng: &mut impl rand::Rng) -> bool {
        let p = self.probability(unauthenticated);
        p > 0.0 && rng.random_bool(p)
    }
}

/// Counts refusals of one kind and says when to log them, so a flood of refused
/// connections cannot flood the log too: one line per `every` with the count since.
pub struct RefusalLog {
    every: Duration,
    state: Mutex<RefusalCounts>,
}

#[derive(Default)]
struct RefusalCounts {
    last_logged: Option<Instant>,
    since: u64,
    total: u64,
}

impl RefusalLog {
    pub fn new(every: Duration) -> RefusalLog {
        RefusalLog {
            every,
            state: Mutex::default(),
        }
    }

    /// Counts one refusal; when a line is due, the refusals since the last one
    /// (this one included) and in all.
    pub fn note(&self, now: Instant) -> Option<(u64, u64)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.since += 1;
        s.total += 1;
        if s.last_logged
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return None;
        }
        s.last_logged = Some(now);
        let since = std::mem::take(&mut s.since);
        Some((since, s.total))
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

    #[test]
    fn early_drop_probability_rises_from_rate_to_full() {
        let d = EarlyDrop {
            start: 10,
            rate: 30,
            full: 64,
        };
        assert_eq!(d.probability(0), 0.0);
        assert_eq!(d.probability(9), 0.0);
        assert!((d.probability(10) - 0.3).abs() < 1e-9);
        assert!((d.probability(37) - 0.65).abs() < 1e-9, "halfway");
        assert_eq!(d.probability(64), 1.0);
        assert_eq!(d.probability(1000), 1.0);
        // start = full: a hard cap only, no early drop.
        let cap = EarlyDrop {
            start: 4,
            rate: 30,
            full: 4,
        };
        assert_eq!(cap.probability(3), 0.0);
        assert_eq!(cap.probability(4), 1.0);
    }

    #[test]
    fn early_drop_drops_about_rate_percent_just_above_start() {
        use rand::SeedableRng;
        let d = EarlyDrop {
            start: 10,
            rate: 30,
            full: 64,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let tries = 10_000;
        let count = |n: u32, rng: &mut rand::rngs::StdRng| {
            (0..tries).filter(|_| d.drop(n, &mut *rng)).count()
        };
        assert_eq!(count(9, &mut rng), 0, "none below start");
        let dropped = count(10, &mut rng);
        assert!(
            (2_700..3_300).contains(&dropped),
            "{dropped} of {tries} dropped at start, want about 30%"
        );
        assert_eq!(count(64, &mut rng), tries, "all at full");
    }

    #[test]
    fn penalties_refuse_grow_cap_and_decay() {
        let t = Throttle::new(limits());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(60);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(t.refuse_penalised(ip, t0).is_none());

        assert_eq!(t.penalise(ip, base, max, t0).0, base);
        let why = t
            .refuse_penalised(ip, at(1))
            .expect("penalised source refused");
        assert!(
            why.contains("penalised") && why.contains("198.51.100.7/32"),
            "{why}"
        );
        assert!(
            t.refuse_penalised(other, at(1)).is_none(),
            "other sources are not"
        );
        assert!(t.refuse_penalised(ip, at(10)).is_none(), "penalty over");

        // A repeat offence soon after doubles it, up to max.
        assert_eq!(t.penalise(ip, base, max, at(11)).0, Duration::from_secs(20));
        assert!(t.refuse_penalised(ip, at(30)).is_some());
        assert!(t.refuse_penalised(ip, at(31)).is_none());
        assert_eq!(t.penalise(ip, base, max, at(32)).0, Duration::from_secs(40));
        assert_eq!(t.penalise(ip, base, max, at(33)).0, max);
        assert_eq!(t.penalise(ip, base, max, at(34)).0, max);
        assert!(t.refuse_penalised(ip, at(34 + 59)).is_some());
        assert!(t.refuse_penalised(ip, at(34 + 60)).is_none());

        // Well-behaved for as long as the last penalty: back to the base.
        assert_eq!(t.penalise(ip, base, max, at(34 + 120)).0, base);
    }

    #[test]
    fn penalties_never_shorten_and_the_table_is_bounded() {
        let t = Throttle::new(limits());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let now = Instant::now();
        let long = Duration::from_secs(600);
        t.penalise(ip, long, long, now);
        t.penalise(ip, Duration::from_secs(1), Duration::from_secs(1), now);
        assert!(
            t.refuse_penalised(ip, now + Duration::from_secs(599))
                .is_some()
        );

        for i in 0..(MAX_PENALISED as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.penalise(ip, long, long, now);
        }
        assert!(t.penalties.lock().unwrap().len() <= MAX_PENALISED);
    }

    #[test]
    fn refusal_log_speaks_once_per_interval_with_counts() {
        let log = RefusalLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.note(t0), Some((1, 1)));
        for s in 1..10 {
            assert_eq!(log.note(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(log.note(t0 + Duration::from_secs(10)), Some((10, 11)));
    }
}
