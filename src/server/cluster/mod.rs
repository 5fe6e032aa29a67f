//! Cluster mode: several warrend nodes serving one rendezvous namespace.
//!
//! etcd holds who publishes each name (a key under the publishing node's lease, written
//! by one transaction so two nodes can never both own a name) and which nodes are alive;
//! every node keeps a watched copy, so finding a name costs no round trip. A reach to a
//! name another node serves crosses one long-lived SSH link between the two nodes
//! ([`link`]), authenticated both ways by the node keys listed in `[cluster] nodes`. The
//! reaching user's node checks `reach`, the serving node checked `publish`; both audit,
//! with one correlation id. Without `[cluster]`, none of this runs: the single node keeps
//! its in-memory table ([`super::rendezvous`]).
//!
//! etcd support is the `cluster` cargo feature (on by default); a build without it
//! refuses a `[cluster]` section at start.

pub mod config;
#[cfg(feature = "cluster")]
pub mod etcd;
pub mod link;
pub mod names;
#[cfg(feature = "cluster")]
mod node;
#[cfg(feature = "cluster")]
mod reach;

pub use link::ReachRequest;
pub use names::NameRecord;
#[cfg(feature = "cluster")]
pub use node::{Cluster, Located, Prepared, Published};

#[cfg(not(feature = "cluster"))]
mod disabled;
#[cfg(not(feature = "cluster"))]
pub use disabled::{Cluster, Located, Prepared, Published};
