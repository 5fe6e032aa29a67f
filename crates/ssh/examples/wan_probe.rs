//! Throughput of one download between our client and our server across a user-space delay
//! line, with and without window autotuning. `cargo run --release -p warren-ssh --example
//! wan_probe -- RTT_MS MIB [MAX_PACKET [CIPHER]]`: MAX_PACKET (bytes, default 32768) is what
//! both ends advertise per channel; CIPHER the one the client asks for (default: the engine's
//! own order). An experiment, not a benchmark (the benchmark is benches/tunnel).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren_ssh::driver::{self, Incoming};
use warren_ssh::proto::{AuthReply, ChannelKind, Config, Role};

const HOST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAdpRC7NexZhX6WIivAIG3lano7SZ12Dy+ToeuhVLr1kAAAAIifQmLHn0Ji
xwAAAAtzc2gtZWQyNTUxOQAAACAdpRC7NexZhX6WIivAIG3lano7SZ12Dy+ToeuhVLr1kA
AAAEBFZJ+hbLQE+nM9Rx7u9B2Xi8VRMr2qmuxjBfnIRkOYWh2lELs17FmFfpYiK8AgbeVq
ejtJnXYPL5Oh66FUuvWQAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";

async fn delay_pipe(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    one_way: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(4096);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if tx
                .send((Instant::now() + one_way, buf[..n].to_vec()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    while let Some((at, chunk)) = rx.recv().await {
        tokio::time::sleep_until(at.into()).await;
        if wr.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn serve(listener: TcpListener, size: usize, cap: u32, max_packet: u32) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut cfg = Config::new(Role::Server);
        cfg.host_keys = vec![warren_ssh::ssh_key::PrivateKey::from_openssh(HOST_KEY).unwrap()];
        cfg.window_cap = cap;
        cfg.max_packet = max_packet;
        tokio::spawn(async move {
            let (h, mut ev, run) = driver::start(tcp, Arc::new(cfg));
            tokio::spawn(run);
            while let Some(e) = ev.recv().await {
                match e {
                    Incoming::AuthRequest { id, .. } => h.auth_reply(id, AuthReply::Accept),
                    Incoming::ChannelOpen { id, .. } => {
                        let mut ch = h.accept(id);
                        tokio::spawn(async move {
                            let chunk = vec![0x5au8; 256 * 1024];
                            let mut left = size;
                            while left > 0 {
                                let n = left.min(chunk.len());
                                ch.write_all(&chunk[..n]).await.unwrap();
                                left -= n;
                            }
                            ch.shutdown().await.unwrap();
                            let mut sink = [0u8; 16];
                            let _ = ch.read(&mut sink).await;
                        });
                    }
                    _ => {}
                }
            }
        });
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rtt: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let mib: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let size = mib << 20;
    let max_packet: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(32768);
    let cipher = args.get(4).cloned();
    for (label, cap) in [
        ("fixed 2 MiB window", 2u32 << 20),
        ("autotuned (cap 64 MiB)", 64 << 20),
    ] {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let saddr = server.local_addr().unwrap();
        tokio::spawn(serve(server, size, cap, max_packet));
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let raddr = relay.local_addr().unwrap();
        let one_way = Duration::from_millis(rtt / 2);
        tokio::spawn(async move {
            let (c, _) = relay.accept().await.unwrap();
            let s = TcpStream::connect(saddr).await.unwrap();
            c.set_nodelay(true).unwrap();
            s.set_nodelay(true).unwrap();
            let (cr, cw) = c.into_split();
            let (sr, sw) = s.into_split();
            tokio::spawn(delay_pipe(cr, sw, one_way));
            delay_pipe(sr, cw, one_way).await;
        });
        let tcp = TcpStream::connect(raddr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut cfg = Config::new(Role::Client);
        cfg.window_cap = cap;
        cfg.max_packet = max_packet;
        if let Some(c) = &cipher {
            cfg.ciphers = vec![c.clone()];
        }
        let (h, mut ev, run) = driver::start(tcp, Arc::new(cfg));
        tokio::spawn(run);
        assert!(matches!(ev.recv().await, Some(Incoming::HostKey(_))));
        h.auth_password("u", "p").await.unwrap();
        let mut ch = h
            .open(ChannelKind::DirectTcpip {
                host: "x".into(),
                port: 1,
                originator: "o".into(),
                originator_port: 1,
            })
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        let mut max_target = 0;
        loop {
            let n = ch.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
            max_target = max_target.max(h.window_target(ch.id()));
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{rtt} ms RTT, max packet {max_packet}, {label}: {} MiB in {secs:.2} s = {:.1} MiB/s (window reached {} MiB; 2 MiB/RTT = {:.1} MiB/s)",
            total >> 20,
            total as f64 / secs / 1048576.0,
            max_target >> 20,
            2.0 / (rtt as f64 / 1000.0)
        );
    }
}
