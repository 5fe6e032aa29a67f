//! What every connection of one running warrend shares: the current configuration
//! (swapped on SIGHUP), the audit sink, the rendezvous registry and the limits' counters.

use super::audit::AuditSink;
use super::config::ServerConfig;
use super::rendezvous::Registry;
use super::resolver::Resolver;
use super::throttle::{Throttle, ThrottleLimits};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Server-wide state, one per process.
pub struct Shared {
    config: RwLock<Arc<ServerConfig>>,
    pub audit: AuditSink,
    pub registry: Registry,
    pub throttle: Arc<Throttle>,
    /// The process's resolver (the channel code, which has no `Shared`, reaches it as
    /// `Resolver::global()`); held here so that a reload re-reads resolv.conf and hosts.
    pub resolver: &'static Resolver,
    /// Forwarded-connection tasks, so shutdown can wait for their audit records.
    pub channels: tokio_util::task::TaskTracker,
    sessions: Mutex<HashMap<String, u32>>,
}

fn throttle_limits(c: &ServerConfig) -> ThrottleLimits {
    ThrottleLimits {
        max_failures: c.limits.max_failed_auth_per_source,
        window: c.limits.failed_auth_window.0,
        max_unauthenticated_per_source: c.limits.max_unauthenticated_per_source,
        prefix_v4: c.limits.source_netblock_v4,
        prefix_v6: c.limits.source_netblock_v6,
    }
}

impl Shared {
    pub fn new(config: ServerConfig, audit: AuditSink) -> Arc<Shared> {
        let throttle = Arc::new(Throttle::new(throttle_limits(&config)));
        Arc::new(Shared {
            config: RwLock::new(Arc::new(config)),
            audit,
            registry: Registry::default(),
            throttle,
            resolver: Resolver::global(),
            channels: tokio_util::task::TaskTracker::new(),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in force now. Each login takes a snapshot, so a reload applies
    /// to new logins and never disturbs live sessions.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a reloaded configuration (users, keys, rules, limits).
    pub fn reload(&self, config: ServerConfig) {
        self.throttle.set_limits(throttle_limits(&config));
        self.resolver.reload();
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// Counts a session for `user` unless they already have `max`; the guard uncounts it.
    pub fn user_session(self: &Arc<Self>, user: &str, max: u32) -> Option<UserSession> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let n = sessions.entry(user.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UserSession {
            shared: self.clone(),
            user: user.to_string(),
        })
    }
}

/// One live authenticated session of a user.
pub struct UserSession {
    shared: Arc<Shared>,
    user: String,
}

impl Drop for UserSession {
    fn drop(&mut self) {
        let mut sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = sessions.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sessions.remove(&self.user);
            }
        }
    }
}
