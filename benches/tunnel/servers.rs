//! The two SSH servers, each started privately on 127.0.0.1 and an
//! ephemeral port: OpenSSH's sshd with its own config, host key and
//! authorized_keys, and warrend with a config allowing exactly the
//! benchmark's target ports.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cluster_rig::{NAME_PORT, NAME_PREFIX};
use crate::env::{Env, free_port};
use crate::opts::ServerKind;
use crate::procs::{Proc, Stream};

const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running server; dropping it stops the server and its connections.
pub struct Server {
    pub port: u16,
    proc: Proc,
}

impl Server {
    /// Starts a fresh server of `kind`. `target_ports` are the ports on
    /// 127.0.0.1 clients may open connections to (warrend needs them named).
    pub fn start(env: &Env, kind: ServerKind, target_ports: &[u16]) -> Result<Server> {
        match kind {
            ServerKind::Sshd => start_sshd(env),
            ServerKind::Warrend => start_warrend(env, target_ports),
        }
    }

    /// The process whose tree (with its descendants) serves the clients.
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Recent output, for error reports.
    pub fn tail(&self) -> String {
        self.proc.tail()
    }
}

fn start_sshd(env: &Env) -> Result<Server> {
    let dir = env.subdir("sshd")?;
    // sshd refuses to start without its privilege-separation directory.
    fs::create_dir_all("/run/sshd").context("create /run/sshd")?;
    let authorized = dir.join("authorized_keys");
    fs::write(&authorized, format!("{}\n", env.public_line))?;
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let config = dir.join("sshd_config");
        fs::write(&config, sshd_config(port, env, &dir, &authorized))?;
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let proc = Proc::spawn(cmd)?;
        let ready = format!("Server listening on 127.0.0.1 port {port}.");
        let line = proc.wait_line(Stream::Stderr, START_TIMEOUT, |l| {
            l.starts_with(&ready) || l.contains("Bind to port") || l.contains("Cannot bind")
        });
        match line {
            Ok(l) if l.text.starts_with(&ready) => {
                return Ok(Server { port, proc });
            }
            Ok(_) => last_error = proc.tail(),
            Err(e) => last_error = format!("{e:#}"),
        }
    }
    bail!("sshd did not start:\n{last_error}")
}

/// High session and startup limits so that neither stands in the way of the
/// concurrency test (channels of one connection are limited only by file
/// descriptors in sshd).
fn sshd_config(port: u16, env: &Env, dir: &Path, authorized: &Path) -> String {
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {host_key}\n\
         PidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {authorized}\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         AllowTcpForwarding yes\n\
         GatewayPorts no\n\
         MaxSessions 10000\n\
         MaxStartups 10000\n\
         LogLevel INFO\n",
        host_key = env.sshd_host_key.display(),
        dir = dir.display(),
        authorized = authorized.display(),
    )
}

fn start_warrend(env: &Env, target_ports: &[u16]) -> Result<Server> {
    let dir = env.subdir("warrend")?;
    let config = dir.join("warrend.toml");
    fs::write(&config, warrend_config(env, &dir, target_ports))?;
    let mut cmd = Command::new(&env.warrend);
    cmd.env_remove("RUST_LOG").arg("-f").arg(&config);
    let proc = Proc::spawn(cmd)?;
    let line = proc
        .wait_line(Stream::Stderr, START_TIMEOUT, |l| {
            l.contains("warrend: listening on ")
        })
        .context("warrend did not start")?;
    let port = line
        .text
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("bad listening line {:?}", line.text))?;
    Ok(Server { port, proc })
}

/// The `[limits]` of every warrend the benchmark starts: nothing it measures may be
/// throttled or refused (listener limits follow, per launcher).
pub const LIMITS: &str = "[limits]\n\
     auth_rejection_delay = \"1ms\"\n\
     max_failed_auth_per_source = 1000\n\
     max_unauthenticated = 1000\n\
     max_unauthenticated_per_source = 1000\n\
     max_sessions_per_user = 1000\n\
     max_channels_per_session = 250000\n\
     max_channels_per_user = 250000\n\
     max_channels = 250000\n";

/// One user (the local user name, the benchmark's key) who may connect to
/// exactly the target ports on 127.0.0.1, listen on loopback for -R, and publish
/// and reach `bench-*:80` rendezvous names (the many phase's second run);
/// channel and session limits high enough for the concurrency test; the
/// audit log in a file, as a production server would keep it.
fn warrend_config(env: &Env, dir: &Path, target_ports: &[u16]) -> String {
    let ports: Vec<String> = target_ports.iter().map(u16::to_string).collect();
    let state = env.path().join("warrend-state");
    let mut c = String::new();
    let _ = writeln!(
        c,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nstate_dir = {}\nhost_keys = [\"ssh_host_ed25519_key\"]\naudit_log = {}\n\n\
         # Servers of the run share one state dir (one host key); none needs `warrend ctl`.\n\
         [admin]\nsocket = \"\"\n",
        toml_str(&state),
        toml_str(&dir.join("audit.log")),
    );
    c.push_str(LIMITS);
    c.push_str("max_listeners_per_session = 64\n\n");
    let _ = writeln!(
        c,
        "[users.{user}]\nkeys = [{key}]\nconnect = [\"127.0.0.1:{ports}\"]\nlisten = [\"127.0.0.1:*\"]\n\
         publish = [\"{NAME_PREFIX}*:{NAME_PORT}\"]\nreach = [\"{NAME_PREFIX}*:{NAME_PORT}\"]",
        user = toml_key(&env.user),
        key = serde_json::to_string(&env.public_line).unwrap_or_default(),
        ports = ports.join(","),
    );
    c
}

/// The public host key every warrend of the run shows (they share one state dir), as
/// an OpenSSH line, for clients that check it themselves.
pub fn warrend_host_public(env: &Env) -> Result<String> {
    let path = env.path().join("warrend-state/ssh_host_ed25519_key.pub");
    fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

fn toml_str(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}

fn toml_key(k: &str) -> String {
    if k.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        serde_json::to_string(k).unwrap_or_default()
    }
}
