//! What a session is allowed to do and how it tunes itself. Built once, shared by every
//! session of a client or server (`Arc<Config>`).

use std::time::Duration;

/// Which side of the connection this session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

#[derive(Clone)]
pub struct Config {
    pub role: Role,
    /// Our identification line without CR LF ("SSH-2.0-warren_0.1").
    pub ident: String,
    /// Server only: host keys; the kex picks one the client accepts.
    pub host_keys: Vec<ssh_key::PrivateKey>,
    /// Client only: host key algorithms we accept, in preference order (known_hosts order first).
    pub host_key_algorithms: Vec<String>,
    pub kex: Vec<String>,
    pub ciphers: Vec<String>,
    pub macs: Vec<String>,
    /// Offer zlib@openssh.com (delayed: never before authentication).
    pub compression: bool,
    /// RekeyLimit: rekey after this many bytes in either direction...
    pub rekey_bytes: u64,
    /// ...or after this long.
    pub rekey_time: Option<Duration>,
    /// keepalive@openssh.com interval (ServerAliveInterval / ClientAliveInterval) and how many may
    /// go unanswered before the session is declared dead.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_max: u32,
    /// Per-channel receive window we start with and the most autotuning may grow it to.
    pub window_initial: u32,
    pub window_cap: u32,
    /// The cap for peers other than warren's own engine. OpenSSH reads whatever of a
    /// channel's window the network does not take yet into one buffer, grown by copying
    /// reallocations (likely why its CPU climbs with that excess; not profiled): measured against
    /// sshd 9.2 at 100 ms RTT and 1 Gbit/s (docs/benchmark.md), a 64 MiB window kept sshd at
    /// 92-100 % CPU moving ~55 MiB/s, while 24 MiB let it fill the line (119 MiB/s, second
    /// half of the run) at ~11 %. 24 MiB still covers 1 Gbit/s up to ~190 ms RTT.
    pub foreign_window_cap: u32,
    /// Bytes of window growth beyond the initial windows that all channels of one session may
    /// hold together: the bound on memory a peer can make us buffer for slow readers.
    pub window_budget: u64,
    /// Largest CHANNEL_DATA payload we accept (advertised as maximum packet size).
    pub max_packet: u32,
    /// Channels a peer may have open at once on this session.
    pub max_channels: usize,
    /// Channel types beyond RFC 4254 and OpenSSH's that the peer may open on this session;
    /// they arrive as `ChannelKind::Extension`. Empty: a peer reaches nothing the
    /// application did not ask for, and any unknown type is refused by the core.
    pub extension_channels: Vec<String>,
}

impl Config {
    pub fn new(role: Role) -> Self {
        Config {
            role,
            ident: format!("SSH-2.0-warren_{}", env!("CARGO_PKG_VERSION")),
            host_keys: Vec::new(),
            host_key_algorithms: crate::hostkey::HOST_KEY_ALGORITHMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            kex: crate::kex::KEX_ALGORITHMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ciphers: crate::cipher::CIPHERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            macs: crate::cipher::MACS.iter().map(|s| s.to_string()).collect(),
            compression: false,
            // OpenSSH rekeys 128-bit-block ciphers every 2^32 blocks; 1 GiB keeps every cipher far
            // inside its limits at a cost of one kex per GiB.
            rekey_bytes: 1 << 30,
            rekey_time: None,
            keepalive_interval: None,
            keepalive_max: 3,
            // OpenSSH's CHAN_TCP_WINDOW_DEFAULT: what a channel gets before autotuning measures the path.
            window_initial: 2 * 1024 * 1024,
            window_cap: 64 * 1024 * 1024,
            foreign_window_cap: 24 * 1024 * 1024,
            window_budget: 256 * 1024 * 1024,
            max_packet: 32 * 1024,
            max_channels: 1024,
            extension_channels: Vec::new(),
        }
    }
}
