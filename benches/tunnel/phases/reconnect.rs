//! The reconnect phase: how soon a tunnel works again once its server is back.
//!
//! The client reaches its server through an [`Outage`] relay. Each run takes the server
//! away for `reconnect_outage` (connections closed, connects refused, as a restarted host
//! looks) from a freshly started client, brings it back on the same port, and measures
//! from that instant to the first
//! byte echoed through the client's -L port (a connection retried every 5 ms until one
//! echoes). ssh runs under `autossh -M 0`, as people keep ssh tunnels up; warren
//! reconnects by itself, with its -L port held open throughout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::Bench;
use crate::clients::{Client, ClientOptions, Forward};
use crate::opts::{ClientKind, Pair};
use crate::outage::Outage;
use crate::report::Better;
use crate::servers::Server;
use crate::stats::median;
use crate::targets::Target;

/// How long one run waits for the tunnel to carry a byte again.
const GIVE_UP: Duration = Duration::from_secs(60);

impl Bench {
    pub fn reconnect(&mut self) {
        let section = format!(
            "Reconnect: server back after a {:.1} s outage → first echo through the -L port, s \
             (median of {}; ssh under autossh -M 0)",
            self.opts.reconnect_outage.as_secs_f64(),
            self.opts.reconnect_reps
        );
        let autossh = std::process::Command::new("autossh")
            .arg("-V")
            .output()
            .is_ok();
        let echo = self.targets.port(Target::Echo);
        for pair in self.tunnel_pairs() {
            if pair.client() == Some(ClientKind::Ssh) && !autossh {
                self.report.errors.push(format!(
                    "{} reconnect: autossh is not installed (apt-get install autossh)",
                    pair.name()
                ));
                continue;
            }
            match self.reconnect_pair(pair, echo) {
                Ok(times) => {
                    let r = &mut self.report;
                    let secs: Vec<Option<f64>> =
                        times.iter().map(|t| Some(t.as_secs_f64())).collect();
                    r.num(
                        &section,
                        "server back → first echo, s",
                        Better::Lower,
                        pair,
                        median(secs.iter().copied()),
                    );
                    let worst = times.iter().max().map(|t| t.as_secs_f64());
                    r.num(&section, "worst run, s", Better::Lower, pair, worst);
                }
                Err(e) => self.error(pair, "reconnect", &e),
            }
        }
    }

    /// One outage per fresh client, as a tunnel meets it in life: after a long, healthy
    /// session (a client that has just lost a short-lived session backs off on purpose,
    /// so back-to-back outages would measure that policy, not the reconnect).
    fn reconnect_pair(&mut self, pair: Pair, echo: u16) -> Result<Vec<Duration>> {
        let kind = pair.server().expect("tunnel pair");
        let server = Server::start(&self.env, kind, &self.targets.all_ports())?;
        let mut outage = Outage::start(self.rt.handle(), server.port)?;
        let mut times = Vec::new();
        for _ in 0..self.opts.reconnect_reps {
            let client = Client::start(
                &self.env,
                pair.client().expect("tunnel pair"),
                outage.port(),
                &[Forward::Local(echo)],
                ClientOptions {
                    autossh: true,
                    ..ClientOptions::default()
                },
            )?;
            let port = client.ports[0];
            first_echo(port, Instant::now() + GIVE_UP)?;
            outage.down();
            std::thread::sleep(self.opts.reconnect_outage);
            outage.up()?;
            let back = Instant::now();
            match first_echo(port, back + GIVE_UP) {
                Ok(at) => times.push(at - back),
                Err(e) => bail!("{e:#}; {}", client.tail()),
            }
        }
        Ok(times)
    }
}

/// Connects to the tunnel's -L port until one connection echoes a byte; returns when.
fn first_echo(port: u16, deadline: Instant) -> Result<Instant> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut b = [0u8; 1];
            if s.write_all(b"r").is_ok() && s.read_exact(&mut b).is_ok() && b == *b"r" {
                return Ok(Instant::now());
            }
        }
        if Instant::now() >= deadline {
            bail!("no echo through 127.0.0.1:{port} within {GIVE_UP:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
