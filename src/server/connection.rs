//! One client connection: russh's server callbacks. Authentication against the
//! configured keys and CA, then every channel and listen request through the policy.
//!
//! Callbacks run inside the session loop, so anything that waits on the network (DNS,
//! dialing, opening channels on another session) is spawned; the `reply` handle travels
//! with the task and accepts or refuses the channel when the answer is known.

use super::audit::AuditEvent;
use super::authorized_keys::find_key;
use super::certificate::check_user_certificate;
use super::config::ServerConfig;
use super::forward::{ChannelCtx, direct, reverse};
use super::identity::Identity;
use super::key_options::KeyOptions;
use super::live_sessions::LiveSession;
use super::policy::{Decision, DirectRoute, ForwardPlan, UserPolicy};
use super::rendezvous::Owner;
use super::state::{Shared, UserSession};
use super::throttle::PendingGuard;
use crate::forward::budget::{Budget, BudgetGuard};
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What users of `ssh host` (without -N) see.
const NO_SHELL: &str =
    "warrend: this server only forwards ports; use ssh -N (and -L, -R, -D, -W or -J)\r\n";

/// Per-connection state (russh's `Handler`).
pub struct Connection {
    pub id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    started: Instant,
    identity: Option<Identity>,
    failures: u32,
    /// Set once authenticated; the login-grace timer reads it.
    pub authenticated: Arc<AtomicBool>,
    channel_seq: u64,
    /// -R listeners and published names, each holding its slot of the listener limits.
    listeners: HashMap<(String, u32), (JoinHandle<()>, BudgetGuard)>,
    published: Vec<(String, u16, BudgetGuard)>,
    user_session: Option<UserSession>,
    unauth_permit: Option<OwnedSemaphorePermit>,
    pending: Option<PendingGuard>,
    /// Cancelled when this connection ends (the handler is dropped): every task it
    /// started (relays, dials, listeners' connections) ends with it.
    session: CancellationToken,
    /// Open "session" channels (audit channel number, opened at), for
    /// max_session_channels and their close records.
    session_channels: HashMap<ChannelId, (u64, Instant)>,
}

impl Connection {
    pub fn new(
        id: u64,
        peer: SocketAddr,
        shared: Arc<Shared>,
        unauth_permit: OwnedSemaphorePermit,
        pending: PendingGuard,
    ) -> Connection {
        Connection {
            id,
            peer,
            shared,
            started: Instant::now(),
            identity: None,
            failures: 0,
            authenticated: Arc::new(AtomicBool::new(false)),
            channel_seq: 0,
            listeners: HashMap::new(),
            published: Vec::new(),
            user_session: None,
            unauth_permit: Some(unauth_permit),
            pending: Some(pending),
            session: CancellationToken::new(),
            session_channels: HashMap::new(),
        }
    }

    async fn audit(&self, event: AuditEvent) {
        self.shared.audit.record(self.id, event).await;
    }

    fn source(&self) -> String {
        self.peer.to_string()
    }

    async fn fail_auth(
        &mut self,
        user: &str,
        method: &str,
        key_fp: Option<String>,
        reason: String,
    ) -> Auth {
        self.failures += 1;
        info!(conn = self.id, user, %reason, "authentication refused");
        self.audit(AuditEvent::AuthFailure {
            user: user.to_string(),
            method: method.to_string(),
            key_fp,
            source: self.source(),
            reason,
        })
        .await;
        Auth::reject()
    }

    /// Accepts a login: counts the session against the user's limit and keeps what the
    /// key allows for every later request.
    async fn accept(
        &mut self,
        user: &str,
        method: &str,
        key_fp: String,
        key_source: Option<String>,
        options: KeyOptions,
        config: Arc<ServerConfig>,
    ) -> Auth {
        if let Some(reason) = self.shared.audit.refusal() {
            warn!(conn = self.id, user, "login refused: {reason}");
            return self.fail_auth(user, method, Some(key_fp), reason).await;
        }
        let Some(policy) = config.policy().user(user).cloned() else {
            return self
                .fail_auth(user, method, Some(key_fp), "no such user".into())
                .await;
        };
        let Some(slot) = self
            .shared
            .user_session(user, config.limits.max_sessions_per_user)
        else {
            let reason = format!(
                "{user} already has {} sessions (max_sessions_per_user)",
                config.limits.max_sessions_per_user
            );
            return self.fail_auth(user, method, Some(key_fp), reason).await;
        };
        let budget = slot.share.bytes.clone();
        let channels = Budget::within(
            &slot.share.channels,
            "limits.max_channels_per_session",
            u64::from(config.limits.max_channels_per_session),
        );
        let listeners = Budget::within(
            &slot.share.listeners,
            "limits.max_listeners_per_session",
            u64::from(config.limits.max_listeners_per_session),
        );
        self.user_session = Some(slot);
        self.audit(AuditEvent::AuthSuccess {
            user: user.to_string(),
            method: method.to_string(),
            key_fp: key_fp.clone(),
            key_source,
            source: self.source(),
        })
        .await;
        info!(conn = self.id, user, %key_fp, "authenticated");
        self.identity = Some(Identity {
            user: user.to_string(),
            key_fp,
            options,
            policy,
            config,
            method: method.to_string(),
            budget,
            channels,
            listeners,
        });
        Auth::Accept
    }

    /// The login's identity judged by the rules in force now: after a reload, a live
    /// session's next channel or listener follows the new rules (a removed user's
    /// session is being closed; until then it may do nothing).
    fn current_identity(&self) -> Option<Identity> {
        let mut identity = self.identity.clone()?;
        let config = self.shared.config();
        if !Arc::ptr_eq(&config, &identity.config) {
            identity.policy = config
                .policy()
                .user(&identity.user)
                .cloned()
                .unwrap_or_else(|| UserPolicy {
                    user: identity.user.clone(),
                    ..UserPolicy::default()
                });
            identity.config = config;
        }
        Some(identity)
    }

    fn refused_by_throttle(&self) -> Option<String> {
        self.shared
            .throttle
            .refuse_login(self.peer.ip(), Instant::now())
    }

    fn next_channel(&mut self) -> u64 {
        self.channel_seq += 1;
        self.channel_seq
    }

    fn ctx(&mut self, identity: &Identity, kind: &str, target: String) -> ChannelCtx {
        ChannelCtx {
            conn: self.id,
            channel: self.next_channel(),
            kind: kind.to_string(),
            user: identity.user.clone(),
            target,
            audit: self.shared.audit.clone(),
            open: identity.channels.clone(),
            connect_timeout: identity.config.limits.connect_timeout.0,
            idle_timeout: identity.config.limits.channel_idle_timeout.non_zero(),
            tasks: self.shared.channels.clone(),
            session: self.session.clone(),
            budget: identity.budget.clone(),
        }
    }

    /// Refuses a channel and records why.
    async fn deny_channel(
        &self,
        ctx: &ChannelCtx,
        reply: server::ChannelOpenHandle,
        decision: Decision,
        failure: ChannelOpenFailure,
    ) {
        ctx.audit_open(&decision, &[]).await;
        info!(conn = self.id, target = %ctx.target, "{decision}");
        reply.reject(failure).await;
    }
}

/// Why a key was refused, never empty: `find_key` lists reasons only for entries that
/// matched the key but refused it (expired, wrong source, ...).
fn refusal_reason(reasons: &[String]) -> String {
    if reasons.is_empty() {
        "key not authorized for this user".into()
    } else {
        reasons.join("; ")
    }
}

/// `host:port` as the audit log shows a target: IPv6 literals in brackets, so the
/// port cannot be mistaken for part of the address.
fn show_target(host: &str, port: u32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let fp = fingerprint(offer.public_key);
        if let Some(reason) = self.refused_by_throttle() {
            return Ok(self.fail_auth(user, "publickey", Some(fp), reason).await);
        }
        // OpenSSH stopped accepting SHA-1 RSA signatures in 8.8; so do we.
        if matches!(offer.algorithm, Algorithm::Rsa { hash: None }) {
            return Ok(self
                .fail_auth(
                    user,
                    "publickey",
                    Some(fp),
                    "ssh-rsa (SHA-1) signatures are not accepted; use rsa-sha2-256/512".into(),
                )
                .await);
        }
        let config = self.shared.config();
        // russh presents a certificate's probe as its bare key (same algorithm), and only
        // the signed request reaches auth_openssh_certificate: with a CA configured, any
        // key may be a certificate, so the client is let sign and the decision is made
        // in auth_publickey / auth_openssh_certificate. The same answer for every user
        // name, known or not, so the probe tells nobody which users exist.
        if config.user_ca.is_some() {
            return Ok(Auth::Accept);
        }
        let keys = match config.load_user_keys(user) {
            Ok(k) => k,
            Err(e) => {
                return Ok(self
                    .fail_auth(user, "publickey", Some(fp), e.to_string())
                    .await);
            }
        };
        match find_key(&keys, offer.public_key, self.peer.ip(), SystemTime::now()) {
            Ok(_) => Ok(Auth::Accept),
            Err(reasons) => Ok(self
                .fail_auth(user, "publickey", Some(fp), refusal_reason(&reasons))
                .await),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fp = fingerprint(key.public_key);
        // Read again: the key may have been removed since it was offered.
        let config = self.shared.config();
        let keys = match config.load_user_keys(user) {
            Ok(k) => k,
            Err(e) => {
                return Ok(self
                    .fail_auth(user, "publickey", Some(fp), e.to_string())
                    .await);
            }
        };
        match find_key(&keys, key.public_key, self.peer.ip(), SystemTime::now()) {
            Ok(entry) => {
                let source = format!("{}:{}", entry.source, entry.line);
                let options = entry.options.clone();
                Ok(self
                    .accept(user, "publickey", fp, Some(source), options, config)
                    .await)
            }
            Err(reasons) => Ok(self
                .fail_auth(user, "publickey", Some(fp), refusal_reason(&reasons))
                .await),
        }
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let fp = certificate
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        if let Some(reason) = self.refused_by_throttle() {
            return Ok(self.fail_auth(user, "certificate", Some(fp), reason).await);
        }
        let config = self.shared.config();
        let cas = match config.user_ca_fingerprints() {
            Ok(c) => c,
            Err(e) => {
                return Ok(self
                    .fail_auth(user, "certificate", Some(fp), e.to_string())
                    .await);
            }
        };
        let checked = check_user_certificate(
            certificate,
            user,
            &config.principals(user),
            &cas,
            now_unix(),
        )
        .and_then(|opts| {
            opts.check_login(self.peer.ip(), SystemTime::now())
                .map(|()| opts)
        });
        match checked {
            Ok(options) => {
                let source = format!(
                    "certificate {:?} serial {}",
                    certificate.key_id(),
                    certificate.serial()
                );
                Ok(self
                    .accept(user, "certificate", fp, Some(source), options, config)
                    .await)
            }
            Err(reason) => Ok(self.fail_auth(user, "certificate", Some(fp), reason).await),
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.store(true, Ordering::SeqCst);
        if let Some(identity) = &self.identity {
            self.shared.live.insert(
                self.id,
                LiveSession::new(
                    identity.user.clone(),
                    identity.key_fp.clone(),
                    identity.method == "certificate",
                    session.handle(),
                ),
            );
        }
        self.unauth_permit = None;
        self.pending = None;
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted only so the refusal can be said in words when a shell, command or
        // subsystem is requested; nothing ever runs. Capped like sshd's MaxSessions:
        // each costs russh's channel state, and nothing legitimate needs many.
        let Some(identity) = self.identity.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let limit = identity.config.limits.max_session_channels;
        let ctx = self.ctx(&identity, "session", String::new());
        if self.session_channels.len() >= limit as usize {
            let d = Decision::Deny {
                reason: format!("{limit} session channels already open (max_session_channels)"),
                rule: None,
            };
            self.deny_channel(&ctx, reply, d, ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        }
        self.session_channels
            .insert(channel.id(), (ctx.channel, Instant::now()));
        ctx.audit_open(
            &Decision::Allow {
                rule: "session channel (only to refuse shells in words)".into(),
            },
            &[],
        )
        .await;
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((number, opened)) = self.session_channels.remove(&channel) {
            self.audit_session_close(number, opened, "closed");
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_session(channel, "shell", session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The command text is not recorded: people paste secrets into commands.
        let what = format!("exec ({} bytes)", data.len());
        self.refuse_session(channel, &what, session).await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_session(channel, &format!("subsystem {name}"), session)
            .await
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(reason) = self.shared.audit.refusal() {
            let target = format!("{host_to_connect}:{port_to_connect}");
            warn!(conn = self.id, ?target, "channel refused: {reason}");
            let failure = ChannelOpenFailure::ResourceShortage;
            match self.identity.clone() {
                Some(identity) => {
                    let ctx = self.ctx(&identity, "direct-tcpip", target);
                    let d = Decision::Deny { reason, rule: None };
                    self.deny_channel(&ctx, reply, d, failure).await;
                }
                None => reply.reject(failure).await,
            }
            return Ok(());
        }
        let Some(identity) = self.current_identity() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let target = show_target(host_to_connect, port_to_connect);
        let mut ctx = self.ctx(&identity, "direct-tcpip", target);
        let slot = match identity.channels.take_one() {
            Ok(slot) => slot,
            Err(e) => {
                let d = Decision::Deny {
                    reason: format!("too many channels open: {e}"),
                    rule: None,
                };
                self.deny_channel(&ctx, reply, d, ChannelOpenFailure::ResourceShortage)
                    .await;
                return Ok(());
            }
        };
        let Ok(port) = u16::try_from(port_to_connect) else {
            let d = Decision::Deny {
                reason: "port out of range".into(),
                rule: None,
            };
            self.deny_channel(&ctx, reply, d, ChannelOpenFailure::ConnectFailed)
                .await;
            return Ok(());
        };
        match identity.policy.route_direct(host_to_connect) {
            Err(decision) => {
                self.deny_channel(
                    &ctx,
                    reply,
                    decision,
                    ChannelOpenFailure::AdministrativelyProhibited,
                )
                .await
            }
            Ok(DirectRoute::Rendezvous { name }) => {
                ctx.kind = "rendezvous-reach".into();
                let decision =
                    identity
                        .policy
                        .decide_reach(&identity.options, &name, port_to_connect);
                if !decision.is_allowed() {
                    self.deny_channel(
                        &ctx,
                        reply,
                        decision,
                        ChannelOpenFailure::AdministrativelyProhibited,
                    )
                    .await;
                    return Ok(());
                }
                let Some(owner) = self.shared.registry.lookup(&name, port) else {
                    let d = Decision::Deny {
                        reason: format!("nobody publishes {name}:{port} right now"),
                        rule: None,
                    };
                    self.deny_channel(&ctx, reply, d, ChannelOpenFailure::ConnectFailed)
                        .await;
                    return Ok(());
                };
                ctx.audit_open(&decision, &[format!("rendezvous:{}", owner.user)])
                    .await;
                let origin = (originator_address.to_string(), originator_port);
                let task = direct::rendezvous(ctx, channel, reply, owner, name, port, origin);
                self.shared.channels.spawn(async move {
                    let _slot = slot;
                    task.await
                });
            }
            Ok(DirectRoute::Network(host)) => {
                let raw = host_to_connect.to_string();
                let task = direct::network(ctx, channel, reply, identity, host, raw, port);
                self.shared.channels.spawn(async move {
                    let _slot = slot;
                    task.await
                });
            }
        }
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(identity) = self.identity.clone() {
            let ctx = self.ctx(&identity, "direct-streamlocal", socket_path.to_string());
            let d = Decision::Deny {
                reason: "unix-socket forwarding is not offered by warrend".into(),
                rule: None,
            };
            self.deny_channel(
                &ctx,
                reply,
                d,
                ChannelOpenFailure::AdministrativelyProhibited,
            )
            .await;
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if let Some(reason) = self.shared.audit.refusal() {
            warn!(
                conn = self.id,
                address,
                port = *port,
                "-R refused: {reason}"
            );
            if let Some(identity) = self.identity.clone() {
                let d = Decision::Deny { reason, rule: None };
                self.audit_listen(&identity, "tcpip-forward", address, *port, &d)
                    .await;
            }
            return Ok(false);
        }
        let Some(identity) = self.current_identity() else {
            return Ok(false);
        };
        let slot = identity.listeners.take_one();
        let fd = match &slot {
            Err(e) => super::policy::ForwardDecision {
                decision: Decision::Deny {
                    reason: format!("too many listeners: {e}"),
                    rule: None,
                },
                plan: None,
            },
            Ok(_) => identity
                .policy
                .decide_tcpip_forward(&identity.options, address, *port),
        };
        // Labelled by what was asked, also when refused (no plan).
        let publish = matches!(fd.plan, Some(ForwardPlan::Publish { .. }))
            || matches!(
                super::policy::classify_bind_address(address),
                Ok(super::policy::BindAddress::Rendezvous(_))
            );
        let (kind, decision) = if publish {
            ("rendezvous-publish", fd.decision.clone())
        } else {
            ("tcpip-forward", fd.decision.clone())
        };
        let (Some(plan), Ok(slot)) = (fd.plan, slot) else {
            self.audit_listen(&identity, kind, address, *port, &decision)
                .await;
            info!(conn = self.id, address, port = *port, "-R {decision}");
            return Ok(false);
        };
        match plan {
            ForwardPlan::Publish { name, port: p } => {
                let owner = Owner {
                    conn: self.id,
                    user: identity.user.clone(),
                    key_fp: identity.key_fp.clone(),
                    handle: session.handle(),
                    session: self.session.clone(),
                    budget: identity.budget.clone(),
                };
                match self.shared.registry.register(&name, p, owner) {
                    Ok(Some(old)) => info!(
                        conn = self.id,
                        "{name:?}:{p} taken over from connection {old} of the same user"
                    ),
                    Ok(None) => {}
                    Err(_) => {
                        // Neither who holds it nor anything else about them is said.
                        let d = Decision::Deny {
                            reason: format!("{name}:{p} is published by another user"),
                            rule: None,
                        };
                        self.audit_listen(&identity, kind, address, *port, &d).await;
                        info!(
                            conn = self.id,
                            "-R {name:?}:{p} refused: published by another user"
                        );
                        return Ok(false);
                    }
                }
                self.published.push((name, p, slot));
                self.audit_listen(&identity, kind, address, *port, &decision)
                    .await;
                Ok(true)
            }
            ForwardPlan::Bind { addrs, port: p } => match reverse::bind(&addrs, p) {
                Ok((listeners, actual)) => {
                    if *port == 0 {
                        *port = u32::from(actual);
                    }
                    let ctx = self.ctx(&identity, "forwarded-tcpip", format!("{address}:{actual}"));
                    let task = tokio::spawn(reverse::accept_loop(
                        ctx,
                        listeners,
                        session.handle(),
                        address.to_string(),
                        u32::from(actual),
                    ));
                    self.listeners
                        .insert((address.to_string(), u32::from(actual)), (task, slot));
                    self.audit_listen(&identity, kind, address, u32::from(actual), &decision)
                        .await;
                    Ok(true)
                }
                Err(e) => {
                    let d = Decision::Deny {
                        reason: format!("cannot listen: {e}"),
                        rule: None,
                    };
                    self.audit_listen(&identity, kind, address, *port, &d).await;
                    warn!(conn = self.id, "-R {address}:{port}: cannot listen: {e}");
                    Ok(false)
                }
            },
        }
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if let Some(identity) = self.identity.clone() {
            let d = Decision::Deny {
                reason: "unix-socket forwarding is not offered by warrend".into(),
                rule: None,
            };
            self.audit_listen(&identity, "streamlocal-forward", socket_path, 0, &d)
                .await;
        }
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        single_connection: bool,
        x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let detail = format!(
            "protocol {x11_auth_protocol:?}, screen {x11_screen_number}, single {single_connection}"
        );
        self.refuse_request("x11-req", detail).await;
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_request("auth-agent-req@openssh.com", String::new())
            .await;
        Ok(false)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The name only: values (tokens, LC_* tricks) stay out of the log.
        self.refuse_request("env", format!("{variable_name:?}"))
            .await;
        session.channel_failure(channel)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(identity) = self.identity.clone() else {
            return Ok(false);
        };
        if let Some((task, _slot)) = self.listeners.remove(&(address.to_string(), port)) {
            task.abort();
            self.audit_stop(
                &identity,
                "tcpip-forward",
                address,
                port,
                "cancelled by client",
            )
            .await;
            return Ok(true);
        }
        if let Ok(p) = u16::try_from(port)
            && let Some(i) = self
                .published
                .iter()
                .position(|(n, pp, _)| n == address && *pp == p)
        {
            let (name, p, _slot) = self.published.remove(i);
            self.shared.registry.unregister(&name, p, self.id);
            self.audit_stop(
                &identity,
                "rendezvous-publish",
                address,
                port,
                "cancelled by client",
            )
            .await;
            return Ok(true);
        }
        Ok(false)
    }
}

impl Connection {
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
    fn audit_session_close(&self, number: u64, opened: Instant, reason: &str) {
        let Some(identity) = &self.identity else {
            return;
        };
        self.shared.audit.try_record(
            self.id,
            AuditEvent::ChannelClose {
                channel: number,
                kind: "session".into(),
                user: identity.user.clone(),
                target: String::new(),
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: opened.elapsed().as_millis() as u64,
                close_reason: reason.into(),
            },
        );
    }

    async fn refuse_session(
        &mut self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
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
        session.channel_success(channel)?;
        session.extended_data(channel, 1, NO_SHELL.as_bytes().to_vec())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }

    async fn audit_listen(
        &self,
        identity: &Identity,
        kind: &str,
        address: &str,
        port: u32,
        decision: &Decision,
    ) {
        let (decision_s, rule, reason) = Decision::audit_fields(decision);
        self.audit(AuditEvent::ListenStart {
            user: identity.user.clone(),
            kind: kind.to_string(),
            address: address.to_string(),
            port,
            decision: decision_s,
            rule,
            reason,
        })
        .await;
    }

    async fn audit_stop(
        &self,
        identity: &Identity,
        kind: &str,
        address: &str,
        port: u32,
        reason: &str,
    ) {
        self.audit(AuditEvent::ListenStop {
            user: identity.user.clone(),
            kind: kind.to_string(),
            address: address.to_string(),
            port,
            reason: reason.to_string(),
        })
        .await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.session.cancel();
        for (_, (number, opened)) in std::mem::take(&mut self.session_channels) {
            self.audit_session_close(number, opened, "session closed");
        }
        let listeners = std::mem::take(&mut self.listeners);
        let published = std::mem::take(&mut self.published);
        let user = self.identity.as_ref().map(|i| i.user.clone());
        let stop = |kind: &str, address: String, port: u32| {
            if let Some(user) = &user {
                self.shared.audit.try_record(
                    self.id,
                    AuditEvent::ListenStop {
                        user: user.clone(),
                        kind: kind.to_string(),
                        address,
                        port,
                        reason: "session closed".into(),
                    },
                );
            }
        };
        for ((address, port), (task, _slot)) in listeners {
            task.abort();
            stop("tcpip-forward", address, port);
        }
        for (name, port, _slot) in published {
            self.shared.registry.unregister(&name, port, self.id);
            stop("rendezvous-publish", name, u32::from(port));
        }
        let authenticated = self.authenticated.load(Ordering::SeqCst);
        if !authenticated && self.failures > 0 {
            self.shared
                .throttle
                .record_failure(self.peer.ip(), Instant::now());
        }
        let revoked = self.shared.live.remove(self.id);
        debug!(conn = self.id, "connection closed");
        self.shared.audit.try_record(
            self.id,
            AuditEvent::SessionEnd {
                user: self.identity.as_ref().map(|i| i.user.clone()),
                source: self.source(),
                duration_ms: self.started.elapsed().as_millis() as u64,
                reason: match (authenticated, revoked) {
                    (_, Some(why)) => why,
                    (true, None) => "closed".into(),
                    (false, None) => "closed before authentication".into(),
                },
            },
        );
    }
}
