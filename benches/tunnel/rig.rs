//! A rig: one pair's server and client, started for one path, and the route
//! connections take into it. Every rig starts its own server, so that the
//! CPU time and peak memory read from /proc belong to what it measures.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use tokio::runtime::Handle;

use crate::clients::{Client, ClientOptions, Forward};
use crate::env::Env;
use crate::link::{DelayLine, Shape};
use crate::opts::{Pair, PathKind};
use crate::procs::Usage;
use crate::route::Route;
use crate::servers::Server;
use crate::targets::{Target, Targets};

/// How a rig is started; `Default` is a plain, quiet client connected
/// straight to its server (what the loopback phases measure).
#[derive(Clone, Debug, Default)]
pub struct RigOptions {
    pub client: ClientOptions,
    /// A [`DelayLine`] between client and server, run on this runtime and
    /// shaped so: the client connects to the line, not the server. For the
    /// direct pair, a line in front of each wanted target instead.
    pub link: Option<(Handle, Shape)>,
}

pub struct Rig {
    pub pair: Pair,
    pub route: Route,
    pub client: Option<Client>,
    // Declared after the client: fields drop in order, and the client should
    // go before the link and its server. The lines are only held, so that
    // they live as long as the rig.
    _link: Vec<DelayLine>,
    pub server: Option<Server>,
}

impl Rig {
    /// Starts `pair` with one `path` forward per target in `wanted` (one -D
    /// port serves them all), the client started as `opts` says.
    pub fn start(
        env: &Env,
        targets: &Targets,
        pair: Pair,
        path: PathKind,
        wanted: &[Target],
        opts: &RigOptions,
    ) -> Result<Rig> {
        let all: HashMap<Target, u16> = Target::ALL
            .into_iter()
            .map(|t| (t, targets.port(t)))
            .collect();
        let (Some(client_kind), Some(server_kind)) = (pair.client(), pair.server()) else {
            let Some((rt, shape)) = &opts.link else {
                return Ok(Rig::external(pair, Route::Direct(all)));
            };
            // The upper bound across the same line: one line per target.
            let mut lines = Vec::new();
            let mut ports = HashMap::new();
            for t in wanted {
                let line = DelayLine::start(rt, all[t], *shape).context("direct: delay line")?;
                ports.insert(*t, line.port());
                lines.push(line);
            }
            let mut rig = Rig::external(pair, Route::Direct(ports));
            rig._link = lines;
            return Ok(rig);
        };
        let server = Server::start(env, server_kind, &targets.all_ports())
            .with_context(|| format!("{}: server", pair.name()))?;
        let forwards: Vec<Forward> = match path {
            PathKind::Local => wanted.iter().map(|t| Forward::Local(all[t])).collect(),
            PathKind::Dynamic => vec![Forward::Dynamic],
            PathKind::Remote => wanted.iter().map(|t| Forward::Remote(all[t])).collect(),
        };
        let link = match &opts.link {
            Some((rt, shape)) => Some(
                DelayLine::start(rt, server.port, *shape)
                    .with_context(|| format!("{}: delay line", pair.name()))?,
            ),
            None => None,
        };
        let port = link.as_ref().map_or(server.port, DelayLine::port);
        let client =
            Client::start(env, client_kind, port, &forwards, opts.client).with_context(|| {
                format!("{}: {} client\n{}", pair.name(), path.flag(), server.tail())
            })?;
        let route = match path {
            PathKind::Dynamic => Route::Socks {
                proxy: client.ports[0],
                targets: all,
            },
            _ => Route::Ports(
                wanted
                    .iter()
                    .copied()
                    .zip(client.ports.iter().copied())
                    .collect(),
            ),
        };
        Ok(Rig {
            pair,
            route,
            client: Some(client),
            _link: link.into_iter().collect(),
            server: Some(server),
        })
    }

    /// A rig whose route leads into something started elsewhere (the
    /// setup floor's mux): no client or server here to measure.
    pub fn external(pair: Pair, route: Route) -> Rig {
        Rig {
            pair,
            route,
            client: None,
            _link: Vec::new(),
            server: None,
        }
    }

    /// CPU and memory of the client and of the server (with the processes
    /// it forked), `None` for the direct connection.
    pub fn usage(&self) -> (Option<Usage>, Option<Usage>) {
        (
            self.client.as_ref().map(|c| Usage::of_tree(c.pid())),
            self.server.as_ref().map(|s| Usage::of_tree(s.pid())),
        )
    }

    /// The client's and the server's process ids, `None` where there is none.
    pub fn pids(&self) -> (Option<i32>, Option<i32>) {
        (
            self.client.as_ref().map(Client::pid),
            self.server.as_ref().map(Server::pid),
        )
    }

    /// Fails with the client's last output if it died.
    pub fn check_alive(&self) -> Result<()> {
        if let Some(c) = &self.client
            && !c.alive()
        {
            bail!("{}: the client exited\n{}", self.pair.name(), c.tail());
        }
        Ok(())
    }

    /// The recent output of both processes, to explain a failure.
    pub fn tails(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.client {
            s.push_str(&c.tail());
        }
        if let Some(srv) = &self.server {
            s.push_str(&srv.tail());
        }
        s
    }
}
