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
        let _open = OpenGuard::new(self.open.clone());
        let started = Instant::now();
        let (up, down, close_reason) =
            match relay_with_idle(client_side, target_side, self.idle_timeout).await {
                Ok((up, down, None)) => (up, down, "closed".to_string()),
                Ok((up, down, Some(idle))) => (
                    up,
                    down,
                    format!("idle for {idle:?} (channel_idle_timeout)"),
                ),
                Err(e) => (0, 0, format!("error: {e}")),
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
struct OpenGuard(Arc<AtomicU32>);

impl OpenGuard {
    fn new(count: Arc<AtomicU32>) -> OpenGuard {
        count.fetch_add(1, Ordering::SeqCst);
        OpenGuard(count)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
