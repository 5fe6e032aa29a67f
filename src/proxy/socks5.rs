//! SOCKS5 (RFC 1928) with no-auth and username/password (RFC 1929): method choice,
//! optional login, then one CONNECT request.

use super::buffered::Buffered;
use super::{Failure, HandshakeError, ProxyConfig, valid_host};
use crate::config::forward::Endpoint;
use std::net::{Ipv4Addr, Ipv6Addr};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

const NO_AUTH: u8 = 0x00;
const USER_PASS: u8 = 0x02;
const NO_ACCEPTABLE: u8 = 0xFF;

const GENERAL_FAILURE: u8 = 0x01;
const NOT_ALLOWED: u8 = 0x02;
const HOST_UNREACHABLE: u8 = 0x04;
const CONNECTION_REFUSED: u8 = 0x05;
const COMMAND_NOT_SUPPORTED: u8 = 0x07;
const ADDRESS_NOT_SUPPORTED: u8 = 0x08;

/// Runs the negotiation up to a CONNECT request (version byte not yet consumed) and returns
/// its target. Refusals are answered here; the caller answers the open.
pub(crate) async fn handshake<S>(
    conn: &mut Buffered<S>,
    cfg: &ProxyConfig,
) -> Result<Endpoint, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let count = usize::from(conn.need(2).await?.get(1).copied().unwrap_or(0));
    let methods = conn
        .need(2 + count)
        .await?
        .get(2..2 + count)
        .unwrap_or_default();
    // With credentials configured, only a login will do. Without, a client that only
    // offers a login (it was configured with one) is let in with whatever it sends.
    let method = if cfg.auth.is_some() {
        methods.contains(&USER_PASS).then_some(USER_PASS)
    } else if methods.contains(&NO_AUTH) {
        Some(NO_AUTH)
    } else {
        methods.contains(&USER_PASS).then_some(USER_PASS)
    };
    conn.consume(2 + count);
    conn.write_all(&[5, method.unwrap_or(NO_ACCEPTABLE)])
        .await?;
    match method {
        None => {
            conn.shutdown().await?;
            return Err(if cfg.auth.is_some() {
                HandshakeError::AuthFailed
            } else {
                HandshakeError::Rejected("no acceptable SOCKS5 auth method offered".into())
            });
        }
        Some(USER_PASS) => login(conn, cfg).await?,
        Some(_) => {}
    }
    request(conn).await
}

/// RFC 1929 sub-negotiation. Lengths are single bytes, so the message is bounded.
async fn login<S>(conn: &mut Buffered<S>, cfg: &ProxyConfig) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = conn.need(2).await?;
    let (version, user_len) = (
        head.first().copied(),
        usize::from(head.get(1).copied().unwrap_or(0)),
    );
    if version != Some(1) {
        return Err(HandshakeError::Rejected("bad SOCKS5 login version".into()));
    }
    let pass_len = usize::from(
        conn.need(3 + user_len)
            .await?
            .get(2 + user_len)
            .copied()
            .unwrap_or(0),
    );
    let total = 3 + user_len + pass_len;
    let msg = conn.need(total).await?;
    let user = msg.get(2..2 + user_len).unwrap_or_default();
    let pass = msg.get(3 + user_len..total).unwrap_or_default();
    let ok = cfg.auth.as_ref().is_none_or(|c| c.matches(user, pass));
    conn.consume(total);
    conn.write_all(&[1, if ok { 0 } else { 1 }]).await?;
    if ok {
        Ok(())
    } else {
        conn.shutdown().await?;
        Err(HandshakeError::AuthFailed)
    }
}

async fn request<S>(conn: &mut Buffered<S>) -> Result<Endpoint, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut fixed = [0u8; 4];
    fixed.copy_from_slice(conn.need(4).await?.get(..4).unwrap_or(&[0; 4]));
    let [version, command, _reserved, address_type] = fixed;
    if version != 5 {
        return Err(HandshakeError::Rejected(format!(
            "SOCKS5 request with version {version}"
        )));
    }
    let address_len = match address_type {
        1 => 4,
        4 => 16,
        3 => 1 + usize::from(conn.need(5).await?.get(4).copied().unwrap_or(0)),
        other => {
            return refuse(
                conn,
                ADDRESS_NOT_SUPPORTED,
                format!("SOCKS5 address type {other}"),
            )
            .await;
        }
    };
    let total = 4 + address_len + 2;
    let msg = conn.need(total).await?;
    let address = msg.get(4..4 + address_len).unwrap_or_default();
    let port_bytes = msg.get(total - 2..total).unwrap_or_default();
    let port = u16::from_be_bytes([
        port_bytes.first().copied().unwrap_or(0),
        port_bytes.get(1).copied().unwrap_or(0),
    ]);
    let host = match address_type {
        1 => <[u8; 4]>::try_from(address)
            .ok()
            .map(|a| Ipv4Addr::from(a).to_string()),
        4 => <[u8; 16]>::try_from(address)
            .ok()
            .map(|a| Ipv6Addr::from(a).to_string()),
        // A name goes to the server unresolved, as socks5h clients expect.
        _ => std::str::from_utf8(address.get(1..).unwrap_or_default())
            .ok()
            .filter(|h| valid_host(h))
            .map(str::to_string),
    };
    conn.consume(total);
    if command != 1 {
        let what = match command {
            2 => "BIND".to_string(),
            3 => "UDP ASSOCIATE".to_string(),
            c => format!("command {c}"),
        };
        return refuse(
            conn,
            COMMAND_NOT_SUPPORTED,
            format!("SOCKS5 {what} is not supported"),
        )
        .await;
    }
    let Some(host) = host else {
        return refuse(
            conn,
            HOST_UNREACHABLE,
            "SOCKS5 host name is not valid".into(),
        )
        .await;
    };
    if port == 0 {
        return refuse(conn, GENERAL_FAILURE, "SOCKS5 request for port 0".into()).await;
    }
    Ok(Endpoint::Tcp { host, port })
}

async fn refuse<S: AsyncWrite + Unpin>(
    conn: &mut Buffered<S>,
    code: u8,
    why: String,
) -> Result<Endpoint, HandshakeError> {
    conn.write_all(&reply_code(code)).await?;
    conn.shutdown().await?;
    Err(HandshakeError::Rejected(why))
}

/// The reply to a CONNECT. The bound address is not known through a tunnel, and clients
/// ignore it for CONNECT, so it is always 0.0.0.0:0.
pub(crate) fn reply(failure: Option<Failure>) -> [u8; 10] {
    reply_code(match failure {
        None => 0x00,
        Some(Failure::Prohibited) => NOT_ALLOWED,
        Some(Failure::Refused) => CONNECTION_REFUSED,
        Some(Failure::Unreachable | Failure::TimedOut) => HOST_UNREACHABLE,
        Some(Failure::Broken) => GENERAL_FAILURE,
    })
}

fn reply_code(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
#[path = "socks5_tests.rs"]
mod tests;
