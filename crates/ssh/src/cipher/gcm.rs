//! aes128-gcm@openssh.com and aes256-gcm@openssh.com (RFC 5647 as OpenSSH implements it):
//! the length travels in clear as additional authenticated data, the 12-byte nonce is the
//! derived IV whose last 8 bytes (the invocation counter) grow by one per packet, and the
//! 16-byte tag replaces the MAC.

use super::{
    Opener, Padding, Sealer, check_packet_len, check_whole, frame, frame_overhead, key_error,
    payload_range, read_len,
};
use crate::error::{Error, Result};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};

pub(super) const IV_LEN: usize = NONCE_LEN;
const TAG_LEN: usize = 16;
const BLOCK: usize = 16;

/// The per-direction nonce: a fixed field and a 64-bit invocation counter (RFC 5647 §7.1).
/// The sequence number plays no part, so the counter is state of its own.
struct Iv {
    fixed: [u8; 4],
    counter: u64,
}

impl Iv {
    fn new(iv: &[u8]) -> Result<Self> {
        let (fixed, counter) = match iv {
            [f0, f1, f2, f3, rest @ ..] => {
                let counter: [u8; 8] = rest.try_into().map_err(|_| key_error("aes-gcm iv"))?;
                ([*f0, *f1, *f2, *f3], u64::from_be_bytes(counter))
            }
            _ => return Err(key_error("aes-gcm iv")),
        };
        Ok(Iv { fixed, counter })
    }

    fn current(&self) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[..4].copy_from_slice(&self.fixed);
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// RFC 5647 leaves wrap-around to rekeying (long before 2^64 packets); OpenSSH wraps
    /// the 64-bit field, and so do we, to stay byte-compatible.
    fn advance(&mut self) {
        self.counter = self.counter.wrapping_add(1);
    }
}

fn key(name: &str, key: &[u8]) -> Result<LessSafeKey> {
    let alg = match (name, key.len()) {
        ("aes128-gcm@openssh.com", 16) => &AES_128_GCM,
        ("aes256-gcm@openssh.com", 32) => &AES_256_GCM,
        _ => return Err(key_error(name)),
    };
    let unbound = UnboundKey::new(alg, key).map_err(|_| key_error(name))?;
    Ok(LessSafeKey::new(unbound))
}

pub(super) struct GcmSealer {
    key: LessSafeKey,
    iv: Iv,
    padding: Padding,
}

impl GcmSealer {
    pub(super) fn new(name: &str, k: &[u8], iv: &[u8], padding: Padding) -> Result<Self> {
        Ok(GcmSealer {
            key: key(name, k)?,
            iv: Iv::new(iv)?,
            padding,
        })
    }
}

impl Sealer for GcmSealer {
    fn seal_in_place(&mut self, _seq: u32, out: &mut Vec<u8>, start: usize) {
        let packet_len = frame(out, start, BLOCK, true, &mut self.padding);
        let aad = (packet_len as u32).to_be_bytes();
        // Fails only beyond GCM's 64 GiB message limit, which a framed packet cannot reach.
        let tag = self
            .key
            .seal_in_place_separate_tag(self.iv.current(), Aad::from(aad), &mut out[start + 4..])
            .expect("packet within AES-GCM limits");
        self.iv.advance();
        out.extend_from_slice(tag.as_ref());
    }

    fn max_overhead(&self) -> usize {
        frame_overhead(BLOCK) + TAG_LEN
    }
}

pub(super) struct GcmOpener {
    key: LessSafeKey,
    iv: Iv,
}

impl GcmOpener {
    pub(super) fn new(name: &str, k: &[u8], iv: &[u8]) -> Result<Self> {
        Ok(GcmOpener {
            key: key(name, k)?,
            iv: Iv::new(iv)?,
        })
    }
}

impl Opener for GcmOpener {
    fn header_len(&self) -> usize {
        4
    }

    fn packet_len(&mut self, _seq: u32, header: &mut [u8]) -> Result<usize> {
        check_packet_len(read_len(header)?, BLOCK, true)
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn open(&mut self, _seq: u32, packet: &mut [u8]) -> Result<std::ops::Range<usize>> {
        let len = check_packet_len(read_len(packet)?, BLOCK, true)?;
        check_whole(packet, len, TAG_LEN)?;
        let (head, rest) = packet.split_at_mut(4);
        let (body, tag) = rest.split_at_mut(len);
        let tag = Tag::try_from(&*tag).map_err(|_| Error::Mac)?;
        self.key
            .open_in_place_separate_tag(self.iv.current(), Aad::from(&*head), tag, body, 0..)
            .map_err(|_| Error::Mac)?;
        self.iv.advance();
        payload_range(packet, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_counter_wraps_only_its_eight_bytes() {
        let mut iv =
            Iv::new(&[1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]).unwrap();
        assert_eq!(
            iv.current().as_ref(),
            &[1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
        iv.advance();
        assert_eq!(
            iv.current().as_ref(),
            &[1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        iv.advance();
        assert_eq!(iv.current().as_ref(), &[1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Iv::new(&[0; 11]).is_err());
        assert!(Iv::new(&[0; 13]).is_err());
    }
}
