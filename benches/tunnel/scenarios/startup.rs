//! Time from spawning the client to its first forward being ready (its own
//! log line: ssh's "Local forwarding listening", warren's "ready:") and to
//! the first 1-byte echo through it, plus the negotiated cipher.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use super::echo_once;
use crate::clients::{Client, ClientOptions, Forward};
use crate::env::Env;
use crate::opts::ClientKind;
use crate::route::Route;
use crate::servers::Server;
use crate::targets::Target;

#[derive(Clone, Debug, Default)]
pub struct StartupRun {
    pub ready_ms: f64,
    pub first_echo_ms: f64,
    pub cipher: Option<String>,
    pub kex: Option<String>,
}

/// Starts a verbose client with one -L to the echo server, measures, stops it.
pub fn run(
    rt: &Runtime,
    env: &Env,
    kind: ClientKind,
    server: &Server,
    echo_port: u16,
) -> Result<StartupRun> {
    let verbose = ClientOptions {
        verbose: true,
        ..ClientOptions::default()
    };
    let forwards = [Forward::Local(echo_port)];
    let client = Client::start(env, kind, server.port, &forwards, verbose)?;
    let ready_ms = ms(client.ready.at.duration_since(client.started()));
    let route = Route::Ports(HashMap::from([(Target::Echo, client.ports[0])]));
    rt.block_on(first_echo(&route))
        .with_context(|| format!("first echo\n{}", client.tail()))?;
    let first_echo_ms = ms(Instant::now().duration_since(client.started()));
    Ok(StartupRun {
        ready_ms,
        first_echo_ms,
        cipher: client.cipher(),
        kex: client.kex(),
    })
}

/// Connects and echoes one byte, retrying refused connects: ssh prints its
/// "listening" line just before it binds the port.
async fn first_echo(route: &Route) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match route.dial(Target::Echo).await {
            Ok(s) => break s,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e).context("connect"),
        }
    };
    echo_once(&mut s, b"1", &mut [0u8]).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
