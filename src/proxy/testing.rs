//! Test scaffolding: a scripted [`Opener`] whose tunnels are in-memory pipes the test holds
//! the far end of, and a harness that runs one proxy client connection against it.

use super::{ProxyConfig, ProxyCredentials, serve_client};
use crate::config::forward::Endpoint;
use crate::forward::{OpenError, Opener};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Ports with scripted failures; every other port opens a pipe.
pub(crate) const PORT_REFUSED: u16 = 9;
pub(crate) const PORT_PROHIBITED: u16 = 23;
pub(crate) const PORT_TIMEOUT: u16 = 7;
pub(crate) const PORT_BROKEN: u16 = 6;
pub(crate) const PORT_HANGS: u16 = 5;

/// Long enough for a loaded CI machine, short enough that a hang fails the test quickly.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) fn creds() -> ProxyCredentials {
    ProxyCredentials::new("user", "s3cret")
}

/// The far end of one opened tunnel.
pub(crate) struct Target {
    pub endpoint: Endpoint,
    pub stream: DuplexStream,
}

impl Target {
    pub(crate) async fn expect(&mut self, want: &[u8]) {
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(PATIENCE, self.stream.read_exact(&mut got))
            .await
            .expect("target read timed out")
            .expect("target read failed");
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    }

    /// Reads one request head (through the blank line) as text.
    pub(crate) async fn read_head(&mut self) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut b))
                .await
                .expect("target read timed out")
                .expect("target read failed");
            assert!(
                n == 1,
                "EOF inside a head: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(b[0]);
        }
        String::from_utf8(head).unwrap()
    }
}

pub(crate) struct MockOpener {
    targets: mpsc::UnboundedSender<Target>,
    opened: Arc<Mutex<Vec<Endpoint>>>,
}

impl Opener for MockOpener {
    type Stream = DuplexStream;

    async fn open(
        &self,
        target: &Endpoint,
        _originator: Option<SocketAddr>,
    ) -> Result<DuplexStream, OpenError> {
        self.opened.lock().unwrap().push(target.clone());
        let port = match target {
            Endpoint::Tcp { port, .. } => *port,
            Endpoint::Unix(_) => 0,
        };
        match port {
            PORT_REFUSED => Err(OpenError::Refused(
                "connect failed (the target refused or is unreachable from the server)".into(),
            )),
            PORT_PROHIBITED => Err(OpenError::Refused(
                "administratively prohibited (the server does not allow this destination)".into(),
            )),
            PORT_TIMEOUT => Err(OpenError::Timeout(Duration::from_secs(1))),
            PORT_BROKEN => Err(OpenError::Session("connection reset".into())),
            PORT_HANGS => std::future::pending().await,
            _ => {
                let (near, far) = tokio::io::duplex(64 * 1024);
                let _ = self.targets.send(Target {
                    endpoint: target.clone(),
                    stream: far,
                });
                Ok(near)
            }
        }
    }
}

/// One proxy client connection served by [`serve_client`] in a task.
pub(crate) struct Harness {
    pub client: DuplexStream,
    targets: mpsc::UnboundedReceiver<Target>,
    opened: Arc<Mutex<Vec<Endpoint>>>,
    task: JoinHandle<()>,
}

impl Harness {
    pub(crate) fn start(cfg: ProxyConfig) -> Harness {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (tx, targets) = mpsc::unbounded_channel();
        let opened = Arc::new(Mutex::new(Vec::new()));
        let opener = MockOpener {
            targets: tx,
            opened: opened.clone(),
        };
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let task = tokio::spawn(async move {
            serve_client(server, Some(peer), &opener, &cfg).await;
        });
        Harness {
            client,
            targets,
            opened,
            task,
        }
    }

    pub(crate) async fn next_target(&mut self) -> Target {
        tokio::time::timeout(PATIENCE, self.targets.recv())
            .await
            .expect("no tunnel opened in time")
            .expect("proxy task ended without opening a tunnel")
    }

    pub(crate) fn opened(&self) -> Vec<Endpoint> {
        self.opened.lock().unwrap().clone()
    }

    /// Everything the client receives until the proxy closes its side.
    pub(crate) async fn read_all(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        tokio::time::timeout(PATIENCE, self.client.read_to_end(&mut all))
            .await
            .expect("proxy did not close in time")
            .expect("client read failed");
        all
    }

    pub(crate) async fn read_text(&mut self) -> String {
        String::from_utf8_lossy(&self.read_all().await).into_owned()
    }

    /// Reads exactly `n` bytes, as text.
    pub(crate) async fn read_n(&mut self, n: usize) -> String {
        let mut got = vec![0u8; n];
        tokio::time::timeout(PATIENCE, self.client.read_exact(&mut got))
            .await
            .expect("client read timed out")
            .expect("client read failed");
        String::from_utf8_lossy(&got).into_owned()
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).await.unwrap();
    }

    /// The connection's task must end (no stuck tasks) once the client, having read its
    /// answer, goes away.
    pub(crate) async fn finished(self) {
        drop(self.client);
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("proxy task did not finish")
            .expect("proxy task panicked");
    }
}
