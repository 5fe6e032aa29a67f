//! The transport layer (RFC 4253): version exchange, the binary packet protocol with
//! sequence numbers and compression, and key exchange including rekeying and strict kex.
//!
//! It hands every payload that is not its own (service, auth, connection messages) to
//! the session above it, and refuses to send such payloads while a key exchange is in
//! flight (RFC 4253 §7.1): the session asks [`Transport::can_send_app`] first and keeps
//! its own queue, so no message is ever reordered across NEWKEYS.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use tracing::{debug, trace};

use crate::cipher::{self, DirectionKeys, Opener, Sealer};
use crate::compress::{Compressor, Decompressor};
use crate::error::{Error, Result};
use crate::hostkey::{self, ParsedKey};
use crate::kex::{self, ClientKex, KexInit, Negotiated};
use crate::msg;
use crate::wire::{Put, Reader};

use super::config::{Config, Role};

/// The longest identification line (RFC 4253 §4.2: 255 bytes including CR LF).
const MAX_VERSION_LINE: usize = 255;
/// Lines a server may send before its identification; a client that sees more gives up
/// instead of reading an endless banner.
const MAX_PRE_VERSION_BYTES: usize = 64 * 1024;

/// What the layer above learns from the transport.
#[derive(Debug)]
pub enum TransportEvent {
    /// The first key exchange finished on the client: the server's host key, verified to have
    /// signed this exchange. The application decides whether it trusts it.
    HostKey(ParsedKey),
    /// A payload for the session (message number >= 50, or SERVICE_* / EXT_INFO).
    Payload(bytes::Bytes),
    /// A key exchange finished; application sends may resume.
    KexDone,
}

enum Version {
    /// Still reading the peer's identification line.
    Reading,
    Done(Vec<u8>),
}

#[derive(PartialEq, Eq, Debug, Clone, Copy)]
enum KexPhase {
    /// We sent KEXINIT and wait for the peer's.
    SentInit,
    /// Both KEXINITs seen: client waits for ECDH_REPLY, server for ECDH_INIT.
    Exchanging,
    /// We sent NEWKEYS; the peer's NEWKEYS is still to come.
    SentNewKeys,
}

struct KexState {
    phase: KexPhase,
    ours: Vec<u8>,
    theirs: Option<Vec<u8>>,
    negotiated: Option<Negotiated>,
    client: Option<ClientKex>,
    /// Keys to install when the peer's NEWKEYS arrives.
    pending_open: Option<(Box<dyn Opener>, bool)>,
    ignore_next: bool,
}

/// One direction's packet protection, counters and compression.
struct Direction<C> {
    cipher: C,
    seq: u32,
    /// Bytes through this direction since the last key exchange (RekeyLimit).
    bytes_since_kex: u64,
    /// Whether compression is negotiated and whether it is active yet (delayed zlib@openssh.com
    /// starts only after authentication).
    zlib: bool,
    zlib_delayed: bool,
}

pub struct Transport {
    config: std::sync::Arc<Config>,
    our_version: Vec<u8>,
    peer_version: Version,
    inbuf: BytesMut,
    /// Bytes to write to the socket, already protected.
    pub(crate) out: Vec<u8>,
    tx: Direction<Box<dyn Sealer>>,
    rx: Direction<Box<dyn Opener>>,
    compressor: Option<Compressor>,
    decompressor: Option<Decompressor>,
    scratch: Vec<u8>,
    kex: Option<KexState>,
    session_id: Option<Vec<u8>>,
    host_key_blob: Option<Vec<u8>>,
    /// Both sides agreed on strict kex in the first exchange (Terrapin countermeasure).
    strict: bool,
    first_kex_done: bool,
    peer_ext_info: bool,
    authenticated: bool,
    last_kex: Instant,
    /// Length of the packet whose header we already decoded (waiting for the rest).
    pending_len: Option<usize>,
    /// Sequence number of the packet most recently read (for SSH_MSG_UNIMPLEMENTED).
    last_rx_seq: u32,
    pub(crate) closed: bool,
}

impl Transport {
    pub fn new(config: std::sync::Arc<Config>, now: Instant) -> Self {
        let our_version = config.ident.as_bytes().to_vec();
        let mut out = Vec::with_capacity(64 * 1024);
        out.extend_from_slice(&our_version);
        out.extend_from_slice(b"\r\n");
        let mut t = Transport {
            config,
            our_version,
            peer_version: Version::Reading,
            inbuf: BytesMut::with_capacity(64 * 1024),
            out,
            tx: Direction {
                cipher: cipher::plain_sealer(),
                seq: 0,
                bytes_since_kex: 0,
                zlib: false,
                zlib_delayed: false,
            },
            rx: Direction {
                cipher: cipher::plain_opener(),
                seq: 0,
                bytes_since_kex: 0,
                zlib: false,
                zlib_delayed: false,
            },
            compressor: None,
            decompressor: None,
            scratch: Vec::new(),
            kex: None,
            session_id: None,
            host_key_blob: None,
            strict: false,
            first_kex_done: false,
            peer_ext_info: false,
            authenticated: false,
            last_kex: now,
            pending_len: None,
            last_rx_seq: 0,
            closed: false,
        };
        t.start_kex();
        t
    }

    /// Sequence number of the packet the last event came from.
    pub fn last_received_seq(&self) -> u32 {
        self.last_rx_seq
    }

    pub fn session_id(&self) -> Option<&[u8]> {
        self.session_id.as_deref()
    }

    pub fn peer_version(&self) -> Option<&[u8]> {
        match &self.peer_version {
            Version::Done(v) => Some(v),
            Version::Reading => None,
        }
    }

    /// Application (auth/connection) messages may be sent now: the first kex is done and no
    /// rekey is in flight.
    pub fn can_send_app(&self) -> bool {
        self.first_kex_done && self.kex.is_none() && !self.closed
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.inbuf.extend_from_slice(data);
    }

    /// Takes the bytes in `buf` (leaving it empty), without copying them when nothing is
    /// left over from the last call: that is the case when the reader appended to what
    /// [`Self::lend_leftover`] gave back, so a download is decrypted and sliced into packets
    /// in the very buffer the socket was read into.
    pub fn feed_buf(&mut self, buf: &mut BytesMut) {
        if self.inbuf.is_empty() {
            std::mem::swap(&mut self.inbuf, buf);
        } else {
            self.inbuf.extend_from_slice(buf);
            buf.clear();
        }
    }

    /// Moves the unparsed input (once processing has run: less than one packet, its header
    /// possibly decrypted already) into the empty `buf`, for the next read to append to.
    /// Nothing is lost by that: without more bytes this input cannot be parsed anyway, and
    /// [`Self::feed_buf`] takes it back, in order, with them.
    pub fn lend_leftover(&mut self, buf: &mut BytesMut) {
        if buf.is_empty() {
            std::mem::swap(&mut self.inbuf, buf);
        }
    }

    /// Tells the transport that user authentication succeeded (sent by the server, received by
    /// the client): delayed compression starts with the next packet in each direction.
    pub fn set_authenticated(&mut self) {
        self.authenticated = true;
        if self.tx.zlib_delayed {
            self.compressor = Some(Compressor::new());
        }
        if self.rx.zlib_delayed {
            self.decompressor = Some(Decompressor::new());
        }
    }

    /// Queues an application payload. The caller checked [`Self::can_send_app`], or the
    /// payload is a transport message that may always go (DISCONNECT, IGNORE).
    pub fn send(&mut self, payload: &[u8]) -> Result<()> {
        let start = self.out.len();
        if let Some(c) = self.compressor.as_mut() {
            self.scratch.clear();
            c.compress(payload, &mut self.scratch)?;
            self.tx
                .cipher
                .seal(self.tx.seq, &self.scratch, &mut self.out);
        } else {
            self.tx.cipher.seal(self.tx.seq, payload, &mut self.out);
        }
        trace!(msg = payload.first().copied(), seq = self.tx.seq, "send");
        self.tx.seq = self.tx.seq.wrapping_add(1);
        self.tx.bytes_since_kex += (self.out.len() - start) as u64;
        Ok(())
    }

    /// Sends CHANNEL_DATA with one copy of `data` (straight into the output buffer, encrypted in place).
    pub fn send_channel_data(&mut self, recipient: u32, data: &[u8]) -> Result<()> {
        if self.compressor.is_some() {
            let mut p = Vec::with_capacity(data.len() + 9);
            p.put_u8(msg::CHANNEL_DATA);
            p.put_u32(recipient);
            p.put_string(data);
            return self.send(&p);
        }
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        self.out.put_u8(msg::CHANNEL_DATA);
        self.out.put_u32(recipient);
        self.out.put_string(data);
        self.tx
            .cipher
            .seal_in_place(self.tx.seq, &mut self.out, start);
        self.tx.seq = self.tx.seq.wrapping_add(1);
        self.tx.bytes_since_kex += (self.out.len() - start) as u64;
        Ok(())
    }

    /// Processes buffered input until one event is ready for the session, or more bytes are needed.
    pub fn poll(&mut self, now: Instant) -> Result<Option<TransportEvent>> {
        loop {
            if self.closed {
                return Ok(None);
            }
            if let Version::Reading = self.peer_version {
                if !self.read_version()? {
                    return Ok(None);
                }
                continue;
            }
            let Some(payload) = self.read_packet()? else {
                return Ok(None);
            };
            if let Some(ev) = self.handle_packet(payload, now)? {
                return Ok(Some(ev));
            }
        }
    }

    /// True when the time or byte limit asks for a new key exchange; the caller then calls
    /// [`Self::start_kex`] (only when no kex is running).
    pub fn rekey_due(&self, now: Instant) -> bool {
        if !self.first_kex_done || self.kex.is_some() {
            return false;
        }
        let bytes = self.tx.bytes_since_kex.max(self.rx.bytes_since_kex);
        bytes >= self.config.rekey_bytes
            || self.config.rekey_time.is_some_and(|t| now.duration_since(self.last_kex) >= t)
            // Sequence numbers must not wrap under one key (RFC 4344 §3.1).
            || self.tx.seq > 0xF000_0000
            || self.rx.seq > 0xF000_0000
    }

    pub fn next_rekey_deadline(&self) -> Option<Instant> {
        self.config.rekey_time.map(|t| self.last_kex + t)
    }

    fn read_version(&mut self) -> Result<bool> {
        loop {
            let Some(nl) = self.inbuf.iter().position(|&b| b == b'\n') else {
                if self.inbuf.len() > MAX_VERSION_LINE && self.config.role == Role::Server {
                    return Err(Error::Protocol("identification line too long".into()));
                }
                if self.inbuf.len() > MAX_PRE_VERSION_BYTES {
                    return Err(Error::Protocol(
                        "no SSH identification from the peer".into(),
                    ));
                }
                return Ok(false);
            };
            let line = self.inbuf.split_to(nl + 1);
            let mut line = &line[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.starts_with(b"SSH-") {
                if !(line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-")) {
                    return Err(Error::Protocol(format!(
                        "unsupported protocol version {:?}",
                        String::from_utf8_lossy(line)
                    )));
                }
                if line.len() > MAX_VERSION_LINE - 2 {
                    return Err(Error::Protocol("identification line too long".into()));
                }
                debug!(peer = %String::from_utf8_lossy(line), "peer identification");
                self.peer_version = Version::Done(line.to_vec());
                return Ok(true);
            }
            // Only a server may send lines before its identification (RFC 4253 §4.2).
            if self.config.role == Role::Server {
                return Err(Error::Protocol(
                    "expected an SSH identification line".into(),
                ));
            }
        }
    }

    fn read_packet(&mut self) -> Result<Option<bytes::Bytes>> {
        let header_len = self.rx.cipher.header_len();
        let len = match self.pending_len {
            Some(l) => l,
            None => {
                if self.inbuf.len() < header_len {
                    return Ok(None);
                }
                let l = self
                    .rx
                    .cipher
                    .packet_len(self.rx.seq, &mut self.inbuf[..header_len])?;
                self.pending_len = Some(l);
                l
            }
        };
        let total = 4 + len + self.rx.cipher.tag_len();
        if self.inbuf.len() < total {
            self.inbuf.reserve(total - self.inbuf.len());
            return Ok(None);
        }
        self.pending_len = None;
        let mut packet = self.inbuf.split_to(total);
        let range = self.rx.cipher.open(self.rx.seq, &mut packet)?;
        self.last_rx_seq = self.rx.seq;
        self.rx.seq = self.rx.seq.wrapping_add(1);
        self.rx.bytes_since_kex += total as u64;
        let mut packet = packet.freeze();
        if let Some(d) = self.decompressor.as_mut() {
            self.scratch.clear();
            d.decompress(&packet[range], &mut self.scratch)?;
            return Ok(Some(bytes::Bytes::copy_from_slice(&self.scratch)));
        }
        packet.advance(range.start);
        packet.truncate(range.end - range.start);
        if packet.is_empty() {
            return Err(Error::Malformed("empty packet"));
        }
        Ok(Some(packet))
    }

    fn handle_packet(
        &mut self,
        payload: bytes::Bytes,
        now: Instant,
    ) -> Result<Option<TransportEvent>> {
        let n = payload[0];
        trace!(msg = n, "recv");
        let in_initial_kex = !self.first_kex_done;
        if let Some(k) = self.kex.as_mut()
            && k.ignore_next
            && (30..=49).contains(&n)
        {
            k.ignore_next = false;
            return Ok(None);
        }
        if in_initial_kex && self.strict && !msg::allowed_in_strict_initial_kex(n) {
            return Err(Error::Protocol(format!(
                "message {n} during strict key exchange"
            )));
        }
        match n {
            msg::DISCONNECT => {
                let mut r = Reader::new(&payload[1..], "DISCONNECT");
                let reason = r.u32()?;
                let description = String::from_utf8_lossy(r.string()?).into_owned();
                self.closed = true;
                Err(Error::PeerDisconnected {
                    reason,
                    description,
                })
            }
            msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED => Ok(None),
            msg::KEXINIT => {
                self.on_kexinit(payload)?;
                Ok(None)
            }
            msg::KEX_ECDH_INIT if self.config.role == Role::Server => {
                self.on_ecdh_init(&payload)?;
                Ok(None)
            }
            msg::KEX_ECDH_REPLY if self.config.role == Role::Client => self.on_ecdh_reply(&payload),
            msg::NEWKEYS => self.on_newkeys(now),
            30..=49 => Err(Error::Protocol(format!(
                "unexpected key exchange message {n}"
            ))),
            _ if in_initial_kex => Err(Error::Protocol(format!(
                "message {n} before key exchange finished"
            ))),
            _ => Ok(Some(TransportEvent::Payload(payload))),
        }
    }

    /// Sends our KEXINIT (first exchange, rekey by limit, or answering the peer's).
    pub fn start_kex(&mut self) {
        let c = &self.config;
        let mut kex_algs: Vec<String> = c.kex.clone();
        if !self.first_kex_done {
            match c.role {
                Role::Client => {
                    kex_algs.push("ext-info-c".into());
                    kex_algs.push("kex-strict-c-v00@openssh.com".into());
                }
                Role::Server => {
                    kex_algs.push("ext-info-s".into());
                    kex_algs.push("kex-strict-s-v00@openssh.com".into());
                }
            }
        }
        let host_key = match c.role {
            Role::Client => c.host_key_algorithms.clone(),
            Role::Server => {
                let mut algs = Vec::new();
                for k in &c.host_keys {
                    for a in hostkey::algorithms_for(k.public_key()) {
                        if !algs.iter().any(|x: &String| x == a) {
                            algs.push(a.to_string());
                        }
                    }
                }
                algs
            }
        };
        let comp: Vec<String> = if c.compression {
            vec!["zlib@openssh.com".into(), "none".into()]
        } else {
            vec!["none".into()]
        };
        let mut cookie = [0u8; 16];
        fill_random(&mut cookie);
        let init = KexInit {
            cookie,
            kex: kex_algs,
            host_key,
            cipher_c2s: c.ciphers.clone(),
            cipher_s2c: c.ciphers.clone(),
            mac_c2s: c.macs.clone(),
            mac_s2c: c.macs.clone(),
            comp_c2s: comp.clone(),
            comp_s2c: comp,
            first_kex_follows: false,
        };
        let ours = init.encode();
        // Cannot fail for our own well-formed payload with the cipher chosen at this point.
        let _ = self.send(&ours);
        self.kex = Some(KexState {
            phase: KexPhase::SentInit,
            ours,
            theirs: None,
            negotiated: None,
            client: None,
            pending_open: None,
            ignore_next: false,
        });
    }

    fn on_kexinit(&mut self, payload: bytes::Bytes) -> Result<()> {
        if self.kex.is_none() {
            // The peer starts a rekey: answer with ours first.
            self.start_kex();
        }
        let theirs = KexInit::decode(&payload)?;
        let k = self.kex.as_mut().expect("kex state exists");
        if k.theirs.is_some() {
            return Err(Error::Protocol("second KEXINIT during key exchange".into()));
        }
        let ours = KexInit::decode(&k.ours)?;
        let (client, server) = match self.config.role {
            Role::Client => (&ours, &theirs),
            Role::Server => (&theirs, &ours),
        };
        let role = match self.config.role {
            Role::Client => kex::Role::Client,
            Role::Server => kex::Role::Server,
        };
        let negotiated = kex::negotiate(role, client, server, cipher::is_aead)?;
        debug!(
            kex = %negotiated.kex, host_key = %negotiated.host_key, c2s = %negotiated.cipher_c2s,
            s2c = %negotiated.cipher_s2c, strict = negotiated.strict, "negotiated"
        );
        if !self.first_kex_done {
            self.strict = negotiated.strict;
            self.peer_ext_info = negotiated.peer_ext_info;
            if self.strict && self.rx.seq != 1 {
                // KEXINIT must be the peer's first packet under strict kex.
                return Err(Error::Protocol(
                    "strict kex: KEXINIT was not the first packet".into(),
                ));
            }
        }
        k.ignore_next = negotiated.ignore_next_kex_packet;
        k.theirs = Some(payload.to_vec());
        k.phase = KexPhase::Exchanging;
        if self.config.role == Role::Client {
            let ck = ClientKex::new(&negotiated.kex)?;
            let mut p = vec![msg::KEX_ECDH_INIT];
            p.put_string(ck.init_payload());
            k.client = Some(ck);
            k.negotiated = Some(negotiated);
            self.send(&p)?;
        } else {
            k.negotiated = Some(negotiated);
        }
        Ok(())
    }

    fn version_pair(&self) -> (Vec<u8>, Vec<u8>) {
        let peer = self.peer_version().unwrap_or_default().to_vec();
        match self.config.role {
            Role::Client => (self.our_version.clone(), peer),
            Role::Server => (peer, self.our_version.clone()),
        }
    }

    fn on_ecdh_init(&mut self, payload: &[u8]) -> Result<()> {
        let (v_c, v_s) = self.version_pair();
        let k = self
            .kex
            .as_mut()
            .ok_or_else(|| Error::Protocol("ECDH_INIT outside kex".into()))?;
        if k.phase != KexPhase::Exchanging {
            return Err(Error::Protocol("ECDH_INIT out of order".into()));
        }
        let neg = k.negotiated.as_ref().expect("negotiated in Exchanging");
        let mut r = Reader::new(&payload[1..], "KEX_ECDH_INIT");
        let q_c = r.string()?;
        let (q_s, k_enc) = kex::server_kex(&neg.kex, q_c)?;
        let host_key = self
            .config
            .host_keys
            .iter()
            .find(|hk| hostkey::algorithms_for(hk.public_key()).contains(&neg.host_key.as_str()))
            .ok_or_else(|| Error::Key(format!("no host key for {}", neg.host_key)))?;
        let k_s = host_key
            .public_key()
            .to_bytes()
            .map_err(|e| Error::Key(e.to_string()))?;
        let theirs = k.theirs.as_deref().expect("theirs in Exchanging");
        let h = kex::exchange_hash(
            &neg.kex, &v_c, &v_s, theirs, &k.ours, &k_s, q_c, &q_s, &k_enc,
        );
        let sig = hostkey::sign(host_key, &neg.host_key, &h)?;
        let mut p = vec![msg::KEX_ECDH_REPLY];
        p.put_string(&k_s);
        p.put_string(&q_s);
        p.put_string(&sig);
        self.send(&p)?;
        self.finish_exchange(&k_enc, &h)
    }

    fn on_ecdh_reply(&mut self, payload: &[u8]) -> Result<Option<TransportEvent>> {
        let (v_c, v_s) = self.version_pair();
        let k = self
            .kex
            .as_mut()
            .ok_or_else(|| Error::Protocol("ECDH_REPLY outside kex".into()))?;
        let Some(ck) = k.client.take() else {
            return Err(Error::Protocol("ECDH_REPLY out of order".into()));
        };
        let neg = k.negotiated.as_ref().expect("negotiated with client kex");
        let mut r = Reader::new(&payload[1..], "KEX_ECDH_REPLY");
        let k_s = r.string()?;
        let q_s = r.string()?;
        let sig = r.string()?;
        let q_c = ck.init_payload().to_vec();
        let k_enc = ck.finish(q_s)?;
        let theirs = k.theirs.as_deref().expect("theirs in Exchanging");
        let h = kex::exchange_hash(
            &neg.kex, &v_c, &v_s, &k.ours, theirs, k_s, &q_c, q_s, &k_enc,
        );
        let key =
            hostkey::verify(&neg.host_key, k_s, &h, sig).map_err(|_| Error::HostKeySignature)?;
        let event = match &self.host_key_blob {
            None => {
                self.host_key_blob = Some(k_s.to_vec());
                Some(TransportEvent::HostKey(key))
            }
            Some(first) if first.as_slice() == k_s => None,
            Some(_) => return Err(Error::Protocol("host key changed during rekey".into())),
        };
        self.finish_exchange(&k_enc, &h)?;
        Ok(event)
    }

    /// Derives keys, sends NEWKEYS and switches our sending side at once; the receiving side
    /// switches when the peer's NEWKEYS arrives.
    fn finish_exchange(&mut self, k_enc: &[u8], h: &[u8]) -> Result<()> {
        if self.session_id.is_none() {
            self.session_id = Some(h.to_vec());
        }
        let sid = self.session_id.clone().expect("set above");
        let k = self.kex.as_mut().expect("in kex");
        let neg = k.negotiated.as_ref().expect("negotiated");
        let kex_alg = neg.kex.clone();
        let derive =
            |letter: u8, len: usize| kex::derive_key(&kex_alg, k_enc, h, letter, &sid, len);
        let keys = |cipher: &str, mac: &str, iv: u8, enc: u8, integ: u8| -> Result<DirectionKeys> {
            let (kl, il, ml) = cipher::key_material_sizes(cipher, mac)
                .ok_or_else(|| Error::Protocol(format!("unsupported cipher {cipher}/{mac}")))?;
            Ok(DirectionKeys {
                cipher: cipher.to_string(),
                mac: mac.to_string(),
                key: derive(enc, kl),
                iv: derive(iv, il),
                mac_key: derive(integ, ml),
            })
        };
        let c2s = keys(&neg.cipher_c2s, &neg.mac_c2s, b'A', b'C', b'E')?;
        let s2c = keys(&neg.cipher_s2c, &neg.mac_s2c, b'B', b'D', b'F')?;
        let (tx_keys, rx_keys, tx_comp, rx_comp) = match self.config.role {
            Role::Client => (c2s, s2c, neg.comp_c2s.clone(), neg.comp_s2c.clone()),
            Role::Server => (s2c, c2s, neg.comp_s2c.clone(), neg.comp_c2s.clone()),
        };
        let sealer = cipher::sealer(&tx_keys)?;
        let opener = cipher::opener(&rx_keys)?;
        k.pending_open = Some((opener, rx_comp == "zlib@openssh.com"));
        k.phase = KexPhase::SentNewKeys;
        self.send(&[msg::NEWKEYS])?;
        self.tx.cipher = sealer;
        self.tx.bytes_since_kex = 0;
        if self.strict {
            self.tx.seq = 0;
        }
        let zlib = tx_comp == "zlib@openssh.com";
        self.tx.zlib = zlib;
        self.tx.zlib_delayed = zlib;
        if zlib && self.authenticated && self.compressor.is_none() {
            self.compressor = Some(Compressor::new());
        }
        if !zlib {
            self.compressor = None;
        }
        Ok(())
    }

    fn on_newkeys(&mut self, now: Instant) -> Result<Option<TransportEvent>> {
        let k = self
            .kex
            .take()
            .ok_or_else(|| Error::Protocol("NEWKEYS outside kex".into()))?;
        if k.phase != KexPhase::SentNewKeys {
            return Err(Error::Protocol(
                "NEWKEYS before the exchange finished".into(),
            ));
        }
        let (opener, zlib) = k.pending_open.expect("set with SentNewKeys");
        self.rx.cipher = opener;
        self.rx.bytes_since_kex = 0;
        if self.strict {
            self.rx.seq = 0;
        }
        self.rx.zlib = zlib;
        self.rx.zlib_delayed = zlib;
        if zlib && self.authenticated && self.decompressor.is_none() {
            self.decompressor = Some(Decompressor::new());
        }
        if !zlib {
            self.decompressor = None;
        }
        self.last_kex = now;
        let first = !self.first_kex_done;
        self.first_kex_done = true;
        if first && self.config.role == Role::Server && self.peer_ext_info {
            self.send_server_ext_info()?;
        }
        Ok(Some(TransportEvent::KexDone))
    }

    /// RFC 8308: tell the client which signature algorithms we verify, so RSA keys sign with SHA-2.
    fn send_server_ext_info(&mut self) -> Result<()> {
        let mut p = vec![msg::EXT_INFO];
        p.put_u32(1);
        p.put_string(b"server-sig-algs");
        let algs = hostkey::HOST_KEY_ALGORITHMS.join(",");
        p.put_string(algs.as_bytes());
        self.send(&p)
    }

    /// Queues SSH_MSG_DISCONNECT; nothing is read or sent after it.
    pub fn disconnect(&mut self, reason: u32, description: &str) {
        if self.closed {
            return;
        }
        let mut p = vec![msg::DISCONNECT];
        p.put_u32(reason);
        p.put_string(description.as_bytes());
        p.put_string(b"");
        let _ = self.send(&p);
        self.closed = true;
    }
}

/// Cookies and padding need unpredictable bytes; the OS generator via ring is enough here.
pub(crate) fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    // SystemRandom only fails if the OS cannot give randomness at all; there is no safe way on.
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random generator failed");
}
