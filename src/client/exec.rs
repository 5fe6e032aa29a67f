//! Running a remote command the way `ssh host cmd` does: no TTY, stdout and stderr
//! streamed, and our exit status is the command's.

use super::error::ClientError;
use super::session::Session;
use russh::ChannelMsg;
use tokio::io::AsyncWriteExt;
use tracing::debug;

/// Runs `command` and returns its exit status. stdin is forwarded unless `null_stdin`
/// (`-n`), so `warren host sort < file` works.
pub async fn run(session: &Session, command: &str, null_stdin: bool) -> Result<u8, ClientError> {
    let lost = |reason: String| ClientError::Lost {
        host: session.destination.clone(),
        reason,
    };
    let channel = session.exec(command).await?;
    let (mut reader, writer) = channel.split();
    let up = if null_stdin {
        let _ = writer.eof().await;
        None
    } else {
        Some(tokio::spawn(async move {
            let mut w = writer.make_writer();
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
            let _ = w.shutdown().await;
        }))
    };
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut status = None;
    while let Some(msg) = reader.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                stdout
                    .write_all(&data)
                    .await
                    .map_err(|e| lost(format!("writing stdout: {e}")))?;
                stdout
                    .flush()
                    .await
                    .map_err(|e| lost(format!("writing stdout: {e}")))?;
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let _ = stderr.write_all(&data).await;
                let _ = stderr.flush().await;
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status.min(255) as u8),
            ChannelMsg::ExitSignal {
                signal_name,
                error_message,
                ..
            } => {
                eprintln!(
                    "warren: remote command killed by signal {signal_name:?} {error_message}"
                );
                status = Some(255);
            }
            ChannelMsg::Failure => {
                return Err(lost(format!("the server refused to run '{command}'")));
            }
            ChannelMsg::Close => break,
            other => debug!("exec channel: {other:?}"),
        }
    }
    if let Some(up) = up {
        up.abort();
    }
    status.ok_or_else(|| lost("the remote command ended without an exit status".into()))
}
