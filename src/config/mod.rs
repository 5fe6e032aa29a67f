//! What the user asked for, parsed and validated without I/O.
pub mod forward;
pub mod options;
pub mod pattern;
pub mod ssh_config;
pub mod values;
