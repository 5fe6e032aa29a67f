//! `warrend ctl`: asks a running warrend over its control socket and prints the answer,
//! as a table or (`--json`) as the protocol's JSON.

use super::protocol::{MAX_RESPONSE, Reply, Request, Response};
use super::settings;
use super::table;
use clap::{Args, Subcommand};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Administer a running warrend over its control socket (root or warrend's user only).
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// warrend's configuration file, to find the control socket ([admin] socket, the
    /// state directory).
    #[arg(short = 'f', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The control socket itself (overrides -f).
    #[arg(long = "socket", value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the answer as JSON (stable field names) instead of a table.
    #[arg(long = "json", global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Authenticated sessions: user, key, source, since, channels, bytes.
    Sessions,
    /// -R listeners on real sockets, with their owners.
    Listeners,
    /// Published rendezvous names, with their owners.
    Names,
    /// Disconnect a session (by the id `sessions` shows) or every session of a user;
    /// the audit's session_end says it was kicked.
    Kick {
        /// Session id.
        #[arg(value_name = "SESSION_ID", required_unless_present = "user")]
        session: Option<u64>,
        /// Every session of this user.
        #[arg(long = "user", value_name = "NAME", conflicts_with = "session")]
        user: Option<String>,
    },
    /// Re-read the configuration file (as SIGHUP); prints ok or why not.
    Reload,
    /// Budgets in use against their limits.
    Limits,
    /// Cluster mode: the live members, this node's links to them and etcd's state
    /// (`names` then shows which node serves each name).
    Cluster,
}

/// Time warrend has to answer (a reload reads key files).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `warrend ctl`; exit 0 on success, 1 on any error (printed on stderr).
pub fn run(args: CtlArgs) -> ExitCode {
    match ask(&args) {
        Ok(reply) => {
            if args.json {
                match serde_json::to_string_pretty(&reply) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("warrend ctl: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", table::render(&reply));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warrend ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn request(command: &CtlCommand) -> Request {
    match command {
        CtlCommand::Sessions => Request::Sessions,
        CtlCommand::Listeners => Request::Listeners,
        CtlCommand::Names => Request::Names,
        CtlCommand::Kick { session, user } => Request::Kick {
            session: *session,
            user: user.clone(),
        },
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Limits => Request::Limits,
        CtlCommand::Cluster => Request::Cluster,
    }
}

fn ask(args: &CtlArgs) -> Result<Reply, String> {
    let mut stream = connect(args)?;
    let mut line = serde_json::to_vec(&request(&args.command)).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
    // A refusal (credentials) may already be waiting, and the socket closed: read it
    // even if the write fails.
    let wrote = stream.write_all(&line);
    let mut answer = Vec::new();
    BufReader::new((&stream).take(MAX_RESPONSE as u64))
        .read_until(b'\n', &mut answer)
        .map_err(|e| format!("reading warrend's answer: {e}"))?;
    if answer.is_empty() {
        return Err(match wrote {
            Err(e) => format!("sending the request: {e}"),
            Ok(()) => "warrend closed the control connection without answering".into(),
        });
    }
    let response: Response = serde_json::from_slice(&answer)
        .map_err(|e| format!("warrend's answer is not understood: {e}"))?;
    match response {
        Response {
            ok: true,
            result: Some(reply),
            ..
        } => Ok(reply),
        Response { error, .. } => Err(error.unwrap_or_else(|| "warrend said no".into())),
    }
}

/// Connects to `--socket`, or to the first socket of the config's candidates that
/// answers.
fn connect(args: &CtlArgs) -> Result<UnixStream, String> {
    let candidates = match &args.socket {
        Some(p) => vec![p.clone()],
        None => {
            let hints = settings::SocketHints::read(args.config.as_deref())?;
            settings::client_candidates(&hints, |k| std::env::var(k).ok())?
        }
    };
    let mut first_error = None;
    for path in &candidates {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                let exists = std::fs::symlink_metadata(path).is_ok();
                // The most telling failure: one at a socket that exists beats "not found".
                if first_error.is_none() || (exists && e.kind() != ErrorKind::NotFound) {
                    first_error = Some((path.clone(), e));
                }
            }
        }
    }
    let (path, e) = first_error.ok_or("no control socket path")?;
    Err(explain(&path, &e, &candidates))
}

fn explain(path: &Path, e: &std::io::Error, tried: &[PathBuf]) -> String {
    match e.kind() {
        ErrorKind::PermissionDenied => format!(
            "permission denied on the control socket {} (warrend ctl must run as root or as \
             warrend's own user)",
            path.display()
        ),
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
            let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
            format!(
                "cannot reach warrend's control socket (tried {}): is warrend running? \
                 (-f CONFIG or --socket PATH point at another)",
                tried.join(", ")
            )
        }
        _ => format!("cannot connect to {}: {e}", path.display()),
    }
}
