//! One SSH connection: dial, handshake, verify the host key, authenticate, then open
//! channels for the forwards.

use super::auth::{self, AuthSettings};
use super::error::ClientError;
use super::handler::ClientHandler;
use super::host_key::HostKeyPolicy;
use crate::config::forward::Endpoint;
use crate::forward::{OpenError, Opener};
use russh::client::{self, Handle, Msg};
use russh::{ChannelStream, Disconnect, Preferred, cipher};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// The address to dial (HostName).
    pub host: String,
    pub port: u16,
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
}

/// Cipher order: AES-GCM costs a quarter of chacha20's CPU where the CPU has AES
/// instructions, and throughput is what a tunnel is for. Without them chacha20 is faster.
fn ciphers() -> &'static [cipher::Name] {
    const AES_FIRST: &[cipher::Name] = &[
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ];
    const CHACHA_FIRST: &[cipher::Name] = &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ];
    if has_aes_instructions() {
        AES_FIRST
    } else {
        CHACHA_FIRST
    }
}

fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

impl Session {
    /// Dials, verifies the host key and authenticates. Every failure is classified for the
    /// exit status and names what to do about it.
    pub async fn connect(s: &ConnectSettings) -> Result<Session, ClientError> {
        let destination = format!("{}@{}:{}", s.auth.user, s.host, s.port);
        let tcp = dial(s).await?;

        let preferred = Preferred {
            cipher: Cow::Borrowed(ciphers()),
            key: Cow::Owned(s.host_key.preferred_algorithms(&Preferred::DEFAULT.key)),
            ..Preferred::DEFAULT
        };
        let config = Arc::new(client::Config {
            preferred,
            nodelay: true,
            inactivity_timeout: None,
            ..Default::default()
        });
        let failure = Arc::new(Mutex::new(None));
        let (closed_tx, closed) = watch::channel(None);
        let handler = ClientHandler {
            policy: Arc::new(s.host_key.clone()),
            failure: failure.clone(),
            quiet: s.quiet,
            closed: closed_tx,
        };
        let handshake = client::connect_stream(config, tcp, handler);
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
        info!("authenticating as {}", s.auth.user);
        auth::authenticate(&mut handle, &s.auth, &destination).await?;
        info!("authenticated to {destination}");
        Ok(Session {
            handle,
            closed,
            destination,
        })
    }

    /// Resolves when the connection ends on its own, with the reason.
    pub async fn closed(&self) -> String {
        let mut rx = self.closed.clone();
        match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => "session ended".into(),
        }
    }

    /// Says goodbye to the server so it frees our forwards at once.
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "warren is stopping", "en")
            .await;
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

impl Opener for Session {
    type Stream = ChannelStream<Msg>;

    async fn open(
        &self,
        target: &Endpoint,
        originator: Option<SocketAddr>,
    ) -> Result<Self::Stream, OpenError> {
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
        match channel {
            Ok(c) => Ok(c.into_stream()),
            Err(russh::Error::ChannelOpenFailure(reason)) => {
                Err(OpenError::Refused(match reason {
                    russh::ChannelOpenFailure::ConnectFailed => {
                        "connect failed (the target refused or is unreachable from the server)"
                            .into()
                    }
                    russh::ChannelOpenFailure::AdministrativelyProhibited => {
                        "administratively prohibited (the server does not allow this destination)"
                            .into()
                    }
                    other => format!("{other:?}"),
                }))
            }
            Err(e) => Err(OpenError::Session(e.to_string())),
        }
    }
}
