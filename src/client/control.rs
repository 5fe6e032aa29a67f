//! The control socket: each running tunnel listens on a private unix socket (and on its
//! ControlPath when it is a master) so that `warren status`, `warren stop` and `warren -O`
//! can list, check, change and end it without `kill $PID` bookkeeping in scripts.
//!
//! The protocol is warren's own, one JSON object per line each way ([`Request`],
//! [`Reply`]), not OpenSSH's mux protocol: a stock `ssh -O` cannot drive a warren, nor
//! warren an ssh master.

use super::cli::Cli;
use super::error::ClientError;
use super::live::{ForwardStatus, Kind, Live};
use crate::config::options::{ControlMaster, Options};
use crate::config::ssh_config::Tokens;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Where control sockets live: `$XDG_RUNTIME_DIR/warren`, else `~/.ssh/warren`. Only the
/// owner may enter it, since a socket there can stop tunnels.
pub fn control_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("warren"),
        None => std::env::home_dir()
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join(".ssh/warren"),
    }
}

/// One tunnel as `warren status --json` prints it. Fields are only ever added.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TunnelStatus {
    pub pid: u32,
    /// The destination as given on the command line (a Host alias, usually).
    pub name: String,
    /// The `Tag` of its configuration, if any.
    pub tag: Option<String>,
    /// `user@host:port` as connected.
    pub destination: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// A session is up now (`false` while reconnecting).
    pub connected: bool,
    /// Connected and every forward up (what `status --check` tests).
    pub healthy: bool,
    /// Seconds since the tunnel started, and since the current session came up.
    pub uptime_secs: u64,
    pub connected_secs: Option<u64>,
    /// Successful reconnects so far.
    pub reconnects: u64,
    /// Why the last session ended or the last attempt failed.
    pub last_error: Option<String>,
    /// The ControlPath it serves, when it is a master.
    pub control_path: Option<String>,
    pub forwards: Vec<ForwardStatus>,
    /// --route networks (and "dns" for --dns) with their counters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<super::route::RouteStatus>,
}

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// status, check, stop (graceful, like SIGTERM), exit (at once), forward, cancel.
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
}

impl Request {
    fn op(op: &str) -> Request {
        Request {
            op: op.into(),
            kind: None,
            spec: None,
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reply {
    pub ok: bool,
    pub pid: u32,
    pub error: Option<String>,
    /// `forward`: the port listened on (the chosen one for port 0).
    pub port: Option<u32>,
    pub status: Option<TunnelStatus>,
}

/// Who a tunnel is, for status and for matching `--check NAME` / `stop NAME`.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub name: String,
    pub tag: Option<String>,
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// The running tunnel as the control socket sees it.
pub struct Control {
    pub live: Arc<Live>,
    pub id: Identity,
    pub destination: String,
    pub control_path: Option<PathBuf>,
    /// Stops the tunnel (listeners first, then the session).
    pub cancel: CancellationToken,
    /// `-O exit`: skip letting open connections finish.
    pub exit_now: Arc<AtomicBool>,
    /// --route / --dns, when running.
    pub routes: Option<Arc<super::route::Counters>>,
}

impl Control {
    fn snapshot(&self) -> TunnelStatus {
        let h = &self.live.health;
        let forwards = self.live.snapshot();
        let connected = self.live.slot.get().is_some();
        TunnelStatus {
            pid: std::process::id(),
            name: self.id.name.clone(),
            tag: self.id.tag.clone(),
            destination: self.destination.clone(),
            host: self.id.host.clone(),
            port: self.id.port,
            user: self.id.user.clone(),
            connected,
            healthy: connected && forwards.iter().all(|f| f.up),
            uptime_secs: h.started.elapsed().as_secs(),
            connected_secs: h.connected_at().map(|t| t.elapsed().as_secs()),
            reconnects: h.reconnects(),
            last_error: h.last_error(),
            control_path: self.control_path.as_ref().map(|p| p.display().to_string()),
            forwards,
            routes: self
                .routes
                .as_ref()
                .map(|r| r.snapshot())
                .unwrap_or_default(),
        }
    }

    async fn handle(&self, req: Request) -> Reply {
        let pid = std::process::id();
        let ok = Reply {
            ok: true,
            pid,
            ..Reply::default()
        };
        let fail = |e: String| Reply {
            ok: false,
            pid,
            error: Some(e),
            ..Reply::default()
        };
        match req.op.as_str() {
            "status" => Reply {
                status: Some(self.snapshot()),
                ..ok
            },
            "check" => ok,
            "stop" => {
                self.cancel.cancel();
                ok
            }
            "exit" => {
                self.exit_now.store(true, Ordering::Relaxed);
                self.cancel.cancel();
                ok
            }
            "forward" | "cancel" => {
                let (Some(kind), Some(spec)) = (req.kind, req.spec.as_deref()) else {
                    return fail(format!("{}: needs a kind and a spec", req.op));
                };
                let result = if req.op == "forward" {
                    self.live.add(kind, spec).await.map(Some)
                } else {
                    self.live.cancel(kind, spec).await.map(|()| None)
                };
                match result {
                    Ok(port) => Reply { port, ..ok },
                    Err(e) => fail(e),
                }
            }
            other => fail(format!("unknown request {other:?}")),
        }
    }
}

/// Bound control sockets, each with the path to remove when serving ends.
pub type Sockets = Vec<(UnixListener, PathBuf)>;

/// Binds the tunnel's control socket in [`control_dir`] and, when it is a master, its
/// ControlPath. Failing to is worth a warning, not the tunnel.
pub fn bind(control_path: Option<&Path>) -> Sockets {
    let mut listeners = Vec::new();
    let dir = control_dir();
    match create_private_dir(&dir) {
        Ok(()) => {
            let path = dir.join(format!("{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            match UnixListener::bind(&path) {
                Ok(l) => listeners.push((l, path)),
                Err(e) => warn!("no control socket at {}: {e}", path.display()),
            }
        }
        Err(e) => warn!(
            "no control socket ({}: {e}); warren status/stop will not see this tunnel",
            dir.display()
        ),
    }
    if let Some(path) = control_path {
        match bind_control_path(path) {
            Ok(l) => listeners.push((l, path.to_path_buf())),
            Err(e) => warn!("{e}"),
        }
    }
    listeners
}

/// Serves the bound sockets until the tunnel stops; the socket files are removed then.
pub async fn serve(sockets: Sockets, control: Arc<Control>) {
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|(l, path)| tokio::spawn(accept(l, path, control.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// ControlMaster's socket: taken over when stale, left alone (as ssh does, with its
/// words) when a live master answers there.
fn bind_control_path(path: &Path) -> Result<UnixListener, String> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "ControlSocket {} already exists, disabling multiplexing",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    use std::os::unix::fs::PermissionsExt;
    let l = UnixListener::bind(path)
        .map_err(|e| format!("ControlSocket {}: cannot listen: {e}", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

async fn accept(listener: UnixListener, path: PathBuf, control: Arc<Control>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = control.cancel.cancelled() => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let control = control.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &control).await {
                debug!("control connection: {e}");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: UnixStream, control: &Control) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    // A bounded read: the peer is local, but nothing here should wait forever.
    let read = async {
        // An ssh mux client (a ControlPath shared with ssh) opens with a binary length:
        // close at once, so it falls back to a connection of its own without waiting.
        if rd
            .fill_buf()
            .await?
            .first()
            .is_some_and(|b| !b.is_ascii_graphic())
        {
            return Err(std::io::Error::other("not a warren control request"));
        }
        // Bounded in size too: a request is a short JSON line (forward specs included).
        (&mut rd).take(MAX_REQUEST).read_line(&mut line).await
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::other("no request"))??;
    let line = line.trim();
    // A bare word is a request too, for `echo status | socat - UNIX:...`.
    let req = serde_json::from_str::<Request>(line).unwrap_or_else(|_| Request::op(line));
    let reply = control.handle(req).await;
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    wr.shutdown().await
}

/// The longest control request read; the rest of a longer one is never buffered.
const MAX_REQUEST: u64 = 64 * 1024;

pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Sends one request and reads the reply (bounded: a forward's bind or -R request may
/// take a server round trip, nothing more).
pub async fn request(path: &Path, req: &Request) -> std::io::Result<Reply> {
    let mut s = UnixStream::connect(path).await?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line).await?;
    let mut out = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(s).read_line(&mut out),
    )
    .await
    .map_err(|_| std::io::Error::other("no answer"))??;
    serde_json::from_str(out.trim())
        .map_err(|e| std::io::Error::other(format!("unreadable answer: {e}")))
}

/// Every running tunnel of this user (in this control directory), by pid, with its
/// status. Sockets nobody answers on are stale (their process died) and are removed.
pub async fn running() -> Vec<(PathBuf, TunnelStatus)> {
    let dir = control_dir();
    let mut sockets: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    let pid = p.file_stem()?.to_str()?.parse::<u32>().ok()?;
                    (p.extension()? == "sock").then_some((pid, p))
                })
                .collect()
        })
        .unwrap_or_default();
    sockets.sort();
    let mut out = Vec::new();
    for (_, path) in sockets {
        match request(&path, &Request::op("status")).await {
            Ok(Reply {
                status: Some(s), ..
            }) => out.push((path, s)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => {}
        }
    }
    out
}

/// Whether `name` picks `s`: its pid, the destination as given, `user@host:port`,
/// `host`, `user@host`, its Tag or its ControlPath.
pub fn matches(s: &TunnelStatus, name: &str) -> bool {
    name == s.pid.to_string()
        || name == s.name
        || name == s.destination
        || name == s.host
        || name == format!("{}@{}", s.user, s.host)
        || s.tag.as_deref() == Some(name)
        || s.control_path.as_deref() == Some(name)
}

/// What -M, -S, ControlMaster, ControlPath, ControlPersist and Tag resolve to.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub master: ControlMaster,
    /// Expanded; `None` for no ControlPath or "none".
    pub path: Option<PathBuf>,
    pub id: Identity,
}

impl ControlSettings {
    /// `tokens` are the destination's, `jump` its ProxyJump ("" when none).
    pub fn resolve(
        cli: &Cli,
        o: &Options,
        tokens: &Tokens,
        jump: &str,
    ) -> Result<ControlSettings, ClientError> {
        let mut master = match cli.control_master {
            0 => o.control_master.unwrap_or(ControlMaster::No),
            1 => ControlMaster::Yes,
            _ => ControlMaster::Ask,
        };
        if matches!(master, ControlMaster::Ask | ControlMaster::AutoAsk) {
            warn!(
                "ControlMaster ask/autoask: warren does not ask for confirmation; taken as yes/auto"
            );
            master = match master {
                ControlMaster::Ask => ControlMaster::Yes,
                _ => ControlMaster::Auto,
            };
        }
        let raw = cli.control_path.clone().or_else(|| o.control_path.clone());
        let path = match raw.as_deref() {
            None | Some("none") => None,
            Some(p) => Some(
                expand_control_path(p, tokens, jump)
                    .map_err(|e| ClientError::Usage(format!("ControlPath {p}: {e}")))?,
            ),
        };
        Ok(ControlSettings {
            master,
            path,
            id: Identity {
                name: tokens.original_host.clone(),
                tag: o.tag.clone(),
                host: tokens.host.clone(),
                port: tokens.port,
                user: tokens.remote_user.clone(),
            },
        })
    }

    /// Whether this tunnel serves its ControlPath once up.
    pub fn serves_path(&self) -> Option<PathBuf> {
        match self.master {
            ControlMaster::Yes | ControlMaster::Auto => self.path.clone(),
            _ => None,
        }
    }
}

/// ControlPath with ssh's tokens: %h %p %r %u %n %d %i %l %L %j %C %%, and a leading ~.
/// %C is the SHA-1 of %l%h%p%r, as OpenSSH 9.2 computes it (a ControlPath shared with ssh
/// names the same file).
pub fn expand_control_path(s: &str, t: &Tokens, jump: &str) -> Result<PathBuf, String> {
    use sha1::{Digest, Sha1};
    let full_host = whoami::fallible::hostname().unwrap_or_else(|_| "localhost".into());
    let short_host = full_host.split('.').next().unwrap_or("").to_string();
    let port = t.port.to_string();
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m).to_string())
        .unwrap_or_default();
    let hash: String = Sha1::digest(format!("{full_host}{}{port}{}", t.host, t.remote_user))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let home = t.home.to_string_lossy().into_owned();
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let v = match chars.next() {
            Some('%') => "%",
            Some('h') => &t.host,
            Some('p') => &port,
            Some('r') => &t.remote_user,
            Some('u') => &t.local_user,
            Some('n') => &t.original_host,
            Some('d') => &home,
            Some('i') => &uid,
            Some('l') => &full_host,
            Some('L') => &short_host,
            Some('j') => jump,
            Some('C') => &hash,
            Some(x) => {
                return Err(format!(
                    "unknown token %{x} (known: %h %p %r %u %n %d %i %l %L %j %C %%)"
                ));
            }
            None => return Err("ends with a lone %".into()),
        };
        out.push_str(v);
    }
    Ok(match out.strip_prefix("~/") {
        Some(rest) => t.home.join(rest),
        None if out == "~" => t.home.clone(),
        None => PathBuf::from(out),
    })
}

/// `-O CMD`: sent to the warren at ControlPath, or without one to the running warren for
/// this destination. Output and exit status as ssh's (0, or 255 on failure).
pub async fn client_command(cli: &Cli, ctl: &ControlSettings, op: &str) -> u8 {
    let path = match &ctl.path {
        Some(p) => p.clone(),
        None => {
            let found: Vec<_> = running()
                .await
                .into_iter()
                .filter(|(_, s)| {
                    s.host == ctl.id.host && s.port == ctl.id.port && s.user == ctl.id.user
                })
                .collect();
            match found.as_slice() {
                [(p, _)] => p.clone(),
                [] => {
                    eprintln!(
                        "No ControlPath specified for \"-O\" command, and no running warren for {}@{}:{}",
                        ctl.id.user, ctl.id.host, ctl.id.port
                    );
                    return 255;
                }
                more => {
                    let pids: Vec<String> = more.iter().map(|(_, s)| s.pid.to_string()).collect();
                    eprintln!(
                        "No ControlPath specified for \"-O\" command, and {} warrens run for {}@{}:{} (pids {}); use -S",
                        more.len(),
                        ctl.id.user,
                        ctl.id.host,
                        ctl.id.port,
                        pids.join(" ")
                    );
                    return 255;
                }
            }
        }
    };
    let send = |req: Request| {
        let path = path.clone();
        async move { request(&path, &req).await }
    };
    let unreachable = |e: std::io::Error| {
        eprintln!(
            "Control socket connect({}): {}",
            path.display(),
            io_text(&e)
        );
        255
    };
    match op {
        "check" | "exit" | "stop" => {
            let wire = if op == "check" {
                "check"
            } else if op == "exit" {
                "exit"
            } else {
                "stop"
            };
            match send(Request::op(wire)).await {
                Ok(r) if r.ok => {
                    match op {
                        "check" => eprintln!("Master running (pid={})", r.pid),
                        "exit" => eprintln!("Exit request sent."),
                        _ => eprintln!("Stop listening request sent."),
                    }
                    0
                }
                Ok(r) => {
                    eprintln!("{}", r.error.unwrap_or_default());
                    255
                }
                Err(e) => unreachable(e),
            }
        }
        _ => {
            let forwards = cli_forwards(cli);
            if forwards.is_empty() {
                eprintln!("warren: -O {op} needs -L, -R or -D forwards to {op}");
                return 2;
            }
            let mut status = 0;
            for (kind, spec) in forwards {
                let req = Request {
                    op: op.into(),
                    kind: Some(kind),
                    spec: Some(spec.clone()),
                };
                match send(req).await {
                    Ok(r) if r.ok => {
                        if op == "forward" && asks_port_zero(kind, &spec) {
                            // ssh prints the allocated -R port alone on stdout; so do we,
                            // for -L and -D too.
                            super::out::print(&format!("{}\n", r.port.unwrap_or(0)));
                        }
                    }
                    Ok(r) => {
                        eprintln!(
                            "warren: {op} {} {spec} failed: {}",
                            kind.flag(),
                            r.error.unwrap_or_default()
                        );
                        status = 255;
                    }
                    Err(e) => return unreachable(e),
                }
            }
            status
        }
    }
}

/// With ControlMaster auto/no and a live warren at ControlPath: hands this command line's
/// forwards to it instead of opening a second session. `None` when no warren answers.
pub async fn join_master(cli: &Cli, ctl: &ControlSettings) -> Option<u8> {
    if matches!(ctl.master, ControlMaster::Yes) {
        return None;
    }
    let path = ctl.path.as_ref()?;
    let master = request(path, &Request::op("check")).await.ok()?;
    let mut status = 0;
    for (kind, spec) in cli_forwards(cli) {
        let req = Request {
            op: "forward".into(),
            kind: Some(kind),
            spec: Some(spec.clone()),
        };
        match request(path, &req).await {
            Ok(r) if r.ok => {
                if asks_port_zero(kind, &spec) {
                    eprintln!(
                        "Allocated port {} for {} {spec}",
                        r.port.unwrap_or(0),
                        kind.flag()
                    );
                }
            }
            Ok(r) => {
                eprintln!(
                    "warren: {} {spec} via the master at {}: {}",
                    kind.flag(),
                    path.display(),
                    r.error.unwrap_or_default()
                );
                status = 255;
            }
            Err(e) => {
                eprintln!(
                    "Control socket connect({}): {}",
                    path.display(),
                    io_text(&e)
                );
                return Some(255);
            }
        }
    }
    if !cli.quiet {
        eprintln!(
            "warren: using the running master (pid={}) at {}",
            master.pid,
            path.display()
        );
    }
    Some(status)
}

fn cli_forwards(cli: &Cli) -> Vec<(Kind, String)> {
    let l = cli.local.iter().map(|s| (Kind::L, s.clone()));
    let r = cli.remote.iter().map(|s| (Kind::R, s.clone()));
    let d = cli.dynamic.iter().map(|s| (Kind::D, s.clone()));
    l.chain(r).chain(d).collect()
}

/// Whether a spec leaves the port to be chosen (so the chosen one is printed).
fn asks_port_zero(kind: Kind, spec: &str) -> bool {
    use crate::config::forward::{self, Listen};
    match kind {
        Kind::L => forward::parse_local(spec)
            .is_ok_and(|f| matches!(f.listen, Listen::Tcp { port: 0, .. })),
        Kind::R => forward::parse_remote(spec)
            .is_ok_and(|f| matches!(f.listen, Listen::Tcp { port: 0, .. })),
        Kind::D => forward::parse_dynamic(spec).is_ok_and(|f| f.port == 0),
    }
}

/// "No such file or directory", without Rust's " (os error 2)".
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Seconds as ssh-ish short text: 45s, 3m12s, 2h5m, 3d4h.
pub fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The human `warren status` text for one tunnel.
pub fn render(s: &TunnelStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let state = match (s.connected, s.connected_secs) {
        (true, Some(c)) => format!("connected {}", short_duration(c)),
        (true, None) => "connected".into(),
        (false, _) => "reconnecting".into(),
    };
    let _ = write!(
        out,
        "warren {} {} -> {} ({state}, up {}, {} reconnect{}",
        s.pid,
        s.name,
        s.destination,
        short_duration(s.uptime_secs),
        s.reconnects,
        if s.reconnects == 1 { "" } else { "s" }
    );
    if let Some(e) = &s.last_error {
        let _ = write!(out, ", last error: {e}");
    }
    out.push_str(")\n");
    for f in &s.forwards {
        let on = match (f.kind, f.listening.is_empty()) {
            (Kind::R, true) => "(not granted yet)".to_string(),
            (Kind::R, false) => format!("server {}", f.listening.join(" ")),
            _ => f.listening.join(" "),
        };
        let _ = write!(out, "  {} {:<36} on {:<28}", f.kind.flag(), f.spec, on);
        let _ = write!(
            out,
            " active {:>4}  total {:>6}  up {:>12}  down {:>12}",
            f.active, f.connections, f.bytes_up, f.bytes_down
        );
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    for r in &s.routes {
        let _ = match r.route.as_str() {
            "dns" => writeln!(out, "  --dns answered {}", r.dns_answered),
            _ => writeln!(
                out,
                "  --route {:<31} active {:>4}  total {:>6}  up {:>12}  down {:>12}",
                r.route, r.active, r.connections, r.bytes_up, r.bytes_down
            ),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            host: "db.example.org".into(),
            original_host: "db".into(),
            port: 2222,
            remote_user: "ops".into(),
            local_user: "me".into(),
            home: PathBuf::from("/home/me"),
        }
    }

    #[test]
    fn control_path_tokens() {
        let t = tokens();
        let p = expand_control_path("~/.ssh/cm-%r@%h:%p-%n-%u-%j-%%", &t, "bastion").unwrap();
        assert_eq!(
            p,
            PathBuf::from("/home/me/.ssh/cm-ops@db.example.org:2222-db-me-bastion-%")
        );
        let c = expand_control_path("%C", &t, "").unwrap();
        let c = c.to_str().unwrap();
        assert!(
            c.len() == 40 && c.chars().all(|c| c.is_ascii_hexdigit()),
            "{c}"
        );
        // %C does not depend on the jump host (as in OpenSSH 9.2) but on user and port.
        assert_eq!(
            expand_control_path("%C", &t, "j").unwrap().to_str(),
            Some(c)
        );
        let other = Tokens {
            port: 22,
            ..tokens()
        };
        assert_ne!(
            expand_control_path("%C", &other, "").unwrap().to_str(),
            Some(c)
        );
        for bad in ["%x", "trailing%"] {
            assert!(expand_control_path(bad, &t, "").is_err(), "{bad}");
        }
    }

    #[test]
    fn control_options() {
        let mut o = Options::default();
        o.apply_arg("ControlMaster=autoask").unwrap();
        o.apply_arg("ControlPersist=10m").unwrap();
        o.apply_arg("Tag=db").unwrap();
        assert_eq!(o.control_master, Some(ControlMaster::AutoAsk));
        assert_eq!(o.control_persist.as_deref(), Some("10m"));
        assert_eq!(o.tag.as_deref(), Some("db"));
        let mut o = Options::default();
        assert!(o.apply_arg("ControlMaster=sometimes").is_err());
        assert!(o.apply_arg("ControlPersist=soon").is_err());
        o.apply_arg("ControlPersist=yes").unwrap();
    }

    #[test]
    fn names_pick_tunnels() {
        let s = TunnelStatus {
            pid: 42,
            name: "db".into(),
            tag: Some("prod-db".into()),
            destination: "ops@db.example.org:2222".into(),
            host: "db.example.org".into(),
            port: 2222,
            user: "ops".into(),
            ..TunnelStatus::default()
        };
        for n in [
            "42",
            "db",
            "prod-db",
            "ops@db.example.org:2222",
            "db.example.org",
            "ops@db.example.org",
        ] {
            assert!(matches(&s, n), "{n}");
        }
        for n in ["4", "other", ""] {
            assert!(!matches(&s, n), "{n}");
        }
    }
}
