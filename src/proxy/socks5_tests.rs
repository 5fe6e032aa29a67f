//! SOCKS5 negotiation tests over in-memory pipes.

use crate::config::forward::Endpoint;
use crate::proxy::ProxyConfig;
use crate::proxy::testing::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn connect(address_type: u8, address: &[u8], port: u16) -> Vec<u8> {
    let mut v = vec![5, 1, 0, address_type];
    if address_type == 3 {
        v.push(address.len() as u8);
    }
    v.extend_from_slice(address);
    v.extend_from_slice(&port.to_be_bytes());
    v
}

fn login(user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut v = vec![1, user.len() as u8];
    v.extend_from_slice(user);
    v.push(pass.len() as u8);
    v.extend_from_slice(pass);
    v
}

const OK: [u8; 10] = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];

fn with_auth() -> ProxyConfig {
    ProxyConfig {
        auth: Some(creds()),
        ..Default::default()
    }
}

async fn connect_to(address_type: u8, address: &[u8], want: Endpoint) {
    let mut h = Harness::start(Default::default());
    h.send(&[5, 1, 0]).await;
    assert_eq!(h.read_n(2).await.as_bytes(), [5, 0]);
    h.send(&connect(address_type, address, 80)).await;
    assert_eq!(h.read_n(10).await.as_bytes(), OK);
    let mut t = h.next_target().await;
    assert_eq!(t.endpoint, want);
    h.send(b"ping").await;
    t.expect(b"ping").await;
    t.stream.write_all(b"pong").await.unwrap();
    assert_eq!(h.read_n(4).await, "pong");
    drop(t);
    h.client.shutdown().await.unwrap();
    assert!(h.read_all().await.is_empty());
    h.finished().await;
}

fn tcp(host: &str, port: u16) -> Endpoint {
    Endpoint::Tcp {
        host: host.into(),
        port,
    }
}

#[tokio::test]
async fn connect_ipv4_ipv6_and_unresolved_names() {
    connect_to(1, &[192, 0, 2, 7], tcp("192.0.2.7", 80)).await;
    let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    connect_to(4, &v6.octets(), tcp("2001:db8::1", 80)).await;
    connect_to(3, b"intranet.example", tcp("intranet.example", 80)).await;
}

#[tokio::test]
async fn optimistic_data_sent_with_the_request_is_forwarded() {
    let mut h = Harness::start(Default::default());
    let mut all = vec![5, 1, 0];
    all.extend(connect(3, b"example.org", 443));
    all.extend_from_slice(b"\x16\x03\x01hello");
    h.send(&all).await;
    assert_eq!(h.read_n(12).await.as_bytes()[..2], [5, 0]);
    let mut t = h.next_target().await;
    t.expect(b"\x16\x03\x01hello").await;
}

#[tokio::test]
async fn login_accepted() {
    let mut h = Harness::start(with_auth());
    h.send(&[5, 2, 0, 2]).await;
    assert_eq!(h.read_n(2).await.as_bytes(), [5, 2]);
    h.send(&login(b"user", b"s3cret")).await;
    assert_eq!(h.read_n(2).await.as_bytes(), [1, 0]);
    h.send(&connect(1, &[127, 0, 0, 1], 22)).await;
    assert_eq!(h.read_n(10).await.as_bytes(), OK);
    assert_eq!(h.next_target().await.endpoint, tcp("127.0.0.1", 22));
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let mut h = Harness::start(with_auth());
    h.send(&[5, 1, 2]).await;
    assert_eq!(h.read_n(2).await.as_bytes(), [5, 2]);
    h.send(&login(b"user", b"guess")).await;
    assert_eq!(h.read_all().await, [1, 1]);
    assert!(h.opened().is_empty());
    h.finished().await;
}

#[tokio::test]
async fn no_auth_only_client_is_refused_when_credentials_are_set() {
    let mut h = Harness::start(with_auth());
    h.send(&[5, 1, 0]).await;
    assert_eq!(h.read_all().await, [5, 0xFF]);
    h.finished().await;
}

#[tokio::test]
async fn login_only_client_gets_in_without_configured_credentials() {
    let mut h = Harness::start(Default::default());
    h.send(&[5, 1, 2]).await;
    assert_eq!(h.read_n(2).await.as_bytes(), [5, 2]);
    h.send(&login(b"any", b"thing")).await;
    assert_eq!(h.read_n(2).await.as_bytes(), [1, 0]);
}

#[tokio::test]
async fn unsupported_methods_commands_and_address_types() {
    let mut h = Harness::start(Default::default());
    h.send(&[5, 2, 1, 3]).await;
    assert_eq!(h.read_all().await, [5, 0xFF]);

    for (request, code) in [
        (vec![5, 2, 0, 1, 127, 0, 0, 1, 0, 80], 0x07), // BIND
        (vec![5, 3, 0, 1, 127, 0, 0, 1, 0, 80], 0x07), // UDP ASSOCIATE
        (vec![5, 1, 0, 9, 127, 0, 0, 1, 0, 80], 0x08), // unknown address type
        (connect(3, b"bad name", 80), 0x04),
        (connect(1, &[127, 0, 0, 1], 0), 0x01),
    ] {
        let mut h = Harness::start(Default::default());
        h.send(&[5, 1, 0]).await;
        h.send(&request).await;
        let got = h.read_all().await;
        assert_eq!(got.get(2..4), Some(&[5, code][..]), "for {request:?}");
        assert!(h.opened().is_empty());
        h.finished().await;
    }
}

#[tokio::test]
async fn open_failures_map_to_reply_codes() {
    for (port, code) in [
        (PORT_PROHIBITED, 0x02),
        (PORT_REFUSED, 0x05),
        (PORT_TIMEOUT, 0x04),
        (PORT_BROKEN, 0x01),
    ] {
        let mut h = Harness::start(Default::default());
        h.send(&[5, 1, 0]).await;
        h.send(&connect(3, b"example.org", port)).await;
        let got = h.read_all().await;
        assert_eq!(got.get(2..4), Some(&[5, code][..]), "for port {port}");
        h.finished().await;
    }
}

#[tokio::test]
async fn a_tunnel_open_that_never_answers_is_given_up() {
    let cfg = ProxyConfig {
        open_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let mut h = Harness::start(cfg);
    h.send(&[5, 1, 0]).await;
    h.send(&connect(1, &[10, 0, 0, 1], PORT_HANGS)).await;
    assert_eq!(h.read_all().await.get(2..4), Some(&[5, 0x04][..]));
    h.finished().await;
}

#[tokio::test]
async fn many_methods_then_silence_times_out() {
    let cfg = ProxyConfig {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    // All 255 methods (then no request), and a greeting cut short of its 255 methods.
    let full: Vec<u8> = [5, 255].into_iter().chain(0..=254).collect();
    let partial: Vec<u8> = [5, 255].into_iter().chain(0..200).collect();
    for (greeting, answer) in [(full, vec![5, 0]), (partial, vec![])] {
        let mut h = Harness::start(cfg.clone());
        h.send(&greeting).await;
        let started = std::time::Instant::now();
        assert_eq!(h.read_all().await, answer);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(h.opened().is_empty());
        h.finished().await;
    }
}

#[tokio::test]
async fn truncated_messages_end_cleanly() {
    for bytes in [
        &[5][..],
        &[5, 3, 0][..],
        &[5, 1, 0, 5, 1, 0, 3, 20, b'a'][..],
        &[5, 1, 0, 5, 1, 0, 4, 0, 0][..],
    ] {
        let mut h = Harness::start(Default::default());
        h.send(bytes).await;
        h.client.shutdown().await.unwrap();
        let got = h.read_all().await;
        assert!(got.is_empty() || got == [5, 0], "for {bytes:?}: {got:?}");
        assert!(h.opened().is_empty());
        h.finished().await;
    }
}
