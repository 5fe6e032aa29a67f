//! `warren`: the tunnel client. Parses flags, sets up logging, runs, maps the outcome to
//! an exit status.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use warren::client::{self, Cli};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(status) = client::commands::command(&args) {
        return ExitCode::from(status);
    }
    let cli = Cli::parse();
    if let Some(status) = client::flags::answer_and_exit(&cli) {
        return ExitCode::from(status);
    }
    if !client::background::is_child() && client::early::fork_after_authentication(&cli) {
        return ExitCode::from(client::background::spawn_and_wait());
    }
    let sink = match client::early::log_sink(&cli) {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
    };
    let (verbose, quiet) = client::early::log_verbosity(&cli);
    warren::logging::init_to(verbose, quiet, sink);
    let runtime = match client::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(client::run(cli));
    // A read of stdin may still be parked in a blocking thread; it must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("warren: {e}");
            e.exit_code()
        }
    }
}
