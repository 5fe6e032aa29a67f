//! How the benchmark opens a connection to a target: directly, through a
//! -L port, through a -D port (SOCKS5 CONNECT), or through the port a
//! server listens on for -R.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::targets::Target;

/// Where connections to each target enter.
#[derive(Clone, Debug)]
pub enum Route {
    /// No tunnel: the target port itself.
    Direct(HashMap<Target, u16>),
    /// One entry port per target (-L on the client, or -R on the server).
    Ports(HashMap<Target, u16>),
    /// A SOCKS5 proxy port; the target port is asked for in the handshake.
    Socks {
        proxy: u16,
        targets: HashMap<Target, u16>,
    },
}

impl Route {
    /// Opens a connection to `target` and returns it ready for data.
    pub async fn dial(&self, target: Target) -> io::Result<TcpStream> {
        let (port, socks_target) = match self {
            Route::Direct(m) | Route::Ports(m) => (lookup(m, target)?, None),
            Route::Socks { proxy, targets } => (*proxy, Some(lookup(targets, target)?)),
        };
        let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        s.set_nodelay(true)?;
        match socks_target {
            Some(t) => socks5_connect(s, t).await,
            None => Ok(s),
        }
    }
}

/// Source addresses the many phase spreads its connections over (127.0.0.2 and
/// up): each gives one destination about 28,000 ephemeral ports.
pub const SOURCES: usize = 8;

impl Route {
    /// Connection `i` of many to the echo helper, from loopback source address
    /// 127.0.0.(2 + i % [`SOURCES`]) and, where the route lets the benchmark choose the
    /// target (direct, SOCKS), to echo port `i % ports.len()`: 100,000 connections fit
    /// in the ephemeral port ranges on every hop.
    pub async fn dial_spread(&self, i: usize, echo_ports: &[u16]) -> io::Result<TcpStream> {
        let target = echo_ports
            .get(i % echo_ports.len().max(1))
            .copied()
            .ok_or_else(|| io::Error::other("no echo ports"))?;
        let (port, socks_target) = match self {
            Route::Direct(_) => (target, None),
            Route::Ports(m) => (lookup(m, Target::EchoConc)?, None),
            Route::Socks { proxy, .. } => (*proxy, Some(target)),
        };
        let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES) as u8);
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        let s = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await?;
        s.set_nodelay(true)?;
        match socks_target {
            Some(t) => socks5_connect(s, t).await,
            None => Ok(s),
        }
    }
}

fn lookup(m: &HashMap<Target, u16>, t: Target) -> io::Result<u16> {
    m.get(&t)
        .copied()
        .ok_or_else(|| io::Error::other(format!("no route to {t:?}")))
}

/// SOCKS5 without authentication, CONNECT to 127.0.0.1:`port` (RFC 1928).
async fn socks5_connect(mut s: TcpStream, port: u16) -> io::Result<TcpStream> {
    s.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    if choice != [5, 0] {
        return Err(io::Error::other(format!(
            "SOCKS5 method refused: {choice:?}"
        )));
    }
    let [hi, lo] = port.to_be_bytes();
    s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, hi, lo]).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != 5 || head[1] != 0 {
        return Err(io::Error::other(format!(
            "SOCKS5 CONNECT failed: reply {}",
            head[1]
        )));
    }
    let addr_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => s.read_u8().await? as usize,
        t => return Err(io::Error::other(format!("SOCKS5 reply address type {t}"))),
    };
    let mut rest = vec![0u8; addr_len + 2];
    s.read_exact(&mut rest).await?;
    Ok(s)
}
