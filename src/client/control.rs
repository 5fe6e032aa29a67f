//! The control socket: each running tunnel listens on a private unix socket so that
//! `warren status` can list tunnels, connections and bytes, and `warren stop` can end them
//! cleanly (no `kill $PID` bookkeeping in scripts).

use crate::forward::local::ForwardStats;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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

/// One forward as reported by `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardStatus {
    pub spec: String,
    pub listening: Vec<String>,
    pub active: u64,
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// One tunnel process as reported by `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelStatus {
    pub pid: u32,
    pub destination: String,
    pub connected: bool,
    pub forwards: Vec<ForwardStatus>,
}

/// Live state the control socket reports.
pub struct StatusSource {
    pub destination: String,
    pub connected: Box<dyn Fn() -> bool + Send + Sync>,
    pub forwards: Vec<(String, Vec<String>, Arc<ForwardStats>)>,
}

impl StatusSource {
    fn snapshot(&self) -> TunnelStatus {
        TunnelStatus {
            pid: std::process::id(),
            destination: self.destination.clone(),
            connected: (self.connected)(),
            forwards: self
                .forwards
                .iter()
                .map(|(spec, listening, s)| ForwardStatus {
                    spec: spec.clone(),
                    listening: listening.clone(),
                    active: s.active(),
                    connections: s.connections(),
                    bytes_up: s.bytes_up(),
                    bytes_down: s.bytes_down(),
                })
                .collect(),
        }
    }
}

/// Serves the control socket until `cancel`; a `stop` request cancels. The socket file is
/// removed when serving ends.
pub async fn serve(source: StatusSource, cancel: CancellationToken) {
    let dir = control_dir();
    if let Err(e) = create_private_dir(&dir) {
        warn!(
            "no control socket ({}: {e}); warren status/stop will not see this tunnel",
            dir.display()
        );
        return;
    }
    let path = dir.join(format!("{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!("no control socket at {}: {e}", path.display());
            return;
        }
    };
    let source = Arc::new(source);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cancel.cancelled() => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (source, cancel) = (source.clone(), cancel.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &source, &cancel).await {
                debug!("control connection: {e}");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(
    stream: UnixStream,
    source: &StatusSource,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    // A bounded read: the peer is local, but nothing here should wait forever.
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(rd).read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::other("no request"))??;
    match line.trim() {
        "status" => {
            let mut out = serde_json::to_vec(&source.snapshot()).map_err(std::io::Error::other)?;
            out.push(b'\n');
            wr.write_all(&out).await?;
        }
        "stop" => {
            wr.write_all(b"stopping\n").await?;
            cancel.cancel();
        }
        other => {
            wr.write_all(format!("unknown request {other:?}\n").as_bytes())
                .await?
        }
    }
    wr.shutdown().await
}

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

/// `warren status` / `warren stop [PID]`: `None` when `args` are not a control command.
pub fn command(args: &[String]) -> Option<u8> {
    let verb = args.get(1)?.as_str();
    if verb != "status" && verb != "stop" {
        return None;
    }
    let only: Option<u32> = match args.get(2) {
        Some(p) => match p.parse() {
            Ok(pid) => Some(pid),
            Err(_) => {
                eprintln!("warren {verb}: '{p}' is not a process id");
                return Some(2);
            }
        },
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    Some(runtime.block_on(run_command(verb, only)))
}

async fn run_command(verb: &str, only: Option<u32>) -> u8 {
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
    if let Some(pid) = only {
        sockets.retain(|(p, _)| *p == pid);
    }
    let mut found = 0;
    for (pid, path) in sockets {
        let reply = match request(&path, verb).await {
            Ok(r) => r,
            Err(_) => {
                // The process died without cleaning up; the socket is stale.
                let _ = std::fs::remove_file(&path);
                continue;
            }
        };
        found += 1;
        if verb == "stop" {
            println!("stopping warren {pid}");
            continue;
        }
        match serde_json::from_str::<TunnelStatus>(reply.trim()) {
            Ok(s) => print_status(&s),
            Err(e) => eprintln!("warren {pid}: unreadable status: {e}"),
        }
    }
    if found == 0 {
        eprintln!(
            "no running warren tunnel{}",
            only.map(|p| format!(" with pid {p}")).unwrap_or_default()
        );
        return 1;
    }
    0
}

async fn request(path: &Path, verb: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(format!("{verb}\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(s).read_line(&mut out),
    )
    .await
    .map_err(|_| std::io::Error::other("no answer"))??;
    Ok(out)
}

fn print_status(s: &TunnelStatus) {
    println!(
        "warren {} -> {} ({})",
        s.pid,
        s.destination,
        if s.connected {
            "connected"
        } else {
            "reconnecting"
        }
    );
    for f in &s.forwards {
        println!(
            "  {:<40} on {:<30} active {:>4}  total {:>6}  up {:>12}  down {:>12}",
            f.spec,
            f.listening.join(" "),
            f.active,
            f.connections,
            f.bytes_up,
            f.bytes_down
        );
    }
}
