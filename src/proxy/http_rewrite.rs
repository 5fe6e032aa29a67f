//! Rewriting message heads as they cross the proxy: origin-form request lines, `Host`
//! from the URL, and hop-by-hop fields (RFC 9110 §7.6.1) kept on their own hop.

use super::http::Request;
use super::http_body::tokens;

const MAX_RESPONSE_HEADERS: usize = 256;

/// Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection, not the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

pub(crate) struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub(crate) fn parse_response(head: &[u8]) -> Result<ResponseHead, String> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    // Servers are less careful than clients; a stray bad line is dropped, not fatal.
    let parsed = httparse::ParserConfig::default()
        .ignore_invalid_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .parse_response(&mut resp, head);
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete response head".into()),
        Err(e) => return Err(format!("malformed response: {e}")),
    }
    Ok(ResponseHead {
        status: resp.code.unwrap_or(502),
        reason: resp.reason.unwrap_or_default().to_string(),
        headers: resp
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
    })
}

impl ResponseHead {
    /// The head as the client gets it: hop-by-hop fields replaced by `connection`, and our
    /// own version (RFC 9110 §6.2), since persistence on the client's hop is ours to
    /// decide: an HTTP/1.0 server's delimited response must not make the client close.
    pub(crate) fn emit(&self, connection: &str, keep_upgrade: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason).into_bytes();
        let listed = connection_tokens(&self.headers);
        for (name, value) in &self.headers {
            let is_upgrade = name.eq_ignore_ascii_case("upgrade");
            if !(keep_upgrade && is_upgrade) && is_hop_by_hop(name, &listed) {
                continue;
            }
            push_header(&mut out, name, value);
        }
        if !connection.is_empty() {
            out.extend_from_slice(connection.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The request in origin-form for the server, with `Host` taken from the URL (RFC 9112
/// §3.2.2) and the client's hop-by-hop fields (credentials for us among them) removed.
pub(crate) fn origin_head(req: &Request, authority: &str, path: &str, upgrade: bool) -> Vec<u8> {
    let mut out = format!(
        "{} {} HTTP/1.{}\r\nHost: {authority}\r\n",
        req.method, path, req.version
    )
    .into_bytes();
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("host") || is_hop_by_hop(name, &req.connection_tokens) {
            continue;
        }
        push_header(&mut out, name, value);
    }
    if upgrade {
        for value in req.header("upgrade") {
            push_header(&mut out, "Upgrade", value);
        }
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else {
        // Each request gets its own tunnel, so the server need not keep it open.
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub(crate) fn wants_upgrade(req: &Request) -> bool {
    req.version == 1
        && req.header("upgrade").next().is_some()
        && req.connection_tokens.iter().any(|t| t == "upgrade")
}

fn connection_tokens(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| {
            n.eq_ignore_ascii_case("connection") || n.eq_ignore_ascii_case("proxy-connection")
        })
        .flat_map(|(_, v)| tokens(v))
        .collect()
}

/// `listed` comes from the peer's `Connection` header; it may not remove the fields that
/// frame the message, since we pass the framing through unchanged.
fn is_hop_by_hop(name: &str, listed: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    HOP_BY_HOP.contains(&lower.as_str())
        || (listed.contains(&lower)
            && !matches!(
                lower.as_str(),
                "content-length" | "transfer-encoding" | "host"
            ))
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cannot_strip_framing_fields() {
        let listed = tokens(b"Content-Length, Transfer-Encoding, Host, X-Hop");
        assert!(!is_hop_by_hop("content-length", &listed));
        assert!(!is_hop_by_hop("Transfer-Encoding", &listed));
        assert!(is_hop_by_hop("x-hop", &listed));
        assert!(is_hop_by_hop("Proxy-Authorization", &[]));
        assert!(!is_hop_by_hop("Accept", &listed));
    }

    #[test]
    fn response_heads_are_cleaned() {
        let head = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: a\r\nbad line\r\nSet-Cookie: c=1\r\nKeep-Alive: 5\r\n\r\n";
        let parsed = parse_response(head).unwrap();
        assert_eq!(parsed.status, 200);
        let out = String::from_utf8(parsed.emit("Connection: close", false)).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nSet-Cookie: c=1\r\nConnection: close\r\n\r\n"
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
