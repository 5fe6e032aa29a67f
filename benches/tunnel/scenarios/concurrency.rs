//! Many concurrent connections through one SSH session: each is opened and
//! echoes one byte, all are held open, then all echo once more at the same
//! time (every channel alive at once), while client and server memory is
//! read. Failures are counted by kind, never fatal: running out of
//! descriptors or channels is a result.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{SMALL_TIMEOUT, echo_once, gather};
use crate::procs::Usage;
use crate::rig::Rig;
use crate::targets::Target;

/// Connections being opened at once. Opening all 10,000 at the same instant
/// would only measure SYN retransmits of the client's listen backlog.
const OPENING_AT_ONCE: usize = 100;

#[derive(Clone, Debug, Default)]
pub struct ConcurrencyRun {
    pub wanted: usize,
    /// Connections that echoed both times.
    pub ok: usize,
    /// Seconds to open (and echo on) all of them.
    pub open_secs: f64,
    /// Failure kind -> count.
    pub failures: BTreeMap<String, usize>,
    pub client: Option<Held>,
    pub server: Option<Held>,
}

/// Memory of one side.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held {
    /// Peak RSS of the process tree, KiB.
    pub peak_kib: u64,
    /// (RSS with all connections open - RSS before) / connections, KiB.
    pub per_conn_kib: f64,
    /// RSS [`AFTER_CLOSE`] after every connection was closed (the many phase only), KiB.
    pub after_kib: Option<u64>,
}

/// When the many phase reads memory again after closing its connections.
pub const AFTER_CLOSE: std::time::Duration = std::time::Duration::from_secs(3);

/// `spread`: the echo helper's ports, to spread connections over source addresses and
/// (where the route allows) target ports, as the many phase must; `None` opens every
/// connection the plain way, as the concurrency phase always has.
pub async fn run(rig: &Rig, wanted: usize, spread: Option<Arc<Vec<u16>>>) -> ConcurrencyRun {
    let (c0, s0) = rig.usage();
    let mut failures = BTreeMap::new();
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut set = JoinSet::new();
    for i in 0..wanted {
        let (gate, route, spread) = (gate.clone(), rig.route.clone(), spread.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let dial = async {
                match &spread {
                    Some(ports) => route.dial_spread(i, ports).await,
                    None => route.dial(Target::EchoConc).await,
                }
            };
            let mut s = tokio::time::timeout(SMALL_TIMEOUT, dial)
                .await
                .map_err(|_| "connect timeout".to_string())?
                .map_err(|e| format!("connect: {}", e.kind()))?;
            echo_once(&mut s, &[i as u8], &mut [0u8])
                .await
                .map_err(|e| kind("first echo", &e))?;
            Ok::<TcpStream, String>(s)
        });
    }
    let open = gather(set, &mut failures).await;
    let open_secs = start.elapsed().as_secs_f64();

    // All at once: every held channel must still carry data.
    let mut set = JoinSet::new();
    for (i, mut s) in open.into_iter().enumerate() {
        set.spawn(async move {
            echo_once(&mut s, &[i as u8 ^ 0xFF], &mut [0u8])
                .await
                .map_err(|e| kind("second echo", &e))?;
            Ok::<TcpStream, String>(s)
        });
    }
    let held = gather(set, &mut failures).await;
    let (c1, s1) = rig.usage();
    let ok = held.len();
    drop(held);
    // The many phase also reads what is left once the burst is over (the connections
    // close on both sides within a second or so; the processes give memory back).
    let (c2, s2) = match spread {
        Some(_) => {
            tokio::time::sleep(AFTER_CLOSE).await;
            rig.usage()
        }
        None => (None, None),
    };
    let side = |before: Option<Usage>, during: Option<Usage>, after: Option<Usage>| {
        let (b, d) = (before?, during?);
        Some(Held {
            peak_kib: d.hwm_kib,
            per_conn_kib: (d.rss_kib as f64 - b.rss_kib as f64) / ok.max(1) as f64,
            after_kib: after.map(|a| a.rss_kib),
        })
    };
    ConcurrencyRun {
        wanted,
        ok,
        open_secs,
        failures,
        client: side(c0, c1, c2),
        server: side(s0, s1, s2),
    }
}

/// A short, countable name for a failure.
fn kind(stage: &str, e: &anyhow::Error) -> String {
    let root = e.root_cause().to_string();
    let short = if root.contains("early eof") || root.contains("UnexpectedEof") {
        "closed by the tunnel".to_string()
    } else if root.contains("timed out") || root.contains("deadline") {
        "timeout".to_string()
    } else {
        root
    };
    format!("{stage}: {short}")
}
