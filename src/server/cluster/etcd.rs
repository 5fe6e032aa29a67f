//! The cluster-wide name registry, kept in etcd.
//!
//! Every node holds one etcd lease; its member key and every name it publishes live under
//! that lease, so a node that dies loses them all within the lease TTL without anyone
//! cleaning up. Ownership is decided by etcd transactions alone (no read-then-write), so two
//! nodes can never both own a name. Readers never ask etcd: a background "keeper" mirrors the
//! prefix into memory (get, then watch from the next revision) and answers lookups from there.
//!
//! etcd being down must never stop a node: [`ClusterRegistry::start`] does not wait for it,
//! publishes fail fast with a reason while it is away, and the keeper reconnects on its own
//! (new client, same lease if it survived, the names re-published if it did not).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use tokio::sync::{Notify, RwLock, broadcast};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::names::{self, Key};
pub use super::names::{Member, NameRecord};

/// First retry after etcd went away; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Short enough that a node is back in the cluster soon after etcd is, long enough that a
/// fleet of nodes does not hammer an etcd that is struggling to come up.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A session that lived this long was a real one: the next failure starts from MIN_BACKOFF.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// How many `lost` notices wait for a slow reader before the oldest are dropped (it then
/// sees `Lagged`).
const LOST_BACKLOG: usize = 1024;

/// How to reach etcd and how long this node's names outlive it.
#[derive(Clone)]
pub struct EtcdSettings {
    /// `http://127.0.0.1:2379`, or `https://...` with `ca` (and `cert`/`key` for client auth).
    pub endpoints: Vec<String>,
    /// Every key the registry reads or writes is under it, e.g. `/warren/`.
    pub prefix: String,
    /// This node's lease: its names vanish within it when the node dies.
    pub lease_ttl: Duration,
    /// Per etcd request; a publish never waits longer.
    pub timeout: Duration,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Hand-written so that the password never reaches a log line.
impl fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("timeout", &self.timeout)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// Another user owns the name (on any node).
    Taken,
    /// etcd could not be asked; the reason is for the audit log and the operator.
    Unavailable(String),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Taken => f.write_str("the name is published by another user"),
            PublishError::Unavailable(why) => write!(f, "cluster registry unavailable: {why}"),
        }
    }
}

impl std::error::Error for PublishError {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    Unavailable { since: SystemTime, why: String },
}

/// Cheap to clone: every clone is the same registry.
#[derive(Clone)]
pub struct ClusterRegistry {
    inner: Arc<Inner>,
}

type NameId = (String, u16);

struct Inner {
    settings: EtcdSettings,
    me: Member,
    connect: ConnectOptions,
    state: Mutex<State>,
    /// Publishes and withdrawals hold it shared; the keeper holds it alone while it
    /// re-publishes after a reconnect, so that a withdrawal cannot be undone by a re-publish
    /// of the name it just removed.
    gate: RwLock<()>,
    lost: broadcast::Sender<(String, u16, NameRecord)>,
    /// Tells the keeper that `later` has work.
    wake: Notify,
    task: Mutex<Option<AbortHandle>>,
    /// Cancelled once the keeper has finished (the lease revoked, or given up on).
    done: CancellationToken,
}

#[derive(Default)]
struct State {
    health: Option<Health>,
    conn: Option<Conn>,
    names: HashMap<NameId, NameRecord>,
    members: HashMap<String, Member>,
    mine: HashMap<NameId, Mine>,
    later: HashMap<NameId, NameRecord>,
}

#[derive(Clone)]
struct Conn {
    client: Client,
    lease: i64,
}

/// A name this node published, and the etcd revision that wrote it: watch events at or
/// below it are older than our write and say nothing about who owns the name now.
#[derive(Clone)]
struct Mine {
    rec: NameRecord,
    rev: i64,
}

impl ClusterRegistry {
    /// Never fails because etcd is down (the node must start and serve local traffic during an
    /// etcd outage); fails only on bad settings. The background work ends when `cancel` is
    /// cancelled; a clean cancel revokes the lease, so this node's names vanish at once.
    pub fn start(
        settings: EtcdSettings,
        me: Member,
        cancel: CancellationToken,
    ) -> Result<ClusterRegistry, String> {
        let connect = connect_options(&settings)?;
        let (lost, _) = broadcast::channel(LOST_BACKLOG);
        let inner = Arc::new(Inner {
            settings,
            me,
            connect,
            state: Mutex::new(State {
                health: Some(Health::Unavailable {
                    since: SystemTime::now(),
                    why: "connecting to etcd".into(),
                }),
                ..State::default()
            }),
            gate: RwLock::new(()),
            lost,
            wake: Notify::new(),
            task: Mutex::new(None),
            done: CancellationToken::new(),
        });
        let task = tokio::spawn(keeper(inner.clone(), cancel));
        *lock(&inner.task) = Some(task.abort_handle());
        Ok(ClusterRegistry { inner })
    }

    /// Creates or takes over `name:port` under this node's lease, in one etcd transaction:
    /// absent -> created; present with the same `user` -> replaced (returns the old record,
    /// possibly from another node); present with another user -> `Taken`.
    pub async fn publish(
        &self,
        name: &str,
        port: u16,
        rec: NameRecord,
    ) -> Result<Option<NameRecord>, PublishError> {
        let result = self.inner.publish(name, port, rec, false).await;
        if let Err(PublishError::Unavailable(why)) = &result {
            debug!(name, port, %why, "cluster publish failed");
        }
        result
    }

    /// Deletes `name:port` only if its value is still `rec` (a name taken over elsewhere
    /// stays). Best effort; never blocks longer than the request timeout.
    pub async fn withdraw(&self, name: &str, port: u16, rec: &NameRecord) {
        let id = (name.to_string(), port);
        let conn = {
            let mut st = lock(&self.inner.state);
            if st.mine.get(&id).is_some_and(|m| m.rec == *rec) {
                st.mine.remove(&id);
            }
            if st.later.get(&id) == Some(rec) {
                st.later.remove(&id);
            }
            st.conn.clone()
        };
        let Some(mut conn) = conn else { return };
        let key = names::name_key(&self.inner.settings.prefix, name, port);
        let value = names::encode_record(rec);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, value)])
            .and_then([TxnOp::delete(key, None)]);
        let work = async {
            let _shared = self.inner.gate.read().await;
            conn.client.txn(txn).await
        };
        match tokio::time::timeout(self.inner.settings.timeout, work).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => debug!(name, port, error = %describe(&e), "cluster withdraw failed"),
            Err(_) => debug!(name, port, "cluster withdraw timed out"),
        }
    }

    /// Remembers a name served locally while etcd was unreachable: the keeper publishes it
    /// as soon as etcd is back, with the rules of [`ClusterRegistry::publish`]; a conflict
    /// shows on [`ClusterRegistry::lost`].
    pub fn publish_later(&self, name: &str, port: u16, rec: NameRecord) {
        lock(&self.inner.state)
            .later
            .insert((name.to_string(), port), rec);
        self.inner.wake.notify_one();
    }

    /// From the watched cache: no etcd round trip. During an etcd outage it answers with the
    /// last state seen (a node that died meanwhile keeps its names here until etcd is back).
    pub fn lookup(&self, name: &str, port: u16) -> Option<NameRecord> {
        lock(&self.inner.state)
            .names
            .get(&(name.to_string(), port))
            .cloned()
    }

    pub fn member(&self, node: &str) -> Option<Member> {
        lock(&self.inner.state).members.get(node).cloned()
    }

    pub fn members(&self) -> Vec<Member> {
        let mut v: Vec<_> = lock(&self.inner.state).members.values().cloned().collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    pub fn names(&self) -> Vec<(String, u16, NameRecord)> {
        let mut v: Vec<_> = lock(&self.inner.state)
            .names
            .iter()
            .map(|((n, p), r)| (n.clone(), *p, r.clone()))
            .collect();
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }

    pub fn health(&self) -> Health {
        lock(&self.inner.state).health.clone().unwrap_or(Health::Ok)
    }

    /// Names this node published that it no longer owns, with the record this node had:
    /// taken over by the same user on another node, or found owned by someone else when
    /// re-publishing after a lease loss or an outage.
    pub fn lost(&self) -> broadcast::Receiver<(String, u16, NameRecord)> {
        self.inner.lost.subscribe()
    }

    /// Returns once the background work has ended after its cancel (the lease revoked, or
    /// the revoke given up after the request timeout): a stopping node waits for it, so
    /// its names vanish at once rather than with the lease.
    pub async fn stopped(&self) {
        self.inner.done.cancelled().await
    }

    /// Stops the background work WITHOUT revoking the lease, the way a SIGKILL would: the
    /// names stay in etcd until the lease runs out. For tests of exactly that.
    #[doc(hidden)]
    pub fn halt_without_revoke(&self) {
        if let Some(task) = lock(&self.inner.task).take() {
            task.abort();
        }
        let mut st = lock(&self.inner.state);
        st.conn = None;
        st.health = Some(Health::Unavailable {
            since: SystemTime::now(),
            why: "halted".into(),
        });
    }
}

impl Inner {
    /// `later` re-publishes go through the same transaction as a fresh publish; they differ
    /// only in which bookkeeping a `Taken` answer updates.
    async fn publish(
        &self,
        name: &str,
        port: u16,
        rec: NameRecord,
        from_later: bool,
    ) -> Result<Option<NameRecord>, PublishError> {
        let mut conn = {
            let st = lock(&self.state);
            match (&st.conn, &st.health) {
                (Some(conn), _) => conn.clone(),
                (None, Some(Health::Unavailable { why, .. })) => {
                    return Err(PublishError::Unavailable(why.clone()));
                }
                (None, _) => return Err(PublishError::Unavailable("no etcd lease yet".into())),
            }
        };
        let key = names::name_key(&self.settings.prefix, name, port);
        let value = names::encode_record(&rec);
        let put = || {
            TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(conn.lease).with_prev_key()),
            )
        };
        let (low, high) = names::user_value_range(&rec.user);
        let same_user = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Greater, low),
                Compare::value(key.clone(), CompareOp::Less, high),
            ])
            .and_then([put()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::txn(same_user)]);
        let work = async {
            let _shared = self.gate.read().await;
            conn.client.txn(txn).await
        };
        let resp = match tokio::time::timeout(self.settings.timeout, work).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                // Perhaps the lease is gone: let the keeper look now rather than at its next tick.
                self.wake.notify_one();
                return Err(PublishError::Unavailable(format!("etcd: {}", describe(&e))));
            }
            Err(_) => {
                return Err(PublishError::Unavailable(format!(
                    "etcd did not answer within {}",
                    humantime::format_duration(self.settings.timeout)
                )));
            }
        };
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let old = if resp.succeeded() {
            None
        } else {
            let inner = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Txn(t) => Some(t),
                _ => None,
            });
            match inner {
                Some(t) if t.succeeded() => t
                    .op_responses()
                    .into_iter()
                    .find_map(|r| match r {
                        TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.value().to_vec()),
                        _ => None,
                    })
                    .and_then(|v| names::parse_record(&v).ok()),
                _ => {
                    if from_later {
                        lock(&self.state).later.remove(&(name.to_string(), port));
                    }
                    return Err(PublishError::Taken);
                }
            }
        };
        let id = (name.to_string(), port);
        let mut st = lock(&self.state);
        if st.mine.get(&id).is_none_or(|m| m.rev < rev) {
            st.mine.insert(
                id.clone(),
                Mine {
                    rec: rec.clone(),
                    rev,
                },
            );
        }
        if st.later.get(&id) == Some(&rec) {
            st.later.remove(&id);
        }
        Ok(old)
    }

    fn set_down(&self, why: String) {
        let mut st = lock(&self.state);
        st.conn = None;
        let since = match &st.health {
            Some(Health::Unavailable { since, .. }) => *since,
            _ => SystemTime::now(),
        };
        st.health = Some(Health::Unavailable { since, why });
    }

    fn send_lost(&self, name: String, port: u16, rec: NameRecord) {
        info!(
            name,
            port,
            user = rec.user,
            "cluster name no longer owned by this node"
        );
        // No receiver is not an error: nobody asked.
        let _ = self.lost.send((name, port, rec));
    }

    /// Tries every `later` name once; stops at the first etcd failure (the keeper retries).
    async fn flush_later(&self) {
        let todo: Vec<(NameId, NameRecord)> = lock(&self.state)
            .later
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((name, port), rec) in todo {
            match self.publish(&name, port, rec.clone(), true).await {
                Ok(_) => info!(name, port, "cluster name published after the outage"),
                Err(PublishError::Taken) => self.send_lost(name, port, rec),
                Err(PublishError::Unavailable(_)) => return,
            }
        }
    }

    /// Applies one watch batch to the cache. A put on one of our names by another node
    /// (newer than our own write) means the same user took it over there.
    fn apply(&self, events: &[etcd_client::Event]) {
        let prefix = &self.settings.prefix;
        let mut lost = Vec::new();
        {
            let mut st = lock(&self.state);
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                let Some(key) = names::parse_key(prefix, kv.key()) else {
                    continue;
                };
                let put = matches!(ev.event_type(), EventType::Put);
                match key {
                    Key::Name { name, port } => {
                        let id = (name, port);
                        if !put {
                            st.names.remove(&id);
                            continue;
                        }
                        match names::parse_record(kv.value()) {
                            Ok(rec) => {
                                let taken_over = st.mine.get(&id).is_some_and(|m| {
                                    rec.node != self.me.node && kv.mod_revision() > m.rev
                                });
                                if taken_over && let Some(m) = st.mine.remove(&id) {
                                    lost.push((id.0.clone(), id.1, m.rec));
                                }
                                st.names.insert(id, rec);
                            }
                            Err(e) => {
                                warn!(name = id.0, port = id.1, error = %e, "skipping an unreadable name record in etcd");
                                st.names.remove(&id);
                            }
                        }
                    }
                    Key::Member { node } => {
                        if !put {
                            st.members.remove(&node);
                            continue;
                        }
                        match names::parse_member(kv.value()) {
                            Ok(m) if m.node == node => {
                                st.members.insert(node, m);
                            }
                            Ok(_) => {
                                warn!(node, "skipping a member record filed under another node");
                                st.members.remove(&node);
                            }
                            Err(e) => {
                                warn!(node, error = %e, "skipping an unreadable member record in etcd");
                                st.members.remove(&node);
                            }
                        }
                    }
                }
            }
        }
        for (name, port, rec) in lost {
            self.send_lost(name, port, rec);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the registry down with it: the data is plain maps.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks the settings and loads the TLS files once, so that a typo fails at start instead
/// of showing up later as "etcd unavailable".
fn connect_options(s: &EtcdSettings) -> Result<ConnectOptions, String> {
    if s.endpoints.is_empty() {
        return Err("cluster: no etcd endpoints".into());
    }
    if s.lease_ttl < Duration::from_secs(1) {
        return Err("cluster: the lease TTL must be at least 1 s".into());
    }
    if s.timeout.is_zero() {
        return Err("cluster: the etcd timeout must not be zero".into());
    }
    let mut opts = ConnectOptions::new().with_connect_timeout(s.timeout);
    match (&s.user, &s.password) {
        (Some(user), Some(password)) => {
            opts = opts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        (None, None) => {}
        _ => return Err("cluster: etcd user and password go together".into()),
    }
    let tls = s.ca.is_some() || s.cert.is_some() || s.key.is_some();
    for e in &s.endpoints {
        let https = e.starts_with("https://");
        if !https && !e.starts_with("http://") {
            return Err(format!(
                "cluster: etcd endpoint {e:?} must start with http:// or https://"
            ));
        }
        if tls && !https {
            return Err(format!(
                "cluster: TLS files are set but etcd endpoint {e} is not https://"
            ));
        }
        if https && s.ca.is_none() {
            return Err(format!(
                "cluster: etcd endpoint {e} is https:// but no CA file is set"
            ));
        }
    }
    if tls {
        let mut t = TlsOptions::new();
        if let Some(ca) = &s.ca {
            t = t.ca_certificate(Certificate::from_pem(read_pem(ca, "CA")?));
        }
        match (&s.cert, &s.key) {
            (Some(cert), Some(key)) => {
                t = t.identity(Identity::from_pem(
                    read_pem(cert, "certificate")?,
                    read_pem(key, "key")?,
                ));
            }
            (None, None) => {}
            _ => return Err("cluster: etcd client certificate and key go together".into()),
        }
        opts = opts.with_tls(t);
    }
    Ok(opts)
}

fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("cluster: etcd TLS {what} file {}: {e}", path.display()))?;
    if !data.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!(
            "cluster: etcd TLS {what} file {} is not PEM",
            path.display()
        ));
    }
    Ok(data)
}

/// Runs sessions until cancelled, with backoff between them; revokes the lease on the way
/// out so that a clean stop withdraws every name at once.
async fn keeper(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut lease = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        let why = tokio::select! {
            _ = cancel.cancelled() => break,
            why = guarded_session(&inner, &mut lease) => why,
        };
        let was_up = matches!(lock(&inner.state).health, Some(Health::Ok));
        let why = if was_up {
            why
        } else {
            with_client_cert_hint(&inner.settings, why)
        };
        if was_up {
            warn!(%why, "cluster registry lost etcd; retrying");
        } else {
            debug!(%why, "cluster registry: etcd not reachable yet");
        }
        inner.set_down(why);
        if started.elapsed() > STABLE_SESSION {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    let conn = lock(&inner.state).conn.take();
    inner.set_down("stopped".into());
    if let Some(mut conn) = conn {
        match tokio::time::timeout(inner.settings.timeout, conn.client.lease_revoke(conn.lease))
            .await
        {
            Ok(Ok(_)) => debug!("cluster lease revoked"),
            Ok(Err(e)) => {
                warn!(error = %e, "cluster lease revoke failed; names expire with the lease")
            }
            Err(_) => warn!("cluster lease revoke timed out; names expire with the lease"),
        }
    }
    inner.done.cancel();
}

/// One [`session`] in a task of its own. etcd-client can panic on answers a real etcd
/// never sends (an empty transaction response, an unknown watch event type); that ends
/// this session, which is retried like any lost connection, instead of the keeper (which
/// would leave the registry's health stale for good). A panic loses a lease granted
/// during the session; the next one checks the previous id and takes a new lease if
/// that one is gone, and the orphan expires with its TTL.
async fn guarded_session(inner: &Arc<Inner>, lease: &mut Option<i64>) -> String {
    let inner = inner.clone();
    let mut kept = *lease;
    let run = contained(async move {
        let why = session(&inner, &mut kept).await;
        (why, kept)
    });
    match run.await {
        Ok((why, kept)) => {
            *lease = kept;
            why
        }
        Err(why) => why,
    }
}

/// Runs `fut` as a task that is aborted when this future is dropped; a panic in it comes
/// back as an error naming the panic.
async fn contained<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(fut);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(format!("the etcd client failed (panic: {what})"))
        }
        Err(e) => Err(format!("the etcd session ended: {e}")),
    }
}

/// One connection to etcd, from connect to the first failure; returns why it ended.
/// `lease` outlives the session: if etcd kept it (a short outage, an etcd restart), the
/// names under it are still there and nothing is re-published.
async fn session(inner: &Arc<Inner>, lease: &mut Option<i64>) -> String {
    match session_inner(inner, lease).await {
        Ok(never) => match never {},
        Err(why) => why,
    }
}

async fn session_inner(
    inner: &Arc<Inner>,
    lease: &mut Option<i64>,
) -> Result<std::convert::Infallible, String> {
    let s = &inner.settings;
    let t = s.timeout;
    let mut client = within(
        t,
        "connect",
        Client::connect(s.endpoints.clone(), Some(inner.connect.clone())),
    )
    .await?;

    // The lease: the old one if etcd still has it, else a new one.
    let mut kept = None;
    if let Some(id) = *lease {
        match tokio::time::timeout(t, client.lease_keep_alive(id)).await {
            Ok(Ok(k)) => kept = Some((id, k)),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                info!("cluster lease expired while etcd was away; re-publishing");
                *lease = None;
            }
            Ok(Err(e)) => return Err(format!("etcd lease keepalive: {}", describe(&e))),
            Err(_) => return Err(timeout_msg("lease keepalive", t)),
        }
    }
    let ttl_secs = i64::try_from(s.lease_ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let (id, (mut keeper, mut keepalive)) = match kept {
        Some(k) => k,
        None => {
            let granted = within(t, "lease grant", client.lease_grant(ttl_secs, None)).await?;
            let id = granted.id();
            *lease = Some(id);
            (
                id,
                within(t, "lease keepalive", client.lease_keep_alive(id)).await?,
            )
        }
    };

    // Our member key, then our names (they may be gone with an old lease, or taken).
    within(
        t,
        "member put",
        client.put(
            names::member_key(&s.prefix, &inner.me.node),
            names::encode_member(&inner.me),
            Some(PutOptions::new().with_lease(id)),
        ),
    )
    .await?;
    // The cache: everything under the prefix at one revision, then changes after it.
    let mut snapshot = within(
        t,
        "get",
        client.get(s.prefix.clone(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let rev = snapshot.header().map(|h| h.revision()).unwrap_or(0);
    let kvs = snapshot.take_kvs();
    load_snapshot(inner, &kvs);
    // Our names that are not in the snapshot as we wrote them; the watch below starts at
    // the snapshot's revision, so it shows what this writes.
    reconcile(inner, &mut client, id, &kvs).await?;
    let mut watch: WatchStream = within(
        t,
        "watch",
        client.watch(
            s.prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        ),
    )
    .await?;

    {
        let mut st = lock(&inner.state);
        st.conn = Some(Conn {
            client: client.clone(),
            lease: id,
        });
        st.health = Some(Health::Ok);
    }
    info!(
        lease = id,
        revision = rev,
        "cluster registry connected to etcd"
    );
    inner.flush_later().await;

    let tick = (s.lease_ttl / 3).max(Duration::from_millis(200));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(sent) = awaiting && sent.elapsed() > t.max(tick) {
                    return Err(timeout_msg("lease keepalive", t.max(tick)));
                }
                within(t, "lease keepalive", keeper.keep_alive()).await?;
                awaiting.get_or_insert_with(Instant::now);
                if !lock(&inner.state).later.is_empty() {
                    inner.flush_later().await;
                }
            }
            msg = keepalive.message() => match msg {
                Ok(Some(r)) if r.ttl() > 0 => awaiting = None,
                Ok(Some(_)) => {
                    *lease = None;
                    return Err("the etcd lease expired".into());
                }
                Ok(None) => return Err("etcd closed the lease keepalive stream".into()),
                Err(e) => return Err(format!("etcd lease keepalive: {}", describe(&e))),
            },
            msg = watch.message() => match msg {
                Ok(Some(r)) if r.canceled() => {
                    return Err(format!(
                        "etcd cancelled the watch ({}; compacted at {})",
                        r.cancel_reason(),
                        r.compact_revision()
                    ));
                }
                Ok(Some(r)) => inner.apply(r.events()),
                Ok(None) => return Err("etcd closed the watch stream".into()),
                Err(e) => return Err(format!("etcd watch: {}", describe(&e))),
            },
            _ = inner.wake.notified() => inner.flush_later().await,
        }
    }
}

/// Replaces the cache in one step: a lookup never sees it half-loaded.
fn load_snapshot(inner: &Arc<Inner>, kvs: &[etcd_client::KeyValue]) {
    let prefix = &inner.settings.prefix;
    let mut st = State::default();
    for kv in kvs {
        match names::parse_key(prefix, kv.key()) {
            Some(Key::Name { name, port }) => match names::parse_record(kv.value()) {
                Ok(rec) => {
                    st.names.insert((name, port), rec);
                }
                Err(e) => {
                    warn!(name, port, error = %e, "skipping an unreadable name record in etcd")
                }
            },
            Some(Key::Member { node }) => match names::parse_member(kv.value()) {
                Ok(m) if m.node == node => {
                    st.members.insert(node, m);
                }
                _ => warn!(node, "skipping an unreadable member record in etcd"),
            },
            None => {}
        }
    }
    let mut cur = lock(&inner.state);
    cur.names = st.names;
    cur.members = st.members;
}

/// After (re)connecting: each name this node still holds is either in etcd with our exact
/// record, or re-created if absent (the lease was lost), or lost to whoever holds it now.
/// Unlike a fresh publish, a present name is never taken back even from the same user: the
/// other node's record is newer than our disconnected one.
async fn reconcile(
    inner: &Arc<Inner>,
    client: &mut Client,
    lease: i64,
    snapshot: &[etcd_client::KeyValue],
) -> Result<(), String> {
    let _alone = inner.gate.write().await;
    let present: HashMap<&[u8], &etcd_client::KeyValue> =
        snapshot.iter().map(|kv| (kv.key(), kv)).collect();
    let mine: Vec<(NameId, Mine)> = lock(&inner.state)
        .mine
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let t = inner.settings.timeout;
    for ((name, port), m) in mine {
        let key = names::name_key(&inner.settings.prefix, &name, port);
        let value = names::encode_record(&m.rec);
        // Still ours under the live lease (etcd kept it through the outage): nothing to do.
        if present
            .get(key.as_bytes())
            .is_some_and(|kv| kv.value() == value.as_slice() && kv.lease() == lease)
        {
            continue;
        }
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = within(t, "re-publish", client.txn(txn)).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let id = (name, port);
        if resp.succeeded() {
            if let Some(e) = lock(&inner.state).mine.get_mut(&id) {
                e.rev = rev;
            }
            continue;
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        if current.as_deref() != Some(value.as_slice()) {
            lock(&inner.state).mine.remove(&id);
            inner.send_lost(id.0, id.1, m.rec);
        }
    }
    Ok(())
}

async fn within<T>(
    t: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(t, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd {what}: {}", describe(&e))),
        Err(_) => Err(timeout_msg(what, t)),
    }
}

/// The gRPC status message without tonic's nested sources: one readable line for the audit
/// log and `warrend ctl`.
fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) if !s.message().is_empty() => {
            // The innermost cause says what went wrong ("connection refused", a TLS alert).
            let mut cause = None;
            let mut next = std::error::Error::source(s);
            while let Some(e) = next {
                cause = Some(e.to_string());
                next = e.source();
            }
            match cause {
                Some(c) if !s.message().contains(&c) => format!("{}: {c}", s.message()),
                _ => s.message().to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// With TLS 1.3 the client finishes its handshake before etcd checks the client
/// certificate, so a node without one sees etcd's refusal as an alert or, as often, as a
/// reset or broken pipe on its first request. The operator then needs the likely cause.
fn with_client_cert_hint(s: &EtcdSettings, why: String) -> String {
    let https = s.endpoints.iter().any(|e| e.starts_with("https://"));
    let said = why.to_lowercase();
    if !https || s.cert.is_some() || said.contains("certificate") || said.contains("refused") {
        return why;
    }
    format!(
        "{why} (no client certificate is configured: if etcd requires one, set cert and key in [cluster.etcd])"
    )
}

fn timeout_msg(what: &str, t: Duration) -> String {
    format!(
        "etcd did not answer ({what}) within {}",
        humantime::format_duration(t)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EtcdSettings {
        EtcdSettings {
            endpoints: vec!["http://127.0.0.1:1".into()],
            prefix: "/warren/".into(),
            lease_ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            user: None,
            password: None,
            ca: None,
            cert: None,
            key: None,
        }
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let mut s = settings();
        s.user = Some("warren".into());
        s.password = Some("hunter2".into());
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && d.contains("redacted"), "{d}");
    }

    #[test]
    fn a_tls_failure_without_a_client_certificate_names_the_likely_cause() {
        let mut s = settings();
        s.endpoints = vec!["https://127.0.0.1:2379".into()];
        let reset = "etcd watch: transport error: connection reset by peer".to_string();
        let hinted = with_client_cert_hint(&s, reset.clone());
        assert!(
            hinted.starts_with(&reset) && hinted.contains("set cert and key"),
            "{hinted}"
        );
        // Already named, plainly down, a certificate configured, or no TLS: left as it is.
        let alert = "etcd: received fatal alert: CertificateRequired".to_string();
        assert_eq!(with_client_cert_hint(&s, alert.clone()), alert);
        let refused = "etcd: tcp connect error: Connection refused (os error 111)".to_string();
        assert_eq!(with_client_cert_hint(&s, refused.clone()), refused);
        s.cert = Some("client.pem".into());
        assert_eq!(with_client_cert_hint(&s, reset.clone()), reset);
        assert_eq!(with_client_cert_hint(&settings(), reset.clone()), reset);
    }

    #[test]
    fn bad_settings_fail_at_start() {
        let mut s = settings();
        s.user = Some("u".into());
        assert!(connect_options(&s).unwrap_err().contains("together"));
        let mut s = settings();
        s.endpoints = vec!["https://127.0.0.1:2379".into()];
        assert!(connect_options(&s).unwrap_err().contains("CA"));
        let mut s = settings();
        s.ca = Some("/nonexistent/ca.pem".into());
        assert!(connect_options(&s).unwrap_err().contains("not https"));
        s.endpoints = vec!["https://127.0.0.1:2379".into()];
        let e = connect_options(&s).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let mut s = settings();
        s.endpoints = vec!["127.0.0.1:2379".into()];
        assert!(connect_options(&s).is_err());
        let mut s = settings();
        s.endpoints.clear();
        assert!(connect_options(&s).is_err());
    }

    #[test]
    fn tls_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), pem).unwrap();
        }
        std::fs::write(dir.path().join("junk"), "not a pem").unwrap();
        let mut s = settings();
        s.endpoints = vec!["https://127.0.0.1:2379".into()];
        s.ca = Some(dir.path().join("ca.pem"));
        s.cert = Some(dir.path().join("cert.pem"));
        assert!(connect_options(&s).unwrap_err().contains("together"));
        s.key = Some(dir.path().join("key.pem"));
        connect_options(&s).unwrap();
        s.key = Some(dir.path().join("junk"));
        assert!(connect_options(&s).unwrap_err().contains("not PEM"));
    }

    /// A panic inside an etcd session (etcd-client on a malformed answer) comes back as a
    /// reason to retry, and a dropped keeper takes its session task down with it.
    #[tokio::test]
    async fn a_panicking_session_is_a_failure_to_retry_and_dies_with_its_keeper() {
        let why = contained::<()>(async { panic!("unexpected watch event type 7") })
            .await
            .unwrap_err();
        assert!(
            why.contains("panic: unexpected watch event type 7"),
            "{why}"
        );
        assert_eq!(contained(async { 5 }).await, Ok(5));

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let pending = contained(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        drop(tokio::time::timeout(Duration::from_millis(10), pending).await);
        // The task held `tx`: the receiver sees it dropped once the task is aborted.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .unwrap()
                .is_err(),
            "the session task outlived its keeper"
        );
    }
}
