//! A server that goes away and comes back, seen from the client: a relay on a fixed
//! 127.0.0.1 port in front of the real server. `down` closes every relayed connection and
//! stops listening (new connects are refused, as with a stopped server); `up` listens on the
//! same port again. The client's reconnect is then measured from the instant `up` returns.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::{JoinHandle, JoinSet};

pub struct Outage {
    rt: Handle,
    port: u16,
    upstream: u16,
    accept: Option<JoinHandle<()>>,
}

impl Outage {
    /// Listens on an ephemeral 127.0.0.1 port, relaying to 127.0.0.1:`upstream`.
    pub fn start(rt: &Handle, upstream: u16) -> Result<Outage> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("outage relay: bind")?;
        let port = listener.local_addr()?.port();
        let mut o = Outage {
            rt: rt.clone(),
            port,
            upstream,
            accept: None,
        };
        o.serve(listener)?;
        Ok(o)
    }

    /// Where clients connect instead of the server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server "dies": relayed connections close, new ones are refused.
    pub fn down(&mut self) {
        if let Some(accept) = self.accept.take() {
            // Dropping the accept task drops the listener and its JoinSet, which aborts
            // every connection's task and so closes both of its sockets.
            accept.abort();
            let _ = self.rt.block_on(accept);
        }
    }

    /// The server is back, on the same port.
    pub fn up(&mut self) -> Result<()> {
        // std's bind sets SO_REUSEADDR, so the port is free again at once even with the
        // closed connections' sockets in TIME_WAIT.
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
            .with_context(|| format!("outage relay: bind 127.0.0.1:{} again", self.port))?;
        self.serve(listener)
    }

    fn serve(&mut self, listener: std::net::TcpListener) -> Result<()> {
        listener.set_nonblocking(true)?;
        let listener = {
            let _in_runtime = self.rt.enter();
            TcpListener::from_std(listener)?
        };
        let upstream = self.upstream;
        self.accept = Some(self.rt.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((mut down, _)) = accepted {
                            conns.spawn(async move {
                                let addr = SocketAddr::from(([127, 0, 0, 1], upstream));
                                if let Ok(mut up) = TcpStream::connect(addr).await {
                                    let _ = down.set_nodelay(true);
                                    let _ = up.set_nodelay(true);
                                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                                }
                            });
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
        Ok(())
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}
