//! Where the control socket lives (from `[admin]`, systemd's runtime directory or the state
//! directory), for the daemon and for `warrend ctl`.

use super::super::config::ServerConfig;
use std::path::{Path, PathBuf};

/// The control socket's file name under systemd's `RuntimeDirectory=warrend`.
pub const RUNTIME_SOCKET: &str = "warrend.sock";
/// Its file name in the state directory otherwise.
pub const STATE_SOCKET: &str = "ctl.sock";
/// Where systemd puts `RuntimeDirectory=warrend`; `warrend ctl` run from a shell (which
/// has no `$RUNTIME_DIRECTORY`) looks there too.
pub const SYSTEMD_RUNTIME_DIR: &str = "/run/warrend";

/// Where warrend puts its control socket: `[admin] socket` if set (`None` when set to
/// `""`), else `$RUNTIME_DIRECTORY/warrend.sock` under systemd, else
/// `<state_dir>/ctl.sock`. `env` looks up a variable, so tests need no real one.
pub fn server_socket(
    config: &ServerConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    match config.admin.socket.as_deref() {
        Some("") => None,
        Some(path) => Some(config.resolve(Path::new(path))),
        None => Some(default_socket(config, env)),
    }
}

fn runtime_dir(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let dirs = env("RUNTIME_DIRECTORY").filter(|v| !v.is_empty())?;
    // systemd passes a colon-separated list when several are configured.
    Some(PathBuf::from(dirs.split(':').next().unwrap_or(&dirs)))
}

fn default_socket(config: &ServerConfig, env: impl Fn(&str) -> Option<String>) -> PathBuf {
    match runtime_dir(&env) {
        Some(dir) => dir.join(RUNTIME_SOCKET),
        None => config.state_dir().join(STATE_SOCKET),
    }
}

/// What `warrend ctl` reads from a config file to find the socket. Read leniently: a
/// file the server would refuse (the very file a failed reload complains about) must
/// not keep the admin from reaching the server that runs the previous one.
pub struct SocketHints {
    /// `[admin] socket`, resolved; `Some("")` when turned off.
    socket: Option<PathBuf>,
    /// `[server] state_dir`, resolved.
    state_dir: Option<PathBuf>,
    source: String,
}

impl SocketHints {
    /// From the config file at `path`, or the defaults without one.
    pub fn read(path: Option<&Path>) -> Result<SocketHints, String> {
        let Some(path) = path else {
            return Ok(SocketHints {
                socket: None,
                state_dir: None,
                source: "the default configuration".into(),
            });
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            format!(
                "{}: {e}\n(to reach warrend anyway, give --socket PATH)",
                path.display()
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| {
            if p.is_empty() {
                PathBuf::new()
            } else {
                dir.join(p)
            }
        };
        let string = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(toml::Value::as_str)
                .map(resolve)
        };
        Ok(SocketHints {
            socket: string("admin", "socket"),
            state_dir: string("server", "state_dir"),
            source: path.display().to_string(),
        })
    }
}

/// Where `warrend ctl` looks, in order: the configured socket alone, or the places a
/// warrend with this config may have used (its own environment may differ from the
/// shell's: systemd sets `$RUNTIME_DIRECTORY` and `$STATE_DIRECTORY` for the service
/// only). `Err` when the config turns the socket off.
pub fn client_candidates(
    hints: &SocketHints,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<PathBuf>, String> {
    match &hints.socket {
        Some(p) if p.as_os_str().is_empty() => Err(format!(
            "the control socket is off in {} (admin.socket = \"\")",
            hints.source
        )),
        Some(p) => Ok(vec![p.clone()]),
        None => {
            let mut out = Vec::new();
            if let Some(dir) = runtime_dir(&env) {
                out.push(dir.join(RUNTIME_SOCKET));
            }
            match &hints.state_dir {
                Some(dir) => out.push(dir.join(STATE_SOCKET)),
                None => {
                    out.push(super::super::config::default_state_dir(&env).join(STATE_SOCKET));
                }
            }
            out.push(Path::new(SYSTEMD_RUNTIME_DIR).join(RUNTIME_SOCKET));
            if hints.state_dir.is_none() {
                // StateDirectory=warrend, when the shell's default differs.
                out.push(Path::new("/var/lib/warrend").join(STATE_SOCKET));
            }
            out.dedup();
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ServerConfig {
        ServerConfig::from_toml(text, Path::new("/etc/warrend/warrend.toml")).unwrap()
    }

    #[test]
    fn the_socket_goes_where_systemd_or_the_state_dir_says() {
        let c = config("[server]\nstate_dir = \"/var/lib/w\"\n");
        let none = |_: &str| None;
        assert_eq!(
            server_socket(&c, none),
            Some(PathBuf::from("/var/lib/w/ctl.sock"))
        );
        let systemd = |k: &str| (k == "RUNTIME_DIRECTORY").then(|| "/run/warrend:/run/x".into());
        assert_eq!(
            server_socket(&c, systemd),
            Some(PathBuf::from("/run/warrend/warrend.sock"))
        );
        let c = config("[admin]\nsocket = \"ctl/admin.sock\"\n");
        assert_eq!(
            server_socket(&c, none),
            Some(PathBuf::from("/etc/warrend/ctl/admin.sock"))
        );
        let off = config("[admin]\nsocket = \"\"\n");
        assert_eq!(server_socket(&off, none), None);
    }

    #[test]
    fn ctl_finds_the_socket_even_in_a_file_the_server_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.toml");
        let none = |_: &str| None;
        std::fs::write(
            &file,
            "[server]\nstate_dir = \"st\"\n[users.a]\nkeys = 42\n",
        )
        .unwrap();
        let hints = SocketHints::read(Some(&file)).unwrap();
        let found = client_candidates(&hints, none).unwrap();
        assert_eq!(found[0], dir.path().join("st/ctl.sock"));
        std::fs::write(&file, "[admin]\nsocket = \"\"\n").unwrap();
        let hints = SocketHints::read(Some(&file)).unwrap();
        assert!(client_candidates(&hints, none).unwrap_err().contains("off"));
        std::fs::write(&file, "[admin]\nsocket = \"/run/x.sock\"\n").unwrap();
        let hints = SocketHints::read(Some(&file)).unwrap();
        assert_eq!(
            client_candidates(&hints, none).unwrap(),
            vec![PathBuf::from("/run/x.sock")]
        );
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert!(config("").metrics.listen.is_none());
        let c = config("[metrics]\nlisten = \"127.0.0.1:9122\"\n");
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9122".parse().unwrap()));
        assert!(
            ServerConfig::from_toml("[metrics]\nlisten = \"nope\"\n", Path::new("w.toml")).is_err()
        );
    }
}
