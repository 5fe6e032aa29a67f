//! One entry point per parser that sees untrusted input, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/`) and the stable regression test (`tests/fuzz_regressions.rs`,
//! which includes this file), so a crasher replays through exactly the code that found it.
//!
//! Each entry takes arbitrary bytes and asserts only that nothing panics and that, where
//! the API can render what it parsed, the rendering parses back to the same value.

use std::future::Future;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{Join, Sink};
use tokio::runtime::Runtime;
use warren::config::forward::{Endpoint, Listen, parse_dynamic, parse_local, parse_remote};
use warren::config::options::Options;
use warren::config::ssh_config::{
    ConfigFile, Defaults, MatchContext, Scope, Tokens, apply_config_files, dump, expand_paths,
};
use warren::forward::{OpenError, Opener};
use warren::proxy::{ProxyConfig, ProxyCredentials, serve_client};
use warren::server::address::{
    Host, is_localhost_name, parse_host, parse_ipv4_legacy, parse_net, validate_name,
};
use warren::server::authorized_keys::{KeyOptions, parse_authorized_keys, parse_key_line};
use warren::server::certificate::check_user_certificate;
use warren::server::config::ServerConfig;
use warren::server::key_options::{
    SourceList, parse_expiry, parse_permit, parse_permit_listen, parse_permit_open,
};
use warren_ssh::ssh_key::{Certificate, HashAlg};

/// A fuzz target's body: arbitrary bytes in, a panic if something is wrong.
pub type Target = fn(&[u8]);

/// Every target by name, as the directories under `fuzz/corpus/` and `fuzz/regressions/`
/// are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("socks4", socks4),
    ("socks5", socks5),
    ("http_proxy", http_proxy),
    ("forward_spec", forward_spec),
    ("ssh_config", ssh_config),
    ("ssh_option", ssh_option),
    ("authorized_keys", authorized_keys),
    ("certificate", certificate),
    ("server_config", server_config),
    ("address", address),
    ("key_options", key_options),
    ("ssh_session", ssh_session),
];

/// Built once per process: a runtime per input would cost more than the parse. The clock
/// is paused so a handshake that waits for bytes that never come times out at once.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
}

/// Stands in for the SSH session: checks what the proxy asks for, and answers with a
/// tunnel whose far side sends `reply` (an origin server's response, for plain HTTP).
struct FuzzOpener {
    reply: Vec<u8>,
}

type Tunnel = Join<Cursor<Vec<u8>>, Sink>;

impl Opener for FuzzOpener {
    type Stream = Tunnel;

    fn open(
        &self,
        target: &Endpoint,
        _originator: Option<SocketAddr>,
    ) -> impl Future<Output = Result<Tunnel, OpenError>> + Send {
        match target {
            Endpoint::Tcp { host, port } => {
                assert!(!host.is_empty(), "proxy asked for an empty host");
                assert_ne!(*port, 0, "proxy asked for port 0");
            }
            Endpoint::Unix(path) => panic!("proxy asked for a unix socket {path:?}"),
        }
        let tunnel = tokio::io::join(Cursor::new(self.reply.clone()), tokio::io::sink());
        async move { Ok(tunnel) }
    }
}

/// A whole proxy client connection: `client` is all it sends, then EOF.
fn proxy(client: Vec<u8>, reply: Vec<u8>, auth: bool) {
    let cfg = ProxyConfig {
        auth: auth.then(|| ProxyCredentials::new("user", "secret")),
        ..ProxyConfig::default()
    };
    let opener = FuzzOpener { reply };
    let stream = tokio::io::join(Cursor::new(client), tokio::io::sink());
    runtime().block_on(serve_client(stream, None, &opener, &cfg));
}

/// The first byte picks whether the proxy requires credentials; the rest follows the
/// version byte the dispatcher has already seen.
fn socks(version: u8, data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut client = vec![version];
    client.extend_from_slice(rest);
    proxy(client, Vec::new(), flags & 1 == 1);
}

/// SOCKS4 and SOCKS4a requests.
pub fn socks4(data: &[u8]) {
    socks(4, data);
}

/// SOCKS5 greeting, RFC 1929 login and CONNECT request.
pub fn socks5(data: &[u8]) {
    socks(5, data);
}

/// HTTP proxy requests (CONNECT and plain, with bodies): the bytes before the first NUL
/// are what the client sends, those after it what the origin answers.
pub fn http_proxy(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (client, reply) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    // The dispatcher sends only letters to the HTTP side.
    if !client.first().is_some_and(u8::is_ascii_alphabetic) {
        return;
    }
    proxy(client.to_vec(), reply.to_vec(), flags & 1 == 1);
}

/// `-L`, `-R` and `-D` specs. A TCP forward renders (`Display`) to a spec that parses back
/// to the same forward, unless a host holds a character the spec syntax escapes or brackets:
/// `Display` is written for logs and does not escape.
pub fn forward_spec(data: &[u8]) {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    if spec.contains(['\\', '[', ']', '/']) {
        let _ = (parse_local(spec), parse_remote(spec), parse_dynamic(spec));
        return;
    }
    if let Ok(f) = parse_local(spec)
        && let (Listen::Tcp { .. }, Endpoint::Tcp { .. }) = (&f.listen, &f.connect)
    {
        let again = format!("{}:{}", f.listen, f.connect);
        let back = parse_local(&again).unwrap_or_else(|e| panic!("{again:?}: {e}"));
        assert_eq!(
            (back.listen, back.connect),
            (f.listen, f.connect),
            "{again:?}"
        );
    }
    if let Ok(f) = parse_remote(spec)
        && let Listen::Tcp { .. } = &f.listen
    {
        let again = match &f.connect {
            Some(c @ Endpoint::Tcp { .. }) => Some(format!("{}:{c}", f.listen)),
            Some(Endpoint::Unix(_)) => None,
            None => Some(f.listen.to_string()),
        };
        if let Some(again) = again {
            let back = parse_remote(&again).unwrap_or_else(|e| panic!("{again:?}: {e}"));
            assert_eq!(
                (back.listen, back.connect),
                (f.listen, f.connect),
                "{again:?}"
            );
        }
    }
    if let Ok(f) = parse_dynamic(spec) {
        let listen = Listen::Tcp {
            bind: f.bind.clone(),
            port: f.port,
        };
        let again = listen.to_string();
        let back = parse_dynamic(&again).unwrap_or_else(|e| panic!("{again:?}: {e}"));
        assert_eq!((back.bind, back.port), (f.bind, f.port), "{again:?}");
    }
}

fn match_context(home: &Path) -> MatchContext {
    MatchContext {
        host: "fuzz.example".into(),
        original_host: "fuzz".into(),
        user: None,
        local_user: "alice".into(),
        home: home.to_owned(),
    }
}

/// Resolving, path expansion and `ssh -G` output over the options, as the client does.
fn finish(mut opts: Options, ctx: &MatchContext) {
    let _ = dump(&opts, ctx, &Defaults::default());
    let tokens = Tokens::resolved(&opts, ctx);
    if expand_paths(&mut opts, &tokens).is_ok() {
        let _ = dump(&opts, ctx, &Defaults::default());
    }
}

/// An `ssh_config` file. The reader only reads files, so the text goes to a file in a
/// fresh home directory. `Include` is skipped: it reads the real file system, where a
/// fuzzer could name a FIFO or a device and hang.
pub fn ssh_config(data: &[u8]) {
    if data
        .to_ascii_lowercase()
        .windows(7)
        .any(|w| w == b"include")
    {
        return;
    }
    let home = tempfile::tempdir().expect("a temp dir");
    let path = home.path().join("config");
    std::fs::write(&path, data).expect("the config file is written");
    let file = ConfigFile {
        path,
        scope: Scope::User,
        required: true,
        check_permissions: false,
    };
    let ctx = match_context(home.path());
    let mut opts = Options::default();
    if apply_config_files(&mut opts, &ctx, &[file]).is_ok() {
        finish(opts, &ctx);
    }
}

/// `-o` arguments, one per line, applied in order to one set of options.
pub fn ssh_option(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut opts = Options::default();
    for line in text.split('\n') {
        let _ = opts.apply_arg(line);
    }
    finish(opts, &match_context(Path::new("/nonexistent-home")));
}

/// Clients a key's restrictions are checked against.
const CLIENTS: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
];

fn check_logins(options: &KeyOptions) {
    for client in CLIENTS {
        let _ = options.check_login(client, UNIX_EPOCH);
        let _ = options.check_login(client, SystemTime::now());
    }
}

/// `authorized_keys` text. A parsed key, written back in OpenSSH form, parses again to
/// the same key.
pub fn authorized_keys(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for entry in parse_authorized_keys(text, "fuzz").into_iter().flatten() {
        check_logins(&entry.options);
        for p in &entry.options.permit_open {
            let _ = p.matches(&Host::Name("example.org".into()), 80);
        }
        for p in &entry.options.permit_listen {
            let _ = p.matches("localhost", 8080);
        }
        let line = entry.key.to_openssh().expect("a parsed key can be written");
        let back = parse_key_line(&line, "fuzz", 1)
            .expect("a key line is not blank")
            .unwrap_or_else(|e| panic!("{line:?}: {}", e.reason));
        assert_eq!(back.key.key_data(), entry.key.key_data(), "{line:?}");
    }
}

/// An OpenSSH certificate, binary or text, checked for a login. The check trusts the
/// certificate's own CA and principals and runs at its start time, so it gets past the
/// cheap refusals to the signature and the critical options.
pub fn certificate(data: &[u8]) {
    let mut certs = Vec::new();
    if let Ok(c) = Certificate::from_bytes(data) {
        certs.push(c);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = Certificate::from_openssh(text)
    {
        certs.push(c);
    }
    for cert in certs {
        let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
        let principals = cert.valid_principals().to_vec();
        let times = [cert.valid_after(), cert.valid_before().saturating_sub(1), 0];
        for now in times {
            let _ = check_user_certificate(&cert, "alice", &principals, &[ca], now);
        }
        let _ = check_user_certificate(&cert, "alice", &[], &[], 0);
        for list in cert.critical_options().values() {
            if let Ok(sources) = SourceList::from_certificate(list) {
                for client in CLIENTS {
                    let _ = sources.matches(client);
                }
            }
        }
    }
}

/// A warrend.toml, parsed and validated.
pub fn server_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ServerConfig::from_toml(text, Path::new("/etc/warrend/warrend.toml")) {
        config.validate().expect("a loaded config validates again");
    }
}

/// Host and network canonicalisation. What comes out, written back, canonicalises to
/// itself.
pub fn address(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match parse_host(s) {
        Ok(Host::Ip(ip)) => {
            let again = ip.to_string();
            assert_eq!(parse_host(&again), Ok(Host::Ip(ip)), "{s:?} -> {again:?}");
        }
        Ok(Host::Name(name)) => {
            assert_eq!(parse_host(&name), Ok(Host::Name(name.clone())), "{s:?}");
            assert!(validate_name(&name).is_ok(), "{s:?} -> {name:?}");
        }
        Err(_) => {}
    }
    if let Some(ip) = parse_ipv4_legacy(s) {
        let again = ip.to_string();
        assert_eq!(parse_ipv4_legacy(&again), Some(ip), "{s:?} -> {again:?}");
    }
    if let Ok(net) = parse_net(s) {
        let again = net.to_string();
        assert_eq!(parse_net(&again), Ok(net), "{s:?} -> {again:?}");
    }
    let _ = validate_name(s);
    let _ = is_localhost_name(s);
}

/// `authorized_keys` option values: permitopen, permitlisten, expiry-time and from.
pub fn key_options(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for bare_port in [false, true] {
        let _ = parse_permit(s, bare_port);
    }
    if let Ok(p) = parse_permit_open(s) {
        let _ = p.matches(&Host::Name("example.org".into()), 443);
        let _ = p.matches(&Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), 22);
    }
    if let Ok(p) = parse_permit_listen(s) {
        let _ = p.matches("localhost", 8080);
    }
    if let Ok(t) = parse_expiry(s) {
        let _ = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    }
    let lists = [SourceList::from_option(s), SourceList::from_certificate(s)];
    for list in lists.into_iter().flatten() {
        for client in CLIENTS {
            let _ = list.matches(client);
        }
    }
}

/// A host key for the engine harness only (generated for it; it protects nothing).
const FUZZ_HOST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAdpRC7NexZhX6WIivAIG3lano7SZ12Dy+ToeuhVLr1kAAAAIifQmLHn0Ji
xwAAAAtzc2gtZWQyNTUxOQAAACAdpRC7NexZhX6WIivAIG3lano7SZ12Dy+ToeuhVLr1kA
AAAEBFZJ+hbLQE+nM9Rx7u9B2Xi8VRMr2qmuxjBfnIRkOYWh2lELs17FmFfpYiK8AgbeVq
ejtJnXYPL5Oh66FUuvWQAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";

/// Warren's SSH engine with hostile input, in three ways chosen by the first byte:
/// raw bytes into a fresh server or client (version line, framing, KEXINIT, ECDH messages),
/// or, after a real handshake and login between our own client and server, arbitrary
/// messages that pass the MAC into the server's auth and connection parsers (each prefixed
/// by a one-byte length). The server side answers like a permissive application would, so
/// channels open and requests get replies.
pub fn ssh_session(data: &[u8]) {
    use std::sync::Arc;
    use std::time::Instant;
    use warren_ssh::proto::{AuthReply, Config, Event, Role, Session};

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = warren_ssh::ssh_key::PrivateKey::from_openssh(FUZZ_HOST_KEY).expect("fuzz host key");
    let server_config = || {
        let mut c = Config::new(Role::Server);
        c.host_keys = vec![key.clone()];
        c.compression = true;
        Arc::new(c)
    };
    let now = Instant::now();
    match mode % 3 {
        0 | 1 => {
            let mut s = if mode % 3 == 0 {
                Session::new(server_config(), now)
            } else {
                Session::new(Arc::new(Config::new(Role::Client)), now)
            };
            for chunk in rest.chunks(97) {
                let _ = s.feed(chunk, now);
                while s.poll_event().is_some() {}
            }
            s.handle_timeout(now);
        }
        _ => {
            let mut c = Session::new(Arc::new(Config::new(Role::Client)), now);
            let mut s = Session::new(server_config(), now);
            let answer = |s: &mut Session| {
                while let Some(ev) = s.poll_event() {
                    match ev {
                        Event::AuthRequest { id, .. } => s.auth_reply(id, AuthReply::Accept),
                        Event::ChannelOpenRequest { id, .. } => s.accept_channel(id),
                        Event::ChannelRequest {
                            id,
                            request_id,
                            want_reply: true,
                            ..
                        } => s.channel_request_reply(id, request_id, true),
                        Event::GlobalRequest {
                            request_id,
                            want_reply: true,
                            ..
                        } => s.global_reply(request_id, true, &[0, 0, 0x1f, 0x90]),
                        Event::ChannelReadable { id } => {
                            let mut buf = [0u8; 4096];
                            let _ = s.channel_read(id, &mut buf);
                            s.channel_close(id);
                        }
                        _ => {}
                    }
                }
            };
            let pump = |c: &mut Session, s: &mut Session| {
                for _ in 0..64 {
                    let a = c.take_transmit(Vec::new());
                    let b = s.take_transmit(Vec::new());
                    if a.is_empty() && b.is_empty() {
                        break;
                    }
                    let _ = s.feed(&a, now);
                    let _ = c.feed(&b, now);
                    while c.poll_event().is_some() {}
                    answer(s);
                }
            };
            pump(&mut c, &mut s);
            c.auth_none("fuzz");
            pump(&mut c, &mut s);
            let mut rest = rest;
            while let Some((&len, tail)) = rest.split_first() {
                let n = (len as usize).min(tail.len());
                c.send_raw_payload(&tail[..n]);
                rest = &tail[n..];
                pump(&mut c, &mut s);
            }
        }
    }
}
