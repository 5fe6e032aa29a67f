//! `warrend`: a tunnel-only SSH server.
pub mod authorized_keys;
pub mod config;
pub mod policy;
