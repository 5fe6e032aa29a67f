//! `warrend`: the tunnel-only SSH server. Parses flags, sets up logging, runs.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use warren::server::{check, daemon, exit_status};

/// A tunnel-only SSH server and bastion.
///
/// Works with stock `ssh -N -L/-R/-D/-W/-J` and with warren. No shell, no files, no
/// system accounts; deny-by-default per-user rules, an audit record of every forwarded
/// connection, and rendezvous between users. SIGHUP reloads the configuration and
/// reopens the audit file; SIGTERM stops.
// No bare `about`: it would take Cargo's package description, which is the client's.
#[derive(Debug, Parser)]
#[command(name = "warrend", version, after_help = exit_status::HELP)]
struct Args {
    /// Configuration file (TOML; see examples/warrend.toml). Without it warrend listens on
    /// 127.0.0.1:2222 with generated host keys and no users.
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen here instead of [server] listen (repeatable; port 0 picks one and prints it).
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Check the configuration, host keys and the files it names, then exit (0 or 1);
    /// binds nothing and writes nothing.
    #[arg(short = 't', long = "check", conflicts_with = "print_config")]
    check: bool,
    /// Print the effective configuration (defaults filled in, paths resolved) as TOML
    /// and exit.
    #[arg(short = 'T', long = "print-config")]
    print_config: bool,
    /// Verbose diagnostics on stderr (-v info, -vv debug, -vvv protocol traces).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short = 'q')]
    quiet: bool,
    /// Print the manual page (roff, section 8) and exit: `warrend --man | man -l -`.
    #[arg(long = "man")]
    man: bool,
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
    if args.man {
        let mut page = Vec::new();
        let man = clap_mangen::Man::new(<Args as clap::CommandFactory>::command()).section("8");
        if let Err(e) = man.render(&mut page) {
            eprintln!("warrend: {e}");
            return ExitCode::from(exit_status::RUNTIME);
        }
        print!("{}", String::from_utf8_lossy(&page));
        return ExitCode::SUCCESS;
    }
    warren::logging::init_daemon(args.verbose, args.quiet);
    if args.check {
        return ExitCode::from(check::test(args.config.as_deref(), &args.listen));
    }
    if args.print_config {
        return ExitCode::from(check::print(args.config.as_deref(), &args.listen));
    }
    // This runtime only accepts connections, handles signals and feeds the audit log;
    // sessions run on session threads of their own (src/server/session_threads.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warrend: cannot start the async runtime: {e}");
            return ExitCode::from(exit_status::RUNTIME);
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
            eprintln!("{}warrend: {e:#}", warren::logging::stamp());
            ExitCode::from(exit_status::of(&e))
        }
    }
}
