//! The server's data path: channels the client opens (`direct`) and connections to its
//! `-R` listeners (`reverse`), each audited from decision to close.

pub mod direct;
pub mod reverse;

use super::audit::{AuditEvent, AuditSink};
use super::connection::decision_fields;
use super::policy::Decision;
use crate::forward::relay::relay_with_idle;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// Everything a forwarded connection needs to audit itself, captured when it opens.
#[derive(Clone)]
pub struct ChannelCtx {
    pub conn: u64,
    pub channel: u64,
    pub kind: String,
    pub user: String,
    pub target: String,
    pub audit: AuditSink,
    /// The connection's open-channel count (max_channels_per_session).
    pub open: Arc<AtomicU32>,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// Where forwarded-connection tasks are spawned (shutdown waits for them).
    pub tasks: tokio_util::task::TaskTracker,
}

impl ChannelCtx {
    pub async fn audit_open(&self, decision: &Decision, resolved: &[String]) {
        let (decision, rule, reason) = decision_fields(decision);
        self.audit
            .record(
                self.conn,
                AuditEvent::ChannelOpen {
                    channel: self.channel,
                    kind: self.kind.clone(),
                    user: self.user.clone(),
                    target: self.target.clone(),
                    resolved: resolved.to_vec(),
                    decision,
                    rule,
                    reason,
                },
            )
            .await;
    }

    /// Relays until both directions end (or the idle timeout), then records bytes and
    /// duration. The channel counts as open for the whole relay.
    pub async fn relay<A, B>(&self, client_side: &mut A, target_side: &mut B)
    where
        A: AsyncRead + AsyncWrite + Unpin + ?Sized,
        B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let started = Instant::now();
        let (up, down, ended) = relay_with_idle(client_side, target_side, self.idle_timeout).await;
        let close_reason = match ended {
            Ok(None) => "closed".to_string(),
            Ok(Some(idle)) => format!("idle for {idle:?} (channel_idle_timeout)"),
            Err(e) => format!("error: {e}"),
        };
        self.audit
            .record(
                self.conn,
                AuditEvent::ChannelClose {
                    channel: self.channel,
                    kind: self.kind.clone(),
                    user: self.user.clone(),
                    target: self.target.clone(),
                    bytes_up: up,
                    bytes_down: down,
                    duration_ms: started.elapsed().as_millis() as u64,
                    close_reason,
                },
            )
            .await;
    }
}

/// Counts one open channel for as long as it lives.
pub struct OpenGuard(Arc<AtomicU32>);

impl OpenGuard {
    pub fn new(count: Arc<AtomicU32>) -> OpenGuard {
        count.fetch_add(1, Ordering::SeqCst);
        OpenGuard(count)
    }

    /// Takes a slot unless `limit` are taken; check and count are one atomic step, so
    /// channels opened at the same time cannot overshoot the limit.
    pub fn try_new(count: Arc<AtomicU32>, limit: u32) -> Option<OpenGuard> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(OpenGuard(count))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
