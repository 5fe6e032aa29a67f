//! `warren`: the tunnel client. Parses flags, sets up logging, runs, maps the outcome to
//! an exit status.

use clap::Parser;
use std::process::ExitCode;
use warren::client::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    warren::logging::init(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(client::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren: {e}");
            e.exit_code()
        }
    }
}
