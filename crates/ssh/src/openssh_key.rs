//! OpenSSH private key files (`openssh-key-v1`), read through ssh-key with one repair.
//!
//! ssh-key (0.7.0-rc.11 and rc.12) refuses an ECDSA private scalar encoded in fewer than
//! 32 bytes. OpenSSH writes the scalar as a minimal `mpint`, so about one P-256 key in 512
//! that ssh-keygen makes (scalar below 2^247) is 31 bytes or shorter and fails with
//! "length invalid": a valid user key or host key that would not load. When ssh-key gives
//! that error, the key's private section is rewritten with the scalar at its curve's full
//! size (the form ssh-key writes itself) and parsed again, so ssh-key still does every
//! check (check ints, public key matching private key, padding). Any other error, or a key
//! this repair does not change, keeps ssh-key's own error.

use ssh_encoding::pem::PemLabel;
use ssh_encoding::{Decode, DecodePem};
use ssh_key::{Error, PrivateKey};
use zeroize::Zeroizing;

use crate::wire::{Put, Reader};

const MAGIC: &[u8] = b"openssh-key-v1\0";
/// The block size of an unencrypted private section (PROTOCOL.key).
const PLAIN_BLOCK: usize = 8;

/// Parses an OpenSSH private key file; an encrypted key comes back still encrypted (see
/// [`decrypt`]).
pub fn from_openssh(pem: &str) -> Result<PrivateKey, Error> {
    match PrivateKey::from_openssh(pem) {
        Err(e) if is_length(&e) => repaired_plain(pem).ok_or(e),
        other => other,
    }
}

/// Decrypts `key`, which was read from `pem` by [`from_openssh`]. A wrong passphrase is
/// `Error::Crypto`, as with ssh-key.
pub fn decrypt(pem: &str, key: &PrivateKey, passphrase: &[u8]) -> Result<PrivateKey, Error> {
    match key.decrypt(passphrase) {
        Err(e) if is_length(&e) => repaired_encrypted(pem, key, passphrase).unwrap_or(Err(e)),
        other => other,
    }
}

fn is_length(e: &Error) -> bool {
    matches!(e, Error::Encoding(ssh_encoding::Error::Length))
}

/// The binary document inside the PEM armor, decoded by ssh-encoding as ssh-key does.
struct Document(Zeroizing<Vec<u8>>);

impl Decode for Document {
    type Error = ssh_encoding::Error;

    fn decode(reader: &mut impl ssh_encoding::Reader) -> Result<Self, Self::Error> {
        let mut bytes = Zeroizing::new(vec![0; reader.remaining_len()]);
        reader.read(&mut bytes)?;
        Ok(Self(bytes))
    }
}

impl PemLabel for Document {
    const PEM_LABEL: &'static str = "OPENSSH PRIVATE KEY";
}

/// The fields of an `openssh-key-v1` document, borrowed from it.
struct Envelope<'a> {
    cipher: &'a [u8],
    kdf: &'a [u8],
    kdf_options: &'a [u8],
    public_key: &'a [u8],
    private: &'a [u8],
    /// The AEAD tag after the private section; empty for other ciphers.
    tag: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn parse(doc: &'a [u8]) -> Option<Self> {
        let rest = doc.strip_prefix(MAGIC)?;
        let mut r = Reader::new(rest, "openssh-key-v1");
        let cipher = r.string().ok()?;
        let kdf = r.string().ok()?;
        let kdf_options = r.string().ok()?;
        if r.u32().ok()? != 1 {
            return None;
        }
        let public_key = r.string().ok()?;
        let private = r.string().ok()?;
        Some(Self {
            cipher,
            kdf,
            kdf_options,
            public_key,
            private,
            tag: r.remaining(),
        })
    }

    /// The same key as an unencrypted document whose private section is `private`.
    fn plain_document(&self, private: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(MAGIC.len() + 64 + private.len()));
        out.extend_from_slice(MAGIC);
        out.put_string(b"none");
        out.put_string(b"none");
        out.put_string(b"");
        out.put_u32(1);
        out.put_string(self.public_key);
        out.put_string(private);
        out
    }
}

fn repaired_plain(pem: &str) -> Option<PrivateKey> {
    let doc = Document::decode_pem(pem).ok()?;
    let envelope = Envelope::parse(&doc.0)?;
    if envelope.cipher != b"none" || envelope.kdf != b"none" || !envelope.kdf_options.is_empty() {
        return None;
    }
    let private = full_size_scalar(envelope.private)?;
    PrivateKey::from_bytes(&envelope.plain_document(&private)).ok()
}

/// `None` when the repair does not apply (the caller keeps ssh-key's error); `Some(Err)`
/// when decryption itself fails, a wrong passphrase among them.
fn repaired_encrypted(
    pem: &str,
    key: &PrivateKey,
    passphrase: &[u8],
) -> Option<Result<PrivateKey, Error>> {
    let doc = Document::decode_pem(pem).ok()?;
    let envelope = Envelope::parse(&doc.0)?;
    let tag = match envelope.tag.len() {
        0 => None,
        16 => Some(<[u8; 16]>::try_from(envelope.tag).ok()?.into()),
        _ => return None,
    };
    let (k, iv) = match key.kdf().derive_key_and_iv(key.cipher(), passphrase) {
        Ok(derived) => derived,
        Err(e) => return Some(Err(e)),
    };
    let mut plain = Zeroizing::new(envelope.private.to_vec());
    if let Err(e) = key.cipher().decrypt(&k, &iv, &mut plain, tag) {
        return Some(Err(e.into()));
    }
    // Check ints that differ mean a wrong passphrase (unauthenticated ciphers decrypt
    // anything); say so as ssh-key does rather than "length invalid".
    let mut r = Reader::new(&plain, "private section");
    if r.u32().ok()? != r.u32().ok()? {
        return Some(Err(Error::Crypto));
    }
    let private = full_size_scalar(&plain)?;
    Some(PrivateKey::from_bytes(&envelope.plain_document(&private)))
}

/// The private section (check ints, one key, comment, padding) of an ECDSA key with its
/// scalar widened to the curve's size and the padding redone for an unencrypted document,
/// or `None` if it is not an ECDSA key with a short scalar.
fn full_size_scalar(private: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut r = Reader::new(private, "private section");
    let check1 = r.u32().ok()?;
    let check2 = r.u32().ok()?;
    let algorithm = r.string().ok()?;
    let size = match algorithm {
        b"ecdsa-sha2-nistp256" => 32,
        b"ecdsa-sha2-nistp384" => 48,
        b"ecdsa-sha2-nistp521" => 66,
        _ => return None,
    };
    let curve = r.string().ok()?;
    let point = r.string().ok()?;
    let scalar = r.string().ok()?;
    let comment = r.string().ok()?;
    // A minimal mpint: no leading zero unless the next byte has its top bit set, and
    // positive. Anything else is left for ssh-key to refuse.
    let magnitude = match scalar {
        [0, rest @ ..] if rest.first().is_some_and(|b| b & 0x80 != 0) => rest,
        [first, ..] if first & 0x80 == 0 && *first != 0 => scalar,
        _ => return None,
    };
    // ssh-key's bound: it reads 32 bytes up to the curve's size (with the mpint's zero).
    if magnitude.len() >= 32 {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(private.len() + size));
    out.put_u32(check1);
    out.put_u32(check2);
    out.put_string(algorithm);
    out.put_string(curve);
    out.put_string(point);
    out.put_u32(size as u32);
    out.extend(std::iter::repeat_n(0, size - magnitude.len()));
    out.extend_from_slice(magnitude);
    out.put_string(comment);
    let padding = (PLAIN_BLOCK - out.len() % PLAIN_BLOCK) % PLAIN_BLOCK;
    out.extend(1..=padding as u8);
    Some(out)
}

#[cfg(test)]
mod tests;
