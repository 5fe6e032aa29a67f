//! `--preconnect`: one channel to a `-L` target opened ahead of the next connection.
//!
//! Through ssh, a new local connection waits a full round trip to the server (channel
//! open, the server's own connect to the target, confirmation) before its first byte can
//! move, because SSH gives a channel no number to send on until the server confirms it.
//! Across a real link that round trip is half of a short request's life. A spare opened
//! in the pause after a connection takes it off the path: the next local connection gets
//! a channel that is already confirmed and only pays for its data. Through sshd,
//! connections that come back to back get nothing from it (see [`Spare::refill`] for why
//! no spare is opened while one is in use); through warrend they do. One arriving while
//! a spare is on its way waits for that one.
//!
//! The price is why this is opt-in and bounded: the target sees a connection before any
//! client exists (and one that is never used when no further connection comes), so a
//! spare is only opened after a real connection ended (a forward never used opens
//! nothing), at most one per forward is held, and one unused for [`SPARE_TTL`] is closed.
//! Targets that count connections closed before their handshake (MySQL's
//! `max_connect_errors`) or greet with a short timeout should not be preconnected.

use super::Opener;
use crate::config::forward::Endpoint;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// How long an unused spare is held. Short enough to stay inside the greeting or
/// handshake timeouts of common servers (MySQL's connect_timeout is 10 s), long enough
/// to cover the pauses between a client's requests.
pub const SPARE_TTL: Duration = Duration::from_secs(3);

/// The spare channel of one forward, shared by its accept loops and a keeper task.
pub struct Spare<O: Opener> {
    slot: Mutex<Slot<O::Stream>>,
    /// Signalled by [`Spare::refill`].
    want: Notify,
}

struct Slot<S> {
    ready: Option<S>,
    /// An open is under way.
    opening: bool,
    /// The connection that arrived during that open and waits for it: the spare's
    /// confirmation is already on its way, so it comes sooner than a new open's would.
    claim: Option<oneshot::Sender<Option<S>>>,
}

/// What a new connection gets from [`Spare::take`].
pub enum Early<S> {
    /// Open a channel as usual.
    None,
    /// A channel opened ahead of it.
    Ready(S),
    /// The spare being opened right now; `None` from it (the open failed) means open as
    /// usual.
    Pending(oneshot::Receiver<Option<S>>),
}

impl<O: Opener> Spare<O> {
    /// Starts the keeper on `tracker`; it holds nothing until the first [`Spare::refill`]
    /// and drops what it holds when `cancel` fires.
    pub fn start(
        opener: Arc<O>,
        target: Arc<Endpoint>,
        open_timeout: Duration,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Spare<O>> {
        let spare = Arc::new(Spare {
            slot: Mutex::new(Slot {
                ready: None,
                opening: false,
                claim: None,
            }),
            want: Notify::new(),
        });
        tracker.spawn(keep(spare.clone(), opener, target, open_timeout, cancel));
        spare
    }

    /// The spare for a connection that just arrived: the one held, if it is still usable,
    /// or the one being opened, if no other connection claimed it. A held spare whose
    /// channel ended meanwhile (the target closed it, the session died) is dropped, which
    /// closes it.
    pub fn take(&self) -> Early<O::Stream> {
        let mut slot = self.lock();
        if let Some(s) = slot.ready.take() {
            if O::still_open(&s) {
                return Early::Ready(s);
            }
            debug!("the preconnected channel ended unused; opening a new one");
            return Early::None;
        }
        if slot.opening && slot.claim.is_none() {
            let (tx, rx) = oneshot::channel();
            slot.claim = Some(tx);
            return Early::Pending(rx);
        }
        Early::None
    }

    /// Have a spare ready for the next connection (unless one still is).
    ///
    /// Called when the forward goes idle (its last connection ended), and when a
    /// connection arrives only if the server is known to send at once
    /// ([`Opener::server_sends_at_once`]): sshd holds a small packet while an earlier
    /// small one is unacknowledged (Nagle, on for port-forwarding sessions), so a spare's
    /// confirmation sent while another connection of the forward waits for its reply
    /// would hold that reply back a round trip. Opened in a pause, it costs nobody a
    /// wait, and connections that come back to back simply open their own as with ssh;
    /// through warrend the next spare travels with the current connection's data.
    pub fn refill(&self) {
        self.want.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<O::Stream>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Opens a spare whenever one is asked for ([`Spare::refill`]) and none is held, holds it
/// for [`SPARE_TTL`], and closes it unused after that. A failed open is not retried until the next connection
/// (the connection itself then reports why), so a refusing target costs nothing extra.
async fn keep<O: Opener>(
    spare: Arc<Spare<O>>,
    opener: Arc<O>,
    target: Arc<Endpoint>,
    open_timeout: Duration,
    cancel: CancellationToken,
) {
    'idle: loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = spare.want.notified() => {}
        }
        loop {
            spare.lock().opening = true;
            let opened = tokio::select! {
                _ = cancel.cancelled() => break 'idle,
                r = tokio::time::timeout(open_timeout, opener.open(&target, None)) => r,
            };
            let opened = match opened {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    debug!("preconnecting to {target} failed: {e}");
                    None
                }
                Err(_) => {
                    debug!("preconnecting to {target} timed out");
                    None
                }
            };
            {
                let mut slot = spare.lock();
                slot.opening = false;
                match (opened, slot.claim.take()) {
                    (Some(stream), Some(claim)) => {
                        // A claimant that gave up leaves it to the next connection.
                        if let Err(Some(stream)) = claim.send(Some(stream)) {
                            slot.ready = Some(stream);
                        }
                    }
                    (Some(stream), None) => slot.ready = Some(stream),
                    (None, claim) => {
                        if let Some(claim) = claim {
                            let _ = claim.send(None);
                        }
                        continue 'idle;
                    }
                }
            }
            let expiry = tokio::time::sleep(SPARE_TTL);
            tokio::pin!(expiry);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break 'idle,
                    _ = &mut expiry => {
                        if spare.lock().ready.take().is_some() {
                            debug!("closing the unused preconnected channel to {target}");
                        }
                        continue 'idle;
                    }
                    _ = spare.want.notified() => {
                        // A request left by the connection that claimed this spare while
                        // it was being opened finds it handed over; one left by a
                        // connection that opened its own finds it still here, unused.
                        if spare.lock().ready.is_none() {
                            break;
                        }
                    }
                }
            }
        }
    }
    let mut slot = spare.lock();
    drop(slot.ready.take());
    drop(slot.claim.take());
}

#[cfg(test)]
#[path = "spare_tests.rs"]
mod tests;
