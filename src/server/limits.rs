//! The `[limits]` section: resource and brute-force limits, and the duration syntax they use.
//!
//! Defaults are chosen for a server reachable from the Internet; each is
//! explained in `examples/warrend.toml`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[limits]`. Defaults are conservative for an Internet-facing server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Authentication attempts per connection (sshd `MaxAuthTries`).
    pub max_auth_tries: u32,
    /// Time to authenticate before the connection is dropped (sshd `LoginGraceTime`).
    pub login_grace_time: ConfigDuration,
    /// Delay before each authentication failure is reported.
    pub auth_rejection_delay: ConfigDuration,
    /// Failed authentications allowed per source netblock within `failed_auth_window`.
    pub max_failed_auth_per_source: u32,
    /// Sliding window for `max_failed_auth_per_source`; a source over the limit is refused until old failures age out.
    pub failed_auth_window: ConfigDuration,
    /// IPv4 prefix length grouping sources for throttling.
    pub source_netblock_v4: u8,
    /// IPv6 prefix length grouping sources (one host usually owns a /64).
    pub source_netblock_v6: u8,
    /// Connections not yet authenticated, server-wide (sshd `MaxStartups`).
    pub max_unauthenticated: u32,
    /// Unauthenticated connections per source netblock (`PerSourceMaxStartups`).
    pub max_unauthenticated_per_source: u32,
    /// Unauthenticated connections from which new ones start being dropped at random
    /// (sshd `MaxStartups` start): a flood then cannot fill every slot before the
    /// login grace time frees them, so a real client retrying gets through. Unset: 32
    /// (half the default cap: sshd's 10 would drop bursts of parallel logins, which a
    /// bastion sees), or `max_unauthenticated` when that is lower (no early drop).
    pub unauthenticated_drop_start: Option<u32>,
    /// Percent chance of that drop at `unauthenticated_drop_start`, rising linearly to
    /// 100 at `max_unauthenticated` (sshd `MaxStartups` rate).
    pub unauthenticated_drop_rate: u32,
    /// Penalty for a source whose connection reached `login_grace_time` unauthenticated
    /// (sshd `PerSourcePenalties` grace-exceeded); 0 disables.
    pub penalty_grace_exceeded: ConfigDuration,
    /// Penalty for a source whose connection closed before completing key exchange
    /// (sshd `PerSourcePenalties` noauth, narrowed so that a client that merely fails
    /// to log in is left to `max_failed_auth_per_source`); 0 disables.
    pub penalty_noauth: ConfigDuration,
    /// Longest penalty; repeat offences double it up to this.
    pub penalty_max: ConfigDuration,
    /// Networks never penalised (CIDR or address).
    pub penalty_exempt: Vec<String>,
    /// Concurrent authenticated connections per user.
    pub max_sessions_per_user: u32,
    /// Open channels (forwarded connections) per connection.
    pub max_channels_per_session: u32,
    /// Open forwarded channels per user, over all their sessions.
    pub max_channels_per_user: u32,
    /// Open forwarded channels on the whole server.
    pub max_channels: u32,
    /// `-R` listeners and rendezvous per connection.
    pub max_listeners_per_session: u32,
    /// `-R` listeners and rendezvous per user, over all their sessions.
    pub max_listeners_per_user: u32,
    /// `-R` listeners and rendezvous on the whole server.
    pub max_listeners: u32,
    /// Timeout for dialling a `direct-tcpip` destination.
    pub connect_timeout: ConfigDuration,
    /// Time a `direct-tcpip` name may take to resolve; a resolver that never answers
    /// must not hold a lookup (and its slot) for longer.
    pub dns_timeout: ConfigDuration,
    /// DNS lookups in flight server-wide; more are refused at once, not queued.
    pub max_dns_lookups: u32,
    /// DNS lookups in flight per user, so one user's stuck names cannot use up the
    /// server-wide budget.
    pub max_dns_lookups_per_user: u32,
    /// Close a forwarded connection idle this long; 0 disables.
    pub channel_idle_timeout: ConfigDuration,
    /// Keepalive probe interval; 0 disables.
    pub keepalive_interval: ConfigDuration,
    /// Unanswered keepalives before the client is considered dead.
    pub keepalive_max: u32,
    /// "session" channels per connection (sshd `MaxSessions`); warrend only opens them to
    /// refuse shells in words, so a few suffice.
    pub max_session_channels: u32,
    /// Window growth beyond each channel's initial window that one user's sessions may
    /// claim together: what a peer can make warrend buffer for slow readers, since a
    /// window is granted back only as its reader consumes. Sessions draw from it as their
    /// windows grow and pay it back as they shrink or close (`forward::budget::WindowPoolOf`).
    pub max_buffered_per_user: ConfigSize,
    /// The same, for all users together.
    pub max_buffered: ConfigSize,
}

/// Where new connections start being dropped when `unauthenticated_drop_start` is unset.
pub const DEFAULT_DROP_START: u32 = 32;

impl Limits {
    /// `unauthenticated_drop_start` as applied: never above `max_unauthenticated`.
    pub fn drop_start(&self) -> u32 {
        self.unauthenticated_drop_start
            .unwrap_or(DEFAULT_DROP_START)
            .min(self.max_unauthenticated)
    }
}

impl Default for Limits {
    fn default() -> Self {
        let secs = |s| ConfigDuration(Duration::from_secs(s));
        Limits {
            max_auth_tries: 6,
            login_grace_time: secs(30),
            auth_rejection_delay: ConfigDuration(Duration::from_millis(250)),
            max_failed_auth_per_source: 10,
            failed_auth_window: secs(600),
            source_netblock_v4: 32,
            source_netblock_v6: 64,
            max_unauthenticated: 64,
            max_unauthenticated_per_source: 8,
            unauthenticated_drop_start: None,
            unauthenticated_drop_rate: 30,
            penalty_grace_exceeded: secs(10),
            penalty_noauth: secs(1),
            penalty_max: secs(600),
            penalty_exempt: vec!["127.0.0.0/8".into(), "::1".into()],
            max_sessions_per_user: 16,
            max_channels_per_session: 128,
            max_channels_per_user: 512,
            max_channels: 4096,
            max_listeners_per_session: 16,
            max_listeners_per_user: 64,
            max_listeners: 1024,
            connect_timeout: secs(10),
            dns_timeout: secs(5),
            max_dns_lookups: 32,
            max_dns_lookups_per_user: 4,
            channel_idle_timeout: secs(0),
            keepalive_interval: secs(30),
            keepalive_max: 3,
            max_session_channels: 10,
            max_buffered_per_user: ConfigSize(256 << 20),
            max_buffered: ConfigSize(1 << 30),
        }
    }
}

/// A duration written as seconds (`30`) or with a unit (`"250ms"`, `"30s"`,
/// `"5m"`, `"1h"`, `"1d"`); `0` or `"off"` means disabled where allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "DurationRepr", into = "String")]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// `None` when zero, for settings where 0 disables the feature.
    pub fn non_zero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Secs(u64),
    Text(String),
}

impl TryFrom<DurationRepr> for ConfigDuration {
    type Error = String;

    fn try_from(repr: DurationRepr) -> Result<Self, String> {
        match repr {
            DurationRepr::Secs(s) => Ok(ConfigDuration(Duration::from_secs(s))),
            DurationRepr::Text(t) => parse_duration(&t).map(ConfigDuration),
        }
    }
}

/// A byte count written as a number (`1048576`) or with a binary unit (`"64KiB"`,
/// `"256MiB"`, `"1GiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "SizeRepr", into = "SizeOut")]
pub struct ConfigSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for ConfigSize {
    type Error = String;

    fn try_from(repr: SizeRepr) -> Result<Self, String> {
        match repr {
            SizeRepr::Bytes(n) => Ok(ConfigSize(n)),
            SizeRepr::Text(t) => parse_size(&t).map(ConfigSize),
        }
    }
}

/// How `warrend -T` writes a duration: in the largest unit that divides it, so the
/// output reads back as the same value.
impl From<ConfigDuration> for String {
    fn from(d: ConfigDuration) -> String {
        let ms = d.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return format!("{ms}ms");
        }
        let secs = d.0.as_secs();
        let unit = [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|(n, _)| secs != 0 && secs.is_multiple_of(*n));
        match unit {
            Some((n, u)) => format!("{}{u}", secs / n),
            None => format!("{secs}s"),
        }
    }
}

/// A size as `-T` writes it: `"256MiB"` when a binary unit divides it, else bytes.
#[derive(Serialize)]
#[serde(untagged)]
enum SizeOut {
    Bytes(u64),
    Text(String),
}

impl From<ConfigSize> for SizeOut {
    fn from(s: ConfigSize) -> SizeOut {
        let unit = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
            .into_iter()
            .find(|(n, _)| s.0 != 0 && s.0.is_multiple_of(*n));
        match unit {
            Some((n, u)) => SizeOut::Text(format!("{}{u}", s.0 / n)),
            None => SizeOut::Bytes(s.0),
        }
    }
}

/// Parses `"4096"`, `"64KiB"`, `"256MiB"`, `"1GiB"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || {
        format!("invalid size '{s}': expected a number of bytes, optionally with KiB, MiB or GiB")
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"`, `"0"`, `"off"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "off" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || format!("invalid duration '{s}': expected a number with unit ms, s, m, h or d");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err(bad()),
    }
}
