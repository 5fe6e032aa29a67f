//! Turns the host strings clients send into one canonical form, so that no spelling of an address can slip past a rule.
//!
//! A `direct-tcpip` host is dialled by the server's resolver, which accepts far
//! more than dotted quads: `inet_aton` reads `127.1`, `0x7f000001`,
//! `2130706433` and `017700000001` as 127.0.0.1, and `[::ffff:127.0.0.1]` is
//! the same socket again. If policy compared strings, each of these would be a
//! way around a rule, so every host is first classified here: either it is a
//! numeric address (whatever its spelling) or it is a syntactically valid DNS
//! name. Anything else is refused, including names whose last label is
//! numeric, because a resolver may still read those as addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Longest DNS name (RFC 1035), without the optional trailing dot.
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// A client-supplied host after classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A numeric address in canonical form (IPv4-mapped IPv6 becomes IPv4).
    Ip(IpAddr),
    /// A DNS name, lowercased and without a trailing dot, so that
    /// `DB.Internal.` and `db.internal` meet the same rules.
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Classifies a host string the way the system resolver would read it.
///
/// Errors are short lowercase reasons meant for the audit log and the peer.
pub fn parse_host(raw: &str) -> Result<Host, String> {
    if raw.is_empty() {
        return Err("empty host".into());
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("unbalanced '[' in host {raw:?}"))?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(canonical_ip(IpAddr::V6(ip))))
            .map_err(|_| format!("{raw:?} is not an IPv6 address"));
    }
    if raw.contains(':') {
        return raw
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(canonical_ip(IpAddr::V6(ip))))
            .map_err(|_| format!("{raw:?} is not an IPv6 address"));
    }
    // One trailing dot is the DNS root; resolvers ignore it, and so must we,
    // or `127.0.0.1.` would be a name that resolves to loopback.
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if let Some(ip) = parse_ipv4_legacy(trimmed) {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    validate_name(trimmed)?;
    Ok(Host::Name(trimmed.to_ascii_lowercase()))
}

/// Parses IPv4 in every form glibc's `inet_aton` accepts: one to four parts,
/// each decimal, octal (leading `0`) or hex (`0x`), the last part filling the
/// remaining bytes. Unlike `inet_aton`, trailing text is never accepted.
pub fn parse_ipv4_legacy(s: &str) -> Option<Ipv4Addr> {
    let mut parts = Vec::with_capacity(4);
    for part in s.split('.') {
        if parts.len() == 4 {
            return None;
        }
        parts.push(parse_aton_part(part)?);
    }
    let (&last, init) = parts.split_last()?;
    if init.iter().any(|&p| p > 0xff) {
        return None;
    }
    // Bits left for the final part: `127.1` puts 1 into the low 24 bits.
    let last_bits = 32 - 8 * init.len() as u32;
    if last_bits < 32 && last >> last_bits != 0 {
        return None;
    }
    let high = init
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &p)| acc | (p << (24 - 8 * i as u32)));
    Some(Ipv4Addr::from(high | last))
}

/// One `inet_aton` component, as glibc reads it.
fn parse_aton_part(part: &str) -> Option<u32> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            // glibc accepts a bare `0x` as zero.
            if hex.is_empty() {
                return Some(0);
            }
            (hex, 16)
        } else if let Some(octal) = part.strip_prefix('0').filter(|rest| !rest.is_empty()) {
            (octal, 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// Maps IPv4-mapped IPv6 (`::ffff:a.b.c.d`) to plain IPv4: the kernel
/// delivers both to the same IPv4 socket, so rules must see one address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Same as [`canonical_ip`] for networks, so a configured
/// `::ffff:10.0.0.0/104` matches canonical IPv4 addresses.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// Checks RFC 1123 host-name syntax (plus `_`, which real zones use), and
/// refuses numeric-looking final labels: `1.2.3.4.5` or `10.0x1` are not
/// addresses to us, but some resolver might decide they are.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("invalid host name {name:?}: bad length"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "invalid host name {name:?}: empty or overlong label"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("invalid host name {name:?}: bad character"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "invalid host name {name:?}: label starts or ends with '-'"
            ));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if looks_numeric(last) {
        return Err(format!(
            "invalid host name {name:?}: looks like a malformed IP address"
        ));
    }
    Ok(())
}

/// A label a resolver might take for part of a number: all digits, or `0x`
/// followed by hex digits.
fn looks_numeric(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(h) => h.chars().all(|c| c.is_ascii_hexdigit()),
        None => label.chars().all(|c| c.is_ascii_digit()),
    }
}

/// Names that never reach DNS and always mean this machine (RFC 6761), so
/// their loopback addresses are checked even if the caller's resolver
/// returned something else.
pub fn is_localhost_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Networks a name rule may never reach unless a network rule names them:
/// this host (loopback, `0.0.0.0`, `::`, which Linux routes to the host),
/// link-local, and the cloud metadata and agent endpoints that live outside
/// it. Each of those hands out the machine's credentials or configuration to
/// whoever asks from the machine, which through a tunnel means the user.
/// New entries go at the end: the audit names them by index when an operator
/// copies the list into their config.
pub const DEFAULT_DENY_NETWORKS: &[&str] = &[
    "127.0.0.0/8",
    "0.0.0.0/8",
    // Every cloud's 169.254.169.254 (AWS, GCP, Azure, OpenStack, ...), AWS
    // ECS/EKS credential agents (169.254.170.2, .23), Tencent's 169.254.0.23.
    "169.254.0.0/16",
    "::1/128",
    "::/128",
    // Link-local v6, including OpenStack's metadata at fe80::a9fe:a9fe.
    "fe80::/10",
    // Alibaba Cloud ECS metadata.
    "100.100.100.200/32",
    // Oracle Cloud's legacy metadata address.
    "192.0.0.192/32",
    // Azure WireServer: VM agent configuration, extensions and their secrets.
    "168.63.129.16/32",
    // AWS instance metadata (IMDS) over IPv6 on Nitro instances.
    "fd00:ec2::254/128",
    // AWS EKS Pod Identity Agent over IPv6: pod role credentials.
    "fd00:ec2::23/128",
];

/// Parses a network or single address as written in config or key options.
///
/// Host bits must be zero (`10.0.0.1/8` is refused with the intended
/// network), because a typo that silently widens a rule is worse than an error.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let net = if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| format!("{s:?} is not a network (CIDR)"))?
    } else {
        let ip = s
            .parse::<IpAddr>()
            .map_err(|_| format!("{s:?} is not an IP address"))?;
        IpNet::from(ip)
    };
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(canonical_net(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Host {
        Host::Ip(IpAddr::V4(s.parse().expect("test literal")))
    }

    #[test]
    fn legacy_ipv4_spellings_all_mean_loopback() {
        for s in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "0x7f000001",
            "0X7F000001",
            "2130706433",
            "017700000001",
            "0x7f.1",
            "0177.0.0.1",
            "0x7f.0x0.0x0.0x1",
            "127.0.0.1.",
            "[::ffff:127.0.0.1]",
            "::ffff:127.0.0.1",
            "[::FFFF:7f00:1]",
        ] {
            assert_eq!(parse_host(s), Ok(v4("127.0.0.1")), "{s}");
        }
        assert_eq!(parse_host("0"), Ok(v4("0.0.0.0")));
        assert_eq!(parse_host("0x"), Ok(v4("0.0.0.0")));
        assert_eq!(parse_host("4294967295"), Ok(v4("255.255.255.255")));
        assert_eq!(parse_host("10.65535"), Ok(v4("10.0.255.255")));
    }

    #[test]
    fn malformed_numbers_are_not_names() {
        for s in [
            "4294967296",
            "256.0.0.1",
            "1.2.3.4.5",
            "08",
            "1.2.3.256",
            "10.16777216",
            "127.0.0.1..",
            "1..2",
            "127.0.0.1 x",
            "[::1",
            "::1%eth0",
            "[fe80::1%25eth0]",
            "",
            "a_b..c",
            "-a.com",
            "a b",
            "evil\0.com",
        ] {
            assert!(parse_host(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            parse_host("DB.Internal."),
            Ok(Host::Name("db.internal".into()))
        );
        assert_eq!(
            parse_host("_srv.example.com"),
            Ok(Host::Name("_srv.example.com".into()))
        );
        assert_eq!(
            parse_host("0xdb.example"),
            Ok(Host::Name("0xdb.example".into()))
        );
        assert_eq!(parse_host("1.2.3.x"), Ok(Host::Name("1.2.3.x".into())));
        // inet_aton stops at 'g' and fails, so this is a name to the resolver too.
        assert_eq!(parse_host("0xfg"), Ok(Host::Name("0xfg".into())));
        assert_eq!(
            parse_host("[::1]"),
            Ok(Host::Ip("::1".parse().expect("lit")))
        );
    }

    #[test]
    fn nets_refuse_host_bits_and_unmap() {
        assert!(parse_net("10.0.0.1/8").is_err());
        assert_eq!(
            parse_net("10.0.0.5").map(|n| n.to_string()),
            Ok("10.0.0.5/32".into())
        );
        assert_eq!(
            parse_net("::ffff:10.0.0.0/104").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        for s in DEFAULT_DENY_NETWORKS {
            assert!(parse_net(s).is_ok(), "{s}");
        }
    }
}
