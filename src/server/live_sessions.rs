//! Authenticated sessions as the configuration sees them, so that a reload can end
//! those whose user or key it no longer admits.
//!
//! A reload that removes a user or revokes a key is how an operator locks someone out;
//! sshd leaves such sessions running, which makes revocation wait for the user to log
//! out. warrend ends them at the reload (the session's `session_end` record carries
//! the reason), and live sessions judge each new channel by the rules in force.

use super::config::ServerConfig;
use std::collections::HashMap;
use std::sync::Mutex;
use warren_ssh::driver::Handle;
use warren_ssh::ssh_key::HashAlg;

/// What a login was admitted with.
pub struct LiveSession {
    pub user: String,
    /// `SHA256:...` of the key, or of the certificate's key.
    pub key_fp: String,
    /// Admitted with a certificate from the user CA (not a listed key).
    pub certificate: bool,
    pub handle: Handle,
    /// Set when a reload revoked it: the reason its `session_end` gives.
    revoked: Option<String>,
}

impl LiveSession {
    pub fn new(user: String, key_fp: String, certificate: bool, handle: Handle) -> LiveSession {
        LiveSession {
            user,
            key_fp,
            certificate,
            handle,
            revoked: None,
        }
    }
}

/// Live sessions by connection id.
#[derive(Default)]
pub struct LiveSessions {
    sessions: Mutex<HashMap<u64, LiveSession>>,
}

impl LiveSessions {
    pub fn insert(&self, conn: u64, session: LiveSession) {
        self.lock().insert(conn, session);
    }

    /// Sessions and distinct users logged in now, for the service manager's status line.
    pub fn counts(&self) -> (usize, usize) {
        let sessions = self.lock();
        let users: std::collections::HashSet<&str> =
            sessions.values().map(|s| s.user.as_str()).collect();
        (sessions.len(), users.len())
    }

    /// Forgets `conn`; returns why it was revoked, if a reload did.
    pub fn remove(&self, conn: u64) -> Option<String> {
        self.lock().remove(&conn).and_then(|s| s.revoked)
    }

    /// Marks every session that `config` no longer admits as revoked, and returns
    /// their handles with the reason, for the caller to disconnect.
    pub fn revoke(&self, config: &ServerConfig) -> Vec<(u64, Handle, String)> {
        let mut out = Vec::new();
        for (conn, s) in self.lock().iter_mut() {
            if s.revoked.is_some() {
                continue;
            }
            if let Err(reason) = still_admitted(config, &s.user, &s.key_fp, s.certificate) {
                s.revoked = Some(reason.clone());
                out.push((*conn, s.handle.clone(), reason));
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, LiveSession>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `config` would still let this login in (user, key or CA); the error says
/// what was removed. Key options and source restrictions are not re-judged here: the
/// session's channels are checked against the new rules one by one.
fn still_admitted(
    config: &ServerConfig,
    user: &str,
    key_fp: &str,
    certificate: bool,
) -> Result<(), String> {
    if config.policy().user(user).is_none() {
        return Err(format!("configuration reloaded: user {user:?} was removed"));
    }
    if certificate {
        return match config.user_ca_fingerprints() {
            Ok(cas) if !cas.is_empty() => Ok(()),
            _ => Err("configuration reloaded: the user CA was removed".into()),
        };
    }
    let keys = config
        .load_user_keys(user)
        .map_err(|e| format!("configuration reloaded: cannot read {user:?}'s keys: {e}"))?;
    if keys
        .iter()
        .any(|k| k.key.fingerprint(HashAlg::Sha256).to_string() == key_fp)
    {
        Ok(())
    } else {
        Err(format!(
            "configuration reloaded: key {key_fp} is no longer authorized for {user:?}"
        ))
    }
}
