//! Warren: SSH tunnels as one dependable tool.
//!
//! # Layout
//! - [`config`]: what the user asked for (forward specs, `-o` options), parsed and validated without I/O.
//! - [`client`]: the `warren` client: SSH session, authentication, host-key checks, forwards.
//! - [`memory`]: giving freed memory back to the kernel after a burst (long-running processes).
//! - [`forward`]: the data path shared by every forward mode (relay with half-close).
pub mod client;
pub mod config;
pub mod crypto;
pub mod forward;
pub mod logging;
pub mod memory;
pub mod proxy;
pub mod server;
pub mod systemd;
pub mod transport;
