//! Key exchange as pure functions: KEXINIT encoding, algorithm negotiation (RFC 4253 §7.1),
//! the ephemeral math of curve25519-sha256 (RFC 8731) and mlkem768x25519-sha256, the exchange
//! hash and key derivation (RFC 4253 §7.2). Parsing KEX_ECDH_INIT/REPLY and driving the state
//! machine belong to the transport; nothing here keeps state between messages except
//! [`ClientKex`], which holds the client's ephemeral secrets until the reply arrives.

mod ecdh;

pub use ecdh::{ClientKex, server_kex};

use crate::error::{Error, Result};
use crate::msg;
use crate::wire::{Put, Reader};
use sha2::{Digest, Sha256, Sha512};

/// Our KEX algorithms, best first (OpenSSH 9.9's order). The post-quantum hybrids come
/// first so that a peer which supports one gets that protection: ML-KEM where the peer has
/// it (OpenSSH ≥ 9.9), else Streamlined NTRU Prime (OpenSSH 9.0-9.8 know only the
/// @openssh.com name of the same method). The two curve25519 names are one algorithm too.
pub const KEX_ALGORITHMS: &[&str] = &[
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
];

/// RFC 8308: a client that accepts SSH_MSG_EXT_INFO appends this to its kex list.
pub const EXT_INFO_C: &str = "ext-info-c";
/// RFC 8308: the server-side marker.
pub const EXT_INFO_S: &str = "ext-info-s";
/// OpenSSH strict kex (Terrapin countermeasure, PROTOCOL §1.10), client marker.
pub const KEX_STRICT_C: &str = "kex-strict-c-v00@openssh.com";
/// Server marker of strict kex.
pub const KEX_STRICT_S: &str = "kex-strict-s-v00@openssh.com";

/// Which end of the connection we are; negotiation needs it to know whose markers and whose
/// `first_kex_follows` guess belong to the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// An SSH_MSG_KEXINIT (RFC 4253 §7.1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KexInit {
    pub cookie: [u8; 16],
    pub kex: Vec<String>,
    pub host_key: Vec<String>,
    pub cipher_c2s: Vec<String>,
    pub cipher_s2c: Vec<String>,
    pub mac_c2s: Vec<String>,
    pub mac_s2c: Vec<String>,
    pub comp_c2s: Vec<String>,
    pub comp_s2c: Vec<String>,
    pub first_kex_follows: bool,
}

impl KexInit {
    /// Full payload starting with the message number 20. The exchange hash covers these exact
    /// bytes (I_C / I_S), so the caller must send what this returns and hash the same buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(512);
        v.put_u8(msg::KEXINIT);
        v.extend_from_slice(&self.cookie);
        for list in self.lists() {
            v.put_name_list(list);
        }
        // Languages: we never negotiate any.
        v.put_name_list::<&str>(&[]);
        v.put_name_list::<&str>(&[]);
        v.put_bool(self.first_kex_follows);
        v.put_u32(0);
        v
    }

    /// `payload` includes the message number. The peer's language lists are read and dropped;
    /// bytes after the reserved field are tolerated (as OpenSSH does) since the caller hashes
    /// the payload as received anyway.
    pub fn decode(payload: &[u8]) -> Result<KexInit> {
        const WHAT: &str = "KEXINIT";
        let mut r = Reader::new(payload, WHAT);
        if r.u8()? != msg::KEXINIT {
            return Err(Error::Malformed(WHAT));
        }
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(r.bytes(16)?);
        let mut lists: [Vec<String>; 10] = Default::default();
        for list in lists.iter_mut() {
            *list = r.name_list()?;
            if !list.iter().all(|n| valid_name(n)) {
                return Err(Error::Malformed(WHAT));
            }
        }
        let first_kex_follows = r.bool()?;
        let _reserved = r.u32()?;
        let [
            kex,
            host_key,
            cipher_c2s,
            cipher_s2c,
            mac_c2s,
            mac_s2c,
            comp_c2s,
            comp_s2c,
            _,
            _,
        ] = lists;
        Ok(KexInit {
            cookie,
            kex,
            host_key,
            cipher_c2s,
            cipher_s2c,
            mac_c2s,
            mac_s2c,
            comp_c2s,
            comp_s2c,
            first_kex_follows,
        })
    }

    fn lists(&self) -> [&Vec<String>; 8] {
        [
            &self.kex,
            &self.host_key,
            &self.cipher_c2s,
            &self.cipher_s2c,
            &self.mac_c2s,
            &self.mac_s2c,
            &self.comp_c2s,
            &self.comp_s2c,
        ]
    }
}

/// A fresh random KEXINIT cookie; its only job is to make the exchange hash unpredictable
/// to either side alone.
pub fn random_cookie() -> Result<[u8; 16]> {
    use ring::rand::SecureRandom;
    let mut c = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut c)
        .map_err(|_| Error::Key("system random number generator failed".into()))?;
    Ok(c)
}

/// RFC 4251 §5: names are non-empty printable US-ASCII (the splitter has already removed
/// commas, so an empty element means ",," or a stray comma). The 64-character limit is not
/// enforced: an over-long name cannot match ours and rejecting it would only hurt interop.
fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Names that only signal capabilities and must never be selected as the kex method.
fn is_pseudo(name: &str) -> bool {
    name.starts_with("ext-info-") || name.starts_with("kex-strict-")
}

/// The outcome of negotiation: one algorithm per slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub kex: String,
    pub host_key: String,
    pub cipher_c2s: String,
    pub cipher_s2c: String,
    /// Empty when `cipher_c2s` is an AEAD (its tag replaces the MAC).
    pub mac_c2s: String,
    pub mac_s2c: String,
    pub comp_c2s: String,
    pub comp_s2c: String,
    /// Both sides offered kex-strict (only meaningful on the first kex).
    pub strict: bool,
    /// The peer offered ext-info-c (we are server) / ext-info-s (we are client).
    pub peer_ext_info: bool,
    /// The peer's first_kex_follows guess was wrong and its next kex packet must be ignored
    /// (RFC 4253 §7).
    pub ignore_next_kex_packet: bool,
}

/// RFC 4253 §7.1: for each slot, the first client algorithm the server also supports;
/// pseudo-algorithms (ext-info-*, kex-strict-*) are never chosen. `aead(name)` tells which
/// ciphers make the MAC irrelevant; for those the MAC slot is "" and need not have a match.
/// `role` is ours: it decides whose markers and guess count as the peer's.
pub fn negotiate(
    role: Role,
    client: &KexInit,
    server: &KexInit,
    aead: impl Fn(&str) -> bool,
) -> Result<Negotiated> {
    let pick = |what: &'static str, c: &[String], s: &[String]| -> Result<String> {
        c.iter()
            .find(|n| !is_pseudo(n) && s.contains(n))
            .cloned()
            .ok_or_else(|| {
                let (ours, theirs) = match role {
                    Role::Client => (c, s),
                    Role::Server => (s, c),
                };
                Error::NoCommonAlgorithm {
                    what,
                    ours: ours.join(","),
                    theirs: theirs.join(","),
                }
            })
    };
    let kex = pick("key exchange", &client.kex, &server.kex)?;
    let host_key = pick("host key", &client.host_key, &server.host_key)?;
    let cipher_c2s = pick(
        "cipher client->server",
        &client.cipher_c2s,
        &server.cipher_c2s,
    )?;
    let cipher_s2c = pick(
        "cipher server->client",
        &client.cipher_s2c,
        &server.cipher_s2c,
    )?;
    let mac_c2s = if aead(&cipher_c2s) {
        String::new()
    } else {
        pick("MAC client->server", &client.mac_c2s, &server.mac_c2s)?
    };
    let mac_s2c = if aead(&cipher_s2c) {
        String::new()
    } else {
        pick("MAC server->client", &client.mac_s2c, &server.mac_s2c)?
    };
    let comp_c2s = pick(
        "compression client->server",
        &client.comp_c2s,
        &server.comp_c2s,
    )?;
    let comp_s2c = pick(
        "compression server->client",
        &client.comp_s2c,
        &server.comp_s2c,
    )?;

    let offers = |k: &KexInit, name: &str| k.kex.iter().any(|n| n == name);
    let strict = offers(client, KEX_STRICT_C) && offers(server, KEX_STRICT_S);
    let (peer, peer_ext_info) = match role {
        Role::Client => (server, offers(server, EXT_INFO_S)),
        Role::Server => (client, offers(client, EXT_INFO_C)),
    };
    // OpenSSH's rule: the guess is right only if both sides list the same kex and host key
    // algorithm first; anything else means the guessed packet used the wrong method.
    let guess_right = client.kex.first() == server.kex.first()
        && client.host_key.first() == server.host_key.first();
    let ignore_next_kex_packet = peer.first_kex_follows && !guess_right;

    Ok(Negotiated {
        kex,
        host_key,
        cipher_c2s,
        cipher_s2c,
        mac_c2s,
        mac_s2c,
        comp_c2s,
        comp_s2c,
        strict,
        peer_ext_info,
        ignore_next_kex_packet,
    })
}

/// The hash of a kex method: its name's suffix (RFC 4253 §7.2 names HASH per method).
#[derive(Clone, Copy)]
enum KexHash {
    Sha256,
    Sha512,
}

fn kex_hash(alg: &str) -> KexHash {
    let base = alg.split('@').next().unwrap_or(alg);
    if base.ends_with("-sha512") {
        KexHash::Sha512
    } else {
        KexHash::Sha256
    }
}

fn hash(alg: &str, parts: &[&[u8]]) -> Vec<u8> {
    fn all<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut h = D::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().to_vec()
    }
    match kex_hash(alg) {
        KexHash::Sha256 => all::<Sha256>(parts),
        KexHash::Sha512 => all::<Sha512>(parts),
    }
}

/// H = HASH(V_C || V_S || I_C || I_S || K_S || Q_C || Q_S || K), each but K an SSH string
/// (RFC 8731 §3, RFC 5656 §4). `v_c`/`v_s` are the version lines without CR LF, `i_c`/`i_s`
/// the KEXINIT payloads including the message number, `k_encoded` the shared secret already
/// in its hashed form (see [`ClientKex::finish`]).
#[allow(clippy::too_many_arguments)]
pub fn exchange_hash(
    alg: &str,
    v_c: &[u8],
    v_s: &[u8],
    i_c: &[u8],
    i_s: &[u8],
    k_s: &[u8],
    q_c: &[u8],
    q_s: &[u8],
    k_encoded: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(
        v_c.len() + v_s.len() + i_c.len() + i_s.len() + k_s.len() + q_c.len() + q_s.len() + 64,
    );
    for s in [v_c, v_s, i_c, i_s, k_s, q_c, q_s] {
        buf.put_string(s);
    }
    hash(alg, &[&buf, k_encoded])
}

/// RFC 4253 §7.2: HASH(K || H || letter || session_id), extended with HASH(K || H || K1 || ..)
/// until `len` bytes. `letter` is b'A'..=b'F'; `session_id` is the first exchange's H.
pub fn derive_key(
    alg: &str,
    k_encoded: &[u8],
    h: &[u8],
    letter: u8,
    session_id: &[u8],
    len: usize,
) -> Vec<u8> {
    let mut out = hash(alg, &[k_encoded, h, &[letter], session_id]);
    while out.len() < len {
        let next = hash(alg, &[k_encoded, h, &out]);
        out.extend_from_slice(&next);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests;
