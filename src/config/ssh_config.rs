//! Reads `~/.ssh/config` and `/etc/ssh/ssh_config` into [`Options`] with ssh_config(5) semantics.
//!
//! Users point Warren at the config files they already have for ssh, so a
//! block must apply to exactly the hosts it applies to under ssh, and the
//! same value must win. Lines are fed to [`Options::apply`], the code that
//! handles `-o`, so precedence and value checking cannot drift apart: the
//! caller applies `-o` first, then these files, and the first value wins.
//!
//! Deliberate differences from OpenSSH, each loud rather than silent:
//! - Unknown keywords are warnings (ssh needs `IgnoreUnknown` for that).
//! - A bad value in a block that does not apply to this host is a warning;
//!   ssh refuses it, but Warren's checks are stricter than ssh's in places
//!   and must not break hosts the block is not about.
//! - `Match exec`, `localnetwork`, `command`, `sessiontype` and
//!   `version` are not evaluated: the block is treated as not matching and a
//!   warning says so.
//! - No hostname canonicalisation, so `Match canonical` is true only on the
//!   final pass, which (as in ssh with `CanonicalizeHostname no`) runs only
//!   when a `Match final` asks for it.
//! - `Include` globs know `*` and `?` but not `[...]` or `~user`, and `${VAR}`
//!   is left alone in Include paths.
//! - `Host` patterns fold ASCII case (see [`match_host_patterns`]); ssh's
//!   first pass compares them case-sensitively.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::forward::{Endpoint, Listen};
use super::options::{
    ApplyOutcome, ControlMaster, IdentityAgent, LogLevel, OptionError, Options,
    StrictHostKeyChecking, split_option,
};
use super::pattern::{match_host_patterns, match_pattern, match_pattern_list};
use super::values::SyslogFacility;

/// ssh's `READCONF_MAX_DEPTH`: a loop of includes must end in an error, not
/// a stack overflow.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Config files are a few KiB; the cap only stops `-F /dev/zero` from
/// eating memory.
const MAX_FILE_SIZE: u64 = 16 << 20;

/// Where relative `Include` paths in system files point, as in ssh.
const SYSTEM_DIR: &str = "/etc/ssh";

/// Match criteria that ssh knows but Warren cannot evaluate (they need a
/// shell, the network interfaces, or options Warren does not have).
const UNEVALUATED_CRITERIA: &str = "exec localnetwork command sessiontype version";

/// Criteria that ssh also accepts in `name=value` form.
const KEYED_CRITERIA: &str =
    "host originalhost user localuser localnetwork version tagged command exec";

type Res<T = ()> = Result<T, ConfigError>;

/// What `Host` and `Match` lines are matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchContext {
    /// The destination host as given on the command line (after `user@`).
    pub host: String,
    /// What `Match originalhost` and `%n` see; differs from `host` only when
    /// the caller rewrote the host (ssh: canonicalisation).
    pub original_host: String,
    /// The remote user from the command line (`-l`, `user@host`), which ssh
    /// has already stored before reading files, so it beats `User` lines.
    pub user: Option<String>,
    /// The local login name (`Match localuser`, `%u`).
    pub local_user: String,
    /// The local home directory (`~`, `%d`, relative user `Include`s).
    pub home: PathBuf,
}

/// Which kind of file a path is: it decides where relative `Include`s point
/// and whether `~` is allowed in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `~/.ssh/config`, a `-F` file, and files they include.
    User,
    /// `/etc/ssh/ssh_config` and files it includes.
    System,
}

/// One top-level config file, read in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The file; relative paths are relative to the working directory.
    pub path: PathBuf,
    /// User or system file.
    pub scope: Scope,
    /// A missing file is an error (`-F`) rather than skipped.
    pub required: bool,
    /// Refuse the file if others could have written it, as ssh does for
    /// `~/.ssh/config` (a writable config is a way to run commands as you).
    pub check_permissions: bool,
}

impl ConfigFile {
    /// ssh's choice of files: `-F none` reads nothing, `-F file` reads only
    /// that file (not even the system one), otherwise `~/.ssh/config` and
    /// then `/etc/ssh/ssh_config`.
    pub fn standard(home: &Path, explicit: Option<&Path>) -> Vec<ConfigFile> {
        match explicit {
            Some(p) if p.to_str().is_some_and(|s| s.eq_ignore_ascii_case("none")) => Vec::new(),
            Some(p) => vec![ConfigFile::new(p.into(), Scope::User, true, false)],
            None => {
                let system = Path::new(SYSTEM_DIR).join("ssh_config");
                vec![
                    ConfigFile::new(home.join(".ssh/config"), Scope::User, false, true),
                    ConfigFile::new(system, Scope::System, false, false),
                ]
            }
        }
    }

    fn new(path: PathBuf, scope: Scope, required: bool, check_permissions: bool) -> Self {
        ConfigFile {
            path,
            scope,
            required,
            check_permissions,
        }
    }
}

/// Something the user should hear about that does not stop the connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Warning {
    /// The file the line is in.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and what Warren did instead.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A line that ssh would also refuse (bad value, bad `Match`, ...).
    #[error("{}:{line}: {message}", file.display())]
    Line {
        /// The file the line is in.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming keyword and value.
        message: String,
    },
    /// A file that exists (or, for `-F`, must exist) but cannot be read.
    #[error("can't open config file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// ssh's "Bad owner or permissions" refusal.
    #[error(
        "bad owner or permissions on {}: it must be owned by you or root and not \
         writable by group or others (as ssh requires)",
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
    },
    /// A `-o HostName` with a bad `%` token (file lines report their line).
    #[error("{0}")]
    Expand(String),
}

/// Values for `%` tokens; see [`expand_tokens`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `%h`: the remote host name (after `HostName`).
    pub host: String,
    /// `%n`: the host as originally given.
    pub original_host: String,
    /// `%p`: the remote port.
    pub port: u16,
    /// `%r`: the remote user.
    pub remote_user: String,
    /// `%u`: the local user.
    pub local_user: String,
    /// `%d`: the local home directory.
    pub home: PathBuf,
}

impl Tokens {
    /// The values ssh uses once every source has been read: HostName, Port
    /// and User if set, otherwise the command line and ssh's defaults.
    pub fn resolved(opts: &Options, ctx: &MatchContext) -> Tokens {
        Tokens {
            host: opts.host_name.clone().unwrap_or_else(|| ctx.host.clone()),
            original_host: ctx.original_host.clone(),
            port: opts.port.unwrap_or(22),
            remote_user: remote_user(opts, ctx).to_owned(),
            local_user: ctx.local_user.clone(),
            home: ctx.home.clone(),
        }
    }
}

/// Expands ssh's `%h %p %r %u %d %n %%` tokens. An unknown token is an error
/// rather than left in place: ssh refuses it too, and a literal `%C` in a
/// path would only fail later with a more confusing message.
pub fn expand_tokens(s: &str, t: &Tokens) -> Result<String, String> {
    let port = t.port.to_string();
    let home = t.home.to_string_lossy();
    expand_with(s, "%h %p %r %u %d %n %%", |c| match c {
        'h' => Some(&t.host),
        'p' => Some(&port),
        'r' => Some(&t.remote_user),
        'u' => Some(&t.local_user),
        'd' => Some(&home),
        'n' => Some(&t.original_host),
        _ => None,
    })
}

/// Expands `~` and `%` tokens in the path options, as ssh does once the port
/// and user are final: IdentityFile, CertificateFile, UserKnownHostsFile, IdentityAgent and
/// forward socket paths. ProxyCommand is left for the client, which expands
/// it itself. Call it once: `%%` would not survive a second expansion.
pub fn expand_paths(opts: &mut Options, t: &Tokens) -> Result<(), String> {
    let path = |s: &str| expand_tokens(&expand_tilde(s, &t.home), t);
    for file in &mut opts.identity_files {
        *file = path(file).map_err(|e| format!("IdentityFile: {e}"))?;
    }
    for file in &mut opts.certificate_files {
        *file = path(file).map_err(|e| format!("CertificateFile: {e}"))?;
    }
    for file in opts.user_known_hosts_files.iter_mut().flatten() {
        if !file.eq_ignore_ascii_case("none") {
            *file = path(file).map_err(|e| format!("UserKnownHostsFile: {e}"))?;
        }
    }
    if let Some(IdentityAgent::Path(p)) = &mut opts.identity_agent {
        *p = path(p).map_err(|e| format!("IdentityAgent: {e}"))?;
    }
    let socket = |p: &mut PathBuf| -> Result<(), String> {
        if let Some(s) = p.to_str() {
            let expanded = expand_tokens(s, t).map_err(|e| format!("socket path: {e}"))?;
            *p = expanded.into();
        }
        Ok(())
    };
    for fwd in &mut opts.local_forwards {
        if let Listen::Unix(p) = &mut fwd.listen {
            socket(p)?;
        }
        if let Endpoint::Unix(p) = &mut fwd.connect {
            socket(p)?;
        }
    }
    for fwd in &mut opts.remote_forwards {
        if let Listen::Unix(p) = &mut fwd.listen {
            socket(p)?;
        }
        if let Some(Endpoint::Unix(p)) = &mut fwd.connect {
            socket(p)?;
        }
    }
    Ok(())
}

/// Reads `files` in order into `opts`, which should already hold the
/// command line's `-o` options. On return `HostName` has its `%h` expanded.
/// A `Match final` triggers ssh's second pass, in which `Host` lines match
/// the resolved HostName instead of the host as given.
pub fn apply_config_files(
    opts: &mut Options,
    ctx: &MatchContext,
    files: &[ConfigFile],
) -> Result<Vec<Warning>, ConfigError> {
    if let Some(name) = &opts.host_name {
        expand_host_name(name, &ctx.host).map_err(ConfigError::Expand)?;
    }
    let mut reader = Reader {
        opts,
        ctx,
        host: ctx.host.clone(),
        final_pass: false,
        want_final: false,
        warnings: Vec::new(),
        seen: HashSet::new(),
        warned_keywords: HashSet::new(),
        ignore_unknown: None,
        uid: current_uid(),
    };
    reader.pass(files)?;
    let resolved = reader
        .opts
        .host_name
        .as_deref()
        .map(|n| expand_host_name(n, &ctx.host));
    let resolved = resolved.transpose().map_err(ConfigError::Expand)?;
    if reader.want_final {
        let name = resolved.unwrap_or_else(|| ctx.host.clone());
        reader.opts.host_name = Some(name.clone());
        reader.host = name;
        reader.final_pass = true;
        reader.pass(files)?;
    } else {
        reader.opts.host_name = resolved;
    }
    Ok(reader.warnings)
}

/// Defaults for [`dump`] where `opts` has no value; port 22 and one
/// connection attempt are ssh's and not configurable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// `IdentityFile`, tried in order when none is configured.
    pub identity_files: Vec<String>,
    /// `UserKnownHostsFile`
    pub user_known_hosts_files: Vec<String>,
    /// `GlobalKnownHostsFile`
    pub global_known_hosts_files: Vec<String>,
    /// `StrictHostKeyChecking`
    pub strict_host_key_checking: StrictHostKeyChecking,
    /// `ServerAliveInterval`
    pub server_alive_interval: Duration,
    /// `ServerAliveCountMax`
    pub server_alive_count_max: u32,
}

impl Default for Defaults {
    /// ssh's defaults, except keepalives: Warren turns them on (15 s x 3) so
    /// a dead tunnel is noticed.
    fn default() -> Self {
        let strings = |v: &str| v.split(' ').map(String::from).collect();
        Defaults {
            identity_files: strings("~/.ssh/id_ed25519 ~/.ssh/id_ecdsa ~/.ssh/id_rsa"),
            user_known_hosts_files: strings("~/.ssh/known_hosts ~/.ssh/known_hosts2"),
            global_known_hosts_files: strings("/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"),
            strict_host_key_checking: StrictHostKeyChecking::Ask,
            server_alive_interval: Duration::from_secs(15),
            server_alive_count_max: 3,
        }
    }
}

/// The resolved settings in `ssh -G`'s format (lowercase keyword, a space,
/// the value, in ssh's order), so users can diff Warren's view against ssh's.
fn yes_no_default(v: Option<bool>, default: bool) -> &'static str {
    if v.unwrap_or(default) { "yes" } else { "no" }
}

pub fn dump(o: &Options, ctx: &MatchContext, d: &Defaults) -> String {
    let host_name = o.host_name.as_deref().unwrap_or(&ctx.host);
    let mut out = vec![
        format!("host {}", ctx.original_host),
        format!("user {}", remote_user(o, ctx)),
        format!("hostname {host_name}"),
        format!("port {}", o.port.unwrap_or(22)),
    ];
    let flags = [
        ("batchmode", o.batch_mode, false),
        ("compression", o.compression, false),
        ("exitonforwardfailure", o.exit_on_forward_failure, true),
        ("gatewayports", o.gateway_ports, false),
        ("hashknownhosts", o.hash_known_hosts, false),
        ("identitiesonly", o.identities_only, false),
        (
            "kbdinteractiveauthentication",
            o.kbd_interactive_authentication,
            true,
        ),
        ("passwordauthentication", o.password_authentication, true),
    ];
    for (key, value, default) in flags {
        let value = if value.unwrap_or(default) {
            "yes"
        } else {
            "no"
        };
        out.push(format!("{key} {value}"));
    }
    // ssh prints these two from its true/false tables.
    let pubkey = o.pubkey_authentication.unwrap_or(true);
    out.push(format!("pubkeyauthentication {pubkey}"));
    let strict = match o.strict_host_key_checking {
        None => d.strict_host_key_checking,
        Some(strict) => strict,
    };
    let strict = match strict {
        StrictHostKeyChecking::Yes => "true",
        StrictHostKeyChecking::No => "false",
        StrictHostKeyChecking::Ask => "ask",
        StrictHostKeyChecking::AcceptNew => "accept-new",
    };
    out.push(format!("stricthostkeychecking {strict}"));
    let attempts = o.connection_attempts.unwrap_or(1);
    let count = o.server_alive_count_max;
    let interval = o.server_alive_interval.unwrap_or(d.server_alive_interval);
    out.push(format!("connectionattempts {attempts}"));
    out.push(format!(
        "serveralivecountmax {}",
        count.unwrap_or(d.server_alive_count_max)
    ));
    out.push(format!("serveraliveinterval {}", interval.as_secs()));
    let optional = [
        ("ciphers", &o.ciphers),
        ("kexalgorithms", &o.kex_algorithms),
        ("macs", &o.macs),
        ("hostkeyalgorithms", &o.host_key_algorithms),
        ("hostkeyalias", &o.host_key_alias),
    ];
    for (key, value) in optional {
        out.extend(value.as_ref().map(|v| format!("{key} {v}")));
    }
    out.extend(o.identity_agent.as_ref().map(|agent| match agent {
        IdentityAgent::Disabled => "identityagent none".to_owned(),
        IdentityAgent::Env(var) if var == "SSH_AUTH_SOCK" => format!("identityagent {var}"),
        IdentityAgent::Env(var) => format!("identityagent ${var}"),
        IdentityAgent::Path(path) => format!("identityagent {path}"),
    }));
    // The variant names are ssh's level names in another case.
    let level = format!("{:?}", o.log_level.unwrap_or(LogLevel::Info));
    out.push(format!("loglevel {}", level.to_uppercase()));
    let family = o.address_family.unwrap_or_default();
    out.push(format!("addressfamily {}", family.name()));
    out.extend(o.bind_address.as_ref().map(|a| format!("bindaddress {a}")));
    out.extend(
        o.bind_interface
            .as_ref()
            .map(|i| format!("bindinterface {i}")),
    );
    let rekey = o.rekey_limit.unwrap_or_default();
    out.push(format!("rekeylimit {}", rekey.dump()));
    let agent = o.forward_agent.as_ref().map_or("no", |a| a.dump());
    out.push(format!("forwardagent {agent}"));
    out.push(format!(
        "escapechar {}",
        o.escape_char.as_deref().unwrap_or("~")
    ));
    out.extend(o.tag.as_ref().map(|t| format!("tag {t}")));
    // ssh -G prints ControlMaster from its true/false table, and the others as given.
    let master = match o.control_master {
        None | Some(ControlMaster::No) => "false",
        Some(ControlMaster::Yes) => "true",
        Some(ControlMaster::Auto) => "auto",
        Some(ControlMaster::Ask) => "ask",
        Some(ControlMaster::AutoAsk) => "autoask",
    };
    out.push(format!("controlmaster {master}"));
    out.extend(o.control_path.as_ref().map(|p| format!("controlpath {p}")));
    let persist = o.control_persist.as_deref().unwrap_or("no");
    out.push(format!("controlpersist {persist}"));
    out.push(format!(
        "tcpkeepalive {}",
        yes_no_default(o.tcp_keep_alive, true)
    ));
    // Unlike ssh (af21 cs1), warren leaves the system's default unless told.
    let qos = o.ip_qos.as_ref().map_or("none", |q| q.text.as_str());
    out.push(format!("ipqos {qos}"));
    out.push(format!(
        "gssapiauthentication {}",
        yes_no_default(o.gssapi_authentication, false)
    ));
    if !o.send_env.is_empty() {
        out.push(format!("sendenv {}", o.send_env.join(" ")));
    }
    if let Some(pairs) = &o.set_env {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(format!("setenv {}", text.join(" ")));
    }
    let facility = o.syslog_facility.unwrap_or(SyslogFacility::USER);
    out.push(format!("syslogfacility {}", facility.name()));
    for (key, v) in [
        ("clearallforwardings", o.clear_all_forwardings),
        ("streamlocalbindunlink", o.stream_local_bind_unlink),
    ] {
        out.push(format!("{key} {}", yes_no_default(v, false)));
    }
    let session = o.session_type.map_or("default", |t| t.name());
    out.push(format!("sessiontype {session}"));
    let tunnel = o.tunnel.unwrap_or(crate::config::values::TunnelMode::No);
    out.push(format!("tunnel {}", tunnel.name()));
    let dev = o.tunnel_device.unwrap_or_default();
    out.push(format!(
        "tunneldevice {}:{}",
        dev.local.name(),
        dev.remote.name()
    ));
    let yes_no = |b: Option<bool>| if b.unwrap_or(false) { "yes" } else { "no" };
    out.push(format!("stdinnull {}", yes_no(o.stdin_null)));
    out.push(format!(
        "forkafterauthentication {}",
        yes_no(o.fork_after_authentication)
    ));
    for fwd in &o.dynamic_forwards {
        let (bind, port) = (fwd.bind.clone(), fwd.port);
        out.push(format!(
            "dynamicforward {}",
            listen_text(&Listen::Tcp { bind, port })
        ));
    }
    for fwd in &o.local_forwards {
        let (listen, connect) = (listen_text(&fwd.listen), endpoint_text(&fwd.connect));
        out.push(format!("localforward {listen} {connect}"));
    }
    for fwd in &o.remote_forwards {
        let connect = fwd
            .connect
            .as_ref()
            .map(|c| format!(" {}", endpoint_text(c)));
        let listen = listen_text(&fwd.listen);
        out.push(format!(
            "remoteforward {listen}{}",
            connect.unwrap_or_default()
        ));
    }
    let ids = if o.identity_files.is_empty() {
        &d.identity_files
    } else {
        &o.identity_files
    };
    out.extend(ids.iter().map(|f| format!("identityfile {f}")));
    out.extend(
        o.certificate_files
            .iter()
            .map(|f| format!("certificatefile {f}")),
    );
    let global = o.global_known_hosts_files.as_ref();
    let global = global.unwrap_or(&d.global_known_hosts_files).join(" ");
    out.push(format!("globalknownhostsfile {global}"));
    let user = o.user_known_hosts_files.as_ref();
    out.push(format!(
        "userknownhostsfile {}",
        user.unwrap_or(&d.user_known_hosts_files).join(" ")
    ));
    let timeout = o.connect_timeout.map(|t| t.as_secs().to_string());
    out.push(format!(
        "connecttimeout {}",
        timeout.as_deref().unwrap_or("none")
    ));
    match (&o.proxy_jump, &o.proxy_command) {
        (Some(jump), _) => out.push(format!("proxyjump {jump}")),
        (None, Some(command)) => out.push(format!("proxycommand {command}")),
        (None, None) => {}
    }
    out.iter().map(|line| format!("{line}\n")).collect()
}

/// ssh -G brackets every address, IPv4 or not.
fn listen_text(listen: &Listen) -> String {
    match listen {
        Listen::Tcp { bind: None, port } => port.to_string(),
        Listen::Tcp {
            bind: Some(bind),
            port,
        } => format!("[{bind}]:{port}"),
        Listen::Unix(path) => path.display().to_string(),
    }
}

fn endpoint_text(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Tcp { host, port } => format!("[{host}]:{port}"),
        Endpoint::Unix(path) => path.display().to_string(),
    }
}

/// ssh has the command-line user before it reads any file, so it beats a
/// `User` line; with neither, the local user.
fn remote_user<'a>(opts: &'a Options, ctx: &'a MatchContext) -> &'a str {
    ctx.user
        .as_deref()
        .or(opts.user.as_deref())
        .unwrap_or(&ctx.local_user)
}

/// HostName knows only `%h` and `%%`, as in ssh.
fn expand_host_name(name: &str, host: &str) -> Result<String, String> {
    expand_with(name, "%h %%", |c| (c == 'h').then_some(host)).map_err(|e| format!("HostName: {e}"))
}

fn expand_with<'a>(
    s: &str,
    known: &str,
    value: impl Fn(char) -> Option<&'a str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(token) => match value(token) {
                Some(v) => out.push_str(v),
                None => return Err(format!("unknown token %{token} in '{s}' (known: {known})")),
            },
            None => return Err(format!("'{s}' ends with a lone %")),
        }
    }
    Ok(out)
}

/// `~` and `~/...` only; `~user` is left as typed, like the client does.
fn expand_tilde(s: &str, home: &Path) -> String {
    match s.strip_prefix('~') {
        Some("") => home.to_string_lossy().into_owned(),
        Some(rest) if rest.starts_with('/') => format!("{}{rest}", home.display()),
        _ => s.to_owned(),
    }
}

/// ssh's `argv_split()` with comments: whitespace separates, quotes group,
/// `\` escapes quotes, backslashes and unquoted spaces, and an unquoted `#`
/// starting an argument ends the line.
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
        if matches!(chars.peek(), None | Some('#')) {
            return Ok(args);
        }
        let mut arg = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&n) if matches!(n, '\'' | '"' | '\\') || (quote.is_none() && n == ' ') => {
                        arg.push(n);
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
            return Err(format!("missing closing {q} quote"));
        }
        args.push(arg);
    }
}

#[allow(unsafe_code)]
fn current_uid() -> u32 {
    // SAFETY: getuid() takes no arguments, touches no memory and cannot fail.
    unsafe { libc::getuid() }
}

/// Where a line is, for messages: file and 1-based line number.
struct At<'a>(&'a Path, usize);

impl At<'_> {
    fn err(&self, message: impl Into<String>) -> ConfigError {
        let (file, line, message) = (self.0.to_owned(), self.1, message.into());
        ConfigError::Line {
            file,
            line,
            message,
        }
    }
}

/// One file being read.
struct Frame<'a> {
    file: &'a ConfigFile,
    depth: usize,
    /// Inside a block that does not apply, so `Host` and `Match` cannot turn
    /// lines on (ssh's `SSHCONF_NEVERMATCH`).
    parse_only: bool,
    /// Whether lines apply. An included file starts with its includer's
    /// value, and has its own copy, so its blocks end where it ends, as in ssh.
    active: bool,
}

/// State of one [`apply_config_files`] call.
struct Reader<'a> {
    opts: &'a mut Options,
    ctx: &'a MatchContext,
    /// What `Host` lines match: the host as given, or on the final pass the
    /// resolved HostName, as in ssh.
    host: String,
    final_pass: bool,
    /// Some `Match final` asked for a second pass.
    want_final: bool,
    warnings: Vec<Warning>,
    /// The second pass re-reads every line; each warning is reported once.
    seen: HashSet<Warning>,
    /// Unsupported keywords are reported once, not on every line using them.
    warned_keywords: HashSet<String>,
    /// `IgnoreUnknown`: silences the warning for these unknown keywords.
    ignore_unknown: Option<String>,
    uid: u32,
}

impl Reader<'_> {
    fn pass(&mut self, files: &[ConfigFile]) -> Res {
        for file in files {
            let (depth, parse_only, active) = (0, false, true);
            self.read(&mut Frame {
                file,
                depth,
                parse_only,
                active,
            })?;
        }
        Ok(())
    }

    fn read(&mut self, f: &mut Frame<'_>) -> Res {
        let file = f.file;
        let owner = file.check_permissions.then_some(self.uid);
        let Some(data) = load(&file.path, file.required, owner)? else {
            return Ok(());
        };
        for (index, raw) in data.split(|&b| b == b'\n').enumerate() {
            let at = At(&file.path, index + 1);
            match std::str::from_utf8(raw) {
                Ok(text) => self.line(f, &at, text)?,
                Err(_) if is_blank_or_comment(raw) => {}
                Err(_) => return Err(at.err("line is not valid UTF-8")),
            }
        }
        Ok(())
    }

    fn line(&mut self, f: &mut Frame<'_>, at: &At<'_>, text: &str) -> Res {
        let text = text.trim_start_matches([' ', '\t', '\r']);
        let text = text.trim_end_matches([' ', '\t', '\r', '\x0c']);
        if text.is_empty() || text.starts_with('#') {
            return Ok(());
        }
        let (key, value) = match split_option(text) {
            Ok(kv) => kv,
            Err(OptionError::UnknownKeyword(keyword)) => {
                self.unknown(at, &keyword);
                return Ok(());
            }
            Err(e) => return Err(at.err(e.to_string())),
        };
        match key.as_str() {
            "Host" => {
                let patterns = self.args(at, "Host", &value)?;
                let patterns = patterns.iter().map(String::as_str);
                f.active = !f.parse_only && match_host_patterns(&self.host, patterns);
            }
            "Match" => f.active = self.match_line(at, &value)? && !f.parse_only,
            "Include" => self.include(f, at, &value)?,
            "IgnoreUnknown" if f.active => {
                self.ignore_unknown.get_or_insert(value);
            }
            _ if f.active => self.apply(at, &key, &value)?,
            // Checked anyway, as ssh does, but only a warning: see the module doc.
            _ => match Options::default().apply(&key, &value) {
                Err(OptionError::UnknownKeyword(keyword)) => self.unknown(at, &keyword),
                Err(e) => self.warn(
                    at,
                    format!("{e}; ignored as this block does not apply here"),
                ),
                Ok(_) => {}
            },
        }
        Ok(())
    }

    /// Arguments of a directive; empty ones are refused, as ssh does.
    fn args(&self, at: &At<'_>, keyword: &str, value: &str) -> Res<Vec<String>> {
        let args = split_args(value).map_err(|e| at.err(format!("{keyword}: {e}")))?;
        if args.iter().any(String::is_empty) {
            return Err(at.err(format!("{keyword}: empty argument")));
        }
        Ok(args)
    }

    fn apply(&mut self, at: &At<'_>, key: &str, value: &str) -> Res {
        match self.opts.apply(key, value) {
            // Checked now so that a bad token is blamed on its line; the
            // value itself is expanded once all files are read.
            Ok(ApplyOutcome::Applied) if key == "HostName" => {
                let name = self.opts.host_name.as_deref().unwrap_or_default();
                expand_host_name(name, &self.ctx.host).map_err(|e| at.err(e))?;
            }
            // `key` is canonical (split_option), so spellings share one entry.
            Ok(ApplyOutcome::Unsupported) if self.warned_keywords.insert(key.to_owned()) => {
                let message = format!("{key} is not supported by warren and is ignored");
                self.warn(at, message + " (reported once per keyword)");
            }
            Ok(_) => {}
            Err(OptionError::UnknownKeyword(keyword)) => self.unknown(at, &keyword),
            Err(e) => return Err(at.err(e.to_string())),
        }
        Ok(())
    }

    fn unknown(&mut self, at: &At<'_>, keyword: &str) {
        let lower = keyword.to_ascii_lowercase();
        let ignored = self.ignore_unknown.as_deref();
        if !ignored.is_some_and(|list| match_pattern_list(&lower, list, true).is_match()) {
            self.warn(
                at,
                format!("unknown keyword '{keyword}' ignored (ssh would refuse it)"),
            );
        }
    }

    fn warn(&mut self, at: &At<'_>, message: String) {
        let (file, line) = (at.0.to_owned(), at.1);
        let warning = Warning {
            file,
            line,
            message,
        };
        if self.seen.insert(warning.clone()) {
            self.warnings.push(warning);
        }
    }

    /// The host `Match host` sees: HostName (with `%h`) once set, as in ssh.
    fn target_host(&self) -> String {
        match &self.opts.host_name {
            Some(_) if self.final_pass => self.host.clone(),
            Some(name) => expand_host_name(name, &self.ctx.host).unwrap_or_else(|_| name.clone()),
            None => self.ctx.host.clone(),
        }
    }

    /// ssh's `match_cfg_line()`: criteria are ANDed, each may be negated.
    fn match_line(&mut self, at: &At<'_>, value: &str) -> Res<bool> {
        let args = split_args(value).map_err(|e| at.err(format!("Match: {e}")))?;
        let host = self.target_host();
        let (mut result, mut attributes, mut unevaluated) = (true, 0, Vec::new());
        let mut args = args.iter().map(String::as_str);
        while let Some(raw) = args.next() {
            let (negate, attr) = raw.strip_prefix('!').map_or((false, raw), |a| (true, a));
            if attr.eq_ignore_ascii_case("all") {
                // ssh's rule, which lets `all` follow one other criterion.
                if attributes > 1 || args.next().is_some() {
                    let msg = format!("Match: '{raw}' cannot be combined with other criteria");
                    return Err(at.err(msg));
                }
                result &= !negate;
                attributes = usize::MAX;
                break;
            }
            attributes += 1;
            let is_final = attr.eq_ignore_ascii_case("final");
            if is_final || attr.eq_ignore_ascii_case("canonical") {
                self.want_final |= is_final && !negate;
                result &= self.final_pass != negate;
                continue;
            }
            let keyed = attr.split_once('=').filter(|(name, _)| {
                KEYED_CRITERIA
                    .split(' ')
                    .any(|k| k.eq_ignore_ascii_case(name))
            });
            let (name, arg) = keyed.map_or((attr, args.next()), |(n, a)| (n, Some(a)));
            let Some(arg) = arg.filter(|a| !a.is_empty()) else {
                return Err(at.err(format!("Match: missing argument for '{raw}'")));
            };
            let matched = match name.to_ascii_lowercase().as_str() {
                "host" => match_pattern_list(&host, arg, true),
                "originalhost" => match_pattern_list(&self.ctx.original_host, arg, true),
                "user" => match_pattern_list(remote_user(self.opts, self.ctx), arg, false),
                "localuser" => match_pattern_list(&self.ctx.local_user, arg, false),
                // The Tag set so far (-P, -o Tag, or an earlier line), "" when none.
                "tagged" => match_pattern_list(self.opts.tag.as_deref().unwrap_or(""), arg, false),
                lower if UNEVALUATED_CRITERIA.split(' ').any(|c| c == lower) => {
                    unevaluated.push(lower.to_owned());
                    result = false;
                    continue;
                }
                _ => return Err(at.err(format!("Match: unsupported attribute '{name}'"))),
            };
            result &= matched.is_match() != negate;
        }
        if attributes == 0 {
            return Err(at.err("Match: one or more criteria required"));
        }
        for criterion in unevaluated {
            let message = format!(
                "Match {criterion} is not supported by warren: this Match block is \
                 treated as not matching, so its settings are not used"
            );
            self.warn(at, message);
        }
        Ok(result)
    }

    fn include(&mut self, f: &Frame<'_>, at: &At<'_>, value: &str) -> Res {
        let host = self.target_host();
        let tokens = Tokens {
            host,
            ..Tokens::resolved(self.opts, self.ctx)
        };
        let scope = f.file.scope;
        for arg in self.args(at, "Include", value)? {
            let expanded = match expand_tokens(&arg, &tokens) {
                Ok(p) => p,
                Err(e) => {
                    self.warn(at, format!("Include: {e}; skipped"));
                    continue;
                }
            };
            let pattern = if expanded.starts_with('~') {
                if scope == Scope::System {
                    let msg = format!("Include: bad path '{expanded}': no ~ in system files");
                    return Err(at.err(msg));
                }
                if expanded != "~" && !expanded.starts_with("~/") {
                    return Err(at.err(format!("Include: ~user paths are not supported: {arg}")));
                }
                PathBuf::from(expand_tilde(&expanded, &self.ctx.home))
            } else if Path::new(&expanded).is_absolute() {
                PathBuf::from(expanded)
            } else if scope == Scope::User {
                self.ctx.home.join(".ssh").join(expanded)
            } else {
                Path::new(SYSTEM_DIR).join(expanded)
            };
            for path in glob(&pattern) {
                if f.depth >= MAX_INCLUDE_DEPTH {
                    return Err(at.err(format!(
                        "Include: too many nested includes (more than {MAX_INCLUDE_DEPTH} \
                         levels, like ssh; an include loop?) at {}",
                        path.display()
                    )));
                }
                let file = &ConfigFile::new(path, scope, false, true);
                let (depth, parse_only, active) =
                    (f.depth + 1, f.parse_only || !f.active, f.active);
                self.read(&mut Frame {
                    file,
                    depth,
                    parse_only,
                    active,
                })?;
            }
        }
        Ok(())
    }
}

fn is_blank_or_comment(raw: &[u8]) -> bool {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace());
    start.is_none_or(|i| raw[i] == b'#')
}

/// Reads a whole file; `None` if it does not exist and need not.
fn load(path: &Path, required: bool, owner: Option<u32>) -> Result<Option<Vec<u8>>, ConfigError> {
    let io_err = |source: io::Error| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        // ssh's fopen() of a directory reads as an empty file.
        return Ok(Some(Vec::new()));
    }
    if let Some(uid) = owner
        && ((meta.uid() != 0 && meta.uid() != uid) || meta.mode() & 0o022 != 0)
    {
        return Err(ConfigError::Permissions {
            path: path.to_owned(),
        });
    }
    let mut data = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(io_err)?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(io_err(io::Error::other("file is larger than 16 MiB")));
    }
    Ok(Some(data))
}

/// glob(3) as ssh's `Include` uses it: `*` and `?` per path component,
/// hidden files only for patterns starting with `.`, sorted, existing paths
/// only. Unreadable directories simply match nothing, as in glob(3).
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = component.as_os_str();
        let Some(wild) = part.to_str().filter(|s| s.contains(['*', '?'])) else {
            found.iter_mut().for_each(|p| p.push(part));
            continue;
        };
        let mut next = Vec::new();
        for dir in &found {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    (!n.starts_with('.') || wild.starts_with('.')) && match_pattern(n, wild)
                })
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| p.exists());
    found
}

#[cfg(test)]
#[path = "ssh_config_tests.rs"]
mod tests;
