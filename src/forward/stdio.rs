//! `-W`: this process's stdin and stdout become one forwarded connection, so warren can be
//! another SSH client's ProxyCommand or a pipe endpoint in a script.

use std::os::fd::AsRawFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;
use warren_ssh::driver::ChannelStream;

/// Pumps `input` into the channel and the channel into `output` until the server closes
/// the channel. EOF travels both ways: our input's EOF becomes CHANNEL_EOF, and the
/// server's EOF closes `output` (via `close_output`) so a reader sees end-of-file while
/// we may still be sending. The channel is read only as `output` takes the data, so a
/// slow reader of our stdout holds back the server, not our memory.
pub async fn pump<I, O>(
    channel: ChannelStream,
    mut input: I,
    mut output: O,
    close_output: impl FnOnce(),
) -> std::io::Result<()>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let closed = channel.handle().channel_closed(channel.id());
    let (mut reader, mut writer) = tokio::io::split(channel);
    let up = tokio::spawn(async move {
        let copied = tokio::io::copy(&mut input, &mut writer).await;
        let _ = writer.shutdown().await;
        debug!("stdin done: {copied:?}");
        // The write half keeps the channel open until the server closes it.
        writer
    });
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        match reader.read(&mut buf).await {
            Ok(0) => {
                let _ = output.flush().await;
                close_output();
                break Ok(());
            }
            Ok(n) => {
                if let Err(e) = async {
                    output.write_all(&buf[..n]).await?;
                    output.flush().await
                }
                .await
                {
                    break Err(e);
                }
            }
            Err(e) => break Err(e),
        }
    };
    if result.is_ok() {
        // The server's EOF is not the end: our input may still be flowing to it.
        closed.await;
    }
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
