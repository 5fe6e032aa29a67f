//! Parses `-L`, `-R` and `-D` forward specifications with the rules of OpenSSH's `parse_forward()`.
//!
//! Users paste the same specs they give `ssh`, so every form OpenSSH accepts
//! must mean the same thing here. Where OpenSSH is lax in ways that can only
//! hide a typo (a trailing `:`, an empty host, whitespace, a port of 0 for a
//! connect side) we reject instead, naming the flag, the spec and the reason.
//!
//! Deliberate differences from OpenSSH:
//! - Ports are decimal only: `getservbyname` lookups (`http`) are I/O and
//!   rarely intended, so they are rejected with a hint.
//! - `${VAR}` environment expansion is not done here (it is not pure); the
//!   text is taken literally.
//! - The historical `/` delimiter (`port/host/hostport`) is not accepted: since
//!   unix-socket forwarding, OpenSSH itself treats any field containing `/` as
//!   a socket path, so `/` cannot be a delimiter without ambiguity.

use std::fmt;
use std::path::PathBuf;

/// Longest host name OpenSSH accepts (`NI_MAXHOST` minus the NUL).
const MAX_HOST_LEN: usize = 1024;

/// Longest socket path that fits `sun_path` on Linux (108 bytes with the NUL);
/// OpenSSH refuses longer ones up front rather than failing at `bind()`.
const MAX_SOCKET_PATH_LEN: usize = 107;

/// Which flag a spec came from: each has its own grammar and its own rules
/// for port 0, so errors must say which one was meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    /// `-L` / `LocalForward`.
    Local,
    /// `-R` / `RemoteForward`.
    Remote,
    /// `-D` / `DynamicForward`.
    Dynamic,
}

impl ForwardKind {
    /// The `ssh` flag, so messages point at what the user typed.
    pub fn flag(self) -> &'static str {
        match self {
            ForwardKind::Local => "-L",
            ForwardKind::Remote => "-R",
            ForwardKind::Dynamic => "-D",
        }
    }

    /// The grammar reminder shown with every error of this kind.
    pub fn expected_form(self) -> &'static str {
        match self {
            ForwardKind::Local => "[bind_address:]port:host:hostport (or unix-socket forms)",
            ForwardKind::Remote => "[bind_address:]port[:host:hostport] (or unix-socket forms)",
            ForwardKind::Dynamic => "[bind_address:]port",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ForwardKind::Local => "local",
            ForwardKind::Remote => "remote",
            ForwardKind::Dynamic => "dynamic",
        }
    }
}

/// A rejected forward spec; the message alone should let the user fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad {} forward {} '{spec}': expected {}; {reason}",
    kind.name(),
    kind.flag(),
    kind.expected_form()
)]
pub struct SpecError {
    /// Which flag's grammar the spec was checked against.
    pub kind: ForwardKind,
    /// The spec exactly as given.
    pub spec: String,
    /// What in particular was wrong.
    pub reason: String,
}

/// Where forwarded connections are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP host (brackets stripped from IPv6 literals) and port 1..=65535.
    Tcp {
        /// Host name or address, resolved by whichever side connects.
        host: String,
        /// Never 0: there is nothing to connect to on port 0.
        port: u16,
    },
    /// A unix-domain socket path on the connecting side.
    Unix(PathBuf),
}

/// Where a forward accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP listener.
    Tcp {
        /// `None`: no address given, so the caller binds loopback unless
        /// `GatewayPorts` says otherwise. `Some("*")`: all interfaces (written
        /// `*` or left empty, as in `:8080`). Otherwise an address or name,
        /// brackets stripped.
        bind: Option<String>,
        /// 0 only for `-R`, where the server allocates the port.
        port: u16,
    },
    /// A unix-domain socket path on the listening side.
    Unix(PathBuf),
}

/// A `-L` forward: listen locally, connect from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalForward {
    /// The local listener.
    pub listen: Listen,
    /// The target, as reached from the server.
    pub connect: Endpoint,
    /// The spec as given, for messages.
    pub spec: String,
}

/// A `-R` forward: the server listens, we connect locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteForward {
    /// The listener requested on the server.
    pub listen: Listen,
    /// The local target; `None` for a remote dynamic (SOCKS) forward, where
    /// each connection names its own target.
    pub connect: Option<Endpoint>,
    /// The spec as given, for messages.
    pub spec: String,
}

/// A `-D` forward: a local SOCKS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicForward {
    /// Same meaning as [`Listen::Tcp`]'s `bind`.
    pub bind: Option<String>,
    /// 1..=65535; OpenSSH refuses 0 for local listeners.
    pub port: u16,
    /// The spec as given, for messages.
    pub spec: String,
}

impl fmt::Display for Listen {
    /// OpenSSH's `-G` notation, so logs read like the user's config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp { bind: None, port } => write!(f, "{port}"),
            Listen::Tcp {
                bind: Some(bind),
                port,
            } => write_host_port(f, bind, *port),
            Listen::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write_host_port(f, host, *port),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Brackets IPv6 literals so the port stays unambiguous.
fn write_host_port(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

/// Parses a `-L` spec: `[bind_address:]port:host:hostport`,
/// `[bind_address:]port:remote_socket`, `local_socket:host:hostport` or
/// `local_socket:remote_socket`.
pub fn parse_local(spec: &str) -> Result<LocalForward, SpecError> {
    let kind = ForwardKind::Local;
    let fields = split_fields(spec).map_err(|r| spec_error(kind, spec, r))?;
    match parse_pair(kind, &fields).map_err(|r| spec_error(kind, spec, r))? {
        Some((listen, connect)) => Ok(LocalForward {
            listen,
            connect,
            spec: spec.to_owned(),
        }),
        None => Err(spec_error(kind, spec, wrong_field_count(&fields))),
    }
}

/// Parses a `-R` spec: the `-L` forms with the listener on the server, or
/// `[bind_address:]port` alone for a remote dynamic forward.
pub fn parse_remote(spec: &str) -> Result<RemoteForward, SpecError> {
    let kind = ForwardKind::Remote;
    let fields = split_fields(spec).map_err(|r| spec_error(kind, spec, r))?;
    // Same order as ssh.c: the full form first, then the dynamic one.
    let pair = parse_pair(kind, &fields).map_err(|r| spec_error(kind, spec, r))?;
    let (listen, connect) = match pair {
        Some((listen, connect)) => (listen, Some(connect)),
        None => match fields.as_slice() {
            [port] if port.is_path => {
                return Err(spec_error(
                    kind,
                    spec,
                    format!(
                        "'{}' is a socket path, but a remote dynamic forward needs a port",
                        port.text
                    ),
                ));
            }
            [_] | [_, _] => {
                let (bind, port) = parse_dynamic_fields(kind, &fields)
                    .map_err(|reason| spec_error(kind, spec, reason))?;
                (Listen::Tcp { bind, port }, None)
            }
            _ => return Err(spec_error(kind, spec, wrong_field_count(&fields))),
        },
    };
    Ok(RemoteForward {
        listen,
        connect,
        spec: spec.to_owned(),
    })
}

/// Parses a `-D` spec: `[bind_address:]port`.
pub fn parse_dynamic(spec: &str) -> Result<DynamicForward, SpecError> {
    let kind = ForwardKind::Dynamic;
    let fields = split_fields(spec).map_err(|r| spec_error(kind, spec, r))?;
    let (bind, port) =
        parse_dynamic_fields(kind, &fields).map_err(|reason| spec_error(kind, spec, reason))?;
    Ok(DynamicForward {
        bind,
        port,
        spec: spec.to_owned(),
    })
}

fn spec_error(kind: ForwardKind, spec: &str, reason: String) -> SpecError {
    SpecError {
        kind,
        spec: spec.to_owned(),
        reason,
    }
}

/// One `:`-separated field, after OpenSSH's bracket and backslash handling.
#[derive(Debug)]
struct Field {
    text: String,
    /// OpenSSH's rule: a field containing an unescaped `/` is a socket path.
    is_path: bool,
}

/// Splits like OpenSSH's `parse_fwd_field()`: a field starting with `[` runs
/// literally to the matching `]` (which must end the field), and elsewhere
/// `\` makes the next character literal, so paths can contain `:`.
fn split_fields(spec: &str) -> Result<Vec<Field>, String> {
    if spec.is_empty() {
        return Err("the spec is empty".to_owned());
    }
    if spec.chars().any(char::is_whitespace) {
        return Err("whitespace is not allowed".to_owned());
    }
    let mut fields = Vec::new();
    let mut chars = spec.chars().peekable();
    loop {
        let mut text = String::new();
        let mut is_path = false;
        if chars.next_if_eq(&'[').is_some() {
            let mut closed = false;
            for c in chars.by_ref() {
                if c == ']' {
                    closed = true;
                    break;
                }
                is_path |= c == '/';
                text.push(c);
            }
            if !closed {
                return Err("unbalanced '[': no matching ']'".to_owned());
            }
            if let Some(&c) = chars.peek()
                && c != ':'
            {
                return Err(format!(
                    "'{c}' after ']' (only ':' may follow a bracketed field)"
                ));
            }
        } else {
            while let Some(c) = chars.next_if(|&c| c != ':') {
                match c {
                    '\\' => match chars.next() {
                        Some(escaped) => text.push(escaped),
                        None => return Err("trailing '\\' escapes nothing".to_owned()),
                    },
                    '/' => {
                        is_path = true;
                        text.push(c);
                    }
                    _ => text.push(c),
                }
            }
        }
        fields.push(Field { text, is_path });
        // The field ended at a ':' or at the end of the spec.
        if chars.next().is_none() {
            return Ok(fields);
        }
        if chars.peek().is_none() {
            return Err("trailing ':' (a field is missing after it)".to_owned());
        }
    }
}

/// The forms that have both a listen and a connect side, in `parse_forward()`'s
/// order. `Ok(None)` means the field count fits none of them.
fn parse_pair(kind: ForwardKind, fields: &[Field]) -> Result<Option<(Listen, Endpoint)>, String> {
    Ok(Some(match fields {
        [bind, port, host, hostport] => (
            tcp_listen(kind, Some(bind), port)?,
            tcp_endpoint(host, hostport)?,
        ),
        [path, host, hostport] if path.is_path => (
            Listen::Unix(unix_path(path)?),
            tcp_endpoint(host, hostport)?,
        ),
        [bind, port, path] if path.is_path => (
            tcp_listen(kind, Some(bind), port)?,
            Endpoint::Unix(unix_path(path)?),
        ),
        [port, host, hostport] => (tcp_listen(kind, None, port)?, tcp_endpoint(host, hostport)?),
        [listen, connect] if listen.is_path && connect.is_path => (
            Listen::Unix(unix_path(listen)?),
            Endpoint::Unix(unix_path(connect)?),
        ),
        [port, path] if path.is_path => (
            tcp_listen(kind, None, port)?,
            Endpoint::Unix(unix_path(path)?),
        ),
        _ => return Ok(None),
    }))
}

/// `[bind_address:]port` for `-D` and remote dynamic `-R`.
fn parse_dynamic_fields(
    kind: ForwardKind,
    fields: &[Field],
) -> Result<(Option<String>, u16), String> {
    match fields {
        [port] => Ok((None, listen_port(kind, port)?)),
        [bind, port] => Ok((Some(bind_address(bind)?), listen_port(kind, port)?)),
        _ => Err(format!(
            "{} fields where 1 or 2 were expected",
            fields.len()
        )),
    }
}

fn wrong_field_count(fields: &[Field]) -> String {
    match fields.len() {
        n if n > 4 => format!("too many fields ({n}; at most 4)"),
        n => format!(
            "too few fields ({n}): the connect side (host:hostport or a socket path) is missing"
        ),
    }
}

fn tcp_listen(kind: ForwardKind, bind: Option<&Field>, port: &Field) -> Result<Listen, String> {
    Ok(Listen::Tcp {
        bind: bind.map(bind_address).transpose()?,
        port: listen_port(kind, port)?,
    })
}

fn tcp_endpoint(host: &Field, port: &Field) -> Result<Endpoint, String> {
    Ok(Endpoint::Tcp {
        host: host_name(host, "host")?,
        port: connect_port(port)?,
    })
}

/// Empty and `*` both mean "all interfaces" to OpenSSH's listener setup, so
/// they are folded into one spelling for the caller.
fn bind_address(field: &Field) -> Result<String, String> {
    if field.text.is_empty() || field.text == "*" {
        return Ok("*".to_owned());
    }
    host_name(field, "bind address")
}

fn host_name(field: &Field, what: &str) -> Result<String, String> {
    let text = &field.text;
    if text.is_empty() {
        return Err(format!("empty {what}"));
    }
    if field.is_path {
        return Err(format!(
            "{what} '{text}' contains '/', which makes it a socket path, not allowed in this position"
        ));
    }
    if text.contains(['[', ']']) {
        return Err(format!("unbalanced brackets in {what} '{text}'"));
    }
    if text.len() > MAX_HOST_LEN {
        return Err(format!(
            "{what} is {} bytes long (at most {MAX_HOST_LEN})",
            text.len()
        ));
    }
    Ok(text.clone())
}

fn unix_path(field: &Field) -> Result<PathBuf, String> {
    if field.text.len() > MAX_SOCKET_PATH_LEN {
        return Err(format!(
            "socket path '{}' is {} bytes long (at most {MAX_SOCKET_PATH_LEN})",
            field.text,
            field.text.len()
        ));
    }
    Ok(PathBuf::from(&field.text))
}

/// Port 0 means "pick a free port" for every kind: the server picks for -R (as in
/// OpenSSH), and warren picks locally for -L and -D and reports the port it got, which
/// scripts need for `--exec` and parallel test runs. OpenSSH refuses 0 for -L and -D.
fn listen_port(_kind: ForwardKind, field: &Field) -> Result<u16, String> {
    port_number(field, "listen port")
}

fn connect_port(field: &Field) -> Result<u16, String> {
    match port_number(field, "port")? {
        0 => Err("port 0 cannot be connected to (expected 1..=65535)".to_owned()),
        port => Ok(port),
    }
}

/// Decimal only, 0..=65535, leading zeros allowed as `strtonum()` allows them.
fn port_number(field: &Field, what: &str) -> Result<u16, String> {
    let text = &field.text;
    if text.is_empty() {
        return Err(format!("empty {what}"));
    }
    if field.is_path {
        return Err(format!(
            "{what} '{text}' contains '/', which makes it a socket path, not allowed in this position"
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        // Service names start with a letter (`http`, `x11`); `80x` is a typo.
        let looks_like_service = text.starts_with(|c: char| c.is_ascii_alphabetic())
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        return Err(if looks_like_service {
            format!(
                "{what} '{text}' is not a number (service names are not supported; use the port number)"
            )
        } else {
            format!("{what} '{text}' is not a decimal number")
        });
    }
    text.parse::<u16>()
        .map_err(|_| format!("{what} {text} is out of range (at most 65535)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(bind: Option<&str>, port: u16) -> Listen {
        Listen::Tcp {
            bind: bind.map(str::to_owned),
            port,
        }
    }

    fn to(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    fn sock(path: &str) -> Listen {
        Listen::Unix(PathBuf::from(path))
    }

    fn to_sock(path: &str) -> Endpoint {
        Endpoint::Unix(PathBuf::from(path))
    }

    /// Forms shared by `-L` and `-R`: (spec, listen, connect).
    fn pair_cases() -> Vec<(&'static str, Listen, Endpoint)> {
        vec![
            ("8080:localhost:80", tcp(None, 8080), to("localhost", 80)),
            (
                "8080:db.internal:5432",
                tcp(None, 8080),
                to("db.internal", 5432),
            ),
            ("1:h:65535", tcp(None, 1), to("h", 65535)),
            ("65535:h:1", tcp(None, 65535), to("h", 1)),
            ("08080:h:080", tcp(None, 8080), to("h", 80)),
            (
                "localhost:8080:h:80",
                tcp(Some("localhost"), 8080),
                to("h", 80),
            ),
            (
                "127.0.0.1:8080:h:80",
                tcp(Some("127.0.0.1"), 8080),
                to("h", 80),
            ),
            ("*:8080:h:80", tcp(Some("*"), 8080), to("h", 80)),
            (":8080:h:80", tcp(Some("*"), 8080), to("h", 80)),
            ("[]:8080:h:80", tcp(Some("*"), 8080), to("h", 80)),
            ("0.0.0.0:8080:h:80", tcp(Some("0.0.0.0"), 8080), to("h", 80)),
            (
                "[::1]:8080:[fe80::1]:80",
                tcp(Some("::1"), 8080),
                to("fe80::1", 80),
            ),
            ("[::]:8080:h:80", tcp(Some("::"), 8080), to("h", 80)),
            ("8080:[::1]:80", tcp(None, 8080), to("::1", 80)),
            (
                "8080:[2001:db8::5]:443",
                tcp(None, 8080),
                to("2001:db8::5", 443),
            ),
            (
                "[fe80::1%eth0]:22:h:22",
                tcp(Some("fe80::1%eth0"), 22),
                to("h", 22),
            ),
            ("8080:[h]:80", tcp(None, 8080), to("h", 80)),
            (
                "8080:/run/app.sock",
                tcp(None, 8080),
                to_sock("/run/app.sock"),
            ),
            (
                "localhost:8080:/run/app.sock",
                tcp(Some("localhost"), 8080),
                to_sock("/run/app.sock"),
            ),
            (
                "[::1]:8080:/run/app.sock",
                tcp(Some("::1"), 8080),
                to_sock("/run/app.sock"),
            ),
            (
                "*:8080:/run/app.sock",
                tcp(Some("*"), 8080),
                to_sock("/run/app.sock"),
            ),
            ("/tmp/l.sock:h:80", sock("/tmp/l.sock"), to("h", 80)),
            ("/tmp/l.sock:[::1]:80", sock("/tmp/l.sock"), to("::1", 80)),
            ("./rel/l.sock:h:80", sock("./rel/l.sock"), to("h", 80)),
            (
                "/tmp/l.sock:/run/r.sock",
                sock("/tmp/l.sock"),
                to_sock("/run/r.sock"),
            ),
            (
                "[/tmp/a:b]:/run/r.sock",
                sock("/tmp/a:b"),
                to_sock("/run/r.sock"),
            ),
            ("/tmp/a\\:b:h:80", sock("/tmp/a:b"), to("h", 80)),
            ("8080:/run/a\\:b", tcp(None, 8080), to_sock("/run/a:b")),
            ("8080:h\\x:80", tcp(None, 8080), to("hx", 80)),
        ]
    }

    #[test]
    fn local_valid_forms() {
        for (spec, listen, connect) in pair_cases() {
            let got = parse_local(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(got.listen, listen, "{spec}");
            assert_eq!(got.connect, connect, "{spec}");
            assert_eq!(got.spec, spec);
        }
    }

    #[test]
    fn remote_valid_forms() {
        let mut cases: Vec<(&str, Listen, Option<Endpoint>)> = pair_cases()
            .into_iter()
            .map(|(s, l, c)| (s, l, Some(c)))
            .collect();
        cases.extend([
            ("0:localhost:80", tcp(None, 0), Some(to("localhost", 80))),
            ("*:0:h:80", tcp(Some("*"), 0), Some(to("h", 80))),
            ("1080", tcp(None, 1080), None),
            ("0", tcp(None, 0), None),
            ("localhost:1080", tcp(Some("localhost"), 1080), None),
            ("*:1080", tcp(Some("*"), 1080), None),
            (":1080", tcp(Some("*"), 1080), None),
            ("[::1]:1080", tcp(Some("::1"), 1080), None),
        ]);
        for (spec, listen, connect) in cases {
            let got = parse_remote(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(got.listen, listen, "{spec}");
            assert_eq!(got.connect, connect, "{spec}");
            assert_eq!(got.spec, spec);
        }
    }

    #[test]
    fn dynamic_valid_forms() {
        let cases: &[(&str, Option<&str>, u16)] = &[
            ("1080", None, 1080),
            ("01080", None, 1080),
            ("65535", None, 65535),
            ("localhost:1080", Some("localhost"), 1080),
            ("127.0.0.1:1080", Some("127.0.0.1"), 1080),
            ("*:1080", Some("*"), 1080),
            (":1080", Some("*"), 1080),
            ("[::1]:1080", Some("::1"), 1080),
            ("[::]:1080", Some("::"), 1080),
        ];
        for &(spec, bind, port) in cases {
            let got = parse_dynamic(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(got.bind.as_deref(), bind, "{spec}");
            assert_eq!(got.port, port, "{spec}");
            assert_eq!(got.spec, spec);
        }
    }

    /// Specs that no flag with a connect side accepts: (spec, part of the reason).
    const BAD_PAIRS: &[(&str, &str)] = &[
        ("", "empty"),
        ("abc:h:80", "listen port 'abc'"),
        ("70000:h:1", "out of range"),
        ("99999999999999999999:h:1", "out of range"),
        ("8080:h:0", "port 0"),
        ("8080:h:-1", "not a decimal number"),
        ("8080:h:+80", "not a decimal number"),
        ("8080:h:http", "service names"),
        ("http:h:80", "service names"),
        ("[::1:8080:h:1", "unbalanced '['"),
        ("8080:[::1]:", "trailing ':'"),
        ("8080:[::1]x:80", "after ']'"),
        ("8080:h]:80", "unbalanced brackets"),
        ("8080:h[:80", "unbalanced brackets"),
        ("1:2:3:4:5", "too many fields"),
        ("8080:h:80 ", "whitespace"),
        (" 8080:h:80", "whitespace"),
        ("8080: h:80", "whitespace"),
        ("8080:h:80\t", "whitespace"),
        ("8080:h:80:", "trailing ':'"),
        ("8080:h:", "trailing ':'"),
        (":", "trailing ':'"),
        ("8080::80", "empty host"),
        ("8080:[]:80", "empty host"),
        (":8080:h:", "trailing ':'"),
        ("::h:80", "empty listen port"),
        ("b:8080:h:", "trailing ':'"),
        ("b:8080:h:80x", "not a decimal number"),
        ("/tmp/s:b:8080:h", "socket path"),
        ("8080:/x:80", "socket path"),
        ("b:8080:/x:80", "socket path"),
        ("/a:h:/b", "socket path"),
        ("8080:h:80\\", "trailing '\\'"),
        ("8080:h:8\u{0}0", "not a decimal number"),
        ("8080:h:٨٠", "not a decimal number"),
    ];

    fn assert_rejects(
        parse: impl Fn(&str) -> Result<(), SpecError>,
        flag: &str,
        cases: &[(&str, &str)],
    ) {
        for &(spec, reason) in cases {
            let err = parse(spec).expect_err(spec);
            let msg = err.to_string();
            assert!(msg.contains(&format!("'{spec}'")), "{spec:?}: {msg}");
            assert!(msg.contains(flag), "{spec:?}: {msg}");
            assert!(
                err.reason.contains(reason),
                "{spec:?}: wanted {reason:?} in {msg}"
            );
            assert_eq!(err.spec, spec);
        }
    }

    #[test]
    fn local_rejects_malformed() {
        let mut cases = BAD_PAIRS.to_vec();
        cases.extend([
            ("abc", "too few fields"),
            ("8080", "too few fields"),
            ("8080:h", "too few fields"),
            ("localhost:8080", "too few fields"),
            ("/tmp/s", "too few fields"),
            ("/tmp/s:8080", "too few fields"),
        ]);
        assert_rejects(|s| parse_local(s).map(drop), "-L", &cases);
    }

    #[test]
    fn remote_rejects_malformed() {
        let mut cases = BAD_PAIRS.to_vec();
        cases.extend([
            ("abc", "listen port 'abc'"),
            ("8080:h", "listen port 'h'"),
            ("70000", "out of range"),
            ("/tmp/s", "needs a port"),
            ("/tmp/s:8080", "socket path"),
            ("localhost:", "trailing ':'"),
        ]);
        assert_rejects(|s| parse_remote(s).map(drop), "-R", &cases);
    }

    #[test]
    fn dynamic_rejects_malformed() {
        let cases = [
            ("", "empty"),
            ("abc", "listen port 'abc'"),
            ("socks", "service names"),
            ("x11", "service names"),
            ("10.80", "not a decimal number"),
            ("70000", "out of range"),
            ("-1", "not a decimal number"),
            ("1080 ", "whitespace"),
            ("1080:", "trailing ':'"),
            ("localhost:", "trailing ':'"),
            ("a:b:1080", "1 or 2"),
            ("1:2:3:4:5", "1 or 2"),
            ("[::1:1080", "unbalanced '['"),
            ("[::1]1080", "after ']'"),
            ("/tmp/s", "socket path"),
            ("/tmp/s:1080", "socket path"),
            ("h]:1080", "unbalanced brackets"),
        ];
        assert_rejects(|s| parse_dynamic(s).map(drop), "-D", &cases);
    }

    #[test]
    fn message_names_flag_spec_and_form() {
        let err = parse_local("8080:db").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad local forward -L '8080:db': expected [bind_address:]port:host:hostport \
             (or unix-socket forms); too few fields (2): the connect side (host:hostport or \
             a socket path) is missing"
        );
        assert_eq!(err.kind, ForwardKind::Local);
        let err = parse_remote("x").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "bad remote forward -R 'x': expected [bind_address:]port[:host:hostport]"
            ),
            "{err}"
        );
        let err = parse_dynamic("x").unwrap_err().to_string();
        assert!(
            err.starts_with("bad dynamic forward -D 'x': expected [bind_address:]port;"),
            "{err}"
        );
    }

    #[test]
    fn length_limits() {
        let long_host = "h".repeat(MAX_HOST_LEN + 1);
        assert!(parse_local(&format!("8080:{}:80", &long_host[1..])).is_ok());
        let err = parse_local(&format!("8080:{long_host}:80")).unwrap_err();
        assert!(err.reason.contains("bytes long"), "{err}");
        let long_path = format!("/{}", "p".repeat(MAX_SOCKET_PATH_LEN));
        assert!(parse_local(&format!("8080:{}", &long_path[..MAX_SOCKET_PATH_LEN])).is_ok());
        let err = parse_local(&format!("8080:{long_path}")).unwrap_err();
        assert!(err.reason.contains("socket path"), "{err}");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let inputs = [
            "[",
            "]",
            "[]",
            "[[",
            "[]]",
            "\\",
            ":\\",
            "[/]",
            "[:]",
            "::::",
            "[]:[]:[]:[]",
            "é:ü:ö",
            "🦀:🦀:🦀",
            "[🦀]:1:h:1",
            "1:[",
            "1:h:[1]",
            "\u{0}",
            "1:2:3:4:",
        ];
        for s in inputs {
            let _ = parse_local(s);
            let _ = parse_remote(s);
            let _ = parse_dynamic(s);
        }
        // Bracketed ports are taken literally, as OpenSSH does.
        assert_eq!(parse_local("1:h:[1]").unwrap().connect, to("h", 1));
    }

    /// Every string up to 5 characters over the characters that matter to
    /// the grammar: no panic, and every error names its spec.
    #[test]
    fn never_panics_exhaustive_short_inputs() {
        const ALPHABET: [char; 9] = ['[', ']', ':', '/', '\\', '1', 'a', '*', ' '];
        let mut inputs = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = inputs
                .iter()
                .filter(|s| s.len() == inputs.last().map_or(0, String::len))
                .flat_map(|s| ALPHABET.iter().map(move |&c| format!("{s}{c}")))
                .collect();
            inputs.extend(longer);
        }
        for s in &inputs {
            for err in [
                parse_local(s).err(),
                parse_remote(s).err(),
                parse_dynamic(s).err(),
            ]
            .into_iter()
            .flatten()
            {
                assert!(err.to_string().contains(&format!("'{s}'")), "{err}");
            }
        }
    }

    #[test]
    fn display_uses_openssh_notation() {
        assert_eq!(tcp(None, 80).to_string(), "80");
        assert_eq!(tcp(Some("*"), 80).to_string(), "*:80");
        assert_eq!(tcp(Some("::1"), 80).to_string(), "[::1]:80");
        assert_eq!(sock("/tmp/s").to_string(), "/tmp/s");
        assert_eq!(to("fe80::1", 22).to_string(), "[fe80::1]:22");
        assert_eq!(to("h", 22).to_string(), "h:22");
        assert_eq!(to_sock("/run/s").to_string(), "/run/s");
    }
}
