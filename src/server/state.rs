//! What every connection of one running warrend shares: the current configuration
//! (swapped on SIGHUP), the audit sink, the rendezvous registry and the limits' counters.

use super::audit::AuditSink;
use super::config::{Limits, ServerConfig};
use super::host_addresses::HostAddresses;
use super::live_sessions::LiveSessions;
use super::rendezvous::Registry;
use super::resolver::Resolver;
use super::throttle::{Throttle, ThrottleLimits};
use crate::forward::budget::Budget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// Server-wide state, one per process.
pub struct Shared {
    config: RwLock<Arc<ServerConfig>>,
    pub audit: AuditSink,
    pub registry: Registry,
    /// Authenticated sessions, for ending revoked ones at a reload.
    pub live: LiveSessions,
    /// This host's interface addresses, which every user's policy reads; empty
    /// until the daemon's first [`HostAddresses::refresh`].
    pub host_addresses: HostAddresses,
    pub throttle: Arc<Throttle>,
    /// The process's resolver (the channel code, which has no `Shared`, reaches it as
    /// `Resolver::global()`); held here so that a reload re-reads resolv.conf and hosts.
    pub resolver: &'static Resolver,
    /// Forwarded-connection tasks, so shutdown can wait for their audit records.
    pub channels: tokio_util::task::TaskTracker,
    /// Every session's bytes (`warrend_bytes_total`).
    pub traffic: super::metrics::TrafficTotals,
    sessions: Mutex<HashMap<String, u32>>,
    /// Window growth all sessions together may claim (`max_buffered`).
    buffered: Arc<Budget>,
    /// Forwarded channels open on the whole server (`max_channels`).
    open_channels: Arc<Budget>,
    /// -R listeners and published names on the whole server (`max_listeners`).
    listeners: Arc<Budget>,
    /// Each user's share of both, alive while the user has a session or a channel.
    user_shares: Mutex<HashMap<String, Weak<UserShare>>>,
    /// Cluster mode: this node's part of the shared namespace, set once at start.
    cluster: std::sync::OnceLock<Arc<super::cluster::Cluster>>,
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
    pub fn new(mut config: ServerConfig, audit: AuditSink) -> Arc<Shared> {
        let throttle = Arc::new(Throttle::new(throttle_limits(&config)));
        let buffered = Budget::new("limits.max_buffered", config.limits.max_buffered.0);
        let open_channels =
            Budget::new("limits.max_channels", u64::from(config.limits.max_channels));
        let listeners = Budget::new(
            "limits.max_listeners",
            u64::from(config.limits.max_listeners),
        );
        let host_addresses = HostAddresses::default();
        config.share_host_addresses(&host_addresses);
        Arc::new(Shared {
            config: RwLock::new(Arc::new(config)),
            audit,
            registry: Registry::default(),
            live: LiveSessions::default(),
            host_addresses,
            throttle,
            resolver: Resolver::global(),
            channels: tokio_util::task::TaskTracker::new(),
            traffic: Default::default(),
            sessions: Mutex::new(HashMap::new()),
            buffered,
            open_channels,
            listeners,
            user_shares: Mutex::new(HashMap::new()),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// This node's cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<super::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Joins the cluster (once, at start).
    pub fn set_cluster(&self, cluster: Arc<super::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// `user`'s budgets, shared by all their sessions; new ones (with the limits in
    /// force now) when they hold none.
    fn user_share(&self, user: &str) -> Arc<UserShare> {
        let mut shares = self.user_shares.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shares.get(user).and_then(Weak::upgrade) {
            return s;
        }
        shares.retain(|_, w| w.strong_count() > 0);
        let limits = self.config().limits.clone();
        let share = Arc::new(UserShare {
            bytes: Budget::within(
                &self.buffered,
                format!("limits.max_buffered_per_user for {user:?}"),
                limits.max_buffered_per_user.0,
            ),
            channels: Budget::within(
                &self.open_channels,
                format!("limits.max_channels_per_user for {user:?}"),
                u64::from(limits.max_channels_per_user),
            ),
            listeners: Budget::within(
                &self.listeners,
                format!("limits.max_listeners_per_user for {user:?}"),
                u64::from(limits.max_listeners_per_user),
            ),
        });
        shares.insert(user.to_string(), Arc::downgrade(&share));
        share
    }

    /// The configuration in force now. Each login takes a snapshot, so a reload applies
    /// to new logins and never disturbs live sessions.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a reloaded configuration (users, keys, rules, limits), and re-reads
    /// the host's addresses, so SIGHUP also applies an address change at once.
    pub fn reload(&self, mut config: ServerConfig) {
        if let Err(e) = self.host_addresses.refresh() {
            tracing::warn!("cannot re-read the host's addresses, keeping the last ones: {e}");
        }
        config.share_host_addresses(&self.host_addresses);
        self.throttle.set_limits(throttle_limits(&config));
        self.resize(&config.limits);
        self.resolver.reload();
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// Applies reloaded limits to the budgets live sessions share: the server's totals
    /// and each user's share. Sessions keep what they hold; a lower limit refuses new
    /// channels, listeners and window growth until enough is released.
    fn resize(&self, limits: &Limits) {
        self.buffered.set_limit(limits.max_buffered.0);
        self.open_channels.set_limit(u64::from(limits.max_channels));
        self.listeners.set_limit(u64::from(limits.max_listeners));
        let shares = self.user_shares.lock().unwrap_or_else(|e| e.into_inner());
        for share in shares.values().filter_map(Weak::upgrade) {
            share.bytes.set_limit(limits.max_buffered_per_user.0);
            share
                .channels
                .set_limit(u64::from(limits.max_channels_per_user));
            share
                .listeners
                .set_limit(u64::from(limits.max_listeners_per_user));
        }
    }

    /// Counts a session for `user` unless they already have `max`; the guard uncounts it.
    pub fn user_session(self: &Arc<Self>, user: &str, max: u32) -> Option<UserSession> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let n = sessions.entry(user.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        drop(sessions);
        Some(UserSession {
            shared: self.clone(),
            user: user.to_string(),
            share: self.user_share(user),
        })
    }
}

/// A budget as `warrend ctl limits` shows it.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct InUse {
    pub used: u64,
    pub limit: u64,
}

impl InUse {
    fn of(b: &Budget) -> InUse {
        InUse {
            used: b.used(),
            limit: b.limit(),
        }
    }
}

/// One user's share in use (`warrend ctl limits`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UserUsage {
    pub user: String,
    pub sessions: InUse,
    pub channels: InUse,
    pub listeners: InUse,
    pub buffered: InUse,
}

/// The server-wide budgets in use (`warrend ctl limits`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    pub channels: InUse,
    pub listeners: InUse,
    pub buffered: InUse,
    pub users: Vec<UserUsage>,
}

impl Shared {
    /// What the budgets hold now, server-wide and per user with something held.
    pub fn usage(&self) -> Usage {
        let max_sessions = u64::from(self.config().limits.max_sessions_per_user);
        let sessions: HashMap<String, u32> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let shares = self.user_shares.lock().unwrap_or_else(|e| e.into_inner());
        let mut users: Vec<UserUsage> = shares
            .iter()
            .filter_map(|(user, w)| Some((user, w.upgrade()?)))
            .map(|(user, share)| UserUsage {
                user: user.clone(),
                sessions: InUse {
                    used: u64::from(sessions.get(user).copied().unwrap_or(0)),
                    limit: max_sessions,
                },
                channels: InUse::of(&share.channels),
                listeners: InUse::of(&share.listeners),
                buffered: InUse::of(&share.bytes),
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        Usage {
            channels: InUse::of(&self.open_channels),
            listeners: InUse::of(&self.listeners),
            buffered: InUse::of(&self.buffered),
            users,
        }
    }
}

/// Rough bytes warrend holds per forwarded channel (relay, both engine channel states,
/// audit context): measured 7.7–9.2 KiB in the benchmark's many phase.
const CHANNEL_BYTES: u64 = 8 << 10;
/// Rough bytes per authenticated session (transport and cipher state, its buffers).
const SESSION_BYTES: u64 = 64 << 10;

impl Shared {
    /// An estimate of the memory peers make warrend hold now, for
    /// [`crate::memory::trim_after_shrinking`]: it only has to fall when they let go.
    pub fn held_estimate(&self) -> u64 {
        self.open_channels.used() * CHANNEL_BYTES
            + self.live.len() as u64 * SESSION_BYTES
            + self.buffered.used()
    }
}

/// One live authenticated session of a user.
pub struct UserSession {
    shared: Arc<Shared>,
    user: String,
    /// The user's budgets, charged by this session's channels.
    pub share: Arc<UserShare>,
}

/// What one user may hold over all their sessions, inside the server's totals.
pub struct UserShare {
    /// Window growth all the user's sessions may claim (`max_buffered_per_user`).
    pub bytes: Arc<Budget>,
    /// Forwarded channels open (`max_channels_per_user`).
    pub channels: Arc<Budget>,
    /// -R listeners and published names (`max_listeners_per_user`).
    pub listeners: Arc<Budget>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload (SIGHUP) resizes the totals live sessions already share: the server's
    /// and each user's, not only those of sessions that log in afterwards.
    #[test]
    fn a_reload_resizes_the_budgets_of_live_sessions() {
        let mut config = ServerConfig::default_embedded();
        config.limits.max_channels = 3;
        config.limits.max_channels_per_user = 3;
        let shared = Shared::new(config.clone(), AuditSink::memory().0);
        let alice = shared.user_session("alice", 4).expect("alice's session");
        let held: Vec<_> = (0..2)
            .map(|_| alice.share.channels.take_one().expect("within 3"))
            .collect();

        config.limits.max_channels_per_user = 2;
        shared.reload(config.clone());
        let e = alice
            .share
            .channels
            .take_one()
            .err()
            .expect("over the new per-user 2");
        assert!(e.contains("max_channels_per_user"), "{e}");

        config.limits.max_channels_per_user = 10;
        config.limits.max_channels = 2;
        shared.reload(config.clone());
        let e = alice
            .share
            .channels
            .take_one()
            .err()
            .expect("over the new total 2");
        assert!(e.contains("(limits.max_channels)"), "{e}");

        config.limits.max_channels = 10;
        shared.reload(config);
        let more: Vec<_> = (0..8)
            .map(|_| alice.share.channels.take_one().expect("within 10"))
            .collect();
        assert_eq!(held.len() + more.len(), 10);
    }
}
