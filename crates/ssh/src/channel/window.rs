//! Channel windows: what we let the peer send ([`RecvWindow`]), what the peer lets us
//! send ([`SendWindow`]), and the memory all receive windows of a session may claim
//! beyond their initial size ([`WindowBudget`]).
//!
//! # Receive side, in one paragraph
//! Every byte the peer may still send without asking is a byte we may have to hold,
//! so we only ever grant window back for bytes the application has consumed (the
//! OpenSSH rule; russh grants on receipt, which is what forces it to either stall the
//! whole session or spill to disk). We track the amounts whose sum, `committed`, is
//! the most this channel can make us buffer:
//!
//! ```text
//! committed = granted (peer may still send; includes adjusts in flight)
//!           + buffered (received, the application has not taken it yet)
//!           + unacked (consumed, not yet granted back)
//!           + owed (growth not yet granted: paced windows only)
//! ```
//!
//! Normally `committed == target`. Growing the window raises both at once (the extra is
//! granted immediately, or along with the next grants when paced); shrinking lowers only `target`, and the difference is paid off
//! by withholding grants as the application consumes, because granted window cannot be
//! revoked (RFC 4254 §5.2).

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long without incoming data before a grown window is given back. Two seconds
/// is many RTTs on any link worth autotuning for, yet short enough that a burst of
/// transfers on many channels does not keep the session's budget pinned for long.
pub const IDLE_SHRINK_AFTER: Duration = Duration::from_secs(2);

/// Memory that the receive windows of one session may claim beyond each channel's
/// initial window.
///
/// Initial windows are not charged: they are the protocol's baseline (and what the
/// peer was promised at CHANNEL_OPEN), so the budget bounds only what autotuning adds.
/// A channel is charged for `committed - initial`, i.e. for the worst case the peer can
/// make us buffer, not for what happens to be buffered now; that is what keeps the
/// session's memory bounded whatever the peers do. To nest under a server-wide limit, a
/// [`WindowPool`] shared by many sessions is drawn from at the moment a window grows and
/// paid back as it shrinks or closes, so idle sessions hold none of it.
#[derive(Debug)]
pub struct WindowBudget {
    limit: u64,
    in_use: u64,
    pool: Option<std::sync::Arc<dyn WindowPool>>,
}

/// Growth credit shared by many sessions (a user's, a server's). `take` may grant less than
/// asked, down to nothing; what a session took goes back with `give` when its windows shrink,
/// its channels close or the session ends.
pub trait WindowPool: Send + Sync + std::fmt::Debug {
    fn take(&self, want: u64) -> u64;
    fn give(&self, n: u64);
}

impl WindowBudget {
    pub fn new(limit: u64) -> Self {
        WindowBudget {
            limit,
            in_use: 0,
            pool: None,
        }
    }

    /// Draws growth from `pool` too (on top of this budget's own limit). Set before any
    /// channel grows.
    pub fn set_pool(&mut self, pool: std::sync::Arc<dyn WindowPool>) {
        debug_assert_eq!(self.in_use, 0, "pool set after growth");
        self.pool = Some(pool);
    }

    /// Bytes currently charged by the channels (their `committed - initial`).
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// For a server-wide allocator resizing a session's share. Lowering it below
    /// `in_use` revokes nothing (granted window cannot be taken back); it only stops
    /// growth until channels shrink or close.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Room left for growth.
    pub fn available(&self) -> u64 {
        self.limit.saturating_sub(self.in_use)
    }

    /// Takes up to `want`; partial grants let a channel grow into whatever room is
    /// left rather than not at all.
    fn take(&mut self, want: u64) -> u64 {
        let mut got = want.min(self.available());
        if let Some(pool) = &self.pool
            && got > 0
        {
            got = pool.take(got).min(got);
        }
        self.in_use += got;
        got
    }

    fn give_back(&mut self, n: u64) {
        debug_assert!(n <= self.in_use, "budget returned more than it lent");
        let n = n.min(self.in_use);
        self.in_use -= n;
        if let Some(pool) = &self.pool
            && n > 0
        {
            pool.give(n);
        }
    }
}

impl Drop for WindowBudget {
    /// A session that ends with channels still open pays its growth back to the pool.
    fn drop(&mut self) {
        if let Some(pool) = &self.pool
            && self.in_use > 0
        {
            pool.give(self.in_use);
        }
    }
}

/// The part of one channel's growth charged to a pool of its own: the user whose
/// connection a session shared by many users carries (a cluster link between two nodes),
/// so that the session's budget does not become a way around that user's limit. What it
/// holds goes back when the channel closes, or when it is dropped with its session.
#[derive(Debug)]
struct OwnerShare {
    pool: std::sync::Arc<dyn WindowPool>,
    charged: u64,
}

impl Drop for OwnerShare {
    fn drop(&mut self) {
        if self.charged > 0 {
            self.pool.give(self.charged);
        }
    }
}

/// A probe's delay counts as an RTT sample only if the packet that crossed the edge
/// came after a silence of at least `delay / WAIT_GAP_DIVISOR`. See [`RecvWindow`].
const WAIT_GAP_DIVISOR: u32 = 16;

/// The fastest a peer other than warren's engine is assumed to send one channel, in
/// bytes per second: about what one OpenSSH stream reaches on one core. A paced window
/// grows no further than this rate over `rtt_min`. On a busy machine the peer's own
/// scheduling delay reads as a round trip of a few milliseconds, even on loopback, and
/// growing there buys nothing: sshd then buffers the larger backlog and pays its
/// buffer growth on it (docs/benchmark.md). On a real path the cap binds first from about
/// 24 ms of round trip on, and below that a window at this rate covers any line one such stream can fill.
const PACED_RATE_CEILING: u64 = 1 << 30;

/// A grant whose round trip we are timing: the first byte beyond `edge` can only have
/// been sent after the peer saw a WINDOW_ADJUST sent at or after `sent_at`.
#[derive(Debug, Clone, Copy)]
struct Probe {
    edge: u64,
    sent_at: Instant,
}

/// The receive side of one channel: the window we advertised, data buffered for the
/// application, and autotuning.
///
/// # When we grant
/// Once the consumed-but-not-granted bytes reach `target / 8` (at least one byte). A
/// WINDOW_ADJUST per packet would cost a packet on the reverse path for every one on
/// the forward path; a large threshold starves the sender, since on average half a
/// threshold sits unacknowledged. With `target / 8` the sender keeps about 15/16 of
/// the window usable, i.e. the window-limited rate is ~94 % of `target / RTT`, and a
/// 2 MiB window costs 8 adjusts per window's worth of data. (OpenSSH's "3 max packets
/// or half the window" sits in between; its half-window rule is only needed when the
/// threshold can exceed what the reader will ever consume, which `target / 8` cannot:
/// if the peer has no window left, `buffered + unacked >= target`, so either the
/// reader has something to consume or `unacked` is over the threshold.)
///
/// # When we grow (autotuning)
/// Growing only pays when the *window* is what limits the rate: the sender sits
/// waiting for our WINDOW_ADJUST. The receiver cannot see the sender, but it can time
/// its own grants: after granting at `t` with the peer's edge at `E`, no byte beyond
/// `E` can arrive before `t + RTT`. If the sender was blocked at `E`, the byte beyond
/// it arrives at exactly `t + RTT`, after a silence (the sender was waiting); if it was
/// not (link or application limited), it arrives later, when the sender gets round to
/// it, right behind the bytes before it. A delay alone cannot tell the two apart (a
/// link-limited sender's delay, the time to drain the window, looks like a long RTT),
/// so only delays whose crossing packet came after a silence of at least 1/16 of the
/// delay feed the RTT estimate `rtt_min` (their minimum). In steady window-limited flow
/// the silence before each grant's burst is about `RTT / 8 * (1 - target / BDP)`, so
/// samples qualify until the window is well on its way to the bandwidth-delay product
/// `BDP`; a sender that is link-limited from the start never produces one, so its
/// window never grows. A probe is then *window-limited* when its delay is within 50 %
/// of `rtt_min` (25 % for a paced window; silence or not, so growth continues near the
/// BDP). The margin is that wide because growth granted at once releases a burst: the
/// probe started after a doubling times a byte that crosses the link behind the
/// doubling's data, which at 100 ms and 1 Gbit/s reads ~1.3 RTT at 8 MiB; judged by
/// 25 %, that step came two RTTs late. A paced window's growth comes spread over the
/// next RTT, with no such burst, and keeps the narrower margin: its peer pays for every
/// extra step in buffer growth.
///
/// A window-limited probe whose data the application has almost all taken
/// (`buffered <= target / 4` at the next consume, so the reader keeps up) doubles
/// `target`, up to `cap` and to what the [`WindowBudget`] allows, and the extra is
/// granted at once; if its delay was within 1/8 of `rtt_min` (no queue at all: the
/// window is far below the BDP), an unpaced window quadruples instead, which saves a
/// round trip per two steps on long paths (simulated, 1 Gbit/s, 3 s from a 2 MiB start:
/// 100 ms 104.4 → 108.9 MiB/s, 200 ms 82.3 → 89.1, with the line at 119.2). A slow
/// reader never causes growth: its buffer is full. One probe is in flight at a time and
/// growth discards it (it timed the old window), so growth is at most one step per RTT,
/// reaching a BDP `B` from `initial` in about `log2(B / initial)` RTTs or fewer (Linux's
/// receive-buffer autotuning, `tcp_rcv_space_adjust`, doubles per RTT). Once the window
/// exceeds the BDP the delay becomes the time to drain it, `7/8 * target / rate`; past
/// `1.5 RTT` that is no longer window-limited, and past `1.125 RTT` no longer unqueued,
/// so the last step starts below ~1.7 BDP (doubling) or ~1.3 BDP (quadrupling) and the
/// window ends between 1 and ~5 BDP, in simulations up to ~3.4 (Linux aims at 2); `cap`
/// and the budgets bound it whatever the path. A paced window's last doubling starts
/// below ~1.43 BDP (`1.25 RTT`), so it ends below ~2.9 BDP.
///
/// *Paced* windows ([`RecvWindow::paced`], used toward peers other than warren) do not
/// grant the growth at once: each grant carries at most as much of it as the reader
/// consumed since the last one, so the sender's window grows with what it sees acknowledged
/// (as TCP's slow start is clocked by ACKs) and a doubling is spread over the next RTT
/// instead of arriving as one window's worth of room. OpenSSH fills such room by reading
/// from its socket into one buffer at once (see `Config::foreign_window_cap`). No probe
/// runs while growth is still owed, so the next doubling times the grown window. A paced
/// window also grows no further than `PACED_RATE_CEILING` over `rtt_min`.
///
/// Known limits: jitter above the margin makes growth conservative (missed
/// doublings, never extra ones); a receive path that delivers packets in batches only
/// shows silences at batch boundaries, which is where a waiting sender's burst starts.
///
/// # When we shrink
/// After [`IDLE_SHRINK_AFTER`] without incoming data, [`RecvWindow::on_idle`] drops
/// `target` back to `initial` and forgets the RTT estimate (the path may have changed).
/// Window already granted stays granted; the excess is paid off by withholding grants,
/// and budget is returned as it is paid off, so `budget.in_use()` always covers what
/// the peer could still send.
#[derive(Debug)]
pub struct RecvWindow {
    initial: u32,
    cap: u32,
    target: u32,
    granted: u32,
    buffered: u32,
    unacked: u32,
    /// `granted + buffered + unacked + owed`; never below `target`.
    committed: u32,
    /// Taken from the budget: `committed - initial` until [`RecvWindow::release`].
    charged: u32,
    /// Total bytes ever received, for the probe's edge (u64: cannot wrap in practice).
    received: u64,
    last_data: Option<Instant>,
    probe: Option<Probe>,
    rtt_min: Option<Duration>,
    /// The last completed probe said the sender was waiting on us.
    window_limited: bool,
    /// Growth is granted along with consumption rather than at once (see the type's docs).
    paced: bool,
    /// The last completed probe crossed no queue: the window is far below the BDP.
    unqueued: bool,
    /// Growth taken from the budget and counted in `committed`, not yet granted.
    owed: u32,
    /// Where growth is charged besides the session's budget, if the channel has an owner
    /// of its own ([`RecvWindow::set_owner_pool`]).
    owner: Option<OwnerShare>,
}

impl RecvWindow {
    /// `initial` is advertised in CHANNEL_OPEN / OPEN_CONFIRMATION; the window may grow
    /// to `cap` (a `cap` below `initial` means no growth).
    pub fn new(initial: u32, cap: u32) -> Self {
        RecvWindow {
            initial,
            cap: cap.max(initial),
            target: initial,
            granted: initial,
            buffered: 0,
            unacked: 0,
            committed: initial,
            charged: 0,
            received: 0,
            last_data: None,
            probe: None,
            rtt_min: None,
            window_limited: false,
            paced: false,
            unqueued: false,
            owed: 0,
            owner: None,
        }
    }

    /// The same window, granting its growth paced by consumption (see the type's docs).
    pub fn paced(mut self) -> Self {
        self.paced = true;
        self
    }

    pub fn advertised_initial(&self) -> u32 {
        self.initial
    }

    /// Peer sent `n` bytes of CHANNEL_DATA / EXTENDED_DATA payload. More than the
    /// window we granted is a protocol error (and nothing is buffered), since buffering
    /// it is exactly the unbounded memory the window exists to prevent.
    pub fn on_data(&mut self, n: usize, now: Instant) -> Result<()> {
        if n == 0 {
            // Not activity either: empty packets must not keep a grown window alive.
            return Ok(());
        }
        let n = match u32::try_from(n) {
            Ok(n) if n <= self.granted => n,
            _ => {
                return Err(Error::Protocol(format!(
                    "channel data of {n} bytes exceeds the {} bytes of window granted",
                    self.granted
                )));
            }
        };
        self.granted -= n;
        self.buffered += n;
        self.received += u64::from(n);
        // Silence before this packet: when the sender was waiting for window, the
        // first byte it could send after our grant comes after a pause.
        let gap = self
            .last_data
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        self.last_data = Some(now);
        if let Some(p) = self.probe
            && self.received > p.edge
        {
            self.probe = None;
            let delay = now.saturating_duration_since(p.sent_at);
            // A zero delay is no round trip (a caller passing one `now` throughout).
            if !delay.is_zero() && gap >= delay / WAIT_GAP_DIVISOR {
                self.rtt_min = Some(self.rtt_min.map_or(delay, |m| m.min(delay)));
            }
            // Unpaced growth arrives as one burst that the next probe queues behind.
            let margin = if self.paced { 4 } else { 2 };
            self.window_limited = self.rtt_min.is_some_and(|m| delay <= m + m / margin);
            self.unqueued = self.rtt_min.is_some_and(|m| delay <= m + m / 8);
            tracing::trace!(
                delay_us = delay.as_micros() as u64,
                gap_us = gap.as_micros() as u64,
                rtt_min_us = self.rtt_min.map(|m| m.as_micros() as u64),
                window_limited = self.window_limited,
                target = self.target,
                "window probe"
            );
        }
        Ok(())
    }

    /// The application consumed `n` bytes (delivered to the local socket, not merely
    /// taken off our queue). Returns the increment of a WINDOW_ADJUST to send now.
    /// Consuming more than is buffered is a bug of the caller; it is clamped.
    pub fn on_consumed(
        &mut self,
        n: usize,
        now: Instant,
        budget: &mut WindowBudget,
    ) -> Option<u32> {
        debug_assert!(n <= self.buffered as usize, "consumed more than buffered");
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.buffered);
        self.buffered -= n;
        self.unacked += n;
        self.repay(budget);
        let grown = if std::mem::take(&mut self.window_limited) && self.buffered <= self.target / 4
        {
            self.grow(budget)
        } else {
            0
        };
        let extra = if self.paced {
            self.owed += grown;
            0
        } else {
            grown
        };
        if extra == 0 && self.unacked < self.grant_threshold() {
            return None;
        }
        // Paced growth rides on grants of consumed bytes, at most as much again.
        let released = self.owed.min(self.unacked);
        self.owed -= released;
        let inc = self.unacked + extra + released;
        if inc == 0 {
            return None;
        }
        self.unacked = 0;
        if grown > 0 {
            // Any probe in flight, and one started by this grant, would time the sender
            // as it was under the old window (waiting on us, by the very judgement that
            // made us grow): one needless doubling every time. Measure the new window.
            self.probe = None;
        } else if self.probe.is_none() && self.owed == 0 {
            self.probe = Some(Probe {
                edge: self.received + u64::from(self.granted),
                sent_at: now,
            });
        }
        self.granted += inc;
        Some(inc)
    }

    /// Received, not yet consumed. Never more than `committed`, itself never more than
    /// `cap` (or the `target` before a shrink).
    pub fn buffered(&self) -> usize {
        self.buffered as usize
    }

    /// The window size we aim to keep granted.
    pub fn target(&self) -> u32 {
        self.target
    }

    #[cfg(test)]
    pub(crate) fn is_paced(&self) -> bool {
        self.paced
    }

    /// Growth of a paced window not granted yet.
    #[cfg(test)]
    pub(crate) fn owed(&self) -> u32 {
        self.owed
    }

    /// Window the peer may still use as far as we know (adjusts in flight included).
    pub fn granted(&self) -> u32 {
        self.granted
    }

    /// Called from a timer (every second or so suffices); shrinks a grown window after
    /// [`IDLE_SHRINK_AFTER`] without data. Never revokes granted window.
    pub fn on_idle(&mut self, now: Instant, budget: &mut WindowBudget) {
        let idle = self
            .last_data
            .is_none_or(|t| now.saturating_duration_since(t) >= IDLE_SHRINK_AFTER);
        if !idle {
            return;
        }
        self.probe = None;
        self.rtt_min = None;
        self.window_limited = false;
        self.target = self.initial;
        self.repay(budget);
    }

    /// Charges this channel's growth to `pool` as well as to the session's budget: it
    /// grows only as far as both allow. Growth from before the call stays the session's
    /// alone (the pool is never paid back more than it lent).
    pub fn set_owner_pool(&mut self, pool: std::sync::Arc<dyn WindowPool>) {
        self.owner = Some(OwnerShare { pool, charged: 0 });
    }

    /// Takes up to `want` from the budget and the owner's pool; what only one of them
    /// could give goes back to it.
    fn take(&mut self, budget: &mut WindowBudget, want: u64) -> u64 {
        let got = budget.take(want);
        let Some(owner) = &mut self.owner else {
            return got;
        };
        let kept = if got > 0 {
            owner.pool.take(got).min(got)
        } else {
            0
        };
        if kept < got {
            budget.give_back(got - kept);
        }
        owner.charged += kept;
        kept
    }

    fn give(&mut self, budget: &mut WindowBudget, n: u64) {
        budget.give_back(n);
        if let Some(owner) = &mut self.owner {
            let back = n.min(owner.charged);
            owner.charged -= back;
            if back > 0 {
                owner.pool.give(back);
            }
        }
    }

    /// The channel is closed: everything it was charged goes back to the budget, and
    /// it will not grow again.
    pub fn release(&mut self, budget: &mut WindowBudget) {
        self.give(budget, u64::from(self.charged));
        self.charged = 0;
        self.owed = 0;
        self.cap = self.initial;
        self.target = self.initial;
    }

    fn grant_threshold(&self) -> u32 {
        (self.target / 8).max(1)
    }

    /// After a shrink, growth still owed and then consumed bytes pay off
    /// `committed - target` instead of being granted, and their budget is returned.
    fn repay(&mut self, budget: &mut WindowBudget) {
        let forgo = (self.committed - self.target).min(self.owed);
        self.owed -= forgo;
        self.uncommit(forgo, budget);
        let pay = (self.committed - self.target).min(self.unacked);
        self.unacked -= pay;
        self.uncommit(pay, budget);
    }

    /// `n` bytes leave `committed`, and as much of the charge goes back to the budget.
    fn uncommit(&mut self, n: u32, budget: &mut WindowBudget) {
        self.committed -= n;
        let back = n.min(self.charged);
        self.charged -= back;
        self.give(budget, u64::from(back));
    }

    /// Doubles `target` (quadruples it after an unqueued probe, unpaced windows only)
    /// within `cap` and the budget (and, when paced, within `PACED_RATE_CEILING` ×
    /// `rtt_min`); returns the window to grant now.
    fn grow(&mut self, budget: &mut WindowBudget) -> u32 {
        // Paced windows double at most: their growth is what a foreign peer buffers.
        let factor = if std::mem::take(&mut self.unqueued) && !self.paced {
            4
        } else {
            2
        };
        let mut want = (u64::from(self.target) * factor).min(u64::from(self.cap));
        if self.paced
            && let Some(rtt) = self.rtt_min
        {
            let enough = PACED_RATE_CEILING as u128 * rtt.as_nanos() / 1_000_000_000;
            want = want.min(u64::try_from(enough).unwrap_or(u64::MAX));
        }
        let want = want as u32;
        if want <= self.committed {
            // Still paying off an earlier shrink: the window is already out there.
            self.target = self.target.max(want);
            return 0;
        }
        let got = self.take(budget, u64::from(want - self.committed)) as u32;
        self.committed += got;
        self.charged += got;
        self.target = self.committed;
        tracing::trace!(
            target = self.target,
            paced = self.paced,
            "receive window grew"
        );
        got
    }
}

/// The send side: how much the peer lets us send, and in what packet size.
#[derive(Debug, Clone)]
pub struct SendWindow {
    window: u32,
    max_packet: u32,
}

impl SendWindow {
    /// From the peer's CHANNEL_OPEN / OPEN_CONFIRMATION. A `max_packet` of 0 means we
    /// can never send; the integrator may treat it as a protocol error.
    pub fn new(initial: u32, max_packet: u32) -> Self {
        SendWindow {
            window: initial,
            max_packet,
        }
    }

    /// Bytes we may send now.
    pub fn available(&self) -> usize {
        self.window as usize
    }

    /// Cap per CHANNEL_DATA payload (the peer's maximum packet size; the integrator
    /// subtracts header overhead if it reads the limit as whole-packet size).
    pub fn max_packet(&self) -> usize {
        self.max_packet as usize
    }

    /// Size of the next CHANNEL_DATA payload for `want` pending bytes: bounded by the
    /// window and the maximum packet size (0: wait for WINDOW_ADJUST).
    pub fn next_chunk(&self, want: usize) -> usize {
        want.min(self.available()).min(self.max_packet())
    }

    /// Bytes we just sent. Sending beyond the window is a bug of ours: it is clamped
    /// (the peer would be entitled to drop the excess or disconnect).
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.available(), "sending beyond the peer's window");
        self.window = self
            .window
            .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// WINDOW_ADJUST from the peer. RFC 4254 §5.2: "The window MUST NOT be increased
    /// above 2^32 - 1 bytes." A peer that does so has lost track of its own accounting,
    /// so, as OpenSSH does (channels.c, "adjust ... overflows remote window"), it is a
    /// protocol error rather than silently clamped; the window is left unchanged.
    pub fn on_adjust(&mut self, n: u32) -> Result<()> {
        self.window = self.window.checked_add(n).ok_or_else(|| {
            Error::Protocol(format!(
                "window adjust of {n} overflows the window of {}",
                self.window
            ))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u32 = 1 << 20;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn stalled_reader_grants_nothing_then_exactly_what_it_consumes() {
        let now = t0();
        let mut b = WindowBudget::new(u64::MAX);
        let mut w = RecvWindow::new(2 * MIB, 64 * MIB);
        for _ in 0..64 {
            w.on_data(32 * 1024, now).unwrap();
        }
        assert_eq!(w.granted(), 0);
        assert_eq!(w.buffered(), 2 * MIB as usize);
        // Stalled: nothing more may arrive, nothing is granted.
        assert!(w.on_data(1, now).is_err());
        assert_eq!(
            w.buffered(),
            2 * MIB as usize,
            "rejected data is not buffered"
        );
        // Resumes in small steps: grants only at the threshold, and exactly the sum.
        let mut granted = 0u64;
        let mut adjusts = 0;
        for _ in 0..(2 * MIB / 1000) {
            if let Some(inc) = w.on_consumed(1000, now, &mut b) {
                granted += u64::from(inc);
                adjusts += 1;
            }
        }
        let consumed = u64::from(2 * MIB / 1000 * 1000);
        let threshold = u64::from(2 * MIB / 8);
        assert!(consumed - granted < threshold);
        assert_eq!(u64::from(w.granted()), granted);
        assert_eq!(
            adjusts, 7,
            "one adjust per 256 KiB consumed, not one per read"
        );
        // The last few bytes stay unacknowledged: below the threshold, the peer still
        // has 7/8 of the window, and a grant now would be a packet for nothing.
        let rest = w.buffered();
        assert_eq!(w.on_consumed(rest, now, &mut b), None);
        assert_eq!(w.buffered(), 0);
        assert!(u64::from(2 * MIB) - granted < threshold);
        // More data and consumption: the held-back bytes go out with the next grant.
        w.on_data(w.granted() as usize, now).unwrap();
        let all = w.buffered();
        let inc = w.on_consumed(all, now, &mut b).unwrap();
        assert_eq!(u64::from(inc), u64::from(2 * MIB) - granted + all as u64);
        assert_eq!(w.granted(), 2 * MIB);
        assert_eq!(w.target(), 2 * MIB);
        assert_eq!(b.in_use(), 0);
    }

    /// A paced doubling is owed, then granted at most as much again as each grant of
    /// consumed bytes; a shrink while some is still owed forgoes it and returns its budget
    /// at once, and the part already granted is paid off as it is used.
    #[test]
    fn paced_growth_rides_on_consumption_and_a_shrink_forgoes_what_is_owed() {
        let now = t0();
        let ms = Duration::from_millis;
        let mut b = WindowBudget::new(u64::MAX);
        let mut w = RecvWindow::new(8 * MIB, 64 * MIB).paced();
        // The peer fills the window at once and we grant it all back: a probe starts at
        // the peer's edge.
        w.on_data(8 * MIB as usize, now).unwrap();
        assert_eq!(w.on_consumed(8 * MIB as usize, now, &mut b), Some(8 * MIB));
        // After a silence of one RTT it sends past the edge: it was waiting on us.
        w.on_data(MIB as usize, now + ms(50)).unwrap();
        // The window doubles, but nothing is granted yet: 1 MiB is below target / 8.
        assert_eq!(w.on_consumed(MIB as usize, now + ms(50), &mut b), None);
        assert_eq!(w.target(), 16 * MIB);
        assert_eq!(w.owed(), 8 * MIB);
        assert_eq!(
            b.in_use(),
            u64::from(8 * MIB),
            "the growth is charged at once"
        );
        // 3 MiB more consumed: the grant carries the 4 MiB consumed and as much growth.
        w.on_data(3 * MIB as usize, now + ms(60)).unwrap();
        assert_eq!(
            w.on_consumed(3 * MIB as usize, now + ms(60), &mut b),
            Some(8 * MIB)
        );
        assert_eq!(w.owed(), 4 * MIB);
        assert_eq!(w.granted(), 12 * MIB);
        // Idle: the target drops back; the 4 MiB still owed is never granted.
        w.on_idle(now + ms(60) + IDLE_SHRINK_AFTER, &mut b);
        assert_eq!(w.target(), 8 * MIB);
        assert_eq!(w.owed(), 0);
        assert_eq!(b.in_use(), u64::from(4 * MIB));
        // The peer uses the 12 MiB it holds: 4 MiB of it pays off the rest of the growth.
        let later = now + ms(70) + IDLE_SHRINK_AFTER;
        w.on_data(12 * MIB as usize, later).unwrap();
        let inc = w.on_consumed(12 * MIB as usize, later, &mut b);
        assert_eq!(inc, Some(8 * MIB));
        assert_eq!(b.in_use(), 0);
        assert_eq!(w.granted(), 8 * MIB);
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        let now = t0();
        let mut w = RecvWindow::new(1000, 1000);
        w.on_data(0, now).unwrap();
        assert!(w.on_data(1001, now).is_err());
        assert!(w.on_data(usize::MAX, now).is_err());
        assert!(w.on_data(u32::MAX as usize + 1, now).is_err());
        w.on_data(1000, now).unwrap();
        assert!(w.on_data(1, now).is_err());
        assert_eq!(w.buffered(), 1000);

        let mut zero = RecvWindow::new(0, 0);
        assert!(zero.on_data(1, now).is_err());
        zero.on_data(0, now).unwrap();

        let mut s = SendWindow::new(u32::MAX - 10, 32768);
        s.on_adjust(10).unwrap();
        assert_eq!(s.available(), u32::MAX as usize);
        assert!(s.on_adjust(1).is_err());
        assert_eq!(
            s.available(),
            u32::MAX as usize,
            "a rejected adjust changes nothing"
        );
        s.on_adjust(0).unwrap();
        let mut s = SendWindow::new(5, 32768);
        assert!(s.on_adjust(u32::MAX).is_err());
        s.on_adjust(u32::MAX - 5).unwrap();
        assert_eq!(s.available(), u32::MAX as usize);
    }

    #[test]
    fn send_window_chunks_by_window_and_packet_size() {
        let mut s = SendWindow::new(100_000, 32768);
        assert_eq!(s.next_chunk(1 << 20), 32768);
        assert_eq!(s.next_chunk(10), 10);
        s.consume(90_000);
        assert_eq!(s.next_chunk(1 << 20), 10_000);
        s.consume(10_000);
        assert_eq!(s.next_chunk(1), 0);
        s.on_adjust(5).unwrap();
        assert_eq!(s.available(), 5);
        assert_eq!(s.max_packet(), 32768);
    }
}
