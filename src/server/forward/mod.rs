//! The server's data path: channels the client opens (`direct`) and connections to its
//! `-R` listeners (`reverse`), each audited from decision to close.

pub mod direct;
pub mod reverse;

use super::audit::{AuditEvent, AuditSink};
use super::policy::Decision;
use crate::forward::budget::Budget;
use crate::forward::relay::{ChunkRead, Ended, relay_with_idle};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;
use warren_ssh::driver::{ChannelStream, Handle};
use warren_ssh::proto::{ChannelId, reason};

/// Everything a forwarded connection needs to audit itself, captured when it opens.
#[derive(Clone)]
pub struct ChannelCtx {
    pub conn: u64,
    pub channel: u64,
    pub kind: String,
    pub user: String,
    pub target: String,
    pub audit: AuditSink,
    /// Open forwarded channels: the session's budget, inside the user's and the
    /// server's (`max_channels_per_session`, `_per_user`, `max_channels`).
    pub open: Arc<Budget>,
    /// Relay buffer growth (beyond 8 KiB per direction) is charged here: the user's
    /// `max_buffered_per_user`, inside the server's `max_buffered`, shared with window
    /// growth.
    pub buffers: Option<Arc<Budget>>,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// Where forwarded-connection tasks are spawned (shutdown waits for them).
    pub tasks: tokio_util::task::TaskTracker,
    /// Cancelled when the SSH session ends: everything the channel holds (target socket,
    /// buffers) is released then, whatever the target is doing.
    pub session: CancellationToken,
    /// The client's SSH connection: a relay that fails because it ended was ended by the
    /// session, not by an error of its own.
    pub ssh: Handle,
    /// The session's bytes, counted as they move (`warrend ctl sessions`, metrics).
    pub traffic: Arc<crate::server::metrics::Traffic>,
    /// For a connection that crosses two nodes of a cluster: its correlation id and the
    /// other node, in both nodes' records.
    pub hop: Option<super::audit::Hop>,
}

impl ChannelCtx {
    pub async fn audit_open(&self, decision: &Decision, resolved: &[String]) {
        let (decision, rule, reason) = decision.audit_fields();
        self.record_open(decision, rule, reason, resolved).await;
    }

    /// Records an allowed channel whose target could not be reached: the decision
    /// stays "allow" (with its rule), the reason says what failed.
    pub async fn audit_open_failed(
        &self,
        decision: &Decision,
        resolved: &[String],
        reason: String,
    ) {
        let (decision, rule, _) = decision.audit_fields();
        self.record_open(decision, rule, Some(reason), resolved)
            .await;
    }

    async fn record_open(
        &self,
        decision: String,
        rule: Option<String>,
        reason: Option<String>,
        resolved: &[String],
    ) {
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
                    hop: self.hop.clone(),
                },
            )
            .await;
    }

    /// Runs `work` (a DNS lookup, a dial, a channel open) unless the session ends
    /// first; `None` then, and the caller gives up.
    pub async fn unless_session_ends<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            r = work => Some(r),
            _ = self.session.cancelled() => None,
        }
    }

    /// Charges the window growth of `link`, a channel of a session that carries many
    /// users' connections (a node link), to this connection's user as well: otherwise what
    /// a user's slow readers hold on the link would count against the link's budget only,
    /// a way around `max_buffered_per_user`.
    pub fn charge_link_channel(&self, link: &ChannelStream) {
        if let Some(bytes) = &self.buffers {
            let pool = Arc::new(crate::forward::budget::WindowPoolOf(bytes.clone()));
            link.handle().set_channel_pool(link.id(), pool);
        }
    }

    /// Relays until both directions end, the idle timeout, the session's end or `stop`
    /// (another session the relay depends on ended), then records bytes and duration.
    /// The channel counts as open for the whole relay; its sockets and buffers go when
    /// this returns. A channel is relayed as it is, never drained into a buffer: the SSH
    /// window is granted back only as the other side takes the bytes, so a slow target
    /// holds back its own sender and warrend holds at most one window for it. Returns
    /// whether the relay was cut short (stopped or failed) rather than finished: the
    /// caller then resets its TCP socket, so the target sees an aborted stream, never a
    /// clean EOF after a truncated upload.
    pub async fn relay<A, B>(
        &self,
        client_side: &mut A,
        target_side: &mut B,
        stop: impl Future<Output = String>,
    ) -> bool
    where
        A: ChunkRead + AsyncWrite + ?Sized,
        B: ChunkRead + AsyncWrite + ?Sized,
    {
        let started = Instant::now();
        let _open = self.audit.metrics().channel_relaying(&self.kind);
        let stop = async {
            tokio::select! {
                _ = self.session.cancelled() => "session closed".to_string(),
                reason = stop => reason,
            }
        };
        let (up, down, ended) = relay_with_idle(
            client_side,
            target_side,
            self.idle_timeout,
            stop,
            self.buffers.clone(),
            Some(self.traffic.clone()),
        )
        .await;
        let cut = matches!(ended, Ended::Stopped(_) | Ended::Failed(_));
        let session_over = self.session.is_cancelled() || self.ssh.ended().is_some();
        let close_reason = match ended {
            Ended::Done => "closed".to_string(),
            Ended::Failed(_) if session_over => "session closed".to_string(),
            Ended::Idle(idle) => format!("idle for {idle:?} (channel_idle_timeout)"),
            Ended::Stopped(reason) => reason,
            Ended::Failed(e) => format!("error: {e}"),
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
                    hop: self.hop.clone(),
                },
            )
            .await;
        cut
    }
}

/// Closes `tcp` with a reset when its relay was cut short (see [`ChannelCtx::relay`]):
/// also frees the kernel from sending what is still queued to a peer that is not reading.
pub fn close_tcp(tcp: tokio::net::TcpStream, cut: bool) {
    if cut {
        let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    }
    drop(tcp);
}

/// A channel the client asked for and warrend has not answered yet: the answer waits for
/// a DNS lookup, a dial or another session, so it travels with the task that does that
/// work. Dropped unanswered (the task ended early, the session is closing), it refuses
/// the channel, so the client never waits on an open nobody will answer.
pub struct PendingOpen {
    handle: Handle,
    id: ChannelId,
    answered: bool,
}

impl PendingOpen {
    pub fn new(handle: Handle, id: ChannelId) -> PendingOpen {
        PendingOpen {
            handle,
            id,
            answered: false,
        }
    }

    pub fn accept(mut self) -> ChannelStream {
        self.answered = true;
        self.handle.accept(self.id)
    }

    /// Refuses with an RFC 4254 reason code (`warren_ssh::proto::reason`).
    pub fn reject(self, code: u32) {
        self.reject_with(code, "");
    }

    /// Refuses with words the client shows its user (ssh prints them after "open failed").
    pub fn reject_with(mut self, code: u32, description: &str) {
        self.answered = true;
        self.handle.reject(self.id, code, description);
    }
}

/// The answer to a channel somebody is waiting on: a user's channel on this node
/// ([`PendingOpen`]) or a reach channel from another node of the cluster.
pub trait Answer: Send + 'static {
    /// Whether the channel belongs to a session that carries many users' connections (a
    /// node link), whose growth must be charged to the connection's user as well.
    fn on_shared_session(&self) -> bool {
        false
    }
    fn accept(self) -> ChannelStream;
    /// Refuses with an RFC 4254 reason code and words the asking side can show.
    fn refuse(self, code: u32, why: &str);
}

impl Answer for PendingOpen {
    fn accept(self) -> ChannelStream {
        PendingOpen::accept(self)
    }

    fn refuse(self, code: u32, why: &str) {
        self.reject_with(code, why);
    }
}

impl Drop for PendingOpen {
    fn drop(&mut self) {
        if !self.answered {
            self.handle.reject(self.id, reason::CONNECT_FAILED, "");
        }
    }
}
