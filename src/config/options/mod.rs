//! Applies OpenSSH `-o Key=Value` client options with the same syntax and first-value-wins rules as ssh(1).
//!
//! Users carry `-o` flags over from their `ssh` command lines, so a keyword
//! must be accepted, refused or ignored here exactly where ssh would: every
//! ssh_config(5) keyword is known, the ones Warren does not implement are
//! reported as [`ApplyOutcome::Unsupported`] (the caller warns and carries on,
//! rather than failing on options that make no difference to a tunnel), and
//! only words that are not ssh options at all are errors.

use std::borrow::Cow;
use std::time::Duration;

use super::forward::{self, DynamicForward, ForwardKind, LocalForward, RemoteForward, SpecError};
use super::pattern::match_pattern;
use super::values::{
    self, AddressFamily, ForwardAgent, IpQos, RekeyLimit, SessionType, SyslogFacility,
    TunnelDevice, TunnelMode,
};

/// ssh's own caps; enforcing them here keeps a runaway config from being
/// accepted by Warren and then refused by ssh.
const MAX_IDENTITY_FILES: usize = 100;
const MAX_HOSTS_FILES: usize = 32;

/// Why an option was refused; the text follows ssh's wording where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The argument has no keyword, e.g. `-o ''` or `-o =yes`.
    #[error("missing keyword in option '{0}' (expected Key=Value)")]
    MissingKeyword(String),
    /// Not an ssh_config(5) keyword at all (ssh's exact message).
    #[error("Bad configuration option: {0}")]
    UnknownKeyword(String),
    /// A keyword with nothing after it.
    #[error("no argument after keyword \"{0}\"")]
    MissingValue(String),
    /// A known keyword with a value it does not accept.
    #[error("{keyword}: bad value '{value}' (expected {expected})")]
    BadValue {
        /// Canonical spelling of the keyword.
        keyword: String,
        /// The value as given.
        value: String,
        /// What would have been accepted, and why this was not.
        expected: String,
    },
    /// `Host`, `Match` and `Include` open config-file blocks; like ssh, they
    /// make no sense as a single `-o`.
    #[error("{0} directive not supported as a command-line option")]
    Directive(String),
}

/// What [`Options::apply`] did with a well-formed option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Stored (or, for list keywords, appended).
    Applied,
    /// Valid, but an earlier value already won, or the list entry is a duplicate.
    Ignored,
    /// A real ssh option that Warren does not implement: warn, don't fail.
    Unsupported,
}

/// `StrictHostKeyChecking`: how to treat unknown and changed host keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// Refuse unknown hosts (`yes`, `true`).
    Yes,
    /// Record unknown hosts, refuse changed keys (`accept-new`).
    AcceptNew,
    /// Record unknown hosts, and connect despite changed keys with only
    /// limited forwarding (`no`, `off`, `false`).
    No,
    /// Prompt for unknown hosts (`ask`, ssh's default).
    Ask,
}

/// `LogLevel`, in increasing verbosity; `DEBUG` is `DEBUG1`, as in ssh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `QUIET`
    Quiet,
    /// `FATAL`
    Fatal,
    /// `ERROR`
    Error,
    /// `INFO`
    Info,
    /// `VERBOSE`
    Verbose,
    /// `DEBUG` or `DEBUG1`
    Debug1,
    /// `DEBUG2`
    Debug2,
    /// `DEBUG3`
    Debug3,
}

/// `IdentityAgent`: where to find the agent socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityAgent {
    /// `none`: use no agent at all.
    Disabled,
    /// Read the socket path from this environment variable: `SSH_AUTH_SOCK`
    /// (the default) or a `$NAME` value.
    Env(String),
    /// A socket path, still unexpanded (`~`, `%d`, `${VAR}`): expansion needs
    /// the environment, which this module does not touch.
    Path(String),
}

/// Options given with `-o`; `None` or an empty list means "not set", so
/// the caller can fall back to config files and then to defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `HostName`
    pub host_name: Option<String>,
    /// `User`
    pub user: Option<String>,
    /// `Port`, 1..=65535.
    pub port: Option<u16>,
    /// `IdentityFile`, unexpanded, in order, duplicates dropped.
    pub identity_files: Vec<String>,
    /// `CertificateFile`, likewise.
    pub certificate_files: Vec<String>,
    /// `UserKnownHostsFile`, unexpanded; `["none"]` disables the user files.
    /// The whole list is one value, so the first list given wins.
    pub user_known_hosts_files: Option<Vec<String>>,
    /// `GlobalKnownHostsFile`, like `user_known_hosts_files`.
    pub global_known_hosts_files: Option<Vec<String>>,
    /// `StrictHostKeyChecking`
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `BatchMode`
    pub batch_mode: Option<bool>,
    /// `ExitOnForwardFailure`
    pub exit_on_forward_failure: Option<bool>,
    /// `ConnectTimeout`; `none` and `0` leave it unset (no timeout), and as in
    /// ssh a later value can then still set it.
    pub connect_timeout: Option<Duration>,
    /// `PasswordAuthentication`
    pub password_authentication: Option<bool>,
    /// `KbdInteractiveAuthentication` (alias `ChallengeResponseAuthentication`).
    pub kbd_interactive_authentication: Option<bool>,
    /// `PubkeyAuthentication`; ssh's `unbound` and `host-bound` both mean yes.
    pub pubkey_authentication: Option<bool>,
    /// `IdentitiesOnly`
    pub identities_only: Option<bool>,
    /// `IdentityAgent`
    pub identity_agent: Option<IdentityAgent>,
    /// `HashKnownHosts`
    pub hash_known_hosts: Option<bool>,
    /// `GatewayPorts`
    pub gateway_ports: Option<bool>,
    /// `LogLevel`
    pub log_level: Option<LogLevel>,
    /// `LocalForward`, in order, duplicates dropped.
    pub local_forwards: Vec<LocalForward>,
    /// `RemoteForward`, in order, duplicates dropped.
    pub remote_forwards: Vec<RemoteForward>,
    /// `DynamicForward`, in order, duplicates dropped.
    pub dynamic_forwards: Vec<DynamicForward>,
    /// `ServerAliveInterval`; zero disables keepalives, `none` leaves it unset.
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`
    pub server_alive_count_max: Option<u32>,
    /// `ConnectionAttempts`
    pub connection_attempts: Option<u32>,
    /// `Compression` (ssh accepts only `yes` and `no` here).
    pub compression: Option<bool>,
    /// `ProxyJump`, as given; `none` explicitly disables jumping.
    pub proxy_jump: Option<String>,
    /// `ProxyCommand`, verbatim (quotes kept for the shell); `none` disables it.
    pub proxy_command: Option<String>,
    /// `Ciphers`, as given (ssh's `+`, `-`, `^` prefixes included).
    pub ciphers: Option<String>,
    /// `KexAlgorithms`, as given (same prefixes).
    pub kex_algorithms: Option<String>,
    /// `MACs`, as given (same prefixes).
    pub macs: Option<String>,
    /// `HostKeyAlgorithms`, as given (same prefixes).
    pub host_key_algorithms: Option<String>,
    /// `HostKeyAlias`
    pub host_key_alias: Option<String>,
    /// `AddressFamily` (`-4`, `-6`).
    pub address_family: Option<AddressFamily>,
    /// `BindAddress` (`-b`): the source address of the connection to the server.
    pub bind_address: Option<String>,
    /// `BindInterface` (`-B`): take the source address from this interface.
    pub bind_interface: Option<String>,
    /// `RekeyLimit`
    pub rekey_limit: Option<RekeyLimit>,
    /// `ForwardAgent` (`-A`, `-a`).
    pub forward_agent: Option<ForwardAgent>,
    /// `EscapeChar` (`-e`), validated and kept for `-G` only.
    pub escape_char: Option<String>,
    /// `Tag` (`-P`), for `Match tagged` and `-G`.
    pub tag: Option<String>,
    /// `SessionType` (`-N` none, `-s` subsystem).
    pub session_type: Option<SessionType>,
    /// `Tunnel` (-w turns it on when unset or no).
    pub tunnel: Option<TunnelMode>,
    /// `TunnelDevice` (`-w`).
    pub tunnel_device: Option<TunnelDevice>,
    /// `StdinNull` (`-n`).
    pub stdin_null: Option<bool>,
    /// `ForkAfterAuthentication` (`-f`).
    pub fork_after_authentication: Option<bool>,
    /// `TCPKeepAlive` (alias `KeepAlive`).
    pub tcp_keep_alive: Option<bool>,
    /// `IPQoS`
    pub ip_qos: Option<IpQos>,
    /// `SendEnv` patterns in order; `-pattern` entries removed earlier matches.
    pub send_env: Vec<String>,
    /// `SetEnv NAME=VALUE...`; the first line wins whole, as in ssh.
    pub set_env: Option<Vec<(String, String)>>,
    /// `GSSAPIAuthentication`: validated and shown by -G. Warren has no GSSAPI, so `yes`
    /// ends like ssh's attempt without a Kerberos ticket: the next method is tried.
    pub gssapi_authentication: Option<bool>,
    /// `ClearAllForwardings`: no -L, -R or -D at all, from anywhere.
    pub clear_all_forwardings: Option<bool>,
    /// `StreamLocalBindUnlink`: remove a stale unix socket before listening on it.
    pub stream_local_bind_unlink: Option<bool>,
    /// `SyslogFacility` for -y, as syslog(3) numbers it.
    pub syslog_facility: Option<SyslogFacility>,
    /// `ControlMaster`
    pub control_master: Option<ControlMaster>,
    /// `ControlPath`, unexpanded (its tokens include ones only the client knows, like %C).
    pub control_path: Option<String>,
    /// `ControlPersist`, as given (`yes`, `no` or a time): validated, and moot for warren,
    /// whose master holds the tunnel anyway.
    pub control_persist: Option<String>,
}

/// `ControlMaster`: whether this warren serves its ControlPath or defers to one there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMaster {
    /// `no`: use a master found at ControlPath, never become one.
    No,
    /// `yes`: become the master (if the path is taken by a live master, carry on without).
    Yes,
    /// `auto`: use a live master, else become one.
    Auto,
    /// `ask`: ssh confirms each use with ssh-askpass; warren treats it as `yes`.
    Ask,
    /// `autoask`: as `ask`, treated as `auto`.
    AutoAsk,
}

mod apply;
mod args;
mod keywords;
#[cfg(test)]
mod tests;

use args::*;
pub use keywords::split_option;
use keywords::*;
