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

Exit status:
  0    stopped cleanly (SIGINT/SIGTERM)
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
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,

    /// User to log in as on the remote host.
    #[arg(short = 'l', value_name = "LOGIN")]
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
