//! What the core tells the application, and the requests it parses for it.

use bytes::Bytes;

use crate::hostkey::ParsedKey;

/// A channel's local id (what this side chose; the peer's id never leaves the core).
pub type ChannelId = u32;

/// Identifies a request the application must answer (global or channel request, auth
/// request); replies go out in the order the requests came in, whatever order the
/// application answers them in (RFC 4254 §4, §5.4).
pub type RequestId = u64;

#[derive(Debug)]
pub enum Event {
    /// Client: the first key exchange finished and this host key signed it. Authenticate only
    /// after deciding to trust it (known_hosts).
    HostKey(ParsedKey),
    /// The userauth service is ready (client) — auth requests may be sent.
    AuthReady,
    /// Client: the server's banner (already stripped of nothing; the application escapes it).
    Banner(String),
    /// Client: authentication succeeded.
    AuthSuccess,
    /// Client: the last attempt failed; `methods` may continue.
    AuthFailure { methods: Vec<String>, partial: bool },
    /// Client: the server would accept this key (answer to a probe without signature).
    AuthPkOk { alg: String, key_blob: Vec<u8> },
    /// Client: keyboard-interactive prompts (prompt text, echo).
    AuthInfoRequest {
        name: String,
        instruction: String,
        prompts: Vec<(String, bool)>,
    },
    /// Server: a userauth request; answer with `Session::auth_reply`.
    AuthRequest {
        id: RequestId,
        user: String,
        method: AuthMethod,
    },
    /// The peer asks to open a channel; answer with `accept_channel`/`reject_channel`.
    ChannelOpenRequest { id: ChannelId, kind: ChannelKind },
    /// A channel we opened is confirmed.
    ChannelOpened { id: ChannelId },
    /// A channel we opened was refused.
    ChannelOpenFailed {
        id: ChannelId,
        reason: u32,
        description: String,
    },
    /// Data is waiting in the channel (edge: sent when the buffer stops being empty).
    ChannelReadable { id: ChannelId },
    /// Extended data (stderr of a remote command); granted back at once, since it is small.
    ChannelStderr { id: ChannelId, data: Bytes },
    /// The channel may accept writes again (peer window opened, or output drained).
    ChannelWritable { id: ChannelId },
    /// The peer sent EOF: no more data after what is buffered.
    ChannelEof { id: ChannelId },
    /// Both sides closed the channel; its id is free. Sent exactly once per channel.
    ChannelClosed { id: ChannelId },
    /// A channel request; answer with `channel_request_reply` if `want_reply`.
    ChannelRequest {
        id: ChannelId,
        request_id: RequestId,
        request: ChannelRequest,
        want_reply: bool,
    },
    /// The peer answered one of our channel requests.
    ChannelRequestReply { id: ChannelId, ok: bool },
    /// A global request; answer with `global_reply` if `want_reply`.
    GlobalRequest {
        request_id: RequestId,
        request: GlobalRequest,
        want_reply: bool,
    },
    /// The peer answered one of our global requests (`data`: e.g. the port chosen for port 0).
    GlobalReply { ok: bool, data: Bytes },
    /// Keepalives went unanswered `keepalive_max` times.
    KeepaliveTimeout,
}

#[derive(Debug, Clone)]
pub enum AuthMethod {
    None,
    Password {
        password: String,
    },
    /// `signature`: `None` for a probe ("would you accept this key?"), `Some(valid)` when the
    /// request was signed — the core has checked the signature over this session's id.
    PublicKey {
        alg: String,
        key: ParsedKey,
        key_blob: Vec<u8>,
        signature: Option<bool>,
    },
    KeyboardInteractive {
        submethods: String,
    },
    /// Answers to the prompts we sent with `auth_info_request`.
    KeyboardInteractiveResponses {
        responses: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub enum AuthReply {
    Accept,
    Reject {
        methods: Vec<String>,
        partial: bool,
    },
    /// Answer to a publickey probe: the key would be accepted.
    PkOk,
    /// Keyboard-interactive: ask these prompts (text, echo).
    InfoRequest {
        name: String,
        instruction: String,
        prompts: Vec<(String, bool)>,
    },
}

/// `tun@openssh.com` modes and the "any unit" number (OpenSSH's PROTOCOL, section 2.3).
pub const TUN_MODE_POINTOPOINT: u32 = 1;
pub const TUN_MODE_ETHERNET: u32 = 2;
pub const TUN_UNIT_ANY: u32 = 0x7fff_ffff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    Session,
    DirectTcpip {
        host: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    ForwardedTcpip {
        address: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    DirectStreamlocal {
        path: String,
    },
    ForwardedStreamlocal {
        path: String,
    },
    /// `auth-agent@openssh.com`: the server reaching the client's agent (agent forwarding).
    AuthAgent,
    /// `tun@openssh.com` (ssh -w): layer 3 packets (`mode` 1) or layer 2 frames (`mode` 2),
    /// one per CHANNEL_DATA message; `unit` is the peer's device number or
    /// [`TUN_UNIT_ANY`]. Its data is datagrams: see `Session::channel_write_datagram`.
    Tun {
        mode: u32,
        unit: u32,
    },
    /// A channel type of the application's own (`reach@warren` between warrend nodes):
    /// `data` is the type-specific part of CHANNEL_OPEN after the window fields, encoded and
    /// parsed by the application. Received only for types listed in
    /// [`super::Config::extension_channels`]; any other unknown type is refused by the core.
    Extension {
        kind: String,
        data: Vec<u8>,
    },
    /// An unknown type (never delivered: the core refuses it with UNKNOWN_CHANNEL_TYPE).
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRequest {
    Exec(Vec<u8>),
    Shell,
    Subsystem(String),
    Env {
        name: String,
        value: Vec<u8>,
    },
    PtyReq,
    X11Req,
    AuthAgentReq,
    WindowChange,
    Signal(String),
    ExitStatus(u32),
    ExitSignal {
        signal: String,
        core_dumped: bool,
        message: String,
    },
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalRequest {
    TcpipForward { address: String, port: u32 },
    CancelTcpipForward { address: String, port: u32 },
    StreamlocalForward { path: String },
    CancelStreamlocalForward { path: String },
    Other(String),
}

/// What `channel_read` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Data(usize),
    /// Nothing buffered yet; a `ChannelReadable` event will follow.
    WouldBlock,
    /// The peer sent EOF (or closed) and everything was read.
    Eof,
}
