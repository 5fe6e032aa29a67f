//! warren-ssh, Warren's own SSH engine, against real OpenSSH in both roles: our client
//! against a private sshd, and stock `ssh` against a small server built on the engine.
//! Flow control is checked where it matters: a reader that stops holds exactly one window.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_ssh::driver::{self, AuthOutcome, Handle, Incoming};
use warren_ssh::hostkey::ParsedKey;
use warren_ssh::proto::{AuthMethod, AuthReply, ChannelKind, Config, Role, reason};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Connects our engine as a client to `sshd`, checks the host key against the fixture's, and
/// authenticates with the user's key.
async fn client(
    sshd: &Sshd,
    user: &WarrenUser,
    tweak: impl Fn(&mut Config),
) -> (Handle, tokio::task::JoinHandle<Result<(), String>>) {
    let tcp = tokio::net::TcpStream::connect(sshd.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut cfg = Config::new(Role::Client);
    tweak(&mut cfg);
    let (handle, mut incoming, run) = driver::start(tcp, Arc::new(cfg));
    let task = tokio::spawn(run);
    let key = match tokio::time::timeout(READY_TIMEOUT, incoming.recv()).await {
        Ok(Some(Incoming::HostKey(ParsedKey::Plain(k)))) => k,
        other => panic!(
            "expected the host key, got {other:?}; sshd logs:\n{}",
            sshd.logs()
        ),
    };
    let line = key.to_openssh().unwrap();
    assert!(
        sshd.host_public_keys()
            .iter()
            .any(|l| l.split_whitespace().nth(1) == line.split_whitespace().nth(1)),
        "host key {line} is not sshd's"
    );
    let private = warren_ssh::ssh_key::PrivateKey::read_openssh_file(&user.key.private).unwrap();
    let outcome = handle.auth_publickey("root", &private).await.unwrap();
    assert_eq!(outcome, AuthOutcome::Success, "sshd logs:\n{}", sshd.logs());
    tokio::spawn(async move { while incoming.recv().await.is_some() {} });
    (handle, task)
}

fn direct(addr: std::net::SocketAddr) -> ChannelKind {
    ChannelKind::DirectTcpip {
        host: addr.ip().to_string(),
        port: addr.port() as u32,
        originator: "127.0.0.1".into(),
        originator_port: 40000,
    }
}

#[test]
fn our_client_forwards_through_openssh_sshd_with_every_cipher() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let echo = EchoServer::start();
    let payload = pattern_bytes(4 << 20, 7);
    rt().block_on(async {
        for cipher in [
            "chacha20-poly1305@openssh.com",
            "aes256-gcm@openssh.com",
            "aes128-gcm@openssh.com",
            "aes256-ctr",
            "aes128-ctr",
        ] {
            // Debian's OpenSSH 9.2 predates mlkem768x25519-sha256 (9.9; asyncssh covers it in
            // tests/interop.rs) and knows sntrup761x25519-sha512 by its @openssh.com name only.
            for kex in [
                "sntrup761x25519-sha512@openssh.com",
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
            ] {
                let (h, _task) = client(&sshd, &user, |c| {
                    c.ciphers = vec![cipher.into()];
                    c.kex = vec![kex.into()];
                })
                .await;
                let ch = h.open(direct(echo.addr())).await.unwrap();
                let (mut rd, mut wr) = tokio::io::split(ch);
                let p = payload.clone();
                let writer = tokio::spawn(async move {
                    wr.write_all(&p).await.unwrap();
                    wr.shutdown().await.unwrap();
                    wr
                });
                let mut got = Vec::new();
                tokio::time::timeout(IO_TIMEOUT, rd.read_to_end(&mut got))
                    .await
                    .unwrap()
                    .unwrap();
                let _wr = writer.await.unwrap();
                assert_eq!(got.len(), payload.len(), "{cipher} {kex}: echo length");
                if let Some(i) = got.iter().zip(&payload).position(|(a, b)| a != b) {
                    panic!("{cipher} {kex}: echo differs from byte {i}");
                }
                h.disconnect("done");
            }
        }
    });
}

/// A reader that stops: the engine holds exactly one window for it and the source is held
/// back by SSH flow control (no spill, no cut-off); when the reader resumes every byte arrives.
#[test]
fn a_stalled_reader_holds_one_window_and_then_gets_everything_from_sshd() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let source = SourceServer::start(48 << 20);
    rt().block_on(async {
        let (h, _task) = client(&sshd, &user, |_| {}).await;
        let mut ch = h.open(direct(source.addr())).await.unwrap();
        let id = ch.id();
        let mut got = vec![0u8; 1 << 20];
        ch.read_exact(&mut got).await.unwrap();
        // Stop reading. The sender uses up what we granted and must stop there.
        let deadline = Instant::now() + IO_TIMEOUT;
        let target = h.window_target(id) as usize;
        loop {
            let buffered = h.buffered(id);
            assert!(buffered <= target, "buffered {buffered} > window {target}");
            if h.peer_window(id) == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the sender never used up its window ({buffered} buffered of {target})"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let held = h.buffered(id);
        assert!(
            held > target / 2,
            "only {held} buffered: the window was not used"
        );
        // The window is the bound: it did not grow while the reader was the bottleneck.
        assert_eq!(h.window_target(id) as usize, target);
        let mut rest = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, ch.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&rest);
        assert_eq!(got.len(), source.len());
        assert_eq!(sha256_hex(&got), source.expected_sha256());
    });
}

/// A tiny tunnel server on the engine: accepts one user key, forwards direct-tcpip.
async fn serve(
    listener: tokio::net::TcpListener,
    host_key: warren_ssh::ssh_key::PrivateKey,
    user_key: warren_ssh::ssh_key::PublicKey,
    compression: bool,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let mut cfg = Config::new(Role::Server);
        cfg.host_keys = vec![host_key.clone()];
        cfg.compression = compression;
        cfg.keepalive_interval = Some(Duration::from_millis(300));
        let user_key = user_key.clone();
        tokio::spawn(async move {
            let (h, mut incoming, run) = driver::start(tcp, Arc::new(cfg));
            tokio::spawn(run);
            while let Some(ev) = incoming.recv().await {
                match ev {
                    Incoming::AuthRequest {
                        id,
                        method:
                            AuthMethod::PublicKey {
                                alg,
                                key: ParsedKey::Plain(k),
                                key_blob,
                                signature,
                            },
                        ..
                    } if k.key_data() == user_key.key_data() => match signature {
                        None => h.auth_pk_ok(id, &alg, &key_blob),
                        Some(true) => h.auth_reply(id, AuthReply::Accept),
                        Some(false) => h.auth_reply(
                            id,
                            AuthReply::Reject {
                                methods: vec!["publickey".into()],
                                partial: false,
                            },
                        ),
                    },
                    Incoming::AuthRequest { id, .. } => h.auth_reply(
                        id,
                        AuthReply::Reject {
                            methods: vec!["publickey".into()],
                            partial: false,
                        },
                    ),
                    Incoming::ChannelOpen {
                        id,
                        kind: ChannelKind::DirectTcpip { host, port, .. },
                    } => match tokio::net::TcpStream::connect((host.as_str(), port as u16)).await {
                        Ok(mut target) => {
                            let mut ch = h.accept(id);
                            tokio::spawn(async move {
                                let _ = tokio::io::copy_bidirectional(&mut ch, &mut target).await;
                            });
                        }
                        Err(e) => h.reject(id, reason::CONNECT_FAILED, &e.to_string()),
                    },
                    Incoming::ChannelOpen { id, .. } => {
                        h.reject(id, reason::ADMINISTRATIVELY_PROHIBITED, "no")
                    }
                    Incoming::GlobalRequest {
                        request_id,
                        want_reply: true,
                        ..
                    } => h.global_reply(request_id, false, &[]),
                    Incoming::ChannelRequest {
                        id,
                        request_id,
                        want_reply: true,
                        ..
                    } => h.channel_request_reply(id, request_id, false),
                    _ => {}
                }
            }
        });
    }
}

fn engine_server(home: &ClientHome, compression: bool) -> (tokio::runtime::Runtime, u16, String) {
    let host = UserKey::generate(home.path(), "ed25519", None);
    let user = UserKey::generate(home.ssh_dir(), "ed25519", None);
    let host_key = warren_ssh::ssh_key::PrivateKey::read_openssh_file(&host.private).unwrap();
    let user_pub = warren_ssh::ssh_key::PrivateKey::read_openssh_file(&user.private)
        .unwrap()
        .public_key()
        .clone();
    let rt = rt();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(serve(listener, host_key, user_pub, compression));
    let known = format!(
        "[127.0.0.1]:{port} {}\n",
        host.public_line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::fs::write(home.known_hosts(), known).unwrap();
    (rt, port, user.private.display().to_string())
}

fn stock_ssh(
    home: &ClientHome,
    port: u16,
    identity: &str,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = std::process::Command::new("ssh");
    home.apply(&mut cmd);
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .arg("-o")
    .arg(format!(
        "UserKnownHostsFile={}",
        home.known_hosts().display()
    ))
    .args(["-i", identity, "-p", &port.to_string()])
    .args(extra);
    cmd
}

#[test]
fn stock_ssh_forwards_through_our_server_in_every_cipher() {
    let home = ClientHome::new();
    let (_rt, port, identity) = engine_server(&home, false);
    let echo = EchoServer::start();
    for cipher in [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
    ] {
        let local = free_port();
        let spec = format!("127.0.0.1:{local}:127.0.0.1:{}", echo.port());
        let mut cmd = stock_ssh(
            &home,
            port,
            &identity,
            &[
                "-N",
                "-c",
                cipher,
                "-L",
                &spec,
                "-o",
                "ExitOnForwardFailure=yes",
            ],
        );
        cmd.arg("alice@127.0.0.1");
        let ssh = Proc::spawn(cmd);
        let s = connect_with_retry(format!("127.0.0.1:{local}").parse().unwrap(), READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", ssh.report("ssh -L never listened")));
        let payload = pattern_bytes(8 << 20, 3);
        let got = exchange(s, &payload, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", ssh.report("exchange")));
        assert_eq!(
            sha256_hex(&got),
            sha256_hex(&payload),
            "{cipher}: {}",
            ssh.report("echo differs")
        );
    }
}

/// ssh -C negotiates zlib@openssh.com, which starts only after authentication; our keepalives
/// (every 300 ms here) must not go out uncompressed once it has (russh's bug: the session died
/// at the first keepalive).
#[test]
fn ssh_with_compression_survives_keepalives_and_forwards() {
    let home = ClientHome::new();
    let (_rt, port, identity) = engine_server(&home, true);
    let echo = EchoServer::start();
    let local = free_port();
    let spec = format!("127.0.0.1:{local}:127.0.0.1:{}", echo.port());
    let mut cmd = stock_ssh(&home, port, &identity, &["-N", "-C", "-v", "-L", &spec]);
    cmd.arg("alice@127.0.0.1");
    let ssh = Proc::spawn(cmd);
    ssh.wait_for_stderr(|l| l.contains("compression: zlib"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let s =
        connect_with_retry(format!("127.0.0.1:{local}").parse().unwrap(), READY_TIMEOUT).unwrap();
    let payload = pattern_bytes(2 << 20, 5);
    // Several keepalive intervals pass during and after the transfer.
    let got = exchange(s, &payload, IO_TIMEOUT).unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&payload));
    let s =
        connect_with_retry(format!("127.0.0.1:{local}").parse().unwrap(), READY_TIMEOUT).unwrap();
    let got = exchange(s, b"still alive", IO_TIMEOUT).unwrap();
    assert_eq!(got, b"still alive");
    assert!(ssh.try_wait().is_none(), "{}", ssh.report("ssh exited"));
}
