//! `warrend -t` and `-T`: the configuration checked or printed as a start would see it,
//! without binding a socket or writing a file (no host key generated, no audit file
//! created), so they are safe to run beside a live server, e.g. before a reload.

use super::config::ServerConfig;
use super::exit_status;
use super::preflight;
use std::net::SocketAddr;
use std::path::Path;

fn load(path: Option<&Path>, listen: &[SocketAddr]) -> Result<ServerConfig, u8> {
    let mut config = match path {
        Some(p) => ServerConfig::load(p).map_err(|e| {
            eprintln!("warrend: {e}");
            exit_status::CONFIG
        })?,
        None => ServerConfig::default_embedded(),
    };
    if !listen.is_empty() {
        config.server.listen = listen.to_vec();
    }
    Ok(config)
}

/// `-t`: every error and warning on stderr; exit status 0 or 1.
pub fn test(path: Option<&Path>, listen: &[SocketAddr]) -> u8 {
    let config = match load(path, listen) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let findings = preflight::inspect(&config);
    for w in &findings.warnings {
        eprintln!("warrend: warning: {w}");
    }
    for e in &findings.errors {
        eprintln!("warrend: error: {e}");
    }
    let name = path.map_or("<embedded default>".into(), |p| p.display().to_string());
    if findings.errors.is_empty() {
        eprintln!(
            "warrend: {name}: configuration OK ({} warning(s))",
            findings.warnings.len()
        );
        exit_status::OK
    } else {
        eprintln!("warrend: {name}: {} error(s)", findings.errors.len());
        exit_status::CONFIG
    }
}

/// `-T`: the effective configuration as TOML on stdout.
pub fn print(path: Option<&Path>, listen: &[SocketAddr]) -> u8 {
    let config = match load(path, listen) {
        Ok(c) => c,
        Err(status) => return status,
    };
    match config.effective_toml() {
        Ok(text) => {
            if let Some(p) = path {
                println!("# effective configuration of {}", p.display());
            } else {
                println!("# effective configuration (embedded default, no file)");
            }
            print!("{text}");
            exit_status::OK
        }
        Err(e) => {
            eprintln!("warrend: cannot write the configuration as TOML: {e}");
            exit_status::RUNTIME
        }
    }
}
