//! Binary packet protection (RFC 4253 §6): framing, padding, encryption and integrity of
//! every packet after the version exchange.
//!
//! A direction is protected by one [`Sealer`] (ours) or [`Opener`] (the peer's), built from
//! the names negotiated in KEXINIT and the key material derived after the exchange. Before
//! the first NEWKEYS both directions use [`plain_sealer`] / [`plain_opener`] ("none").
//!
//! Everything works in place in the caller's buffers: the data path of every tunnel goes
//! through here, so sealing and opening allocate nothing per packet and keep their key
//! schedules (AES round keys, HMAC inner/outer states) in the struct.
//!
//! Reading a packet is two steps because the peer controls the length: the caller buffers
//! [`Opener::header_len`] bytes, asks [`Opener::packet_len`] (which refuses hostile lengths
//! before anything is buffered for them), then buffers the rest and calls [`Opener::open`].

mod aes_ctr;
mod chacha;
mod gcm;
mod plain;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use rand::Rng;
use rand::rngs::StdRng;

/// Algorithm names we offer, in preference order (first = preferred).
pub const CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

/// MAC names we offer, in preference order. Encrypt-then-MAC first: it authenticates the
/// ciphertext, so nothing is decrypted (not even the length) before the MAC is checked.
pub const MACS: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
];

/// Largest `packet_length` we accept. OpenSSH sends at most 256 KiB; the slack covers
/// padding and implementations that count slightly differently.
pub const MAX_PACKET_LEN: usize = 256 * 1024 + 64;

/// Smallest `packet_length`: the padding length byte plus the four mandatory padding bytes.
const MIN_PACKET_LEN: usize = 5;

/// Smallest padding RFC 4253 §6 allows.
const MIN_PADDING: usize = 4;

/// True when the cipher carries its own integrity (MAC negotiation result is then ignored, RFC 5647 / OpenSSH).
pub fn is_aead(cipher: &str) -> bool {
    matches!(
        cipher,
        "chacha20-poly1305@openssh.com" | "aes256-gcm@openssh.com" | "aes128-gcm@openssh.com"
    )
}

/// (key length, iv length, mac key length) to derive for this pair; mac may be ignored for AEADs.
///
/// `None` when either name is unknown (for an AEAD only the cipher name matters), so the
/// key exchange can refuse a negotiation result it could not serve.
pub fn key_material_sizes(cipher: &str, mac: &str) -> Option<(usize, usize, usize)> {
    match cipher {
        "chacha20-poly1305@openssh.com" => Some((chacha::KEY_LEN, 0, 0)),
        "aes128-gcm@openssh.com" => Some((16, gcm::IV_LEN, 0)),
        "aes256-gcm@openssh.com" => Some((32, gcm::IV_LEN, 0)),
        _ => {
            let key_len = aes_ctr::key_len(cipher)?;
            let mac = aes_ctr::MacAlg::from_name(mac)?;
            Some((key_len, aes_ctr::IV_LEN, mac.key_len()))
        }
    }
}

/// Key material of one direction, as derived by the key exchange (RFC 4253 §7.2).
#[derive(Clone)]
pub struct DirectionKeys {
    pub cipher: String,
    pub mac: String,
    pub key: Vec<u8>,
    pub iv: Vec<u8>,
    pub mac_key: Vec<u8>,
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key.zeroize();
        self.iv.zeroize();
        self.mac_key.zeroize();
    }
}

impl std::fmt::Debug for DirectionKeys {
    /// Names only: key bytes must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectionKeys")
            .field("cipher", &self.cipher)
            .field("mac", &self.mac)
            .finish_non_exhaustive()
    }
}

/// Protects outgoing packets of one direction.
pub trait Sealer: Send {
    /// Appends one complete, protected packet carrying `payload` to `out` (length, padding length, payload,
    /// random padding per RFC 4253 §6 — at least 4 bytes, total a multiple of the block size, which for AEAD/ETM
    /// modes excludes the 4 length bytes — then the tag). Encrypts in place inside `out` (no second buffer).
    fn seal(&mut self, seq: u32, payload: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(payload.len() + self.max_overhead());
        out.extend_from_slice(&[0; 5]);
        out.extend_from_slice(payload);
        self.seal_in_place(seq, out, start);
    }
    /// Same, for a payload the caller has already written at out[start + 5 ..] (it reserved 5 bytes at `start`
    /// for length + padding length): lets CHANNEL_DATA be copied once, straight from the application's buffer.
    ///
    /// The caller must keep `start + 5 <= out.len()` and the payload below [`MAX_PACKET_LEN`]
    /// minus the overhead; this is our own output, never peer input.
    fn seal_in_place(&mut self, seq: u32, out: &mut Vec<u8>, start: usize);
    /// Upper bound of the bytes a packet adds around its payload on the wire (length, padding
    /// length, padding, tag): a packet with `n` payload bytes takes at most `n + max_overhead()`.
    fn max_overhead(&self) -> usize;
}

/// Checks and unprotects incoming packets of one direction.
pub trait Opener: Send {
    /// How many leading bytes of a packet must be buffered before `packet_len` can be called
    /// (4 for AEAD/ETM/none, the cipher block size for plain-MAC CTR).
    fn header_len(&self) -> usize;
    /// The packet_length field (bytes after the length field, excluding the MAC/tag), decrypting what it must.
    /// May decrypt `header` in place (plain-MAC CTR), consistently with a later `open` of the same packet.
    /// Must reject lengths < 5 or > 256 KiB + 64 (crate::Error::Malformed/Protocol) before the caller buffers them.
    ///
    /// Also rejects lengths that are not a multiple of the block size, as OpenSSH does.
    /// Calling it again for the same `seq` returns the same length without decrypting twice.
    fn packet_len(&mut self, seq: u32, header: &mut [u8]) -> Result<usize>;
    /// Bytes of tag/MAC after the packet.
    fn tag_len(&self) -> usize;
    /// `packet` is the whole packet: 4 length bytes + packet_len bytes + tag_len bytes. Verifies and decrypts in
    /// place; returns the payload's range within `packet` (after padding length byte, before padding).
    /// Rejects padding length < 4 or > packet, and MAC failures (Error::Mac), in constant time for the MAC.
    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<std::ops::Range<usize>>;
}

/// Builds the sealer for negotiated names; errors on unknown names or key lengths that do
/// not fit them (a key-derivation bug must not silently weaken a direction).
pub fn sealer(keys: &DirectionKeys) -> Result<Box<dyn Sealer>> {
    sealer_with(keys, Padding::new())
}

fn sealer_with(keys: &DirectionKeys, padding: Padding) -> Result<Box<dyn Sealer>> {
    match keys.cipher.as_str() {
        "chacha20-poly1305@openssh.com" => {
            Ok(Box::new(chacha::ChaChaSealer::new(&keys.key, padding)?))
        }
        "aes128-gcm@openssh.com" | "aes256-gcm@openssh.com" => Ok(Box::new(gcm::GcmSealer::new(
            &keys.cipher,
            &keys.key,
            &keys.iv,
            padding,
        )?)),
        _ => Ok(Box::new(aes_ctr::CtrSealer::new(keys, padding)?)),
    }
}

/// Builds the opener for negotiated names; same checks as [`sealer`].
pub fn opener(keys: &DirectionKeys) -> Result<Box<dyn Opener>> {
    match keys.cipher.as_str() {
        "chacha20-poly1305@openssh.com" => Ok(Box::new(chacha::ChaChaOpener::new(&keys.key)?)),
        "aes128-gcm@openssh.com" | "aes256-gcm@openssh.com" => Ok(Box::new(gcm::GcmOpener::new(
            &keys.cipher,
            &keys.key,
            &keys.iv,
        )?)),
        _ => Ok(Box::new(aes_ctr::CtrOpener::new(keys)?)),
    }
}

/// The "none" sealer of the unprotected start of a connection.
pub fn plain_sealer() -> Box<dyn Sealer> {
    Box::new(plain::PlainSealer::new(Padding::new()))
}

/// The "none" opener of the unprotected start of a connection.
pub fn plain_opener() -> Box<dyn Opener> {
    Box::new(plain::PlainOpener)
}

fn key_error(what: &str) -> Error {
    Error::Key(format!("{what}: wrong key material length"))
}

/// Random padding source. A seeded CSPRNG per direction rather than the thread RNG: the
/// sealer must be `Send`, and drawing a few bytes from a local buffer is cheaper than a
/// thread-local lookup per packet.
#[cfg_attr(test, allow(clippy::large_enum_variant))]
enum Padding {
    Random(StdRng),
    /// All-zero padding, so tests can compare whole packets with known answers.
    #[cfg(test)]
    Zero,
}

impl Padding {
    fn new() -> Self {
        Padding::Random(rand::make_rng())
    }

    fn fill(&mut self, buf: &mut [u8]) {
        match self {
            Padding::Random(rng) => rng.fill_bytes(buf),
            #[cfg(test)]
            Padding::Zero => buf.fill(0),
        }
    }
}

/// Writes packet_length and padding_length at `out[start..start + 5]` and appends the
/// random padding, for the payload already at `out[start + 5..]`.
///
/// `length_excluded` is true for the AEAD and ETM modes, where the length field is not part
/// of the encrypted blocks and so does not count towards the block-size multiple.
/// Returns the packet_length written.
fn frame(
    out: &mut Vec<u8>,
    start: usize,
    block: usize,
    length_excluded: bool,
    padding: &mut Padding,
) -> usize {
    debug_assert!(
        out.len() >= start + 5,
        "seal_in_place without room for the header"
    );
    let payload_len = out.len() - start - 5;
    let counted = if length_excluded { 1 } else { 5 } + payload_len;
    let mut pad = block - counted % block;
    if pad < MIN_PADDING {
        pad += block;
    }
    let packet_len = 1 + payload_len + pad;
    debug_assert!(packet_len <= MAX_PACKET_LEN, "payload larger than a packet");
    out[start..start + 4].copy_from_slice(&(packet_len as u32).to_be_bytes());
    out[start + 4] = pad as u8;
    let pad_start = out.len();
    out.resize(pad_start + pad, 0);
    padding.fill(&mut out[pad_start..]);
    packet_len
}

/// Most bytes [`frame`] adds: length, padding length, and at most `block + 3` padding bytes.
const fn frame_overhead(block: usize) -> usize {
    5 + block + MIN_PADDING - 1
}

/// Validates a received packet_length before the caller buffers that many bytes.
///
/// `length_excluded` as in [`frame`]: whether the 4 length bytes count towards the block
/// multiple.
fn check_packet_len(len: usize, block: usize, length_excluded: bool) -> Result<usize> {
    if !(MIN_PACKET_LEN..=MAX_PACKET_LEN).contains(&len) {
        return Err(Error::Malformed("packet length"));
    }
    let counted = if length_excluded { len } else { len + 4 };
    if counted % block != 0 {
        return Err(Error::Malformed(
            "packet length not a multiple of the block size",
        ));
    }
    Ok(len)
}

/// Reads the first four bytes of `buf` as a big-endian length; `Malformed` when short.
fn read_len(buf: &[u8]) -> Result<usize> {
    match buf {
        [a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d]) as usize),
        _ => Err(Error::Malformed("packet header")),
    }
}

/// Checks that `packet` is exactly length field + `packet_len` + `tag_len` bytes.
fn check_whole(packet: &[u8], packet_len: usize, tag_len: usize) -> Result<()> {
    if packet.len() != 4 + packet_len + tag_len {
        return Err(Error::Malformed(
            "packet size does not match its length field",
        ));
    }
    Ok(())
}

/// The payload range of a decrypted, authenticated packet of `packet_len` bytes: after the
/// padding length byte, before the padding. Refuses padding shorter than RFC 4253 allows
/// or longer than the packet.
fn payload_range(packet: &[u8], packet_len: usize) -> Result<std::ops::Range<usize>> {
    let pad = *packet.get(4).ok_or(Error::Malformed("packet header"))? as usize;
    if pad < MIN_PADDING || pad + 1 > packet_len {
        return Err(Error::Malformed("padding length"));
    }
    Ok(5..4 + packet_len - pad)
}
