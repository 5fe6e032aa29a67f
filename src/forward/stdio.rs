//! `-W`: this process's stdin and stdout become one forwarded connection, so warren can be
//! another SSH client's ProxyCommand or a pipe endpoint in a script.

use russh::client::Msg;
use russh::{Channel, ChannelMsg};
use std::os::fd::AsRawFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::debug;

/// Pumps `input` into the channel and the channel into `output` until the server closes
/// the channel. EOF travels both ways: our input's EOF becomes CHANNEL_EOF, and the
/// server's EOF closes `output` (via `close_output`) so a reader sees end-of-file while
/// we may still be sending.
pub async fn pump<I, O>(
    channel: Channel<Msg>,
    mut input: I,
    mut output: O,
    close_output: impl FnOnce(),
) -> std::io::Result<()>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let (mut reader, writer) = channel.split();
    let up = tokio::spawn(async move {
        let mut w = writer.make_writer();
        let copied = tokio::io::copy(&mut input, &mut w).await;
        let _ = w.shutdown().await;
        debug!("stdin done: {copied:?}");
    });
    let mut close_output = Some(close_output);
    let result = loop {
        match reader.wait().await {
            Some(ChannelMsg::Data { data }) => {
                if let Err(e) = async {
                    output.write_all(&data).await?;
                    output.flush().await
                }
                .await
                {
                    break Err(e);
                }
            }
            Some(ChannelMsg::Eof) => {
                let _ = output.flush().await;
                if let Some(close) = close_output.take() {
                    close();
                }
            }
            Some(ChannelMsg::Close) | None => break Ok(()),
            Some(_) => {}
        }
    };
    up.abort();
    result
}

/// Ends our stdout now so whoever reads it sees EOF while we keep running: /dev/null is
/// put in place of fd 1 (dropping tokio's handle would leave the pipe open, and plainly
/// closing fd 1 would let the next socket we open become "stdout").
pub fn close_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        replace_fd(&null, std::io::stdout().as_raw_fd());
    }
}

/// Makes `fd` refer to `file` (dup2), atomically, so no other thread ever sees `fd` free.
pub fn replace_fd(file: &std::fs::File, fd: std::os::fd::RawFd) {
    #[allow(unsafe_code)]
    // SAFETY: dup2 on two descriptors we own; `file` stays open for the call, and the
    // replacement is atomic, which is the point of using dup2 over close+open.
    unsafe {
        libc::dup2(file.as_raw_fd(), fd);
    }
}
