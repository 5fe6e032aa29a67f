//! SOCKS4 and SOCKS4a: one CONNECT request, one 8-byte reply, no negotiation.

use super::buffered::Buffered;
use super::{Failure, HandshakeError, ProxyConfig, valid_host};
use crate::config::forward::Endpoint;
use std::net::Ipv4Addr;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

const GRANTED: u8 = 0x5A;
const REJECTED: u8 = 0x5B;
/// User ids and 4a host names are NUL-terminated; real ones are short, so anything longer
/// is hostile and must not make us buffer without end.
const MAX_STRING: usize = 255;

/// Reads a SOCKS4 request (version byte included) and returns its target. Refusals are
/// answered here; the caller answers the open.
pub(crate) async fn handshake<S>(
    conn: &mut Buffered<S>,
    cfg: &ProxyConfig,
) -> Result<Endpoint, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = conn.need(8).await?;
    let mut fixed = [0u8; 8];
    fixed.copy_from_slice(head.get(..8).unwrap_or(&[0; 8]));
    conn.consume(8);
    let [_version, command, p1, p2, a, b, c, d] = fixed;
    let port = u16::from_be_bytes([p1, p2]);
    let ip = Ipv4Addr::new(a, b, c, d);

    let Some(_user_id) = conn.take_until_nul(MAX_STRING).await? else {
        return refuse(conn, "SOCKS4 user id too long").await;
    };
    // 4a: an address of 0.0.0.x (x != 0) means "the host name follows".
    let host = if a == 0 && b == 0 && c == 0 && d != 0 {
        let Some(name) = conn.take_until_nul(MAX_STRING).await? else {
            return refuse(conn, "SOCKS4a host name too long").await;
        };
        match String::from_utf8(name) {
            Ok(h) if valid_host(&h) => h,
            _ => return refuse(conn, "SOCKS4a host name is not valid").await,
        }
    } else {
        ip.to_string()
    };

    if cfg.auth.is_some() {
        // SOCKS4 carries no password, so it cannot meet the configured credentials.
        send_refusal(conn).await?;
        return Err(HandshakeError::AuthFailed);
    }
    if command != 1 {
        return refuse(conn, &format!("SOCKS4 command {command} is not supported")).await;
    }
    if port == 0 {
        return refuse(conn, "SOCKS4 request for port 0").await;
    }
    Ok(Endpoint::Tcp { host, port })
}

async fn refuse<S: AsyncWrite + Unpin>(
    conn: &mut Buffered<S>,
    why: &str,
) -> Result<Endpoint, HandshakeError> {
    send_refusal(conn).await?;
    Err(HandshakeError::Rejected(why.to_string()))
}

async fn send_refusal<S: AsyncWrite + Unpin>(conn: &mut Buffered<S>) -> std::io::Result<()> {
    conn.write_all(&reply(Some(Failure::Refused))).await?;
    conn.shutdown().await
}

/// SOCKS4 has one failure code, so every [`Failure`] maps to it.
pub(crate) fn reply(failure: Option<Failure>) -> [u8; 8] {
    let code = if failure.is_some() { REJECTED } else { GRANTED };
    [0, code, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{Harness, creds};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn request(command: u8, port: u16, ip: [u8; 4], user: &[u8], host: Option<&[u8]>) -> Vec<u8> {
        let mut v = vec![4, command];
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(&ip);
        v.extend_from_slice(user);
        v.push(0);
        if let Some(h) = host {
            v.extend_from_slice(h);
            v.push(0);
        }
        v
    }

    #[tokio::test]
    async fn connect_by_address_and_early_data() {
        let mut h = Harness::start(Default::default());
        let mut req = request(1, 8080, [10, 1, 2, 3], b"alice", None);
        req.extend_from_slice(b"early");
        h.client.write_all(&req).await.unwrap();
        let mut reply = [0u8; 8];
        h.client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[..2], [0, 0x5A]);
        let mut target = h.next_target().await;
        assert_eq!(
            target.endpoint,
            Endpoint::Tcp {
                host: "10.1.2.3".into(),
                port: 8080
            }
        );
        target.expect(b"early").await;
        target.stream.write_all(b"back").await.unwrap();
        h.client.read_exact(&mut reply[..4]).await.unwrap();
        assert_eq!(&reply[..4], b"back");
    }

    #[tokio::test]
    async fn socks4a_passes_the_name_unresolved() {
        let mut h = Harness::start(Default::default());
        let req = request(1, 443, [0, 0, 0, 1], b"", Some(b"example.org"));
        h.client.write_all(&req).await.unwrap();
        let mut reply = [0u8; 8];
        h.client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[1], 0x5A);
        let target = h.next_target().await;
        assert_eq!(
            target.endpoint,
            Endpoint::Tcp {
                host: "example.org".into(),
                port: 443
            }
        );
    }

    #[tokio::test]
    async fn refused_when_credentials_are_required() {
        let mut h = Harness::start(ProxyConfig {
            auth: Some(creds()),
            ..Default::default()
        });
        h.client
            .write_all(&request(1, 80, [127, 0, 0, 1], b"u", None))
            .await
            .unwrap();
        assert_eq!(h.read_all().await, [0, 0x5B, 0, 0, 0, 0, 0, 0]);
        assert!(h.opened().is_empty());
    }

    #[tokio::test]
    async fn bind_and_port_zero_and_bad_names_are_rejected() {
        for req in [
            request(2, 80, [127, 0, 0, 1], b"", None),
            request(1, 0, [127, 0, 0, 1], b"", None),
            request(1, 80, [0, 0, 0, 9], b"", Some(b"bad host")),
            request(1, 80, [0, 0, 0, 9], b"", Some(b"")),
        ] {
            let mut h = Harness::start(Default::default());
            h.client.write_all(&req).await.unwrap();
            assert_eq!(h.read_all().await, [0, 0x5B, 0, 0, 0, 0, 0, 0]);
            assert!(h.opened().is_empty());
        }
    }

    #[tokio::test]
    async fn open_failures_are_rejections() {
        let mut h = Harness::start(Default::default());
        h.client
            .write_all(&request(1, 9, [127, 0, 0, 1], b"", None))
            .await
            .unwrap();
        assert_eq!(h.read_all().await, [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn overlong_and_truncated_requests_end_cleanly() {
        let mut h = Harness::start(Default::default());
        let mut req = request(1, 80, [127, 0, 0, 1], &[b'u'; 300], None);
        req.truncate(200);
        h.client.write_all(&req).await.unwrap();
        h.client.write_all(&[b'u'; 200]).await.unwrap();
        assert_eq!(h.read_all().await, [0, 0x5B, 0, 0, 0, 0, 0, 0]);

        let mut h = Harness::start(Default::default());
        h.client.write_all(&[4, 1, 0]).await.unwrap();
        h.client.shutdown().await.unwrap();
        assert!(h.read_all().await.is_empty());
        h.finished().await;
    }
}
