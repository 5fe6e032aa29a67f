//! One SSH connection: dial, handshake, verify the host key, authenticate, then open
//! channels for the forwards.

use super::auth::{self, AuthSettings};
use super::error::ClientError;
use super::handler::{self, ExecEvent, ExecRoutes, Routes};
use super::host_key::HostKeyPolicy;
use crate::config::forward::{Endpoint, Listen, RemoteForward};
use crate::config::values::{AddressFamily, RekeyLimit};
use crate::forward::local::ForwardStats;
use crate::forward::remote::{SharedRemoteForwards, Target, request_address};
use crate::forward::{OpenError, Opener};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};
use warren_ssh::driver::{self, ChannelStream, Handle, Incoming, OpenFailure};
use warren_ssh::hostkey::ParsedKey;
use warren_ssh::proto::{
    ChannelId, ChannelKind, ChannelRequest, Config, GlobalRequest, Role, reason,
};

/// How the SSH byte stream reaches the server.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A TCP connection from here.
    Direct,
    /// A command whose stdin/stdout carry the connection (ProxyCommand; tokens expanded).
    ProxyCommand(String),
    /// Through each jump host in turn (ProxyJump / -J), each a full SSH session.
    Jump(Vec<ConnectSettings>),
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// The address to dial (HostName).
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub compression: bool,
    /// Ciphers in preference order (the `Ciphers` option applied to our defaults).
    pub ciphers: Vec<String>,
    /// Key exchanges and MACs, the options applied likewise.
    pub kex: Vec<String>,
    pub macs: Vec<String>,
    /// `HostKeyAlgorithms` when given (used as is, as ssh does); `None`: ours, the types
    /// known_hosts holds for this host first.
    pub host_key_algorithms: Option<Vec<String>>,
    /// ServerAliveInterval and ServerAliveCountMax; `None` disables keepalive.
    pub keepalive: Option<(Duration, usize)>,
    pub connect_timeout: Option<Duration>,
    /// AddressFamily: which of the server's addresses to try.
    pub address_family: AddressFamily,
    /// BindAddress, else BindInterface (as ssh: the address wins): the source address.
    pub bind_address: Option<String>,
    pub bind_interface: Option<String>,
    /// ConnectionAttempts: TCP connects tried, 1 s apart, before giving up (the
    /// supervisor sets it to 1 once the first session is up: reconnects have their own
    /// backoff).
    pub connection_attempts: u32,
    pub rekey: RekeyLimit,
    /// TCPKeepAlive (SO_KEEPALIVE; on by default, as in ssh).
    pub tcp_keepalive: bool,
    /// SO_MARK for the connection to the server (--route: the rules let it pass).
    pub fwmark: Option<u32>,
    /// IPQoS: the TOS / traffic class of the connection to the server (its bulk value).
    pub tos: Option<u32>,
    /// SendEnv's matching variables and SetEnv, sent before a remote command.
    pub env: Vec<(String, String)>,
    /// ForwardAgent: the local agent socket a remote command's session may reach.
    pub agent_forward: Option<std::path::PathBuf>,
    pub host_key: HostKeyPolicy,
    pub auth: AuthSettings,
    pub quiet: bool,
}

/// An authenticated SSH connection. Dropping it ends the connection (forwarded streams
/// still open end with it).
pub struct Session {
    handle: Handle,
    closed: watch::Receiver<Option<String>>,
    /// `user@host:port`, for messages.
    pub destination: String,
    /// The -R forwards granted on this connection.
    pub remote: SharedRemoteForwards,
    /// Where a remote command's exit status and stderr go.
    exec: ExecRoutes,
    /// Jump-host sessions this one runs through, outermost first; kept alive with it.
    via: Vec<Session>,
    /// The ProxyCommand process carrying this connection; killed with the session.
    _proxy: Option<tokio::process::Child>,
    /// The server sends small packets at once (no Nagle), see [`super::compat`].
    sends_at_once: bool,
    /// Agent forwarding is asked for on each remote command's session.
    forward_agent: bool,
    /// Environment for each remote command (SendEnv, SetEnv).
    env: Vec<(String, String)>,
}

impl Session {
    /// Reaches the server over the configured transport, verifies its host key and
    /// authenticates. Every failure is classified for the exit status and names what to do.
    pub async fn connect(s: &ConnectSettings) -> Result<Session, ClientError> {
        match &s.transport {
            Transport::Direct => {
                let tcp = dial(s, s.connect_timeout).await?;
                Session::connect_over(s, tcp).await
            }
            Transport::ProxyCommand(cmd) => {
                let (stream, child) =
                    super::proxy_command::spawn(cmd).map_err(|e| connect_error(s, e))?;
                Session::handshake(s, stream, Some(child)).await
            }
            Transport::Jump(hops) => {
                let mut via: Vec<Session> = Vec::new();
                for hop in hops {
                    let hop_session = match via.last() {
                        None => Box::pin(Session::connect(hop)).await?,
                        Some(prev) => {
                            let stream = prev.tunnel_to(hop).await?;
                            Session::handshake(hop, stream, None).await?
                        }
                    };
                    info!("connected to jump host {}", hop_session.destination);
                    via.push(hop_session);
                }
                let last = via
                    .last()
                    .ok_or_else(|| connect_error(s, "empty jump host list".into()))?;
                let stream = last.tunnel_to(s).await?;
                let mut session = Session::handshake(s, stream, None).await?;
                session.via = via;
                Ok(session)
            }
        }
    }

    /// The handshake over a TCP connection already made (by the reconnect probe, which
    /// keeps the connection that answered rather than dialling again).
    pub async fn connect_over(s: &ConnectSettings, tcp: TcpStream) -> Result<Session, ClientError> {
        Session::handshake(s, crate::transport::QuickAck::new(tcp), None).await
    }

    /// A direct-tcpip stream to the next hop, for stacking SSH sessions. The inner session
    /// reads it as fast as it handles its packets, so the hop's window paces the inner
    /// connection like a TCP socket would.
    async fn tunnel_to(&self, next: &ConnectSettings) -> Result<ChannelStream, ClientError> {
        let target = Endpoint::Tcp {
            host: next.host.clone(),
            port: next.port,
        };
        let open = self.open_channel(&target, None);
        let opened = match next.connect_timeout {
            Some(t) => tokio::time::timeout(t, open).await.map_err(|_| {
                connect_error(
                    next,
                    format!(
                        "jump host {} did not open a channel in time (ConnectTimeout)",
                        self.destination
                    ),
                )
            })?,
            None => open.await,
        };
        opened.map_err(|e| connect_error(next, format!("via jump host {}: {e}", self.destination)))
    }

    /// The SSH handshake and authentication over an established byte stream.
    async fn handshake<S>(
        s: &ConnectSettings,
        stream: S,
        proxy: Option<tokio::process::Child>,
    ) -> Result<Session, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let destination = format!("{}@{}:{}", s.auth.user, s.host, s.port);
        let (exec, finished) = ExecRoutes::new();
        let (handle, mut incoming, run) = driver::start(stream, Arc::new(engine_config(s)));
        let (closed_tx, closed) = watch::channel(None);
        tokio::spawn(async move {
            let why = match run.await {
                Ok(()) => "the connection was closed".to_string(),
                Err(e) => e,
            };
            let _ = closed_tx.send(Some(why));
        });
        let mut session = Session {
            handle,
            closed,
            destination,
            remote: SharedRemoteForwards::default(),
            exec,
            via: Vec::new(),
            _proxy: proxy,
            sends_at_once: false,
            forward_agent: s.agent_forward.is_some(),
            env: s.env.clone(),
        };

        let host_key = first_host_key(&mut incoming);
        let host_key = match s.connect_timeout {
            Some(t) => tokio::time::timeout(t, host_key).await.map_err(|_| {
                connect_error(
                    s,
                    format!("no SSH handshake within {}s (ConnectTimeout)", t.as_secs()),
                )
            })?,
            None => host_key.await,
        };
        let Some(host_key) = host_key else {
            let why = session.closed().await;
            return Err(connect_error(s, format!("SSH handshake failed: {why}")));
        };
        let policy = s.host_key.clone();
        let verdict = match host_key {
            ParsedKey::Plain(key) => tokio::task::spawn_blocking(move || policy.verify(&key))
                .await
                .unwrap_or_else(|e| {
                    Err(ClientError::HostKey(format!("host key check failed: {e}")))
                }),
            ParsedKey::Certificate(cert) => {
                tokio::task::spawn_blocking(move || policy.verify_certificate(&cert))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ClientError::HostKey(format!("host key check failed: {e}")))
                    })
            }
        };
        if let Err(e) = verdict {
            session.handle.disconnect("host key verification failed");
            return Err(e);
        }

        let server_id = session.handle.peer_version().unwrap_or_default();
        info!("remote software version {server_id}");
        session.sends_at_once = super::compat::sends_at_once(&server_id);
        let routes = Routes {
            quiet: s.quiet,
            remote: session.remote.clone(),
            exec: session.exec.clone(),
            agent: s.agent_forward.clone(),
        };
        tokio::spawn(handler::serve(
            session.handle.clone(),
            incoming,
            finished,
            routes,
        ));
        info!("authenticating as {}", s.auth.user);
        auth::authenticate(&session.handle, &s.auth, &session.destination).await?;
        info!("authenticated to {}", session.destination);
        Ok(session)
    }

    /// Asks the server to listen for -R. Returns the port it listens on (the allocated
    /// one for port 0) or, for unix sockets, 0.
    pub async fn request_remote(&self, fwd: &RemoteForward) -> Result<u32, String> {
        self.request_remote_counted(fwd, Arc::default()).await
    }

    /// As [`Session::request_remote`], counting its connections in `stats`.
    pub async fn request_remote_counted(
        &self,
        fwd: &RemoteForward,
        stats: Arc<ForwardStats>,
    ) -> Result<u32, String> {
        let target = match &fwd.connect {
            Some(e) => Target::Fixed(e.clone()),
            None => Target::Dynamic,
        };
        match &fwd.listen {
            Listen::Unix(path) => {
                let path = path.to_string_lossy().into_owned();
                let request = GlobalRequest::StreamlocalForward { path: path.clone() };
                match self.handle.global_request(request).await {
                    Ok((true, _)) => {}
                    Ok((false, _)) => {
                        return Err(format!(
                            "remote port forwarding failed for listen path {path}: {REFUSED}"
                        ));
                    }
                    Err(e) => {
                        return Err(format!(
                            "remote port forwarding failed for listen path {path}: {e}"
                        ));
                    }
                }
                self.remote.add_unix(&path, target, stats);
                Ok(0)
            }
            Listen::Tcp { port, .. } => {
                let (address, requested) = request_address(fwd).unwrap_or_default();
                let request = GlobalRequest::TcpipForward {
                    address: address.clone(),
                    port: requested,
                };
                let failed = |why: String| {
                    format!("remote port forwarding failed for listen port {port}: {why}")
                };
                let listening = match self.handle.global_request(request).await {
                    Ok((true, _)) if requested != 0 => requested,
                    // RFC 4254 §7.1: the reply to port 0 carries the port the server chose.
                    Ok((true, data)) => match <[u8; 4]>::try_from(&data[..]) {
                        Ok(b) if u32::from_be_bytes(b) != 0 => u32::from_be_bytes(b),
                        _ => {
                            return Err(failed(
                                "the server did not say which port it chose".into(),
                            ));
                        }
                    },
                    Ok((false, _)) => return Err(failed(REFUSED.into())),
                    Err(e) => return Err(failed(e.to_string())),
                };
                self.remote.add_tcp(&address, listening, target, stats);
                Ok(listening)
            }
        }
    }

    /// Tells the server to stop listening for our -R forwards, so the ports are free the
    /// moment we leave instead of whenever the server notices.
    pub async fn cancel_remotes(&self) {
        for (address, port) in self.remote.tcp_listeners() {
            let _ = self
                .handle
                .global_request(GlobalRequest::CancelTcpipForward { address, port })
                .await;
        }
        for path in self.remote.unix_listeners() {
            let _ = self
                .handle
                .global_request(GlobalRequest::CancelStreamlocalForward { path })
                .await;
        }
    }

    /// Stops one -R on the server (`-O cancel -R`); `port` is the one it listens on.
    pub async fn cancel_remote(&self, fwd: &RemoteForward, port: u32) -> Result<(), String> {
        let request = match &fwd.listen {
            Listen::Unix(path) => {
                let path = path.to_string_lossy().into_owned();
                self.remote.remove_unix(&path);
                GlobalRequest::CancelStreamlocalForward { path }
            }
            Listen::Tcp { .. } => {
                let (address, _) = request_address(fwd).unwrap_or_default();
                self.remote.remove_tcp(port);
                GlobalRequest::CancelTcpipForward { address, port }
            }
        };
        match self.handle.global_request(request).await {
            Ok((true, _)) => Ok(()),
            Ok((false, _)) => Err("the server refused to cancel the forward".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Opens a session channel and runs `command` on it (no TTY). The receiver gets the
    /// command's stderr and exit status; call [`Session::exec_finished`] once the channel
    /// is closed so it ends.
    pub async fn exec(
        &self,
        command: &str,
        subsystem: bool,
    ) -> Result<(ChannelStream, mpsc::UnboundedReceiver<ExecEvent>), ClientError> {
        let lost = |reason: String| ClientError::Lost {
            host: self.destination.clone(),
            reason,
        };
        let channel = self
            .handle
            .open(ChannelKind::Session)
            .await
            .map_err(|e| lost(format!("cannot open a session channel: {e}")))?;
        let events = self.exec.register(channel.id());
        for (name, value) in &self.env {
            // As ssh: no reply asked for; sshd's AcceptEnv decides, silently.
            let request = ChannelRequest::Env {
                name: name.clone(),
                value: value.as_bytes().to_vec(),
            };
            let _ = self
                .handle
                .channel_request(channel.id(), request, false)
                .await;
        }
        if self.forward_agent {
            // As ssh: no reply asked for; the server opens auth-agent channels if it agrees.
            let _ = self
                .handle
                .channel_request(channel.id(), ChannelRequest::AuthAgentReq, false)
                .await;
        }
        let request = match subsystem {
            true => ChannelRequest::Subsystem(command.to_string()),
            false => ChannelRequest::Exec(command.as_bytes().to_vec()),
        };
        match self
            .handle
            .channel_request(channel.id(), request, true)
            .await
        {
            Ok(true) => Ok((channel, events)),
            Ok(false) => {
                self.exec.finish(channel.id());
                Err(lost(format!("the server refused to run '{command}'")))
            }
            Err(e) => Err(lost(format!("cannot start the command: {e}"))),
        }
    }

    /// The command's channel is closed: its event receiver ends once the last events are in.
    pub fn exec_finished(&self, id: ChannelId) {
        self.exec.finish(id);
    }

    /// A rough count of the bytes this session holds for its peer and local clients (open
    /// channels and window growth), for [`crate::memory::trim_after_shrinking`].
    pub fn held_estimate(&self) -> u64 {
        /// Measured ~20 KiB per -D connection (the benchmark's many phase), most of it the
        /// relay and SOCKS state beside the engine's channel.
        const CHANNEL_BYTES: u64 = 16 << 10;
        self.handle.channel_count() as u64 * CHANNEL_BYTES + self.handle.window_budget().0
    }

    /// Resolves when the connection ends on its own, with the reason.
    pub async fn closed(&self) -> String {
        let mut rx = self.closed.clone();
        match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => "session ended".into(),
        }
    }

    /// Says goodbye to the server (and to each jump host, innermost first) so every
    /// forward is freed at once; returns when the DISCONNECT is on its way.
    pub async fn disconnect(&self) {
        self.handle.disconnect("warren is stopping");
        self.closed().await;
        for hop in self.via.iter().rev() {
            hop.handle.disconnect("warren is stopping");
            hop.closed().await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Nobody can open channels on it any more: end it rather than leave the driver
        // and the server's side running (a no-op after `disconnect`).
        self.handle
            .disconnect("warren is done with this connection");
    }
}

/// The engine's settings for one connection.
fn engine_config(s: &ConnectSettings) -> Config {
    let mut c = Config::new(Role::Client);
    c.host_key_algorithms = match &s.host_key_algorithms {
        Some(given) => given.clone(),
        None => s.host_key.preferred_algorithms(&c.host_key_algorithms),
    };
    c.kex = s.kex.clone();
    c.macs = s.macs.clone();
    c.ciphers = s.ciphers.clone();
    c.compression = s.compression;
    if let Some(bytes) = s.rekey.bytes {
        c.rekey_bytes = bytes;
    }
    c.rekey_time = s.rekey.time;
    // Channels the server opens to us are connections to our -R listeners on its side:
    // ssh takes as many as it has descriptors, so a busy -R (a web server shown through
    // the gateway) must not be refused at the engine's default of 1,024.
    c.max_channels = 1 << 20;
    if let Some((interval, count)) = s.keepalive {
        c.keepalive_interval = Some(interval);
        c.keepalive_max = u32::try_from(count).unwrap_or(u32::MAX);
    }
    c
}

/// The server's host key, the first event of a connection; `None` if it ended before.
async fn first_host_key(incoming: &mut warren_ssh::driver::Events) -> Option<ParsedKey> {
    while let Some(ev) = incoming.recv().await {
        match ev {
            Incoming::HostKey(k) => return Some(k),
            other => debug!("before the host key: {other:?}"),
        }
    }
    None
}

/// Why the server said no to a global request, in words (it does not say).
const REFUSED: &str = "the server refused (port in use, not permitted, or GatewayPorts)";

fn connect_error(s: &ConnectSettings, reason: String) -> ClientError {
    ClientError::Connect {
        host: s.host.clone(),
        port: s.port,
        reason,
    }
}

/// Resolves and connects, trying each address of the allowed family in turn like ssh,
/// with `timeout` (ConnectTimeout, or the reconnect probe's) per address and
/// ConnectionAttempts rounds 1 s apart.
pub async fn dial(
    s: &ConnectSettings,
    timeout: Option<Duration>,
) -> Result<TcpStream, ClientError> {
    let mut last = String::new();
    for attempt in 1..=s.connection_attempts {
        if attempt > 1 {
            info!(
                "connection attempt {} of {} to {}:{} failed: {last}; retrying in 1s",
                attempt - 1,
                s.connection_attempts,
                s.host,
                s.port
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match dial_once(s, timeout).await {
            Ok(tcp) => return Ok(tcp),
            // A name that does not resolve or a bad source address will not get better.
            Err(Dial::Final(e)) => return Err(e),
            Err(Dial::Retry(why)) => last = why,
        }
    }
    Err(connect_error(s, last))
}

/// Whether another ConnectionAttempts round could help (ssh retries only the connect).
enum Dial {
    Final(ClientError),
    Retry(String),
}

async fn dial_once(s: &ConnectSettings, timeout: Option<Duration>) -> Result<TcpStream, Dial> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((s.host.as_str(), s.port))
        .await
        .map_err(|e| {
            Dial::Final(ClientError::Resolve {
                host: s.host.clone(),
                reason: e.to_string(),
            })
        })?
        .collect();
    let addrs: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| s.address_family.allows(&a.ip()))
        .collect();
    if addrs.is_empty() && !resolved.is_empty() {
        return Err(Dial::Final(ClientError::Resolve {
            host: s.host.clone(),
            reason: format!(
                "no {} address (AddressFamily {})",
                match s.address_family {
                    AddressFamily::Inet6 => "IPv6",
                    _ => "IPv4",
                },
                s.address_family.name()
            ),
        }));
    }
    let mut last = String::from("no addresses");
    for addr in addrs {
        debug!("connecting to {addr}");
        let socket = match source_socket(s, &addr) {
            Ok(sock) => sock,
            Err(why) => return Err(Dial::Final(connect_error(s, why))),
        };
        let attempt = socket.connect(addr);
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, attempt).await {
                Ok(r) => r,
                Err(_) => {
                    last = format!(
                        "Connection timed out after {:.1}s (ConnectTimeout)",
                        t.as_secs_f64()
                    );
                    continue;
                }
            },
            None => attempt.await,
        };
        match result {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = os_error_text(&e),
        }
    }
    Err(Dial::Retry(last))
}

/// A socket for `to`, bound to BindAddress or BindInterface's address when given. Like
/// ssh, BindInterface binds that interface's address (SO_BINDTODEVICE needs privileges).
fn source_socket(s: &ConnectSettings, to: &SocketAddr) -> Result<tokio::net::TcpSocket, String> {
    let socket = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("cannot create a socket: {e}"))?;
    let sock = socket2::SockRef::from(&socket);
    if let Some(mark) = s.fwmark
        && let Err(e) = sock.set_mark(mark)
    {
        return Err(format!(
            "--route: cannot mark the connection to the server: {e}"
        ));
    }
    if let Err(e) = sock.set_keepalive(s.tcp_keepalive) {
        debug!("TCPKeepAlive: {e}");
    }
    if let Some(tos) = s.tos {
        let set = match to {
            SocketAddr::V4(_) => sock.set_tos_v4(tos),
            SocketAddr::V6(_) => sock.set_tclass_v6(tos),
        };
        if let Err(e) = set {
            debug!("IPQoS: cannot set {tos:#x}: {e}");
        }
    }
    let source = match (&s.bind_address, &s.bind_interface) {
        (Some(a), _) => {
            Some(super::source::address(a, to).map_err(|e| format!("BindAddress {a}: {e}"))?)
        }
        (None, Some(i)) => Some(
            super::source::interface_address(i, to)
                .map_err(|e| format!("BindInterface {i}: {e}"))?,
        ),
        (None, None) => None,
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("cannot bind to {ip}: {}", os_error_text(&e)))?;
        debug!("connecting from {ip}");
    }
    Ok(socket)
}

/// "Connection refused" rather than "Connection refused (os error 111)", as ssh prints.
fn os_error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

impl Session {
    /// Opens a channel to `target` (direct-tcpip or direct-streamlocal); `originator` is
    /// the local peer, reported to the server as OpenSSH does.
    pub async fn open_channel(
        &self,
        target: &Endpoint,
        originator: Option<SocketAddr>,
    ) -> Result<ChannelStream, OpenError> {
        let (originator, originator_port) = originator
            .map(|a| (a.ip().to_string(), a.port() as u32))
            .unwrap_or_else(|| ("127.0.0.1".into(), 0));
        let kind = match target {
            Endpoint::Tcp { host, port } => ChannelKind::DirectTcpip {
                host: host.clone(),
                port: *port as u32,
                originator,
                originator_port,
            },
            Endpoint::Unix(path) => ChannelKind::DirectStreamlocal {
                path: path.to_string_lossy().into_owned(),
            },
        };
        self.handle.open(kind).await.map_err(|e| {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<OpenFailure>())
            {
                Some(f) => OpenError::Refused(refusal_text(f)),
                None => OpenError::Session(e.to_string()),
            }
        })
    }
}

impl Session {
    /// Opens a `tun@openssh.com` channel (-w): `mode` and the server's device `unit`.
    pub async fn open_tun(&self, mode: u32, unit: u32) -> Result<ChannelStream, OpenError> {
        self.handle
            .open(ChannelKind::Tun { mode, unit })
            .await
            .map_err(|e| {
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<OpenFailure>())
                {
                    // sshd answers "administratively prohibited" for PermitTunnel no, and
                    // "connect failed" when it cannot open the device (no root, unit busy).
                    Some(f) => OpenError::Refused(match f.reason {
                        // The server's own words, when it gave some (warrend does).
                        _ if !f.description.is_empty() && f.description != "open failed" => {
                            f.description.clone()
                        }
                        reason::ADMINISTRATIVELY_PROHIBITED => {
                            "administratively prohibited (the server's PermitTunnel does not allow it)"
                                .into()
                        }
                        reason::CONNECT_FAILED => "the server could not open its tunnel device (sshd needs root and a free unit)".into(),
                        _ => refusal_text(f),
                    }),
                    None => OpenError::Session(e.to_string()),
                }
            })
    }
}

/// The server's reason for refusing a channel, worded for the log (and classified by
/// the proxy front ends from these words).
fn refusal_text(f: &OpenFailure) -> String {
    match f.reason {
        reason::CONNECT_FAILED => {
            "connect failed (the target refused or is unreachable from the server)".into()
        }
        reason::ADMINISTRATIVELY_PROHIBITED => {
            "administratively prohibited (the server does not allow this destination)".into()
        }
        reason::RESOURCE_SHORTAGE => "resource shortage (the server has too many channels)".into(),
        _ if f.description.is_empty() => format!("refused with reason {}", f.reason),
        _ => format!("{} (reason {})", f.description, f.reason),
    }
}

impl Opener for Session {
    type Stream = ChannelStream;

    /// The channel itself: it is read only as fast as the local side takes the data, so
    /// one slow local reader holds back exactly its own sender, with no buffer here.
    async fn open(
        &self,
        target: &Endpoint,
        originator: Option<SocketAddr>,
    ) -> Result<Self::Stream, OpenError> {
        self.open_channel(target, originator).await
    }

    fn still_open(stream: &Self::Stream) -> bool {
        stream.is_open()
    }

    fn server_sends_at_once(&self) -> bool {
        self.sends_at_once
    }
}
