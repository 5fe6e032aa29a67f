//! Cluster mode: several warrend nodes serving one rendezvous namespace.
pub mod link;
