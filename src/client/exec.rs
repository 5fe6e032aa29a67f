//! Running a remote command the way `ssh host cmd` does: no TTY, stdout and stderr
//! streamed, and our exit status is the command's.

use super::error::ClientError;
use super::handler::ExecEvent;
use super::session::Session;
use crate::forward::stdio;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;

/// Runs `command` (a subsystem name with `-s`) and returns its exit status. stdin is
/// forwarded unless `null_stdin` (`-n`), so `warren host sort < file` works.
pub async fn run(
    session: &Session,
    command: &str,
    subsystem: bool,
    null_stdin: bool,
) -> Result<u8, ClientError> {
    let lost = |reason: String| ClientError::Lost {
        host: session.destination.clone(),
        reason,
    };
    let (channel, events) = session.exec(command, subsystem).await?;
    let id = channel.id();
    let status = tokio::spawn(status_and_stderr(events));
    let input: Box<dyn AsyncRead + Unpin + Send> = match null_stdin {
        true => Box::new(tokio::io::empty()),
        false => Box::new(tokio::io::stdin()),
    };
    // Returns once the channel is closed, which is after the exit status was sent.
    let pumped = stdio::pump(channel, input, tokio::io::stdout(), || {}).await;
    session.exec_finished(id);
    let status = status.await.ok().flatten();
    pumped.map_err(|e| lost(format!("remote command: {e}")))?;
    status.ok_or_else(|| lost("the remote command ended without an exit status".into()))
}

/// Copies the command's stderr to ours and returns its exit status (255 when a signal
/// killed it), once no more events will come.
async fn status_and_stderr(mut events: mpsc::UnboundedReceiver<ExecEvent>) -> Option<u8> {
    let mut stderr = tokio::io::stderr();
    let mut status = None;
    while let Some(ev) = events.recv().await {
        match ev {
            ExecEvent::Stderr(data) => {
                let _ = stderr.write_all(&data).await;
                let _ = stderr.flush().await;
            }
            ExecEvent::ExitStatus(n) => status = Some(n.min(255) as u8),
            ExecEvent::ExitSignal { signal, message } => {
                eprintln!("warren: remote command killed by signal {signal:?} {message}");
                status = Some(255);
            }
        }
    }
    status
}
