//! "session" channels: accepted only so that a shell, command or subsystem can be refused
//! in words (on stderr, exit status 1, as sshd says why it refuses); nothing ever runs.
//! X11, agent and environment requests are refused and audited.

use super::Connection;
use crate::server::audit::AuditEvent;
use crate::server::forward::PendingOpen;
use crate::server::policy::Decision;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warren_ssh::driver::{ChannelStream, Handle};
use warren_ssh::proto::{ChannelId, ChannelRequest, RequestId, reason};

/// What users of `ssh host` (without -N) see.
const NO_SHELL: &str =
    "warrend: this server only forwards ports; use ssh -N (and -L, -R, -D, -W or -J)\r\n";

/// An open "session" channel.
pub(super) struct SessionChannel {
    /// The audit's channel number.
    number: u64,
    opened: Instant,
    /// Tells the watcher to end the channel (EOF, then CLOSE as the stream drops).
    finish: Option<oneshot::Sender<()>>,
    /// Owns the channel: discards what the client sends and reports when it closes.
    watcher: JoinHandle<()>,
}

impl SessionChannel {
    /// Stops the watcher; the channel closes as this is dropped.
    pub(super) fn abort(self) {
        self.watcher.abort();
    }
}

impl Connection {
    pub(super) async fn open_session(&mut self, reply: PendingOpen) {
        let Some(identity) = self.identity.clone() else {
            reply.reject(reason::ADMINISTRATIVELY_PROHIBITED);
            return;
        };
        // Capped like sshd's MaxSessions: each costs channel state, and nothing
        // legitimate needs many.
        let limit = identity.config.limits.max_session_channels;
        let ctx = self.ctx(&identity, "session", String::new());
        if self.session_channels.len() >= limit as usize {
            let d = Decision::Deny {
                reason: format!("{limit} session channels already open (max_session_channels)"),
                rule: None,
            };
            self.deny_channel(reply, &ctx, d, reason::RESOURCE_SHORTAGE)
                .await;
            return;
        }
        ctx.audit_open(
            &Decision::Allow {
                rule: "session channel (only to refuse shells in words)".into(),
            },
            &[],
        )
        .await;
        let stream = reply.accept();
        let id = stream.id();
        let number = ctx.channel;
        let (finish, finished) = oneshot::channel();
        let closed = self.session_closed.clone();
        let watcher = tokio::spawn(async move {
            if watch(stream, finished).await {
                let _ = closed.send((id, number));
            }
        });
        self.session_channels.insert(
            id,
            SessionChannel {
                number,
                opened: Instant::now(),
                finish: Some(finish),
                watcher,
            },
        );
    }

    /// The client closed (or ended) session channel `id`: its slot is free.
    pub(super) fn session_channel_closed(&mut self, id: ChannelId, number: u64) {
        // The number tells a late report from the watcher of a channel warrend closed
        // itself apart from a newer channel that reuses the id.
        if self
            .session_channels
            .get(&id)
            .is_some_and(|ch| ch.number == number)
            && let Some(ch) = self.session_channels.remove(&id)
        {
            self.audit_session_close(&ch, "closed");
        }
    }

    pub(super) async fn on_channel_request(
        &mut self,
        h: &Handle,
        id: ChannelId,
        request_id: RequestId,
        request: ChannelRequest,
        want_reply: bool,
    ) {
        let session = self.session_channels.contains_key(&id);
        let ok = match request {
            // A terminal is harmless; the refusal comes with the shell.
            ChannelRequest::PtyReq => session,
            ChannelRequest::Shell if session => {
                return self
                    .refuse_session(h, id, request_id, want_reply, "shell")
                    .await;
            }
            ChannelRequest::Exec(command) if session => {
                // The command text is not recorded: people paste secrets into commands.
                let what = format!("exec ({} bytes)", command.len());
                return self
                    .refuse_session(h, id, request_id, want_reply, &what)
                    .await;
            }
            ChannelRequest::Subsystem(name) if session => {
                let what = format!("subsystem {name}");
                return self
                    .refuse_session(h, id, request_id, want_reply, &what)
                    .await;
            }
            ChannelRequest::X11Req => {
                self.refuse_request("x11-req", String::new()).await;
                false
            }
            ChannelRequest::AuthAgentReq => {
                self.refuse_request("auth-agent-req@openssh.com", String::new())
                    .await;
                false
            }
            ChannelRequest::Env { name, .. } => {
                // The name only: values (tokens, LC_* tricks) stay out of the log.
                self.refuse_request("env", format!("{name:?}")).await;
                false
            }
            _ => false,
        };
        if want_reply {
            h.channel_request_reply(id, request_id, ok);
        }
    }

    /// Answers a shell, command or subsystem: yes, then the refusal on stderr, exit
    /// status 1, EOF and close, so the client prints why and exits with 1.
    async fn refuse_session(
        &mut self,
        h: &Handle,
        id: ChannelId,
        request_id: RequestId,
        want_reply: bool,
        what: &str,
    ) {
        if let Some(identity) = self.identity.clone() {
            let ctx = self.ctx(&identity, "session", what.to_string());
            ctx.audit_open(
                &Decision::Deny {
                    reason: "no shell, commands or subsystems on warrend".into(),
                    rule: None,
                },
                &[],
            )
            .await;
        }
        if want_reply {
            h.channel_request_reply(id, request_id, true);
        }
        let _ = h.channel_stderr(id, NO_SHELL.as_bytes());
        let _ = h
            .channel_request(id, ChannelRequest::ExitStatus(1), false)
            .await;
        if let Some(mut ch) = self.session_channels.remove(&id) {
            if let Some(finish) = ch.finish.take() {
                let _ = finish.send(());
            }
            self.audit_session_close(&ch, "closed");
        }
    }

    /// Records a refused session request (X11, agent, env).
    async fn refuse_request(&self, kind: &str, detail: String) {
        let Some(identity) = &self.identity else {
            return;
        };
        self.audit(AuditEvent::SessionRequest {
            user: identity.user.clone(),
            kind: kind.into(),
            detail,
            decision: "deny".into(),
            reason: "warrend forwards ports only".into(),
        })
        .await;
    }

    /// Closes the record of a "session" channel (never carries bytes). Not awaited:
    /// also called from `Drop`.
    pub(super) fn audit_session_close(&self, ch: &SessionChannel, reason: &str) {
        let Some(identity) = &self.identity else {
            return;
        };
        self.shared.audit.try_record(
            self.id,
            AuditEvent::ChannelClose {
                channel: ch.number,
                kind: "session".into(),
                user: identity.user.clone(),
                target: String::new(),
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: ch.opened.elapsed().as_millis() as u64,
                close_reason: reason.into(),
                hop: None,
            },
        );
    }
}

/// Holds a session channel until the client closes it (true) or warrend ends it after a
/// refusal (false). What the client sends is read and dropped; its EOF (ssh sends one as
/// soon as its stdin ends, before the command is even answered) ends nothing.
async fn watch(mut stream: ChannelStream, mut finish: oneshot::Receiver<()>) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) {
                break;
            },
            _ = &mut finish => {
                let _ = stream.shutdown().await;
                return false;
            }
        }
    }
    tokio::select! {
        () = stream.closed() => true,
        _ = &mut finish => {
            let _ = stream.shutdown().await;
            false
        }
    }
}
