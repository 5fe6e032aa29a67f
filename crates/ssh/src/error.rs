//! Errors of the engine. Every error a peer can provoke is a value, never a panic:
//! the core turns it into SSH_MSG_DISCONNECT with a reason the peer can log.

/// A protocol-level failure; `disconnect_reason` is the RFC 4253 §11.1 code sent to the peer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer's bytes do not parse (truncated field, bad length, bad UTF-8...).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A packet failed its MAC/AEAD check.
    #[error("message authentication failed")]
    Mac,
    /// No algorithm in common for the named slot.
    #[error("no common {what} algorithm (ours: {ours}; theirs: {theirs})")]
    NoCommonAlgorithm {
        what: &'static str,
        ours: String,
        theirs: String,
    },
    /// The peer broke the protocol (unexpected message, window overrun, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server's host key signature over the exchange hash is invalid.
    #[error("host key signature invalid")]
    HostKeySignature,
    /// A key or signature could not be used.
    #[error("key error: {0}")]
    Key(String),
    /// The peer sent SSH_MSG_DISCONNECT.
    #[error("peer disconnected (reason {reason}): {description}")]
    PeerDisconnected { reason: u32, description: String },
    /// Compression stream failed.
    #[error("compression error: {0}")]
    Compression(String),
}

impl Error {
    /// RFC 4253 §11.1 reason code for SSH_MSG_DISCONNECT.
    pub fn disconnect_reason(&self) -> u32 {
        match self {
            Error::Mac => 5,                               // MAC_ERROR
            Error::NoCommonAlgorithm { .. } => 3,          // KEY_EXCHANGE_FAILED
            Error::HostKeySignature => 3,                  // KEY_EXCHANGE_FAILED
            Error::Compression(_) => 6,                    // COMPRESSION_ERROR
            Error::Malformed(_) | Error::Protocol(_) => 2, // PROTOCOL_ERROR
            Error::Key(_) => 3,
            Error::PeerDisconnected { reason, .. } => *reason,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
