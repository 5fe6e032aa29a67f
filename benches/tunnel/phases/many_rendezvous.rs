//! The many phase's second run: the 100,000 connections through one warrend
//! where no process on the path needs a descriptor per connection, so this machine's
//! descriptor limit (20,000 per process, not raisable without CAP_SYS_RESOURCE) does not
//! cut the count.
//!
//! Both ends are sessions of Warren's own engine in this process. Publishers publish
//! rendezvous names (`-R bench-manyP:80`) and echo on every channel warrend brings them;
//! reachers open a `direct-tcpip` channel to a name per connection (what `warren -L` or
//! `-D` opens for each local connection), so warrend bridges each connection between two
//! sessions: a channel in, a channel out, the relay between them, its audit records,
//! and no socket. Measured: that every connection echoes (once while opening, once all
//! together), warrend's RSS per connection and its descriptors, and, once the reachers
//! close every channel, how long until every bridged channel has reached the publishers
//! and how much of warrend's memory is back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use warren_ssh::driver::{ChannelStream, Events, Handle, Incoming};
use warren_ssh::proto::{ChannelKind, GlobalRequest};
use warren_ssh::ssh_key::PrivateKey;

use super::Bench;
use crate::cluster_rig::{NAME_PORT, NAME_PREFIX};
use crate::engine_session::{answer_keepalives, client_config, login};
use crate::opts::{Pair, ServerKind};
use crate::procs::Usage;
use crate::report::Better;
use crate::scenarios::{SMALL_TIMEOUT, gather};
use crate::servers::{Server, warrend_host_public};

/// Sessions publishing a name each (connection i reaches name i % PUBLISHERS).
const PUBLISHERS: usize = 4;
/// Sessions opening the connections (connection i on session i % REACHERS).
const REACHERS: usize = 8;
/// Connections being opened at once, over all reachers.
const OPENING_AT_ONCE: usize = 256;
/// How long the publishers may take to see every channel closed, after the reachers
/// closed theirs.
const CLOSE_WITHIN: Duration = Duration::from_secs(120);
/// When warrend's memory is read after the channels close and after the sessions end:
/// the bound for freeing what a session held.
const SETTLE: Duration = Duration::from_secs(2);

const KIB_PER_MIB: f64 = 1024.0;

struct RendezvousRun {
    wanted: usize,
    ok: usize,
    failures: BTreeMap<String, usize>,
    open_secs: f64,
    before: Usage,
    during: Usage,
    /// [`SETTLE`] after the publishers saw every channel closed.
    after: Usage,
    /// [`SETTLE`] after every session logged out.
    gone: Usage,
    /// Before, all open, after, gone.
    fds: [usize; 4],
    /// Reachers closed everything → the publishers saw every channel end.
    closed_secs: Option<f64>,
}

/// Channels the publishers hold now, and a wake-up whenever one ends.
#[derive(Default)]
struct Held {
    open: AtomicUsize,
    changed: Notify,
}

impl Bench {
    pub(super) fn many_rendezvous(&mut self, n: usize) {
        let section = format!(
            "Many through a rendezvous: {n} connections bridged by warrend between {REACHERS} \
             reaching and {PUBLISHERS} publishing sessions (no descriptor per connection)"
        );
        let pair = Pair::WarrenWarrend;
        let run = match self.rendezvous_run(n) {
            Ok(run) => run,
            Err(e) => {
                self.error(pair, &format!("many through a rendezvous, {n}"), &e);
                return;
            }
        };
        let r = &mut self.report;
        let mib = |k: u64| k as f64 / KIB_PER_MIB;
        let per_conn =
            (run.during.rss_kib as f64 - run.before.rss_kib as f64) / run.ok.max(1) as f64;
        r.text(
            &section,
            "connections that worked",
            pair,
            format!("{} / {n}", run.ok),
        );
        r.num(
            &section,
            "time to open all, s",
            Better::Lower,
            pair,
            Some(run.open_secs),
        );
        r.num(
            &section,
            "warrend RSS before, MiB",
            Better::Lower,
            pair,
            Some(mib(run.before.rss_kib)),
        );
        r.num(
            &section,
            "warrend RSS with all open, MiB",
            Better::Lower,
            pair,
            Some(mib(run.during.rss_kib)),
        );
        r.num(
            &section,
            "warrend RSS per connection, KiB",
            Better::Lower,
            pair,
            Some(per_conn),
        );
        r.num(
            &section,
            "warrend RSS 2 s after all closed, MiB",
            Better::Lower,
            pair,
            Some(mib(run.after.rss_kib)),
        );
        r.num(
            &section,
            "warrend RSS 2 s after logout, MiB",
            Better::Lower,
            pair,
            Some(mib(run.gone.rss_kib)),
        );
        r.text(
            &section,
            "warrend descriptors: before / all open / closed / logged out",
            pair,
            format!(
                "{} / {} / {} / {}",
                run.fds[0], run.fds[1], run.fds[2], run.fds[3]
            ),
        );
        r.num(
            &section,
            "all closed at the publishers after, s",
            Better::Lower,
            pair,
            run.closed_secs,
        );
        if run.ok < run.wanted || run.closed_secs.is_none() {
            self.report.errors.push(format!(
                "many through a rendezvous: {} of {n} connections worked (failures: {:?}); \
                 every channel closed at the publishers: {}",
                run.ok,
                run.failures,
                run.closed_secs
                    .map_or("no".into(), |s| format!("after {s:.2} s")),
            ));
        }
        self.report.notes.push(format!(
            "Many through a rendezvous: {PUBLISHERS} engine sessions publish a name each and echo; \
             {REACHERS} open one direct-tcpip channel to a name per connection, echo 4 bytes, hold \
             it, then all echo once more together. warrend holds two channels and a relay per \
             connection but no socket, which is what lets one machine with a 20,000 descriptor \
             limit put {n} through it; RSS per connection is (RSS with all open − RSS before) / \
             connections. The kernel's socket memory of a TCP target is not in it (the -D run \
             above has that path)."
        ));
    }

    fn rendezvous_run(&mut self, n: usize) -> Result<RendezvousRun> {
        let server = Server::start(&self.env, ServerKind::Warrend, &self.targets.echo_ports)?;
        let host = warrend_host_public(&self.env)?;
        let key =
            Arc::new(PrivateKey::read_openssh_file(&self.env.key).context("read the run's key")?);
        let (user, port, pid) = (self.env.user.clone(), server.port, server.pid());
        let held = Arc::new(Held::default());
        let run = self.rt.block_on(async {
            let mut reachers = Vec::new();
            for _ in 0..REACHERS {
                let config = client_config(n.div_ceil(REACHERS));
                let (h, events) = login(port, config, &key, &user, &host).await?;
                answer_keepalives(&h, events);
                reachers.push(h);
            }
            let mut publishers = Vec::new();
            for p in 0..PUBLISHERS {
                let config = client_config(n.div_ceil(PUBLISHERS));
                let (h, events) = login(port, config, &key, &user, &host).await?;
                let name = format!("{NAME_PREFIX}many{p}");
                tokio::spawn(echo_every_channel(h.clone(), events, held.clone()));
                let request = GlobalRequest::TcpipForward {
                    address: name.clone(),
                    port: u32::from(NAME_PORT),
                };
                let (ok, _) = h.global_request(request).await?;
                if !ok {
                    bail!("publishing {name} was refused\n{}", server.tail());
                }
                publishers.push(h);
            }
            let before = Usage::of_tree(pid);
            let fds0 = descriptors(pid);

            let start = Instant::now();
            let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
            let mut set = JoinSet::new();
            for i in 0..n {
                let (gate, h) = (gate.clone(), reachers[i % REACHERS].clone());
                set.spawn(async move {
                    let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                    let kind = ChannelKind::DirectTcpip {
                        host: format!("{NAME_PREFIX}many{}", i % PUBLISHERS),
                        port: u32::from(NAME_PORT),
                        originator: "127.0.0.1".into(),
                        originator_port: 1024 + (i % 60_000) as u32,
                    };
                    let mut s = tokio::time::timeout(SMALL_TIMEOUT, h.open(kind))
                        .await
                        .map_err(|_| "open: timeout".to_string())?
                        .map_err(|e| format!("open: {e}"))?;
                    echo(&mut s, i as u32)
                        .await
                        .map_err(|e| format!("first echo: {e}"))?;
                    Ok::<ChannelStream, String>(s)
                });
            }
            let mut failures = BTreeMap::new();
            let open = gather(set, &mut failures).await;
            let open_secs = start.elapsed().as_secs_f64();

            // All together: every held connection still carries data.
            let mut set = JoinSet::new();
            for (i, mut s) in open.into_iter().enumerate() {
                set.spawn(async move {
                    echo(&mut s, !(i as u32))
                        .await
                        .map_err(|e| format!("second echo: {e}"))?;
                    Ok::<ChannelStream, String>(s)
                });
            }
            let all = gather(set, &mut failures).await;
            let during = Usage::of_tree(pid);
            let fds1 = descriptors(pid);
            let ok = all.len();

            let closing = Instant::now();
            drop(all);
            let closed_secs = tokio::time::timeout(CLOSE_WITHIN, async {
                loop {
                    let changed = held.changed.notified();
                    if held.open.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    changed.await;
                }
            })
            .await
            .ok()
            .map(|()| closing.elapsed().as_secs_f64());
            // What warrend keeps once its channels are gone but the sessions stay, at the
            // issue's mark (freed within 2 s), and once every session has logged out too.
            tokio::time::sleep(SETTLE).await;
            let after = Usage::of_tree(pid);
            let fds2 = descriptors(pid);
            let leaving = Instant::now();
            for h in reachers.iter().chain(&publishers) {
                h.disconnect("benchmark done");
            }
            tokio::time::sleep_until((leaving + SETTLE).into()).await;
            let gone = Usage::of_tree(pid);
            let fds3 = descriptors(pid);
            anyhow::Ok(RendezvousRun {
                wanted: n,
                ok,
                failures,
                open_secs,
                before,
                during,
                after,
                gone,
                fds: [fds0, fds1, fds2, fds3],
                closed_secs,
            })
        })?;
        drop(server);
        Ok(run)
    }
}

/// Accepts every channel warrend brings to a publisher and echoes on it until the
/// reacher closes it; answers keepalives.
async fn echo_every_channel(h: Handle, mut events: Events, held: Arc<Held>) {
    while let Some(ev) = events.recv().await {
        match ev {
            Incoming::ChannelOpen {
                id,
                kind: ChannelKind::ForwardedTcpip { .. },
            } => {
                let mut s = h.accept(id);
                held.open.fetch_add(1, Ordering::AcqRel);
                let held = held.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                            break;
                        }
                    }
                    drop(s);
                    held.open.fetch_sub(1, Ordering::AcqRel);
                    held.changed.notify_waiters();
                });
            }
            Incoming::ChannelOpen { id, .. } => h.reject(id, 1, "not expected"),
            Incoming::GlobalRequest {
                request_id,
                want_reply: true,
                ..
            } => h.global_reply(request_id, false, &[]),
            _ => {}
        }
    }
}

/// Sends `tag` and expects the same four bytes back.
async fn echo(s: &mut ChannelStream, tag: u32) -> Result<()> {
    tokio::time::timeout(SMALL_TIMEOUT, async {
        s.write_all(&tag.to_be_bytes()).await.context("write")?;
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.context("read")?;
        if back != tag.to_be_bytes() {
            bail!("echoed {back:?} for {tag}");
        }
        Ok(())
    })
    .await
    .context("timed out")?
}

/// Descriptors `pid` holds.
fn descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
