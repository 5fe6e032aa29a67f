//! chacha20-poly1305@openssh.com (OpenSSH PROTOCOL.chacha20poly1305), through ring's
//! implementation of exactly that construction: K_2 (first 32 bytes) encrypts the packet
//! and keys Poly1305, K_1 (last 32 bytes) encrypts the length, the nonce is the sequence
//! number, and the tag covers the encrypted length and ciphertext.

use super::{
    Opener, Padding, Sealer, check_packet_len, check_whole, frame, frame_overhead, key_error,
    payload_range, read_len,
};
use crate::error::{Error, Result};
use ring::aead::chacha20_poly1305_openssh::{OpeningKey, SealingKey, TAG_LEN};

pub(super) const KEY_LEN: usize = ring::aead::chacha20_poly1305_openssh::KEY_LEN;

/// OpenSSH treats this cipher as having 8-byte blocks for padding.
const BLOCK: usize = 8;

fn key_bytes(key: &[u8]) -> Result<&[u8; KEY_LEN]> {
    key.try_into()
        .map_err(|_| key_error("chacha20-poly1305@openssh.com"))
}

pub(super) struct ChaChaSealer {
    key: SealingKey,
    padding: Padding,
}

impl ChaChaSealer {
    pub(super) fn new(key: &[u8], padding: Padding) -> Result<Self> {
        Ok(ChaChaSealer {
            key: SealingKey::new(key_bytes(key)?),
            padding,
        })
    }
}

impl Sealer for ChaChaSealer {
    fn seal_in_place(&mut self, seq: u32, out: &mut Vec<u8>, start: usize) {
        frame(out, start, BLOCK, true, &mut self.padding);
        let mut tag = [0u8; TAG_LEN];
        self.key.seal_in_place(seq, &mut out[start..], &mut tag);
        out.extend_from_slice(&tag);
    }

    fn max_overhead(&self) -> usize {
        frame_overhead(BLOCK) + TAG_LEN
    }
}

pub(super) struct ChaChaOpener {
    key: OpeningKey,
}

impl ChaChaOpener {
    pub(super) fn new(key: &[u8]) -> Result<Self> {
        Ok(ChaChaOpener {
            key: OpeningKey::new(key_bytes(key)?),
        })
    }

    /// Decrypts the length from a copy: the tag covers the encrypted length, so the packet's
    /// own bytes must stay as received until `open`.
    fn length(&self, seq: u32, buf: &[u8]) -> Result<usize> {
        let enc = match buf {
            [a, b, c, d, ..] => [*a, *b, *c, *d],
            _ => return Err(Error::Malformed("packet header")),
        };
        let len = read_len(&self.key.decrypt_packet_length(seq, enc))?;
        check_packet_len(len, BLOCK, true)
    }
}

impl Opener for ChaChaOpener {
    fn header_len(&self) -> usize {
        4
    }

    fn packet_len(&mut self, seq: u32, header: &mut [u8]) -> Result<usize> {
        self.length(seq, header)
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<std::ops::Range<usize>> {
        let len = self.length(seq, packet)?;
        check_whole(packet, len, TAG_LEN)?;
        let (body, tag) = packet.split_at_mut(4 + len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::Mac)?;
        self.key
            .open_in_place(seq, body, tag)
            .map_err(|_| Error::Mac)?;
        // Leave the length readable like every other mode does.
        body[..4].copy_from_slice(&(len as u32).to_be_bytes());
        payload_range(packet, len)
    }
}
