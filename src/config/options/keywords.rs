//! Every ssh_config(5) keyword, what Warren does with it, and splitting one `-o` argument.

use super::*;

/// The keywords Warren acts on; everything else in [`KEYWORDS`] is either
/// unsupported or a block directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyword {
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
pub(super) const KEYWORDS: &[(&str, Keyword)] = &[
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

pub(super) fn lookup(key: &str) -> Option<(&'static str, Keyword)> {
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
