//! The two SSH clients, started with the same options and the same
//! forwards, and the real signals that say their forwards are up.
//!
//! Measured tunnels run without `-v`: `ssh -v` prints several lines per
//! forwarded connection, which would charge OpenSSH for logging the other
//! client does not do. Their readiness is then a successful connect to every
//! local port (ssh binds them only once logged in), the "Allocated port"
//! lines for -R, and for warren its `--print-ports` lines (printed once every
//! forward is up). Only the startup measurement runs with `-v`, for the
//! readiness log lines and the negotiated cipher.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::env::{Env, free_port};
use crate::opts::ClientKind;
use crate::procs::{Line, Proc, Stream};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The cipher forced on ssh. warren offers aes256-gcm first on CPUs with AES
/// instructions (src/crypto.rs), so every pair negotiates the same cipher;
/// the startup measurement reads back what was actually negotiated.
pub const SSH_CIPHER: &str = "aes256-gcm@openssh.com";

/// One forward of a client; the port is the target's on 127.0.0.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    Local(u16),
    Dynamic,
    Remote(u16),
}

/// How a client is started beyond its forwards; `Default` is a quiet
/// client with no extra features (what every measured tunnel uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// `-v` (readiness from log lines, and the negotiated algorithms).
    pub verbose: bool,
    /// warren's opt-in `--preconnect` (ssh has no such option).
    pub preconnect: bool,
    /// Run ssh under `autossh -M 0`, the usual way to keep an ssh tunnel up (warren
    /// reconnects by itself and ignores this).
    pub autossh: bool,
}

/// A running client with its forwards up.
pub struct Client {
    /// Where each forward is entered, in the order given: the local port
    /// for -L and -D, the port the server allocated for -R.
    pub ports: Vec<u16>,
    /// The signal that said "ready", with the instant it came.
    pub ready: Line,
    proc: Proc,
}

impl Client {
    /// Starts `kind` against the server on `server_port` and waits until
    /// every forward is up.
    pub fn start(
        env: &Env,
        kind: ClientKind,
        server_port: u16,
        forwards: &[Forward],
        opts: ClientOptions,
    ) -> Result<Client> {
        if opts.preconnect && kind != ClientKind::Warren {
            bail!("{kind:?} has no --preconnect");
        }
        let verbose = opts.verbose;
        let mut last = String::new();
        for _attempt in 0..4 {
            let local: Vec<Option<u16>> = forwards
                .iter()
                .map(|f| match f {
                    Forward::Remote(_) => Ok(None),
                    _ => free_port().map(Some),
                })
                .collect::<Result<_>>()?;
            let cmd = command(env, kind, server_port, forwards, &local, opts);
            let proc = Proc::spawn(cmd)?;
            match wait_ready(&proc, kind, forwards, &local, verbose) {
                Ok((ports, ready)) => {
                    return Ok(Client { ports, ready, proc });
                }
                Err(e) => {
                    let tail = proc.tail();
                    proc.stop();
                    last = format!("{e:#}");
                    // A local port taken between choosing and binding it: try others.
                    if !tail.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        bail!("{kind:?} client did not come up: {last}")
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The instant just before the client was spawned.
    pub fn started(&self) -> Instant {
        self.proc.started()
    }

    pub fn tail(&self) -> String {
        self.proc.tail()
    }

    /// Whether the client is still running (a client that died mid-run
    /// explains every failure after it).
    pub fn alive(&self) -> bool {
        self.proc.exit_status().is_none()
    }

    /// The cipher the client reported negotiating (verbose clients only).
    pub fn cipher(&self) -> Option<String> {
        // ssh -v: "debug1: kex: server->client cipher: aes256-gcm@openssh.com MAC: ..."
        // warren: "DEBUG warren_ssh::proto::transport: negotiated kex=... s2c=aes256-gcm@openssh.com ..."
        self.negotiated("server->client cipher: ", "s2c=")
    }

    /// The key exchange the client reported negotiating (verbose clients only).
    pub fn kex(&self) -> Option<String> {
        // ssh -v: "debug1: kex: algorithm: sntrup761x25519-sha512@openssh.com"
        // warren: "DEBUG warren_ssh::proto::transport: negotiated kex=curve25519-sha256 ..."
        self.negotiated("kex: algorithm: ", "kex=")
    }

    /// The algorithm name after `ssh_key` in ssh's -v output, or after
    /// `engine_field` in the SSH engine's "negotiated" debug line.
    fn negotiated(&self, ssh_key: &str, engine_field: &str) -> Option<String> {
        self.proc.lines(Stream::Stderr).iter().find_map(|l| {
            let t = &l.text;
            let rest = if let Some(i) = t.find(ssh_key) {
                &t[i + ssh_key.len()..]
            } else if let Some(fields) = t.split(" negotiated ").nth(1) {
                let i = fields.find(engine_field)?;
                &fields[i + engine_field.len()..]
            } else {
                return None;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "@.-_".contains(*c))
                .collect();
            (!name.is_empty()).then_some(name)
        })
    }
}

fn command(
    env: &Env,
    kind: ClientKind,
    server_port: u16,
    forwards: &[Forward],
    local: &[Option<u16>],
    opts: ClientOptions,
) -> Command {
    let mut cmd = base_command(env, kind, server_port, opts);
    for (f, l) in forwards.iter().zip(local) {
        let port = l.unwrap_or(0);
        match f {
            Forward::Local(t) => cmd.arg("-L").arg(format!("127.0.0.1:{port}:127.0.0.1:{t}")),
            Forward::Dynamic => cmd.arg("-D").arg(format!("127.0.0.1:{port}")),
            Forward::Remote(t) => cmd.arg("-R").arg(format!("127.0.0.1:0:127.0.0.1:{t}")),
        };
    }
    cmd.arg(destination(env));
    cmd
}

/// `user@127.0.0.1`, the login every client of the run uses.
pub fn destination(env: &Env) -> String {
    format!("{}@127.0.0.1", env.user)
}

/// A client's command line up to its forwards and destination: the run's key and HOME,
/// no agent, no host key prompts, the forced cipher for ssh, `--print-ports` for a quiet
/// warren.
pub fn base_command(env: &Env, kind: ClientKind, server_port: u16, opts: ClientOptions) -> Command {
    let verbose = opts.verbose;
    let mut cmd = match kind {
        ClientKind::Ssh if opts.autossh => {
            let mut c = Command::new("autossh");
            // GATETIME 0: keep restarting even if the first ssh fails fast.
            c.args(["-M", "0"]).env("AUTOSSH_GATETIME", "0");
            c
        }
        ClientKind::Ssh => Command::new("ssh"),
        ClientKind::Warren => Command::new(&env.warren),
    };
    cmd.env("HOME", &env.home).env_remove("SSH_AUTH_SOCK");
    cmd.args(["-F", "/dev/null", "-N"]);
    for o in [
        "BatchMode=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "GlobalKnownHostsFile=/dev/null",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "ExitOnForwardFailure=yes",
    ] {
        cmd.arg("-o").arg(o);
    }
    match kind {
        ClientKind::Ssh => {
            cmd.arg("-o").arg(format!("Ciphers={SSH_CIPHER}"));
            if verbose {
                cmd.arg("-v");
            }
        }
        ClientKind::Warren => {
            cmd.env_remove("RUST_LOG");
            if verbose {
                // -v, plus the one engine line naming the negotiated algorithms.
                cmd.arg("-v").env(
                    "RUST_LOG",
                    "warn,warren=info,warren_ssh::proto::transport=debug",
                );
            } else {
                cmd.arg("--print-ports");
            }
            if opts.preconnect {
                cmd.arg("--preconnect");
            }
        }
    }
    cmd.arg("-i").arg(&env.key);
    cmd.arg("-p").arg(server_port.to_string());
    cmd
}

/// Waits for the client's own readiness signal; returns the entry port of
/// every forward and the line (or connect) that said ready.
fn wait_ready(
    proc: &Proc,
    kind: ClientKind,
    forwards: &[Forward],
    local: &[Option<u16>],
    verbose: bool,
) -> Result<(Vec<u16>, Line)> {
    let mut ports = Vec::new();
    let mut ready: Option<Line> = None;
    let mut later = |l: Line| {
        if ready.as_ref().is_none_or(|r| l.at > r.at) {
            ready = Some(l);
        }
    };
    let (mut n_local, mut n_dynamic, mut n_remote) = (0, 0, 0);
    for (f, l) in forwards.iter().zip(local) {
        match (f, kind) {
            (Forward::Remote(t), _) => {
                n_remote += 1;
                let line = if kind == ClientKind::Warren && !verbose {
                    let key = format!("WARREN_REMOTE_PORT_{n_remote}=");
                    proc.wait_line(Stream::Stdout, READY_TIMEOUT, |s| s.starts_with(&key))?
                } else {
                    let want = format!("for remote forward to 127.0.0.1:{t}");
                    proc.wait_line(Stream::Stderr, READY_TIMEOUT, |s| {
                        s.contains("Allocated port ") && s.contains(&want)
                    })?
                };
                let port = line
                    .text
                    .split(['=', ' '])
                    .find_map(|w| w.parse::<u16>().ok())
                    .with_context(|| format!("no port in {:?}", line.text))?;
                ports.push(port);
                later(line);
            }
            (_, ClientKind::Warren) => {
                let port = l.context("local port")?;
                ports.push(port);
                if !verbose {
                    let key = match f {
                        Forward::Dynamic => {
                            n_dynamic += 1;
                            format!("WARREN_DYNAMIC_PORT_{n_dynamic}={port}")
                        }
                        _ => {
                            n_local += 1;
                            format!("WARREN_LOCAL_PORT_{n_local}={port}")
                        }
                    };
                    later(proc.wait_line(Stream::Stdout, READY_TIMEOUT, |s| s == key)?);
                }
            }
            (_, ClientKind::Ssh) => {
                let port = l.context("local port")?;
                ports.push(port);
                let line = if verbose {
                    let want = format!("Local forwarding listening on 127.0.0.1 port {port}.");
                    proc.wait_line(Stream::Stderr, READY_TIMEOUT, |s| s.ends_with(&want))?
                } else {
                    connected(proc, port)?
                };
                later(line);
            }
        }
    }
    if kind == ClientKind::Warren && verbose {
        later(proc.wait_line(Stream::Stderr, READY_TIMEOUT, |s| {
            s.contains("ready: connected to")
        })?);
    }
    let ready = ready.context("no forwards")?;
    Ok((ports, ready))
}

/// Readiness of a quiet ssh listener: the first successful connect.
pub fn connected(proc: &Proc, port: u16) -> Result<Line> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(Line {
                at: Instant::now(),
                text: format!("connected to 127.0.0.1:{port}"),
            });
        }
        if proc.exit_status().is_some() || Instant::now() > deadline {
            bail!("ssh never listened on port {port}\n{}", proc.tail());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
