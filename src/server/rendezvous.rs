//! The rendezvous namespace: `-R name:port` registrations that other users reach with
//! `-L`/`-W`/`-J`, without any socket on the host.

use russh::server::Handle;
use std::collections::HashMap;
use std::sync::Mutex;

/// Who currently serves a name.
#[derive(Clone)]
pub struct Owner {
    /// Connection id of the publishing session (for takeover and cleanup).
    pub conn: u64,
    pub user: String,
    /// The publisher's session, to open forwarded channels on.
    pub handle: Handle,
}

/// `(name, port)` to the session serving it.
#[derive(Default)]
pub struct Registry {
    names: Mutex<HashMap<(String, u16), Owner>>,
}

impl Registry {
    /// Registers `name:port` for `owner`. A newer registration takes the name over at once
    /// and returns the connection id it replaced: a reconnecting device must never be
    /// locked out by its own stale session, which keepalive will reap later anyway.
    pub fn register(&self, name: &str, port: u16, owner: Owner) -> Option<u64> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names
            .insert((name.to_string(), port), owner)
            .map(|old| old.conn)
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

    /// The session serving `name:port`, if any.
    pub fn lookup(&self, name: &str, port: u16) -> Option<Owner> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.get(&(name.to_string(), port)).cloned()
    }
}
