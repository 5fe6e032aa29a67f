//! Cluster mode (issue 18): several warrend nodes share one rendezvous namespace.
#[cfg(feature = "cluster")]
pub mod etcd;
pub mod names;
