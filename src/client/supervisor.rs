//! Keeping the tunnel up: the SSH session behind the forwards is replaced when it dies,
//! while local listeners stay bound and connections arriving meanwhile wait for it.
//!
//! This is autossh built in, quicker: keepalive (ServerAliveInterval) notices a dead link,
//! the supervisor probes the server until it answers (backing off only for failures after
//! TCP), re-verifies the host key, re-authenticates and asks
//! for every -R again, retrying while the server still holds a port from the old session.

use super::backoff::{Backoff, probe_interval};
use super::error::ClientError;
use super::session::{ConnectSettings, Session, Transport};
use crate::config::forward::{Endpoint, Listen, RemoteForward};
use crate::forward::local::ForwardStats;
use crate::forward::{OpenError, Opener};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warren_ssh::driver::ChannelStream;

/// A connection that lived this long proves the server works: the next failure starts
/// the backoff from its shortest wait again.
const STABLE: Duration = Duration::from_secs(30);

/// How often a -R refused after a reconnect is asked for again (the old session may
/// still hold the port until the server notices it is dead).
const STALE_RETRY: Duration = Duration::from_secs(2);

/// The session forwards should use right now; `None` while reconnecting.
pub struct SessionSlot {
    current: watch::Sender<Option<Arc<Session>>>,
    /// How long a new forwarded connection waits for a session before giving up.
    wait: Duration,
}

impl SessionSlot {
    pub fn new(wait: Duration) -> Arc<SessionSlot> {
        Arc::new(SessionSlot {
            current: watch::Sender::new(None),
            wait,
        })
    }

    fn set(&self, session: Option<Arc<Session>>) {
        self.current.send_replace(session);
    }

    /// The current session, if connected.
    pub fn get(&self) -> Option<Arc<Session>> {
        self.current.borrow().clone()
    }

    /// Follows the session as it is lost and re-established.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Session>>> {
        self.current.subscribe()
    }
}

impl Opener for SessionSlot {
    type Stream = ChannelStream;

    /// Waits (bounded) for a live session, so a connection made during a reconnect is
    /// carried once the tunnel is back instead of being refused.
    async fn open(
        &self,
        target: &Endpoint,
        originator: Option<SocketAddr>,
    ) -> Result<Self::Stream, OpenError> {
        let mut rx = self.current.subscribe();
        let session = match tokio::time::timeout(self.wait, rx.wait_for(|s| s.is_some())).await {
            Ok(Ok(s)) => s.clone(),
            _ => None,
        };
        let Some(session) = session else {
            return Err(OpenError::Session(format!(
                "no SSH connection within {:?} (reconnecting)",
                self.wait
            )));
        };
        session.open(target, originator).await
    }

    fn still_open(stream: &Self::Stream) -> bool {
        stream.is_open()
    }

    fn server_sends_at_once(&self) -> bool {
        self.get().is_some_and(|s| s.server_sends_at_once())
    }
}

/// Reconnect behaviour.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    pub enabled: bool,
    /// Give up after this many failed attempts in a row (None: never).
    pub max_attempts: Option<u32>,
}

/// What the supervisor reports once the first session is fully up.
pub struct Ready {
    /// The server-side port of each -R, in order (0 for unix sockets or failures).
    pub remote_ports: Vec<u32>,
    pub destination: String,
}

/// The tunnel's -R forwards. Shared and changeable while the tunnel runs (`-O forward -R`,
/// `-O cancel -R`), so that each reconnect asks for the set as it is then, not as it was
/// on the command line.
#[derive(Debug, Default)]
pub struct RemoteSet {
    inner: Mutex<Vec<RemoteState>>,
}

/// One -R and the port the server listens on for it (`None` while not granted).
#[derive(Debug, Clone)]
pub struct RemoteState {
    pub fwd: RemoteForward,
    pub port: Option<u32>,
    /// Its connections, across reconnects.
    pub stats: Arc<ForwardStats>,
}

impl RemoteSet {
    pub fn new(forwards: Vec<RemoteForward>) -> Arc<RemoteSet> {
        let inner = forwards
            .into_iter()
            .map(|fwd| RemoteState {
                fwd,
                port: None,
                stats: Arc::default(),
            })
            .collect();
        Arc::new(RemoteSet {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RemoteState>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<RemoteState> {
        self.lock().clone()
    }

    pub fn contains(&self, fwd: &RemoteForward) -> bool {
        self.lock().iter().any(|r| &r.fwd == fwd)
    }

    /// Adds `fwd` unless it is already there (then `false`).
    pub fn push(&self, fwd: RemoteForward) -> bool {
        let mut v = self.lock();
        if v.iter().any(|r| r.fwd == fwd) {
            return false;
        }
        v.push(RemoteState {
            fwd,
            port: None,
            stats: Arc::default(),
        });
        true
    }

    pub fn remove(&self, fwd: &RemoteForward) -> Option<RemoteState> {
        let mut v = self.lock();
        let i = v.iter().position(|r| &r.fwd == fwd)?;
        Some(v.remove(i))
    }

    pub fn set_port(&self, fwd: &RemoteForward, port: Option<u32>) {
        if let Some(r) = self.lock().iter_mut().find(|r| &r.fwd == fwd) {
            r.port = port;
        }
    }

    fn clear_ports(&self) {
        for r in self.lock().iter_mut() {
            r.port = None;
        }
    }
}

/// What `warren status` reports about the connection itself.
#[derive(Debug)]
pub struct Health {
    pub started: Instant,
    reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
    connected_at: Mutex<Option<Instant>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            reconnects: AtomicU64::new(0),
            last_error: Mutex::new(None),
            connected_at: Mutex::new(None),
        }
    }
}

impl Health {
    /// Successful reconnects since the first connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Why the last connection ended or the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// Since when the current session is up (`None` while reconnecting).
    pub fn connected_at(&self) -> Option<Instant> {
        self.connected_at.lock().map(|c| *c).unwrap_or(None)
    }

    fn up(&self, reconnected: bool) {
        if reconnected {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut c) = self.connected_at.lock() {
            *c = Some(Instant::now());
        }
    }

    fn down(&self, why: String) {
        if let Ok(mut c) = self.connected_at.lock() {
            *c = None;
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why);
        }
    }
}

/// Everything the supervisor needs.
pub struct Supervisor {
    pub connect: ConnectSettings,
    pub remote_forwards: Arc<RemoteSet>,
    pub health: Arc<Health>,
    pub exit_on_forward_failure: bool,
    pub reconnect: ReconnectPolicy,
    pub quiet: bool,
    pub slot: Arc<SessionSlot>,
    pub cancel: CancellationToken,
    /// SIGHUP: drop the session and reconnect now.
    pub reconnect_now: Arc<Notify>,
}

/// How a pause between attempts ended.
enum Wake {
    Elapsed,
    /// SIGHUP: go now.
    Hangup,
    Cancelled,
}

/// A TCP probe that has not answered within this gives way to the next one (capped by
/// ConnectTimeout): a lost SYN must not hold the tunnel down for the kernel's retry time.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Runs until cancelled (`Ok`) or until the tunnel cannot be (re)established
    /// (`Err`). `ready` fires once, after the first session has every forward.
    ///
    /// Two paces: failures after the server accepted TCP (handshake, auth, a session that
    /// dies at once) back off exponentially, since retrying fast cannot help; while the
    /// server does not accept TCP at all it is probed every ~150 ms and the connection
    /// that answers is used at once, so a restarted server has its tunnel back within a
    /// fraction of a second.
    pub async fn run(mut self, ready: oneshot::Sender<Ready>) -> Result<(), ClientError> {
        let mut ready = Some(ready);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut down_since = Instant::now();
        let mut wait = Duration::ZERO;
        loop {
            if !wait.is_zero() {
                match self.pause(wait).await {
                    Wake::Cancelled => return Ok(()),
                    Wake::Hangup => {
                        info!("SIGHUP: reconnecting now");
                        backoff.reset();
                    }
                    Wake::Elapsed => {}
                }
            }
            let attempt = if ready.is_some() {
                self.steady(Session::connect(&self.connect)).await
            } else {
                self.steady(self.reconnect_once(&mut backoff, down_since))
                    .await
            };
            let Some(attempt) = attempt else {
                return Ok(());
            };
            let session = match attempt {
                Ok(s) => Arc::new(s),
                // The first connection's failure is the user's to see, not to retry.
                Err(e) if ready.is_some() => return Err(e),
                // A changed host key or refused credentials will not fix themselves, and
                // Lost is the probe giving up (--max-reconnects).
                Err(
                    e @ (ClientError::HostKey(_) | ClientError::Auth(_) | ClientError::Lost { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => {
                    self.health.down(e.to_string());
                    self.give_up_after(&backoff, &e)?;
                    wait = backoff.next_delay();
                    warn!(
                        "reconnect failed: {e}; next attempt in {:.1}s",
                        wait.as_secs_f64()
                    );
                    continue;
                }
            };
            let first = ready.is_some();
            let ports = match self.request_remotes(&session, first).await {
                Ok(p) => p,
                Err(e) => {
                    shutdown(&session).await;
                    return Err(e);
                }
            };
            self.slot.set(Some(session.clone()));
            self.health.up(!first);
            let connected_at = Instant::now();
            // ConnectionAttempts is for the first connection, as in ssh.
            self.connect.connection_attempts = 1;
            if let Some(tx) = ready.take() {
                let _ = tx.send(Ready {
                    remote_ports: ports,
                    destination: session.destination.clone(),
                });
            } else {
                info!(
                    "reconnected to {} after {:.1}s outage",
                    session.destination,
                    down_since.elapsed().as_secs_f64()
                );
            }

            let reason = tokio::select! {
                reason = session.closed() => reason,
                _ = self.cancel.cancelled() => {
                    self.slot.set(None);
                    shutdown(&session).await;
                    return Ok(());
                }
                _ = self.reconnect_now.notified() => {
                    info!("SIGHUP: reconnecting now");
                    down_since = Instant::now();
                    self.slot.set(None);
                    self.remote_forwards.clear_ports();
                    self.health.down("SIGHUP: reconnecting".into());
                    shutdown(&session).await;
                    backoff.reset();
                    wait = Duration::ZERO;
                    continue;
                }
            };
            down_since = Instant::now();
            self.slot.set(None);
            self.remote_forwards.clear_ports();
            self.health.down(reason.clone());
            if !self.reconnect.enabled {
                return Err(ClientError::Lost {
                    host: self.connect.host.clone(),
                    reason,
                });
            }
            if connected_at.elapsed() >= STABLE {
                backoff.reset();
            }
            // The first loss after a stable spell reconnects at once; a session that keeps
            // dying soon after login backs off like any other failure after TCP.
            let first_loss = backoff.attempts() == 0;
            let delay = backoff.next_delay();
            wait = if first_loss { Duration::ZERO } else { delay };
            warn!(
                "connection to {} lost ({reason}); reconnecting in {:.1}s",
                session.destination,
                wait.as_secs_f64()
            );
            drop(session);
        }
    }

    /// One reconnect. Over direct TCP the server is probed until it accepts a connection,
    /// and that connection carries the handshake; through a ProxyCommand or jump hosts a
    /// probe would cost as much as an attempt, so it is a plain attempt.
    async fn reconnect_once(
        &self,
        backoff: &mut Backoff,
        down_since: Instant,
    ) -> Result<Session, ClientError> {
        match self.connect.transport {
            Transport::Direct => {
                let tcp = self.probe(backoff, down_since).await?;
                Session::connect_over(&self.connect, tcp).await
            }
            _ => Session::connect(&self.connect).await,
        }
    }

    /// Connects to the server as soon as it accepts TCP. The time spent probing counts
    /// against --max-reconnects as the backoff schedule would have: one attempt per
    /// backoff wait, so the limit means the same time either way.
    async fn probe(
        &self,
        backoff: &mut Backoff,
        down_since: Instant,
    ) -> Result<TcpStream, ClientError> {
        let timeout = self
            .connect
            .connect_timeout
            .map_or(PROBE_TIMEOUT, |t| t.min(PROBE_TIMEOUT));
        let mut counted_until: Option<Instant> = None;
        let mut said = false;
        loop {
            let e = match super::session::dial(&self.connect, Some(timeout)).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => e,
            };
            let now = Instant::now();
            if counted_until.is_none_or(|t| now >= t) {
                self.give_up_after(backoff, &e)?;
                counted_until = Some(now + backoff.next_delay());
            }
            if !said {
                info!("{e}; probing until the server answers");
                said = true;
            } else {
                debug!("probe: {e}");
            }
            tokio::time::sleep(probe_interval(down_since.elapsed())).await;
        }
    }

    /// `Err` once --max-reconnects attempts have failed in a row.
    fn give_up_after(&self, backoff: &Backoff, e: &ClientError) -> Result<(), ClientError> {
        match self.reconnect.max_attempts {
            Some(max) if backoff.attempts() >= max => Err(ClientError::Lost {
                host: self.connect.host.clone(),
                reason: format!("gave up after {max} reconnect attempts: {e}"),
            }),
            _ => Ok(()),
        }
    }

    /// Runs a connection attempt to its end (or cancellation: `None`). A SIGHUP meanwhile
    /// is taken as done by this attempt: left pending, it would drop the fresh session the
    /// moment it is up, so one SIGHUP would reconnect twice.
    async fn steady<F: std::future::Future>(&self, attempt: F) -> Option<F::Output> {
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                r = &mut attempt => return Some(r),
                _ = self.cancel.cancelled() => return None,
                _ = self.reconnect_now.notified() => info!("SIGHUP: already reconnecting"),
            }
        }
    }

    /// Waits `d`, cut short by SIGHUP (reconnect now) or cancellation.
    async fn pause(&self, d: Duration) -> Wake {
        tokio::select! {
            _ = tokio::time::sleep(d) => Wake::Elapsed,
            _ = self.reconnect_now.notified() => Wake::Hangup,
            _ = self.cancel.cancelled() => Wake::Cancelled,
        }
    }

    /// Asks for every -R. On the first connection a refusal is final (ExitOnForwardFailure);
    /// after a reconnect it usually means the server still holds the port for our dead
    /// session, so it is retried in the background until the port frees.
    async fn request_remotes(
        &self,
        session: &Arc<Session>,
        first: bool,
    ) -> Result<Vec<u32>, ClientError> {
        let mut ports = Vec::new();
        for r in self.remote_forwards.list() {
            let fwd = &r.fwd;
            match request_remote_counted(session, fwd, r.stats.clone(), self.quiet).await {
                Ok(p) => {
                    self.remote_forwards.set_port(fwd, Some(p));
                    ports.push(p)
                }
                Err(e) if first && self.exit_on_forward_failure => {
                    return Err(ClientError::Forward(format!("{e} (-R {})", fwd.spec)));
                }
                Err(e) if first => {
                    warn!(
                        "{e} (-R {}); continuing without it (ExitOnForwardFailure=no)",
                        fwd.spec
                    );
                    ports.push(0);
                }
                Err(e) => {
                    warn!(
                        "{e} (-R {}): the server probably still holds it for the previous connection; \
                         retrying every {}s until it frees",
                        fwd.spec,
                        STALE_RETRY.as_secs()
                    );
                    tokio::spawn(retry_remote(
                        session.clone(),
                        r.clone(),
                        self.remote_forwards.clone(),
                        self.quiet,
                    ));
                    ports.push(0);
                }
            }
        }
        Ok(ports)
    }
}

async fn retry_remote(session: Arc<Session>, r: RemoteState, set: Arc<RemoteSet>, quiet: bool) {
    let fwd = r.fwd;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STALE_RETRY) => {}
            _ = session.closed() => return,
        }
        // Cancelled meanwhile (-O cancel -R): stop asking.
        if !set.contains(&fwd) {
            return;
        }
        if let Ok(port) = request_remote_counted(&session, &fwd, r.stats.clone(), quiet).await {
            set.set_port(&fwd, Some(port));
            info!("-R {} is back", fwd.spec);
            return;
        }
    }
}

/// Asks for one -R and reports the port, with OpenSSH's wording for allocated ports
/// (scripts parse it).
pub async fn request_remote(
    session: &Session,
    fwd: &RemoteForward,
    quiet: bool,
) -> Result<u32, String> {
    request_remote_counted(session, fwd, Arc::default(), quiet).await
}

/// As [`request_remote`], counting the forward's connections in `stats`.
pub async fn request_remote_counted(
    session: &Session,
    fwd: &RemoteForward,
    stats: Arc<ForwardStats>,
    quiet: bool,
) -> Result<u32, String> {
    let port = session.request_remote_counted(fwd, stats).await?;
    let target = match &fwd.connect {
        Some(Endpoint::Tcp { host, port }) => format!("{host}:{port}"),
        Some(Endpoint::Unix(p)) => p.display().to_string(),
        None => "dynamic (SOCKS/HTTP proxy)".to_string(),
    };
    if matches!(fwd.listen, Listen::Tcp { port: 0, .. }) && !quiet {
        eprintln!("Allocated port {port} for remote forward to {target}");
    }
    info!(
        "forward ready: -R {} listening on the server at port {port}",
        fwd.spec
    );
    Ok(port)
}

/// Cancels -R listeners and says goodbye, bounded so a dead server cannot hold us.
pub async fn shutdown(session: &Session) {
    let bye = async {
        session.cancel_remotes().await;
        session.disconnect().await;
    };
    if tokio::time::timeout(Duration::from_secs(3), bye)
        .await
        .is_err()
    {
        warn!("the server did not acknowledge the shutdown in time");
    }
}
