//! Client failures, each mapped to an exit status a script can branch on.

use std::process::ExitCode;

/// Why the client stopped. The message is what the user reads; the variant picks the
/// exit status (documented in `warren --help`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad flags, a malformed forward spec or a bad `-o` option: nothing was attempted.
    #[error("{0}")]
    Usage(String),
    /// The host name did not resolve.
    #[error("could not resolve hostname {host}: {reason}")]
    Resolve { host: String, reason: String },
    /// TCP connect failed or timed out, or the SSH handshake broke off.
    #[error("connect to host {host} port {port}: {reason}")]
    Connect {
        host: String,
        port: u16,
        reason: String,
    },
    /// The server's host key could not be trusted.
    #[error("{0}\nHost key verification failed.")]
    HostKey(String),
    /// Every authentication method was refused.
    #[error("{0}")]
    Auth(String),
    /// A forward could not be set up (for example a local port already in use).
    #[error("{0}")]
    Forward(String),
    /// The established connection ended without being asked to.
    #[error("connection to {host} lost: {reason}")]
    Lost { host: String, reason: String },
    /// Anything else (I/O on local files, internal failures).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl ClientError {
    /// 255 for connection and authentication failures keeps scripts written for `ssh`
    /// working; the other classes get their own status so a script can tell a typo, a
    /// busy port and a possible man-in-the-middle apart.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            ClientError::Usage(_) => 2,
            ClientError::Forward(_) => 3,
            ClientError::HostKey(_) => 4,
            ClientError::Resolve { .. }
            | ClientError::Connect { .. }
            | ClientError::Auth(_)
            | ClientError::Lost { .. } => 255,
            ClientError::Other(_) => 1,
        })
    }
}
