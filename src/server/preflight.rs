//! What a start would trip over, found without binding or writing anything. `warrend -t`
//! reports it, and every start logs the warnings: a missing authorized_keys file is not
//! an error (it is re-read at each login and may appear later), but without a word at
//! start the first sign of it is a user who cannot log in.

use super::config::{AuditDestination, ConfigError, ServerConfig};
use super::host_keys::{self, Inspected};
use std::io::ErrorKind;
use std::path::Path;

/// Problems found, by how serious they are.
#[derive(Debug, Default)]
pub struct Findings {
    /// A start would fail (or `-t` must exit 1).
    pub errors: Vec<String>,
    /// A start would work, but not as the operator probably meant.
    pub warnings: Vec<String>,
}

impl Findings {
    /// Logs the warnings (errors stop the start by their own path).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
    }
}

/// The files `config` names that a start reads or creates: host keys (missing ones are
/// generated), authorized_keys and user CA files, the audit log's directory. Keys and CA
/// files are parsed as at login, so a bad line is reported (logged) here too.
pub fn inspect(config: &ServerConfig) -> Findings {
    let mut f = Findings::default();
    host_key_findings(config, &mut f);
    if config.users.is_empty() {
        f.warnings
            .push("no users are configured: nobody can log in (see examples/warrend.toml)".into());
    }
    for (name, user) in &config.users {
        for path in user.authorized_keys.paths() {
            let path = config.resolve(path);
            if let Some(problem) = unreadable(&path) {
                f.warnings.push(format!(
                    "users.{name}.authorized_keys: {}: {problem}; {name} cannot log in with keys \
                     from it until it can be read (it is re-read at each login)",
                    path.display()
                ));
            }
        }
        if user.keys.is_empty()
            && user.authorized_keys.paths().is_empty()
            && config.user_ca.is_none()
        {
            f.warnings.push(format!(
                "users.{name} has no keys and there is no [user_ca]: nobody can log in as {name}"
            ));
        }
        // Logs refused lines (file:line and why) as a login would.
        let _ = config.load_user_keys(name);
    }
    if let Some(file) = config.user_ca.as_ref().and_then(|ca| ca.keys_file.as_ref()) {
        let path = config.resolve(file);
        match unreadable(&path) {
            Some(problem) => f.warnings.push(format!(
                "user_ca.keys_file: {}: {problem}; certificates are refused until it can be read",
                path.display()
            )),
            None => {
                if let Err(e @ ConfigError::Invalid { .. }) = config.load_user_ca_keys() {
                    f.errors.push(e.to_string());
                }
            }
        }
    }
    if let AuditDestination::File(path) = config.audit_destination() {
        let dir = path.parent().unwrap_or(Path::new("."));
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            f.errors.push(format!(
                "server.audit_log: directory {} does not exist, so {} cannot be opened",
                dir.display(),
                path.display()
            ));
        }
    }
    f
}

/// Missing host keys are generated at start: worth a warning, since clients will see a
/// host key they do not know. Existing ones get the checks a start makes.
fn host_key_findings(config: &ServerConfig, f: &mut Findings) {
    match host_keys::inspect(&config.host_key_paths()) {
        Ok(keys) => {
            for key in keys {
                if let Inspected::WouldGenerate(path, algorithm) = key {
                    f.warnings.push(format!(
                        "host key {} does not exist: a start generates a new {algorithm} key \
                         there (clients will be asked to trust it)",
                        path.display()
                    ));
                }
            }
        }
        Err(e) => f.errors.push(format!("{e:#}")),
    }
}

/// Why `path` cannot be read as a file, if it cannot.
fn unreadable(path: &Path) -> Option<String> {
    match std::fs::File::open(path) {
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => Some("does not exist".into()),
        Err(e) => Some(format!("cannot be read: {e}")),
    }
}
