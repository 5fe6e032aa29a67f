//! Payload compression "zlib" (RFC 4253 §6.2) and "zlib@openssh.com" (the same stream,
//! switched on only after user authentication; when to switch is the transport's business).
//!
//! Each direction is one long-lived zlib stream: every packet's payload is compressed and
//! ended with a sync flush, so the peer can decompress it completely on arrival while the
//! dictionary carries across packets.
//!
//! Decompression is bounded per packet: a few hundred bytes of zlib can expand to
//! gigabytes, and the peer chooses them.

use crate::error::{Error, Result};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Most bytes one packet may decompress to; the largest payload a packet can carry.
pub const MAX_DECOMPRESSED: usize = 256 * 1024;

/// Our direction's zlib stream.
pub struct Compressor {
    z: Compress,
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Compressor {
    pub fn new() -> Self {
        // Level 6 (zlib's default), as OpenSSH uses.
        Compressor {
            z: Compress::new(Compression::default(), true),
        }
    }

    /// Appends the compressed form of `payload` to `out`, ending on a sync flush.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let before_in = self.z.total_in();
        // deflate's worst case is a few bytes per 16 KiB block plus the flush marker.
        out.reserve(payload.len() + payload.len() / 1024 + 64);
        loop {
            let consumed = (self.z.total_in() - before_in) as usize;
            let input = payload.get(consumed..).unwrap_or_default();
            self.z
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            let done = self.z.total_in() - before_in == payload.len() as u64;
            // A flush is complete when deflate stopped with output room to spare.
            if done && out.len() < out.capacity() {
                return Ok(());
            }
            out.reserve(out.capacity().max(256));
        }
    }
}

/// The peer's zlib stream.
pub struct Decompressor {
    z: Decompress,
}

impl Default for Decompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Decompressor {
    pub fn new() -> Self {
        Decompressor {
            z: Decompress::new(true),
        }
    }

    /// Appends the decompressed payload of one packet to `out`; refuses more than
    /// [`MAX_DECOMPRESSED`] bytes, growing `out` at most about that much.
    pub fn decompress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let before_in = self.z.total_in();
        let bomb = || {
            Error::Compression(format!(
                "packet decompresses beyond {MAX_DECOMPRESSED} bytes"
            ))
        };
        // Compression of SSH traffic rarely beats 8:1; grow from there if needed.
        out.reserve(
            data.len()
                .saturating_mul(8)
                .clamp(256, MAX_DECOMPRESSED + 1),
        );
        loop {
            let consumed = (self.z.total_in() - before_in) as usize;
            let input = data.get(consumed..).unwrap_or_default();
            let out_before = out.len();
            let status = self
                .z
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            if out.len() - start > MAX_DECOMPRESSED {
                out.truncate(start);
                return Err(bomb());
            }
            let consumed_now = (self.z.total_in() - before_in) as usize;
            let all_in = consumed_now == data.len();
            if all_in && out.len() < out.capacity() {
                return Ok(());
            }
            let progressed = consumed_now != consumed || out.len() != out_before;
            if status == Status::StreamEnd || (!progressed && out.len() < out.capacity()) {
                // The peer ended its stream, or zlib wants input this packet does not hold.
                out.truncate(start);
                return Err(Error::Compression(
                    "compressed payload does not end on a flush".into(),
                ));
            }
            let room = out.capacity() - out.len();
            if room == 0 {
                // Room up to one byte past the limit, so overrunning it is observable.
                let want = (out.len() - start)
                    .max(256)
                    .min(MAX_DECOMPRESSED + 1 - (out.len() - start));
                out.reserve(want);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_through_one_stream() {
        let mut c = Compressor::new();
        let mut d = Decompressor::new();
        let mut wire_total = 0;
        for i in 0..50usize {
            let payload: Vec<u8> = (0..i * 997 % 40_000)
                .map(|j| {
                    if i % 3 == 0 {
                        (j * 31 + i) as u8
                    } else {
                        b"warren "[j % 7]
                    }
                })
                .collect();
            let mut wire = Vec::new();
            c.compress(&payload, &mut wire).unwrap();
            wire_total += wire.len();
            let mut back = vec![0xaa; 3];
            d.decompress(&wire, &mut back).unwrap();
            assert_eq!(&back[..3], &[0xaa; 3], "existing output kept");
            assert_eq!(&back[3..], &payload[..], "packet {i}");
        }
        assert!(wire_total > 0);
    }

    #[test]
    fn the_dictionary_carries_across_packets() {
        let mut c = Compressor::new();
        let msg = b"the same channel data, over and over again, in every packet";
        let mut first = Vec::new();
        c.compress(msg, &mut first).unwrap();
        let mut second = Vec::new();
        c.compress(msg, &mut second).unwrap();
        assert!(
            second.len() < first.len() / 2,
            "{} vs {}",
            second.len(),
            first.len()
        );
        // Each packet ends on a sync flush marker.
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
        assert!(second.ends_with(&[0, 0, 0xff, 0xff]));
    }

    #[test]
    fn a_zlib_bomb_is_an_error_not_an_allocation() {
        let mut c = Compressor::new();
        let zeros = vec![0u8; MAX_DECOMPRESSED + 1];
        let mut wire = Vec::new();
        c.compress(&zeros, &mut wire).unwrap();
        assert!(wire.len() < 2048);
        let mut out = Vec::new();
        assert!(matches!(
            Decompressor::new().decompress(&wire, &mut out),
            Err(Error::Compression(_))
        ));
        assert!(out.is_empty());
        assert!(out.capacity() <= 3 * MAX_DECOMPRESSED, "{}", out.capacity());

        // Exactly the limit is still a valid packet.
        let mut c = Compressor::new();
        let mut wire = Vec::new();
        c.compress(&zeros[..MAX_DECOMPRESSED], &mut wire).unwrap();
        let mut out = Vec::new();
        Decompressor::new().decompress(&wire, &mut out).unwrap();
        assert_eq!(out.len(), MAX_DECOMPRESSED);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut out = Vec::new();
        assert!(
            Decompressor::new()
                .decompress(b"\x00\x01garbage", &mut out)
                .is_err()
        );
        let mut c = Compressor::new();
        let mut wire = Vec::new();
        c.compress(&[7u8; 5000], &mut wire).unwrap();
        let mut out = Vec::new();
        // Cut in the middle: whatever comes out is not the whole payload.
        let r = Decompressor::new().decompress(&wire[..wire.len() / 2], &mut out);
        assert!(r.is_err() || out.len() < 5000);
    }
}
