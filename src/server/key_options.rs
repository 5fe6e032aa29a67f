//! The meaning of OpenSSH `authorized_keys` options for a tunnel-only server: which ones narrow, which are refused.
//!
//! Options follow sshd's `sshauthopt_parse()`: names are case-insensitive,
//! applied left to right (so `restrict,port-forwarding` re-enables forwarding
//! while `port-forwarding,restrict` does not), and an unknown option refuses
//! the whole key. Options only ever narrow what the user's config rules
//! allow; none can widen them.
//!
//! Choices for a server without shells:
//! - `command=` refuses the key: it promises the key can only run one
//!   program, a promise about shell semantics warrend cannot keep or check.
//! - `cert-authority` and `principals=` refuse the key: trusted CAs belong in
//!   `[user_ca]` in warrend.toml, where they are visible to the admin.
//! - `verify-required` refuses the key: warrend cannot enforce FIDO user
//!   verification, and ignoring it would silently weaken the key.
//! - `no-pty`, `pty`, `no-agent-forwarding`, `agent-forwarding`,
//!   `no-X11-forwarding`, `X11-forwarding`, `no-user-rc`, `user-rc`,
//!   `environment=`, `tunnel=`, `touch-required` are accepted and have no
//!   effect: warrend never offers what they control.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::address::{Host, canonical_ip, parse_host, parse_ipv4_legacy};
use crate::config::pattern::{PatternMatch, match_pattern, match_pattern_list};

/// Restrictions and permissions attached to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOptions {
    /// Where the key came from (`/home/a/keys:3`), so audit lines and
    /// decisions can name the option that narrowed a request.
    pub origin: String,
    /// Cleared by `restrict` and `no-port-forwarding`; when false the key
    /// can authenticate but forwards nothing.
    pub port_forwarding: bool,
    /// `permitopen`: when non-empty, `direct-tcpip` must also match one.
    pub permit_open: Vec<PermitOpen>,
    /// `permitlisten`: when non-empty, `tcpip-forward` must also match one.
    pub permit_listen: Vec<PermitListen>,
    /// `from=` pattern list (or a certificate's `source-address`).
    pub from: Option<SourceList>,
    /// `expiry-time`, the earliest if given several times.
    pub expiry: Option<SystemTime>,
    /// `no-touch-required`: a FIDO key may sign without user presence.
    pub no_touch_required: bool,
}

impl KeyOptions {
    /// Options of a key line without any: everything the config allows.
    pub fn unrestricted(origin: impl Into<String>) -> KeyOptions {
        KeyOptions {
            origin: origin.into(),
            port_forwarding: true,
            permit_open: Vec::new(),
            permit_listen: Vec::new(),
            from: None,
            expiry: None,
            no_touch_required: false,
        }
    }

    /// Checks what must hold at login: the key has not expired and the
    /// client address satisfies `from=`. The error is a reason for the log.
    pub fn check_login(&self, client: IpAddr, now: SystemTime) -> Result<(), String> {
        if let Some(expiry) = self.expiry
            && now >= expiry
        {
            return Err(format!("key {} has expired (expiry-time)", self.origin));
        }
        if let Some(from) = &self.from
            && !from.matches(client)
        {
            return Err(format!(
                "key {} is not allowed from {} ({}=\"{}\")",
                self.origin,
                canonical_ip(client),
                from.option_name(),
                from.list
            ));
        }
        Ok(())
    }
}

/// A `permitopen="host:port"` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitOpen {
    /// Host part: `*`, an address, or a literal name (no patterns, as in OpenSSH).
    pub host: PermitHost,
    /// `None` for `*`.
    pub port: Option<u16>,
}

/// Host part of a `permitopen` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermitHost {
    /// `*`.
    Any,
    /// An address; matches any spelling of the same address.
    Ip(IpAddr),
    /// A literal name, compared case-insensitively.
    Name(String),
}

impl PermitOpen {
    /// True if a request for `host:port` matches this entry.
    pub fn matches(&self, host: &Host, port: u16) -> bool {
        let host_ok = match (&self.host, host) {
            (PermitHost::Any, _) => true,
            (PermitHost::Ip(a), Host::Ip(b)) => a == b,
            (PermitHost::Name(a), Host::Name(b)) => a == b,
            _ => false,
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// A `permitlisten="[host:]port"` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitListen {
    /// Lowercase wildcard pattern over the bind address *as the client sent
    /// it* (`localhost`, `*`, an address, or a rendezvous name), as in OpenSSH.
    pub host: String,
    /// `None` for `*`.
    pub port: Option<u16>,
}

impl PermitListen {
    /// True if a `tcpip-forward` for `address:port` matches this entry.
    pub fn matches(&self, address: &str, port: u32) -> bool {
        let port_ok = match self.port {
            None => true,
            Some(p) => u32::from(p) == port,
        };
        port_ok && match_pattern(&address.to_ascii_lowercase(), &self.host)
    }
}

/// A `from=` list (OpenSSH pattern list with CIDR entries), or a
/// certificate's `source-address` (CIDR entries only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceList {
    /// The list as written.
    pub list: String,
    /// True for a certificate's `source-address`.
    pub cidr_only: bool,
}

impl SourceList {
    /// Validates a `from=` list like sshd's `addr_match_list()` would at
    /// login, so a broken list refuses the key at load time instead.
    pub fn from_option(list: &str) -> Result<SourceList, String> {
        for entry in list.split(',') {
            let entry = entry.strip_prefix('!').unwrap_or(entry);
            if entry.is_empty() {
                return Err(format!("empty entry in from=\"{list}\""));
            }
            if let Some(Err(e)) = parse_cidr_entry(entry) {
                return Err(format!("from=\"{list}\": {e}"));
            }
        }
        Ok(SourceList {
            list: list.to_owned(),
            cidr_only: false,
        })
    }

    /// Validates a certificate `source-address` (`addr_match_cidr_list()`):
    /// addresses and CIDRs only, no negation or wildcards.
    pub fn from_certificate(list: &str) -> Result<SourceList, String> {
        for entry in list.split(',') {
            match parse_cidr_entry(entry) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("source-address \"{list}\": {e}")),
                None => return Err(format!("source-address \"{list}\": bad entry '{entry}'")),
            }
        }
        Ok(SourceList {
            list: list.to_owned(),
            cidr_only: true,
        })
    }

    fn option_name(&self) -> &'static str {
        if self.cidr_only {
            "source-address"
        } else {
            "from"
        }
    }

    /// Matches the client address as sshd's `match_host_and_ip()` does with
    /// `UseDNS no`: the address is checked as an address (CIDR entries) and
    /// as a host name string (wildcard entries); any negated hit refuses.
    pub fn matches(&self, client: IpAddr) -> bool {
        let client = canonical_ip(client);
        let mut ip_hit = false;
        for entry in self.list.split(',') {
            let (negated, pat) = match entry.strip_prefix('!') {
                Some(p) if !self.cidr_only => (true, p),
                _ => (false, entry),
            };
            let hit = match parse_cidr_entry(pat) {
                Some(Ok(net)) => net.contains(&client),
                Some(Err(_)) => return false,
                None if self.cidr_only => return false,
                None => match_pattern(&client.to_string(), pat),
            };
            if hit && negated {
                return false;
            }
            ip_hit |= hit;
        }
        if self.cidr_only {
            return ip_hit;
        }
        // The host-name pass: without DNS the "name" is the address text.
        match match_pattern_list(&client.to_string(), &self.list, true) {
            PatternMatch::NegatedMatch => false,
            PatternMatch::Matched => true,
            PatternMatch::NoMatch => ip_hit,
        }
    }
}

/// `Some` if `entry` is meant as an address or CIDR (no wildcards), with an
/// error for inconsistent masks, like `addr_pton_cidr()`.
fn parse_cidr_entry(entry: &str) -> Option<Result<ipnet::IpNet, String>> {
    if entry.contains(['*', '?']) {
        return None;
    }
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (entry, None),
    };
    let ip = match addr.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(parse_ipv4_legacy(addr)?),
    };
    let ip = canonical_ip(ip);
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Some(Err(format!("bad mask length in '{entry}'"))),
        },
    };
    let net = ipnet::IpNet::new(ip, len).map_err(|e| e.to_string());
    Some(net.and_then(|n| {
        if n.trunc() == n {
            Ok(n)
        } else {
            Err(format!("inconsistent mask length for '{entry}'"))
        }
    }))
}

/// Parses `permitopen` (`bare_port == false`) or `permitlisten` values.
pub fn parse_permit(value: &str, bare_port: bool) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in \"{value}\""))?;
        let p = after
            .strip_prefix(':')
            .ok_or_else(|| format!("missing port in \"{value}\""))?;
        (h, p)
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            Some(_) => return Err(format!("IPv6 address must be in brackets in \"{value}\"")),
            None if bare_port => ("*", value),
            None => return Err(format!("missing port in \"{value}\"")),
        }
    };
    if host.is_empty() {
        return Err(format!("invalid permission hostname in \"{value}\""));
    }
    let port = match port {
        "*" => None,
        p => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("invalid permission port in \"{value}\"")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Builds a [`PermitOpen`] from its option value.
pub fn parse_permit_open(value: &str) -> Result<PermitOpen, String> {
    let (host, port) = parse_permit(value, false)?;
    let host = if host == "*" {
        PermitHost::Any
    } else if host.contains(['*', '?']) {
        return Err(format!(
            "permitopen=\"{value}\": hosts are literal, wildcards are not supported (use connect rules in warrend.toml)"
        ));
    } else {
        match parse_host(&host).map_err(|e| format!("permitopen=\"{value}\": {e}"))? {
            Host::Ip(ip) => PermitHost::Ip(ip),
            Host::Name(n) => PermitHost::Name(n),
        }
    };
    Ok(PermitOpen { host, port })
}

/// Builds a [`PermitListen`] from its option value.
pub fn parse_permit_listen(value: &str) -> Result<PermitListen, String> {
    let (host, port) = parse_permit(value, true)?;
    Ok(PermitListen {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Parses `expiry-time`: `YYYYMMDD[HHMM[SS]]` with an optional `Z` or `UTC`
/// suffix, as sshd's `parse_absolute_time()`.
///
/// Without a suffix sshd reads local time. warrend has no time-zone
/// database, so it takes the earliest instant that local time could denote
/// anywhere (UTC+14): the key may expire up to a day early, never late.
/// Write `Z` to be exact.
pub fn parse_expiry(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("invalid expiry-time \"{s}\"");
    let upper = s.to_ascii_uppercase();
    let (digits, utc) = if let Some(d) = upper.strip_suffix("UTC") {
        (d, true)
    } else if let Some(d) = upper.strip_suffix('Z') {
        (d, true)
    } else {
        (upper.as_str(), false)
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let field = |from: usize, to: usize| -> i64 {
        digits
            .get(from..to)
            .and_then(|f| f.parse().ok())
            .unwrap_or(-1)
    };
    let (year, month, day) = (field(0, 4), field(4, 6), field(6, 8));
    let (hour, min, sec) = match digits.len() {
        8 => (0, 0, 0),
        12 => (field(8, 10), field(10, 12), 0),
        _ => (field(8, 10), field(10, 12), field(12, 14)),
    };
    if year < 1970
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&min)
        || !(0..=60).contains(&sec)
    {
        return Err(bad());
    }
    let mut secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec;
    if !utc {
        secs -= 14 * 3600;
    }
    let secs = u64::try_from(secs)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(bad)?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test literal")
    }

    fn unix(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn expiry_forms() {
        assert_eq!(parse_expiry("20300101Z").map(unix), Ok(1_893_456_000));
        assert_eq!(parse_expiry("203001010000UTC").map(unix), Ok(1_893_456_000));
        assert_eq!(parse_expiry("20300101000001z").map(unix), Ok(1_893_456_001));
        assert_eq!(parse_expiry("20240229Z").map(unix), Ok(1_709_164_800));
        // Local time: the earliest instant it could be anywhere.
        assert_eq!(
            parse_expiry("20300101").map(unix),
            Ok(1_893_456_000 - 14 * 3600)
        );
        for bad in [
            "2030010",
            "20301301Z",
            "20230229Z",
            "203001012400Z",
            "19690101Z",
            "2030-01-01",
            "",
            "Z",
            "20300101ZZ",
        ] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn from_lists() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.1.2.3", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("!10.0.0.5,10.0.0.0/8", "10.0.0.5", false),
            ("!10.0.0.5,10.0.0.0/8", "10.0.0.6", true),
            ("192.168.1.*", "192.168.1.7", true),
            ("192.168.1.*,!192.168.1.7", "192.168.1.7", false),
            ("2001:db8::/32", "2001:db8::1", true),
            ("host.example.com", "10.0.0.1", false),
            ("*", "203.0.113.9", true),
        ];
        for &(list, client, want) in cases {
            let l = SourceList::from_option(list).expect("valid");
            assert_eq!(l.matches(ip(client)), want, "from={list} client={client}");
        }
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "a,,b", "!", ""] {
            assert!(SourceList::from_option(bad).is_err(), "{bad:?}");
        }
        let cert = SourceList::from_certificate("10.0.0.0/8,192.0.2.1").expect("valid");
        assert!(cert.matches(ip("192.0.2.1")));
        assert!(!cert.matches(ip("192.0.2.2")));
        assert!(SourceList::from_certificate("10.*").is_err());
    }

    #[test]
    fn permits() {
        let po = parse_permit_open("DB.internal:5432").expect("valid");
        assert!(po.matches(&Host::Name("db.internal".into()), 5432));
        assert!(!po.matches(&Host::Name("db.internal".into()), 5433));
        let po = parse_permit_open("127.0.0.1:*").expect("valid");
        assert!(po.matches(&Host::Ip(ip("127.0.0.1")), 1));
        assert!(parse_permit_open("[::1]:22").is_ok());
        for bad in ["db", "db:0", "db:x", "::1:22", ":22", "db:65536"] {
            assert!(parse_permit_open(bad).is_err(), "{bad}");
        }
        let pl = parse_permit_listen("8080").expect("valid");
        assert!(pl.matches("", 8080) && pl.matches("localhost", 8080) && !pl.matches("", 8081));
        let pl = parse_permit_listen("LOCALHOST:*").expect("valid");
        assert!(pl.matches("localhost", 1) && !pl.matches("0.0.0.0", 1));
    }
}
