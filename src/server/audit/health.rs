//! The destination's state, shared by the sinks (which refuse while it fails) and the
//! writer (which finds out).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

/// What the sinks and the writer share about the destination.
pub(super) struct Health {
    /// Why the destination cannot be written right now; `None` while it can. A watch
    /// rather than a flag so that a recorder waiting for room in a full queue learns at
    /// once that no room will come until the destination is fixed.
    pub(super) failure: watch::Sender<Option<String>>,
    /// `audit_on_failure = "continue"`: the operator prefers unaudited forwarding to
    /// refused forwarding.
    pub(super) fail_open: AtomicBool,
    /// SIGHUP asked for the path to be opened again before the next write (logrotate).
    pub(super) reopen: AtomicBool,
    /// Failed write attempts and lost records since start (metrics).
    pub(super) write_failures: AtomicU64,
    pub(super) lost: AtomicU64,
    /// This node's id in cluster mode, put in every record.
    pub(super) node: std::sync::OnceLock<String>,
}

impl Health {
    pub(super) fn new() -> Arc<Health> {
        Arc::new(Health {
            failure: watch::Sender::new(None),
            fail_open: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            write_failures: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            node: std::sync::OnceLock::new(),
        })
    }

    /// Notes a failed attempt. Says so on stderr when writing stops working or fails in a
    /// new way, not at every retry: the refusals it causes are logged one by one.
    pub(super) fn failed(&self, dest: &str, e: &io::Error) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        let why = format!("{dest}: {e}");
        let new = self.failure.send_if_modified(|failure| {
            if failure.as_deref() == Some(why.as_str()) {
                return false;
            }
            *failure = Some(why.clone());
            true
        });
        if !new {
            return;
        }
        if self.fail_open.load(Ordering::Relaxed) {
            tracing::error!(
                "cannot write the audit log {why}; forwarding goes on UNAUDITED \
                 (audit_on_failure = \"continue\"); retrying"
            );
        } else {
            tracing::error!(
                "cannot write the audit log {why}; refusing new logins, channels and -R \
                 listeners until it can be written; retrying"
            );
        }
    }

    /// Notes a write that worked after failures.
    pub(super) fn recovered(&self, dest: &str, since: Instant) {
        if self
            .failure
            .send_if_modified(|failure| failure.take().is_some())
        {
            // A warning like the refusals were, so that their end shows at the same level.
            tracing::warn!(
                "the audit log {dest} can be written again after {:.1?}; records kept \
                 meanwhile are written, logins and channels are accepted again",
                since.elapsed()
            );
        }
    }
}
