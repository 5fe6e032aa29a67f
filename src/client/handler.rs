//! What the server sends us unasked, once the host key is trusted: banners, channels it
//! opens (connections to our -R forwards), requests on our channels (a remote command's
//! exit status and stderr), global requests.
//!
//! One task per connection reads the engine's events in order and answers each at once:
//! anything slow (dialing a -R destination) runs in a task of its own, so one slow
//! destination never holds back another forward's connection or a reply.

use crate::forward::remote::{Routed, SharedRemoteForwards, Target, spawn_forwarded};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use warren_ssh::driver::{Handle, Incoming};
use warren_ssh::proto::{ChannelId, ChannelKind, ChannelRequest, reason};

/// What a remote command's session channel hears besides its stdout.
#[derive(Debug)]
pub enum ExecEvent {
    Stderr(Bytes),
    ExitStatus(u32),
    ExitSignal { signal: String, message: String },
}

type RouteMap = HashMap<ChannelId, mpsc::UnboundedSender<ExecEvent>>;

/// Session channels running a command, by id: where their [`ExecEvent`]s go.
#[derive(Clone)]
pub struct ExecRoutes {
    map: Arc<Mutex<RouteMap>>,
    /// Channels whose command is done: the event task drops their route once it has
    /// handled every event the engine queued before (see [`ExecRoutes::finish`]).
    finish: mpsc::UnboundedSender<ChannelId>,
}

impl ExecRoutes {
    /// The routes and the receiving end of [`ExecRoutes::finish`], for [`serve`].
    pub fn new() -> (ExecRoutes, mpsc::UnboundedReceiver<ChannelId>) {
        let (finish, rx) = mpsc::unbounded_channel();
        (
            ExecRoutes {
                map: Arc::default(),
                finish,
            },
            rx,
        )
    }

    /// Starts routing a channel's events; registered before the exec request goes out, so
    /// nothing the command says can arrive unrouted.
    pub fn register(&self, id: ChannelId) -> mpsc::UnboundedReceiver<ExecEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(id, tx);
        rx
    }

    /// The channel is closed: its receiver ends after the events still in flight (the
    /// exit status, the last stderr) — they were queued before the close was seen, and
    /// the event task handles all it holds before dropping the route.
    pub fn finish(&self, id: ChannelId) {
        if self.finish.send(id).is_err() {
            // The event task is gone with the connection: nothing is in flight.
            self.lock().remove(&id);
        }
    }

    fn send(&self, id: ChannelId, ev: ExecEvent) {
        if let Some(tx) = self.lock().get(&id) {
            let _ = tx.send(ev);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouteMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the events of one connection go.
pub struct Routes {
    pub quiet: bool,
    /// The -R forwards the server granted, to route its forwarded connections.
    pub remote: SharedRemoteForwards,
    pub exec: ExecRoutes,
    /// ForwardAgent: the local agent the server's auth-agent channels reach.
    pub agent: Option<std::path::PathBuf>,
}

/// Answers the connection's events until it ends.
pub async fn serve(
    handle: Handle,
    mut incoming: warren_ssh::driver::Events,
    mut finished: mpsc::UnboundedReceiver<ChannelId>,
    routes: Routes,
) {
    loop {
        tokio::select! {
            biased;
            ev = incoming.recv() => match ev {
                Some(ev) => event(&handle, &routes, ev),
                None => break,
            },
            Some(id) = finished.recv() => {
                while let Some(ev) = incoming.try_recv() {
                    event(&handle, &routes, ev);
                }
                routes.exec.lock().remove(&id);
            }
        }
    }
    // Whoever still waits for a command's events learns that none will come.
    routes.exec.lock().clear();
}

fn event(handle: &Handle, routes: &Routes, ev: Incoming) {
    match ev {
        Incoming::Banner(text) => {
            if !routes.quiet {
                eprint!("{}", printable(&text));
            }
        }
        Incoming::ChannelOpen { id, kind } => channel_open(handle, routes, id, kind),
        Incoming::ChannelRequest {
            id,
            request_id,
            request,
            want_reply,
        } => {
            match request {
                ChannelRequest::ExitStatus(n) => routes.exec.send(id, ExecEvent::ExitStatus(n)),
                ChannelRequest::ExitSignal {
                    signal, message, ..
                } => routes
                    .exec
                    .send(id, ExecEvent::ExitSignal { signal, message }),
                other => debug!("channel {id}: ignoring request {other:?}"),
            }
            if want_reply {
                handle.channel_request_reply(id, request_id, false);
            }
        }
        Incoming::Stderr { id, data } => routes.exec.send(id, ExecEvent::Stderr(data)),
        Incoming::GlobalRequest {
            request_id,
            request,
            want_reply,
        } => {
            // hostkeys-00@openssh.com and the like: nothing a tunnel client acts on.
            debug!("ignoring global request {request:?}");
            if want_reply {
                handle.global_reply(request_id, false, &[]);
            }
        }
        // Only before authentication, which the session has finished by now.
        Incoming::HostKey(_) | Incoming::AuthRequest { .. } => {}
    }
}

/// A channel the server opened: a connection to one of our -R forwards, or something a
/// tunnel client never asked for (session, X11, agent, direct-tcpip), which is refused.
fn channel_open(handle: &Handle, routes: &Routes, id: ChannelId, kind: ChannelKind) {
    let routed = match &kind {
        ChannelKind::ForwardedTcpip {
            address,
            port,
            originator,
            originator_port,
        } => routes
            .remote
            .lookup_tcp(address, *port)
            .map(|t| (t, format!("{originator}:{originator_port}"))),
        ChannelKind::ForwardedStreamlocal { path } => {
            routes.remote.lookup_unix(path).map(|t| (t, path.clone()))
        }
        ChannelKind::AuthAgent => routes.agent.as_ref().map(|p| {
            let target = Target::Fixed(crate::config::forward::Endpoint::Unix(p.clone()));
            // Not a forward of the user's: counted nowhere that status reports.
            let routed = Routed {
                target,
                stats: Default::default(),
            };
            (routed, "agent forwarding".to_string())
        }),
        _ => None,
    };
    match routed {
        Some((target, origin)) => spawn_forwarded(handle.clone(), id, target, origin),
        None => {
            warn!("refusing a {kind:?} channel from the server: no such forward was requested");
            handle.reject(
                id,
                reason::ADMINISTRATIVELY_PROHIBITED,
                "no such forward was requested",
            );
        }
    }
}

/// The banner without control characters other than line breaks and tabs, so a server
/// cannot move the cursor or retitle the terminal (OpenSSH filters it the same way).
fn printable(text: &str) -> String {
    text.chars()
        .filter(|&c| !c.is_control() || c == '\n' || c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_lose_terminal_escapes_but_keep_lines() {
        assert_eq!(
            printable("Welcome\r\n\x1b]0;owned\x07\x1b[2Jhere\tok\n"),
            "Welcome\n]0;owned[2Jhere\tok\n"
        );
    }

    #[test]
    fn exec_events_reach_only_the_registered_channel() {
        let (routes, finished) = ExecRoutes::new();
        let mut rx = routes.register(3);
        routes.send(4, ExecEvent::ExitStatus(1));
        routes.send(3, ExecEvent::ExitStatus(7));
        assert!(matches!(rx.try_recv(), Ok(ExecEvent::ExitStatus(7))));
        // Without an event task the route goes at once.
        drop(finished);
        routes.finish(3);
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
