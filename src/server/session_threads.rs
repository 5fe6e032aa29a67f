//! Session threads: each SSH connection runs, with every channel and listener it opens,
//! on one of a fixed set of threads, each driving a one-thread tokio runtime.
//!
//! A forwarded connection is a chain of short hand-offs: SSH socket → session task →
//! channel task → target socket, and back. On tokio's multi-threaded runtime each
//! hand-off may land on another worker, and waking a sleeping thread is most of what a
//! short connection costs: ~10 context switches per open / 1-byte echo / close cycle
//! across warrend's threads, 42 % of its profile in the scheduler (`finish_task_switch`).
//! With a session pinned to one thread those hand-offs are task switches within it: ~5
//! context switches per cycle, and ~15 % more connections per second (docs/benchmark.md,
//! fifth run). The bastion still uses every core, for many sessions: there is
//! one thread per core, and each new connection goes to the one with the fewest
//! sessions. What it gives up is spreading one session's channels over cores, which
//! bought little: a session's packets are encrypted and decrypted in one task anyway.
//!
//! OpenSSH gets the same effect from a process per connection.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The threads; dropping this stops them (their remaining tasks are dropped).
pub struct SessionThreads {
    threads: Vec<SessionThread>,
}

struct SessionThread {
    handle: Handle,
    sessions: Arc<AtomicUsize>,
    /// Dropped to end the thread's runtime.
    _stop: oneshot::Sender<()>,
}

/// One session counted on its thread for as long as this lives.
pub struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SessionThreads {
    /// One thread per core the process may use.
    pub fn per_core() -> io::Result<SessionThreads> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        SessionThreads::start(n)
    }

    pub fn start(n: usize) -> io::Result<SessionThreads> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("warrend-session-{i}"))
                .spawn(move || {
                    // Runs the sessions' tasks until the sender is dropped.
                    let _ = runtime.block_on(stopped);
                })?;
            threads.push(SessionThread {
                handle,
                sessions: Arc::default(),
                _stop: stop,
            });
        }
        Ok(SessionThreads { threads })
    }

    /// The thread for a new session: the one with the fewest, the first of those on a tie.
    pub fn pick(&self) -> (&Handle, Seat) {
        let t = self
            .threads
            .iter()
            .min_by_key(|t| t.sessions.load(Ordering::Relaxed))
            .expect("at least one session thread");
        t.sessions.fetch_add(1, Ordering::Relaxed);
        (&t.handle, Seat(t.sessions.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_spread_and_seats_are_given_back() {
        let threads = SessionThreads::start(2).unwrap();
        let (a, seat_a) = threads.pick();
        let (b, seat_b) = threads.pick();
        assert_ne!(a.id(), b.id(), "the second session goes to the idle thread");
        drop(seat_a);
        let (c, _seat_c) = threads.pick();
        assert_eq!(
            c.id(),
            a.id(),
            "a freed seat makes its thread the least loaded"
        );
        drop(seat_b);
    }

    #[test]
    fn a_task_runs_on_its_session_thread() {
        let threads = SessionThreads::start(1).unwrap();
        let (handle, _seat) = threads.pick();
        let task = handle.spawn(async { std::thread::current().name().map(str::to_string) });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let name = rt.block_on(task).unwrap();
        assert_eq!(name.as_deref(), Some("warrend-session-0"));
    }
}
