//! The grammar of `connect`, `listen`, `publish` and `reach` rule strings, parsed once at config load.
//!
//! Rules are strings (`"*.internal:22,80"`, `"10.0.0.0/8:*"`) rather than
//! TOML tables because they read like what users type on the `ssh` command
//! line. Parsing is strict: anything ambiguous is an error at load time, never
//! a rule that silently matches more than it says.

use std::net::IpAddr;

use ipnet::IpNet;

use super::address::{canonical_ip, parse_ipv4_legacy, parse_net};
use crate::config::pattern::match_pattern;

/// A set of TCP ports: `*`, or a list of single ports and inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSet {
    /// Any port, including 0 (a dynamically allocated `-R` port).
    Any,
    /// Inclusive ranges; a single port is a range of one.
    Ranges(Vec<(u16, u16)>),
}

impl PortSet {
    /// Parses `*` or `22,80,8000-8999`. Port 0 is only meaningful for
    /// listening ("allocate one for me"), so callers say whether to allow it.
    pub fn parse(s: &str, allow_zero: bool) -> Result<PortSet, String> {
        if s == "*" {
            return Ok(PortSet::Any);
        }
        if s.is_empty() {
            return Err("missing port list (use '*' for any port)".into());
        }
        let min = if allow_zero { 0 } else { 1 };
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(format!("bad port '{p}'")),
            }
        };
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let range = match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(format!("bad port range '{item}'"));
                    }
                    (lo, hi)
                }
                None => {
                    let p = port(item)?;
                    (p, p)
                }
            };
            ranges.push(range);
        }
        Ok(PortSet::Ranges(ranges))
    }

    /// True if `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            PortSet::Any => true,
            PortSet::Ranges(r) => r.iter().any(|&(lo, hi)| lo <= port && port <= hi),
        }
    }

    /// True if the set names `port` in a port list or range (`*` names nothing): what a
    /// privileged port needs before a user may listen on it.
    pub fn names(&self, port: u16) -> bool {
        matches!(self, PortSet::Ranges(_)) && self.contains(port)
    }
}

/// What a `connect` rule's host part matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `*`: any name or address, but resolved addresses are still checked
    /// against the deny networks.
    AnyHost,
    /// A lowercase wildcard pattern matched against names only; resolved
    /// addresses are checked against the deny networks.
    Name(String),
    /// A network: matches addresses (literal, or every address a name
    /// resolves to) inside it. Where it lies inside a deny network it lifts
    /// that deny for its own addresses: naming part of a denied network is an
    /// explicit decision, being wide enough to contain one is not.
    Net(IpNet),
}

/// A `connect` rule: where `direct-tcpip` (`ssh -L`, `-W`, `-D`) may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRule {
    /// Config path of the rule (`users.alice.connect[2]`), for the audit log.
    pub id: String,
    /// Host part.
    pub target: Target,
    /// Port part.
    pub ports: PortSet,
}

/// What a `listen` rule's host part allows as an actual bind address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenHost {
    /// Omitted or `*`: whatever `gateway_ports` lets the client have.
    Any,
    /// `localhost`: loopback addresses only.
    Localhost,
    /// Every bind address must be inside this network; `0.0.0.0` and `::`
    /// (all interfaces) must be named explicitly.
    Net(IpNet),
}

impl ListenHost {
    /// True if binding `addr` is allowed.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = canonical_ip(addr);
        match self {
            ListenHost::Any => true,
            ListenHost::Localhost => addr.is_loopback(),
            ListenHost::Net(net) => net.contains(&addr),
        }
    }
}

/// A `listen` rule: where `tcpip-forward` (`ssh -R`) may bind a real socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenRule {
    /// Config path of the rule.
    pub id: String,
    /// Host part.
    pub host: ListenHost,
    /// Port part; 0 (dynamic allocation) only matches `*` or an explicit 0.
    pub ports: PortSet,
}

/// A `publish` or `reach` rule: rendezvous names and their virtual ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRule {
    /// Config path of the rule.
    pub id: String,
    /// Lowercase wildcard pattern over rendezvous names.
    pub pattern: String,
    /// Port part.
    pub ports: PortSet,
}

impl NameRule {
    /// True if the (already lowercased) `name` matches the pattern.
    pub fn matches_name(&self, name: &str) -> bool {
        match_pattern(name, &self.pattern)
    }
}

/// Splits `HOST:PORTS`, where an IPv6 host must be bracketed
/// (`[fd00::/8]:22`), since its colons would make the split ambiguous.
fn split_host_ports(s: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in '{s}'"))?;
        let ports = after
            .strip_prefix(':')
            .ok_or_else(|| format!("expected ':PORTS' after ']' in '{s}'"))?;
        return Ok((host, ports));
    }
    let (host, ports) = s
        .split_once(':')
        .ok_or_else(|| format!("expected HOST:PORTS, got '{s}'"))?;
    if ports.contains(':') {
        return Err(format!(
            "'{s}': write IPv6 addresses in brackets, like [2001:db8::/32]:443"
        ));
    }
    Ok((host, ports))
}

/// Parses an address or CIDR host part; `None` if it is not one.
///
/// Legacy spellings (`10.1`, `0x0a000001`) are refused rather than read,
/// because in a config they are almost certainly typos.
fn parse_address_part(host: &str) -> Option<Result<IpNet, String>> {
    if host.contains('/') || host.parse::<IpAddr>().is_ok() {
        return Some(parse_net(host));
    }
    if parse_ipv4_legacy(host).is_some() {
        return Some(Err(format!(
            "'{host}' is an abbreviated IPv4 address; write it in full dotted-quad form"
        )));
    }
    None
}

/// Validates a wildcard name pattern and lowercases it.
fn parse_name_pattern(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("empty host pattern".into());
    }
    if !p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.*?".contains(&b))
    {
        return Err(format!(
            "bad host pattern '{p}': only letters, digits, '-', '_', '.', '*' and '?' are allowed"
        ));
    }
    // `10.*` would match the *name* "10.evil.com", never an address: refuse
    // it so nobody believes it is a network rule.
    if p.bytes().any(|b| b.is_ascii_digit())
        && p.bytes().all(|b| b.is_ascii_digit() || b".*?".contains(&b))
    {
        return Err(format!(
            "'{p}' looks like an address pattern; use a CIDR such as 10.0.0.0/8"
        ));
    }
    Ok(p.to_ascii_lowercase())
}

/// Parses a `connect` rule: `HOST:PORTS` with HOST one of `*`, a name
/// pattern, an address or a CIDR.
pub fn parse_connect(id: String, s: &str) -> Result<ConnectRule, String> {
    let (host, ports) = split_host_ports(s)?;
    let target = if host == "*" {
        Target::AnyHost
    } else if let Some(net) = parse_address_part(host) {
        Target::Net(net?)
    } else {
        Target::Name(parse_name_pattern(host)?)
    };
    Ok(ConnectRule {
        id,
        target,
        ports: PortSet::parse(ports, false)?,
    })
}

/// Parses a `listen` rule: `[HOST:]PORTS` with HOST one of `*`,
/// `localhost`, an address or a CIDR.
pub fn parse_listen(id: String, s: &str) -> Result<ListenRule, String> {
    let (host, ports) = if s.starts_with('[') || s.contains(':') {
        split_host_ports(s)?
    } else {
        ("*", s)
    };
    let host = match host {
        "*" => ListenHost::Any,
        h if h.eq_ignore_ascii_case("localhost") => ListenHost::Localhost,
        h => match parse_address_part(h) {
            Some(net) => ListenHost::Net(net?),
            None => {
                return Err(format!(
                    "listen host '{h}' must be '*', 'localhost', an address or a CIDR"
                ));
            }
        },
    };
    Ok(ListenRule {
        id,
        host,
        ports: PortSet::parse(ports, true)?,
    })
}

/// Parses a `publish` or `reach` rule: `NAME-PATTERN:PORTS`.
pub fn parse_name_rule(id: String, s: &str) -> Result<NameRule, String> {
    let (pattern, ports) = split_host_ports(s)?;
    if parse_address_part(pattern).is_some() {
        return Err(format!(
            "'{pattern}' is an address; rendezvous names must be names"
        ));
    }
    let pattern = parse_name_pattern(pattern)?;
    if pattern == "localhost" {
        return Err("'localhost' cannot be a rendezvous name".into());
    }
    Ok(NameRule {
        id,
        pattern,
        ports: PortSet::parse(ports, false)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(s: &str) -> Result<ConnectRule, String> {
        parse_connect("r".into(), s)
    }

    #[test]
    fn port_sets() {
        let p = PortSet::parse("22,80,8000-8999", false).expect("valid");
        for (port, want) in [
            (22, true),
            (80, true),
            (8000, true),
            (8999, true),
            (9000, false),
            (23, false),
        ] {
            assert_eq!(p.contains(port), want, "{port}");
        }
        assert!(PortSet::parse("*", false).expect("valid").contains(0));
        assert_eq!(
            PortSet::parse("90-80", false),
            Err("bad port range '90-80'".into())
        );
        for bad in ["", "0", "65536", "1,,2", "a", "1-", "-1", " 22", "22 "] {
            assert!(PortSet::parse(bad, false).is_err(), "{bad:?}");
        }
        assert!(PortSet::parse("0", true).expect("valid").contains(0));
    }

    #[test]
    fn connect_rules_parse() {
        let ok: &[(&str, Target)] = &[
            ("*:*", Target::AnyHost),
            ("DB.internal:5432", Target::Name("db.internal".into())),
            ("*.internal:22", Target::Name("*.internal".into())),
            (
                "10.0.0.0/8:*",
                Target::Net("10.0.0.0/8".parse().expect("lit")),
            ),
            (
                "10.0.0.5:22",
                Target::Net("10.0.0.5/32".parse().expect("lit")),
            ),
            (
                "[fd00::/8]:22",
                Target::Net("fd00::/8".parse().expect("lit")),
            ),
            ("[::1]:22", Target::Net("::1/128".parse().expect("lit"))),
        ];
        for (s, want) in ok {
            assert_eq!(connect(s).map(|r| r.target), Ok(want.clone()), "{s}");
        }
        for bad in [
            "db.internal",
            "fd00::/8:22",
            "10.0.0.1/8:22",
            "10.*:22",
            "127.1:22",
            "db internal:22",
            "[fd00::/8:22",
            "[fd00::]22",
            ":22",
            "db:0",
            "db:",
            "a,b:22",
            "!bad:22",
        ] {
            assert!(connect(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listen_rules_parse() {
        let r = parse_listen("r".into(), "8080").expect("valid");
        assert_eq!((r.host, r.ports.contains(8080)), (ListenHost::Any, true));
        let r = parse_listen("r".into(), "localhost:9000-9100").expect("valid");
        assert_eq!(r.host, ListenHost::Localhost);
        let r = parse_listen("r".into(), "[::]:80").expect("valid");
        assert_eq!(r.host, ListenHost::Net("::/128".parse().expect("lit")));
        assert!(r.host.allows("::".parse().expect("lit")));
        assert!(!r.host.allows("0.0.0.0".parse().expect("lit")));
        assert!(parse_listen("r".into(), "example.com:80").is_err());
        assert!(parse_listen("r".into(), "*:0").is_ok());
    }

    #[test]
    fn name_rules_parse() {
        let r = parse_name_rule("r".into(), "Pi-*:22").expect("valid");
        assert!(r.matches_name("pi-home"));
        assert!(!r.matches_name("web"));
        for bad in ["10.0.0.1:22", "localhost:22", "pi:0", "pi", "[::1]:22"] {
            assert!(parse_name_rule("r".into(), bad).is_err(), "{bad}");
        }
    }
}
