//! russh's client callbacks: host-key verification and what the server may open to us.
//!
//! Callbacks run inside russh's session loop, so nothing here may wait on the session
//! (opening channels, writing to channels): that would deadlock the loop. Host-key
//! verification is the exception that proves the rule: it runs during key exchange,
//! before any channel exists, and may block on a prompt.

use super::error::ClientError;
use super::host_key::HostKeyPolicy;
use crate::forward::remote::{SharedRemoteForwards, spawn_forwarded};
use russh::client::{self, Session};
use russh::keys::PublicKeyOrCertificate;
use std::sync::{Arc, Mutex};
use tracing::warn;

/// Per-connection handler. `failure` carries the host-key verdict out of the callback,
/// because russh only reports "rejected" and the user deserves to know why.
pub struct ClientHandler {
    pub policy: Arc<HostKeyPolicy>,
    pub failure: Arc<Mutex<Option<ClientError>>>,
    pub quiet: bool,
    /// Set once with the reason when the connection ends, so the owner can tell a lost
    /// connection from its own shutdown without polling.
    pub closed: tokio::sync::watch::Sender<Option<String>>,
    /// The -R forwards the server granted, to route its forwarded connections.
    pub remote: SharedRemoteForwards,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                let policy = self.policy.clone();
                let key = key.clone();
                tokio::task::spawn_blocking(move || policy.verify(&key))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ClientError::HostKey(format!("host key check failed: {e}")))
                    })
            }
            // We never advertise certificate host-key algorithms, so a server sending one
            // is misbehaving; refusing is the only safe answer.
            PublicKeyOrCertificate::Certificate(_) => Err(ClientError::HostKey(
                "the server presented a host certificate, which warren does not verify yet".into(),
            )),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut slot) = self.failure.lock() {
                    *slot = Some(e);
                }
                Ok(false)
            }
        }
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let text = match &reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                format!("the server disconnected: {}", info.message)
            }
            client::DisconnectReason::Error(e) => e.to_string(),
        };
        let _ = self.closed.send(Some(text));
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => Err(e),
        }
    }

    async fn auth_banner(
        &mut self,
        banner: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.quiet {
            eprint!("{banner}");
        }
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let origin = format!("{originator_address}:{originator_port}");
        match self.remote.lookup_tcp(connected_address, connected_port) {
            Some(target) => spawn_forwarded(channel, target, reply, origin),
            None => {
                warn!(
                    "refusing forwarded connection for {connected_address}:{connected_port} from \
                     {origin}: no such remote forward was requested"
                );
                refuse(reply).await;
            }
        }
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: russh::Channel<client::Msg>,
        socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.remote.lookup_unix(socket_path) {
            Some(target) => spawn_forwarded(channel, target, reply, socket_path.to_string()),
            None => {
                warn!("refusing forwarded connection for {socket_path}: no such remote forward");
                refuse(reply).await;
            }
        }
        Ok(())
    }

    /// A server may try to open session, X11 or agent channels to us; a tunnel client
    /// never asked for them.
    async fn server_channel_open_session(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }
}

/// Declines a channel the server should not have opened (or that we no longer expect).
async fn refuse(reply: client::ChannelOpenHandle) {
    reply
        .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
        .await;
}
