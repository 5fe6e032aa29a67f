//! The `warren` command line, in OpenSSH's syntax so muscle memory and scripts carry over.

use clap::{ArgAction, Parser};
use std::path::PathBuf;

use super::cli_help::{AFTER_HELP, SHORT_AFTER_HELP};

/// OpenSSH-compatible SSH tunnel client.
#[derive(Debug, Parser)]
#[command(
    name = "warren",
    about,
    after_help = SHORT_AFTER_HELP,
    after_long_help = AFTER_HELP,
    disable_version_flag = true,
    disable_help_flag = true
)]
pub struct Cli {
    /// Print help (one line per flag; `warren man` is the whole manual).
    #[arg(short = 'h', long = "help", action = ArgAction::HelpShort)]
    pub help: Option<bool>,

    /// Local forward: [bind_address:]port:host:hostport (or unix-socket forms).
    ///
    /// Also [bind_address:]port:/remote/socket, /local/socket:host:hostport and
    /// /local/socket:/remote/socket. Binds loopback unless a bind address is given ('*' or
    /// empty means every interface); port 0 picks a free port. Repeatable.
    #[arg(short = 'L', value_name = "SPEC", action = ArgAction::Append)]
    pub local: Vec<String>,

    /// Remote forward: [bind_address:]port:host:hostport ([bind_address:]port: SOCKS).
    ///
    /// The server listens; connections come back to host:hostport from here. The unix-socket
    /// forms work too, and [bind_address:]port alone is a remote SOCKS proxy that reaches out
    /// from this side. Port 0 lets the server pick; warren prints "Allocated port N for remote
    /// forward to host:hostport". Repeatable.
    #[arg(short = 'R', value_name = "SPEC", action = ArgAction::Append)]
    pub remote: Vec<String>,

    /// Dynamic forward: [bind_address:]port, speaking SOCKS4/4a/5 and HTTP proxy.
    ///
    /// One port speaks SOCKS4, SOCKS4a, SOCKS5 and HTTP proxy (CONNECT and absolute-form GET),
    /// so phones and browsers can use it directly. Repeatable.
    #[arg(short = 'D', value_name = "SPEC", action = ArgAction::Append)]
    pub dynamic: Vec<String>,

    /// Stdio forward: stdin/stdout to host:port through the server.
    ///
    /// E.g. as `ProxyCommand warren -W %h:%p bastion`. Implies -N; logs stay on stderr.
    #[arg(short = 'W', value_name = "HOST:PORT")]
    pub stdio: Option<String>,

    /// Jump hosts: [user@]host[:port][,...] ("none" disables).
    ///
    /// Each hop is a real SSH session over the previous one, with its own authentication and
    /// host-key check.
    #[arg(short = 'J', value_name = "DESTINATION")]
    pub jump: Option<String>,

    /// Port to connect to on the remote host.
    #[arg(short = 'p', value_name = "PORT", overrides_with = "port")]
    pub port: Option<u16>,

    /// User to log in as on the remote host.
    #[arg(short = 'l', value_name = "LOGIN", overrides_with = "login")]
    pub login: Option<String>,

    /// Identity (private key) file; repeatable.
    ///
    /// The public key beside it (FILE.pub) lets warren ask for a passphrase only when the
    /// server accepts the key; FILE-cert.pub beside it is offered first.
    #[arg(short = 'i', value_name = "FILE", action = ArgAction::Append)]
    pub identity: Vec<PathBuf>,

    /// An ssh_config option, as Key=Value or "Key Value".
    ///
    /// E.g. -o StrictHostKeyChecking=accept-new. Options given here beat the config files.
    #[arg(short = 'o', value_name = "OPTION", action = ArgAction::Append)]
    pub options: Vec<String>,

    /// Verbose: -v shows progress and the ready line, -vv debug, -vvv protocol traces.
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,

    /// Quiet: only errors.
    #[arg(short = 'q')]
    pub quiet: bool,

    /// Do not run a remote command (holding tunnels is the default anyway).
    #[arg(short = 'N')]
    pub no_command: bool,

    /// Read stdin from /dev/null (for a remote command run in the background).
    #[arg(short = 'n')]
    pub null_stdin: bool,

    /// Disable pseudo-terminal allocation (accepted: warren never allocates one).
    #[arg(short = 'T')]
    pub no_tty: bool,

    /// Force pseudo-terminal allocation: refused (commands run without a TTY).
    #[arg(short = 't')]
    pub force_tty: bool,

    /// Compression (zlib@openssh.com), worth it only on slow links.
    #[arg(short = 'C')]
    pub compression: bool,

    /// Go to the background once every forward is established.
    ///
    /// So `warren -f ... && use-the-tunnel` is safe; errors before that are reported here,
    /// later diagnostics go to $XDG_RUNTIME_DIR/warren/PID.log (or ~/.ssh/warren/PID.log).
    #[arg(short = 'f')]
    pub background: bool,

    /// Write the process id here once the tunnel is up (removed on exit).
    #[arg(long = "pidfile", value_name = "FILE")]
    pub pidfile: Option<std::path::PathBuf>,

    /// Do not reconnect when the connection is lost (reconnecting is the default).
    #[arg(long = "no-reconnect")]
    pub no_reconnect: bool,

    /// Give up after this many failed reconnect attempts in a row (default: never).
    #[arg(long = "max-reconnects", value_name = "N")]
    pub max_reconnects: Option<u32>,

    /// Run COMMAND locally with the tunnel up; exit with its status when it ends.
    ///
    /// E.g. `warren -L 0:db:5432 bastion --exec -- psql ...`. Local ports are passed as
    /// WARREN_LOCAL_PORT_1.., WARREN_DYNAMIC_PORT_1.. and WARREN_REMOTE_PORT_1.. (in flag
    /// order), plus WARREN_LOCAL_PORT for the first -L.
    #[arg(long = "exec")]
    pub exec: bool,

    /// Credentials the -D proxy port demands, as USER:PASSWORD.
    ///
    /// SOCKS5 username/password and HTTP Proxy-Authorization Basic. Prefer the environment
    /// variable: a command line is visible to every user of the machine.
    #[arg(
        long = "proxy-auth",
        value_name = "USER:PASS",
        env = "WARREN_PROXY_AUTH",
        hide_env_values = true
    )]
    pub proxy_auth: Option<String>,

    /// Print the bound ports as WARREN_*_PORT_N=PORT lines on stdout once ready.
    #[arg(long = "print-ports")]
    pub print_ports: bool,

    /// Open each -L forward's next channel in advance (a round trip less per connection).
    ///
    /// A new connection moves its first bytes without waiting for the server's channel-open
    /// round trip (half the setup time of a short request across a real link). Opened when
    /// the forward goes idle; through warrend also while connections are in use. The target
    /// sees that connection before any client does; an unused one is closed after 3 s. Not
    /// for targets that punish idle or abandoned connections.
    #[arg(long = "preconnect")]
    pub preconnect: bool,

    /// Route TCP to CIDR through the tunnel (Linux, root; no UDP but DNS, no ICMP).
    ///
    /// sshuttle mode: nftables redirects this machine's TCP connections to CIDR (IPv4 or
    /// IPv6) into the tunnel, each opened from the server to where it was going. Needs
    /// CAP_NET_ADMIN and the nft command; nothing is installed on the server. Only TCP (and
    /// DNS with --dns) is carried: other UDP and ICMP (ping) are not. Repeatable.
    #[arg(long = "route", value_name = "CIDR", action = ArgAction::Append)]
    pub route: Vec<String>,

    /// Never route this network (with --route); repeatable.
    #[arg(long = "exclude", value_name = "CIDR", action = ArgAction::Append)]
    pub exclude: Vec<String>,

    /// Answer DNS through the tunnel: queries to the local resolvers go to SERVER.
    ///
    /// UDP and TCP queries to the nameservers of /etc/resolv.conf are forwarded as
    /// DNS-over-TCP to SERVER port 53 as the server reaches it (default: the first nameserver
    /// of the server's /etc/resolv.conf), with a cache honouring TTLs.
    #[arg(long = "dns", value_name = "SERVER", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub dns: Option<String>,

    /// With --dns: only names under DOMAIN go through the tunnel; repeatable.
    #[arg(long = "dns-domain", value_name = "DOMAIN", action = ArgAction::Append)]
    pub dns_domain: Vec<String>,

    /// ControlMaster yes: serve the ControlPath for -O commands (-MM as -M).
    #[arg(short = 'M', action = ArgAction::Count)]
    pub control_master: u8,

    /// ControlPath: the socket -O commands reach this tunnel on (ssh's %-tokens).
    #[arg(short = 'S', value_name = "CTL_PATH")]
    pub control_path: Option<String>,

    /// Control a running warren (-O forward -L SPEC adds a forward, cancel removes it).
    ///
    /// The warren at -S/ControlPath, else the one running for this destination.
    /// `-O forward|cancel -L|-R|-D SPEC` adds or removes a forward without reconnecting.
    #[arg(
        short = 'O',
        value_name = "CTL_CMD",
        value_parser = ["check", "forward", "cancel", "exit", "stop"],
        hide_possible_values = true
    )]
    pub control_command: Option<String>,

    /// Print the settings resolved from flags and the config files (as ssh -G) and exit.
    #[arg(short = 'G')]
    pub print_config: bool,

    /// Configuration file instead of ~/.ssh/config ("none" for no file at all).
    #[arg(short = 'F', value_name = "FILE")]
    pub config_file: Option<String>,

    /// GatewayPorts: -L/-D without a bind address listen on every interface.
    #[arg(short = 'g')]
    pub gateway_ports: bool,

    /// IPv4 only (AddressFamily inet), for the server and for -L/-D listeners.
    #[arg(short = '4', overrides_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 only (AddressFamily inet6), for the server and for -L/-D listeners.
    #[arg(short = '6', overrides_with = "ipv4")]
    pub ipv6: bool,

    /// Source address of the connection to the server (BindAddress).
    #[arg(short = 'b', value_name = "BIND_ADDRESS")]
    pub bind_address: Option<String>,

    /// Take the source address from this interface (BindInterface).
    #[arg(short = 'B', value_name = "INTERFACE")]
    pub bind_interface: Option<String>,

    /// Ciphers, comma-separated, with ssh's +/-/^ forms (-Q cipher lists them).
    #[arg(short = 'c', value_name = "CIPHER_SPEC")]
    pub cipher_spec: Option<String>,

    /// MACs, comma-separated, with ssh's +/-/^ forms (-Q mac lists them).
    #[arg(short = 'm', value_name = "MAC_SPEC")]
    pub mac_spec: Option<String>,

    /// Append diagnostics to this file instead of stderr.
    #[arg(short = 'E', value_name = "LOG_FILE")]
    pub log_file: Option<PathBuf>,

    /// Send diagnostics to syslog (SyslogFacility, USER by default) instead of stderr.
    #[arg(short = 'y')]
    pub syslog: bool,

    /// Escape character (EscapeChar): accepted, unused (no interactive session).
    #[arg(short = 'e', value_name = "ESCAPE_CHAR")]
    pub escape_char: Option<String>,

    /// Disable agent forwarding (the default).
    #[arg(short = 'a', overrides_with = "forward_agent")]
    pub no_forward_agent: bool,

    /// Agent forwarding (ForwardAgent yes) for a remote command.
    ///
    /// The server may use the local agent while the command runs (tunnels without a command
    /// open no session, as with ssh -N).
    #[arg(short = 'A', overrides_with = "no_forward_agent")]
    pub forward_agent: bool,

    /// Disable X11 forwarding (the only mode warren has).
    #[arg(short = 'x')]
    pub no_x11: bool,

    /// X11 forwarding: not supported, warns and goes on.
    #[arg(short = 'X')]
    pub x11: bool,

    /// Trusted X11 forwarding: not supported, warns and goes on.
    #[arg(short = 'Y')]
    pub x11_trusted: bool,

    /// Disable GSSAPI credential forwarding (warren has no GSSAPI).
    #[arg(short = 'k')]
    pub no_gssapi_delegation: bool,

    /// GSSAPI authentication and forwarding: not supported, warns.
    #[arg(short = 'K')]
    pub gssapi: bool,

    /// PKCS#11 provider: not supported, warns.
    #[arg(short = 'I', value_name = "PKCS11")]
    pub pkcs11: Option<String>,

    /// Tag for `Match tagged` (Tag).
    #[arg(short = 'P', value_name = "TAG")]
    pub tag: Option<String>,

    /// Run COMMAND as a subsystem (e.g. sftp) instead of a shell command.
    #[arg(short = 's')]
    pub subsystem: bool,

    /// Tunnel device forwarding: a local tun joined to one on the server.
    ///
    /// tun@openssh.com, as ssh -w: a tap instead with Tunnel=ethernet; needs root here and
    /// PermitTunnel on the server. The local device survives reconnects.
    #[arg(short = 'w', value_name = "LOCAL_TUN[:REMOTE_TUN]")]
    pub tun: Option<String>,

    /// List supported algorithms: cipher, mac, kex, key, ... (-Q help: the queries).
    ///
    /// Queries: cipher, cipher-auth, mac, kex, key, key-cert, key-plain, key-sig, sig,
    /// protocol-version, compression or help; the lists are those of warren's own engine.
    #[arg(short = 'Q', value_name = "QUERY")]
    pub query: Option<String>,

    /// Print the version to stderr and exit, as ssh -V does.
    #[arg(short = 'V', long = "version")]
    pub version: bool,

    /// Destination: [user@]host or ssh://[user@]host[:port].
    #[arg(value_name = "DESTINATION", required_unless_present_any = ["query", "version"])]
    pub destination: Option<String>,

    /// A remote command, run without a TTY; warren exits with its status.
    ///
    /// Its output streams here, as with `ssh host cmd`. Forwards stay up while it runs.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

impl Cli {
    /// The destination; clap requires it unless -Q or -V ended the run first.
    pub fn destination(&self) -> &str {
        self.destination.as_deref().unwrap_or_default()
    }
}
