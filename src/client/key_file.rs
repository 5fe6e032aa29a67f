//! Private key files in every format OpenSSH's `ssh` reads, not only its own.
//!
//! Users carry keys that predate OpenSSH 7.8 (or were written with `ssh-keygen -m PEM`),
//! AWS EC2 `.pem` files and keys exported by OpenSSL: PKCS#1 `RSA PRIVATE KEY`, SEC1
//! `EC PRIVATE KEY`, PKCS#8 `PRIVATE KEY` and PBES2-encrypted `ENCRYPTED PRIVATE KEY`.
//! Each becomes the same `ssh_key::PrivateKey` an OpenSSH-format file would.
//!
//! Encrypted PKCS#8 is decrypted by pkcs8/pkcs5, the legacy OpenSSL encryption
//! (`Proc-Type: 4,ENCRYPTED`, MD5-derived keys) with md-5, cbc, aes and des.
//!
//! Nothing in a file may make this panic: every length, tag and number is checked, and the
//! work an encrypted file can ask for (PBKDF2 iterations) is capped.

use base64::Engine as _;
use der::asn1::{BitStringRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Decode, Reader, SliceReader};
use pkcs8::PrivateKeyInfoRef;
use warren_ssh::ssh_key::private::{
    EcdsaKeypair, Ed25519Keypair, RsaKeypair, RsaPrivateKey as SshRsaPrivate,
};
use warren_ssh::ssh_key::public::RsaPublicKey as SshRsaPublic;
use warren_ssh::ssh_key::{Mpint, PrivateKey};
use zeroize::Zeroizing;

/// Why a key file gave no key; the variants that ask something of the user (a passphrase, a
/// conversion) are separate so the caller can prompt or advise instead of just failing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("the key is encrypted and needs its passphrase")]
    NeedsPassphrase,
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// Legacy OpenSSL PEM encryption with a cipher other than AES-CBC or 3DES-CBC (which
    /// are decrypted); `ssh-keygen -p -f` rewrites such a file in OpenSSH's format.
    #[error(
        "the key uses legacy OpenSSL PEM encryption with {cipher}, which warren cannot \
         decrypt; run `ssh-keygen -p -f FILE` to rewrite it in OpenSSH format"
    )]
    LegacyEncrypted { cipher: String },
    #[error("unsupported key: {0}")]
    Unsupported(String),
    #[error("not a usable private key: {0}")]
    Invalid(String),
}

use KeyFileError::{Invalid, Unsupported};

/// Far above what the tools write (OpenSSL and ssh-keygen: 2048), yet a cap, so a crafted
/// file cannot keep warren deriving keys for minutes.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// The most memory an encrypted key's scrypt may ask for (OpenSSL's default is 32 MiB).
const MAX_SCRYPT_BYTES: u128 = 1 << 30;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Decodes a private key file's bytes. `passphrase` is only used for encrypted keys; an
/// encrypted key without one gives [`KeyFileError::NeedsPassphrase`], so callers can ask
/// for a passphrase only when it matters.
pub fn decode_private_key(
    text: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<PrivateKey, KeyFileError> {
    let pem = Pem::find(text)?;
    match pem.label {
        "OPENSSH PRIVATE KEY" => openssh(pem.block, passphrase),
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" if pem.legacy_encrypted() => {
            let plain = legacy_decrypt(&pem, passphrase)?;
            // A wrong passphrase whose padding happened to check out leaves DER that
            // does not parse.
            let key = match pem.label {
                "RSA PRIVATE KEY" => rsa_pkcs1(&plain),
                _ => ec_sec1(&plain, None),
            };
            key.map_err(|e| match e {
                Invalid(_) => KeyFileError::WrongPassphrase,
                other => other,
            })
        }
        "RSA PRIVATE KEY" => rsa_pkcs1(&pem.decode()?),
        "EC PRIVATE KEY" => ec_sec1(&pem.decode()?, None),
        "PRIVATE KEY" => pkcs8(&pem.decode()?),
        "ENCRYPTED PRIVATE KEY" => pkcs8_encrypted(&pem.decode()?, passphrase),
        "DSA PRIVATE KEY" => Err(Unsupported(
            "a DSA key (OpenSSH itself no longer accepts DSA)".into(),
        )),
        other => Err(Invalid(format!(
            "a PEM block labelled \"{other}\", not a private key"
        ))),
    }
}

/// One PEM block (RFC 7468, plus RFC 1421's headers, which legacy encrypted keys carry).
struct Pem<'a> {
    label: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: String,
    /// From the BEGIN line through the END line, for ssh-key's own OpenSSH parser.
    block: &'a str,
}

impl<'a> Pem<'a> {
    /// The first PEM block in `text`; text before it is ignored, as OpenSSL does.
    fn find(text: &'a [u8]) -> Result<Pem<'a>, KeyFileError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| Invalid("binary data, not a PEM or OpenSSH private key file".into()))?;
        let start = text.find("-----BEGIN ").ok_or_else(|| {
            Invalid("no \"-----BEGIN ...-----\" line: not a PEM or OpenSSH private key file".into())
        })?;
        let rest = &text[start..];
        let mut lines = rest.split_inclusive('\n');
        let first = lines.next().unwrap_or_default();
        let label = first
            .trim_end()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or_else(|| Invalid("a malformed \"-----BEGIN\" line".into()))?;
        let end_line = format!("-----END {label}-----");
        let mut consumed = first.len();
        let mut headers = Vec::new();
        let mut body = String::new();
        let mut in_headers = true;
        let mut ended = false;
        for line in lines {
            consumed += line.len();
            let trimmed = line.trim();
            if trimmed == end_line {
                ended = true;
                break;
            }
            if trimmed.starts_with("-----") {
                return Err(Invalid(format!(
                    "\"{trimmed}\" where \"{end_line}\" was expected"
                )));
            }
            if in_headers {
                if let Some((k, v)) = trimmed.split_once(':') {
                    headers.push((k.trim(), v.trim()));
                    continue;
                }
                in_headers = false;
            }
            body.push_str(trimmed);
        }
        if !ended {
            return Err(Invalid(format!(
                "a \"{label}\" block cut short: no \"{end_line}\" line (truncated file?)"
            )));
        }
        Ok(Pem {
            label,
            headers,
            body,
            block: &rest[..consumed],
        })
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn legacy_encrypted(&self) -> bool {
        self.header("Proc-Type")
            .is_some_and(|v| v.to_ascii_uppercase().contains("ENCRYPTED"))
    }

    fn decode(&self) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body)
            .map(Zeroizing::new)
            .map_err(|e| Invalid(format!("the \"{}\" block's base64: {e}", self.label)))
    }
}

/// Legacy OpenSSL PEM encryption (RFC 1421 `Proc-Type: 4,ENCRYPTED` and `DEK-Info`), what
/// OpenSSH before 7.8 and `ssh-keygen -m PEM -N ...` write: the key is OpenSSL's
/// EVP_BytesToKey with MD5, one round, salted with the IV's first 8 bytes.
fn legacy_decrypt(
    pem: &Pem<'_>,
    passphrase: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    use cbc::cipher::block_padding::Pkcs7;
    use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
    let info = pem
        .header("DEK-Info")
        .ok_or_else(|| Invalid("an encrypted PEM key without a DEK-Info header".into()))?;
    let (cipher, iv_hex) = info
        .split_once(',')
        .ok_or_else(|| Invalid(format!("a DEK-Info header without an IV: {info:?}")))?;
    let cipher = cipher.trim().to_ascii_uppercase();
    let (key_len, iv_len) = match cipher.as_str() {
        "AES-128-CBC" => (16, 16),
        "AES-192-CBC" => (24, 16),
        "AES-256-CBC" => (32, 16),
        "DES-EDE3-CBC" => (24, 8),
        _ => return Err(KeyFileError::LegacyEncrypted { cipher }),
    };
    let iv = hex_bytes(iv_hex.trim())
        .filter(|iv| iv.len() == iv_len)
        .ok_or_else(|| Invalid(format!("a DEK-Info IV that is not {iv_len} hex bytes")))?;
    let Some(passphrase) = passphrase else {
        return Err(KeyFileError::NeedsPassphrase);
    };
    let key = evp_bytes_to_key(passphrase, &iv[..8], key_len);
    let mut data = pem.decode()?;
    let bad_key = |_| Invalid("a key or IV of the wrong length".to_string());
    let plain = match cipher.as_str() {
        "AES-128-CBC" => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
            .map_err(bad_key)?
            .decrypt_padded::<Pkcs7>(&mut data)
            .map(<[u8]>::len),
        "AES-192-CBC" => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, &iv)
            .map_err(bad_key)?
            .decrypt_padded::<Pkcs7>(&mut data)
            .map(<[u8]>::len),
        "AES-256-CBC" => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
            .map_err(bad_key)?
            .decrypt_padded::<Pkcs7>(&mut data)
            .map(<[u8]>::len),
        _ => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(bad_key)?
            .decrypt_padded::<Pkcs7>(&mut data)
            .map(<[u8]>::len),
    };
    // Padding that does not check out: almost surely a wrong passphrase (or a damaged file).
    let len = plain.map_err(|_| KeyFileError::WrongPassphrase)?;
    data.truncate(len);
    Ok(data)
}

/// OpenSSL's EVP_BytesToKey(MD5, one round): D_i = MD5(D_{i-1} || passphrase || salt).
fn evp_bytes_to_key(passphrase: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    use md5::Digest;
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut previous: Option<[u8; 16]> = None;
    while out.len() < len {
        let mut h = md5::Md5::new();
        if let Some(p) = &previous {
            h.update(p);
        }
        h.update(passphrase);
        h.update(salt);
        let d: [u8; 16] = h.finalize().into();
        out.extend_from_slice(&d);
        previous = Some(d);
    }
    out.truncate(len);
    out
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn openssh(block: &str, passphrase: Option<&[u8]>) -> Result<PrivateKey, KeyFileError> {
    let key = warren_ssh::openssh_key::from_openssh(block)
        .map_err(|e| Invalid(format!("an OpenSSH private key that does not parse: {e}")))?;
    if !key.is_encrypted() {
        return Ok(key);
    }
    let Some(passphrase) = passphrase else {
        return Err(KeyFileError::NeedsPassphrase);
    };
    warren_ssh::openssh_key::decrypt(block, &key, passphrase).map_err(|e| match e {
        warren_ssh::ssh_key::Error::Crypto => KeyFileError::WrongPassphrase,
        other => Unsupported(format!("an encrypted OpenSSH key: {other}")),
    })
}

fn der_err(what: &'static str) -> impl Fn(der::Error) -> KeyFileError {
    move |e| Invalid(format!("{what}: {e}"))
}

fn mpint(u: UintRef<'_>) -> Mpint {
    Mpint::from_positive_bytes(u.as_bytes())
}

/// PKCS#1 `RSAPrivateKey`; the key is checked (n = p·q, d matches e) by rsa's validation
/// so a damaged file fails here rather than as a server's signature rejection.
fn rsa_pkcs1(der: &[u8]) -> Result<PrivateKey, KeyFileError> {
    const WHAT: &str = "a PKCS#1 RSA private key";
    let mut r = SliceReader::new(der).map_err(der_err(WHAT))?;
    let (n, e, d, p, q, iqmp) = r
        .sequence(|r| {
            let version: u8 = r.decode()?;
            if version != 0 {
                return Ok(Err(Unsupported(
                    "a multi-prime RSA key (PKCS#1 version 1)".into(),
                )));
            }
            let n: UintRef = r.decode()?;
            let e: UintRef = r.decode()?;
            let d: UintRef = r.decode()?;
            let p: UintRef = r.decode()?;
            let q: UintRef = r.decode()?;
            let _dp: UintRef = r.decode()?;
            let _dq: UintRef = r.decode()?;
            let iqmp: UintRef = r.decode()?;
            Ok(Ok((n, e, d, p, q, iqmp)))
        })
        .map_err(der_err(WHAT))??;
    r.finish().map_err(der_err(WHAT))?;
    let bad = |e: warren_ssh::ssh_key::Error| Invalid(format!("{WHAT}: {e}"));
    let public = SshRsaPublic::new(mpint(e), mpint(n)).map_err(bad)?;
    let private = SshRsaPrivate::new(mpint(d), mpint(iqmp), mpint(p), mpint(q)).map_err(bad)?;
    let unchecked = RsaKeypair::new(public, private).map_err(bad)?;
    let checked = rsa::RsaPrivateKey::try_from(&unchecked)
        .map_err(|e| Invalid(format!("{WHAT} whose numbers do not fit together: {e}")))?;
    let keypair = RsaKeypair::try_from(checked).map_err(bad)?;
    Ok(PrivateKey::from(keypair))
}

/// SEC1 `ECPrivateKey`; `curve` comes from PKCS#8's algorithm parameters when wrapped there
/// (the inner structure may then omit its own).
fn ec_sec1(der: &[u8], curve: Option<ObjectIdentifier>) -> Result<PrivateKey, KeyFileError> {
    let key = sec1::EcPrivateKey::try_from(der)
        .map_err(|e| Invalid(format!("a SEC1 EC private key: {e}")))?;
    let inner = key.parameters.and_then(|p| p.named_curve());
    let curve = match (curve, inner) {
        (Some(a), Some(b)) if a != b => {
            return Err(Invalid(format!(
                "an EC key naming two curves ({a} and {b})"
            )));
        }
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => return Err(Invalid("an EC key that names no curve".into())),
    };
    macro_rules! keypair {
        ($crate_:ident, $variant:ident) => {{
            let secret = $crate_::SecretKey::from_slice(key.private_key)
                .map_err(|_| Invalid(format!("an EC key whose scalar is not valid on {curve}")))?;
            let public = secret.public_key();
            if let Some(embedded) = key.public_key
                && $crate_::PublicKey::from_sec1_bytes(embedded).ok() != Some(public)
            {
                return Err(Invalid(
                    "an EC key whose public half does not match its private half".into(),
                ));
            }
            EcdsaKeypair::$variant {
                public: public.into(),
                private: secret.into(),
            }
        }};
    }
    let keypair = match curve {
        OID_P256 => keypair!(p256, NistP256),
        OID_P384 => keypair!(p384, NistP384),
        OID_P521 => keypair!(p521, NistP521),
        other => {
            return Err(Unsupported(format!(
                "an EC key on curve {other} (SSH knows NIST P-256, P-384 and P-521)"
            )));
        }
    };
    Ok(PrivateKey::from(keypair))
}

/// PKCS#8 `PrivateKeyInfo` (RFC 5208) or `OneAsymmetricKey` (RFC 5958).
fn pkcs8(der: &[u8]) -> Result<PrivateKey, KeyFileError> {
    let info = PrivateKeyInfoRef::try_from(der)
        .map_err(|e| Invalid(format!("a PKCS#8 private key: {e}")))?;
    let inner = info.private_key.as_bytes();
    match info.algorithm.oid {
        OID_RSA => rsa_pkcs1(inner),
        OID_EC => {
            let curve = info
                .algorithm
                .parameters
                .map(|p| p.decode_as::<ObjectIdentifier>())
                .transpose()
                .map_err(|e| Invalid(format!("a PKCS#8 EC key's curve: {e}")))?;
            ec_sec1(inner, curve)
        }
        OID_ED25519 => ed25519(inner, info.public_key),
        OID_ED448 => Err(Unsupported("an Ed448 key (SSH has no Ed448)".into())),
        OID_DSA => Err(Unsupported(
            "a DSA key (OpenSSH itself no longer accepts DSA)".into(),
        )),
        other => Err(Unsupported(format!(
            "a PKCS#8 key of algorithm {other} (warren reads RSA, ECDSA and Ed25519)"
        ))),
    }
}

/// RFC 8410 `CurvePrivateKey`: the 32-byte seed, itself wrapped in an OCTET STRING.
fn ed25519(inner: &[u8], public: Option<BitStringRef<'_>>) -> Result<PrivateKey, KeyFileError> {
    let seed = <&OctetStringRef>::from_der(inner)
        .map_err(|e| Invalid(format!("a PKCS#8 Ed25519 key: {e}")))?;
    let seed: &[u8; 32] = seed.as_bytes().try_into().map_err(|_| {
        Invalid(format!(
            "a PKCS#8 Ed25519 key of {} bytes (32 expected)",
            seed.as_bytes().len()
        ))
    })?;
    let keypair = Ed25519Keypair::from_seed(seed);
    if let Some(public) = public
        && public.as_bytes() != Some(keypair.public.0.as_slice())
    {
        return Err(Invalid(
            "an Ed25519 key whose public half does not match its private half".into(),
        ));
    }
    Ok(PrivateKey::from(keypair))
}

/// PKCS#8 `EncryptedPrivateKeyInfo` (RFC 8018 PBES2), what `ssh-keygen -m PKCS8` and
/// `openssl pkcs8 -topk8` write: decrypted by pkcs8/pkcs5 (PBKDF2 or scrypt, AES-CBC or
/// 3DES-CBC). Only the work a file may ask for is judged here, before any is done.
fn pkcs8_encrypted(der: &[u8], passphrase: Option<&[u8]>) -> Result<PrivateKey, KeyFileError> {
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der).map_err(|e| {
        // Schemes pkcs5 does not model (PKCS#12 PBE, say) fail here too, not only
        // damaged files: either way the user's way out is the same.
        Unsupported(format!(
            "an encrypted PKCS#8 key warren cannot read ({e}); if ssh-keygen can, \
                 `ssh-keygen -p -f FILE` rewrites it in OpenSSH format"
        ))
    })?;
    let Some(pbes2) = info.encryption_algorithm.pbes2() else {
        return Err(Unsupported(format!(
            "PKCS#8 encryption {} (PBES1; warren reads PBES2, `ssh-keygen -p -f FILE` converts)",
            info.encryption_algorithm.oid()
        )));
    };
    if let Some(p) = pbes2.kdf.pbkdf2()
        && !(1..=MAX_PBKDF2_ITERATIONS).contains(&p.iteration_count)
    {
        return Err(Unsupported(format!(
            "PBKDF2 with {} iterations (warren allows 1 to {MAX_PBKDF2_ITERATIONS})",
            p.iteration_count
        )));
    }
    if let Some(p) = pbes2.kdf.scrypt() {
        // scrypt holds 128 * N * r bytes while it works.
        let bytes = 128u128 * u128::from(p.cost_parameter) * u128::from(p.block_size);
        if bytes > MAX_SCRYPT_BYTES || p.parallelization > 16 {
            return Err(Unsupported(format!(
                "scrypt with N={} r={} p={} (warren allows up to {} MiB and p <= 16)",
                p.cost_parameter,
                p.block_size,
                p.parallelization,
                MAX_SCRYPT_BYTES >> 20
            )));
        }
    }
    let Some(passphrase) = passphrase else {
        return Err(KeyFileError::NeedsPassphrase);
    };
    // Padding that does not check out, or DER that does not parse after decryption: a
    // wrong key leaves random bytes. An algorithm pkcs5 cannot run says so instead.
    let plain = match info.decrypt(passphrase) {
        Ok(doc) => doc,
        Err(pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::AlgorithmParametersInvalid { oid },
        ))
        | Err(pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::UnsupportedAlgorithm {
            oid,
        })) => {
            return Err(Unsupported(format!(
                "PKCS#8 encryption with {oid} (`ssh-keygen -p -f FILE` converts)"
            )));
        }
        Err(_) => return Err(KeyFileError::WrongPassphrase),
    };
    if PrivateKeyInfoRef::try_from(plain.as_bytes()).is_err() {
        return Err(KeyFileError::WrongPassphrase);
    }
    pkcs8(plain.as_bytes())
}

#[cfg(test)]
mod tests {
    //! Every key here is made at test time by the real tools (ssh-keygen, openssl), so the
    //! decoder is checked against what users' files actually hold, not against itself.

    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use warren_ssh::hostkey;
    use warren_ssh::ssh_key::PublicKey;
    use warren_ssh::ssh_key::public::{Ed25519PublicKey, KeyData};

    const MESSAGE: &[u8] = b"warren key_file test message";

    fn run(cmd: &mut Command) -> Vec<u8> {
        let out = cmd.output().expect("spawn tool");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `ssh-keygen -q ARGS -f DIR/NAME`; the file's path.
    fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let path = dir.join(name);
        run(Command::new("ssh-keygen")
            .arg("-q")
            .args(args)
            .arg("-f")
            .arg(&path));
        path
    }

    /// What `ssh-keygen -y` says the file's public key is: the reference, computed by
    /// OpenSSH (through OpenSSL for the PEM formats), not by us.
    fn openssh_public(path: &Path, passphrase: Option<&str>) -> PublicKey {
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-y");
        if let Some(p) = passphrase {
            cmd.args(["-P", p]);
        }
        let out = run(cmd.arg("-f").arg(path));
        PublicKey::from_openssh(String::from_utf8(out).unwrap().trim()).unwrap()
    }

    /// An Ed25519 key's public half as OpenSSL computes it (ssh-keygen 9.2 cannot read
    /// PKCS#8 Ed25519): the last 32 bytes of its SubjectPublicKeyInfo.
    fn openssl_ed25519_public(path: &Path, pass: Option<&str>) -> PublicKey {
        let mut cmd = Command::new("openssl");
        cmd.args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(path);
        if let Some(p) = pass {
            cmd.args(["-passin", &format!("pass:{p}")]);
        }
        let der = run(&mut cmd);
        let raw: [u8; 32] = der[der.len() - 32..].try_into().unwrap();
        PublicKey::new(KeyData::Ed25519(Ed25519PublicKey(raw)), "")
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn first_line(path: &Path) -> String {
        String::from_utf8(read(path))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    }

    /// The loaded key has the expected public half and signs what that public half verifies
    /// (with every algorithm warren would sign with for it).
    fn assert_usable(key: &PrivateKey, expected: &PublicKey, what: &str) {
        assert_eq!(
            key.public_key().key_data(),
            expected.key_data(),
            "{what}: public key differs from the tools'"
        );
        let blob = expected.to_bytes().unwrap();
        let algs = hostkey::algorithms_for(expected);
        assert!(!algs.is_empty(), "{what}");
        for alg in algs {
            let sig = hostkey::sign(key, alg, MESSAGE)
                .unwrap_or_else(|e| panic!("{what}: signing with {alg}: {e}"));
            hostkey::verify(alg, &blob, MESSAGE, &sig)
                .unwrap_or_else(|e| panic!("{what}: {alg} signature does not verify: {e}"));
            assert!(
                hostkey::verify(alg, &blob, b"another message", &sig).is_err(),
                "{what}: {alg} verifies anything"
            );
        }
    }

    #[test]
    fn pkcs1_rsa_pem_as_ec2_hands_out() {
        let dir = tempfile::tempdir().unwrap();
        let k = keygen(
            dir.path(),
            "k",
            &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""],
        );
        assert_eq!(first_line(&k), "-----BEGIN RSA PRIVATE KEY-----");
        let expected = openssh_public(&k, None);
        let key = decode_private_key(&read(&k), None).unwrap();
        assert_usable(&key, &expected, "PKCS#1 RSA");
        // A passphrase offered for an unencrypted key is simply not needed.
        let again = decode_private_key(&read(&k), Some(b"unused")).unwrap();
        assert_eq!(again.public_key().key_data(), expected.key_data());
    }

    #[test]
    fn pkcs8_rsa_and_ecdsa_from_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            ("rsa", &["-t", "rsa", "-b", "2048"][..]),
            ("p256", &["-t", "ecdsa", "-b", "256"][..]),
            ("p384", &["-t", "ecdsa", "-b", "384"][..]),
            ("p521", &["-t", "ecdsa", "-b", "521"][..]),
        ] {
            let args = [args, &["-m", "PKCS8", "-N", ""]].concat();
            let k = keygen(dir.path(), name, &args);
            assert_eq!(first_line(&k), "-----BEGIN PRIVATE KEY-----", "{name}");
            let key = decode_private_key(&read(&k), None)
                .unwrap_or_else(|e| panic!("PKCS#8 {name}: {e}"));
            assert_usable(&key, &openssh_public(&k, None), &format!("PKCS#8 {name}"));
        }
    }

    #[test]
    fn sec1_ecdsa_from_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        for bits in ["256", "384", "521"] {
            let k = keygen(
                dir.path(),
                bits,
                &["-t", "ecdsa", "-b", bits, "-m", "PEM", "-N", ""],
            );
            assert_eq!(first_line(&k), "-----BEGIN EC PRIVATE KEY-----", "{bits}");
            let key = decode_private_key(&read(&k), None)
                .unwrap_or_else(|e| panic!("SEC1 P-{bits}: {e}"));
            assert_usable(&key, &openssh_public(&k, None), &format!("SEC1 P-{bits}"));
        }
    }

    #[test]
    fn pkcs8_ed25519_from_openssl_plain_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("ed");
        run(Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&k));
        assert_eq!(first_line(&k), "-----BEGIN PRIVATE KEY-----");
        let expected = openssl_ed25519_public(&k, None);
        let key = decode_private_key(&read(&k), None).unwrap();
        assert_usable(&key, &expected, "PKCS#8 Ed25519");

        let enc = dir.path().join("ed.enc");
        run(Command::new("openssl")
            .args([
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-passout",
                "pass:secret",
            ])
            .arg("-in")
            .arg(&k)
            .arg("-out")
            .arg(&enc));
        assert_eq!(first_line(&enc), "-----BEGIN ENCRYPTED PRIVATE KEY-----");
        assert_eq!(
            decode_private_key(&read(&enc), None).unwrap_err(),
            KeyFileError::NeedsPassphrase
        );
        assert_eq!(
            decode_private_key(&read(&enc), Some(b"wrong")).unwrap_err(),
            KeyFileError::WrongPassphrase
        );
        let key = decode_private_key(&read(&enc), Some(b"secret")).unwrap();
        assert_usable(&key, &expected, "encrypted PKCS#8 Ed25519");
    }

    #[test]
    fn encrypted_pkcs8_from_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            ("rsa", &["-t", "rsa", "-b", "2048"][..]),
            ("p384", &["-t", "ecdsa", "-b", "384"][..]),
        ] {
            let args = [args, &["-m", "PKCS8", "-N", "secret"]].concat();
            let k = keygen(dir.path(), name, &args);
            assert_eq!(first_line(&k), "-----BEGIN ENCRYPTED PRIVATE KEY-----");
            let text = read(&k);
            assert_eq!(
                decode_private_key(&text, None).unwrap_err(),
                KeyFileError::NeedsPassphrase,
                "{name}"
            );
            for wrong in [&b"secreT"[..], b"", b"secret "] {
                assert_eq!(
                    decode_private_key(&text, Some(wrong)).unwrap_err(),
                    KeyFileError::WrongPassphrase,
                    "{name}"
                );
            }
            let key = decode_private_key(&text, Some(b"secret")).unwrap();
            let expected = openssh_public(&k, Some("secret"));
            assert_usable(&key, &expected, &format!("encrypted PKCS#8 {name}"));
        }
    }

    /// The PBES2 choices OpenSSL offers: each AES key size and PRF that warren reads, and the
    /// schemes it does not, which must say so rather than claim a wrong passphrase.
    #[test]
    fn openssl_pbes2_variants() {
        let dir = tempfile::tempdir().unwrap();
        let k = keygen(
            dir.path(),
            "ec",
            &["-t", "ecdsa", "-b", "256", "-m", "PEM", "-N", ""],
        );
        let expected = openssh_public(&k, None);
        let convert = |name: &str, args: &[&str]| {
            let out = dir.path().join(name);
            run(Command::new("openssl")
                .args(["pkcs8", "-topk8", "-passout", "pass:pw"])
                .args(args)
                .arg("-in")
                .arg(&k)
                .arg("-out")
                .arg(&out));
            read(&out)
        };
        for (name, args) in [
            (
                "aes128-sha1",
                &["-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1"][..],
            ),
            (
                "aes192-sha512",
                &["-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA512"][..],
            ),
            (
                "aes256-sha384",
                &["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA384"][..],
            ),
            (
                "aes256-sha224",
                &["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA224"][..],
            ),
            ("aes256-iter", &["-v2", "aes-256-cbc", "-iter", "10000"][..]),
            ("scrypt", &["-scrypt"][..]),
            ("des3", &["-v2", "des3"][..]),
        ] {
            let text = convert(name, args);
            let key =
                decode_private_key(&text, Some(b"pw")).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_usable(&key, &expected, name);
            assert_eq!(
                decode_private_key(&text, Some(b"pW")).unwrap_err(),
                KeyFileError::WrongPassphrase,
                "{name}"
            );
        }
        for (name, args) in [("pbes1", &["-v1", "PBE-SHA1-3DES"][..])] {
            let text = convert(name, args);
            for pass in [None, Some(&b"pw"[..])] {
                match decode_private_key(&text, pass) {
                    Err(Unsupported(why)) => assert!(why.contains("ssh-keygen -p"), "{why}"),
                    other => panic!("{name}: {other:?}"),
                }
            }
        }
    }

    /// OpenSSH before 7.8 and `ssh-keygen -m PEM -N ...` encrypt with AES-128-CBC; older
    /// OpenSSL tools with 3DES or AES-256. Every one is made by the real tools.
    #[test]
    fn legacy_encrypted_pem_from_ssh_keygen_and_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = keygen(
            dir.path(),
            "rsa",
            &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "secret"],
        );
        let ec = keygen(
            dir.path(),
            "ec",
            &["-t", "ecdsa", "-m", "PEM", "-N", "secret"],
        );
        let mut cases = vec![(rsa.clone(), "AES-128-CBC"), (ec.clone(), "AES-128-CBC")];
        for (tool, src, cipher, flag) in [
            ("rsa", &rsa, "AES-256-CBC", "-aes256"),
            ("rsa", &rsa, "DES-EDE3-CBC", "-des3"),
            ("ec", &ec, "AES-192-CBC", "-aes192"),
        ] {
            let out = dir.path().join(format!("{tool}{flag}"));
            let mut cmd = Command::new("openssl");
            cmd.args([tool, "-in"])
                .arg(src)
                .args(["-passin", "pass:secret"]);
            if tool == "rsa" {
                cmd.arg("-traditional");
            }
            run(cmd
                .args([flag, "-passout", "pass:secret", "-out"])
                .arg(&out));
            cases.push((out, cipher));
        }
        for (path, cipher) in cases {
            let text = read(&path);
            let seen = String::from_utf8_lossy(&text);
            assert!(
                seen.contains("Proc-Type: 4,ENCRYPTED") && seen.contains(cipher),
                "{path:?} is not legacy {cipher}:\n{seen}"
            );
            let what = format!("{path:?} ({cipher})");
            assert_eq!(
                decode_private_key(&text, None).unwrap_err(),
                KeyFileError::NeedsPassphrase,
                "{what}"
            );
            assert_eq!(
                decode_private_key(&text, Some(b"Secret")).unwrap_err(),
                KeyFileError::WrongPassphrase,
                "{what}"
            );
            let key = decode_private_key(&text, Some(b"secret"))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_usable(&key, &openssh_public(&path, Some("secret")), &what);
        }
    }

    /// A legacy cipher we do not run says how to convert the file, before any prompt.
    #[test]
    fn legacy_pem_with_an_unknown_cipher_says_how_to_convert() {
        let text = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: \
            CAMELLIA-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        for pass in [None, Some(&b"x"[..])] {
            let err = decode_private_key(text, pass).unwrap_err();
            assert_eq!(
                err,
                KeyFileError::LegacyEncrypted {
                    cipher: "CAMELLIA-128-CBC".into()
                }
            );
            assert!(err.to_string().contains("ssh-keygen -p -f"), "{err}");
        }
    }

    #[test]
    fn openssh_format_plain_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let plain = keygen(dir.path(), "plain", &["-t", "ed25519", "-N", ""]);
        let key = decode_private_key(&read(&plain), None).unwrap();
        assert_usable(&key, &openssh_public(&plain, None), "OpenSSH ed25519");

        let enc = keygen(dir.path(), "enc", &["-t", "ecdsa", "-N", "secret"]);
        let text = read(&enc);
        assert_eq!(
            decode_private_key(&text, None).unwrap_err(),
            KeyFileError::NeedsPassphrase
        );
        assert_eq!(
            decode_private_key(&text, Some(b"nope")).unwrap_err(),
            KeyFileError::WrongPassphrase
        );
        let key = decode_private_key(&text, Some(b"secret")).unwrap();
        assert_usable(&key, &openssh_public(&enc, Some("secret")), "OpenSSH ecdsa");
    }

    #[test]
    fn garbage_is_an_error() {
        for text in [
            &b""[..],
            b"hello",
            b"\xff\xfe\x00binary",
            b"-----BEGIN RSA PRIVATE KEY-----\n",
            b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END EC PRIVATE KEY-----\n",
            b"-----BEGIN RSA PRIVATE KEY-----\n!!!!\n-----END RSA PRIVATE KEY-----\n",
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            b"-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            b"-----BEGIN-----",
        ] {
            for pass in [None, Some(&b"pw"[..])] {
                match decode_private_key(text, pass) {
                    Err(Invalid(_) | Unsupported(_)) => {}
                    other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
                }
            }
        }
    }

    /// Truncated at every byte, truncated inside the DER (re-armored, so the PEM framing is
    /// intact), and with bytes flipped: never a panic, and a cut-short file is never a key.
    #[test]
    fn truncated_and_damaged_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = vec![
            keygen(
                dir.path(),
                "rsa",
                &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""],
            ),
            keygen(
                dir.path(),
                "ec",
                &["-t", "ecdsa", "-b", "384", "-m", "PEM", "-N", ""],
            ),
            keygen(dir.path(), "p8", &["-t", "ecdsa", "-m", "PKCS8", "-N", ""]),
            keygen(
                dir.path(),
                "p8e",
                &["-t", "ecdsa", "-m", "PKCS8", "-N", "secret"],
            ),
            keygen(dir.path(), "ssh", &["-t", "ed25519", "-N", ""]),
        ];
        let ed = dir.path().join("ed");
        run(Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&ed));
        files.push(ed);
        for path in &files {
            let text = read(path);
            let s = String::from_utf8(text.clone()).unwrap();
            let end_at = s.find("-----END").unwrap();
            let pass = Some(&b"secret"[..]);
            for cut in 0..end_at {
                assert!(
                    decode_private_key(&text[..cut], pass).is_err(),
                    "{} cut at {cut} decoded",
                    path.display()
                );
            }

            let pem = Pem::find(&text).unwrap();
            if pem.label == "OPENSSH PRIVATE KEY" {
                continue;
            }
            let der = pem.decode().unwrap();
            let armor = |body: &[u8]| {
                format!(
                    "-----BEGIN {0}-----\n{1}\n-----END {0}-----\n",
                    pem.label,
                    base64::engine::general_purpose::STANDARD.encode(body)
                )
            };
            for cut in 0..der.len() {
                assert!(
                    decode_private_key(armor(&der[..cut]).as_bytes(), pass).is_err(),
                    "{} DER cut at {cut} decoded",
                    path.display()
                );
            }
            for i in (0..der.len()).step_by(5) {
                let mut damaged = der.to_vec();
                damaged[i] ^= 0x5a;
                let _ = decode_private_key(armor(&damaged).as_bytes(), pass);
            }
        }
    }
}
