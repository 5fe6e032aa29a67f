//! The sans-IO core: no sockets, no tasks, no clock of its own (callers pass `Instant`s).

mod auth;
pub mod config;
pub mod connection;
pub mod event;
pub mod session;
mod transport;

pub use auth::publickey_signed_data;
pub use config::{Config, Role};
pub use connection::reason;
pub use event::{
    AuthMethod, AuthReply, ChannelId, ChannelKind, ChannelRequest, Event, GlobalRequest, Read,
    RequestId,
};
pub use session::Session;

#[cfg(test)]
pub(crate) mod tests;
