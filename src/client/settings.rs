//! Turning the command line and `-o` options into one resolved set of settings, with
//! OpenSSH's precedence and defaults.

use super::auth::{AgentSource, AuthSettings, IdentityFile};
use super::cli::Cli;
use super::error::ClientError;
use super::host_key::HostKeyPolicy;
use super::prompt::Prompter;
use super::proxy_command;
use super::session::{ConnectSettings, Transport};
use crate::config::forward::{self, DynamicForward, Endpoint, LocalForward, RemoteForward};
use crate::config::options::{ApplyOutcome, IdentityAgent, Options, StrictHostKeyChecking};
use crate::config::ssh_config::{
    ConfigFile, Defaults, MatchContext, Tokens, apply_config_files, dump, expand_paths,
};
use crate::config::values::{AddressFamily, ForwardAgent, SessionType, TunnelMode};
use std::path::{Path, PathBuf};
use tracing::warn;

/// Everything `run` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect: ConnectSettings,
    pub local_forwards: Vec<LocalForward>,
    pub remote_forwards: Vec<RemoteForward>,
    pub dynamic_forwards: Vec<DynamicForward>,
    /// -W: stdin/stdout to this destination instead of forwards.
    pub stdio: Option<Endpoint>,
    /// The remote command, joined with spaces as ssh does.
    pub command: Option<String>,
    pub null_stdin: bool,
    pub exit_on_forward_failure: bool,
    pub gateway_ports: bool,
    /// AddressFamily, for -L/-D listeners without an explicit address.
    pub address_family: AddressFamily,
    /// -s: the command is a subsystem name.
    pub subsystem: bool,
    /// -N (SessionType none): the command, if any, is not run.
    pub no_remote_command: bool,
    /// StreamLocalBindUnlink: a unix-socket -L replaces a stale socket file.
    pub stream_local_bind_unlink: bool,
    /// -M/-S/-O with ControlMaster, ControlPath and Tag.
    pub control: super::control::ControlSettings,
    /// -w / Tunnel / TunnelDevice: a tun@openssh.com tunnel to open on each session.
    pub tunnel: Option<super::tun::TunnelSettings>,
}

/// `[user@]host` or `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Destination {
    pub fn parse(s: &str) -> Result<Destination, ClientError> {
        let bad = |why: &str| {
            ClientError::Usage(format!(
                "bad destination '{s}': {why} (expected [user@]host or ssh://[user@]host[:port])"
            ))
        };
        if let Some(rest) = s.strip_prefix("ssh://") {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            let (user, hostport) = match rest.rsplit_once('@') {
                Some((u, h)) => (Some(u.to_string()), h),
                None => (None, rest),
            };
            let (host, port) = split_host_port(hostport).map_err(bad)?;
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            return Ok(Destination {
                user: user.filter(|u| !u.is_empty()),
                host: host.to_string(),
                port,
            });
        }
        let (user, host) = match s.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, s),
        };
        if host.is_empty() || host.starts_with('-') || host.chars().any(char::is_whitespace) {
            return Err(bad("empty or invalid host"));
        }
        if user.as_deref() == Some("") {
            return Err(bad("empty user"));
        }
        Ok(Destination {
            user,
            host: host.to_string(),
            port: None,
        })
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `~/x` to `$HOME/x`, as OpenSSH does for file options.
fn expand_tilde(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None if p == "~" => home(),
        None => PathBuf::from(p),
    }
}

/// `Ciphers` applied to our preference order; unknown names are a usage error, as in ssh.
fn ciphers(o: &Options) -> Result<Vec<String>, ClientError> {
    let defaults = crate::crypto::cipher_names();
    algorithms("Ciphers", &o.ciphers, defaults, warren_ssh::cipher::CIPHERS)
}

/// `KexAlgorithms` and `MACs` applied to the engine's own order, and `HostKeyAlgorithms`
/// when given.
#[allow(clippy::type_complexity)]
fn kex_macs_host_keys(
    o: &Options,
) -> Result<(Vec<String>, Vec<String>, Option<Vec<String>>), ClientError> {
    use warren_ssh::{cipher, hostkey, kex};
    let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let kex_list = algorithms(
        "KexAlgorithms",
        &o.kex_algorithms,
        own(kex::KEX_ALGORITHMS),
        kex::KEX_ALGORITHMS,
    )?;
    let macs = algorithms("MACs", &o.macs, own(cipher::MACS), cipher::MACS)?;
    let host_keys = match &o.host_key_algorithms {
        None => None,
        given => {
            let supported: Vec<&str> = hostkey::HOST_CERT_ALGORITHMS
                .iter()
                .chain(hostkey::HOST_KEY_ALGORITHMS)
                .copied()
                .collect();
            Some(algorithms(
                "HostKeyAlgorithms",
                given,
                own(hostkey::HOST_KEY_ALGORITHMS),
                &supported,
            )?)
        }
    };
    Ok((kex_list, macs, host_keys))
}

fn algorithms(
    what: &str,
    spec: &Option<String>,
    defaults: Vec<String>,
    supported: &[&str],
) -> Result<Vec<String>, ClientError> {
    match spec {
        None => Ok(defaults),
        Some(spec) => crate::crypto::algorithm_list(what, spec, &defaults, supported)
            .map_err(ClientError::Usage),
    }
}

/// Warren keeps keepalive on by default (15 s x 3): a tunnel is only as good as the
/// speed at which a dead link is noticed. ServerAliveInterval 0 turns it off.
fn keepalive(o: &Options) -> Option<(std::time::Duration, usize)> {
    let interval = o
        .server_alive_interval
        .unwrap_or(std::time::Duration::from_secs(15));
    if interval.is_zero() {
        return None;
    }
    let count = o.server_alive_count_max.unwrap_or(3).max(1) as usize;
    Some((interval, count))
}

/// `-W host:port` (IPv6 in brackets).
fn parse_stdio(spec: &str) -> Result<Endpoint, ClientError> {
    let bad = || {
        ClientError::Usage(format!(
            "bad -W '{spec}': expected host:port (IPv6 as [addr]:port)"
        ))
    };
    let (host, port) = match spec.strip_prefix('[') {
        Some(rest) => {
            let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
            (h, p)
        }
        None => spec.rsplit_once(':').ok_or_else(bad)?,
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(Endpoint::Tcp {
        host: host.to_string(),
        port,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port must be 1-65535.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = match s.strip_prefix('[') {
        Some(inner) => {
            let (h, after) = inner.split_once(']').ok_or("unbalanced '['")?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err("junk after ']'"),
            }
        }
        None => match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let port = port
        .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or("bad port"))
        .transpose()?;
    Ok((host, port))
}

/// One -J hop: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
fn parse_hop(hop: &str) -> Result<(Option<String>, String, Option<u16>), ClientError> {
    let bad = |why: &str| {
        ClientError::Usage(format!(
            "bad jump host '{hop}' in -J: {why} (expected [user@]host[:port][,...])"
        ))
    };
    if hop.starts_with("ssh://") {
        let d = Destination::parse(hop)?;
        return Ok((d.user, d.host, d.port));
    }
    let (user, hostport) = match hop.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some(_) => return Err(bad("empty user")),
        None => (None, hop),
    };
    let (host, port) = split_host_port(hostport).map_err(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) || host.starts_with('-') {
        return Err(bad("empty or invalid host"));
    }
    Ok((user, host.to_string(), port))
}

/// `none` disables a known_hosts list, as in OpenSSH.
fn known_hosts_list(files: &[String]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("none"))
        .map(|f| expand_tilde(f))
        .collect()
}

/// The login name of the current uid, as ssh takes it from the passwd database (cron
/// jobs and services often run without USER set).
fn local_user() -> Option<String> {
    Some(whoami::username())
        .filter(|u| !u.is_empty())
        .or_else(|| {
            ["USER", "LOGNAME"]
                .iter()
                .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        })
}

/// The options for `dest`: `-o` first (first value wins), then ~/.ssh/config and
/// /etc/ssh/ssh_config (or `-F`), with OpenSSH's token expansion.
pub(super) fn options_for(
    dest: &Destination,
    cli: &Cli,
    user: Option<String>,
    quiet_unsupported: bool,
) -> Result<(Options, MatchContext), ClientError> {
    let mut o = Options::default();
    for arg in super::flags::as_options(cli).iter().chain(&cli.options) {
        match o
            .apply_arg(arg)
            .map_err(|e| ClientError::Usage(format!("-o {arg}: {e}")))?
        {
            ApplyOutcome::Unsupported if !quiet_unsupported => {
                warn!("-o {arg}: this OpenSSH option is not supported by warren yet; ignored")
            }
            _ => {}
        }
    }
    let ctx = MatchContext {
        host: dest.host.clone(),
        original_host: dest.host.clone(),
        user,
        local_user: local_user().unwrap_or_default(),
        home: home(),
    };
    let explicit = cli.config_file.as_deref().map(Path::new);
    let files = ConfigFile::standard(&home(), explicit);
    let warnings =
        apply_config_files(&mut o, &ctx, &files).map_err(|e| ClientError::Usage(e.to_string()))?;
    for w in warnings {
        warn!("{w}");
    }
    let tokens = Tokens::resolved(&o, &ctx);
    expand_paths(&mut o, &tokens).map_err(ClientError::Usage)?;
    Ok((o, ctx))
}

/// How to reach `dest`: the final destination (`hop == false`: -l, -p, -J apply) or a
/// jump host. A jump host gets the command line's -o and -i too (one process, one
/// intent; OpenSSH's separate `ssh -W` would not see them), and its own config block.
fn resolve_connect(
    dest: &Destination,
    cli: &Cli,
    hop: bool,
    depth: usize,
) -> Result<(ConnectSettings, Options), ClientError> {
    if depth > 8 {
        return Err(ClientError::Usage(format!(
            "jump hosts nest more than 8 deep at {}",
            dest.host
        )));
    }
    let cli_user = if hop { None } else { cli.login.clone() };
    let (o, ctx) = options_for(dest, cli, cli_user.clone().or(dest.user.clone()), hop)?;
    let user = cli_user
        .or(dest.user.clone())
        .or(o.user.clone())
        .or_else(local_user)
        .ok_or_else(|| {
            ClientError::Usage("cannot tell which user to log in as; use -l USER".into())
        })?;
    let port = (if hop { None } else { cli.port })
        .or(dest.port)
        .or(o.port)
        .unwrap_or(22);
    if port == 0 {
        return Err(ClientError::Usage("bad port 0 (use 1-65535)".into()));
    }
    let host = o.host_name.clone().unwrap_or_else(|| dest.host.clone());

    let batch = o.batch_mode.unwrap_or(false);
    let prompter = Prompter::from_env(batch);
    let mut identity_files: Vec<IdentityFile> = cli
        .identity
        .iter()
        .cloned()
        .chain(o.identity_files.iter().map(|f| expand_tilde(f)))
        .map(|path| IdentityFile {
            path,
            explicit: true,
        })
        .collect();
    if identity_files.is_empty() {
        let ssh = home().join(".ssh");
        identity_files = ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|n| IdentityFile {
                path: ssh.join(n),
                explicit: false,
            })
            .collect();
    }
    let agent = match &o.identity_agent {
        None => AgentSource::Env,
        Some(IdentityAgent::Disabled) => AgentSource::None,
        Some(IdentityAgent::Env(var)) if var == "SSH_AUTH_SOCK" => AgentSource::Env,
        Some(IdentityAgent::Env(var)) => std::env::var_os(var)
            .map(|v| AgentSource::Socket(PathBuf::from(v)))
            .unwrap_or(AgentSource::None),
        Some(IdentityAgent::Path(p)) => AgentSource::Socket(expand_tilde(p)),
    };
    let auth = AuthSettings {
        user,
        identity_files,
        certificate_files: o
            .certificate_files
            .iter()
            .map(|f| expand_tilde(f))
            .collect(),
        identities_only: o.identities_only.unwrap_or(false),
        agent,
        pubkey: o.pubkey_authentication.unwrap_or(true),
        password: o.password_authentication.unwrap_or(true),
        kbd_interactive: o.kbd_interactive_authentication.unwrap_or(true),
        prompter: prompter.clone(),
    };
    let user_files = match &o.user_known_hosts_files {
        None => vec![
            home().join(".ssh/known_hosts"),
            home().join(".ssh/known_hosts2"),
        ],
        Some(files) => known_hosts_list(files),
    };
    let global_files = match &o.global_known_hosts_files {
        None => vec![
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2"),
        ],
        Some(files) => known_hosts_list(files),
    };
    let host_key = HostKeyPolicy {
        host: o.host_key_alias.clone().unwrap_or_else(|| host.clone()),
        port,
        user_files,
        global_files,
        strict: o
            .strict_host_key_checking
            .unwrap_or(StrictHostKeyChecking::Ask),
        hash_new_entries: o.hash_known_hosts.unwrap_or(false),
        prompter,
    };
    let (kex, macs, host_key_algorithms) = kex_macs_host_keys(&o)?;
    let mut connect = ConnectSettings {
        host: host.clone(),
        port,
        transport: Transport::Direct,
        compression: cli.compression || o.compression.unwrap_or(false),
        ciphers: ciphers(&o)?,
        kex: kex.clone(),
        macs: macs.clone(),
        host_key_algorithms: host_key_algorithms.clone(),
        keepalive: keepalive(&o),
        connect_timeout: o.connect_timeout,
        address_family: o.address_family.unwrap_or_default(),
        bind_address: o.bind_address.clone(),
        bind_interface: o.bind_interface.clone(),
        // ssh: 1 by default, and 0 still makes one attempt.
        connection_attempts: o.connection_attempts.unwrap_or(1).max(1),
        rekey: o.rekey_limit.unwrap_or_default(),
        agent_forward: agent_to_forward(&o),
        tcp_keepalive: o.tcp_keep_alive.unwrap_or(true),
        fwmark: super::route::socket_mark(cli),
        env: environment(&o),
        tos: o.ip_qos.as_ref().and_then(|q| q.bulk),
        host_key,
        auth,
        quiet: cli.quiet,
    };
    let jump = (if hop { None } else { cli.jump.clone() })
        .or(o.proxy_jump.clone())
        .filter(|j| j != "none");
    if let Some(jump) = jump {
        let mut hops = Vec::new();
        for spec in jump.split(',') {
            let (hop_user, hop_host, hop_port) = parse_hop(spec)?;
            let hop_dest = Destination {
                user: hop_user,
                host: hop_host,
                port: hop_port,
            };
            let (mut h, _) = resolve_connect(&hop_dest, cli, true, depth + 1)?;
            // A jump host behind its own jump hosts: flatten into one chain.
            if let Transport::Jump(inner) = std::mem::replace(&mut h.transport, Transport::Direct) {
                hops.extend(inner);
            }
            hops.push(h);
        }
        connect.transport = Transport::Jump(hops);
    } else if let Some(cmd) = o.proxy_command.as_deref().filter(|c| *c != "none") {
        let expanded =
            proxy_command::expand_tokens(cmd, &host, port, &connect.auth.user, &ctx.original_host)
                .map_err(ClientError::Usage)?;
        connect.transport = Transport::ProxyCommand(expanded);
    }
    Ok((connect, o))
}

/// SendEnv: the local variables matching its patterns (as ssh: by name, in the order of
/// the environment); then SetEnv's, which win over a sent variable of the same name.
fn environment(o: &Options) -> Vec<(String, String)> {
    use crate::config::pattern::match_pattern;
    // A variable that is not UTF-8 is not sent (ssh would; sshd's AcceptEnv sees names).
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(name, _)| o.send_env.iter().any(|p| match_pattern(name, p)))
        .collect();
    for (name, value) in o.set_env.iter().flatten() {
        env.retain(|(n, _)| n != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

/// The agent socket ForwardAgent names, if there is one.
fn agent_to_forward(o: &Options) -> Option<PathBuf> {
    let env = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    match o.forward_agent.as_ref()? {
        ForwardAgent::No => None,
        ForwardAgent::Yes => env("SSH_AUTH_SOCK"),
        ForwardAgent::Socket(s) => match s.strip_prefix('$') {
            Some(var) => env(var),
            None => Some(expand_tilde(s)),
        },
    }
}

/// `warren -G`: the resolved settings for the destination, like `ssh -G`.
pub fn print_config(cli: &Cli) -> Result<String, ClientError> {
    let dest = Destination::parse(cli.destination())?;
    let (mut o, ctx) = options_for(&dest, cli, cli.login.clone().or(dest.user.clone()), false)?;
    if o.user.is_none() || cli.login.is_some() || dest.user.is_some() {
        o.user = cli.login.clone().or(dest.user.clone()).or(o.user.take());
    }
    if let Some(p) = cli.port.or(dest.port) {
        o.port = Some(p);
    }
    for spec in &cli.local {
        o.local_forwards
            .push(forward::parse_local(spec).map_err(|e| ClientError::Usage(e.to_string()))?);
    }
    if let Some(j) = &cli.jump {
        o.proxy_jump = Some(j.clone());
    }
    Ok(dump(&o, &ctx, &Defaults::default()))
}

impl Settings {
    /// Applies OpenSSH's precedence: flags and `-o` first (first value wins), then the
    /// destination's own user and port, then defaults.
    pub fn resolve(cli: &Cli) -> Result<Settings, ClientError> {
        let dest = Destination::parse(cli.destination())?;
        let (connect, o) = resolve_connect(&dest, cli, false, 0)?;
        let tokens = Tokens {
            host: connect.host.clone(),
            original_host: dest.host.clone(),
            port: connect.port,
            remote_user: connect.auth.user.clone(),
            local_user: local_user().unwrap_or_default(),
            home: home(),
        };
        let jump = cli
            .jump
            .clone()
            .or(o.proxy_jump.clone())
            .filter(|j| j != "none")
            .unwrap_or_default();
        let control = super::control::ControlSettings::resolve(cli, &o, &tokens, &jump)?;

        let mut local_forwards = Vec::new();
        for spec in &cli.local {
            local_forwards
                .push(forward::parse_local(spec).map_err(|e| ClientError::Usage(e.to_string()))?);
        }
        local_forwards.extend(o.local_forwards.iter().cloned());
        let mut remote_forwards = Vec::new();
        for spec in &cli.remote {
            remote_forwards
                .push(forward::parse_remote(spec).map_err(|e| ClientError::Usage(e.to_string()))?);
        }
        remote_forwards.extend(o.remote_forwards.iter().cloned());
        let mut dynamic_forwards = Vec::new();
        for spec in &cli.dynamic {
            dynamic_forwards
                .push(forward::parse_dynamic(spec).map_err(|e| ClientError::Usage(e.to_string()))?);
        }
        dynamic_forwards.extend(o.dynamic_forwards.iter().cloned());
        if o.clear_all_forwardings == Some(true) {
            local_forwards.clear();
            remote_forwards.clear();
            dynamic_forwards.clear();
        }
        let stdio = cli.stdio.as_deref().map(parse_stdio).transpose()?;
        if stdio.is_some()
            && !(local_forwards.is_empty()
                && remote_forwards.is_empty()
                && dynamic_forwards.is_empty())
        {
            warn!("-W ignores -L, -R and -D (as ssh does)");
            local_forwards.clear();
            remote_forwards.clear();
            dynamic_forwards.clear();
        }
        if cli.force_tty {
            return Err(ClientError::Usage(
                "-t (pseudo-terminal) is not supported: warren runs remote commands without a TTY"
                    .into(),
            ));
        }
        let command = (!cli.command.is_empty()).then(|| cli.command.join(" "));
        let subsystem = o.session_type == Some(SessionType::Subsystem);
        let no_remote_command = o.session_type == Some(SessionType::None);
        if no_remote_command && command.is_some() && !cli.exec {
            warn!("-N (SessionType none): the remote command is not run");
        }
        if subsystem && command.is_none() {
            return Err(ClientError::Usage(
                "-s needs a subsystem name after the destination (e.g. warren -s host sftp)".into(),
            ));
        }
        if matches!(&o.forward_agent, Some(f) if *f != ForwardAgent::No)
            && connect.agent_forward.is_none()
        {
            warn!("ForwardAgent: no agent to forward (SSH_AUTH_SOCK is not set)");
        }
        if command.is_some() && stdio.is_some() {
            return Err(ClientError::Usage(
                "-W and a remote command cannot be combined".into(),
            ));
        }

        // As ssh: -w turns Tunnel on (point-to-point) unless the config chose a mode, and
        // Tunnel=yes in the config opens one even without -w (devices any:any).
        let mode = match (o.tunnel, cli.tun.is_some()) {
            (None | Some(TunnelMode::No), true) => TunnelMode::PointToPoint,
            (Some(m), _) => m,
            (None, false) => TunnelMode::No,
        };
        let tunnel = (mode != TunnelMode::No).then(|| super::tun::TunnelSettings {
            mode,
            device: o.tunnel_device.unwrap_or_default(),
        });
        if tunnel.is_some() && stdio.is_some() {
            warn!("-W does not carry a tunnel device (-w/Tunnel); going on without it");
        }

        Ok(Settings {
            connect,
            local_forwards,
            remote_forwards,
            dynamic_forwards,
            stdio,
            command,
            null_stdin: o.stdin_null.unwrap_or(false),
            exit_on_forward_failure: o.exit_on_forward_failure.unwrap_or(true),
            gateway_ports: o.gateway_ports.unwrap_or(false),
            address_family: o.address_family.unwrap_or_default(),
            subsystem,
            no_remote_command,
            stream_local_bind_unlink: o.stream_local_bind_unlink.unwrap_or(false),
            control,
            tunnel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = Destination::parse("admin@bastion.example.com").unwrap();
        assert_eq!(d.user.as_deref(), Some("admin"));
        assert_eq!(d.host, "bastion.example.com");
        let d = Destination::parse("ssh://ops@[::1]:2222").unwrap();
        assert_eq!(
            (d.user.as_deref(), d.host.as_str(), d.port),
            (Some("ops"), "::1", Some(2222))
        );
        let d = Destination::parse("ssh://host").unwrap();
        assert_eq!((d.user, d.port), (None, None));
        let d = Destination::parse("a@b@host").unwrap();
        assert_eq!(d.user.as_deref(), Some("a@b"));
        assert_eq!(
            parse_hop("ops@[::1]:2200").unwrap(),
            (Some("ops".into()), "::1".into(), Some(2200))
        );
        assert_eq!(
            parse_hop("bastion").unwrap(),
            (None, "bastion".into(), None)
        );
        assert_eq!(
            parse_hop("a@b:22").unwrap(),
            (Some("a".into()), "b".into(), Some(22))
        );
        for bad in ["", "@h", "h:0", "h:x", "[::1"] {
            assert!(parse_hop(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_stdio("db:5432").unwrap(),
            Endpoint::Tcp { port: 5432, .. }
        ));
        assert!(matches!(
            parse_stdio("[::1]:22").unwrap(),
            Endpoint::Tcp { port: 22, .. }
        ));
        for bad in ["db", "db:0", ":22", "[::1]22"] {
            assert!(parse_stdio(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "user@",
            "@host",
            "ssh://",
            "ssh://h:0",
            "ssh://h:x",
            "ssh://[::1",
            "-oProxyCommand=x",
            "a b",
        ] {
            assert!(
                Destination::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
