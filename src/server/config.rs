//! Loads and validates `warrend.toml` into typed settings and compiled per-user rules.
//!
//! Every problem is reported at once, each naming the file and the field
//! (`warrend.toml: users.alice.connect[1]: bad port range '90-80'`), because
//! a server that refuses to start should say everything that is wrong in
//! one go. Loading reads only the config file itself; key material
//! (`authorized_keys` files, the CA `keys_file`) is read on demand by
//! [`ServerConfig::load_user_keys`] and [`ServerConfig::load_user_ca_keys`]
//! so the server can re-read it at each login or on SIGHUP, as sshd does.
//! See `examples/warrend.toml` for every option and its default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warren_ssh::ssh_key::{Fingerprint, HashAlg, PublicKey};

use super::address::{DEFAULT_DENY_NETWORKS, parse_net};
use super::authorized_keys::{KeyEntry, parse_authorized_keys, parse_key_line};
use super::host_addresses::HostAddresses;
pub use super::limits::{ConfigDuration, Limits, parse_duration};
use super::policy::{DenyNet, GatewayPorts, Policy, UserPolicy};
use super::rules::{parse_connect, parse_listen, parse_name_rule};

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `[server]`: sockets, files, audit.
    #[serde(default)]
    pub server: ServerSection,
    /// `[limits]`: resource and brute-force limits.
    #[serde(default)]
    pub limits: Limits,
    /// `[forwarding]`: defaults for every user's rules.
    #[serde(default)]
    pub forwarding: Forwarding,
    /// `[user_ca]`: CA trusted to sign user certificates.
    #[serde(default)]
    pub user_ca: Option<UserCa>,
    /// `[users.NAME]`.
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// `[admin]`: the control socket of `warrend ctl`.
    #[serde(default)]
    pub admin: super::admin::sections::AdminSection,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(default)]
    pub metrics: super::admin::sections::MetricsSection,
    /// `[cluster]`: one node of several sharing the rendezvous namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::cluster::config::ClusterSection>,
    #[serde(skip)]
    source: Option<PathBuf>,
    #[serde(skip)]
    state_dir: PathBuf,
    #[serde(skip)]
    policy: Policy,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Where host keys live; see [`default_state_dir`] when unset.
    pub state_dir: Option<PathBuf>,
    /// Host private keys; relative paths are relative to the state dir.
    pub host_keys: Vec<PathBuf>,
    /// `"stdout"` or a file path (relative to the config file).
    pub audit_log: String,
    /// What to do while the audit log cannot be written.
    pub audit_on_failure: AuditOnFailure,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2222))],
            state_dir: None,
            host_keys: Vec::new(),
            audit_log: "stdout".into(),
            audit_on_failure: AuditOnFailure::default(),
        }
    }
}

/// `[forwarding]`: server-wide defaults a user section may override.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forwarding {
    /// Default `GatewayPorts`.
    pub gateway_ports: GatewayPorts,
    /// Networks name rules may not reach; `None` means the built-in list.
    pub deny_networks: Option<Vec<String>>,
    /// Deny the host's own interface addresses too, whatever `deny_networks`
    /// says; `None` means the default, yes.
    pub deny_host_addresses: Option<bool>,
}

/// `[user_ca]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserCa {
    /// CA public keys in OpenSSH format.
    pub keys: Vec<String>,
    /// A file of CA public keys, one per line (relative to the config file).
    pub keys_file: Option<PathBuf>,
}

/// `[users.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// Inline `authorized_keys` lines (options allowed).
    pub keys: Vec<String>,
    /// `authorized_keys` file(s), relative to the config file.
    #[serde(skip_serializing_if = "OneOrMany::is_none")]
    pub authorized_keys: OneOrMany,
    /// Certificate principals accepted for this user; default: the user name.
    pub principals: Option<Vec<String>>,
    /// `direct-tcpip` destinations.
    pub connect: Vec<String>,
    /// `tcpip-forward` bind addresses and ports.
    pub listen: Vec<String>,
    /// Rendezvous names this user may publish.
    pub publish: Vec<String>,
    /// Rendezvous names this user may reach.
    pub reach: Vec<String>,
    /// Overrides `forwarding.gateway_ports`.
    pub gateway_ports: Option<GatewayPorts>,
    /// Overrides `forwarding.deny_networks`.
    pub deny_networks: Option<Vec<String>>,
    /// Overrides `forwarding.deny_host_addresses`.
    pub deny_host_addresses: Option<bool>,
}

/// A path or a list of paths: `authorized_keys = "a"` or `= ["a", "b"]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// Nothing configured.
    #[default]
    None,
    /// One path.
    One(PathBuf),
    /// Several paths.
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    /// Nothing configured (TOML has no way to write "none").
    pub fn is_none(&self) -> bool {
        matches!(self, OneOrMany::None)
    }

    /// The paths, in order.
    pub fn paths(&self) -> &[PathBuf] {
        match self {
            OneOrMany::None => &[],
            OneOrMany::One(p) => std::slice::from_ref(p),
            OneOrMany::Many(v) => v,
        }
    }
}

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditDestination {
    /// Standard output (for journald or a container runtime).
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

/// `[server] audit_on_failure`: whether a bastion whose audit log cannot be written
/// keeps letting people in. Refusing is the default because an unaudited bastion is
/// what the audit log exists to rule out; "continue" is for sites that value the
/// tunnels more and watch their disks (errors are still logged and writing retried).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOnFailure {
    /// Refuse new logins, channels and -R listeners until records can be written.
    #[default]
    Refuse,
    /// Keep accepting them, unaudited.
    Continue,
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `users.alice.connect[1]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not valid TOML, or a field of the wrong type or unknown name. `at` is
    /// `:LINE:COLUMN` when the parser knows where (as compilers write it, so an
    /// editor can jump there), empty otherwise.
    #[error("{}{at}: {message}", path.display())]
    Parse {
        path: PathBuf,
        at: String,
        message: String,
    },
    /// Well-formed but invalid values.
    #[error("{}", ProblemList(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
    /// The user is not in the config.
    #[error("no such user '{0}'")]
    UnknownUser(String),
}

struct ProblemList<'a>(&'a str, &'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.0, p.field, p.message)?;
        }
        Ok(())
    }
}

/// The state directory when `server.state_dir` is unset: systemd's
/// `$STATE_DIRECTORY` (so `StateDirectory=warrend` gives /var/lib/warrend),
/// else `$XDG_STATE_HOME/warrend`, else `~/.local/state/warrend`, else
/// `/var/lib/warrend`. `env` looks up a variable, so tests need no real one.
pub fn default_state_dir(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(dirs) = non_empty("STATE_DIRECTORY") {
        // systemd passes a colon-separated list when several are configured.
        return PathBuf::from(dirs.split(':').next().unwrap_or(&dirs));
    }
    if let Some(xdg) = non_empty("XDG_STATE_HOME").filter(|p| p.starts_with('/')) {
        return Path::new(&xdg).join("warrend");
    }
    if let Some(home) = non_empty("HOME") {
        return Path::new(&home).join(".local/state/warrend");
    }
    PathBuf::from("/var/lib/warrend")
}

/// `:LINE:COLUMN` (both from 1) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!(":{line}:{column}")
}

impl ServerConfig {
    /// The configuration used when no file is given: listen on
    /// 127.0.0.1:2222, no users (so nobody can log in), host keys in the
    /// default state directory.
    pub fn default_embedded() -> ServerConfig {
        ServerConfig {
            server: ServerSection::default(),
            limits: Limits::default(),
            forwarding: Forwarding::default(),
            user_ca: None,
            users: BTreeMap::new(),
            admin: Default::default(),
            metrics: Default::default(),
            cluster: None,
            source: None,
            state_dir: default_state_dir(|k| std::env::var(k).ok()),
            policy: Policy::default(),
        }
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates config text as if read from `path` (which
    /// anchors relative paths and names the file in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<ServerConfig, ConfigError> {
        let mut config: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            at: e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or_default(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.source = Some(path.to_owned());
        config.state_dir = match &config.server.state_dir {
            Some(dir) => config.resolve(dir),
            None => default_state_dir(|k| std::env::var(k).ok()),
        };
        config.policy = config.compile().map_err(|problems| ConfigError::Invalid {
            file: path.display().to_string(),
            problems,
        })?;
        Ok(config)
    }

    /// Re-checks every field; [`Self::load`] already does this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.compile()
            .map(|_| ())
            .map_err(|problems| ConfigError::Invalid {
                file: self.file_name(),
                problems,
            })
    }

    /// The compiled rules of every user.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Points every user's policy at the server's refreshed host addresses. A
    /// config fresh from the file knows no host addresses (only `0.0.0.0` and
    /// `::`), so the server calls this before putting a config in force.
    pub fn share_host_addresses(&mut self, hosts: &HostAddresses) {
        for user in self.policy.users.values_mut() {
            user.host_addresses = hosts.clone();
        }
    }

    /// The file this config came from; `None` for the embedded default.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The resolved state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Host key paths: as configured (relative to the state dir), or
    /// `ssh_host_ed25519_key` and `ssh_host_ecdsa_key` in the state dir, created on first start.
    pub fn host_key_paths(&self) -> Vec<PathBuf> {
        if self.server.host_keys.is_empty() {
            // Ed25519 for everyone, ECDSA for clients limited to NIST curves. No RSA
            // unless configured: the rsa crate has a timing side channel with no fix
            // (RUSTSEC-2023-0071), and every OpenSSH since 6.5 speaks Ed25519.
            return vec![
                self.state_dir.join("ssh_host_ed25519_key"),
                self.state_dir.join("ssh_host_ecdsa_key"),
            ];
        }
        self.server
            .host_keys
            .iter()
            .map(|p| self.state_dir.join(p))
            .collect()
    }

    /// Where audit events go.
    pub fn audit_destination(&self) -> AuditDestination {
        match self.server.audit_log.as_str() {
            "stdout" => AuditDestination::Stdout,
            path => AuditDestination::File(self.resolve(Path::new(path))),
        }
    }

    /// Certificate principals accepted for `user`.
    pub fn principals(&self, user: &str) -> Vec<String> {
        match self.users.get(user).and_then(|u| u.principals.clone()) {
            Some(p) => p,
            None => vec![user.to_owned()],
        }
    }

    /// Reads `user`'s keys: inline ones first, then each `authorized_keys`
    /// file in order. Refused lines are logged (file:line and why) and
    /// skipped; an unreadable file is an error.
    pub fn load_user_keys(&self, user: &str) -> Result<Vec<KeyEntry>, ConfigError> {
        let cfg = self
            .users
            .get(user)
            .ok_or_else(|| ConfigError::UnknownUser(user.to_owned()))?;
        let mut entries = Vec::new();
        for (i, line) in cfg.keys.iter().enumerate() {
            let field = format!("users.{user}.keys[{i}]");
            match parse_key_line(line, &field, 1) {
                Some(Ok(mut entry)) => {
                    entry.options.origin = format!("{} {field}", self.file_name());
                    entries.push(entry);
                }
                Some(Err(e)) => {
                    tracing::warn!("{}: {field}: {}; key skipped", self.file_name(), e.reason)
                }
                None => {}
            }
        }
        for path in cfg.authorized_keys.paths() {
            let path = self.resolve(path);
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            for entry in parse_authorized_keys(&text, &path.display().to_string()) {
                match entry {
                    Ok(e) => entries.push(e),
                    Err(e) => tracing::warn!("{e}; key skipped"),
                }
            }
        }
        Ok(entries)
    }

    /// Reads the `[user_ca]` keys (inline and `keys_file`). Empty when no
    /// CA is configured.
    pub fn load_user_ca_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        let Some(ca) = &self.user_ca else {
            return Ok(Vec::new());
        };
        let mut keys: Vec<PublicKey> = ca
            .keys
            .iter()
            .filter_map(|k| PublicKey::from_openssh(k).ok())
            .collect();
        if let Some(file) = &ca.keys_file {
            let path = self.resolve(file);
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let mut problems = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match PublicKey::from_openssh(line) {
                    Ok(k) => keys.push(k),
                    Err(e) => problems.push(Problem {
                        field: format!("line {}", i + 1),
                        message: format!("invalid CA key: {e}"),
                    }),
                }
            }
            if !problems.is_empty() {
                return Err(ConfigError::Invalid {
                    file: path.display().to_string(),
                    problems,
                });
            }
        }
        Ok(keys)
    }

    /// SHA-256 fingerprints of the CA keys, as certificate validation wants them.
    pub fn user_ca_fingerprints(&self) -> Result<Vec<Fingerprint>, ConfigError> {
        Ok(self
            .load_user_ca_keys()?
            .iter()
            .map(|k| k.fingerprint(HashAlg::Sha256))
            .collect())
    }

    fn file_name(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => "<embedded default>".into(),
        }
    }

    /// Relative paths are relative to the config file's directory, so a
    /// config works the same whatever the server's working directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.source.as_deref().and_then(Path::parent) {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }
}

#[path = "config_validate.rs"]
mod validate;

#[path = "config_effective.rs"]
mod effective;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
