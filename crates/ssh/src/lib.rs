//! Warren's SSH engine.
//!
//! The protocol lives in a sans-IO core: [`proto`] takes the bytes the peer sent
//! and the current time, and yields bytes to send and events for the application.
//! It never touches a socket, a timer or a task, so flow control, rekeying and
//! close races are tested deterministically by feeding it bytes. [`driver`] is the
//! thin tokio layer that moves bytes between a socket and the core.
//!
//! Why our own engine: channel windows must be granted back only as the local reader
//! consumes data (OpenSSH's rule), so a slow reader slows its own sender and nothing
//! is parked on disk; russh grants window on receipt and cannot be changed from
//! outside. See docs/design/ssh-engine.md.

pub mod channel;
pub mod cipher;
pub mod compress;
pub mod driver;
pub mod error;
pub mod hostkey;
pub mod kex;
pub mod msg;
pub mod openssh_key;
pub mod proto;
mod sparse;
pub mod wire;

pub use error::{Error, Result};
/// Keys and certificates in the types the engine takes and gives.
pub use ssh_key;
