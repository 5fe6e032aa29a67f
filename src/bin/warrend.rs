//! `warrend`: the tunnel-only SSH server. Parses flags, sets up logging, runs.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use warren::server::daemon;

/// A tunnel-only SSH server and bastion: works with stock `ssh -N -L/-R/-D/-W/-J` and
/// with warren. No shell, no files, no system accounts; deny-by-default per-user rules,
/// an audit record of every forwarded connection, and rendezvous between users.
#[derive(Debug, Parser)]
#[command(name = "warrend", version, about)]
struct Args {
    /// Configuration file (TOML; see examples/warrend.toml). Without it warrend listens on
    /// 127.0.0.1:2222 with generated host keys and no users.
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen here instead of [server] listen (repeatable; port 0 picks one and prints it).
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Verbose diagnostics on stderr (-v info, -vv debug, -vvv protocol traces).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short = 'q')]
    quiet: bool,
    /// Without a subcommand warrend runs the server.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Administer a running warrend (sessions, kick, reload, limits ...).
    Ctl(warren::server::admin::cli::CtlArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Ctl(mut ctl)) = args.command {
        ctl.config = ctl.config.or(args.config);
        return warren::server::admin::cli::run(ctl);
    }
    warren::logging::init(args.verbose, args.quiet);
    // This runtime only accepts connections, handles signals and feeds the audit log;
    // sessions run on session threads of their own (src/server/session_threads.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warrend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = daemon::Options {
        config: args.config,
        listen: args.listen,
    };
    let outcome = runtime.block_on(daemon::run(opts));
    // The audit writer's thread may still wait for a session task that never ended; the
    // queue was flushed inside `run`, so nothing is lost by not waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warrend: {e:#}");
            ExitCode::FAILURE
        }
    }
}
