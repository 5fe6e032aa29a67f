//! "none": the framing without protection, used until the first NEWKEYS.

use super::{
    Opener, Padding, Sealer, check_packet_len, check_whole, frame, payload_range, read_len,
};
use crate::error::Result;

/// RFC 4253 §6: the block size of "none" counts as 8.
const BLOCK: usize = 8;

pub(super) struct PlainSealer {
    padding: Padding,
}

impl PlainSealer {
    pub(super) fn new(padding: Padding) -> Self {
        PlainSealer { padding }
    }
}

impl Sealer for PlainSealer {
    fn seal_in_place(&mut self, _seq: u32, out: &mut Vec<u8>, start: usize) {
        frame(out, start, BLOCK, false, &mut self.padding);
    }

    fn max_overhead(&self) -> usize {
        super::frame_overhead(BLOCK)
    }
}

pub(super) struct PlainOpener;

impl Opener for PlainOpener {
    fn header_len(&self) -> usize {
        4
    }

    fn packet_len(&mut self, _seq: u32, header: &mut [u8]) -> Result<usize> {
        check_packet_len(read_len(header)?, BLOCK, false)
    }

    fn tag_len(&self) -> usize {
        0
    }

    fn open(&mut self, _seq: u32, packet: &mut [u8]) -> Result<std::ops::Range<usize>> {
        let len = check_packet_len(read_len(packet)?, BLOCK, false)?;
        check_whole(packet, len, 0)?;
        payload_range(packet, len)
    }
}
