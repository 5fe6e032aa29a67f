//! Name resolution for `direct-tcpip` targets, with a budget.
//!
//! getaddrinfo blocks a thread per lookup and cannot be cancelled: a resolver that never
//! answers once drove warrend to a thousand threads and made every other user's lookups
//! wait. Here lookups are asynchronous (hickory, reading `/etc/resolv.conf` and
//! `/etc/hosts`), each ends after `limits.dns_timeout`, and the lookups in flight are
//! capped server-wide and per user. A lookup over a cap is refused at once, so a user
//! who fills their share with stuck names hurts only themselves.

use super::address::is_localhost_name;
use super::gateway::LOOPBACK;
use super::limits::Limits;
use hickory_resolver::config::{LookupIpStrategy, ResolverOpts};
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tracing::warn;

/// Answers kept in the cache. Every peer can make us cache a name (even a failed one),
/// so the cache is bounded; the least recently used entry goes first.
pub const CACHE_ENTRIES: u64 = 1024;

/// The budget of one lookup, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsLimits {
    pub timeout: Duration,
    pub max_in_flight: u32,
    pub max_in_flight_per_user: u32,
}

impl From<&Limits> for DnsLimits {
    fn from(l: &Limits) -> Self {
        DnsLimits {
            timeout: l.dns_timeout.0,
            max_in_flight: l.max_dns_lookups,
            max_in_flight_per_user: l.max_dns_lookups_per_user,
        }
    }
}

/// The process's resolver: one cache and one set of counters for every connection.
pub struct Resolver {
    /// Swapped on reload, so a changed resolv.conf or hosts file takes effect.
    dns: RwLock<Arc<Dns>>,
    flights: Arc<Mutex<Flights>>,
}

/// What one reading of the system configuration gives.
struct Dns {
    /// `Err` (why) when resolv.conf could not be read: names then fail, addresses still work.
    resolver: Result<TokioResolver, String>,
    /// Answered without counting against any limit: no packet leaves the host.
    hosts: Hosts,
}

#[derive(Default)]
struct Flights {
    total: u32,
    /// Only users with a lookup in flight, so the map is bounded by `total`.
    by_user: HashMap<String, u32>,
}

/// One lookup in flight; uncounted when dropped, including when the lookup is cancelled.
struct Flight {
    flights: Arc<Mutex<Flights>>,
    user: String,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        f.total = f.total.saturating_sub(1);
        if let Some(n) = f.by_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                f.by_user.remove(&self.user);
            }
        }
    }
}

static GLOBAL: OnceLock<Resolver> = OnceLock::new();

fn tune(options: &mut ResolverOpts) {
    options.cache_size = CACHE_ENTRIES;
    // Both families, as getaddrinfo gave: the policy judges every address anyway.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
}

impl Dns {
    fn system() -> Dns {
        let resolver = TokioResolver::builder_tokio()
            .and_then(|mut b| {
                tune(b.options_mut());
                b.build()
            })
            .map_err(|e| {
                warn!("cannot read the system resolver configuration: {e}; names will not resolve");
                format!("no DNS resolver configured ({e})")
            });
        let hosts = Hosts::from_system().unwrap_or_else(|e| {
            warn!("cannot read the hosts file: {e}");
            Hosts::default()
        });
        Dns { resolver, hosts }
    }

    /// The addresses `name` has without asking DNS (localhost, the hosts file).
    fn local(&self, name: &str) -> Option<Vec<IpAddr>> {
        if is_localhost_name(name.trim_end_matches('.')) {
            return Some(LOOPBACK.to_vec());
        }
        let name = Name::from_ascii(name).ok()?;
        let ips: Vec<IpAddr> = [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|t| {
                self.hosts
                    .lookup_static_host(&Query::query(name.clone(), t))
            })
            .flat_map(|l| {
                l.answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .collect::<Vec<_>>()
            })
            .collect();
        (!ips.is_empty()).then_some(ips)
    }
}

impl Resolver {
    /// The resolver every connection shares, configured from the system on first use.
    pub fn global() -> &'static Resolver {
        GLOBAL.get_or_init(|| Resolver::with(Dns::system()))
    }

    fn with(dns: Dns) -> Resolver {
        Resolver {
            dns: RwLock::new(Arc::new(dns)),
            flights: Arc::default(),
        }
    }

    /// Reads resolv.conf and the hosts file again (SIGHUP). Lookups in flight finish on
    /// the old configuration; the counters carry over.
    pub fn reload(&self) {
        let dns = Arc::new(Dns::system());
        *self.dns.write().unwrap_or_else(|e| e.into_inner()) = dns;
    }

    /// Every address of `name` (never empty), or why not: the reason goes to the audit
    /// log as the channel's refusal.
    pub async fn lookup(
        &self,
        limits: &DnsLimits,
        user: &str,
        name: &str,
    ) -> Result<Vec<IpAddr>, String> {
        let dns = self.dns.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(ips) = dns.local(name) {
            return Ok(ips);
        }
        let _flight = self.take_flight(limits, user)?;
        let resolver = dns
            .resolver
            .as_ref()
            .map_err(|e| format!("cannot resolve {name}: {e}"))?;
        match tokio::time::timeout(limits.timeout, resolver.lookup_ip(name)).await {
            Ok(Ok(found)) => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for ip in found.iter() {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                if ips.is_empty() {
                    Err(format!("cannot resolve {name}: no addresses"))
                } else {
                    Ok(ips)
                }
            }
            Ok(Err(e)) => Err(format!("cannot resolve {name}: {e}")),
            Err(_) => Err(format!(
                "resolving {name} timed out after {:?} (limits.dns_timeout)",
                limits.timeout
            )),
        }
    }

    /// DNS lookups in flight now (`warrend ctl limits`).
    pub fn in_flight(&self) -> u32 {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Counts a lookup for `user`, or refuses it when a cap is reached.
    fn take_flight(&self, limits: &DnsLimits, user: &str) -> Result<Flight, String> {
        let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        let mine = f.by_user.get(user).copied().unwrap_or(0);
        if mine >= limits.max_in_flight_per_user {
            return Err(format!(
                "too many DNS lookups in flight for user {user} (limits.max_dns_lookups_per_user = {})",
                limits.max_in_flight_per_user
            ));
        }
        if f.total >= limits.max_in_flight {
            return Err(format!(
                "too many DNS lookups in flight on this server (limits.max_dns_lookups = {})",
                limits.max_in_flight
            ));
        }
        f.total += 1;
        *f.by_user.entry(user.to_string()).or_default() += 1;
        Ok(Flight {
            flights: self.flights.clone(),
            user: user.to_string(),
        })
    }
}

#[cfg(test)]
#[path = "resolver_tests.rs"]
mod tests;
