//! RFC 4251 §5 data types on byte slices. A [`Reader`] never panics on short or hostile
//! input: every read returns `Error::Malformed` naming the field's context.

use crate::error::{Error, Result};

/// Cursor over a received payload.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// `what` names the message being parsed, for the error the peer will see.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> Result<u8> {
        let (&b, rest) = self.buf.split_first().ok_or(Error::Malformed(self.what))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }

    pub fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Malformed(self.what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// An SSH `string` as raw bytes.
    pub fn string(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    /// An SSH `string` that must be UTF-8 (user names, host names, method names).
    pub fn utf8(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.string()?).map_err(|_| Error::Malformed(self.what))
    }

    /// A `name-list` (comma-separated, US-ASCII).
    pub fn name_list(&mut self) -> Result<Vec<String>> {
        let s = self.utf8()?;
        if s.is_empty() {
            return Ok(Vec::new());
        }
        Ok(s.split(',').map(str::to_owned).collect())
    }
}

/// Appends RFC 4251 types to a `Vec<u8>`.
pub trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_bool(&mut self, v: bool);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_string(&mut self, v: &[u8]);
    fn put_name_list<S: AsRef<str>>(&mut self, v: &[S]);
    /// `mpint` from an unsigned big-endian magnitude (leading zeros stripped, a 0x00 added
    /// when the top bit is set), as the shared secret of curve25519-sha256 is hashed.
    fn put_mpint_unsigned(&mut self, v: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_bool(&mut self, v: bool) {
        self.push(v as u8);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_string(&mut self, v: &[u8]) {
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v);
    }
    fn put_name_list<S: AsRef<str>>(&mut self, v: &[S]) {
        let total: usize = v.iter().map(|s| s.as_ref().len() + 1).sum::<usize>();
        self.put_u32(total.saturating_sub(1) as u32);
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.push(b',');
            }
            self.extend_from_slice(s.as_ref().as_bytes());
        }
    }
    fn put_mpint_unsigned(&mut self, v: &[u8]) {
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
        let v = &v[start..];
        let pad = v.first().is_some_and(|&b| b & 0x80 != 0);
        self.put_u32((v.len() + pad as usize) as u32);
        if pad {
            self.push(0);
        }
        self.extend_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0, 0, 0, 9, b'a'], "test");
        assert!(r.string().is_err());
        let mut r = Reader::new(&[0, 0], "test");
        assert!(r.u32().is_err());
    }

    #[test]
    fn mpint_follows_rfc4251_examples() {
        let mut v = Vec::new();
        v.put_mpint_unsigned(&[0x00, 0x80]);
        assert_eq!(v, [0, 0, 0, 2, 0x00, 0x80]);
        let mut v = Vec::new();
        v.put_mpint_unsigned(&[0, 0]);
        assert_eq!(v, [0, 0, 0, 0]);
        let mut v = Vec::new();
        v.put_mpint_unsigned(&[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]);
        assert_eq!(
            v,
            [0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]
        );
    }

    #[test]
    fn name_lists_round_trip() {
        let mut v = Vec::new();
        v.put_name_list(&["a", "bc"]);
        assert_eq!(Reader::new(&v, "t").name_list().unwrap(), ["a", "bc"]);
        let mut v = Vec::new();
        v.put_name_list::<&str>(&[]);
        assert_eq!(v, [0, 0, 0, 0]);
        assert!(Reader::new(&v, "t").name_list().unwrap().is_empty());
    }
}
