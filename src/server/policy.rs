//! Decides, without I/O, whether a forwarding request is allowed, and names the rule that decided it.
//!
//! Deny by default. For `direct-tcpip` (`ssh -L/-W/-D`) the caller first asks
//! [`UserPolicy::route_direct`] whether the host is a rendezvous name (it
//! matches one of the user's `reach` patterns: such names never go to DNS),
//! otherwise resolves the name itself and passes every resolved address to
//! [`UserPolicy::decide_connect`], then dials only those addresses. The model:
//!
//! - A name rule (`db.internal:5432`, `*.internal:22`, `*:443`) matches
//!   names (only `*` also matches addresses). A DNS record pointing at
//!   127.0.0.1 cannot turn it into a door to the server itself, because of
//!   the deny networks (default: loopback, `0.0.0.0/8`, `::`, link-local, cloud
//!   metadata) and of the host's own addresses.
//! - A network rule (`10.0.0.0/8:*`) matches addresses: a literal address
//!   in any spelling, or a name all of whose addresses lie inside it.
//! - Whatever rule matched, every address must be outside the deny networks,
//!   except where a network rule for that port lies inside the deny network
//!   (`127.0.0.1:5432`, `[::1]:5432`): only naming part of a denied network
//!   opens it, so `0.0.0.0/0:443` still cannot reach loopback.
//! - The host's own interface addresses (and `0.0.0.0`, `::`) are denied the same
//!   way unless the operator opted out (`deny_host_addresses = false`): services
//!   bound to `0.0.0.0` answer on them too. A network rule for the port that holds
//!   the address and lies inside the network the address is configured in
//!   (`10.0.5.10:5432` or `10.0.5.0/24:*` for `10.0.5.10/24`) opens it; `*` and
//!   `/0` rules never do. The current addresses are data passed in
//!   ([`UserPolicy::decide_connect_with_hosts`]); refreshing them is
//!   [`super::host_addresses`]' business.
//! - Key options (`restrict`, `permitopen`, `permitlisten`) are checked in
//!   addition and can only narrow.
//!
//! For `tcpip-forward` (`ssh -R`), [`UserPolicy::decide_tcpip_forward`]
//! either plans real bind addresses (after `gateway_ports`) checked against
//! `listen` rules, or, for a rendezvous name, checks `publish` rules.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::address::{Host, canonical_ip, is_localhost_name, parse_host};
use super::gateway::LOOPBACK;
pub use super::gateway::{BindAddress, GatewayPorts, classify_bind_address, gateway_bind_addrs};
use super::host_addresses::{HostAddresses, HostSet};
use super::key_options::KeyOptions;
use super::rules::{ConnectRule, ListenRule, NameRule, Target};
use crate::config::pattern::match_pattern;

/// The outcome of a policy check, with the rule to quote in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    /// Allowed by `rule`, e.g. `users.alice.connect[2]`; a key option that
    /// also had to match is appended after ` & `.
    Allow { rule: String },
    /// Refused; `rule` names the rule or option that refused, or is `None`
    /// when nothing allowed the request (deny by default).
    Deny {
        reason: String,
        rule: Option<String>,
    },
}

impl Decision {
    /// (decision, rule, reason) as the audit log spells them.
    pub fn audit_fields(&self) -> (String, Option<String>, Option<String>) {
        match self {
            Decision::Allow { rule } => ("allow".into(), Some(rule.clone()), None),
            Decision::Deny { reason, rule } => ("deny".into(), rule.clone(), Some(reason.clone())),
        }
    }

    /// True for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    fn deny(reason: impl Into<String>, rule: Option<String>) -> Decision {
        Decision::Deny {
            reason: reason.into(),
            rule,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow { rule } => write!(f, "allowed by {rule}"),
            Decision::Deny {
                reason,
                rule: Some(r),
            } => write!(f, "denied by {r}: {reason}"),
            Decision::Deny { reason, rule: None } => write!(f, "denied: {reason}"),
        }
    }
}

/// A deny network with the config path that put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyNet {
    /// The network.
    pub net: IpNet,
    /// E.g. `forwarding.deny_networks[0]`.
    pub id: String,
}

/// Where a `direct-tcpip` request should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectRoute {
    /// To a rendezvous registered by some `-R name:port`; never to DNS.
    Rendezvous { name: String },
    /// To the network: resolve a name, then ask [`UserPolicy::decide_connect`].
    Network(Host),
}

/// What to do for an allowed `tcpip-forward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPlan {
    /// Bind these addresses on `port` (0: allocate one and report it).
    Bind { addrs: Vec<IpAddr>, port: u16 },
    /// Register `name:port` in the rendezvous namespace.
    Publish { name: String, port: u16 },
}

/// A `tcpip-forward` decision and, when allowed, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardDecision {
    /// For the audit log.
    pub decision: Decision,
    /// `Some` exactly when allowed.
    pub plan: Option<ForwardPlan>,
}

/// One user's compiled rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPolicy {
    /// The user name.
    pub user: String,
    /// Where `direct-tcpip` may connect.
    pub connect: Vec<ConnectRule>,
    /// Where `tcpip-forward` may bind real sockets.
    pub listen: Vec<ListenRule>,
    /// Rendezvous names this user may publish with `-R name:port`.
    pub publish: Vec<NameRule>,
    /// Rendezvous names this user may reach with `-L`/`-W`.
    pub reach: Vec<NameRule>,
    /// Networks name rules may not reach (see the module docs).
    pub deny_networks: Vec<DenyNet>,
    /// Whether the host's own addresses are denied, with the config origin the
    /// audit names (`default deny`, `forwarding.deny_host_addresses`); `None`
    /// when the operator opted out.
    pub deny_host_addresses: Option<String>,
    /// Where [`Self::decide_connect`] reads the host's current addresses; the
    /// server's `Shared` attaches its refreshed set to every loaded config.
    pub host_addresses: HostAddresses,
    /// The user's `GatewayPorts`.
    pub gateway_ports: GatewayPorts,
}

/// Every user's compiled rules, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Users by name.
    pub users: BTreeMap<String, UserPolicy>,
}

impl Policy {
    /// The rules of `user`; `None` means the user does not exist.
    pub fn user(&self, user: &str) -> Option<&UserPolicy> {
        self.users.get(user)
    }
}

/// Turns the 32-bit port of the SSH wire format into a TCP port.
fn tcp_port(port: u32, allow_zero: bool) -> Result<u16, Decision> {
    match u16::try_from(port) {
        Ok(0) if !allow_zero => Err(Decision::deny("port 0 is not a destination", None)),
        Ok(p) => Ok(p),
        Err(_) => Err(Decision::deny(format!("port {port} is out of range"), None)),
    }
}

/// `restrict` / `no-port-forwarding` end the discussion for every kind of forward.
fn forwarding_gate(key: &KeyOptions) -> Result<(), Decision> {
    if key.port_forwarding {
        Ok(())
    } else {
        Err(Decision::deny(
            "port forwarding is disabled for this key",
            Some(format!("{} restrict/no-port-forwarding", key.origin)),
        ))
    }
}

fn with_key_rule(rule: &str, key_rule: Option<String>) -> String {
    match key_rule {
        Some(k) => format!("{rule} & {k}"),
        None => rule.to_owned(),
    }
}

impl UserPolicy {
    /// The deny network that refuses `addr`, if any. A network rule for
    /// `port` that holds `addr` and lies inside the deny network
    /// (`127.0.0.1:5432` inside `127.0.0.0/8`) is a deliberate exception;
    /// a wider one (`0.0.0.0/0:443`) is not, because "everywhere" rarely
    /// means "this machine too".
    fn denied(&self, addr: IpAddr, port: u16) -> Option<&DenyNet> {
        self.deny_networks
            .iter()
            .filter(|d| d.net.contains(&addr))
            .find(|d| {
                !self.connect.iter().any(|r| {
                    r.ports.contains(port)
                        && matches!(&r.target, Target::Net(n) if n.contains(&addr) && d.net.contains(n))
                })
            })
    }

    /// The rule id refusing `addr` for being this host, if any. Like
    /// [`Self::denied`], a network rule for `port` holding `addr` opens it when it
    /// lies inside the network `addr` is configured in (and is not `/0`): naming
    /// the host's own subnet is deliberate, "everywhere" is not.
    fn host_denied(&self, addr: IpAddr, port: u16, hosts: &HostSet) -> Option<String> {
        let origin = self.deny_host_addresses.as_deref()?;
        let home = hosts.network_of(addr)?;
        let opened = self.connect.iter().any(|r| {
            r.ports.contains(port)
                && matches!(&r.target, Target::Net(n)
                    if n.prefix_len() > 0 && n.contains(&addr) && home.contains(n))
        });
        (!opened).then(|| format!("host address {addr} ({origin})"))
    }

    /// Sends `host` to the rendezvous namespace when it matches one of the
    /// user's `reach` patterns (whatever the port), else to the network.
    /// Deciding by the user's rules, not by what is registered right now,
    /// means publishing a name can never capture traffic meant for DNS.
    pub fn route_direct(&self, host: &str) -> Result<DirectRoute, Decision> {
        let host = parse_host(host).map_err(|e| Decision::deny(e, None))?;
        match host {
            Host::Name(name) if self.reach.iter().any(|r| r.matches_name(&name)) => {
                Ok(DirectRoute::Rendezvous { name })
            }
            other => Ok(DirectRoute::Network(other)),
        }
    }

    /// Decides a `direct-tcpip` to the network. For a name, `resolved` must
    /// hold every address the caller got for it and may dial; for an address
    /// (any spelling) it is ignored. The host's addresses are the latest
    /// snapshot of [`Self::host_addresses`].
    pub fn decide_connect(
        &self,
        key: &KeyOptions,
        host: &str,
        port: u32,
        resolved: &[IpAddr],
    ) -> Decision {
        let hosts = self.host_addresses.current();
        self.decide_connect_with_hosts(key, host, port, resolved, &hosts)
    }

    /// [`Self::decide_connect`] with the host's addresses given as data.
    pub fn decide_connect_with_hosts(
        &self,
        key: &KeyOptions,
        host: &str,
        port: u32,
        resolved: &[IpAddr],
        hosts: &HostSet,
    ) -> Decision {
        self.try_connect(key, host, port, resolved, hosts)
            .unwrap_or_else(|deny| deny)
    }

    fn try_connect(
        &self,
        key: &KeyOptions,
        raw_host: &str,
        port: u32,
        resolved: &[IpAddr],
        hosts: &HostSet,
    ) -> Result<Decision, Decision> {
        let port = tcp_port(port, false)?;
        forwarding_gate(key)?;
        let host = parse_host(raw_host).map_err(|e| Decision::deny(e, None))?;
        let key_rule = key_permit_open(key, &host, port)?;
        let addrs: Vec<IpAddr> = match &host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => {
                let mut addrs: Vec<IpAddr> = resolved.iter().map(|a| canonical_ip(*a)).collect();
                if is_localhost_name(name) {
                    addrs.extend(LOOPBACK);
                }
                dedup_in_order(&mut addrs);
                if addrs.is_empty() {
                    return Err(Decision::deny(format!("{name} did not resolve"), None));
                }
                addrs
            }
        };

        let rules = self.connect.iter().filter(|r| r.ports.contains(port));
        let matched = rules.clone().find(|r| match (&r.target, &host) {
            (Target::Net(net), _) => addrs.iter().all(|a| net.contains(a)),
            (Target::AnyHost, _) => true,
            (Target::Name(pattern), Host::Name(name)) => match_pattern(name, pattern),
            (Target::Name(_), Host::Ip(_)) => false,
        });
        let rule = match matched {
            Some(r) => r.id.clone(),
            None => {
                // Several network rules may share one name's addresses
                // (`127.0.0.1:5432` and `[::1]:5432` for `localhost`).
                let covering: Option<Vec<&str>> = addrs
                    .iter()
                    .map(|a| {
                        let mut net_rules = rules.clone();
                        net_rules
                            .find(|r| matches!(&r.target, Target::Net(n) if n.contains(a)))
                            .map(|r| r.id.as_str())
                    })
                    .collect();
                let mut ids = covering.ok_or_else(|| {
                    Decision::deny(
                        format!(
                            "no connect rule for user {} allows {host}:{port}",
                            self.user
                        ),
                        None,
                    )
                })?;
                dedup_in_order(&mut ids);
                ids.join(" + ")
            }
        };
        if let Some((addr, deny)) = addrs.iter().find_map(|&a| Some((a, self.denied(a, port)?))) {
            return Err(Decision::deny(
                format!(
                    "{host} matches {rule} but {addr} is inside denied network {}",
                    deny.net
                ),
                Some(deny.id.clone()),
            ));
        }
        if let Some((addr, id)) = addrs
            .iter()
            .find_map(|&a| Some((a, self.host_denied(a, port, hosts)?)))
        {
            return Err(Decision::deny(
                format!("{host} matches {rule} but {addr} is an address of this host"),
                Some(id),
            ));
        }
        Ok(Decision::Allow {
            rule: with_key_rule(&rule, key_rule),
        })
    }

    /// For a name, the refusal that holds before asking DNS (no connect rule for the
    /// port names it, or the key forbids it); `None` when only the resolved addresses
    /// can decide. A network rule lets a name through to DNS only when it is a whole
    /// address family (`0.0.0.0/0`: whoever may reach every address learns nothing
    /// new from DNS) or the name is `localhost` (answered without a query). Otherwise
    /// a user allowed only `10.0.0.0/8` could make warrend query any name: an oracle,
    /// and a channel out through the resolvers. A name inside a narrower network needs
    /// a rule naming it.
    pub fn refuse_before_resolving(
        &self,
        key: &KeyOptions,
        raw_host: &str,
        port: u32,
    ) -> Option<Decision> {
        let attempt = || -> Result<(), Decision> {
            let port = tcp_port(port, false)?;
            forwarding_gate(key)?;
            let host = parse_host(raw_host).map_err(|e| Decision::deny(e, None))?;
            key_permit_open(key, &host, port)?;
            let Host::Name(name) = &host else {
                return Ok(());
            };
            let possible = self.connect.iter().any(|r| {
                r.ports.contains(port)
                    && match &r.target {
                        Target::AnyHost => true,
                        Target::Net(net) => net.prefix_len() == 0 || is_localhost_name(name),
                        Target::Name(pattern) => match_pattern(name, pattern),
                    }
            });
            if possible {
                Ok(())
            } else {
                Err(Decision::deny(
                    format!(
                        "no connect rule for user {} allows {host}:{port}",
                        self.user
                    ),
                    None,
                ))
            }
        };
        attempt().err()
    }

    /// Decides a `direct-tcpip` to a rendezvous name (see [`Self::route_direct`]).
    pub fn decide_reach(&self, key: &KeyOptions, name: &str, port: u32) -> Decision {
        let attempt = || -> Result<Decision, Decision> {
            let port = tcp_port(port, false)?;
            forwarding_gate(key)?;
            let host = parse_host(name).map_err(|e| Decision::deny(e, None))?;
            let Host::Name(name) = &host else {
                return Err(Decision::deny(
                    format!("{host} is not a rendezvous name"),
                    None,
                ));
            };
            let key_rule = key_permit_open(key, &host, port)?;
            let rule = first_name_rule(&self.reach, name, port).ok_or_else(|| {
                Decision::deny(
                    format!("no reach rule for user {} allows {name}:{port}", self.user),
                    None,
                )
            })?;
            Ok(Decision::Allow {
                rule: with_key_rule(&rule.id, key_rule),
            })
        };
        attempt().unwrap_or_else(|deny| deny)
    }

    /// Decides a `tcpip-forward`: a real listener or a rendezvous.
    pub fn decide_tcpip_forward(
        &self,
        key: &KeyOptions,
        address: &str,
        port: u32,
    ) -> ForwardDecision {
        let outcome = match classify_bind_address(address) {
            Err(e) => Err(Decision::deny(e, None)),
            Ok(BindAddress::Rendezvous(name)) => {
                let decision = self.decide_publish(key, &name, port);
                let port = u16::try_from(port).unwrap_or_default();
                Ok((decision, ForwardPlan::Publish { name, port }))
            }
            Ok(bind) => self.decide_listen(key, address, &bind, port),
        };
        match outcome {
            Ok((decision, plan)) if decision.is_allowed() => ForwardDecision {
                decision,
                plan: Some(plan),
            },
            Ok((decision, _)) | Err(decision) => ForwardDecision {
                decision,
                plan: None,
            },
        }
    }

    fn decide_listen(
        &self,
        key: &KeyOptions,
        address: &str,
        bind: &BindAddress,
        port: u32,
    ) -> Result<(Decision, ForwardPlan), Decision> {
        let port16 = tcp_port(port, true)?;
        forwarding_gate(key)?;
        let key_rule = key_permit_listen(key, address, port)?;
        let addrs = gateway_bind_addrs(bind, self.gateway_ports)
            .ok_or_else(|| Decision::deny("not a bind address", None))?;
        // Ports below 1024 are where a host's own services live (and warrend may run
        // as root): only a rule that names the port opens one, never `*`.
        let privileged = (1..1024).contains(&port16);
        let port_ok = |r: &ListenRule| {
            if privileged {
                r.ports.names(port16)
            } else {
                r.ports.contains(port16)
            }
        };
        // Each address bound must lie in some rule, but not all in the same one: `-R
        // '*:P'` binds 0.0.0.0 and ::, and the natural way to allow that is one rule per
        // family (`["0.0.0.0:P", "[::]:P"]`). Requiring one rule to hold both would
        // refuse exactly the rule pair the example config recommends.
        let mut ids: Vec<&str> = Vec::new();
        let mut uncovered: Vec<String> = Vec::new();
        for a in &addrs {
            match self.listen.iter().find(|r| port_ok(r) && r.host.allows(*a)) {
                Some(r) => ids.push(&r.id),
                None => uncovered.push(a.to_string()),
            }
        }
        dedup_in_order(&mut ids);
        if !uncovered.is_empty() {
            let shown: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
            let why = if privileged {
                " (ports below 1024 need a listen rule naming them; '*' does not)"
            } else {
                ""
            };
            // Naming the uncovered address says which rule is missing when the other
            // family was allowed.
            let missing = if uncovered.len() < addrs.len() {
                format!(" (nothing allows {})", uncovered.join(", "))
            } else {
                String::new()
            };
            return Err(Decision::deny(
                format!(
                    "no listen rule for user {} allows binding [{}] port {port16} (gateway_ports = {:?}){missing}{why}",
                    self.user,
                    shown.join(", "),
                    self.gateway_ports
                ),
                None,
            ));
        }
        let rule = ids.join(" + ");
        let decision = Decision::Allow {
            rule: with_key_rule(&rule, key_rule),
        };
        Ok((
            decision,
            ForwardPlan::Bind {
                addrs,
                port: port16,
            },
        ))
    }

    /// Decides publishing rendezvous `name:port` (a `-R name:port:...`).
    pub fn decide_publish(&self, key: &KeyOptions, name: &str, port: u32) -> Decision {
        let attempt = || -> Result<Decision, Decision> {
            if port == 0 {
                return Err(Decision::deny(
                    "a rendezvous needs a fixed port, not 0",
                    None,
                ));
            }
            let port = tcp_port(port, false)?;
            forwarding_gate(key)?;
            let key_rule = key_permit_listen(key, name, u32::from(port))?;
            let name = name.to_ascii_lowercase();
            let rule = first_name_rule(&self.publish, &name, port).ok_or_else(|| {
                Decision::deny(
                    format!(
                        "no publish rule for user {} allows {name}:{port}",
                        self.user
                    ),
                    None,
                )
            })?;
            Ok(Decision::Allow {
                rule: with_key_rule(&rule.id, key_rule),
            })
        };
        attempt().unwrap_or_else(|deny| deny)
    }
}

/// Removes repeats, keeping first occurrences in order (the audit shows rules in the order they applied).
fn dedup_in_order<T: PartialEq>(items: &mut Vec<T>) {
    let mut unique: Vec<T> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    *items = unique;
}

fn first_name_rule<'a>(rules: &'a [NameRule], name: &str, port: u16) -> Option<&'a NameRule> {
    rules
        .iter()
        .find(|r| r.matches_name(name) && r.ports.contains(port))
}

/// `permitopen`: with no entries the key does not narrow; otherwise one
/// must match. Returns the matching option for the audit.
fn key_permit_open(key: &KeyOptions, host: &Host, port: u16) -> Result<Option<String>, Decision> {
    if key.permit_open.is_empty() {
        return Ok(None);
    }
    match key.permit_open.iter().position(|p| p.matches(host, port)) {
        Some(i) => Ok(Some(format!("{} permitopen[{i}]", key.origin))),
        None => Err(Decision::deny(
            format!("{host}:{port} is not in the key's permitopen list"),
            Some(format!("{} permitopen", key.origin)),
        )),
    }
}

/// `permitlisten`, matched against the address as the client sent it.
fn key_permit_listen(
    key: &KeyOptions,
    address: &str,
    port: u32,
) -> Result<Option<String>, Decision> {
    if key.permit_listen.is_empty() {
        return Ok(None);
    }
    match key
        .permit_listen
        .iter()
        .position(|p| p.matches(address, port))
    {
        Some(i) => Ok(Some(format!("{} permitlisten[{i}]", key.origin))),
        None => Err(Decision::deny(
            format!("listen on {address:?} port {port} is not in the key's permitlisten list"),
            Some(format!("{} permitlisten", key.origin)),
        )),
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
