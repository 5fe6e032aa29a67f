//! `warrend`: a tunnel-only SSH server.
pub mod address;
pub mod authorized_keys;
pub mod certificate;
pub mod config;
pub mod gateway;
pub mod key_options;
pub mod limits;
pub mod policy;
pub mod rules;
