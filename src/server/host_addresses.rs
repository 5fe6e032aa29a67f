//! The addresses of this host's own interfaces, kept current for the connect policy.
//!
//! A service bound to `0.0.0.0` answers on every address of the host, not only on
//! loopback, so a user allowed `*:*` could reach it through the host's LAN or public
//! address (or a DNS name pointing there) unless those addresses are denied too. They
//! change at run time (DHCP, SLAAC, VPNs, containers), so they are read at start and
//! re-read on a timer; the policy decision reads the latest snapshot as plain data and
//! never waits for a refresh.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::address::canonical_ip;

/// How often the interface addresses are re-read. Netlink notifications would be
/// instant, but a timer needs no extra crate and a new address is rarely urgent:
/// until the next refresh it is only as reachable as it was before it was added.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// One snapshot of the host's addresses, each with the prefix length of the network
/// it was configured with (`10.0.5.10/24` on eth0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSet {
    addrs: BTreeMap<IpAddr, u8>,
}

impl HostSet {
    /// Builds a set from interface addresses with their prefixes (`10.0.5.10/24`).
    /// IPv4-mapped IPv6 becomes IPv4, as everywhere in the policy. When one address
    /// sits on several interfaces, the widest prefix is kept.
    pub fn from_interfaces(nets: impl IntoIterator<Item = IpNet>) -> HostSet {
        let mut addrs = BTreeMap::new();
        for net in nets {
            let ip = canonical_ip(net.addr());
            let prefix = match (ip, net) {
                (IpAddr::V4(_), IpNet::V6(v6)) => v6.prefix_len().saturating_sub(96),
                _ => net.prefix_len(),
            };
            addrs
                .entry(ip)
                .and_modify(|p: &mut u8| *p = (*p).min(prefix))
                .or_insert(prefix);
        }
        HostSet { addrs }
    }

    /// Reads every address of every interface (up or down, both families).
    pub fn lookup() -> Result<HostSet, nix::Error> {
        let nets = nix::ifaddrs::getifaddrs()?.filter_map(|ifa| {
            let addr = ifa.address?;
            let (ip, max) = if let Some(v4) = addr.as_sockaddr_in() {
                (IpAddr::V4(v4.ip()), 32)
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                (IpAddr::V6(v6.ip()), 128)
            } else {
                return None;
            };
            let prefix = ifa
                .netmask
                .and_then(|m| {
                    m.as_sockaddr_in()
                        .map(|v4| v4.ip().to_bits().leading_ones())
                        .or_else(|| {
                            m.as_sockaddr_in6()
                                .map(|v6| v6.ip().to_bits().leading_ones())
                        })
                })
                .map_or(max, |ones| ones.min(u32::from(max)) as u8);
            IpNet::new(ip, prefix).ok()
        });
        Ok(HostSet::from_interfaces(nets))
    }

    /// If `ip` is this host (one of its addresses, or the unspecified address that
    /// Linux delivers locally), the network it was configured in; a connect rule
    /// inside that network may still open it, as a rule inside 127.0.0.0/8 opens
    /// loopback.
    pub fn network_of(&self, ip: IpAddr) -> Option<IpNet> {
        let ip = canonical_ip(ip);
        if ip.is_unspecified() {
            return Some(IpNet::from(ip));
        }
        let prefix = *self.addrs.get(&ip)?;
        IpNet::new(ip, prefix).ok().map(|n| n.trunc())
    }

    /// How many addresses the host has.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// True when no interface address is known.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The addresses, in order.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.keys().copied()
    }
}

/// The shared, refreshed [`HostSet`]: cheap to clone, one per process (in
/// `Shared`), handed to every user's policy. Readers take an `Arc` snapshot under a
/// read lock held only for the clone, so a decision never waits on the system call.
#[derive(Clone, Default)]
pub struct HostAddresses {
    current: Arc<RwLock<Arc<HostSet>>>,
}

impl HostAddresses {
    /// A handle holding `set`, refreshed only by explicit calls (tests start here).
    pub fn with(set: HostSet) -> HostAddresses {
        HostAddresses {
            current: Arc::new(RwLock::new(Arc::new(set))),
        }
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<HostSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the snapshot; returns the addresses added and removed, for the log.
    pub fn replace(&self, set: HostSet) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        let added = set
            .addrs()
            .filter(|a| !slot.addrs.contains_key(a))
            .collect();
        let removed = slot
            .addrs()
            .filter(|a| !set.addrs.contains_key(a))
            .collect();
        *slot = Arc::new(set);
        (added, removed)
    }

    /// Reads the interfaces now and installs the result.
    pub fn refresh(&self) -> Result<(), nix::Error> {
        let set = HostSet::lookup()?;
        let (added, removed) = self.replace(set);
        if !added.is_empty() || !removed.is_empty() {
            info!(?added, ?removed, "host addresses changed");
        }
        Ok(())
    }

    /// Refreshes every `period` until `cancel`. A failed read keeps the last good set
    /// (failing closed to what was known) and is reported once until reads work again.
    pub async fn refresh_every(self, period: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.refresh()).await;
            match outcome {
                Ok(Ok(())) => failing = false,
                Ok(Err(e)) if !failing => {
                    failing = true;
                    warn!("cannot re-read the host's addresses, keeping the last ones: {e}");
                }
                Ok(Err(_)) => {}
                Err(e) => warn!("host address refresh task failed: {e}"),
            }
        }
    }
}

impl std::fmt::Debug for HostAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAddresses")
            .field("addresses", &self.current().len())
            .finish()
    }
}

/// Two handles are equal when they share one set: what matters to a compiled policy
/// is where it reads the host's addresses from, not what they happen to be now.
impl PartialEq for HostAddresses {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.current, &other.current)
    }
}

impl Eq for HostAddresses {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().expect("test literal")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test literal")
    }

    #[test]
    fn networks_keep_the_interface_prefix_and_unmap() {
        let set = HostSet::from_interfaces([
            net("10.0.5.10/24"),
            net("fd00::2/64"),
            net("::ffff:192.0.2.7/120"),
            net("10.0.5.10/32"),
        ]);
        assert_eq!(set.len(), 3);
        assert_eq!(set.network_of(ip("10.0.5.10")), Some(net("10.0.5.0/24")));
        assert_eq!(set.network_of(ip("fd00::2")), Some(net("fd00::/64")));
        assert_eq!(set.network_of(ip("192.0.2.7")), Some(net("192.0.2.0/24")));
        assert_eq!(
            set.network_of(ip("::ffff:192.0.2.7")),
            Some(net("192.0.2.0/24"))
        );
        assert_eq!(set.network_of(ip("10.0.5.11")), None);
        for u in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            assert_eq!(set.network_of(u), Some(IpNet::from(u)));
        }
    }

    #[test]
    fn lookup_finds_loopback() {
        let set = HostSet::lookup().expect("getifaddrs");
        assert!(set.addrs().any(|a| a.is_loopback()), "{set:?}");
    }

    #[test]
    fn replace_reports_changes_and_handles_compare_by_identity() {
        let h = HostAddresses::with(HostSet::from_interfaces([net("10.0.0.1/8")]));
        let (added, removed) = h.replace(HostSet::from_interfaces([net("10.0.0.2/8")]));
        assert_eq!(
            (added, removed),
            (vec![ip("10.0.0.2")], vec![ip("10.0.0.1")])
        );
        assert_eq!(
            h.current().network_of(ip("10.0.0.2")),
            Some(net("10.0.0.0/8"))
        );
        assert_eq!(h, h.clone());
        assert_ne!(h, HostAddresses::default());
    }
}
