//! HTTP proxy requests: reading one bounded request head, understanding its target,
//! checking `Proxy-Authorization`, and wording the proxy's own responses.

use super::buffered::Buffered;
use super::http_body::{Framing, tokens};
use super::{ProxyCredentials, valid_host};
use crate::config::forward::Endpoint;
use base64::Engine;
use tokio::io::AsyncRead;

/// httparse needs a fixed header array; browsers send a few dozen at most.
const MAX_HEADERS: usize = 128;

/// A request the proxy will act on.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub target: RequestTarget,
    /// The minor version: 0 or 1.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// Header names listed in `Connection`/`Proxy-Connection`, lowercased: hop-by-hop.
    pub connection_tokens: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RequestTarget {
    /// `CONNECT host:port`.
    Connect(Endpoint),
    /// `GET http://authority/path`: forward to `endpoint`, sending `path` and `Host: authority`.
    Absolute {
        endpoint: Endpoint,
        authority: String,
        path: String,
    },
}

/// A request the proxy refuses, with the status to answer it with.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: u16,
    pub message: String,
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        message: message.into(),
    }
}

impl Request {
    /// Whether the client wants the connection kept after this exchange. HTTP/1.0 clients
    /// are always closed: their keep-alive extension is not worth the ambiguity.
    pub(crate) fn keep_alive(&self) -> bool {
        self.version == 1 && !self.connection_tokens.iter().any(|t| t == "close")
    }

    pub(crate) fn header(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether `Proxy-Authorization: Basic` carries the configured credentials.
    pub(crate) fn authorized(&self, creds: &ProxyCredentials) -> bool {
        self.header("proxy-authorization").any(|v| {
            let text = String::from_utf8_lossy(v);
            let mut parts = text.trim().splitn(2, ' ');
            let scheme = parts.next().unwrap_or("");
            let token = parts.next().unwrap_or("").trim();
            if !scheme.eq_ignore_ascii_case("basic") {
                return false;
            }
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token) else {
                return false;
            };
            let mut split = decoded.splitn(2, |&b| b == b':');
            let user = split.next().unwrap_or_default();
            let pass = split.next();
            pass.is_some_and(|p| creds.matches(user, p))
        })
    }
}

/// Reads and parses one request head. `Ok(None)` is a clean EOF before any byte of a
/// request. The caller bounds the time.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    conn: &mut Buffered<S>,
    max_head: usize,
) -> Result<Option<Request>, ReadError> {
    match read_head(conn, max_head).await? {
        None => Ok(None),
        Some(head) => parse_request(&head).map(Some).map_err(ReadError::Refused),
    }
}

/// Reads one message head (through its blank line), skipping blank lines before it, as
/// RFC 9112 §2.2 asks. `Ok(None)` is a clean EOF before any byte of it.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    conn: &mut Buffered<S>,
    max_head: usize,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut searched: usize = 0;
    loop {
        let blank = conn
            .buffered()
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        conn.consume(blank);
        searched = searched.saturating_sub(blank);
        let buf = conn.buffered();
        // Look only at new bytes each time, so a client dribbling a head byte by byte
        // costs a scan of what it sent, not a rescan of everything.
        if let Some(end) = head_end(buf, searched.saturating_sub(3)) {
            return Ok(Some(conn.take_front(end)));
        }
        searched = buf.len();
        if buf.len() >= max_head {
            return Err(ReadError::Refused(Refusal {
                status: 431,
                message: format!("the message head is larger than {max_head} bytes"),
            }));
        }
        match conn.fill(max_head).await {
            Ok(0) if conn.buffered().is_empty() => return Ok(None),
            Ok(0) => return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    Refused(Refusal),
}

/// Where the blank line ending a head is (index just past it), accepting bare LF as
/// RFC 9112 allows.
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1..nl + 3) {
            Some(b"\r\n") => return Some(nl + 3),
            _ if buf.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            _ => i = nl + 1,
        }
    }
    None
}

fn parse_request(head: &[u8]) -> Result<Request, Refusal> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal {
                status: 431,
                message: format!("more than {MAX_HEADERS} header fields"),
            });
        }
        Err(e) => return Err(bad(format!("malformed request: {e}"))),
    }
    let method = req.method.unwrap_or_default().to_string();
    let uri = req.path.unwrap_or_default();
    let version = req.version.unwrap_or(1);
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let target = if method == "CONNECT" {
        let (host, port) = parse_authority(uri, None)?;
        RequestTarget::Connect(Endpoint::Tcp { host, port })
    } else {
        parse_absolute(uri)?
    };
    let connection_tokens = headers
        .iter()
        .filter(|(n, _)| {
            n.eq_ignore_ascii_case("connection") || n.eq_ignore_ascii_case("proxy-connection")
        })
        .flat_map(|(_, v)| tokens(v))
        .collect();
    let framing = if method == "CONNECT" {
        Framing::Empty
    } else {
        Framing::of_request(&headers).map_err(bad)?
    };
    Ok(Request {
        method,
        target,
        version,
        headers,
        framing,
        connection_tokens,
    })
}

fn parse_absolute(uri: &str) -> Result<RequestTarget, Refusal> {
    let scheme_end = uri.find("://").unwrap_or(0);
    let scheme = uri.get(..scheme_end).unwrap_or("");
    if scheme.eq_ignore_ascii_case("https") {
        return Err(bad(
            "https:// URLs must go through CONNECT; use this address as an HTTPS proxy too",
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad(
            "this is a proxy: requests need an absolute http:// URL (or CONNECT host:port)",
        ));
    }
    let rest = uri.get(scheme_end + 3..).unwrap_or("");
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = parse_authority(authority, Some(80))?;
    let tail = tail.split('#').next().unwrap_or("");
    let path = match tail.chars().next() {
        Some('/') => tail.to_string(),
        _ => format!("/{tail}"),
    };
    Ok(RequestTarget::Absolute {
        endpoint: Endpoint::Tcp { host, port },
        authority: authority.to_string(),
        path,
    })
}

/// `host[:port]` or `[v6]:port`; the port is required unless there is a default.
fn parse_authority(s: &str, default_port: Option<u16>) -> Result<(String, u16), Refusal> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("bad address in '{s}'")))?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() => Some(p)
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(format!("bad port in '{s}'")))?,
        _ => default_port.ok_or_else(|| bad(format!("'{s}' needs a port (host:port)")))?,
    };
    if !valid_host(host) || (host.contains(':') && !s.starts_with('[')) {
        return Err(bad(format!("bad host in '{s}'")));
    }
    Ok((host.to_string(), port))
}

/// The proxy's own answer: a status line, a one-line text body, and whether the
/// connection stays open.
pub(crate) fn response(status: u16, message: &str, keep_alive: bool) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{message}\n");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    if status == 407 {
        out.push_str("Proxy-Authenticate: Basic realm=\"warren\"\r\n");
    }
    out.push_str(if keep_alive {
        "\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    out.push_str(&body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, Refusal> {
        parse_request(s.as_bytes())
    }

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn targets() {
        let r = parse("GET http://u:p@Example.com:8080/a?b#frag HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            r.target,
            RequestTarget::Absolute {
                endpoint: tcp("Example.com", 8080),
                authority: "Example.com:8080".into(),
                path: "/a?b".into()
            }
        );
        let r = parse("GET HTTP://[::1]?q HTTP/1.0\r\n\r\n").unwrap();
        assert!(
            matches!(r.target, RequestTarget::Absolute { ref endpoint, ref path, .. }
            if *endpoint == tcp("::1", 80) && path == "/?q")
        );
        assert_eq!(r.version, 0);
        let r = parse("CONNECT [2001:db8::2]:443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.target, RequestTarget::Connect(tcp("2001:db8::2", 443)));
    }

    #[test]
    fn refusals() {
        for (req, status) in [
            ("GET https://a/ HTTP/1.1\r\n\r\n", 400),
            ("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("CONNECT a HTTP/1.1\r\n\r\n", 400),
            ("CONNECT a:0 HTTP/1.1\r\n\r\n", 400),
            ("CONNECT a:99999 HTTP/1.1\r\n\r\n", 400),
            ("CONNECT ::1:22 HTTP/1.1\r\n\r\n", 400),
            ("GET http://:80/ HTTP/1.1\r\n\r\n", 400),
            ("GET http://a/ HTTP/2.0\r\n\r\n", 400),
            ("G\0T http://a/ HTTP/1.1\r\n\r\n", 400),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                400,
            ),
        ] {
            let got = parse(req).map(|_| ()).unwrap_err();
            assert_eq!(got.status, status, "{req:?}: {}", got.message);
        }
        let many = format!("GET http://a/ HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(200));
        assert_eq!(parse(&many).map(|_| ()).unwrap_err().status, 431);
    }

    #[test]
    fn basic_auth() {
        let c = ProxyCredentials::new("user", "pa:ss");
        let with = |v: &str| {
            parse(&format!(
                "GET http://a/ HTTP/1.1\r\nProxy-Authorization: {v}\r\n\r\n"
            ))
            .unwrap()
        };
        assert!(with("Basic dXNlcjpwYTpzcw==").authorized(&c));
        assert!(with("basic   dXNlcjpwYTpzcw==").authorized(&c));
        assert!(!with("Basic dXNlcjpwYQ==").authorized(&c));
        assert!(!with("Bearer dXNlcjpwYTpzcw==").authorized(&c));
        assert!(!with("Basic !!!").authorized(&c));
        assert!(
            !parse("GET http://a/ HTTP/1.1\r\n\r\n")
                .unwrap()
                .authorized(&c)
        );
    }

    #[test]
    fn head_end_finds_crlf_and_bare_lf() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nbody", 0), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }
}
