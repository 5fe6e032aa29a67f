//! Authentication: keys listed for the user, or certificates from the user CA. Every
//! refusal is audited with its reason (an expired certificate too: the engine hands every
//! certificate over unjudged), counted against sshd's `MaxAuthTries`, and answered only
//! after `auth_rejection_delay`.

use super::Connection;
use crate::forward::budget::Budget;
use crate::forward::budget::WindowPoolOf;
use crate::server::audit::AuditEvent;
use crate::server::authorized_keys::find_key;
use crate::server::certificate::check_user_certificate;
use crate::server::config::ServerConfig;
use crate::server::identity::Identity;
use crate::server::key_options::KeyOptions;
use crate::server::live_sessions::{Admitted, LiveSession};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};
use warren_ssh::driver::Handle;
use warren_ssh::hostkey::ParsedKey;
use warren_ssh::proto::{AuthMethod, AuthReply, RequestId};
use warren_ssh::ssh_key::{Certificate, HashAlg, PublicKey};

/// What the client is told may continue after a refusal.
const METHODS: &[&str] = &["publickey"];

/// Signature algorithms refused whatever the key: OpenSSH stopped accepting SHA-1 RSA
/// signatures in 8.8; so do we.
const SHA1_RSA: &[&str] = &["ssh-rsa", "ssh-rsa-cert-v01@openssh.com"];

/// The answer to one authentication request.
enum Verdict {
    Accept,
    /// A probe for a key (or certificate) that would be accepted if signed.
    PkOk,
    Reject,
    /// The login was fine but cannot be recorded (audit outage): the client is told to
    /// come back later, and it is no failure of the source's (no MaxAuthTries count, no
    /// throttle penalty once the outage ends).
    Unavailable,
}

impl Connection {
    pub(super) async fn on_auth_request(
        &mut self,
        h: &Handle,
        id: RequestId,
        user: String,
        method: AuthMethod,
    ) {
        let verdict = match &method {
            // Every OpenSSH client starts with "none" to learn the methods; sshd does not
            // count it as a failure (auth2.c), and neither is it delayed.
            AuthMethod::None => {
                h.auth_reply(id, reject());
                return;
            }
            AuthMethod::PublicKey {
                alg,
                key,
                signature,
                ..
            } => self.publickey(&user, alg, key, *signature).await,
            AuthMethod::Password { .. } => {
                self.fail_auth(&user, "password", None, not_offered()).await
            }
            AuthMethod::KeyboardInteractive { .. }
            | AuthMethod::KeyboardInteractiveResponses { .. } => {
                self.fail_auth(&user, "keyboard-interactive", None, not_offered())
                    .await
            }
        };
        match verdict {
            Verdict::PkOk => {
                if let AuthMethod::PublicKey { alg, key_blob, .. } = &method {
                    h.auth_pk_ok(id, alg, key_blob);
                }
            }
            Verdict::Accept => {
                h.auth_reply(id, AuthReply::Accept);
                self.logged_in(h);
            }
            Verdict::Reject => {
                let limits = self.shared.config().limits.clone();
                // sshd's MaxAuthTries: the request that reaches the limit is answered
                // with a disconnect, not a refusal.
                if self.failures >= limits.max_auth_tries {
                    info!(conn = self.id, %user, "too many authentication failures");
                    h.disconnect("Too many authentication failures");
                    return;
                }
                tokio::time::sleep(limits.auth_rejection_delay.0).await;
                h.auth_reply(id, reject());
            }
            Verdict::Unavailable => {
                h.disconnect("service temporarily unavailable (the server cannot record logins); try again later");
            }
        }
    }

    async fn publickey(
        &mut self,
        user: &str,
        alg: &str,
        key: &ParsedKey,
        signature: Option<bool>,
    ) -> Verdict {
        let (method, fp) = match key {
            ParsedKey::Plain(k) => ("publickey", fingerprint(k)),
            ParsedKey::Certificate(c) => (
                "certificate",
                c.public_key().fingerprint(HashAlg::Sha256).to_string(),
            ),
        };
        if let Some(reason) = self
            .shared
            .throttle
            .refuse_login(self.peer.ip(), Instant::now())
        {
            return self.fail_auth(user, method, Some(fp), reason).await;
        }
        if SHA1_RSA.contains(&alg) {
            let reason = "ssh-rsa (SHA-1) signatures are not accepted; use rsa-sha2-256/512";
            return self.fail_auth(user, method, Some(fp), reason.into()).await;
        }
        if signature == Some(false) {
            let reason = "the signature does not verify".to_string();
            return self.fail_auth(user, method, Some(fp), reason).await;
        }
        // Judged on the probe and again on the signed request: the configuration may
        // have been reloaded in between.
        let config = self.shared.config();
        let judged = match key {
            ParsedKey::Plain(k) => self.listed_key(&config, user, k),
            ParsedKey::Certificate(c) => self.certificate(&config, user, c),
        };
        match (judged, signature) {
            (Err(reason), _) => self.fail_auth(user, method, Some(fp), reason).await,
            (Ok(_), None) => Verdict::PkOk,
            (Ok((options, source)), Some(_)) => {
                self.accept(user, method, fp, Some(source), options, config)
                    .await
            }
        }
    }

    /// The user's entry for `key`: its restrictions and where it is listed.
    fn listed_key(
        &self,
        config: &ServerConfig,
        user: &str,
        key: &PublicKey,
    ) -> Result<(KeyOptions, String), String> {
        let keys = config.load_user_keys(user).map_err(|e| e.to_string())?;
        match find_key(&keys, key, self.peer.ip(), SystemTime::now()) {
            Ok(entry) => Ok((
                entry.options.clone(),
                format!("{}:{}", entry.source, entry.line),
            )),
            Err(reasons) => Err(refusal_reason(&reasons)),
        }
    }

    /// A certificate judged by sshd's rules (CA, validity, principals, options).
    fn certificate(
        &self,
        config: &ServerConfig,
        user: &str,
        cert: &Certificate,
    ) -> Result<(KeyOptions, String), String> {
        let cas = config.user_ca_fingerprints().map_err(|e| e.to_string())?;
        let options =
            check_user_certificate(cert, user, &config.principals(user), &cas, now_unix())?;
        options.check_login(self.peer.ip(), SystemTime::now())?;
        let source = format!("certificate {:?} serial {}", cert.key_id(), cert.serial());
        Ok((options, source))
    }

    async fn fail_auth(
        &mut self,
        user: &str,
        method: &str,
        key_fp: Option<String>,
        reason: String,
    ) -> Verdict {
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
        Verdict::Reject
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
    ) -> Verdict {
        if let Some(reason) = self.shared.audit.refusal() {
            warn!(conn = self.id, user, "login refused: {reason}");
            // Tried anyway: the record is kept if the queue has room and written once
            // the log works again.
            self.audit(AuditEvent::AuthFailure {
                user: user.to_string(),
                method: method.to_string(),
                key_fp: Some(key_fp),
                source: self.source(),
                reason,
            })
            .await;
            return Verdict::Unavailable;
        }
        let Some(policy) = config.policy().user(user).cloned() else {
            return self
                .fail_auth(user, method, Some(key_fp), "no such user".into())
                .await;
        };
        let limits = &config.limits;
        let Some(slot) = self.shared.user_session(user, limits.max_sessions_per_user) else {
            let reason = format!(
                "{user} already has {} sessions (max_sessions_per_user)",
                limits.max_sessions_per_user
            );
            return self.fail_auth(user, method, Some(key_fp), reason).await;
        };
        let channels = Budget::within(
            &slot.share.channels,
            "limits.max_channels_per_session",
            u64::from(limits.max_channels_per_session),
        );
        let listeners = Budget::within(
            &slot.share.listeners,
            "limits.max_listeners_per_session",
            u64::from(limits.max_listeners_per_session),
        );
        // The session's windows grow from the user's max_buffered_per_user (inside the server's
        // max_buffered) at the moment they grow, and pay it back as they shrink or close.
        self.window_pool = Some((
            std::sync::Arc::new(WindowPoolOf(slot.share.bytes.clone())),
            limits.max_buffered_per_user.0,
        ));
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
            channels,
            listeners,
        });
        Verdict::Accept
    }

    /// After the engine was told: the session is live, its slots before login are free.
    fn logged_in(&mut self, h: &Handle) {
        self.authenticated.store(true, Ordering::SeqCst);
        if let Some((pool, limit)) = self.window_pool.take() {
            h.set_window_budget(limit);
            h.set_window_pool(pool);
        }
        if let Some(identity) = &self.identity {
            let admitted = Admitted {
                user: identity.user.clone(),
                key_fp: identity.key_fp.clone(),
                certificate: identity.method == "certificate",
                source: self.peer,
                traffic: self.traffic.clone(),
                channels: identity.channels.clone(),
            };
            self.shared
                .live
                .insert(self.id, LiveSession::new(admitted, h.clone()));
        }
        self.unauth_permit = None;
        self.pending = None;
    }
}

fn reject() -> AuthReply {
    AuthReply::Reject {
        methods: METHODS.iter().map(|m| m.to_string()).collect(),
        partial: false,
    }
}

fn not_offered() -> String {
    "only publickey authentication is offered".into()
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

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
