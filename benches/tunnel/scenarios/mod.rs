//! The measurements, each on a rig (or the direct route) that is already up.

pub mod bulk;
pub mod concurrency;
pub mod consumer;
pub mod latency;
pub mod setup;
pub mod slow_reader;
pub mod startup;
pub mod wan;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Deadline for one small exchange (an echo, a connect).
pub const SMALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `msg` and expects it back, within [`SMALL_TIMEOUT`].
pub async fn echo_once(s: &mut TcpStream, msg: &[u8], back: &mut [u8]) -> Result<()> {
    tokio::time::timeout(SMALL_TIMEOUT, async {
        s.write_all(msg).await.context("write")?;
        s.read_exact(&mut back[..msg.len()])
            .await
            .context("read echo")?;
        if back[..msg.len()] != *msg {
            bail!("echo returned different bytes");
        }
        Ok(())
    })
    .await
    .context("echo timed out")?
}
