//! HTTP proxy tests over in-memory pipes: CONNECT, absolute-form forwarding, framing,
//! keep-alive across hosts, credentials, and hostile clients.

use crate::config::forward::Endpoint;
use crate::proxy::ProxyConfig;
use crate::proxy::testing::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const ESTABLISHED: &str = "HTTP/1.1 200 Connection established\r\n\r\n";

fn tcp(host: &str, port: u16) -> Endpoint {
    Endpoint::Tcp {
        host: host.into(),
        port,
    }
}

fn with_auth() -> ProxyConfig {
    ProxyConfig {
        auth: Some(creds()),
        ..Default::default()
    }
}

/// `user:s3cret`, as a client would send it.
const GOOD_AUTH: &str = "Proxy-Authorization: Basic dXNlcjpzM2NyZXQ=\r\n";

fn short_timeout() -> ProxyConfig {
    ProxyConfig {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

#[tokio::test]
async fn connect_forwards_bytes_sent_with_the_request() {
    let mut h = Harness::start(Default::default());
    h.send(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n\x16\x03early")
        .await;
    assert_eq!(h.read_n(ESTABLISHED.len()).await, ESTABLISHED);
    let mut t = h.next_target().await;
    assert_eq!(t.endpoint, tcp("example.org", 443));
    t.expect(b"\x16\x03early").await;
    t.stream.write_all(b"server hello").await.unwrap();
    assert_eq!(h.read_n(12).await, "server hello");
}

#[tokio::test]
async fn connect_asks_for_credentials_then_accepts_them() {
    let mut h = Harness::start(with_auth());
    h.send(b"CONNECT example.org:443 HTTP/1.1\r\n\r\n").await;
    let head = read_response(&mut h).await;
    assert!(head.starts_with("HTTP/1.1 407 "), "{head}");
    assert!(
        head.contains("Proxy-Authenticate: Basic realm=\"warren\"\r\n"),
        "{head}"
    );
    assert!(!head.contains("Connection: close"), "{head}");
    h.send(format!("CONNECT example.org:443 HTTP/1.1\r\n{GOOD_AUTH}\r\n").as_bytes())
        .await;
    assert_eq!(h.read_n(ESTABLISHED.len()).await, ESTABLISHED);
    assert_eq!(h.opened(), [tcp("example.org", 443)]);
}

#[tokio::test]
async fn wrong_credentials_get_407() {
    let mut h = Harness::start(with_auth());
    let req = "GET http://a.test/ HTTP/1.1\r\nProxy-Authorization: Basic dXNlcjp4\r\n\r\n";
    h.send(req.as_bytes()).await;
    assert!(read_response(&mut h).await.starts_with("HTTP/1.1 407 "));
    h.send(b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    let rest = h.read_text().await;
    assert!(
        rest.starts_with("HTTP/1.1 407 ") && rest.contains("Connection: close"),
        "{rest}"
    );
    assert!(h.opened().is_empty());
}

#[tokio::test]
async fn absolute_form_is_rewritten_for_the_origin() {
    let mut h = Harness::start(with_auth());
    let req = format!(
        "GET http://example.org:8080/p?q=1#frag HTTP/1.1\r\nHost: wrong.test\r\n{GOOD_AUTH}\
         Proxy-Connection: keep-alive\r\nConnection: X-Private\r\nX-Private: 1\r\n\
         Keep-Alive: 300\r\nTE: trailers\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n"
    );
    h.send(req.as_bytes()).await;
    let mut t = h.next_target().await;
    assert_eq!(t.endpoint, tcp("example.org", 8080));
    assert_eq!(
        t.read_head().await,
        "GET /p?q=1 HTTP/1.1\r\nHost: example.org:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    t.stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\r\nhello")
        .await
        .unwrap();
    let want = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(h.read_n(want.len()).await, want);
}

/// Reads one response head plus a Content-Length body.
async fn read_response(h: &mut Harness) -> String {
    let mut text = String::new();
    while !text.ends_with("\r\n\r\n") {
        text.push_str(&h.read_n(1).await);
    }
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    text.push_str(&h.read_n(length).await);
    text
}

#[tokio::test]
async fn pipelined_requests_to_different_hosts_each_reach_their_host() {
    let mut h = Harness::start(Default::default());
    h.send(b"GET http://a.test/one HTTP/1.1\r\nHost: a.test\r\n\r\nGET http://b.test:81/two HTTP/1.1\r\nHost: b.test:81\r\n\r\n")
        .await;
    for (host, port, path, body) in [
        ("a.test", 80, "/one", "from a"),
        ("b.test", 81, "/two", "from b"),
    ] {
        let mut t = h.next_target().await;
        assert_eq!(t.endpoint, tcp(host, port));
        assert!(
            t.read_head()
                .await
                .starts_with(&format!("GET {path} HTTP/1.1\r\n"))
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        t.stream.write_all(resp.as_bytes()).await.unwrap();
        assert!(read_response(&mut h).await.ends_with(body));
    }
}

#[tokio::test]
async fn request_bodies_are_forwarded_and_framing_kept() {
    let mut h = Harness::start(Default::default());
    h.send(b"POST http://a.test/up HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world")
        .await;
    let mut t = h.next_target().await;
    assert!(t.read_head().await.contains("Content-Length: 11\r\n"));
    t.expect(b"hello world").await;
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    t.stream.write_all(chunked.as_bytes()).await.unwrap();
    assert_eq!(h.read_n(chunked.len()).await, chunked);

    let body = "3\r\nabc\r\n0\r\n\r\n";
    let req = format!(
        "PUT http://b.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}HEAD http://c.test/ HTTP/1.1\r\n\r\n"
    );
    h.send(req.as_bytes()).await;
    let mut t = h.next_target().await;
    assert!(
        t.read_head()
            .await
            .contains("Transfer-Encoding: chunked\r\n")
    );
    t.expect(body.as_bytes()).await;
    t.stream
        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(h.read_n(27).await, "HTTP/1.1 204 No Content\r\n\r\n");

    // HEAD: a Content-Length, but no body follows.
    let mut t = h.next_target().await;
    assert_eq!(t.endpoint, tcp("c.test", 80));
    t.read_head().await;
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    t.stream.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(h.read_n(head.len()).await, head);
    h.send(b"GET http://d.test/ HTTP/1.1\r\n\r\n").await;
    assert_eq!(h.next_target().await.endpoint, tcp("d.test", 80));
}

#[tokio::test]
async fn close_delimited_response_closes_the_client() {
    let mut h = Harness::start(Default::default());
    h.send(b"GET http://a.test/ HTTP/1.1\r\n\r\n").await;
    let mut t = h.next_target().await;
    t.read_head().await;
    t.stream
        .write_all(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the end")
        .await
        .unwrap();
    drop(t);
    let got = h.read_text().await;
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\r\nServer: old\r\nConnection: close\r\n\r\nuntil the end"
    );
    h.finished().await;
}

#[tokio::test]
async fn a_delimited_http10_response_keeps_the_client_connection() {
    let mut h = Harness::start(Default::default());
    h.send(b"GET http://old.test/ HTTP/1.1\r\n\r\n").await;
    let mut t = h.next_target().await;
    t.read_head().await;
    let resp = "HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
    t.stream.write_all(resp.as_bytes()).await.unwrap();
    drop(t);
    let want = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(h.read_n(want.len()).await, want);
    h.send(b"GET http://new.test/ HTTP/1.1\r\n\r\n").await;
    assert_eq!(h.next_target().await.endpoint, tcp("new.test", 80));
}

#[tokio::test]
async fn expect_continue_is_relayed_before_the_body() {
    let mut h = Harness::start(Default::default());
    h.send(b"POST http://a.test/ HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    let mut t = h.next_target().await;
    t.read_head().await;
    t.stream
        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(h.read_n(25).await, "HTTP/1.1 100 Continue\r\n\r\n");
    h.send(b"body").await;
    t.expect(b"body").await;
    t.stream
        .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_response(&mut h)
            .await
            .starts_with("HTTP/1.1 201 Created")
    );
}

#[tokio::test]
async fn upgrade_becomes_a_raw_relay() {
    let mut h = Harness::start(Default::default());
    h.send(b"GET http://a.test/ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    let mut t = h.next_target().await;
    let head = t.read_head().await;
    assert!(
        head.ends_with("Upgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
        "{head}"
    );
    let resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe";
    t.stream.write_all(resp.as_bytes()).await.unwrap();
    let want = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nframe";
    assert_eq!(h.read_n(want.len()).await, want);
    h.send(b"reply").await;
    t.expect(b"reply").await;
}

#[tokio::test]
async fn open_failures_become_http_errors() {
    for (port, status) in [
        (PORT_REFUSED, 502),
        (PORT_PROHIBITED, 403),
        (PORT_TIMEOUT, 504),
        (PORT_BROKEN, 502),
    ] {
        let mut h = Harness::start(Default::default());
        h.send(format!("GET http://example.org:{port}/ HTTP/1.1\r\n\r\n").as_bytes())
            .await;
        let got = read_response(&mut h).await;
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{got}");
        assert!(got.contains(&format!("example.org:{port}")), "{got}");
        // The connection survives for the next request.
        h.send(format!("CONNECT example.org:{port} HTTP/1.1\r\n\r\n").as_bytes())
            .await;
        assert!(
            read_response(&mut h)
                .await
                .starts_with(&format!("HTTP/1.1 {status} "))
        );
    }
}

#[tokio::test]
async fn a_server_that_closes_without_answering_is_a_502() {
    let mut h = Harness::start(Default::default());
    h.send(b"GET http://a.test/ HTTP/1.1\r\n\r\n").await;
    let mut t = h.next_target().await;
    t.read_head().await;
    drop(t);
    let got = h.read_text().await;
    assert!(
        got.starts_with("HTTP/1.1 502 ") && got.contains("a.test:80"),
        "{got}"
    );
    h.finished().await;
}

#[tokio::test]
async fn bad_requests_are_answered_and_closed() {
    for (req, status) in [
        ("GET https://a.test/ HTTP/1.1\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", "400"),
        ("GARBAGE\x01\x02 HTTP/1.1\r\n\r\n", "400"),
        ("CONNECT a.test HTTP/1.1\r\n\r\n", "400"),
    ] {
        let mut h = Harness::start(Default::default());
        h.send(req.as_bytes()).await;
        let got = h.read_text().await;
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?}: {got}"
        );
        assert!(got.contains("Connection: close"));
        assert!(h.opened().is_empty());
        h.finished().await;
    }
    let mut h = Harness::start(Default::default());
    h.send(b"GET https://a.test/ HTTP/1.1\r\n\r\n").await;
    assert!(h.read_text().await.contains("CONNECT"));
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let mut h = Harness::start(Default::default());
    let mut req = b"GET http://a.test/ HTTP/1.1\r\n".to_vec();
    while req.len() < 20 * 1024 {
        req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    // The proxy stops reading at its limit, so do not wait for it to take all of this.
    let send = tokio::spawn(async move {
        let _ = h.client.write_all(&req).await;
        h
    });
    let mut h = send.await.unwrap();
    assert!(h.read_text().await.starts_with("HTTP/1.1 431 "));
    h.finished().await;
}

#[tokio::test]
async fn a_slow_head_times_out() {
    let mut h = Harness::start(short_timeout());
    let started = std::time::Instant::now();
    for b in b"GET http://a.test/ HTTP/1.1\r\nX: y" {
        if h.client.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = h.read_text().await;
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408 "), "{got}");
    assert!(started.elapsed() < Duration::from_secs(5));
    h.finished().await;
}

#[tokio::test]
async fn truncated_heads_end_cleanly() {
    let mut h = Harness::start(Default::default());
    h.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a").await;
    h.client.shutdown().await.unwrap();
    assert!(h.read_all().await.is_empty());
    h.finished().await;
}
