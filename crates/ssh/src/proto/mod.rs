//! The sans-IO core: no sockets, no tasks, no clock of its own (callers pass `Instant`s).

mod auth;
pub mod config;
pub mod connection;
pub mod event;
pub mod session;
mod transport;

pub use auth::publickey_signed_data;
pub use config::{Config, Role};
pub use connection::{Datagram, reason};
pub use event::{
    AuthMethod, AuthReply, ChannelId, ChannelKind, ChannelRequest, Event, GlobalRequest, Read,
    RequestId, TUN_MODE_ETHERNET, TUN_MODE_POINTOPOINT, TUN_UNIT_ANY,
};
pub use session::Session;

#[cfg(test)]
pub(crate) mod tests;
