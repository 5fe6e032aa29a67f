//! The tokio driver end to end over an in-memory pipe: our client and our server.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_ssh::driver::{self, AuthOutcome, Events, Handle, Incoming};
use warren_ssh::proto::{AuthReply, ChannelKind, ChannelRequest, Config, Role};

const HOST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAdpRC7NexZhX6WIivAIG3lano7SZ12Dy+ToeuhVLr1kAAAAIifQmLHn0Ji
xwAAAAtzc2gtZWQyNTUxOQAAACAdpRC7NexZhX6WIivAIG3lano7SZ12Dy+ToeuhVLr1kA
AAAEBFZJ+hbLQE+nM9Rx7u9B2Xi8VRMr2qmuxjBfnIRkOYWh2lELs17FmFfpYiK8AgbeVq
ejtJnXYPL5Oh66FUuvWQAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";

/// Polls `cond` (state that only moves forward) until it holds, for at most 10 s.
async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn pair() -> (Handle, Events, Handle, Events) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut sc = Config::new(Role::Server);
    sc.host_keys = vec![warren_ssh::ssh_key::PrivateKey::from_openssh(HOST_KEY).unwrap()];
    let (sh, mut sev, srun) = driver::start(b, Arc::new(sc));
    let (ch, mut cev, crun) = driver::start(a, Arc::new(Config::new(Role::Client)));
    tokio::spawn(srun);
    tokio::spawn(crun);
    assert!(matches!(cev.recv().await, Some(Incoming::HostKey(_))));
    let login = {
        let ch = ch.clone();
        tokio::spawn(async move { ch.auth_password("alice", "pw").await.unwrap() })
    };
    match sev.recv().await {
        Some(Incoming::AuthRequest { id, .. }) => sh.auth_reply(id, AuthReply::Accept),
        other => panic!("{other:?}"),
    }
    assert_eq!(login.await.unwrap(), AuthOutcome::Success);
    (ch, cev, sh, sev)
}

/// A peer that floods requests faster than the application reads them is held back by the
/// transport: the undelivered events stay bounded, and none is lost.
#[tokio::test]
async fn a_request_flood_is_bounded_by_back_pressure_and_nothing_is_lost() {
    let (ch, _cev, sh, mut sev) = pair().await;
    let opening = tokio::spawn({
        let ch = ch.clone();
        async move { ch.open(ChannelKind::Session).await.unwrap() }
    });
    let id = match sev.recv().await {
        Some(Incoming::ChannelOpen { id, .. }) => id,
        other => panic!("{other:?}"),
    };
    let _server_side = sh.accept(id);
    let stream = opening.await.unwrap();
    const N: usize = 20_000;
    for i in 0..N {
        let req = ChannelRequest::Env {
            name: format!("V{i}"),
            value: vec![b'x'; 64],
        };
        ch.channel_request(stream.id(), req, false).await.unwrap();
    }
    // The application reads nothing until the driver reports its limit reached; from then on
    // the driver reads no more from the socket, so the count below is final.
    wait_until(|| sev.pending() >= 256).await;
    // The bound: the driver's limit plus what one 256 KiB socket read can carry (~100-byte
    // requests here); the rest waits in the peer's TCP send buffer.
    let pending = sev.pending();
    assert!(
        pending <= 256 + 256 * 1024 / 90,
        "{pending} events queued for the application"
    );
    assert!(
        pending < N / 4,
        "{pending} of {N} events queued: no back-pressure"
    );
    let mut seen = 0;
    while seen < N {
        match tokio::time::timeout(Duration::from_secs(10), sev.recv()).await {
            Ok(Some(Incoming::ChannelRequest {
                request: ChannelRequest::Env { name, .. },
                ..
            })) => {
                assert_eq!(name, format!("V{seen}"), "requests arrive in order");
                seen += 1;
            }
            other => panic!("after {seen}: {other:?}"),
        }
    }
}

/// A stalled reader on one channel holds at most its window, while another channel on the
/// same connection keeps echoing.
#[tokio::test]
async fn a_stalled_channel_does_not_hold_up_another() {
    let (ch, _cev, sh, mut sev) = pair().await;
    let open = |ch: &Handle| {
        let ch = ch.clone();
        tokio::spawn(async move {
            ch.open(ChannelKind::DirectTcpip {
                host: "t".into(),
                port: 1,
                originator: "o".into(),
                originator_port: 2,
            })
            .await
            .unwrap()
        })
    };
    let a = open(&ch);
    let Some(Incoming::ChannelOpen { id: sa, .. }) = sev.recv().await else {
        panic!()
    };
    let mut server_a = sh.accept(sa);
    let mut client_a = a.await.unwrap();
    let b = open(&ch);
    let Some(Incoming::ChannelOpen { id: sb, .. }) = sev.recv().await else {
        panic!()
    };
    let mut server_b = sh.accept(sb);
    let mut client_b = b.await.unwrap();
    // The server pushes 16 MiB on A; the client never reads A.
    let pusher = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..256 {
            if server_a.write_all(&chunk).await.is_err() {
                break;
            }
        }
        server_a
    });
    // A is stalled once the server has used up every byte of window the client granted.
    wait_until(|| ch.peer_window(client_a.id()) == 0).await;
    let held = ch.buffered(client_a.id());
    assert!(
        held <= 2 * 1024 * 1024,
        "A holds {held} bytes, more than its window"
    );
    // B echoes while A is stalled.
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 5];
        server_b.read_exact(&mut buf).await.unwrap();
        server_b.write_all(&buf).await.unwrap();
        server_b
    });
    client_b.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), client_b.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"hello");
    let _ = echo.await;
    // A resumes without loss.
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    while total < 16 * 1024 * 1024 {
        let n = tokio::time::timeout(Duration::from_secs(10), client_a.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        assert!(buf[..n].iter().all(|&b| b == 7));
        total += n;
    }
    let _ = pusher.await;
}

/// A peer that sends but never reads cannot make the server queue replies without end
/// (unknown messages each get UNIMPLEMENTED): once 4 MiB are unsent, the driver stops
/// reading that peer.
#[tokio::test]
async fn a_peer_that_never_reads_cannot_grow_our_output_without_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use warren_ssh::proto::{Event, Session};
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut sc = Config::new(Role::Server);
    sc.host_keys = vec![warren_ssh::ssh_key::PrivateKey::from_openssh(HOST_KEY).unwrap()];
    let (sh, mut sev, srun) = driver::start(b, Arc::new(sc));
    tokio::spawn(srun);
    tokio::spawn({
        let sh = sh.clone();
        async move {
            while let Some(ev) = sev.recv().await {
                if let Incoming::AuthRequest { id, .. } = ev {
                    sh.auth_reply(id, AuthReply::Accept);
                }
            }
        }
    });
    // A raw client core, pumped by hand so that it can stop reading.
    let (mut ar, mut aw) = tokio::io::split(a);
    let mut c = Session::new(
        Arc::new(Config::new(Role::Client)),
        std::time::Instant::now(),
    );
    let mut buf = vec![0u8; 64 * 1024];
    let mut asked = false;
    while !c.is_authenticated() {
        let out = c.take_transmit(Vec::new());
        aw.write_all(&out).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), ar.read(&mut buf)).await
        {
            c.feed(&buf[..n], std::time::Instant::now()).unwrap();
        }
        while let Some(ev) = c.poll_event() {
            if matches!(ev, Event::HostKey(_)) && !asked {
                asked = true;
                c.auth_password("mallory", "x");
            }
        }
    }
    for _ in 0..200_000 {
        c.send_raw_payload(&[200]);
    }
    let flood = c.take_transmit(Vec::new());
    // The writer blocks once the server stops reading.
    let writer = tokio::spawn(async move {
        let _ = aw.write_all(&flood).await;
        aw
    });
    wait_until(|| sh.unsent() >= 4 * 1024 * 1024).await;
    // Without the limit the server would read the whole flood (about 8 MB) in well under a
    // second and queue a reply to each; with it, the writer stays blocked.
    let writer = tokio::time::timeout(Duration::from_secs(2), writer).await;
    assert!(
        writer.is_err(),
        "the server read the whole flood from a peer that does not read"
    );
    let unsent = sh.unsent();
    // The limit, plus the replies to what one 256 KiB read can carry.
    assert!(
        unsent <= 4 * 1024 * 1024 + 1024 * 1024,
        "{unsent} bytes queued for a peer that does not read"
    );
    assert!(
        unsent < 200_000 * 40,
        "every reply was queued: no back-pressure"
    );
    drop(ar);
}
