//! The control socket: a unix socket only root and warrend's own user may use.
//!
//! Three fences, because each alone can be undone by an operator's choice: the socket
//! is mode 0600, it sits in a directory warrend owns that nobody else may write (so
//! nobody can swap it for their own), and every connection's peer credentials
//! (SO_PEERCRED) are checked before anything is read.

use super::commands::{self, Context};
use super::protocol::{IO_TIMEOUT, MAX_CLIENTS, MAX_REQUEST, Request, Response};
use anyhow::{Context as _, bail};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Whether a peer with `uid` may use the control socket of a warrend running as `own`.
/// Root, because root can read warrend's state and signal it anyway, and is who runs
/// `warrend ctl` on most hosts; warrend's own user, because a service running as a
/// dedicated account (systemd `User=warrend`) is administered as that account
/// (`sudo -u warrend warrend ctl ...`) without handing out root. Nobody else: the
/// sessions list names users and their addresses, and kick and reload change service.
pub fn peer_allowed(uid: u32, own: u32) -> bool {
    uid == 0 || uid == own
}

fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates the socket at `path`: removes a stale one left by a warrend that died, and
/// refuses to start beside a live one (connecting tells them apart), or in a directory
/// others may write.
pub async fn bind(path: &Path, create_dir: bool) -> anyhow::Result<UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if create_dir && !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    check_dir(dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match tokio::time::timeout(IO_TIMEOUT, UnixStream::connect(path)).await {
                Ok(Ok(_)) => bail!(
                    "another warrend is serving the control socket {} (stop it, or set \
                     [admin] socket to another path)",
                    path.display()
                ),
                _ => {
                    debug!("removing the stale control socket {}", path.display());
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing the stale {}", path.display()))?;
                }
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    Ok(listener)
}

/// The socket's directory must be warrend's (or root's) and not writable by others,
/// or they could replace the socket with theirs and read what ctl sends.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("the control socket's directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if meta.uid() != own_uid() && meta.uid() != 0 {
        bail!(
            "the control socket's directory {} belongs to uid {}, not to warrend's user or root",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "the control socket's directory {} is writable by others (mode {:o}); \
             use a private directory",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Serves the control socket until `cancel`, then removes it.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    ctx: Arc<Context>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let own = own_uid();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("control socket: {MAX_CLIENTS} clients already; closing a new one");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            one(stream, own, &ctx).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// One control connection: credentials, one request line, one response line.
async fn one(mut stream: UnixStream, own: u32, ctx: &Context) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            warn!("control socket: cannot read the peer's credentials: {e}");
            return;
        }
    };
    if !peer_allowed(uid, own) {
        warn!(
            uid,
            "control socket: refused a client that is neither root nor warrend's user"
        );
        let why =
            format!("permission denied: uid {uid} is neither root nor warrend's user (uid {own})");
        reply(&mut stream, &Response::error(why)).await;
        return;
    }
    let response = match tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Response::error(format!(
            "no request within {IO_TIMEOUT:?}; send one JSON line"
        )),
        Ok(Err(why)) => Response::error(why),
        Ok(Ok(request)) => {
            debug!(uid, ?request, "control request");
            commands::answer(ctx, request).await
        }
    };
    reply(&mut stream, &response).await;
}

/// Reads one line of at most [`MAX_REQUEST`] bytes and parses it.
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(stream.take(MAX_REQUEST as u64 + 1));
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    if !line.ends_with(b"\n") {
        return Err("the request must be one JSON line ending in a newline".into());
    }
    serde_json::from_slice(&line).map_err(|e| format!("bad request: {e}"))
}

async fn reply(stream: &mut UnixStream, response: &Response) {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|e| {
        format!("{{\"ok\":false,\"error\":\"cannot encode the answer: {e}\"}}").into_bytes()
    });
    line.push(b'\n');
    let send = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) | Err(e) = tokio::time::timeout(IO_TIMEOUT, send)
        .await
        .map_err(|_| std::io::Error::from(ErrorKind::TimedOut))
    {
        debug!("control socket: the answer did not get out: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_warrends_own_user_may_use_the_socket() {
        assert!(peer_allowed(0, 998));
        assert!(peer_allowed(998, 998));
        assert!(!peer_allowed(1000, 998));
        assert!(!peer_allowed(65534, 0));
        assert!(peer_allowed(0, 0));
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_not_stolen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let live = bind(&path, false).await.unwrap();
        let e = bind(&path, false).await.unwrap_err();
        assert!(format!("{e:#}").contains("another warrend"), "{e:#}");
        drop(live);
        // The file stays behind, as after a crash; nobody answers on it.
        assert!(path.exists());
        let again = bind(&path, false).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(again);
    }

    fn context() -> Context {
        let config = crate::server::config::ServerConfig::default_embedded();
        let audit = crate::server::audit::AuditSink::memory().0;
        Context {
            shared: crate::server::state::Shared::new(config, audit),
            config_path: None,
        }
    }

    async fn answer_to(client: &mut UnixStream) -> Response {
        let mut line = String::new();
        client.read_to_string(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// A client that connects and says nothing is answered and let go after
    /// [`IO_TIMEOUT`]; it cannot hold a task (and one of the [`MAX_CLIENTS`]) for longer.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_let_go_after_the_timeout() {
        let ctx = context();
        let (server, mut client) = UnixStream::pair().unwrap();
        let started = tokio::time::Instant::now();
        let serving = tokio::spawn(async move { one(server, own_uid(), &ctx).await });
        let response = answer_to(&mut client).await;
        serving.await.unwrap();
        assert!(!response.ok);
        assert!(response.error.unwrap().contains("no request within"));
        assert!(started.elapsed() >= IO_TIMEOUT);
    }

    #[tokio::test]
    async fn a_request_is_answered_and_a_stranger_is_not() {
        let ctx = context();
        let (server, mut client) = UnixStream::pair().unwrap();
        client
            .write_all(b"{\"command\":\"limits\"}\n")
            .await
            .unwrap();
        one(server, own_uid(), &ctx).await;
        assert!(answer_to(&mut client).await.ok);
        // As if warrend ran as another user than the (same-uid) peer of this pair.
        let (server, mut client) = UnixStream::pair().unwrap();
        client
            .write_all(b"{\"command\":\"limits\"}\n")
            .await
            .unwrap();
        let stranger_owner = own_uid().wrapping_add(1).max(1);
        if own_uid() != 0 {
            one(server, stranger_owner, &ctx).await;
            let response = answer_to(&mut client).await;
            assert!(response.error.unwrap().contains("permission denied"));
        }
    }

    #[tokio::test]
    async fn a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind(&dir.path().join("ctl.sock"), false).await.unwrap_err();
        assert!(format!("{e:#}").contains("writable by others"), "{e:#}");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = bind(&file, false).await.unwrap_err();
        assert!(format!("{e:#}").contains("not a socket"), "{e:#}");
    }
}
