//! What the cluster answers the connection code: where a name lives, how a publish went.
//! Apart from the etcd-backed node so that a build without the `cluster` feature has the
//! same types.

use super::names::NameRecord;

/// What [`Cluster::publish`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    /// Written to etcd: the name is reachable from every node. `from` names the node
    /// that served it before when this was a takeover from another node.
    Cluster { from: Option<String> },
    /// etcd could not be reached and `when_etcd_down = "local"`: served by this node
    /// only until etcd is back.
    LocalOnly { why: String },
}

/// Where a reach to a name goes.
pub enum Located {
    /// This node's own table decides (it may find nobody).
    Here,
    /// Another node serves it.
    Elsewhere { record: NameRecord, link: String },
    /// etcd says another node serves it, but that node is not a live member.
    Gone { record: NameRecord },
}
