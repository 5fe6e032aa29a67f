//! One SSH connection: dial, handshake, verify the host key, authenticate, then open
//! channels for the forwards.

use super::auth::{self, AuthSettings};
use super::error::ClientError;
use super::handler::ClientHandler;
use super::host_key::HostKeyPolicy;
use crate::config::forward::{Endpoint, Listen, RemoteForward};
use crate::forward::decouple::{Decoupled, decouple};
use crate::forward::remote::{SharedRemoteForwards, Target, request_address};
use crate::forward::{OpenError, Opener};
use russh::client::{self, Handle, Msg};
use russh::{Disconnect, Preferred};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info};

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
    /// ServerAliveInterval and ServerAliveCountMax; `None` disables keepalive.
    pub keepalive: Option<(Duration, usize)>,
    pub connect_timeout: Option<Duration>,
    pub host_key: HostKeyPolicy,
    pub auth: AuthSettings,
    pub quiet: bool,
}

/// An authenticated SSH connection.
pub struct Session {
    handle: Handle<ClientHandler>,
    closed: watch::Receiver<Option<String>>,
    /// `user@host:port`, for messages.
    pub destination: String,
    /// The -R forwards granted on this connection.
    pub remote: SharedRemoteForwards,
    /// Jump-host sessions this one runs through, outermost first; kept alive with it.
    via: Vec<Session>,
    /// The ProxyCommand process carrying this connection; killed with the session.
    _proxy: Option<tokio::process::Child>,
    /// The server sends small packets at once (no Nagle), see [`super::compat`].
    sends_at_once: bool,
}

impl Session {
    /// Reaches the server over the configured transport, verifies its host key and
    /// authenticates. Every failure is classified for the exit status and names what to do.
    pub async fn connect(s: &ConnectSettings) -> Result<Session, ClientError> {
        match &s.transport {
            Transport::Direct => {
                let tcp = dial(s).await?;
                Session::handshake(s, crate::transport::buffered_tcp(tcp), None).await
            }
            Transport::ProxyCommand(cmd) => {
                let (stream, child) =
                    super::proxy_command::spawn(cmd).map_err(|e| connect_error(s, e))?;
                Session::handshake(s, crate::transport::buffered(stream), Some(child)).await
            }
            Transport::Jump(hops) => {
                let mut via: Vec<Session> = Vec::new();
                for hop in hops {
                    let hop_session = match via.last() {
                        None => Box::pin(Session::connect(hop)).await?,
                        Some(prev) => {
                            let stream = prev.tunnel_to(hop).await?;
                            Session::handshake(hop, crate::transport::buffered(stream), None)
                                .await?
                        }
                    };
                    info!("connected to jump host {}", hop_session.destination);
                    via.push(hop_session);
                }
                let last = via
                    .last()
                    .ok_or_else(|| connect_error(s, "empty jump host list".into()))?;
                let stream = last.tunnel_to(s).await?;
                let mut session =
                    Session::handshake(s, crate::transport::buffered(stream), None).await?;
                session.via = via;
                Ok(session)
            }
        }
    }

    /// A direct-tcpip stream to the next hop, for stacking SSH sessions.
    async fn tunnel_to(&self, next: &ConnectSettings) -> Result<Decoupled<Msg>, ClientError> {
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
        opened
            .map(decouple)
            .map_err(|e| connect_error(next, format!("via jump host {}: {e}", self.destination)))
    }

    /// The SSH handshake and authentication over an established byte stream (already
    /// wrapped by [`crate::transport`]).
    async fn handshake<S>(
        s: &ConnectSettings,
        stream: crate::transport::Transport<S>,
        proxy: Option<tokio::process::Child>,
    ) -> Result<Session, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer_id = stream.peer_id();
        let destination = format!("{}@{}:{}", s.auth.user, s.host, s.port);
        let mut preferred = Preferred {
            cipher: Cow::Borrowed(crate::crypto::ciphers()),
            key: Cow::Owned(s.host_key.preferred_algorithms(&Preferred::DEFAULT.key)),
            ..Preferred::DEFAULT
        };
        if s.compression {
            preferred.compression = Cow::Borrowed(&[
                russh::compression::ZLIB_LEGACY,
                russh::compression::ZLIB,
                russh::compression::NONE,
            ]);
        } else {
            preferred.compression = Cow::Borrowed(&[russh::compression::NONE]);
        }
        let config = Arc::new(client::Config {
            preferred,
            nodelay: true,
            inactivity_timeout: None,
            keepalive_interval: s.keepalive.map(|k| k.0),
            keepalive_max: s.keepalive.map(|k| k.1).unwrap_or(3),
            ..Default::default()
        });
        let failure = Arc::new(Mutex::new(None));
        let (closed_tx, closed) = watch::channel(None);
        let remote = SharedRemoteForwards::default();
        let handler = ClientHandler {
            policy: Arc::new(s.host_key.clone()),
            failure: failure.clone(),
            quiet: s.quiet,
            closed: closed_tx,
            remote: remote.clone(),
        };
        let handshake = client::connect_stream(config, stream, handler);
        let result = match s.connect_timeout {
            Some(t) => tokio::time::timeout(t, handshake).await.map_err(|_| {
                connect_error(
                    s,
                    format!("no SSH handshake within {}s (ConnectTimeout)", t.as_secs()),
                )
            })?,
            None => handshake.await,
        };
        let mut handle = match result {
            Ok(h) => h,
            Err(e) => {
                if let Some(hk) = failure.lock().ok().and_then(|mut f| f.take()) {
                    return Err(hk);
                }
                return Err(connect_error(s, format!("SSH handshake failed: {e}")));
            }
        };
        let server_id = peer_id.get().unwrap_or_default();
        info!("remote software version {server_id}");
        let sends_at_once = super::compat::sends_at_once(server_id);
        info!("authenticating as {}", s.auth.user);
        auth::authenticate(&mut handle, &s.auth, &destination).await?;
        info!("authenticated to {destination}");
        Ok(Session {
            handle,
            closed,
            destination,
            remote,
            via: Vec::new(),
            _proxy: proxy,
            sends_at_once,
        })
    }

    /// Asks the server to listen for -R. Returns the port it listens on (the allocated
    /// one for port 0) or, for unix sockets, 0.
    pub async fn request_remote(&self, fwd: &RemoteForward) -> Result<u32, String> {
        let target = match &fwd.connect {
            Some(e) => Target::Fixed(e.clone()),
            None => Target::Dynamic,
        };
        match &fwd.listen {
            Listen::Unix(path) => {
                let path = path.to_string_lossy().into_owned();
                self.handle
                    .streamlocal_forward(path.clone())
                    .await
                    .map_err(|e| {
                        format!("remote port forwarding failed for listen path {path}: {e}")
                    })?;
                self.remote.add_unix(&path, target);
                Ok(0)
            }
            Listen::Tcp { port, .. } => {
                let (address, requested) = request_address(fwd).unwrap_or_default();
                let granted = self
                    .handle
                    .tcpip_forward(address.clone(), requested)
                    .await
                    .map_err(|e| {
                        format!(
                            "remote port forwarding failed for listen port {port}: {}",
                            refusal(&e)
                        )
                    })?;
                let listening = if requested == 0 { granted } else { requested };
                self.remote.add_tcp(&address, listening, target);
                Ok(listening)
            }
        }
    }

    /// Tells the server to stop listening for our -R forwards, so the ports are free the
    /// moment we leave instead of whenever the server notices.
    pub async fn cancel_remotes(&self) {
        for (address, port) in self.remote.tcp_listeners() {
            let _ = self.handle.cancel_tcpip_forward(address, port).await;
        }
        for path in self.remote.unix_listeners() {
            let _ = self.handle.cancel_streamlocal_forward(path).await;
        }
    }

    /// Opens a session channel and runs `command` on it (no TTY).
    pub async fn exec(&self, command: &str) -> Result<russh::Channel<Msg>, ClientError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| ClientError::Lost {
                host: self.destination.clone(),
                reason: format!("cannot open a session channel: {e}"),
            })?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| ClientError::Lost {
                host: self.destination.clone(),
                reason: format!("cannot start the command: {e}"),
            })?;
        Ok(channel)
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
    /// forward is freed at once.
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "warren is stopping", "en")
            .await;
        for hop in self.via.iter().rev() {
            let _ = hop
                .handle
                .disconnect(Disconnect::ByApplication, "warren is stopping", "en")
                .await;
        }
    }
}

/// Why the server said no to a global request, in words.
fn refusal(e: &russh::Error) -> String {
    match e {
        russh::Error::RequestDenied => {
            "the server refused (port in use, not permitted, or GatewayPorts)".into()
        }
        other => other.to_string(),
    }
}

fn connect_error(s: &ConnectSettings, reason: String) -> ClientError {
    ClientError::Connect {
        host: s.host.clone(),
        port: s.port,
        reason,
    }
}

/// Resolves and connects, trying each address in turn like ssh, with ConnectTimeout per
/// attempt.
async fn dial(s: &ConnectSettings) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((s.host.as_str(), s.port))
        .await
        .map_err(|e| ClientError::Resolve {
            host: s.host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last = String::from("no addresses");
    for addr in addrs {
        debug!("connecting to {addr}");
        let attempt = TcpStream::connect(addr);
        let result = match s.connect_timeout {
            Some(t) => match tokio::time::timeout(t, attempt).await {
                Ok(r) => r,
                Err(_) => {
                    last = format!("Connection timed out (ConnectTimeout {}s)", t.as_secs());
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
    Err(connect_error(s, last))
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
    ) -> Result<russh::Channel<Msg>, OpenError> {
        let (oaddr, oport) = originator
            .map(|a| (a.ip().to_string(), a.port() as u32))
            .unwrap_or_else(|| ("127.0.0.1".into(), 0));
        let channel = match target {
            Endpoint::Tcp { host, port } => {
                self.handle
                    .channel_open_direct_tcpip(host.clone(), *port as u32, oaddr, oport)
                    .await
            }
            Endpoint::Unix(path) => {
                self.handle
                    .channel_open_direct_streamlocal(path.to_string_lossy().into_owned())
                    .await
            }
        };
        channel.map_err(|e| match e {
            russh::Error::ChannelOpenFailure(reason) => OpenError::Refused(match reason {
                russh::ChannelOpenFailure::ConnectFailed => {
                    "connect failed (the target refused or is unreachable from the server)".into()
                }
                russh::ChannelOpenFailure::AdministrativelyProhibited => {
                    "administratively prohibited (the server does not allow this destination)"
                        .into()
                }
                other => format!("{other:?}"),
            }),
            e => OpenError::Session(e.to_string()),
        })
    }
}

impl Opener for Session {
    type Stream = Decoupled<Msg>;

    /// Each forwarded connection reads through its own spill buffer, so one slow local
    /// reader cannot stall the session (see `forward::decouple`).
    async fn open(
        &self,
        target: &Endpoint,
        originator: Option<SocketAddr>,
    ) -> Result<Self::Stream, OpenError> {
        self.open_channel(target, originator).await.map(decouple)
    }

    fn still_open(stream: &Self::Stream) -> bool {
        stream.is_open()
    }

    fn server_sends_at_once(&self) -> bool {
        self.sends_at_once
    }
}
