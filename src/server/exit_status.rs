//! warrend's exit statuses. They differ by what the operator must do: fix the
//! configuration (1), fix the command line (2, clap's own), free or change the port (3),
//! or read the log (4). A supervisor can stop restarting on 1 and 2
//! (`RestartPreventExitStatus=` in the unit) while retrying 3 and 4.

use super::config::ConfigError;
use std::fmt;

/// Ran and stopped cleanly, or `-t` found nothing wrong.
pub const OK: u8 = 0;
/// The configuration, or a file it names (host keys, audit log), is unusable.
pub const CONFIG: u8 = 1;
/// Bad flags (clap exits with 2 by itself).
pub const USAGE: u8 = 2;
/// A listen address could not be bound (in use, not on this host, no permission).
pub const BIND: u8 = 3;
/// Anything else that stopped warrend after its configuration was accepted.
pub const RUNTIME: u8 = 4;

/// The table `warrend --help` and the README show.
pub const HELP: &str = "Exit status:
  0  stopped cleanly (SIGTERM/SIGINT), or -t found no error
  1  configuration error: the file, or a host key or audit log it names
  2  usage error (bad flags)
  3  cannot listen on an address (in use, not local, no permission)
  4  runtime failure after the configuration was accepted";

/// Context attached to an error on its way up, saying which status it deserves.
#[derive(Debug)]
pub struct Stage {
    status: u8,
    what: String,
}

impl Stage {
    pub fn config(what: impl Into<String>) -> Stage {
        Stage {
            status: CONFIG,
            what: what.into(),
        }
    }

    pub fn bind(what: impl Into<String>) -> Stage {
        Stage {
            status: BIND,
            what: what.into(),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

/// The status for an error `daemon::run` returned: its outermost [`Stage`], else
/// [`CONFIG`] for a [`ConfigError`], else [`RUNTIME`].
pub fn of(e: &anyhow::Error) -> u8 {
    if let Some(stage) = e.downcast_ref::<Stage>() {
        return stage.status;
    }
    if e.downcast_ref::<ConfigError>().is_some() {
        return CONFIG;
    }
    RUNTIME
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_stage_survives_further_context_and_plain_errors_are_runtime() {
        let bind: anyhow::Result<()> = Err(std::io::Error::other("in use"))
            .context(Stage::bind("cannot listen on 127.0.0.1:22"))
            .context("starting");
        let e = bind.unwrap_err();
        assert_eq!(of(&e), BIND);
        assert_eq!(
            format!("{e:#}"),
            "starting: cannot listen on 127.0.0.1:22: in use"
        );
        let config = anyhow::Error::new(ConfigError::UnknownUser("x".into())).context("loading");
        assert_eq!(of(&config), CONFIG);
        assert_eq!(of(&anyhow::anyhow!("boom")), RUNTIME);
    }
}
