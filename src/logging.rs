//! Diagnostic logging to stderr (stdout stays free for data, as `-W` will need).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// `-q` shows only errors, the default warnings, `-v` progress (and the ready line),
/// `-vv` debug, `-vvv` russh's protocol traces too. `RUST_LOG` overrides all of it.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warren=info,warn",
        (false, 2) => "warren=debug,info",
        (false, _) => "debug,russh=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .try_init();
}
