//! The measurements, each on a rig (or the direct route) that is already up.

pub mod bulk;
pub mod concurrency;
pub mod consumer;
pub mod latency;
pub mod setup;
pub mod slow_reader;
pub mod startup;
pub mod wan;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Deadline for one small exchange (an echo, a connect).
pub const SMALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for every task of `set`: what worked is returned, failures are counted by kind
/// (never fatal: running out of descriptors or channels is a result).
pub async fn gather<T: 'static>(
    mut set: tokio::task::JoinSet<Result<T, String>>,
    failures: &mut BTreeMap<String, usize>,
) -> Vec<T> {
    let mut done = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(t)) => done.push(t),
            Ok(Err(e)) => *failures.entry(e).or_insert(0) += 1,
            Err(e) => *failures.entry(format!("task: {e}")).or_insert(0) += 1,
        }
    }
    done
}

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
