//! The node-to-node link: one SSH session per peer on warren's own engine, over which a node
//! opens `reach@warren` channels to rendezvous names another node serves.
//!
//! Both ends authenticate with node keys listed in the cluster config and nothing else: the
//! dialing node logs in as its node id with exactly the key listed for that id, and checks
//! that the serving node's host key is exactly the one listed for the node it meant to reach.
//! The link carries many users' channels at once; each channel keeps the engine's own flow
//! control, so a slow reader behind one channel never stalls another.

mod client;
mod server;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use warren_ssh::proto::{Config, Role};
use warren_ssh::ssh_key::{HashAlg, PrivateKey, PublicKey};
use warren_ssh::wire::{Put, Reader};

pub use client::Links;
pub use server::{PendingReach, serve};

/// The one channel type a link carries.
pub const REACH_CHANNEL: &str = "reach@warren";

/// Longest text field of a [`ReachRequest`]: names, users, node ids and addresses are all
/// short; a peer cannot make us hold more than this per field.
const MAX_FIELD: usize = 1024;

/// Keepalive on the link: a peer that vanished without closing (power loss, partition) is
/// found within interval × (max + 1), so reaches stop being sent into a dead session.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_MAX: u32 = 3;

/// Window growth all channels of one link may hold together: one link carries what many
/// user sessions would carry on their own, so it gets several users' worth. Each link
/// channel's growth is charged to its connection's user too (`max_buffered_per_user`, on
/// each node the user whose session the channel is spliced to: `ChannelCtx::charge_link_channel`).
const LINK_WINDOW_BUDGET: u64 = 1 << 30;

/// Channels the peer may have open on one link at once (each is one user's connection).
const LINK_MAX_CHANNELS: usize = 16_384;

/// This node's identity and the peers it trusts, from the `[cluster]` config.
pub struct NodeKeys {
    /// This node's id.
    pub node: String,
    /// This node's key: the host key when serving, the user key when dialing.
    pub key: PrivateKey,
    /// Node id -> its key; nothing else is trusted.
    pub peers: HashMap<String, PublicKey>,
}

// By hand, so that the private key can never reach a log through `{:?}`.
impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeys")
            .field("node", &self.node)
            .field("key", &fingerprint(self.key.public_key()))
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `SHA256:...` as `ssh-keygen -l` prints it: what an operator compares with the config.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// What the dialing node asks the serving node to connect: `user` (authenticated on the
/// dialing node `from_node`) reaches `name:port`; `originator` is the user's own address,
/// and `correlation` ties both nodes' audit records of this one connection together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReachRequest {
    pub name: String,
    pub port: u16,
    pub user: String,
    pub from_node: String,
    pub correlation: String,
    pub originator: String,
    pub originator_port: u32,
}

impl ReachRequest {
    /// The type-specific part of the CHANNEL_OPEN.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.put_string(self.name.as_bytes());
        p.put_u32(u32::from(self.port));
        p.put_string(self.user.as_bytes());
        p.put_string(self.from_node.as_bytes());
        p.put_string(self.correlation.as_bytes());
        p.put_string(self.originator.as_bytes());
        p.put_u32(self.originator_port);
        p
    }

    /// Parses what [`encode`](Self::encode) wrote; anything else (short, trailing bytes,
    /// a port beyond 65535, an over-long field, not UTF-8) is an error naming the problem.
    pub fn decode(data: &[u8]) -> Result<ReachRequest, String> {
        let mut r = Reader::new(data, "reach@warren request");
        let name = text(&mut r, "name")?;
        let port = number(&mut r, "port")?;
        let port = u16::try_from(port)
            .map_err(|_| format!("malformed reach request: port {port} out of range"))?;
        let req = ReachRequest {
            name,
            port,
            user: text(&mut r, "user")?,
            from_node: text(&mut r, "from_node")?,
            correlation: text(&mut r, "correlation")?,
            originator: text(&mut r, "originator")?,
            originator_port: number(&mut r, "originator port")?,
        };
        if !r.is_empty() {
            return Err("malformed reach request: trailing bytes".into());
        }
        Ok(req)
    }
}

fn text(r: &mut Reader<'_>, what: &str) -> Result<String, String> {
    let s = r
        .utf8()
        .map_err(|_| format!("malformed reach request: bad {what}"))?;
    if s.len() > MAX_FIELD {
        return Err(format!(
            "malformed reach request: {what} longer than {MAX_FIELD} bytes"
        ));
    }
    Ok(s.to_owned())
}

fn number(r: &mut Reader<'_>, what: &str) -> Result<u32, String> {
    r.u32()
        .map_err(|_| format!("malformed reach request: bad {what}"))
}

/// One peer link as `warrend ctl` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub node: String,
    /// The address last dialed.
    pub addr: String,
    pub state: LinkState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Being dialed for the first time.
    Dialing,
    /// Logged in since then, with this many channels open.
    Connected { since: SystemTime, channels: usize },
    /// Down since then, for this reason.
    Unreachable { since: SystemTime, why: String },
}

/// The engine settings of a link, either role: warrend's algorithms (the engine's
/// defaults), keepalive on, big windows, and the reach channel type known on the serving
/// side only.
fn engine_config(role: Role, keys: &NodeKeys, peer: Option<&PublicKey>) -> Config {
    let mut c = Config::new(role);
    // Named as warrend, so either end knows its peer is warren's engine (full window cap).
    c.ident = concat!("SSH-2.0-warrend_", env!("CARGO_PKG_VERSION")).to_string();
    c.keepalive_interval = Some(KEEPALIVE_INTERVAL);
    c.keepalive_max = KEEPALIVE_MAX;
    c.window_budget = LINK_WINDOW_BUDGET;
    c.max_channels = LINK_MAX_CHANNELS;
    match role {
        Role::Server => {
            c.host_keys = vec![keys.key.clone()];
            c.extension_channels = vec![REACH_CHANNEL.to_string()];
        }
        Role::Client => {
            // Only the algorithms of the key we expect: the server signs with that key or
            // the exchange fails, before anything is sent in our name.
            if let Some(peer) = peer {
                c.host_key_algorithms = warren_ssh::hostkey::algorithms_for(peer)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReachRequest {
        ReachRequest {
            name: "printer".into(),
            port: 631,
            user: "bob".into(),
            from_node: "node2".into(),
            correlation: "c0ffee".into(),
            originator: "192.0.2.9".into(),
            originator_port: 50_000,
        }
    }

    #[test]
    fn a_reach_request_round_trips() {
        let r = sample();
        assert_eq!(ReachRequest::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn hostile_reach_requests_are_errors_not_panics() {
        let good = sample().encode();
        for n in 0..good.len() {
            assert!(ReachRequest::decode(&good[..n]).is_err(), "short at {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(
            ReachRequest::decode(&trailing)
                .unwrap_err()
                .contains("trailing")
        );
        let mut big_port = Vec::new();
        big_port.put_string(b"printer");
        big_port.put_u32(70_000);
        assert!(
            ReachRequest::decode(&big_port)
                .unwrap_err()
                .contains("70000")
        );
        let long = ReachRequest {
            user: "x".repeat(MAX_FIELD + 1),
            ..sample()
        };
        assert!(
            ReachRequest::decode(&long.encode())
                .unwrap_err()
                .contains("user")
        );
        let mut not_utf8 = Vec::new();
        not_utf8.put_string(&[0xff, 0xfe]);
        assert!(ReachRequest::decode(&not_utf8).is_err());
    }
}
