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

/// The keywords Warren acts on; everything else in [`KEYWORDS`] is either
/// unsupported or a block directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    HostName,
    User,
    Port,
    IdentityFile,
    CertificateFile,
    UserKnownHostsFile,
    GlobalKnownHostsFile,
    StrictHostKeyChecking,
    BatchMode,
    ExitOnForwardFailure,
    ConnectTimeout,
    PasswordAuthentication,
    KbdInteractiveAuthentication,
    PubkeyAuthentication,
    IdentitiesOnly,
    IdentityAgent,
    HashKnownHosts,
    GatewayPorts,
    LogLevel,
    LocalForward,
    RemoteForward,
    DynamicForward,
    ServerAliveInterval,
    ServerAliveCountMax,
    ConnectionAttempts,
    Compression,
    ProxyJump,
    ProxyCommand,
    Ciphers,
    KexAlgorithms,
    Macs,
    HostKeyAlgorithms,
    HostKeyAlias,
    AddressFamily,
    BindAddress,
    BindInterface,
    RekeyLimit,
    ForwardAgent,
    EscapeChar,
    Tag,
    SessionType,
    Tunnel,
    TunnelDevice,
    StdinNull,
    ForkAfterAuthentication,
    TcpKeepAlive,
    IpQos,
    SendEnv,
    ClearAllForwardings,
    StreamLocalBindUnlink,
    SyslogFacility,
    SetEnv,
    GssapiAuthentication,
    GssapiDelegateCredentials,
    ControlMaster,
    ControlPath,
    ControlPersist,
    Unsupported,
    Directive,
}

/// Every keyword ssh's `readconf.c` knows, in its canonical spelling (as in
/// ssh_config(5)), including obsolete aliases that ssh still accepts.
const KEYWORDS: &[(&str, Keyword)] = &[
    // Implemented by Warren.
    ("HostName", Keyword::HostName),
    ("User", Keyword::User),
    ("Port", Keyword::Port),
    ("IdentityFile", Keyword::IdentityFile),
    ("IdentityFile2", Keyword::IdentityFile),
    ("UserKnownHostsFile", Keyword::UserKnownHostsFile),
    ("GlobalKnownHostsFile", Keyword::GlobalKnownHostsFile),
    ("StrictHostKeyChecking", Keyword::StrictHostKeyChecking),
    ("BatchMode", Keyword::BatchMode),
    ("ExitOnForwardFailure", Keyword::ExitOnForwardFailure),
    ("ConnectTimeout", Keyword::ConnectTimeout),
    ("PasswordAuthentication", Keyword::PasswordAuthentication),
    (
        "KbdInteractiveAuthentication",
        Keyword::KbdInteractiveAuthentication,
    ),
    (
        "ChallengeResponseAuthentication",
        Keyword::KbdInteractiveAuthentication,
    ),
    ("SkeyAuthentication", Keyword::KbdInteractiveAuthentication),
    ("TISAuthentication", Keyword::KbdInteractiveAuthentication),
    ("PubkeyAuthentication", Keyword::PubkeyAuthentication),
    ("DSAAuthentication", Keyword::PubkeyAuthentication),
    ("IdentitiesOnly", Keyword::IdentitiesOnly),
    ("IdentityAgent", Keyword::IdentityAgent),
    ("HashKnownHosts", Keyword::HashKnownHosts),
    ("GatewayPorts", Keyword::GatewayPorts),
    ("LogLevel", Keyword::LogLevel),
    ("LocalForward", Keyword::LocalForward),
    ("RemoteForward", Keyword::RemoteForward),
    ("DynamicForward", Keyword::DynamicForward),
    ("ServerAliveInterval", Keyword::ServerAliveInterval),
    ("ServerAliveCountMax", Keyword::ServerAliveCountMax),
    ("ConnectionAttempts", Keyword::ConnectionAttempts),
    ("Compression", Keyword::Compression),
    ("ProxyJump", Keyword::ProxyJump),
    ("ProxyCommand", Keyword::ProxyCommand),
    ("Ciphers", Keyword::Ciphers),
    ("HostKeyAlias", Keyword::HostKeyAlias),
    ("AddressFamily", Keyword::AddressFamily),
    ("BindAddress", Keyword::BindAddress),
    ("BindInterface", Keyword::BindInterface),
    ("RekeyLimit", Keyword::RekeyLimit),
    ("ForwardAgent", Keyword::ForwardAgent),
    ("EscapeChar", Keyword::EscapeChar),
    ("Tag", Keyword::Tag),
    ("SessionType", Keyword::SessionType),
    ("Tunnel", Keyword::Tunnel),
    ("TunnelDevice", Keyword::TunnelDevice),
    ("StdinNull", Keyword::StdinNull),
    ("ForkAfterAuthentication", Keyword::ForkAfterAuthentication),
    ("TCPKeepAlive", Keyword::TcpKeepAlive),
    ("KeepAlive", Keyword::TcpKeepAlive),
    ("IPQoS", Keyword::IpQos),
    ("SendEnv", Keyword::SendEnv),
    ("ClearAllForwardings", Keyword::ClearAllForwardings),
    ("StreamLocalBindUnlink", Keyword::StreamLocalBindUnlink),
    ("SyslogFacility", Keyword::SyslogFacility),
    ("SetEnv", Keyword::SetEnv),
    ("GSSAPIAuthentication", Keyword::GssapiAuthentication),
    // Only means something with GSSAPI authentication, which warren skips (see below).
    (
        "GSSAPIDelegateCredentials",
        Keyword::GssapiDelegateCredentials,
    ),
    ("ControlMaster", Keyword::ControlMaster),
    ("ControlPath", Keyword::ControlPath),
    ("ControlPersist", Keyword::ControlPersist),
    // Config-file structure, refused on the command line as ssh does.
    ("Host", Keyword::Directive),
    ("Match", Keyword::Directive),
    ("Include", Keyword::Directive),
    // Real ssh_config(5) keywords that Warren does not implement.
    ("AddKeysToAgent", Keyword::Unsupported),
    ("CanonicalDomains", Keyword::Unsupported),
    ("CanonicalizeFallbackLocal", Keyword::Unsupported),
    ("CanonicalizeHostname", Keyword::Unsupported),
    ("CanonicalizeMaxDots", Keyword::Unsupported),
    ("CanonicalizePermittedCNAMEs", Keyword::Unsupported),
    ("CASignatureAlgorithms", Keyword::Unsupported),
    ("CertificateFile", Keyword::CertificateFile),
    ("ChannelTimeout", Keyword::Unsupported),
    ("CheckHostIP", Keyword::Unsupported),
    ("EnableEscapeCommandline", Keyword::Unsupported),
    ("EnableSSHKeysign", Keyword::Unsupported),
    ("FingerprintHash", Keyword::Unsupported),
    ("ForwardX11", Keyword::Unsupported),
    ("ForwardX11Timeout", Keyword::Unsupported),
    ("ForwardX11Trusted", Keyword::Unsupported),
    ("HostbasedAcceptedAlgorithms", Keyword::Unsupported),
    ("HostbasedAuthentication", Keyword::Unsupported),
    ("HostKeyAlgorithms", Keyword::HostKeyAlgorithms),
    ("IgnoreUnknown", Keyword::Unsupported),
    ("KbdInteractiveDevices", Keyword::Unsupported),
    ("KexAlgorithms", Keyword::KexAlgorithms),
    ("KnownHostsCommand", Keyword::Unsupported),
    ("LocalCommand", Keyword::Unsupported),
    ("LogVerbose", Keyword::Unsupported),
    ("MACs", Keyword::Macs),
    ("NoHostAuthenticationForLocalhost", Keyword::Unsupported),
    ("NumberOfPasswordPrompts", Keyword::Unsupported),
    ("ObscureKeystrokeTiming", Keyword::Unsupported),
    ("PermitLocalCommand", Keyword::Unsupported),
    ("PermitRemoteOpen", Keyword::Unsupported),
    ("PKCS11Provider", Keyword::Unsupported),
    ("PreferredAuthentications", Keyword::Unsupported),
    ("ProxyUseFdpass", Keyword::Unsupported),
    ("PubkeyAcceptedAlgorithms", Keyword::Unsupported),
    ("RefuseConnection", Keyword::Unsupported),
    ("RemoteCommand", Keyword::Unsupported),
    ("RequestTTY", Keyword::Unsupported),
    ("RequiredRSASize", Keyword::Unsupported),
    ("RevokedHostKeys", Keyword::Unsupported),
    ("SecurityKeyProvider", Keyword::Unsupported),
    ("StreamLocalBindMask", Keyword::Unsupported),
    ("UpdateHostKeys", Keyword::Unsupported),
    ("VerifyHostKeyDNS", Keyword::Unsupported),
    ("VersionAddendum", Keyword::Unsupported),
    ("VisualHostKey", Keyword::Unsupported),
    ("WarnWeakCrypto", Keyword::Unsupported),
    ("XAuthLocation", Keyword::Unsupported),
    // Obsolete spellings ssh still maps to current keywords.
    ("HostbasedKeyTypes", Keyword::Unsupported),
    ("PubkeyAcceptedKeyTypes", Keyword::Unsupported),
    ("SmartcardDevice", Keyword::Unsupported),
    // Removed options that ssh still accepts and ignores.
    ("Protocol", Keyword::Unsupported),
    ("Cipher", Keyword::Unsupported),
    ("FallBackToRsh", Keyword::Unsupported),
    ("GlobalKnownHostsFile2", Keyword::Unsupported),
    ("RhostsAuthentication", Keyword::Unsupported),
    ("UserKnownHostsFile2", Keyword::Unsupported),
    ("UseRoaming", Keyword::Unsupported),
    ("UseRsh", Keyword::Unsupported),
    ("UsePrivilegedPort", Keyword::Unsupported),
    ("AFSTokenPassing", Keyword::Unsupported),
    ("KerberosAuthentication", Keyword::Unsupported),
    ("KerberosTGTPassing", Keyword::Unsupported),
    ("RSAAuthentication", Keyword::Unsupported),
    ("RhostsRSAAuthentication", Keyword::Unsupported),
    ("CompressionLevel", Keyword::Unsupported),
    // Documented in the ssh_config(5) shipped by major distributions (the
    // Debian/Fedora GSSAPI key-exchange patch, Apple's keychain support), so
    // users' existing options must not turn into hard errors.
    ("GSSAPIKeyExchange", Keyword::Unsupported),
    ("GSSAPIClientIdentity", Keyword::Unsupported),
    ("GSSAPIServerIdentity", Keyword::Unsupported),
    ("GSSAPIRenewalForcesRekey", Keyword::Unsupported),
    ("GSSAPITrustDns", Keyword::Unsupported),
    ("GSSAPIKexAlgorithms", Keyword::Unsupported),
    ("UseKeychain", Keyword::Unsupported),
];

fn lookup(key: &str) -> Option<(&'static str, Keyword)> {
    KEYWORDS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .copied()
}

/// Splits one `-o` argument into its keyword and value.
///
/// Accepts ssh's `Key=Value`, `Key Value` and `Key = Value`. A known keyword
/// comes back in its canonical spelling; an unknown one as typed, so that
/// [`Options::apply`] can name it in its error. The value keeps its quotes:
/// only the keyword knows whether `"a b" c` is one argument, two, or (for
/// `ProxyCommand`) shell text to pass on untouched.
pub fn split_option(arg: &str) -> Result<(String, String), OptionError> {
    let trimmed = arg.trim_matches([' ', '\t', '\r', '\n', '\x0c']);
    let key_end = trimmed
        .find([' ', '\t', '\r', '\n', '='])
        .unwrap_or(trimmed.len());
    let (key, rest) = trimmed.split_at(key_end);
    if key.is_empty() {
        return Err(OptionError::MissingKeyword(arg.to_owned()));
    }
    let known = lookup(key);
    let key = known.map_or(key, |(name, _)| name);
    // Like ssh's strdelim(): whitespace, at most one '=', whitespace.
    let rest = rest.trim_start_matches([' ', '\t', '\r', '\n']);
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    let value = rest.trim_start_matches([' ', '\t', '\r', '\n']);
    if value.is_empty() {
        // A misspelt keyword is the more useful thing to report.
        return Err(match known {
            Some(_) => OptionError::MissingValue(key.to_owned()),
            None => OptionError::UnknownKeyword(key.to_owned()),
        });
    }
    Ok((key.to_owned(), value.to_owned()))
}

impl Options {
    /// Applies one option with ssh's precedence: the first value obtained for
    /// a setting wins (so `-o` beats config files read later), while list
    /// keywords accumulate. Values are validated even when they will be
    /// ignored, as ssh does, so a typo never goes unnoticed.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<ApplyOutcome, OptionError> {
        let key = key.trim();
        let (name, keyword) =
            lookup(key).ok_or_else(|| OptionError::UnknownKeyword(key.to_owned()))?;
        let v = Args {
            name,
            value: value.trim(),
        };
        if v.value.is_empty() {
            return Err(OptionError::MissingValue(name.to_owned()));
        }
        Ok(match keyword {
            Keyword::Directive => return Err(OptionError::Directive(name.to_owned())),
            Keyword::Unsupported => ApplyOutcome::Unsupported,
            Keyword::HostName => set_once(&mut self.host_name, v.single()?),
            Keyword::User => set_once(&mut self.user, v.single()?),
            Keyword::HostKeyAlias => set_once(&mut self.host_key_alias, v.single()?),
            Keyword::BindAddress => set_once(&mut self.bind_address, v.single()?),
            Keyword::BindInterface => set_once(&mut self.bind_interface, v.single()?),
            Keyword::Tag => set_once(&mut self.tag, v.single()?),
            Keyword::StdinNull => set_once(&mut self.stdin_null, parse_flag(&v)?),
            Keyword::TcpKeepAlive => set_once(&mut self.tcp_keep_alive, parse_flag(&v)?),
            Keyword::ClearAllForwardings => {
                set_once(&mut self.clear_all_forwardings, parse_flag(&v)?)
            }
            Keyword::StreamLocalBindUnlink => {
                set_once(&mut self.stream_local_bind_unlink, parse_flag(&v)?)
            }
            Keyword::SyslogFacility => {
                let f = SyslogFacility::parse(&v.single()?)
                    .ok_or_else(|| v.bad("DAEMON, USER, AUTH, AUTHPRIV or LOCAL0..LOCAL7"))?;
                set_once(&mut self.syslog_facility, f)
            }
            Keyword::GssapiAuthentication => {
                set_once(&mut self.gssapi_authentication, parse_flag(&v)?)
            }
            Keyword::GssapiDelegateCredentials => {
                parse_flag(&v)?;
                ApplyOutcome::Applied
            }
            Keyword::SendEnv => {
                for pattern in v.split()? {
                    if pattern.contains('=') {
                        return Err(v.bad("variable names or patterns, without '='"));
                    }
                    match pattern.strip_prefix('-') {
                        Some(gone) => self.send_env.retain(|p| !match_pattern(p, gone)),
                        None if !self.send_env.contains(&pattern) => self.send_env.push(pattern),
                        None => {}
                    }
                }
                ApplyOutcome::Applied
            }
            Keyword::SetEnv => {
                let mut pairs = Vec::new();
                for arg in v.split()? {
                    match arg.split_once('=') {
                        Some((name, value)) if !name.is_empty() => {
                            pairs.push((name.to_string(), value.to_string()))
                        }
                        _ => return Err(v.bad("NAME=VALUE pairs")),
                    }
                }
                set_once(&mut self.set_env, pairs)
            }
            Keyword::IpQos => {
                let qos = IpQos::parse(&v.split()?).map_err(|e| v.bad(e))?;
                set_once(&mut self.ip_qos, qos)
            }
            Keyword::ForkAfterAuthentication => {
                set_once(&mut self.fork_after_authentication, parse_flag(&v)?)
            }
            Keyword::SessionType => {
                let t = SessionType::parse(&v.single()?)
                    .ok_or_else(|| v.bad("none, subsystem or default"))?;
                set_once(&mut self.session_type, t)
            }
            Keyword::Tunnel => {
                let t = TunnelMode::parse(&v.single()?)
                    .ok_or_else(|| v.bad("yes, point-to-point, ethernet or no"))?;
                set_once(&mut self.tunnel, t)
            }
            Keyword::TunnelDevice => {
                let d = TunnelDevice::parse(&v.single()?)
                    .ok_or_else(|| v.bad("local_tun[:remote_tun], each a number or any"))?;
                set_once(&mut self.tunnel_device, d)
            }
            Keyword::AddressFamily => {
                let family = AddressFamily::parse(&v.single()?)
                    .ok_or_else(|| v.bad("any, inet or inet6"))?;
                set_once(&mut self.address_family, family)
            }
            Keyword::RekeyLimit => {
                let limit = RekeyLimit::parse(&v.split()?).map_err(|e| v.bad(e))?;
                set_once(&mut self.rekey_limit, limit)
            }
            Keyword::ForwardAgent => {
                let on = ForwardAgent::parse(&v.single()?)
                    .ok_or_else(|| v.bad("yes, no, an agent socket path or $VARIABLE"))?;
                set_once(&mut self.forward_agent, on)
            }
            Keyword::EscapeChar => {
                let c = values::parse_escape_char(&v.single()?)
                    .ok_or_else(|| v.bad("a single character, ^ and a character, or none"))?;
                set_once(&mut self.escape_char, c)
            }
            Keyword::ControlMaster => {
                let value = match v.single()?.to_ascii_lowercase().as_str() {
                    "yes" | "true" => ControlMaster::Yes,
                    "no" | "false" => ControlMaster::No,
                    "auto" => ControlMaster::Auto,
                    "ask" => ControlMaster::Ask,
                    "autoask" => ControlMaster::AutoAsk,
                    _ => return Err(v.bad("yes, no, auto, ask, autoask")),
                };
                set_once(&mut self.control_master, value)
            }
            Keyword::ControlPath => set_once(&mut self.control_path, v.single()?),
            Keyword::ControlPersist => {
                let value = v.single()?;
                let word = matches!(
                    value.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "true" | "false"
                );
                if !word && value != "none" && parse_time(&v).is_err() {
                    return Err(v.bad("yes, no or a time such as 10m"));
                }
                set_once(&mut self.control_persist, value)
            }
            Keyword::Ciphers => set_once(&mut self.ciphers, v.single()?),
            Keyword::KexAlgorithms => set_once(&mut self.kex_algorithms, v.single()?),
            Keyword::Macs => set_once(&mut self.macs, v.single()?),
            Keyword::HostKeyAlgorithms => set_once(&mut self.host_key_algorithms, v.single()?),
            Keyword::Port => set_once(&mut self.port, parse_port(&v)?),
            Keyword::IdentityFile => {
                let path = v.single()?;
                if self.identity_files.contains(&path) {
                    ApplyOutcome::Ignored
                } else if self.identity_files.len() >= MAX_IDENTITY_FILES {
                    return Err(v.bad(format!(
                        "at most {MAX_IDENTITY_FILES} identity files in total"
                    )));
                } else {
                    self.identity_files.push(path);
                    ApplyOutcome::Applied
                }
            }
            Keyword::CertificateFile => {
                let path = v.single()?;
                if self.certificate_files.contains(&path) {
                    ApplyOutcome::Ignored
                } else if self.certificate_files.len() >= MAX_IDENTITY_FILES {
                    return Err(v.bad(format!(
                        "at most {MAX_IDENTITY_FILES} certificate files in total"
                    )));
                } else {
                    self.certificate_files.push(path);
                    ApplyOutcome::Applied
                }
            }
            Keyword::UserKnownHostsFile => {
                set_once(&mut self.user_known_hosts_files, parse_file_list(&v)?)
            }
            Keyword::GlobalKnownHostsFile => {
                set_once(&mut self.global_known_hosts_files, parse_file_list(&v)?)
            }
            Keyword::StrictHostKeyChecking => {
                let value = match v.single()?.to_ascii_lowercase().as_str() {
                    "yes" | "true" => StrictHostKeyChecking::Yes,
                    "no" | "false" | "off" => StrictHostKeyChecking::No,
                    "ask" => StrictHostKeyChecking::Ask,
                    "accept-new" => StrictHostKeyChecking::AcceptNew,
                    _ => return Err(v.bad("yes, no, ask, accept-new")),
                };
                set_once(&mut self.strict_host_key_checking, value)
            }
            Keyword::BatchMode => set_once(&mut self.batch_mode, parse_flag(&v)?),
            Keyword::ExitOnForwardFailure => {
                set_once(&mut self.exit_on_forward_failure, parse_flag(&v)?)
            }
            Keyword::PasswordAuthentication => {
                set_once(&mut self.password_authentication, parse_flag(&v)?)
            }
            Keyword::KbdInteractiveAuthentication => {
                set_once(&mut self.kbd_interactive_authentication, parse_flag(&v)?)
            }
            Keyword::IdentitiesOnly => set_once(&mut self.identities_only, parse_flag(&v)?),
            Keyword::HashKnownHosts => set_once(&mut self.hash_known_hosts, parse_flag(&v)?),
            Keyword::GatewayPorts => set_once(&mut self.gateway_ports, parse_flag(&v)?),
            Keyword::PubkeyAuthentication => {
                let value = match v.single()?.to_ascii_lowercase().as_str() {
                    "yes" | "true" | "unbound" | "host-bound" => true,
                    "no" | "false" => false,
                    _ => return Err(v.bad("yes, no, unbound, host-bound")),
                };
                set_once(&mut self.pubkey_authentication, value)
            }
            Keyword::Compression => {
                // Not a plain flag in ssh: it refuses true/false here.
                let value = match v.single()?.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(v.bad("yes or no")),
                };
                set_once(&mut self.compression, value)
            }
            Keyword::LogLevel => set_once(&mut self.log_level, parse_log_level(&v)?),
            Keyword::IdentityAgent => set_once(&mut self.identity_agent, parse_identity_agent(&v)?),
            // `none` (and, for ConnectTimeout, 0) store nothing, so as in ssh
            // a later value can still set them.
            Keyword::ConnectTimeout => match parse_time(&v)? {
                _ if self.connect_timeout.is_some() => ApplyOutcome::Ignored,
                Some(t) if !t.is_zero() => set_once(&mut self.connect_timeout, t),
                _ => ApplyOutcome::Applied,
            },
            Keyword::ServerAliveInterval => match parse_time(&v)? {
                _ if self.server_alive_interval.is_some() => ApplyOutcome::Ignored,
                Some(t) => set_once(&mut self.server_alive_interval, t),
                None => ApplyOutcome::Applied,
            },
            Keyword::ServerAliveCountMax => {
                set_once(&mut self.server_alive_count_max, parse_int(&v)?)
            }
            Keyword::ConnectionAttempts => set_once(&mut self.connection_attempts, parse_int(&v)?),
            Keyword::LocalForward => {
                let fwd = match v.split()?.as_slice() {
                    [listen, connect] => forward::parse_local(&join_forward(listen, connect)),
                    [_] => {
                        return Err(v.bad(forward_expected(
                            ForwardKind::Local,
                            "the connect argument is missing \
                             (listen and connect are separated by whitespace)",
                        )));
                    }
                    _ => return Err(v.extra_arguments(ForwardKind::Local)),
                };
                let fwd = fwd.map_err(|e| v.bad_forward(&e))?;
                push_new(&mut self.local_forwards, fwd, |a, b| {
                    a.listen == b.listen && a.connect == b.connect
                })
            }
            Keyword::RemoteForward => {
                let fwd = match v.split()?.as_slice() {
                    [listen, connect] => forward::parse_remote(&join_forward(listen, connect)),
                    // ssh reads a lone argument as a remote dynamic forward only.
                    [listen] => match forward::parse_remote(listen) {
                        Ok(fwd) if fwd.connect.is_some() => {
                            return Err(v.bad(forward_expected(
                                ForwardKind::Remote,
                                "listen and connect must be separated by whitespace",
                            )));
                        }
                        other => other,
                    },
                    _ => return Err(v.extra_arguments(ForwardKind::Remote)),
                };
                let fwd = fwd.map_err(|e| v.bad_forward(&e))?;
                push_new(&mut self.remote_forwards, fwd, |a, b| {
                    a.listen == b.listen && a.connect == b.connect
                })
            }
            Keyword::DynamicForward => {
                let fwd = forward::parse_dynamic(&v.single()?).map_err(|e| v.bad_forward(&e))?;
                push_new(&mut self.dynamic_forwards, fwd, |a, b| {
                    a.bind == b.bind && a.port == b.port
                })
            }
            // ssh hands these two the raw rest of the line, quotes and all.
            // A real jump host sets ssh's proxy command too, so each of the
            // pair yields to the other; `ProxyJump none` only disables jumping.
            Keyword::ProxyCommand => {
                if self.proxy_jump.as_deref().is_some_and(|j| j != "none") {
                    ApplyOutcome::Ignored
                } else {
                    set_once(&mut self.proxy_command, v.value.to_owned())
                }
            }
            Keyword::ProxyJump => {
                let jump = parse_jump(&v)?;
                if self.proxy_command.is_some() {
                    ApplyOutcome::Ignored
                } else {
                    set_once(&mut self.proxy_jump, jump)
                }
            }
        })
    }

    /// [`split_option`] then [`Options::apply`]: one `-o` argument.
    pub fn apply_arg(&mut self, arg: &str) -> Result<ApplyOutcome, OptionError> {
        let (key, value) = split_option(arg)?;
        self.apply(&key, &value)
    }
}

/// A keyword's value plus the context every error message needs.
struct Args<'a> {
    name: &'static str,
    value: &'a str,
}

impl Args<'_> {
    fn bad(&self, expected: impl Into<String>) -> OptionError {
        OptionError::BadValue {
            keyword: self.name.to_owned(),
            value: self.value.to_owned(),
            expected: expected.into(),
        }
    }

    fn bad_forward(&self, err: &SpecError) -> OptionError {
        self.bad(forward_expected(err.kind, &err.reason))
    }

    fn extra_arguments(&self, kind: ForwardKind) -> OptionError {
        self.bad(forward_expected(kind, "extra arguments at end of line"))
    }

    /// ssh's `argv_split()`: whitespace separates, single or double quotes
    /// group, `\` escapes quotes, backslashes and (unquoted) spaces, and an
    /// unquoted `#` starting an argument ends the line.
    fn split(&self) -> Result<Vec<String>, OptionError> {
        let mut args = Vec::new();
        let mut chars = self.value.chars().peekable();
        loop {
            while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
            if matches!(chars.peek(), None | Some('#')) {
                break;
            }
            let mut arg = String::new();
            let mut quote = None;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.peek() {
                        Some(&next)
                            if matches!(next, '\'' | '"' | '\\')
                                || (quote.is_none() && next == ' ') =>
                        {
                            arg.push(next);
                            chars.next();
                        }
                        _ => arg.push('\\'),
                    },
                    ' ' | '\t' if quote.is_none() => break,
                    '"' | '\'' if quote.is_none() => quote = Some(c),
                    c if Some(c) == quote => quote = None,
                    c => arg.push(c),
                }
            }
            if let Some(q) = quote {
                return Err(self.bad(format!("a closing {q} quote")));
            }
            args.push(arg);
        }
        if args.is_empty() {
            return Err(OptionError::MissingValue(self.name.to_owned()));
        }
        Ok(args)
    }

    /// Most keywords take exactly one argument; ssh rejects trailing words
    /// rather than guessing which one was meant.
    fn single(&self) -> Result<String, OptionError> {
        match <[String; 1]>::try_from(self.split()?) {
            Ok([arg]) if !arg.is_empty() => Ok(arg),
            Ok(_) => Err(OptionError::MissingValue(self.name.to_owned())),
            Err(_) => Err(self.bad("a single argument; quote values containing spaces")),
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> ApplyOutcome {
    if slot.is_some() {
        ApplyOutcome::Ignored
    } else {
        *slot = Some(value);
        ApplyOutcome::Applied
    }
}

fn push_new<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) -> ApplyOutcome {
    if list.iter().any(|existing| same(existing, &item)) {
        ApplyOutcome::Ignored
    } else {
        list.push(item);
        ApplyOutcome::Applied
    }
}

/// ssh's flag values, case-insensitive.
fn parse_flag(v: &Args<'_>) -> Result<bool, OptionError> {
    match v.single()?.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(v.bad("yes or no")),
    }
}

fn parse_port(v: &Args<'_>) -> Result<u16, OptionError> {
    let arg = v.single()?;
    let expected = "a port number 1..=65535";
    if !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(v.bad(expected));
    }
    match arg.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(v.bad(expected)),
    }
}

/// ssh's `atoi_err()` range: 0..=INT_MAX.
fn parse_int(v: &Args<'_>) -> Result<u32, OptionError> {
    let arg = v.single()?;
    let expected = "a whole number 0..=2147483647";
    if !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(v.bad(expected));
    }
    match arg.parse::<u32>() {
        Ok(n) if i32::try_from(n).is_ok() => Ok(n),
        _ => Err(v.bad(expected)),
    }
}

fn parse_log_level(v: &Args<'_>) -> Result<LogLevel, OptionError> {
    Ok(match v.single()?.to_ascii_uppercase().as_str() {
        "QUIET" => LogLevel::Quiet,
        "FATAL" => LogLevel::Fatal,
        "ERROR" => LogLevel::Error,
        "INFO" => LogLevel::Info,
        "VERBOSE" => LogLevel::Verbose,
        "DEBUG" | "DEBUG1" => LogLevel::Debug1,
        "DEBUG2" => LogLevel::Debug2,
        "DEBUG3" => LogLevel::Debug3,
        _ => {
            return Err(
                v.bad("QUIET, FATAL, ERROR, INFO, VERBOSE, DEBUG, DEBUG1, DEBUG2 or DEBUG3")
            );
        }
    })
}

/// `none` and `SSH_AUTH_SOCK` are matched case-sensitively, as ssh does.
fn parse_identity_agent(v: &Args<'_>) -> Result<IdentityAgent, OptionError> {
    let arg = v.single()?;
    if arg == "none" {
        return Ok(IdentityAgent::Disabled);
    }
    if arg == "SSH_AUTH_SOCK" {
        return Ok(IdentityAgent::Env(arg));
    }
    if let Some(name) = arg.strip_prefix('$')
        && !name.starts_with('{')
    {
        if !is_env_name(name) {
            return Err(v.bad("a socket path, none, SSH_AUTH_SOCK or $VARIABLE"));
        }
        return Ok(IdentityAgent::Env(name.to_owned()));
    }
    Ok(IdentityAgent::Path(arg))
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Known-hosts lists: several files at once, with `none` only on its own.
fn parse_file_list(v: &Args<'_>) -> Result<Vec<String>, OptionError> {
    let args = v.split()?;
    if args.iter().any(String::is_empty) {
        return Err(v.bad("non-empty file names"));
    }
    if args.len() > 1 && args.iter().any(|a| a.eq_ignore_ascii_case("none")) {
        return Err(v.bad("file names, or none on its own"));
    }
    if args.len() > MAX_HOSTS_FILES {
        return Err(v.bad(format!("at most {MAX_HOSTS_FILES} files")));
    }
    Ok(args)
}

/// ssh's `convtime()`: `none`, or a sequence of numbers with optional units
/// (`90`, `1h30m`, `1.5s`); fractions only for seconds, and truncated to
/// whole seconds like ssh. `Ok(None)` is `none`.
fn parse_time(v: &Args<'_>) -> Result<Option<Duration>, OptionError> {
    let arg = v.single()?;
    if arg == "none" {
        return Ok(None);
    }
    let bad = || v.bad("a time such as 30, 30s, 5m or 1h30m, or none");
    let mut total = 0.0_f64;
    let mut seen_seconds = false;
    let mut rest = arg.as_str();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let mut tail = tail.chars();
        let multiplier = match tail.next() {
            None | Some('s' | 'S') if !seen_seconds => {
                seen_seconds = true;
                1.0
            }
            Some('m' | 'M') => 60.0,
            Some('h' | 'H') => 3_600.0,
            Some('d' | 'D') => 86_400.0,
            Some('w' | 'W') => 604_800.0,
            _ => return Err(bad()),
        };
        if number.contains('.')
            && (multiplier > 1.0 || !number.ends_with(|c: char| c.is_ascii_digit()))
        {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        total += value * multiplier;
        rest = tail.as_str();
    }
    if total > f64::from(i32::MAX) {
        return Err(bad());
    }
    // Truncating to whole seconds is ssh's behaviour; the bound check above
    // keeps the conversion exact.
    Ok(Some(Duration::from_secs(total as u64)))
}

/// Light syntax check only: ssh's full `[user@]host[:port]` and `ssh://`
/// parsing belongs with the code that makes the connections.
fn parse_jump(v: &Args<'_>) -> Result<String, OptionError> {
    let value = v.value;
    let valid = !value.contains(char::is_whitespace)
        && (value.eq_ignore_ascii_case("none") || value.split(',').all(|hop| !hop.is_empty()));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(v.bad("[user@]host[:port][,...] or none"))
    }
}

/// The config-file form puts listen and connect in separate arguments; ssh
/// joins them with `:` for the `-L` parser. A socket path may itself contain
/// `:` (it is a single argument here), so its colons are escaped to keep it
/// one field; bracketed fields are left as they are.
fn join_forward(listen: &str, connect: &str) -> String {
    format!("{}:{}", escape_path(listen), escape_path(connect))
}

fn escape_path(arg: &str) -> Cow<'_, str> {
    if arg.starts_with('[') || !arg.contains('/') || !arg.contains(':') {
        return Cow::Borrowed(arg);
    }
    let mut out = String::with_capacity(arg.len() + 4);
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                out.extend(chars.next());
            }
            ':' => out.push_str("\\:"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn forward_expected(kind: ForwardKind, reason: &str) -> String {
    let form = match kind {
        ForwardKind::Local => "[bind_address:]port host:hostport (or unix-socket forms)",
        ForwardKind::Remote => "[bind_address:]port [host:hostport] (or unix-socket forms)",
        ForwardKind::Dynamic => "[bind_address:]port",
    };
    format!("{form}; {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::forward::{Endpoint, Listen};
    use std::path::PathBuf;

    fn applied(arg: &str) -> Options {
        let mut o = Options::default();
        assert_eq!(o.apply_arg(arg), Ok(ApplyOutcome::Applied), "{arg}");
        o
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    fn local(spec: &str) -> LocalForward {
        forward::parse_local(spec).unwrap()
    }

    fn remote(spec: &str) -> RemoteForward {
        forward::parse_remote(spec).unwrap()
    }

    type Setter = fn(&mut Options);

    /// Every implemented keyword, each in a form that sets it.
    const SETS: &[(&str, Setter)] = &[
        ("HostName=example.com", |o| o.host_name = s("example.com")),
        ("User=bob", |o| o.user = s("bob")),
        ("Port=2222", |o| o.port = Some(2222)),
        ("Port=65535", |o| o.port = Some(65535)),
        ("IdentityFile=~/.ssh/id_ed25519", |o| {
            o.identity_files = vec!["~/.ssh/id_ed25519".into()]
        }),
        ("IdentityFile2=id", |o| o.identity_files = vec!["id".into()]),
        ("CertificateFile=~/.ssh/id_ed25519-cert.pub", |o| {
            o.certificate_files = vec!["~/.ssh/id_ed25519-cert.pub".into()]
        }),
        ("UserKnownHostsFile=/a /b", |o| {
            o.user_known_hosts_files = Some(vec!["/a".into(), "/b".into()])
        }),
        ("UserKnownHostsFile=none", |o| {
            o.user_known_hosts_files = Some(vec!["none".into()])
        }),
        ("GlobalKnownHostsFile=/etc/ssh/kh", |o| {
            o.global_known_hosts_files = Some(vec!["/etc/ssh/kh".into()])
        }),
        ("StrictHostKeyChecking=yes", |o| {
            o.strict_host_key_checking = Some(StrictHostKeyChecking::Yes)
        }),
        ("StrictHostKeyChecking=true", |o| {
            o.strict_host_key_checking = Some(StrictHostKeyChecking::Yes)
        }),
        ("StrictHostKeyChecking=no", |o| {
            o.strict_host_key_checking = Some(StrictHostKeyChecking::No)
        }),
        ("StrictHostKeyChecking=false", |o| {
            o.strict_host_key_checking = Some(StrictHostKeyChecking::No)
        }),
        ("StrictHostKeyChecking=off", |o| {
            o.strict_host_key_checking = Some(StrictHostKeyChecking::No)
        }),
        ("StrictHostKeyChecking=ask", |o| {
            o.strict_host_key_checking = Some(StrictHostKeyChecking::Ask)
        }),
        ("StrictHostKeyChecking=accept-new", |o| {
            o.strict_host_key_checking = Some(StrictHostKeyChecking::AcceptNew)
        }),
        ("StrictHostKeyChecking=Accept-New", |o| {
            o.strict_host_key_checking = Some(StrictHostKeyChecking::AcceptNew)
        }),
        ("BatchMode=yes", |o| o.batch_mode = Some(true)),
        ("BatchMode=TRUE", |o| o.batch_mode = Some(true)),
        ("BatchMode=No", |o| o.batch_mode = Some(false)),
        ("BatchMode=false", |o| o.batch_mode = Some(false)),
        ("ExitOnForwardFailure=yes", |o| {
            o.exit_on_forward_failure = Some(true)
        }),
        ("ConnectTimeout=10", |o| {
            o.connect_timeout = Some(Duration::from_secs(10))
        }),
        ("ConnectTimeout=1m30s", |o| {
            o.connect_timeout = Some(Duration::from_secs(90))
        }),
        ("ConnectTimeout=1h", |o| {
            o.connect_timeout = Some(Duration::from_secs(3600))
        }),
        ("ConnectTimeout=2.9", |o| {
            o.connect_timeout = Some(Duration::from_secs(2))
        }),
        ("ConnectTimeout=none", |_| {}),
        ("ConnectTimeout=0", |_| {}),
        ("PasswordAuthentication=no", |o| {
            o.password_authentication = Some(false)
        }),
        ("KbdInteractiveAuthentication=yes", |o| {
            o.kbd_interactive_authentication = Some(true)
        }),
        ("ChallengeResponseAuthentication=no", |o| {
            o.kbd_interactive_authentication = Some(false)
        }),
        ("PubkeyAuthentication=yes", |o| {
            o.pubkey_authentication = Some(true)
        }),
        ("PubkeyAuthentication=host-bound", |o| {
            o.pubkey_authentication = Some(true)
        }),
        ("PubkeyAuthentication=unbound", |o| {
            o.pubkey_authentication = Some(true)
        }),
        ("PubkeyAuthentication=no", |o| {
            o.pubkey_authentication = Some(false)
        }),
        ("IdentitiesOnly=yes", |o| o.identities_only = Some(true)),
        ("IdentityAgent=none", |o| {
            o.identity_agent = Some(IdentityAgent::Disabled)
        }),
        ("IdentityAgent=SSH_AUTH_SOCK", |o| {
            o.identity_agent = Some(IdentityAgent::Env("SSH_AUTH_SOCK".into()))
        }),
        ("IdentityAgent=$MY_AGENT", |o| {
            o.identity_agent = Some(IdentityAgent::Env("MY_AGENT".into()))
        }),
        ("IdentityAgent=~/.1password/agent.sock", |o| {
            o.identity_agent = Some(IdentityAgent::Path("~/.1password/agent.sock".into()))
        }),
        ("IdentityAgent=${XDG_RUNTIME_DIR}/ssh-agent", |o| {
            o.identity_agent = Some(IdentityAgent::Path("${XDG_RUNTIME_DIR}/ssh-agent".into()))
        }),
        ("HashKnownHosts=yes", |o| o.hash_known_hosts = Some(true)),
        ("GatewayPorts=yes", |o| o.gateway_ports = Some(true)),
        ("AddressFamily=inet6", |o| {
            o.address_family = Some(AddressFamily::Inet6)
        }),
        ("BindAddress=127.0.0.2", |o| o.bind_address = s("127.0.0.2")),
        ("BindInterface=lo", |o| o.bind_interface = s("lo")),
        ("RekeyLimit=1M 1h", |o| {
            o.rekey_limit = Some(RekeyLimit {
                bytes: Some(1 << 20),
                time: Some(Duration::from_secs(3600)),
            })
        }),
        ("ForwardAgent=no", |o| {
            o.forward_agent = Some(ForwardAgent::No)
        }),
        ("EscapeChar=none", |o| o.escape_char = s("none")),
        ("Tag=prod", |o| o.tag = s("prod")),
        ("SessionType=none", |o| {
            o.session_type = Some(SessionType::None)
        }),
        ("StdinNull=yes", |o| o.stdin_null = Some(true)),
        ("Tunnel=ethernet", |o| o.tunnel = Some(TunnelMode::Ethernet)),
        ("TunnelDevice=3:any", |o| {
            o.tunnel_device = TunnelDevice::parse("3:any")
        }),
        ("TCPKeepAlive=no", |o| o.tcp_keep_alive = Some(false)),
        ("ClearAllForwardings=yes", |o| {
            o.clear_all_forwardings = Some(true)
        }),
        ("StreamLocalBindUnlink=yes", |o| {
            o.stream_local_bind_unlink = Some(true)
        }),
        ("SyslogFacility=local3", |o| {
            o.syslog_facility = Some(SyslogFacility::parse("LOCAL3").unwrap())
        }),
        ("SendEnv=LANG LC_*", |o| {
            o.send_env = vec!["LANG".into(), "LC_*".into()]
        }),
        ("SetEnv=A=1 \"B=two words\"", |o| {
            o.set_env = Some(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
            ])
        }),
        ("GSSAPIAuthentication=yes", |o| {
            o.gssapi_authentication = Some(true)
        }),
        ("IPQoS=throughput", |o| {
            o.ip_qos = Some(IpQos::parse(&["throughput".into()]).unwrap())
        }),
        ("ForkAfterAuthentication=yes", |o| {
            o.fork_after_authentication = Some(true)
        }),
        ("LogLevel=QUIET", |o| o.log_level = Some(LogLevel::Quiet)),
        ("LogLevel=fatal", |o| o.log_level = Some(LogLevel::Fatal)),
        ("LogLevel=ERROR", |o| o.log_level = Some(LogLevel::Error)),
        ("LogLevel=INFO", |o| o.log_level = Some(LogLevel::Info)),
        ("LogLevel=verbose", |o| {
            o.log_level = Some(LogLevel::Verbose)
        }),
        ("LogLevel=DEBUG", |o| o.log_level = Some(LogLevel::Debug1)),
        ("LogLevel=DEBUG1", |o| o.log_level = Some(LogLevel::Debug1)),
        ("LogLevel=debug2", |o| o.log_level = Some(LogLevel::Debug2)),
        ("LogLevel=DEBUG3", |o| o.log_level = Some(LogLevel::Debug3)),
        ("LocalForward=8080 localhost:80", |o| {
            o.local_forwards = vec![local("8080:localhost:80")]
        }),
        ("LocalForward [::1]:8080 [fe80::1]:80", |o| {
            o.local_forwards = vec![local("[::1]:8080:[fe80::1]:80")]
        }),
        ("LocalForward *:8080 db:5432", |o| {
            o.local_forwards = vec![local("*:8080:db:5432")]
        }),
        ("LocalForward 8080 /run/app.sock", |o| {
            o.local_forwards = vec![local("8080:/run/app.sock")]
        }),
        ("LocalForward /tmp/l.sock /run/r.sock", |o| {
            o.local_forwards = vec![local("/tmp/l.sock:/run/r.sock")]
        }),
        ("RemoteForward 9000 localhost:3000", |o| {
            o.remote_forwards = vec![remote("9000:localhost:3000")]
        }),
        ("RemoteForward [::]:9000 /run/app.sock", |o| {
            o.remote_forwards = vec![remote("[::]:9000:/run/app.sock")]
        }),
        ("RemoteForward 1080", |o| {
            o.remote_forwards = vec![remote("1080")]
        }),
        ("RemoteForward localhost:0", |o| {
            o.remote_forwards = vec![remote("localhost:0")]
        }),
        ("DynamicForward 1080", |o| {
            o.dynamic_forwards = vec![forward::parse_dynamic("1080").unwrap()]
        }),
        ("DynamicForward [::1]:1080", |o| {
            o.dynamic_forwards = vec![forward::parse_dynamic("[::1]:1080").unwrap()]
        }),
        ("ServerAliveInterval=15", |o| {
            o.server_alive_interval = Some(Duration::from_secs(15))
        }),
        ("ServerAliveInterval=0", |o| {
            o.server_alive_interval = Some(Duration::ZERO)
        }),
        ("ServerAliveInterval=none", |_| {}),
        ("ServerAliveCountMax=3", |o| {
            o.server_alive_count_max = Some(3)
        }),
        ("ServerAliveCountMax=0", |o| {
            o.server_alive_count_max = Some(0)
        }),
        ("ConnectionAttempts=5", |o| o.connection_attempts = Some(5)),
        ("ConnectionAttempts=2147483647", |o| {
            o.connection_attempts = Some(2_147_483_647)
        }),
        ("Compression=yes", |o| o.compression = Some(true)),
        ("Compression=NO", |o| o.compression = Some(false)),
        ("ProxyJump=bastion", |o| o.proxy_jump = s("bastion")),
        ("ProxyJump=alice@j1:2222,j2", |o| {
            o.proxy_jump = s("alice@j1:2222,j2")
        }),
        ("ProxyJump=none", |o| o.proxy_jump = s("none")),
        ("ProxyCommand=ssh -W %h:%p bastion", |o| {
            o.proxy_command = s("ssh -W %h:%p bastion")
        }),
        ("ProxyCommand \"nc %h %p\"", |o| {
            o.proxy_command = s("\"nc %h %p\"")
        }),
        (
            "Ciphers=aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
            |o| o.ciphers = s("aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"),
        ),
        ("Ciphers=+aes128-cbc", |o| o.ciphers = s("+aes128-cbc")),
        ("KexAlgorithms=-mlkem*", |o| o.kex_algorithms = s("-mlkem*")),
        ("MACs=hmac-sha2-512-etm@openssh.com", |o| {
            o.macs = s("hmac-sha2-512-etm@openssh.com")
        }),
        ("HostKeyAlgorithms=^ssh-ed25519", |o| {
            o.host_key_algorithms = s("^ssh-ed25519")
        }),
        ("HostKeyAlias=myhost", |o| o.host_key_alias = s("myhost")),
    ];

    #[test]
    fn every_keyword_sets_its_field() {
        for (arg, set) in SETS {
            let mut expected = Options::default();
            set(&mut expected);
            assert_eq!(applied(arg), expected, "{arg}");
        }
    }

    #[test]
    fn syntax_forms_and_case_are_equivalent() {
        let forms = [
            "User=bob",
            "User bob",
            "User = bob",
            "User= bob",
            "User =bob",
            "User\t=\tbob",
            "  User   bob  ",
            "user=bob",
            "USER bob",
            "uSeR = bob",
            "User=\"bob\"",
            "User='bob'",
            "User bob # a comment",
            "User \"b\"ob",
        ];
        for arg in forms {
            assert_eq!(applied(arg).user, s("bob"), "{arg}");
        }
    }

    #[test]
    fn split_option_normalizes_keys_and_keeps_quotes() {
        let cases = [
            ("Port=22", ("Port", "22")),
            ("port 22", ("Port", "22")),
            ("PORT = 22", ("Port", "22")),
            ("hostname=h", ("HostName", "h")),
            (
                "challengeresponseauthentication no",
                ("ChallengeResponseAuthentication", "no"),
            ),
            (
                "stricthostkeychecking=accept-new",
                ("StrictHostKeyChecking", "accept-new"),
            ),
            ("macs=hmac-sha2-256", ("MACs", "hmac-sha2-256")),
            (
                "IdentityFile=\"/path with/space\"",
                ("IdentityFile", "\"/path with/space\""),
            ),
            (
                "ProxyCommand=ssh -W %h:%p j",
                ("ProxyCommand", "ssh -W %h:%p j"),
            ),
            ("User==bob", ("User", "=bob")),
            ("NotAKeyword=x", ("NotAKeyword", "x")),
            (
                "LocalForward 8080 localhost:80",
                ("LocalForward", "8080 localhost:80"),
            ),
        ];
        for (arg, (key, value)) in cases {
            assert_eq!(
                split_option(arg),
                Ok((key.to_owned(), value.to_owned())),
                "{arg}"
            );
        }
        assert_eq!(
            split_option(""),
            Err(OptionError::MissingKeyword(String::new()))
        );
        assert_eq!(
            split_option("=yes"),
            Err(OptionError::MissingKeyword("=yes".into()))
        );
        assert_eq!(
            split_option("Bogus"),
            Err(OptionError::UnknownKeyword("Bogus".into()))
        );
        for arg in ["User", "User=", "user =  ", "User\t"] {
            assert_eq!(
                split_option(arg),
                Err(OptionError::MissingValue("User".into())),
                "{arg}"
            );
        }
    }

    #[test]
    fn quoting_follows_ssh_argv_rules() {
        assert_eq!(
            applied("IdentityFile=\"/keys/my key\"").identity_files,
            ["/keys/my key"]
        );
        assert_eq!(
            applied("IdentityFile=/keys/my\\ key").identity_files,
            ["/keys/my key"]
        );
        assert_eq!(
            applied("UserKnownHostsFile \"/a b\" '/c d' /e").user_known_hosts_files,
            Some(vec!["/a b".into(), "/c d".into(), "/e".into()])
        );
        assert_eq!(applied("User \"it's\"").user, s("it's"));
        assert_eq!(applied("User a\\\"b").user, s("a\"b"));
        assert_eq!(applied("User a\\nb").user, s("a\\nb"));
        let mut o = Options::default();
        let err = o.apply_arg("User \"bob").unwrap_err();
        assert!(err.to_string().contains("closing \" quote"), "{err}");
        assert_eq!(
            o.apply_arg("User \"\""),
            Err(OptionError::MissingValue("User".into()))
        );
        assert_eq!(
            o.apply_arg("User # only a comment"),
            Err(OptionError::MissingValue("User".into()))
        );
    }

    #[test]
    fn first_value_wins_for_scalars() {
        let pairs = [
            ("HostName a", "HostName b"),
            ("User a", "User b"),
            ("Port 1", "Port 2"),
            ("UserKnownHostsFile /a", "UserKnownHostsFile /b"),
            ("GlobalKnownHostsFile /a", "GlobalKnownHostsFile none"),
            ("StrictHostKeyChecking yes", "StrictHostKeyChecking no"),
            ("BatchMode yes", "BatchMode no"),
            ("ExitOnForwardFailure no", "ExitOnForwardFailure yes"),
            ("ConnectTimeout 5", "ConnectTimeout 10"),
            ("PasswordAuthentication no", "PasswordAuthentication yes"),
            (
                "KbdInteractiveAuthentication no",
                "ChallengeResponseAuthentication yes",
            ),
            ("PubkeyAuthentication no", "DSAAuthentication yes"),
            ("IdentitiesOnly yes", "IdentitiesOnly no"),
            ("IdentityAgent none", "IdentityAgent /tmp/agent"),
            ("HashKnownHosts yes", "HashKnownHosts no"),
            ("GatewayPorts yes", "GatewayPorts no"),
            ("LogLevel ERROR", "LogLevel DEBUG3"),
            ("ServerAliveInterval 0", "ServerAliveInterval 30"),
            ("ServerAliveCountMax 1", "ServerAliveCountMax 9"),
            ("ConnectionAttempts 1", "ConnectionAttempts 9"),
            ("Compression no", "Compression yes"),
            ("ProxyJump a", "ProxyJump b"),
            ("ProxyCommand a", "ProxyCommand b"),
            ("Ciphers aes128-ctr", "Ciphers aes256-ctr"),
            ("HostKeyAlias a", "HostKeyAlias b"),
        ];
        for (first, second) in pairs {
            let mut o = applied(first);
            let before = o.clone();
            assert_eq!(o.apply_arg(second), Ok(ApplyOutcome::Ignored), "{second}");
            assert_eq!(o, before, "{second} changed {first}");
        }
    }

    #[test]
    fn unset_by_none_leaves_room_for_later_values() {
        let mut o = applied("ConnectTimeout none");
        assert_eq!(o.apply_arg("ConnectTimeout 7"), Ok(ApplyOutcome::Applied));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(7)));
        let mut o = applied("ServerAliveInterval none");
        assert_eq!(
            o.apply_arg("ServerAliveInterval 7"),
            Ok(ApplyOutcome::Applied)
        );
        assert_eq!(o.server_alive_interval, Some(Duration::from_secs(7)));
    }

    #[test]
    fn proxy_jump_and_proxy_command_exclude_each_other() {
        let mut o = applied("ProxyJump bastion");
        assert_eq!(
            o.apply_arg("ProxyCommand nc %h %p"),
            Ok(ApplyOutcome::Ignored)
        );
        assert_eq!(o.proxy_command, None);
        let mut o = applied("ProxyCommand nc %h %p");
        assert_eq!(o.apply_arg("ProxyJump bastion"), Ok(ApplyOutcome::Ignored));
        assert_eq!(o.proxy_jump, None);
        // `ProxyJump none` only disables jumping; a later command still applies.
        let mut o = applied("ProxyJump none");
        assert_eq!(
            o.apply_arg("ProxyCommand nc %h %p"),
            Ok(ApplyOutcome::Applied)
        );
    }

    #[test]
    fn list_keywords_accumulate_without_duplicates() {
        let mut o = Options::default();
        let steps = [
            ("IdentityFile ~/.ssh/a", ApplyOutcome::Applied),
            ("IdentityFile ~/.ssh/b", ApplyOutcome::Applied),
            ("identityfile ~/.ssh/a", ApplyOutcome::Ignored),
            ("LocalForward 8080 h:80", ApplyOutcome::Applied),
            ("LocalForward 8081 h:80", ApplyOutcome::Applied),
            ("LocalForward 8080 h:80", ApplyOutcome::Ignored),
            ("RemoteForward 9000 h:80", ApplyOutcome::Applied),
            ("RemoteForward 1080", ApplyOutcome::Applied),
            ("RemoteForward 1080", ApplyOutcome::Ignored),
            ("DynamicForward 1080", ApplyOutcome::Applied),
            ("DynamicForward localhost:1081", ApplyOutcome::Applied),
            ("DynamicForward 1080", ApplyOutcome::Ignored),
        ];
        for (arg, outcome) in steps {
            assert_eq!(o.apply_arg(arg), Ok(outcome), "{arg}");
        }
        assert_eq!(o.identity_files, ["~/.ssh/a", "~/.ssh/b"]);
        let listens: Vec<_> = o.local_forwards.iter().map(|f| f.listen.clone()).collect();
        assert_eq!(
            listens,
            [
                Listen::Tcp {
                    bind: None,
                    port: 8080
                },
                Listen::Tcp {
                    bind: None,
                    port: 8081
                }
            ]
        );
        assert_eq!(o.remote_forwards.len(), 2);
        assert_eq!(o.remote_forwards[1].connect, None);
        assert_eq!(o.dynamic_forwards.len(), 2);
        assert_eq!(o.dynamic_forwards[1].bind, s("localhost"));
    }

    #[test]
    fn identity_files_are_capped_like_ssh() {
        let mut o = Options::default();
        for i in 0..MAX_IDENTITY_FILES {
            assert_eq!(
                o.apply_arg(&format!("IdentityFile k{i}")),
                Ok(ApplyOutcome::Applied)
            );
        }
        assert!(o.apply_arg("IdentityFile one-too-many").is_err());
        assert_eq!(o.apply_arg("IdentityFile k0"), Ok(ApplyOutcome::Ignored));
    }

    #[test]
    fn forward_arguments_join_carefully() {
        let o = applied("LocalForward /tmp/odd:name.sock host:80");
        assert_eq!(
            o.local_forwards[0].listen,
            Listen::Unix(PathBuf::from("/tmp/odd:name.sock"))
        );
        let o = applied("LocalForward 8080 /run/a:b.sock");
        assert_eq!(
            o.local_forwards[0].connect,
            Endpoint::Unix(PathBuf::from("/run/a:b.sock"))
        );
        let o = applied("LocalForward [/tmp/x:y] [::1]:22");
        assert_eq!(
            o.local_forwards[0].listen,
            Listen::Unix(PathBuf::from("/tmp/x:y"))
        );
        assert_eq!(
            o.local_forwards[0].connect,
            Endpoint::Tcp {
                host: "::1".into(),
                port: 22
            }
        );
        let o = applied("LocalForward \"127.0.0.1:8080\" \"db:5432\"");
        assert_eq!(o.local_forwards[0].spec, "127.0.0.1:8080:db:5432");
        let o = applied("RemoteForward /tmp/r\\\\:x.sock /tmp/l.sock");
        assert_eq!(
            o.remote_forwards[0].listen,
            Listen::Unix(PathBuf::from("/tmp/r:x.sock"))
        );
    }

    #[test]
    fn unsupported_keywords_are_reported_not_rejected() {
        for arg in [
            "forwardx11=no",
            "AddKeysToAgent yes",
            "CheckHostIP no",
            "Protocol 2",
            "UseRoaming no",
            "PubkeyAcceptedKeyTypes +ssh-rsa",
            "GSSAPIKeyExchange no",
            "UseKeychain yes",
            "NoHostAuthenticationForLocalhost yes",
            "XAuthLocation /usr/bin/xauth",
        ] {
            let mut o = Options::default();
            assert_eq!(o.apply_arg(arg), Ok(ApplyOutcome::Unsupported), "{arg}");
            assert_eq!(o, Options::default(), "{arg}");
        }
    }

    #[test]
    fn unknown_keywords_and_directives_are_errors() {
        let mut o = Options::default();
        let err = o.apply_arg("Bogus=1").unwrap_err();
        assert_eq!(err, OptionError::UnknownKeyword("Bogus".into()));
        assert_eq!(err.to_string(), "Bad configuration option: Bogus");
        for arg in [
            "ServerAliveCountMax2 1",
            "User-Name bob",
            "Users bob",
            "\"User\" bob",
        ] {
            assert!(
                matches!(o.apply_arg(arg), Err(OptionError::UnknownKeyword(_))),
                "{arg}"
            );
        }
        for (arg, name) in [
            ("Host foo", "Host"),
            ("match all", "Match"),
            ("Include ~/x", "Include"),
        ] {
            let err = o.apply_arg(arg).unwrap_err();
            assert_eq!(err, OptionError::Directive(name.into()));
            assert_eq!(
                err.to_string(),
                format!("{name} directive not supported as a command-line option")
            );
        }
        assert_eq!(o, Options::default());
    }

    /// Every keyword in OpenSSH's readconf.c table must be known, so real
    /// options never turn into "Bad configuration option" errors.
    #[test]
    fn knows_every_openssh_keyword() {
        let readconf = "protocol cipher fallbacktorsh globalknownhostsfile2 \
            rhostsauthentication userknownhostsfile2 useroaming usersh useprivilegedport \
            afstokenpassing kerberosauthentication kerberostgtpassing rsaauthentication \
            rhostsrsaauthentication compressionlevel gssapiauthentication \
            gssapidelegatecredentials pkcs11provider smartcarddevice forwardagent forwardx11 \
            forwardx11trusted forwardx11timeout exitonforwardfailure xauthlocation \
            gatewayports passwordauthentication kbdinteractiveauthentication \
            kbdinteractivedevices challengeresponseauthentication skeyauthentication \
            tisauthentication pubkeyauthentication dsaauthentication hostbasedauthentication \
            identityfile identityfile2 identitiesonly certificatefile addkeystoagent \
            identityagent hostname hostkeyalias proxycommand port ciphers macs remoteforward \
            localforward permitremoteopen user host match tag escapechar globalknownhostsfile \
            userknownhostsfile connectionattempts batchmode checkhostip stricthostkeychecking \
            compression tcpkeepalive keepalive numberofpasswordprompts syslogfacility loglevel \
            logverbose dynamicforward preferredauthentications hostkeyalgorithms \
            casignaturealgorithms bindaddress bindinterface clearallforwardings \
            enablesshkeysign verifyhostkeydns nohostauthenticationforlocalhost rekeylimit \
            connecttimeout addressfamily serveraliveinterval serveralivecountmax sendenv setenv \
            controlpath controlmaster controlpersist hashknownhosts include tunnel \
            tunneldevice localcommand permitlocalcommand remotecommand visualhostkey \
            kexalgorithms ipqos requesttty sessiontype stdinnull forkafterauthentication \
            proxyusefdpass canonicaldomains canonicalizefallbacklocal canonicalizehostname \
            canonicalizemaxdots canonicalizepermittedcnames streamlocalbindmask \
            streamlocalbindunlink revokedhostkeys fingerprinthash updatehostkeys \
            hostbasedacceptedalgorithms hostbasedkeytypes pubkeyacceptedalgorithms \
            pubkeyacceptedkeytypes ignoreunknown proxyjump securitykeyprovider \
            knownhostscommand requiredrsasize enableescapecommandline obscurekeystroketiming \
            channeltimeout versionaddendum refuseconnection warnweakcrypto";
        for word in readconf.split_whitespace() {
            assert!(lookup(word).is_some(), "{word} missing");
        }
        // No keyword is listed twice under different spellings.
        for (i, (a, _)) in KEYWORDS.iter().enumerate() {
            for (b, _) in &KEYWORDS[i + 1..] {
                assert!(!a.eq_ignore_ascii_case(b), "{a} listed twice");
            }
        }
    }

    #[test]
    fn bad_values_name_keyword_value_and_choices() {
        let cases = [
            (
                "StrictHostKeyChecking=maybe",
                "StrictHostKeyChecking: bad value 'maybe' (expected yes, no, ask, accept-new)",
            ),
            (
                "BatchMode=on",
                "BatchMode: bad value 'on' (expected yes or no)",
            ),
            (
                "BatchMode=1",
                "BatchMode: bad value '1' (expected yes or no)",
            ),
            ("GatewayPorts=clientspecified", "expected yes or no"),
            (
                "Compression=true",
                "Compression: bad value 'true' (expected yes or no)",
            ),
            (
                "PubkeyAuthentication=maybe",
                "expected yes, no, unbound, host-bound",
            ),
            (
                "Port=0",
                "Port: bad value '0' (expected a port number 1..=65535)",
            ),
            ("Port=65536", "a port number"),
            ("Port=ssh", "a port number"),
            ("Port=-22", "a port number"),
            ("Port=22 23", "a single argument"),
            (
                "User=a b",
                "User: bad value 'a b' (expected a single argument",
            ),
            (
                "LogLevel=LOUD",
                "expected QUIET, FATAL, ERROR, INFO, VERBOSE, DEBUG",
            ),
            (
                "ConnectTimeout=soon",
                "ConnectTimeout: bad value 'soon' (expected a time",
            ),
            ("ConnectTimeout=-1", "expected a time"),
            ("ConnectTimeout=1.5m", "expected a time"),
            ("ConnectTimeout=5.", "expected a time"),
            ("ConnectTimeout=1s1s", "expected a time"),
            ("ConnectTimeout=1x", "expected a time"),
            ("ConnectTimeout=99999999999", "expected a time"),
            ("ConnectTimeout=NONE", "expected a time"),
            ("ServerAliveInterval=1y", "expected a time"),
            ("ServerAliveCountMax=-1", "a whole number"),
            ("ServerAliveCountMax=2147483648", "a whole number"),
            ("ConnectionAttempts=many", "a whole number"),
            ("IdentityAgent=$1BAD", "$VARIABLE"),
            ("IdentityAgent=$", "$VARIABLE"),
            ("UserKnownHostsFile=/a none", "none on its own"),
            ("ProxyJump=a,,b", "[user@]host[:port]"),
            ("ProxyJump=a b", "[user@]host[:port]"),
            ("LocalForward=8080", "the connect argument is missing"),
            (
                "LocalForward=8080:localhost:80",
                "the connect argument is missing",
            ),
            ("LocalForward=8080 h:80 extra", "extra arguments"),
            ("LocalForward=x h:80", "listen port 'x'"),
            ("LocalForward=8080 h:0", "port 0"),
            ("LocalForward=8080 h", "too few fields"),
            (
                "LocalForward=8080 [::1:80",
                "LocalForward: bad value '8080 [::1:80' (expected [bind_address:]port host:hostport",
            ),
            ("RemoteForward=8080:h:80", "separated by whitespace"),
            ("RemoteForward=8080 h:80 x", "extra arguments"),
            ("RemoteForward=8080 h:http", "service names"),
            ("DynamicForward=x", "listen port 'x'"),
            ("DynamicForward=1080 1081", "a single argument"),
            ("DynamicForward=h:1080:x", "1 or 2"),
        ];
        for (arg, wanted) in cases {
            let mut o = Options::default();
            let err = o.apply_arg(arg).expect_err(arg);
            assert!(
                matches!(err, OptionError::BadValue { .. }),
                "{arg}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(wanted), "{arg}: {msg}");
            assert_eq!(o, Options::default(), "{arg} changed options");
        }
    }

    #[test]
    fn bad_values_are_rejected_even_when_already_set() {
        let mut o = applied("BatchMode yes");
        assert!(o.apply_arg("BatchMode maybe").is_err());
        let mut o = applied("Port 22");
        assert!(o.apply_arg("Port 0").is_err());
    }

    /// Short strings over the characters that matter to the syntax: errors
    /// are fine, panics are not.
    #[test]
    fn never_panics_on_odd_values() {
        const ALPHABET: [char; 8] = ['"', '\'', '\\', ' ', '#', '=', '1', '$'];
        let mut values = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = values
                .iter()
                .filter(|s| s.len() == values.last().map_or(0, String::len))
                .flat_map(|s| ALPHABET.iter().map(move |&c| format!("{s}{c}")))
                .collect();
            values.extend(longer);
        }
        for keyword in [
            "User",
            "UserKnownHostsFile",
            "ConnectTimeout",
            "IdentityAgent",
        ] {
            for value in &values {
                let _ = Options::default().apply(keyword, value);
                let _ = Options::default().apply_arg(&format!("{keyword}{value}"));
            }
        }
    }

    #[test]
    fn apply_takes_key_and_value_separately() {
        let mut o = Options::default();
        assert_eq!(o.apply("port", " 2222 "), Ok(ApplyOutcome::Applied));
        assert_eq!(o.port, Some(2222));
        assert_eq!(
            o.apply("User", "  "),
            Err(OptionError::MissingValue("User".into()))
        );
        assert_eq!(
            o.apply("ForwardAgent", ""),
            Err(OptionError::MissingValue("ForwardAgent".into()))
        );
    }
}
