//! `-w`: a local tun (or tap) device joined to one on the server through a
//! tun@openssh.com channel, as `ssh -w` does. Addresses and routes stay the user's.
//!
//! Unlike ssh, the local device outlives a lost connection: the supervisor reconnects and
//! the tunnel is opened again on the new session, so the interface, its addresses and the
//! routes through it stay in place (ssh -w destroys the device with the session).

mod device;
pub mod frame;

use super::session::Session;
use super::supervisor::SessionSlot;
use crate::config::values::{TunnelDevice, TunnelMode};
pub use device::Device;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_ssh::driver::ChannelStream;
use warren_ssh::proto::{TUN_MODE_ETHERNET, TUN_MODE_POINTOPOINT};

/// What -w / Tunnel / TunnelDevice resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSettings {
    /// PointToPoint or Ethernet (never No).
    pub mode: TunnelMode,
    pub device: TunnelDevice,
}

impl TunnelSettings {
    fn wire_mode(&self) -> u32 {
        match self.mode {
            TunnelMode::Ethernet => TUN_MODE_ETHERNET,
            _ => TUN_MODE_POINTOPOINT,
        }
    }

    fn ethernet(&self) -> bool {
        self.mode == TunnelMode::Ethernet
    }
}

/// Opens the tunnel channel on `session`.
pub async fn open(session: &Session, t: &TunnelSettings) -> Result<ChannelStream, String> {
    let ch = session
        .open_tun(t.wire_mode(), t.device.remote.wire())
        .await
        .map_err(|e| format!("tunnel device forwarding failed: {e}"))?;
    info!(
        "tunnel: open to the server's {} device {} ({})",
        if t.ethernet() { "tap" } else { "tun" },
        t.device.remote.name(),
        t.mode.name()
    );
    Ok(ch)
}

/// Both directions at once, one packet per message. A packet the other side cannot take
/// (over its maximum packet size, or malformed) is dropped, as a router would; only the
/// end of the channel or an error of the device ends the relay.
pub async fn relay(dev: &Device, ch: &ChannelStream, ethernet: bool) -> String {
    let up = async {
        let mut buf = vec![0u8; device::MAX_FRAME];
        loop {
            let n = match dev.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) => return format!("reading {}: {e}", dev.name()),
            };
            let message = if ethernet {
                buf[..n].to_vec()
            } else {
                match frame::to_wire(&buf[..n]) {
                    Some(m) => m,
                    None => continue,
                }
            };
            match ch.send_datagram(&message).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::debug!("tunnel: packet dropped: {e}")
                }
                Err(e) => return format!("the tunnel channel ended: {e}"),
            }
        }
    };
    let down = async {
        loop {
            let message = match ch.recv_datagram().await {
                Ok(Some(m)) => m,
                Ok(None) => return "the server closed the tunnel".to_string(),
                Err(e) => return format!("the tunnel channel ended: {e}"),
            };
            let packet = if ethernet {
                &message[..]
            } else {
                match frame::from_wire(&message) {
                    Some(p) => p,
                    None => continue,
                }
            };
            if let Err(e) = dev.send(packet).await {
                // A full device queue or a packet the kernel rejects loses that packet
                // only; IP above us retransmits.
                tracing::debug!("tunnel: writing {}: {e}", dev.name());
            }
        }
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// Opens the tunnel on every session the supervisor establishes, for as long as warren
/// runs; the local device stays across reconnects. The first attempt's outcome goes to
/// `first` (ExitOnForwardFailure and readiness wait on it).
pub async fn serve(
    dev: Arc<Device>,
    slot: Arc<SessionSlot>,
    t: TunnelSettings,
    mut first: Option<oneshot::Sender<Result<(), String>>>,
    cancel: CancellationToken,
) {
    let mut sessions = slot.subscribe();
    loop {
        let session = tokio::select! {
            _ = cancel.cancelled() => return,
            s = sessions.wait_for(|s| s.is_some()) => match s {
                Ok(s) => s.clone().expect("waited for Some"),
                Err(_) => return,
            },
        };
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = open(&session, &t) => r,
        };
        if let Some(tx) = first.take() {
            let _ = tx.send(opened.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        match opened {
            Ok(ch) => {
                info!("tunnel: {} carries packets", dev.name());
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    why = relay(&dev, &ch, t.ethernet()) => info!("tunnel: {why}; it reopens with the next session"),
                }
            }
            Err(e) => warn!("{e}"),
        }
        // Once per session: wait for this one to be replaced (or lost) before retrying.
        let same = |s: &Option<Arc<Session>>| s.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session));
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = sessions.wait_for(|s| !same(s)) => if r.is_err() { return },
        }
    }
}
