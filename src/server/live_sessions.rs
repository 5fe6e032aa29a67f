//! Authenticated sessions as the configuration sees them, so that a reload can end
//! those whose user or key it no longer admits.
//!
//! A reload that removes a user or revokes a key is how an operator locks someone out;
//! sshd leaves such sessions running, which makes revocation wait for the user to log
//! out. warrend ends them at the reload (the session's `session_end` record carries
//! the reason), and live sessions judge each new channel by the rules in force.
//!
//! The same table answers `warrend ctl sessions`, `listeners` and `kick`
//! (`server::admin`): what a session is doing is read from counters its relays already
//! keep, never by asking the session's thread.

use super::config::ServerConfig;
use super::metrics::Traffic;
use crate::forward::budget::Budget;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
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
    /// Peer address and login time.
    pub source: SocketAddr,
    pub since: SystemTime,
    /// Bytes its channels moved.
    pub traffic: Arc<Traffic>,
    /// Its open forwarded channels (`max_channels_per_session`).
    pub channels: Arc<Budget>,
    /// Its -R listeners on real sockets.
    pub listeners: Vec<Listening>,
    /// Set when a reload revoked it or an admin kicked it: the reason its
    /// `session_end` gives.
    revoked: Option<String>,
}

/// A -R listener on real sockets.
#[derive(Clone, Debug)]
pub struct Listening {
    /// As the client asked (`localhost`, `*`, an address).
    pub address: String,
    pub port: u32,
    /// What was bound.
    pub bound: Vec<SocketAddr>,
}

/// What a session was admitted with, and where its counters are.
pub struct Admitted {
    pub user: String,
    pub key_fp: String,
    pub certificate: bool,
    pub source: SocketAddr,
    pub traffic: Arc<Traffic>,
    pub channels: Arc<Budget>,
}

impl LiveSession {
    pub fn new(admitted: Admitted, handle: Handle) -> LiveSession {
        LiveSession {
            user: admitted.user,
            key_fp: admitted.key_fp,
            certificate: admitted.certificate,
            handle,
            source: admitted.source,
            since: SystemTime::now(),
            traffic: admitted.traffic,
            channels: admitted.channels,
            listeners: Vec::new(),
            revoked: None,
        }
    }
}

/// Which sessions `warrend ctl kick` ends.
pub enum Kick<'a> {
    Session(u64),
    User(&'a str),
}

/// What `session_end` and the client are told about a kicked session.
pub const KICKED: &str = "kicked by the admin (warrend ctl kick)";

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

    /// Marks the chosen sessions as kicked and returns their ids and handles, for the
    /// caller to disconnect; their `session_end` says [`KICKED`].
    pub fn kick(&self, which: Kick<'_>) -> Vec<(u64, Handle)> {
        let mut out = Vec::new();
        for (conn, s) in self.lock().iter_mut() {
            let chosen = match which {
                Kick::Session(id) => *conn == id,
                Kick::User(user) => s.user == user,
            };
            if chosen {
                s.revoked.get_or_insert_with(|| KICKED.to_string());
                out.push((*conn, s.handle.clone()));
            }
        }
        out.sort_by_key(|(conn, _)| *conn);
        out
    }

    /// Notes a -R listener of `conn`.
    pub fn add_listener(&self, conn: u64, listening: Listening) {
        if let Some(s) = self.lock().get_mut(&conn) {
            s.listeners.push(listening);
        }
    }

    /// Forgets a -R listener of `conn` (cancelled by the client).
    pub fn remove_listener(&self, conn: u64, address: &str, port: u32) {
        if let Some(s) = self.lock().get_mut(&conn) {
            s.listeners
                .retain(|l| !(l.address == address && l.port == port));
        }
    }

    /// Calls `f` with every session, in connection order.
    pub fn each<T>(&self, mut f: impl FnMut(u64, &LiveSession) -> T) -> Vec<T> {
        let sessions = self.lock();
        let mut ids: Vec<u64> = sessions.keys().copied().collect();
        ids.sort_unstable();
        ids.iter().map(|id| f(*id, &sessions[id])).collect()
    }

    /// Authenticated sessions now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
