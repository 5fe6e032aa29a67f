//! The floor of connection setup: a plaintext two-process tunnel with the
//! shape of an SSH -L forward and none of its cost. A client process accepts
//! connections and carries them over one TCP connection to a server process,
//! which connects to the target; frames are a 9-byte header and the payload,
//! with no encryption, MAC, window or packet padding. Each connection costs
//! the hops SSH needs (accept, open, the server's connect, confirmation,
//! data both ways, EOF, close) and nothing else, so an SSH client and
//! server on tokio can set up a forwarded connection faster than this only
//! by spending less per hop than a bare socket task does: the setup target
//! is judged against it.
//!
//! With `eager`, the client sends the first data right behind the open
//! instead of waiting for the confirmation, which SSH cannot do (data needs
//! the recipient's channel number, which only the confirmation carries): a
//! second, lower floor for any protocol at all.
//!
//! Both ends run on one thread each, tasks on a `LocalSet`, like warren's
//! client. Queues are bounded: a channel whose local peer stops reading
//! holds up the reader of the shared connection, as a floor may (it only
//! ever carries the setup phase's 1-byte echoes).

use std::cell::RefCell;
use std::collections::HashMap;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::spawn_local;

use crate::procs::{Proc, Stream};

/// The arguments that turn this binary into one end of the mux.
pub const CLIENT_ARG: &str = "--mux-client";
pub const SERVER_ARG: &str = "--mux-server";
const READY: &str = "mux listening on port ";

const OPEN: u8 = 0;
const CONFIRM: u8 = 1;
const DATA: u8 = 2;
const EOF: u8 = 3;
const CLOSE: u8 = 4;
const HEADER: usize = 9;
/// Frames queued per channel and for the shared connection.
const QUEUE: usize = 64;
const CHUNK: usize = 16 * 1024;

struct Frame {
    id: u32,
    kind: u8,
    data: Vec<u8>,
}

type Out = mpsc::Sender<Frame>;
/// Where the shared connection's reader hands each channel's frames.
type Routes = Rc<RefCell<HashMap<u32, Out>>>;

/// A running mux: its two processes, and the port connections enter at.
pub struct Mux {
    pub port: u16,
    // The client first: fields drop in order.
    _client: Proc,
    _server: Proc,
}

impl Mux {
    /// Starts a server forwarding to 127.0.0.1:`target` and a client
    /// connected to it.
    pub fn start(target: u16, eager: bool) -> Result<Mux> {
        let (server_port, server) = spawn(SERVER_ARG, &[target.to_string()])?;
        let mode = if eager { "eager" } else { "confirmed" };
        let (port, client) = spawn(CLIENT_ARG, &[server_port.to_string(), mode.into()])
            .with_context(|| server.tail())?;
        Ok(Mux {
            port,
            _client: client,
            _server: server,
        })
    }
}

fn spawn(role: &str, args: &[String]) -> Result<(u16, Proc)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(role).args(args);
    let proc = Proc::spawn(cmd)?;
    let line = proc
        .wait_line(Stream::Stdout, Duration::from_secs(10), |l| {
            l.starts_with(READY)
        })
        .with_context(|| format!("{role} did not start"))?;
    let port = line.text[READY.len()..].trim().parse()?;
    Ok((port, proc))
}

/// The main of either end (`args` after the role argument); runs until the
/// benchmark that started it is gone.
pub fn main(role: &str, args: &[String]) -> Result<()> {
    let port = |i: usize| -> Result<u16> {
        args.get(i)
            .with_context(|| format!("{role}: missing argument {i}"))?
            .parse()
            .with_context(|| format!("{role}: bad port"))
    };
    let parent = std::os::unix::process::parent_id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{READY}{}", listener.local_addr()?.port());
        let serve = async {
            match role {
                CLIENT_ARG => {
                    let eager = args.get(1).map(String::as_str) == Some("eager");
                    client(listener, port(0)?, eager).await
                }
                SERVER_ARG => server(listener, port(0)?).await,
                _ => bail!("unknown mux role {role}"),
            }
        };
        let orphaned = async {
            while std::os::unix::process::parent_id() == parent {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        tokio::select! {
            r = serve => r,
            () = orphaned => Ok(()),
        }
    })
}

async fn client(listener: TcpListener, server: u16, eager: bool) -> Result<()> {
    let link = TcpStream::connect(("127.0.0.1", server)).await?;
    link.set_nodelay(true)?;
    let (r, w) = link.into_split();
    let out = start_writer(w);
    let routes = Routes::default();
    spawn_local(read_frames(r, routes.clone(), |_| {}));
    let mut next = 0u32;
    loop {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        next = next.wrapping_add(1);
        let id = next;
        let (tx, mut rx) = mpsc::channel(QUEUE);
        routes.borrow_mut().insert(id, tx);
        let (out, routes) = (out.clone(), routes.clone());
        spawn_local(async move {
            if out.send(frame(id, OPEN)).await.is_err() {
                return;
            }
            // Eager: the server queues the data until its connect is done,
            // and the confirmation is skipped by the relay like any frame
            // that is not data or an end.
            if eager || matches!(rx.recv().await, Some(Frame { kind: CONFIRM, .. })) {
                relay(s, id, &out, rx).await;
            }
            routes.borrow_mut().remove(&id);
        });
    }
}

async fn server(listener: TcpListener, target: u16) -> Result<()> {
    loop {
        let (link, _) = listener.accept().await?;
        link.set_nodelay(true)?;
        let (r, w) = link.into_split();
        let out = start_writer(w);
        let routes = Routes::default();
        let opened = routes.clone();
        spawn_local(read_frames(r, routes, move |id| {
            let (tx, rx) = mpsc::channel(QUEUE);
            opened.borrow_mut().insert(id, tx);
            let (out, routes) = (out.clone(), opened.clone());
            spawn_local(async move {
                match TcpStream::connect(("127.0.0.1", target)).await {
                    Ok(t) => {
                        let _ = t.set_nodelay(true);
                        if out.send(frame(id, CONFIRM)).await.is_ok() {
                            relay(t, id, &out, rx).await;
                        }
                    }
                    Err(_) => {
                        let _ = out.send(frame(id, CLOSE)).await;
                    }
                }
                routes.borrow_mut().remove(&id);
            });
        }));
    }
}

fn frame(id: u32, kind: u8) -> Frame {
    Frame {
        id,
        kind,
        data: Vec::new(),
    }
}

/// Writes queued frames to the shared connection, as many per write as are
/// waiting (one system call for a burst, as an SSH implementation would).
fn start_writer(mut w: OwnedWriteHalf) -> Out {
    let (tx, mut rx) = mpsc::channel::<Frame>(QUEUE);
    spawn_local(async move {
        let mut buf = Vec::with_capacity(CHUNK + HEADER);
        while let Some(mut f) = rx.recv().await {
            loop {
                buf.extend_from_slice(&f.id.to_be_bytes());
                buf.push(f.kind);
                buf.extend_from_slice(&(f.data.len() as u32).to_be_bytes());
                buf.extend_from_slice(&f.data);
                match rx.try_recv() {
                    Ok(next) if buf.len() < 4 * CHUNK => f = next,
                    Ok(next) => {
                        if w.write_all(&buf).await.is_err() {
                            return;
                        }
                        buf.clear();
                        f = next;
                    }
                    Err(_) => break,
                }
            }
            if w.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    });
    tx
}

/// Reads frames from the shared connection and hands each to its channel;
/// an open goes to `on_open`.
async fn read_frames(r: OwnedReadHalf, routes: Routes, on_open: impl Fn(u32)) {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let mut h = [0u8; HEADER];
    while r.read_exact(&mut h).await.is_ok() {
        let id = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
        if len > CHUNK {
            return;
        }
        let mut data = vec![0u8; len];
        if r.read_exact(&mut data).await.is_err() {
            return;
        }
        if h[4] == OPEN {
            on_open(id);
            continue;
        }
        let tx = routes.borrow().get(&id).cloned();
        if let Some(tx) = tx {
            let _ = tx
                .send(Frame {
                    id,
                    kind: h[4],
                    data,
                })
                .await;
        }
    }
}

/// Copies between a local stream and channel `id` until both directions
/// ended (half-close kept), then closes the channel.
async fn relay(s: TcpStream, id: u32, out: &Out, mut rx: mpsc::Receiver<Frame>) {
    let (mut lr, mut lw) = s.into_split();
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match lr.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = out.send(frame(id, EOF)).await;
                    return;
                }
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    if out
                        .send(Frame {
                            id,
                            kind: DATA,
                            data,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let down = async {
        while let Some(f) = rx.recv().await {
            match f.kind {
                DATA if lw.write_all(&f.data).await.is_err() => return,
                EOF | CLOSE => {
                    let _ = lw.shutdown().await;
                    return;
                }
                _ => {}
            }
        }
    };
    tokio::join!(up, down);
    let _ = out.send(frame(id, CLOSE)).await;
}
