//! aes{128,192,256}-ctr (RFC 4344) with HMAC-SHA2 (RFC 6668), in both MAC layouts:
//!
//! - encrypt-then-MAC (`-etm@openssh.com`): the length travels in clear, the MAC covers
//!   `seq || length || ciphertext` and is checked before anything is decrypted;
//! - classic (RFC 4253 §6.4): the whole packet including its length is encrypted and the MAC
//!   covers `seq || plaintext packet`, so the first block must be decrypted to learn the
//!   length.
//!
//! The CTR keystream runs on across packets of a direction (RFC 4344 §4); every encrypted
//! region is a whole number of blocks, so each packet starts on a block boundary.

use super::{
    DirectionKeys, Opener, Padding, Sealer, check_packet_len, check_whole, frame, frame_overhead,
    key_error, payload_range, read_len,
};
use crate::error::{Error, Result};
use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit, Mac as _};
use sha2::{Sha256, Sha512};

pub(super) const IV_LEN: usize = 16;
const BLOCK: usize = 16;

/// Key length of a CTR cipher name; `None` for names that are not ours.
pub(super) fn key_len(cipher: &str) -> Option<usize> {
    match cipher {
        "aes128-ctr" => Some(16),
        "aes192-ctr" => Some(24),
        "aes256-ctr" => Some(32),
        _ => None,
    }
}

/// The keystream of one direction.
enum Ctr {
    Aes128(ctr::Ctr128BE<aes::Aes128>),
    Aes192(ctr::Ctr128BE<aes::Aes192>),
    Aes256(ctr::Ctr128BE<aes::Aes256>),
}

impl Ctr {
    fn new(keys: &DirectionKeys) -> Result<Self> {
        let name = keys.cipher.as_str();
        let (k, iv) = (keys.key.as_slice(), keys.iv.as_slice());
        if key_len(name) != Some(k.len()) || iv.len() != IV_LEN {
            return Err(match key_len(name) {
                None => Error::Key(format!("unknown cipher {name}")),
                Some(_) => key_error(name),
            });
        }
        let bad = |_| key_error(name);
        Ok(match name {
            "aes128-ctr" => Ctr::Aes128(ctr::Ctr128BE::new_from_slices(k, iv).map_err(bad)?),
            "aes192-ctr" => Ctr::Aes192(ctr::Ctr128BE::new_from_slices(k, iv).map_err(bad)?),
            _ => Ctr::Aes256(ctr::Ctr128BE::new_from_slices(k, iv).map_err(bad)?),
        })
    }

    fn apply(&mut self, buf: &mut [u8]) {
        match self {
            Ctr::Aes128(c) => c.apply_keystream(buf),
            Ctr::Aes192(c) => c.apply_keystream(buf),
            Ctr::Aes256(c) => c.apply_keystream(buf),
        }
    }
}

/// A negotiated MAC name, split into its hash and layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MacAlg {
    sha512: bool,
    etm: bool,
}

impl MacAlg {
    pub(super) fn from_name(name: &str) -> Option<Self> {
        let (sha512, etm) = match name {
            "hmac-sha2-256" => (false, false),
            "hmac-sha2-512" => (true, false),
            "hmac-sha2-256-etm@openssh.com" => (false, true),
            "hmac-sha2-512-etm@openssh.com" => (true, true),
            _ => return None,
        };
        Some(MacAlg { sha512, etm })
    }

    /// RFC 6668: the key is as long as the hash output, and so is the (untruncated) tag.
    pub(super) fn key_len(self) -> usize {
        if self.sha512 { 64 } else { 32 }
    }
}

/// A keyed HMAC. The keyed state (inner and outer pads already absorbed) is cloned per
/// packet, which is a copy on the stack rather than two extra compression-function calls.
enum MacKey {
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl MacKey {
    fn new(alg: MacAlg, key: &[u8]) -> Result<Self> {
        if key.len() != alg.key_len() {
            return Err(key_error("hmac-sha2"));
        }
        let bad = |_| key_error("hmac-sha2");
        Ok(if alg.sha512 {
            MacKey::Sha512(Hmac::new_from_slice(key).map_err(bad)?)
        } else {
            MacKey::Sha256(Hmac::new_from_slice(key).map_err(bad)?)
        })
    }

    fn tag_len(&self) -> usize {
        match self {
            MacKey::Sha256(_) => 32,
            MacKey::Sha512(_) => 64,
        }
    }

    /// Appends the MAC of `seq || data` to `out`.
    fn sign(&self, seq: u32, data_at: usize, out: &mut Vec<u8>) {
        match self {
            MacKey::Sha256(m) => {
                let tag = keyed(m, seq, &out[data_at..]).finalize().into_bytes();
                out.extend_from_slice(&tag);
            }
            MacKey::Sha512(m) => {
                let tag = keyed(m, seq, &out[data_at..]).finalize().into_bytes();
                out.extend_from_slice(&tag);
            }
        }
    }

    /// Checks `tag` against the MAC of `seq || data` in constant time.
    fn verify(&self, seq: u32, data: &[u8], tag: &[u8]) -> Result<()> {
        let ok = match self {
            MacKey::Sha256(m) => keyed(m, seq, data).verify_slice(tag).is_ok(),
            MacKey::Sha512(m) => keyed(m, seq, data).verify_slice(tag).is_ok(),
        };
        if ok { Ok(()) } else { Err(Error::Mac) }
    }
}

fn keyed<M: hmac::Mac + Clone>(m: &M, seq: u32, data: &[u8]) -> M {
    let mut m = m.clone();
    m.update(&seq.to_be_bytes());
    m.update(data);
    m
}

fn parts(keys: &DirectionKeys) -> Result<(Ctr, MacKey, bool)> {
    let ctr = Ctr::new(keys)?;
    let alg = MacAlg::from_name(&keys.mac)
        .ok_or_else(|| Error::Key(format!("unknown mac {}", keys.mac)))?;
    Ok((ctr, MacKey::new(alg, &keys.mac_key)?, alg.etm))
}

pub(super) struct CtrSealer {
    ctr: Ctr,
    mac: MacKey,
    etm: bool,
    padding: Padding,
}

impl CtrSealer {
    pub(super) fn new(keys: &DirectionKeys, padding: Padding) -> Result<Self> {
        let (ctr, mac, etm) = parts(keys)?;
        Ok(CtrSealer {
            ctr,
            mac,
            etm,
            padding,
        })
    }
}

impl Sealer for CtrSealer {
    fn seal_in_place(&mut self, seq: u32, out: &mut Vec<u8>, start: usize) {
        frame(out, start, BLOCK, self.etm, &mut self.padding);
        if self.etm {
            self.ctr.apply(&mut out[start + 4..]);
            self.mac.sign(seq, start, out);
        } else {
            // The MAC covers the plaintext: sign first, then encrypt only the packet.
            let end = out.len();
            self.mac.sign(seq, start, out);
            self.ctr.apply(&mut out[start..end]);
        }
    }

    fn max_overhead(&self) -> usize {
        frame_overhead(BLOCK) + self.mac.tag_len()
    }
}

pub(super) struct CtrOpener {
    ctr: Ctr,
    mac: MacKey,
    etm: bool,
    /// Classic layout: the packet whose first block `packet_len` already decrypted in the
    /// caller's buffer, and its length, so neither a repeated `packet_len` nor the `open`
    /// runs the keystream over those bytes a second time.
    decrypted_header: Option<(u32, usize)>,
}

impl CtrOpener {
    pub(super) fn new(keys: &DirectionKeys) -> Result<Self> {
        let (ctr, mac, etm) = parts(keys)?;
        Ok(CtrOpener {
            ctr,
            mac,
            etm,
            decrypted_header: None,
        })
    }

    /// Classic layout: decrypts the first block in place (once per packet) and validates
    /// the length it holds. The length is unauthenticated until `open`, but refusing a
    /// hostile one here is what keeps the caller from buffering it.
    fn classic_len(&mut self, seq: u32, header: &mut [u8]) -> Result<usize> {
        if let Some((s, len)) = self.decrypted_header
            && s == seq
        {
            return Ok(len);
        }
        let first = header
            .get_mut(..BLOCK)
            .ok_or(Error::Malformed("packet header"))?;
        self.ctr.apply(first);
        let len = check_packet_len(read_len(first)?, BLOCK, false)?;
        self.decrypted_header = Some((seq, len));
        Ok(len)
    }
}

impl Opener for CtrOpener {
    fn header_len(&self) -> usize {
        if self.etm { 4 } else { BLOCK }
    }

    fn packet_len(&mut self, seq: u32, header: &mut [u8]) -> Result<usize> {
        if self.etm {
            check_packet_len(read_len(header)?, BLOCK, true)
        } else {
            self.classic_len(seq, header)
        }
    }

    fn tag_len(&self) -> usize {
        self.mac.tag_len()
    }

    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<std::ops::Range<usize>> {
        let tag_len = self.mac.tag_len();
        if self.etm {
            let len = check_packet_len(read_len(packet)?, BLOCK, true)?;
            check_whole(packet, len, tag_len)?;
            let (body, tag) = packet.split_at_mut(4 + len);
            self.mac.verify(seq, body, tag)?;
            self.ctr.apply(&mut body[4..]);
            return payload_range(packet, len);
        }
        let len = self.classic_len(seq, packet)?;
        self.decrypted_header = None;
        check_whole(packet, len, tag_len)?;
        let (body, tag) = packet.split_at_mut(4 + len);
        self.ctr.apply(&mut body[BLOCK..]);
        self.mac.verify(seq, body, tag)?;
        payload_range(packet, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn keys(cipher: &str, key: &str, iv: &str) -> DirectionKeys {
        DirectionKeys {
            cipher: cipher.into(),
            mac: "hmac-sha2-256".into(),
            key: unhex(key),
            iv: unhex(iv),
            mac_key: vec![0; 32],
        }
    }

    /// NIST SP 800-38A F.5.1, F.5.3, F.5.5 (CTR-AES{128,192,256}.Encrypt), applied in two
    /// pieces the way a packet's first block and its rest are.
    #[test]
    fn ctr_matches_sp800_38a() {
        let plain = unhex(
            "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
             30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710",
        );
        let iv = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
        for (name, key, expect) in [
            (
                "aes128-ctr",
                "2b7e151628aed2a6abf7158809cf4f3c",
                "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff
                 5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee",
            ),
            (
                "aes192-ctr",
                "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
                "1abc932417521ca24f2b0459fe7e6e0b 090339ec0aa6faefd5ccc2c6f4ce8e94
                 1e36b26bd1ebc670d1bd1d665620abf7 4f78a7f6d29809585a97daec58c6b050",
            ),
            (
                "aes256-ctr",
                "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
                "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5
                 2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6",
            ),
        ] {
            let mut ctr = Ctr::new(&keys(name, key, iv)).unwrap();
            let mut buf = plain.clone();
            let (first, rest) = buf.split_at_mut(BLOCK);
            ctr.apply(first);
            ctr.apply(rest);
            assert_eq!(buf, unhex(expect), "{name}");
        }
    }

    /// RFC 4231 test case 2 ("Jefe"), with the first four data bytes standing in for the
    /// sequence number: checks that the MAC input is `seq (big endian) || data`.
    #[test]
    fn mac_matches_rfc4231_with_seq_prefix() {
        let seq = u32::from_be_bytes(*b"what");
        let data = b" do ya want for nothing?";
        let m256 = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        assert_eq!(
            keyed(&m256, seq, data).finalize().into_bytes()[..],
            unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")[..]
        );
        let m512 = Hmac::<Sha512>::new_from_slice(b"Jefe").unwrap();
        assert_eq!(
            keyed(&m512, seq, data).finalize().into_bytes()[..],
            unhex(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554
                 9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
            )[..]
        );
    }

    #[test]
    fn mac_verification_rejects_any_changed_or_short_tag() {
        let key = MacKey::new(MacAlg::from_name("hmac-sha2-256").unwrap(), &[7; 32]).unwrap();
        let mut out = b"data".to_vec();
        key.sign(3, 0, &mut out);
        let (data, tag) = out.split_at(4);
        assert!(key.verify(3, data, tag).is_ok());
        assert!(key.verify(4, data, tag).is_err());
        assert!(key.verify(3, data, &tag[..31]).is_err());
        let mut bad = tag.to_vec();
        bad[31] ^= 1;
        assert!(key.verify(3, data, &bad).is_err());
    }
}
