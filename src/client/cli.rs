//! The `warren` command line, in OpenSSH's syntax so muscle memory and scripts carry over.

use clap::{ArgAction, Parser};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Where warren differs from OpenSSH ssh:
  * Holding the tunnels is the default: -N is accepted but not needed.
  * ExitOnForwardFailure defaults to yes: if a forward cannot be set up, warren exits
    instead of running without it (use -o ExitOnForwardFailure=no for ssh's behaviour).
  * -L listeners are bound before connecting, so a port already in use is reported at
    once, before any password or passphrase prompt.
  * A host known only under another key type is refused, never accepted as new.
  * With -v, warren prints 'ready: ...' once every forward is up (a signal for scripts).
  * Tunnels heal themselves: keepalive is on (ServerAliveInterval 15, ServerAliveCountMax 3)
    and a lost connection is re-established with backoff while -L/-D ports stay open;
    --no-reconnect turns that off. SIGHUP reconnects at once.
  * -L/-D port 0 picks a free port; --exec runs a local command with the tunnel up.
  * One -D port speaks SOCKS4/4a/5 and HTTP proxy (CONNECT and plain GET).
  * `warren status [--json|--check NAME]`, `warren stop [PID|NAME|--all]`, `warren
    completions SHELL`, `warren man` (first argument only: a host named status is
    ssh://status). -O speaks warren's own protocol (JSON lines), not ssh's mux: ssh -O
    cannot drive a warren. With ControlMaster auto/no and a warren at ControlPath, a new
    warren hands it its forwards and exits. ControlPersist is moot: the master stays up.
  * A forwarded connection whose local reader keeps up slows the sender down, as with ssh;
    one that stops reading (takes no packet within 5 ms) has what arrives for it parked
    (4 MiB in memory, then a temporary file, up to 1 GiB; beyond that it is closed), so
    the other connections of the session never wait for it.
  * Data from the server is acknowledged as soon as warren has nothing to send back, so
    sshd's Nagle pause (40 ms per new -R connection with ssh) does not apply.
  * --preconnect (opt-in) saves -L connections the channel-open round trip by opening
    the next channel in advance (after a pause through sshd; always through warrend).

Exit status:
  0    stopped cleanly (SIGINT/SIGTERM: listeners close at once, open connections get up to
       5 s to finish, -R forwards are cancelled), or the remote/--exec command's own status
  2    usage error: bad flag, malformed forward spec, bad -o option
  3    a forward could not be set up (local port in use, cannot bind)
  4    host key verification failed (changed, revoked, unknown with strict checking)
  255  connection or authentication failure, or the connection was lost (as ssh)";

/// OpenSSH-compatible SSH tunnel client.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Local forward: [bind_address:]port:host:hostport, [bind_address:]port:/remote/socket,
    /// /local/socket:host:hostport or /local/socket:/remote/socket. Binds loopback unless a
    /// bind address is given ('*' or empty means every interface). Repeatable.
    #[arg(short = 'L', value_name = "SPEC", action = ArgAction::Append)]
    pub local: Vec<String>,

    /// Remote forward: [bind_address:]port:host:hostport (the server listens, connections come
    /// back to host:hostport from here), the unix-socket forms, or [bind_address:]port alone for a
    /// remote SOCKS proxy that reaches out from this side. Port 0 lets the server pick; warren
    /// prints "Allocated port N for remote forward to host:hostport". Repeatable.
    #[arg(short = 'R', value_name = "SPEC", action = ArgAction::Append)]
    pub remote: Vec<String>,

    /// Dynamic forward: [bind_address:]port. One port speaks SOCKS4, SOCKS4a, SOCKS5 and HTTP
    /// proxy (CONNECT and absolute-form GET), so phones and browsers can use it directly.
    /// Repeatable.
    #[arg(short = 'D', value_name = "SPEC", action = ArgAction::Append)]
    pub dynamic: Vec<String>,

    /// Stdio forward: connect stdin/stdout to host:port through the server, e.g. as
    /// `ProxyCommand warren -W %h:%p bastion`. Implies -N; logs stay on stderr.
    #[arg(short = 'W', value_name = "HOST:PORT")]
    pub stdio: Option<String>,

    /// Jump hosts: [user@]host[:port][,...], each a real SSH session over the previous hop,
    /// each with its own authentication and host-key check. "none" disables.
    #[arg(short = 'J', value_name = "DESTINATION")]
    pub jump: Option<String>,

    /// Port to connect to on the remote host.
    #[arg(short = 'p', value_name = "PORT", overrides_with = "port")]
    pub port: Option<u16>,

    /// User to log in as on the remote host.
    #[arg(short = 'l', value_name = "LOGIN", overrides_with = "login")]
    pub login: Option<String>,

    /// Identity (private key) file; repeatable. The public key beside it (FILE.pub) lets
    /// warren ask for a passphrase only when the server accepts the key.
    #[arg(short = 'i', value_name = "FILE", action = ArgAction::Append)]
    pub identity: Vec<PathBuf>,

    /// An ssh_config option, as Key=Value or "Key Value" (e.g. -o StrictHostKeyChecking=accept-new).
    #[arg(short = 'o', value_name = "OPTION", action = ArgAction::Append)]
    pub options: Vec<String>,

    /// Verbose: -v shows progress and the ready line, -vv debug, -vvv protocol traces.
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,

    /// Quiet: only errors.
    #[arg(short = 'q')]
    pub quiet: bool,

    /// Do not run a remote command (accepted for compatibility: holding tunnels is the default).
    #[arg(short = 'N')]
    pub no_command: bool,

    /// Read stdin from /dev/null (for a remote command run in the background).
    #[arg(short = 'n')]
    pub null_stdin: bool,

    /// Disable pseudo-terminal allocation (accepted: warren never allocates one).
    #[arg(short = 'T')]
    pub no_tty: bool,

    /// Force pseudo-terminal allocation: not supported (warren runs commands without a TTY).
    #[arg(short = 't')]
    pub force_tty: bool,

    /// Compression (zlib@openssh.com), worth it only on slow links.
    #[arg(short = 'C')]
    pub compression: bool,

    /// Go to the background once authenticated and every forward is established (so
    /// `warren -f ... && use-the-tunnel` is safe); errors before that are reported here,
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

    /// Run COMMAND locally once every forward is up, tear everything down when it exits,
    /// and exit with its status (e.g. `warren -L 0:db:5432 bastion --exec -- psql ...`).
    /// Local ports are passed as WARREN_LOCAL_PORT_1.., WARREN_DYNAMIC_PORT_1.. and
    /// WARREN_REMOTE_PORT_1.. (in flag order), plus WARREN_LOCAL_PORT for the first -L.
    #[arg(long = "exec")]
    pub exec: bool,

    /// Credentials the -D proxy port demands, as USER:PASSWORD (SOCKS5 username/password
    /// and HTTP Proxy-Authorization Basic). Prefer the environment variable: a command
    /// line is visible to every user of the machine.
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

    /// Open each -L forward's next channel in advance, so a new connection moves its first
    /// bytes without waiting for the server's channel-open round trip (half the setup time
    /// of a short request across a real link). Opened when the forward goes idle; through
    /// warrend also while connections are in use. The target sees that connection before
    /// any client does; an unused one is closed after 3 s. Not for targets that punish
    /// idle or abandoned connections.
    #[arg(long = "preconnect")]
    pub preconnect: bool,

    /// ControlMaster yes (-MM: ask, taken as yes): serve the ControlPath for -O commands.
    #[arg(short = 'M', action = ArgAction::Count)]
    pub control_master: u8,

    /// ControlPath: the socket -O commands reach this tunnel on (ssh's %-tokens; "none").
    #[arg(short = 'S', value_name = "CTL_PATH")]
    pub control_path: Option<String>,

    /// Control the warren at -S/ControlPath (else the one running for this destination):
    /// `-O forward|cancel -L|-R|-D SPEC` adds/removes a forward without reconnecting.
    #[arg(
        short = 'O',
        value_name = "CTL_CMD",
        value_parser = ["check", "forward", "cancel", "exit", "stop"]
    )]
    pub control_command: Option<String>,

    /// Print the settings resolved from flags and ~/.ssh/config, like ssh -G, and exit.
    #[arg(short = 'G')]
    pub print_config: bool,

    /// Configuration file instead of ~/.ssh/config ("none" for no file at all).
    #[arg(short = 'F', value_name = "FILE")]
    pub config_file: Option<String>,

    /// Destination: [user@]host or ssh://[user@]host[:port].
    #[arg(value_name = "DESTINATION")]
    pub destination: String,

    /// A remote command, run without a TTY; its output streams here and warren exits with its
    /// exit status, as `ssh host cmd` does. Forwards stay up while it runs.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}
