//! End-to-end tests of `forward::dynamic` (kept here to keep that file short): a real
//! listener driven by the real `curl`, with a test [`Opener`] that connects straight to
//! loopback servers in place of the SSH tunnel.

use super::*;
use crate::config::forward::Endpoint;
use crate::forward::OpenError;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Stands in for the tunnel: connects directly, and plays an sshd policy that prohibits
/// one port.
struct DirectOpener {
    denied_port: u16,
    seen: Mutex<Vec<String>>,
}

const DENIED: u16 = 1;

impl Opener for DirectOpener {
    type Stream = TcpStream;

    async fn open(&self, target: &Endpoint, _: Option<SocketAddr>) -> Result<TcpStream, OpenError> {
        self.seen.lock().unwrap().push(target.to_string());
        let Endpoint::Tcp { host, port } = target else {
            return Err(OpenError::Refused("not TCP".into()));
        };
        if *port == self.denied_port {
            return Err(OpenError::Refused(
                "administratively prohibited (the server does not allow this destination)".into(),
            ));
        }
        TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| OpenError::Refused(format!("connect failed: {e}")))
    }
}

struct Proxy {
    addr: String,
    opener: Arc<DirectOpener>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_proxy(auth: Option<ProxyCredentials>) -> Proxy {
    let fwd = DynamicForward {
        bind: Some("127.0.0.1".into()),
        port: 0,
        spec: "127.0.0.1:0".into(),
    };
    let listener = DynamicListener::bind(&fwd, false, auth)
        .await
        .unwrap()
        .with_handshake_timeout(Duration::from_millis(500));
    let addr = listener.addresses().remove(0);
    let opener = Arc::new(DirectOpener {
        denied_port: DENIED,
        seen: Mutex::new(Vec::new()),
    });
    let cancel = CancellationToken::new();
    let task = tokio::spawn(listener.serve(opener.clone(), cancel.clone()));
    Proxy {
        addr,
        opener,
        cancel,
        task,
    }
}

impl Proxy {
    fn seen(&self) -> Vec<String> {
        self.opener.seen.lock().unwrap().clone()
    }
}

/// A loopback HTTP/1.1 server that answers every request with its name, the request
/// line's method and path, and the body it got; it keeps connections alive.
async fn http_server(name: &'static str) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split(' ');
                    let (method, path) = (
                        parts.next().unwrap_or("").to_string(),
                        parts.next().unwrap_or("").to_string(),
                    );
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        if s.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let text = format!(
                        "{name} {method} {path} {}\n",
                        String::from_utf8_lossy(&body)
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if s.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Runs curl with no config file, no proxy from the environment, and a time limit.
async fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-q", "-sS", "--max-time", "20", "--noproxy", ""])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running curl (it must be installed for these tests)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn curl_ok(args: &[&str]) -> String {
    let (ok, out, err) = curl(args).await;
    assert!(ok, "curl {args:?} failed: {err}");
    out
}

#[tokio::test]
async fn socks_variants_through_curl() {
    let a = http_server("server-a").await;
    let p = start_proxy(None).await;
    let by_name = format!("http://localhost:{a}/name");
    let by_ip = format!("http://127.0.0.1:{a}/ip");
    for (flag, url, target) in [
        ("--socks5-hostname", &by_name, format!("localhost:{a}")),
        ("--socks5", &by_ip, format!("127.0.0.1:{a}")),
        ("--socks4a", &by_name, format!("localhost:{a}")),
        ("--socks4", &by_ip, format!("127.0.0.1:{a}")),
    ] {
        let out = curl_ok(&[flag, &p.addr, url]).await;
        let path = url.rsplit('/').next().unwrap();
        assert_eq!(out, format!("server-a GET /{path} \n"), "{flag}");
        assert_eq!(p.seen().last(), Some(&target), "{flag}");
    }
}

#[tokio::test]
async fn http_proxy_through_curl() {
    let (a, b) = (http_server("server-a").await, http_server("server-b").await);
    let p = start_proxy(None).await;
    let proxy = format!("http://{}", p.addr);
    let url = format!("http://127.0.0.1:{a}/abs?x=1");
    assert_eq!(
        curl_ok(&["-x", &proxy, &url]).await,
        "server-a GET /abs?x=1 \n"
    );
    let out = curl_ok(&["-x", &proxy, "-d", "payload", &url]).await;
    assert_eq!(out, "server-a POST /abs?x=1 payload\n");
    let tunnelled = curl_ok(&["-p", "-x", &proxy, &format!("http://127.0.0.1:{b}/tun")]).await;
    assert_eq!(tunnelled, "server-b GET /tun \n");

    // One curl, one proxy connection, two servers: each request must reach its own.
    let urls = [
        format!("http://127.0.0.1:{a}/one"),
        format!("http://127.0.0.1:{b}/two"),
    ];
    let out = curl_ok(&[
        "-x",
        &proxy,
        "-w",
        "[%{num_connects}]\n",
        &urls[0],
        &urls[1],
    ])
    .await;
    assert_eq!(out, "server-a GET /one \n[1]\nserver-b GET /two \n[0]\n");
}

#[tokio::test]
async fn credentials_through_curl() {
    let a = http_server("server-a").await;
    let p = start_proxy(Some(ProxyCredentials::new("user", "pw"))).await;
    let url = format!("http://127.0.0.1:{a}/private");
    let want = "server-a GET /private \n";
    let proxy = format!("http://{}", p.addr);
    for args in [
        vec![
            "--socks5-hostname",
            &p.addr,
            "--proxy-user",
            "user:pw",
            &url,
        ],
        vec!["-x", &proxy, "--proxy-user", "user:pw", &url],
        vec!["-p", "-x", &proxy, "--proxy-user", "user:pw", &url],
    ] {
        assert_eq!(curl_ok(&args).await, want, "{args:?}");
    }
    for args in [
        vec![
            "--socks5-hostname",
            &p.addr,
            "--proxy-user",
            "user:nope",
            &url,
        ],
        vec!["--socks5-hostname", &p.addr, &url],
        vec!["--socks4", &p.addr, &url],
    ] {
        assert!(!curl(&args).await.0, "{args:?} should fail");
    }
    for args in [
        vec!["-x", &proxy, "--proxy-user", "user:nope", &url],
        vec!["-x", &proxy, &url],
    ] {
        let (_, out, _) =
            curl(&[&["-o", "/dev/null", "-w", "%{http_code}"], &args[..]].concat()).await;
        assert_eq!(out, "407", "{args:?}");
    }
    assert!(p.seen().iter().all(|t| t == &format!("127.0.0.1:{a}")));
}

#[tokio::test]
async fn refusals_through_curl() {
    let p = start_proxy(None).await;
    let proxy = format!("http://{}", p.addr);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for (port, code) in [(DENIED, "403"), (closed, "502")] {
        let url = format!("http://127.0.0.1:{port}/");
        let (_, out, _) =
            curl(&["-o", "/dev/null", "-w", "%{http_code}", "-x", &proxy, &url]).await;
        assert_eq!(out, code, "port {port}");
        let (ok, _, err) = curl(&["--socks5-hostname", &p.addr, &url]).await;
        assert!(!ok, "SOCKS to port {port} should fail");
        // curl prints the SOCKS5 reply code, or its meaning in newer versions.
        let (code, why) = if port == DENIED {
            ("(2)", "not allowed")
        } else {
            ("(5)", "refused")
        };
        let err = err.to_lowercase();
        assert!(
            err.contains(code) || err.contains(why),
            "port {port}: {err}"
        );
    }
    let (ok, _, err) = curl(&["-p", "-x", &proxy, &format!("http://127.0.0.1:{DENIED}/")]).await;
    assert!(!ok && err.contains("403"), "{err}");
}

#[tokio::test]
async fn hostile_clients_over_tcp_are_closed() {
    let p = start_proxy(None).await;
    let started = std::time::Instant::now();
    // Silent: closed once the handshake time is up.
    let mut silent = TcpStream::connect(&p.addr).await.unwrap();
    // Garbage: closed at once.
    let mut garbage = TcpStream::connect(&p.addr).await.unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x02\x00garbage")
        .await
        .unwrap();
    for s in [&mut silent, &mut garbage] {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?} {buf:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(p.seen().is_empty());
}

#[tokio::test]
async fn cancel_stops_serving() {
    let p = start_proxy(None).await;
    let mut idle = TcpStream::connect(&p.addr).await.unwrap();
    p.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), p.task)
        .await
        .expect("serve did not return after cancel")
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(idle.read(&mut buf).await, Ok(0) | Err(_)));
    assert!(TcpStream::connect(&p.addr).await.is_err());
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let p = start_proxy(None).await;
    let port: u16 = p.addr.rsplit(':').next().unwrap().parse().unwrap();
    let fwd = DynamicForward {
        bind: Some("127.0.0.1".into()),
        port,
        spec: format!("127.0.0.1:{port}"),
    };
    let err = DynamicListener::bind(&fwd, false, None)
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("-D") && text.contains("already in use"),
        "{text}"
    );
}

#[tokio::test]
async fn default_bind_is_loopback_on_one_port() {
    let fwd = DynamicForward {
        bind: None,
        port: 0,
        spec: "0".into(),
    };
    let l = DynamicListener::bind(&fwd, false, None).await.unwrap();
    let addrs: Vec<SocketAddr> = l.addresses().iter().map(|a| a.parse().unwrap()).collect();
    assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    assert!(addrs.iter().all(|a| a.port() == addrs[0].port()));
}
