//! What warren decides before logging starts and before it forks (-f): the log sink and
//! level and whether to go to the background, from the flags and from the options the
//! destination resolves to. Kept apart from the flags' mapping, which the full resolution
//! of the settings builds on.

use super::cli::Cli;
use super::settings::{Destination, options_for};
use crate::config::options::Options;

/// The options for the destination, read before logging starts, for LogLevel and
/// ForkAfterAuthentication (errors are left for the real resolution to report).
pub fn early_options(cli: &Cli) -> Option<Options> {
    let dest = Destination::parse(cli.destination()).ok()?;
    let user = cli.login.clone().or(dest.user.clone());
    Some(options_for(&dest, cli, user, true).ok()?.0)
}

/// -f, or ForkAfterAuthentication in -o or the config.
pub fn fork_after_authentication(cli: &Cli) -> bool {
    cli.background
        || early_options(cli)
            .and_then(|o| o.fork_after_authentication)
            .unwrap_or(false)
}

/// -E (appended, created 0600) or -y, else stderr.
pub fn log_sink(cli: &Cli) -> Result<crate::logging::Sink, String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(path) = &cli.log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("-E: cannot open log file {}: {e}", path.display()))?;
        return Ok(crate::logging::Sink::File(file));
    }
    Ok(match cli.syslog {
        true => crate::logging::Sink::Syslog(
            early_options(cli)
                .and_then(|o| o.syslog_facility)
                .unwrap_or(crate::config::values::SyslogFacility::USER)
                .0,
        ),
        false => crate::logging::Sink::Stderr,
    })
}

/// -v/-q as given, else LogLevel from -o or the config mapped onto them: ssh's -v is
/// DEBUG1, so DEBUG1 is warren's -v; QUIET, FATAL and ERROR are -q.
pub fn log_verbosity(cli: &Cli) -> (u8, bool) {
    use crate::config::options::LogLevel;
    if cli.verbose > 0 || cli.quiet {
        return (cli.verbose, cli.quiet);
    }
    match early_options(cli).and_then(|o| o.log_level) {
        None | Some(LogLevel::Info) => (0, false),
        Some(LogLevel::Quiet | LogLevel::Fatal | LogLevel::Error) => (0, true),
        Some(LogLevel::Verbose | LogLevel::Debug1) => (1, false),
        Some(LogLevel::Debug2) => (2, false),
        Some(LogLevel::Debug3) => (3, false),
    }
}
