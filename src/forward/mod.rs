//! The data path shared by every forward mode: a front end yields a local stream and a
//! destination, an [`Opener`] turns the destination into a tunnel stream, and
//! [`relay::relay`] moves the bytes.

pub mod bind;
pub mod budget;
pub mod dynamic;
pub mod local;
pub mod relay;
pub mod remote;
pub mod spare;
pub mod stdio;

use crate::config::forward::Endpoint;
use std::future::Future;
use std::net::SocketAddr;
use tokio::io::AsyncWrite;

/// Opens a stream to `target` through the tunnel. The client implements it on its SSH
/// session; keeping it a trait lets front ends (listeners, SOCKS, stdio) stay ignorant of
/// the SSH engine and lets a reconnecting session swap underneath them.
pub trait Opener: Send + Sync + 'static {
    /// The tunnel side of one forwarded connection, read as chunks where it can ([`relay::ChunkRead`]): a channel hands its packets
    /// to the local socket's `writev` without a copy of ours.
    type Stream: relay::ChunkRead + AsyncWrite + Send + 'static;

    /// `originator` is the local peer, reported to the server as OpenSSH does.
    fn open(
        &self,
        target: &Endpoint,
        originator: Option<SocketAddr>,
    ) -> impl Future<Output = Result<Self::Stream, OpenError>> + Send;

    /// Whether a stream opened earlier and not used yet can still carry a connection (a
    /// [`spare`] checks before handing one out). Streams that cannot tell say yes.
    fn still_open(_stream: &Self::Stream) -> bool {
        true
    }

    /// Whether the server sends each small packet at once (no Nagle), so that a channel
    /// opened while another connection waits for its reply cannot hold that reply back
    /// (see [`spare`]). Unknown servers are assumed not to.
    fn server_sends_at_once(&self) -> bool {
        false
    }
}

/// Why one forwarded connection could not be opened; the rest keep working.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The server said no (connect failed, administratively prohibited, ...).
    #[error("the server refused: {0}")]
    Refused(String),
    /// The session is gone or broke while opening.
    #[error("the SSH session is not usable: {0}")]
    Session(String),
    /// No answer in time (a black-holed target makes sshd wait for its own connect timeout).
    #[error("no answer from the server within {0:?}")]
    Timeout(std::time::Duration),
}
