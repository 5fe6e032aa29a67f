//! Values of the ssh_config keywords a tunnel user sets beyond the basics (AddressFamily,
//! RekeyLimit, EscapeChar, ForwardAgent), parsed with ssh's syntax and limits. Kept apart
//! from `options/`, which dispatches keywords, so each value's rules live in one place.

use std::time::Duration;

/// `AddressFamily` (`-4`/`-6`): which addresses to connect to and, for -L/-D without an
/// explicit address, which loopback or wildcard to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    #[default]
    Any,
    Inet,
    Inet6,
}

impl AddressFamily {
    pub fn parse(s: &str) -> Option<AddressFamily> {
        match s.to_ascii_lowercase().as_str() {
            "any" => Some(AddressFamily::Any),
            "inet" => Some(AddressFamily::Inet),
            "inet6" => Some(AddressFamily::Inet6),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AddressFamily::Any => "any",
            AddressFamily::Inet => "inet",
            AddressFamily::Inet6 => "inet6",
        }
    }

    pub fn allows(self, ip: &std::net::IpAddr) -> bool {
        match self {
            AddressFamily::Any => true,
            AddressFamily::Inet => ip.is_ipv4(),
            AddressFamily::Inet6 => ip.is_ipv6(),
        }
    }
}

/// `RekeyLimit bytes [time]`: `None` keeps the engine's default for that half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RekeyLimit {
    pub bytes: Option<u64>,
    pub time: Option<Duration>,
}

/// ssh refuses limits below this many bytes ("RekeyLimit too small").
const MIN_REKEY_BYTES: u64 = 16;

impl RekeyLimit {
    /// `default`/`none` or a size with an optional K, M or G suffix; then optionally
    /// `default`/`none` or a time (`30m`, `1h`).
    pub fn parse(args: &[String]) -> Result<RekeyLimit, String> {
        let expected = "bytes (with K, M or G) or default, then optionally a time or none";
        let (bytes, time) = match args {
            [b] => (b, None),
            [b, t] => (b, Some(t)),
            _ => return Err(expected.into()),
        };
        let bytes = match bytes.to_ascii_lowercase().as_str() {
            "default" | "none" => None,
            b => {
                let n = parse_size(b).ok_or_else(|| expected.to_string())?;
                if n != 0 && n < MIN_REKEY_BYTES {
                    return Err(format!(
                        "at least {MIN_REKEY_BYTES} bytes (RekeyLimit too small)"
                    ));
                }
                (n != 0).then_some(n)
            }
        };
        let time = match time.map(|t| t.to_ascii_lowercase()) {
            None => None,
            Some(t) if t == "default" || t == "none" => None,
            Some(t) => {
                let d = humantime_ssh(&t).ok_or_else(|| expected.to_string())?;
                (!d.is_zero()).then_some(d)
            }
        };
        Ok(RekeyLimit { bytes, time })
    }

    /// ssh -G's form: bytes (0 for the default) and seconds (0 for none).
    pub fn dump(&self) -> String {
        format!(
            "{} {}",
            self.bytes.unwrap_or(0),
            self.time.map(|t| t.as_secs()).unwrap_or(0)
        )
    }
}

/// ssh's `scan_scaled`: digits then an optional K/M/G (powers of 1024).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.char_indices().last()? {
        (i, 'k') => (&s[..i], 1u64 << 10),
        (i, 'm') => (&s[..i], 1 << 20),
        (i, 'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// ssh's time format (`90`, `1h30m`, units s/m/h/d/w), whole seconds.
fn humantime_ssh(s: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..end].parse().ok()?;
        let mut tail = rest[end..].chars();
        let mult = match tail.next() {
            None | Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            Some('w') => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
        rest = tail.as_str();
    }
    Some(Duration::from_secs(total))
}

/// `EscapeChar` / `-e`: warren never has an interactive TTY session, so the escape
/// character never applies; it is validated as ssh does and kept for `-G`.
pub fn parse_escape_char(s: &str) -> Option<String> {
    let ok = s == "none"
        || s.chars().count() == 1
        || (s.len() == 2 && s.starts_with('^') && s.as_bytes()[1].is_ascii_graphic());
    ok.then(|| s.to_string())
}

/// `IPQoS interactive [bulk]`: the IP type of service of the connection to the server.
/// Warren never has an interactive session, so the bulk value is the one used, as ssh
/// does for sessions without a TTY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpQos {
    /// The values as given, for -G.
    pub text: String,
    /// `None`: leave the system's default (`none`).
    pub bulk: Option<u32>,
}

impl IpQos {
    pub fn parse(args: &[String]) -> Result<IpQos, String> {
        let expected = "af11..af43, cs0..cs7, ef, le, lowdelay, throughput, reliability, \
                        none or a number, once or twice";
        let values = args
            .iter()
            .map(|a| tos_value(a).ok_or_else(|| expected.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let bulk = match values.as_slice() {
            [one] => *one,
            [_, bulk] => *bulk,
            _ => return Err(expected.into()),
        };
        Ok(IpQos {
            text: args.join(" "),
            bulk,
        })
    }
}

/// ssh's `parse_ipqos`: DSCP names shifted into the TOS byte, the old TOS names, `none`,
/// or a number (decimal, 0x hex or 0 octal) up to 255.
fn tos_value(name: &str) -> Option<Option<u32>> {
    let lower = name.to_ascii_lowercase();
    let dscp = |v: u32| Some(Some(v << 2));
    match lower.as_str() {
        "none" => return Some(None),
        "ef" => return dscp(46),
        "le" => return dscp(1),
        "lowdelay" => return Some(Some(0x10)),
        "throughput" => return Some(Some(0x08)),
        "reliability" => return Some(Some(0x04)),
        _ => {}
    }
    let b = lower.as_bytes();
    match b {
        [b'a', b'f', c @ b'1'..=b'4', p @ b'1'..=b'3'] => {
            return dscp(8 * u32::from(c - b'0') + 2 * u32::from(p - b'0'));
        }
        [b'c', b's', n @ b'0'..=b'7'] => return dscp(8 * u32::from(n - b'0')),
        _ => {}
    }
    let n = if let Some(hex) = lower.strip_prefix("0x") {
        u32::from_str_radix(hex, 16).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        u32::from_str_radix(&lower[1..], 8).ok()?
    } else {
        lower.parse().ok()?
    };
    (n <= 255).then_some(Some(n))
}

/// `SyslogFacility` (for `-y`), with syslog(3)'s numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogFacility(pub u8);

impl SyslogFacility {
    pub const USER: SyslogFacility = SyslogFacility(1);

    pub fn parse(s: &str) -> Option<SyslogFacility> {
        let upper = s.to_ascii_uppercase();
        let code = match upper.as_str() {
            "USER" => 1,
            "DAEMON" => 3,
            "AUTH" => 4,
            "AUTHPRIV" => 10,
            _ => match upper.strip_prefix("LOCAL")?.as_bytes() {
                [d @ b'0'..=b'7'] => 16 + (d - b'0'),
                _ => return None,
            },
        };
        Some(SyslogFacility(code))
    }

    pub fn name(self) -> String {
        match self.0 {
            1 => "USER".into(),
            3 => "DAEMON".into(),
            4 => "AUTH".into(),
            10 => "AUTHPRIV".into(),
            n => format!("LOCAL{}", n.saturating_sub(16)),
        }
    }
}

/// `SessionType`: what the session channel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    /// `-N`: no remote command at all.
    None,
    /// `-s`: the command names a subsystem.
    Subsystem,
    /// A command (or, for ssh, a shell).
    Default,
}

impl SessionType {
    pub fn parse(s: &str) -> Option<SessionType> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(SessionType::None),
            "subsystem" => Some(SessionType::Subsystem),
            "default" => Some(SessionType::Default),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SessionType::None => "none",
            SessionType::Subsystem => "subsystem",
            SessionType::Default => "default",
        }
    }
}

/// `ForwardAgent` (`-A`, `-a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardAgent {
    No,
    /// The agent of `SSH_AUTH_SOCK`.
    Yes,
    /// As ssh allows: this agent socket (unexpanded path) or `$VARIABLE` naming one.
    Socket(String),
}

impl ForwardAgent {
    pub fn parse(s: &str) -> Option<ForwardAgent> {
        match s.to_ascii_lowercase().as_str() {
            "yes" | "true" => Some(ForwardAgent::Yes),
            "no" | "false" => Some(ForwardAgent::No),
            _ if s.starts_with('/') || s.starts_with('~') || s.starts_with('$') => {
                Some(ForwardAgent::Socket(s.to_string()))
            }
            _ => None,
        }
    }

    /// ssh -G's form.
    pub fn dump(&self) -> &str {
        match self {
            ForwardAgent::No => "no",
            ForwardAgent::Yes => "yes",
            ForwardAgent::Socket(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn rekey_limits() {
        let r = RekeyLimit::parse(&args("1G 1h")).unwrap();
        assert_eq!(r.bytes, Some(1 << 30));
        assert_eq!(r.time, Some(Duration::from_secs(3600)));
        let r = RekeyLimit::parse(&args("64K")).unwrap();
        assert_eq!((r.bytes, r.time), (Some(65536), None));
        let r = RekeyLimit::parse(&args("default 30m")).unwrap();
        assert_eq!((r.bytes, r.time), (None, Some(Duration::from_secs(1800))));
        let r = RekeyLimit::parse(&args("500M none")).unwrap();
        assert_eq!((r.bytes, r.time), (Some(500 << 20), None));
        assert_eq!(r.dump(), format!("{} 0", 500u64 << 20));
        for bad in ["", "x", "10", "1T", "1G 1y", "1G 1h extra", "K"] {
            assert!(RekeyLimit::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ip_qos() {
        let bulk = |s: &str| IpQos::parse(&args(s)).map(|q| q.bulk);
        assert_eq!(bulk("af21 cs1"), Ok(Some(0x20)));
        assert_eq!(bulk("throughput"), Ok(Some(0x08)));
        assert_eq!(bulk("lowdelay none"), Ok(None));
        assert_eq!(bulk("ef"), Ok(Some(0xb8)));
        assert_eq!(bulk("af41 0x00"), Ok(Some(0)));
        assert_eq!(bulk("cs7"), Ok(Some(0xe0)));
        for bad in ["", "af51", "cs8", "256", "a b c", "fast"] {
            assert!(IpQos::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn families_escape_and_agent() {
        assert_eq!(AddressFamily::parse("INET6"), Some(AddressFamily::Inet6));
        assert_eq!(AddressFamily::parse("ipv4"), None);
        assert!(AddressFamily::Inet.allows(&"127.0.0.1".parse().unwrap()));
        assert!(!AddressFamily::Inet.allows(&"::1".parse().unwrap()));
        for ok in ["none", "~", "^]", "%"] {
            assert!(parse_escape_char(ok).is_some(), "{ok}");
        }
        for bad in ["ab", "^ ", "abc"] {
            assert!(parse_escape_char(bad).is_none(), "{bad}");
        }
        assert_eq!(ForwardAgent::parse("Yes"), Some(ForwardAgent::Yes));
        assert_eq!(
            ForwardAgent::parse("$MY_AGENT"),
            Some(ForwardAgent::Socket("$MY_AGENT".into()))
        );
        assert_eq!(ForwardAgent::parse("maybe"), None);
    }
}

/// `Tunnel`: whether -w/TunnelDevice opens a tunnel, and of which layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelMode {
    No,
    /// Layer 3 (tun); `yes` means this.
    PointToPoint,
    /// Layer 2 (tap).
    Ethernet,
}

impl TunnelMode {
    pub fn parse(s: &str) -> Option<TunnelMode> {
        match s.to_ascii_lowercase().as_str() {
            "no" | "false" => Some(TunnelMode::No),
            "yes" | "true" | "point-to-point" => Some(TunnelMode::PointToPoint),
            "ethernet" => Some(TunnelMode::Ethernet),
            _ => None,
        }
    }

    /// As `ssh -G` prints it.
    pub fn name(self) -> &'static str {
        match self {
            TunnelMode::No => "false",
            TunnelMode::PointToPoint => "point-to-point",
            TunnelMode::Ethernet => "ethernet",
        }
    }
}

/// A tunnel device number, or `any` (the system picks one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunUnit {
    Any,
    Unit(u32),
}

/// OpenSSH's SSH_TUNID_MAX: higher numbers are refused, as by ssh.
const TUN_UNIT_MAX: u32 = 0x7fff_fffd;

impl TunUnit {
    fn parse(s: &str) -> Option<TunUnit> {
        if s.eq_ignore_ascii_case("any") {
            return Some(TunUnit::Any);
        }
        let n: u32 = s.parse().ok()?;
        (n <= TUN_UNIT_MAX).then_some(TunUnit::Unit(n))
    }

    /// What goes on the wire in the channel open.
    pub fn wire(self) -> u32 {
        match self {
            TunUnit::Any => warren_ssh::proto::TUN_UNIT_ANY,
            TunUnit::Unit(n) => n,
        }
    }

    pub fn name(self) -> String {
        match self {
            TunUnit::Any => "any".into(),
            TunUnit::Unit(n) => n.to_string(),
        }
    }
}

/// `TunnelDevice` / `-w local_tun[:remote_tun]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelDevice {
    pub local: TunUnit,
    pub remote: TunUnit,
}

impl TunnelDevice {
    pub fn parse(s: &str) -> Option<TunnelDevice> {
        let (l, r) = match s.split_once(':') {
            Some((l, r)) => (l, Some(r)),
            None => (s, None),
        };
        Some(TunnelDevice {
            local: TunUnit::parse(l)?,
            remote: match r {
                Some(r) => TunUnit::parse(r)?,
                None => TunUnit::Any,
            },
        })
    }
}

impl Default for TunnelDevice {
    fn default() -> Self {
        TunnelDevice {
            local: TunUnit::Any,
            remote: TunUnit::Any,
        }
    }
}

#[cfg(test)]
mod tunnel_tests {
    use super::*;

    #[test]
    fn tunnel_device_and_mode_parse_as_ssh_does() {
        let d = |s| TunnelDevice::parse(s);
        assert_eq!(
            d("0"),
            Some(TunnelDevice {
                local: TunUnit::Unit(0),
                remote: TunUnit::Any
            })
        );
        assert_eq!(
            d("any:7"),
            Some(TunnelDevice {
                local: TunUnit::Any,
                remote: TunUnit::Unit(7)
            })
        );
        for bad in ["", "x", "1:", "-1", "2147483646", "0:0:0"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        assert_eq!(TunUnit::Any.wire(), 0x7fff_ffff);
        assert_eq!(TunnelMode::parse("yes"), Some(TunnelMode::PointToPoint));
        assert_eq!(TunnelMode::parse("Ethernet"), Some(TunnelMode::Ethernet));
        assert_eq!(TunnelMode::parse("no"), Some(TunnelMode::No));
        assert_eq!(TunnelMode::parse("tap"), None);
    }
}
