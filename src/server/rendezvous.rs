//! The rendezvous namespace: `-R name:port` registrations that other users reach with
//! `-L`/`-W`/`-J`, without any socket on the host.

use super::forward::ChannelCtx;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use warren_ssh::driver::Handle;

/// Who currently serves a name.
#[derive(Clone)]
pub struct Owner {
    /// Connection id of the publishing session (for takeover and cleanup).
    pub conn: u64,
    pub user: String,
    /// Fingerprint of the key (or certificate key) the publisher logged in with.
    pub key_fp: String,
    /// The publisher's session, to open forwarded channels on.
    pub handle: Handle,
    /// Cancelled when the publisher's session ends: connections through the name end too.
    pub session: CancellationToken,
    /// The publisher's channel context, for connections that arrive from another node
    /// of a cluster: they are the publisher's, like connections to its `-R` ports.
    pub ctx: ChannelCtx,
    /// The publisher's connection numbers its channels from this.
    pub channel_seq: Arc<AtomicU64>,
}

impl Owner {
    /// A context for one more channel on the publisher's connection.
    pub fn remote_ctx(&self) -> ChannelCtx {
        let mut ctx = self.ctx.clone();
        ctx.channel = self.channel_seq.fetch_add(1, Ordering::Relaxed) + 1;
        ctx
    }
}

/// A registration refused because another user serves the name.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken;

/// `(name, port)` to the session serving it.
#[derive(Default)]
pub struct Registry {
    names: Mutex<HashMap<(String, u16), Owner>>,
}

impl Registry {
    /// Registers `name:port` for `owner`. A live name belongs to the user who published
    /// it: another user's registration is refused ([`Taken`]), whatever their publish
    /// rules say, so nobody can step between a name's clients and its owner. The same
    /// user takes the name over at once (any of their keys; the old connection id is
    /// returned): a reconnecting device must never be locked out by its own stale
    /// session, which keepalive will reap later anyway.
    pub fn register(&self, name: &str, port: u16, owner: Owner) -> Result<Option<u64>, Taken> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), port);
        if let Some(current) = names.get(&key)
            && current.user != owner.user
        {
            return Err(Taken);
        }
        Ok(names.insert(key, owner).map(|old| old.conn))
    }

    /// Removes `name:port` if `conn` still owns it (a taken-over name stays with its new
    /// owner). Returns whether something was removed.
    pub fn unregister(&self, name: &str, port: u16, conn: u64) -> bool {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), port);
        if names.get(&key).is_some_and(|o| o.conn == conn) {
            names.remove(&key);
            true
        } else {
            false
        }
    }

    /// Every published name, port and owner, sorted.
    pub fn list(&self) -> Vec<(String, u16, Owner)> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = names
            .iter()
            .map(|((name, port), owner)| (name.clone(), *port, owner.clone()))
            .collect();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// The session serving `name:port`, if any.
    pub fn lookup(&self, name: &str, port: u16) -> Option<Owner> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.get(&(name.to_string(), port)).cloned()
    }
}
