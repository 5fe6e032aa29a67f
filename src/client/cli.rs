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

    /// Destination: [user@]host or ssh://[user@]host[:port].
    #[arg(value_name = "DESTINATION")]
    pub destination: String,

    /// A remote command (not supported yet: warren only holds tunnels for now).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}
