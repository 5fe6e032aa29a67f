//! The driver over an in-memory pipe: our client and our server, both on tokio.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;
use crate::proto::{ChannelKind, Config, Role};

use crate::proto::tests::host_key;

/// A logged-in client and the server's side of one channel it opened.
async fn pair() -> (Handle, ChannelStream, ChannelStream) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut sc = Config::new(Role::Server);
    sc.host_keys = vec![host_key()];
    let (sh, mut s_in, s_run) = start(b, Arc::new(sc));
    tokio::spawn(s_run);
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Some(ev) = s_in.recv().await {
            match ev {
                Incoming::AuthRequest { id, .. } => sh.auth_reply(id, AuthReply::Accept),
                Incoming::ChannelOpen { id, .. } => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(sh.accept(id));
                    }
                }
                _ => {}
            }
        }
    });
    let (ch, mut c_in, c_run) = start(a, Arc::new(Config::new(Role::Client)));
    tokio::spawn(c_run);
    assert!(matches!(c_in.recv().await, Some(Incoming::HostKey(_))));
    tokio::spawn(async move { while c_in.recv().await.is_some() {} });
    assert_eq!(
        ch.auth_password("alice", "pw").await.unwrap(),
        AuthOutcome::Success
    );
    let c = ch
        .open(ChannelKind::DirectTcpip {
            host: "db".into(),
            port: 5432,
            originator: "127.0.0.1".into(),
            originator_port: 1,
        })
        .await
        .unwrap();
    let s = rx.await.unwrap();
    (ch, c, s)
}

/// EOF ends the data, not the channel: `closed` waits for the peer's CLOSE.
#[tokio::test]
async fn closed_completes_on_close_and_not_on_eof() {
    let (ch, mut c, mut s) = pair().await;
    c.write_all(b"bye").await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
    // Everything up to the EOF has been processed; the channel is still open.
    assert!(
        tokio::time::timeout(Duration::ZERO, s.closed())
            .await
            .is_err(),
        "closed() completed on EOF"
    );
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), s.closed())
        .await
        .expect("closed() completes once the client closes");
    ch.disconnect("done");
}

/// The end of the connection ends every channel's wait.
#[tokio::test]
async fn closed_completes_when_the_connection_ends() {
    let (ch, _c, s) = pair().await;
    ch.disconnect("done");
    tokio::time::timeout(Duration::from_secs(10), s.closed())
        .await
        .expect("closed() completes once the connection ends");
}
