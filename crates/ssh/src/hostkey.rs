//! Public-key signatures over the exchange hash (host keys) and userauth blobs, via ssh-key.
//!
//! Only SHA-2 signatures are made or accepted: an RSA key signs as rsa-sha2-512/256
//! (RFC 8332), never "ssh-rsa" (SHA-1). OpenSSH certificates ("*-cert-v01@openssh.com") are
//! parsed as such and their signatures are checked against the certified key; whether the
//! certificate itself is trusted (CA, validity, principals) is the caller's policy.

use crate::error::{Error, Result};
use crate::wire::{Put, Reader};
use signature::{Signer, Verifier};
use ssh_key::private::KeypairData;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Certificate, EcdsaCurve, HashAlg, PrivateKey, PublicKey, Signature};

/// Host key algorithms we accept from a server / offer as a server, best first (OpenSSH's
/// order). Certificate variants ([`HOST_CERT_ALGORITHMS`]) are not offered by default: a
/// client only gains from them when it trusts a CA for the host, and then puts them first.
pub const HOST_KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// The certificate variants of [`HOST_KEY_ALGORITHMS`], in the same order. A client
/// that offers one verifies the server's signature with the certified key; whether the
/// certificate is trusted (CA, validity, principals) is the caller's decision.
pub const HOST_CERT_ALGORITHMS: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
];

const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

/// A public key as received on the wire: a plain key or an OpenSSH certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedKey {
    Plain(PublicKey),
    Certificate(Box<Certificate>),
}

impl ParsedKey {
    /// The key that makes the signatures (for a certificate, the certified key).
    pub fn key_data(&self) -> &KeyData {
        match self {
            ParsedKey::Plain(k) => k.key_data(),
            ParsedKey::Certificate(c) => c.public_key(),
        }
    }
}

/// Signature algorithm names a key can make, best first (RSA: rsa-sha2-512, rsa-sha2-256).
/// Empty for key types we do not sign with (DSA, security keys).
pub fn algorithms_for(key: &PublicKey) -> Vec<&'static str> {
    match key.key_data() {
        KeyData::Ed25519(_) => vec!["ssh-ed25519"],
        KeyData::Ecdsa(k) => vec![ecdsa_name(k.curve())],
        KeyData::Rsa(_) => vec!["rsa-sha2-512", "rsa-sha2-256"],
        _ => Vec::new(),
    }
}

fn ecdsa_name(curve: EcdsaCurve) -> &'static str {
    match curve {
        EcdsaCurve::NistP256 => "ecdsa-sha2-nistp256",
        EcdsaCurve::NistP384 => "ecdsa-sha2-nistp384",
        EcdsaCurve::NistP521 => "ecdsa-sha2-nistp521",
    }
}

/// The signature algorithm that `alg` (a plain or certificate algorithm name) means for this
/// key, or an error if the name does not fit the key's type. The check matters: without it a
/// peer could pair, say, an RSA key with an algorithm name we did not negotiate.
fn signature_algorithm(alg: &str, key: &KeyData) -> Result<Algorithm> {
    let base = alg.strip_suffix(CERT_SUFFIX).unwrap_or(alg);
    let a = match (base, key) {
        ("ssh-ed25519", KeyData::Ed25519(_)) => Algorithm::Ed25519,
        (name, KeyData::Ecdsa(k)) if name == ecdsa_name(k.curve()) => {
            Algorithm::Ecdsa { curve: k.curve() }
        }
        ("rsa-sha2-256", KeyData::Rsa(_)) => Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
        ("rsa-sha2-512", KeyData::Rsa(_)) => Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        _ => {
            return Err(Error::Key(format!(
                "algorithm {alg} does not fit a {} key",
                key.algorithm()
            )));
        }
    };
    Ok(a)
}

/// Sign `data` (the exchange hash, or a userauth blob) with `alg`, which may also be a
/// certificate algorithm name (the certified key signs, under the plain name). Returns the
/// SSH signature blob (string alg-name, string sig) as sent on the wire.
pub fn sign(key: &PrivateKey, alg: &str, data: &[u8]) -> Result<Vec<u8>> {
    if key.is_encrypted() {
        return Err(Error::Key("private key is encrypted".into()));
    }
    let sig_alg = signature_algorithm(alg, key.public_key().key_data())?;
    let fail = |e: signature::Error| Error::Key(format!("signing with {alg} failed: {e}"));
    let sig: Signature = match (key.key_data(), &sig_alg) {
        (KeypairData::Ed25519(k), _) => k.try_sign(data).map_err(fail)?,
        (KeypairData::Ecdsa(k), _) => k.try_sign(data).map_err(fail)?,
        (KeypairData::Rsa(k), Algorithm::Rsa { hash }) => {
            (k, *hash).try_sign(data).map_err(fail)?
        }
        _ => {
            return Err(Error::Key(format!(
                "cannot sign with a {} key",
                key.algorithm()
            )));
        }
    };
    if sig.algorithm() != sig_alg {
        return Err(Error::Key(format!(
            "signer produced {} instead of {}",
            sig.algorithm(),
            sig_alg
        )));
    }
    let mut blob = Vec::with_capacity(sig.as_bytes().len() + 32);
    blob.put_string(sig_alg.as_str().as_bytes());
    blob.put_string(sig.as_bytes());
    Ok(blob)
}

/// Parse `key_blob` (SSH wire public key, or an OpenSSH certificate blob) and verify
/// `signature_blob` over `data`. The signature's algorithm name must be exactly the one `alg`
/// implies for this key (a certificate algorithm requires a certificate blob and vice versa).
/// Returns the parsed key. Errors: `Malformed` for unparsable blobs, `Key` for an algorithm
/// that does not fit, `HostKeySignature` for a signature that does not verify.
pub fn verify(alg: &str, key_blob: &[u8], data: &[u8], signature_blob: &[u8]) -> Result<ParsedKey> {
    let key = parse_key_blob(key_blob)?;
    let is_cert = matches!(key, ParsedKey::Certificate(_));
    if alg.ends_with(CERT_SUFFIX) != is_cert {
        return Err(Error::Key(format!(
            "algorithm {alg} does not fit a {} blob",
            if is_cert { "certificate" } else { "plain key" }
        )));
    }
    let sig_alg = signature_algorithm(alg, key.key_data())?;

    let mut r = Reader::new(signature_blob, "signature");
    let name = r.utf8()?;
    let raw = r.string()?;
    if !r.is_empty() {
        return Err(Error::Malformed("signature"));
    }
    if name != sig_alg.as_str() {
        return Err(Error::Key(format!(
            "signature is {name}, expected {}",
            sig_alg.as_str()
        )));
    }
    let sig = Signature::new(sig_alg, raw).map_err(|_| Error::Malformed("signature"))?;
    key.key_data()
        .verify(data, &sig)
        .map_err(|_| Error::HostKeySignature)?;
    Ok(key)
}

/// Parse an SSH wire public key blob; a "*-cert-v01@openssh.com" type gives a certificate.
/// Trailing bytes are an error.
pub fn parse_key_blob(blob: &[u8]) -> Result<ParsedKey> {
    const WHAT: &str = "public key blob";
    let kind = Reader::new(blob, WHAT).utf8()?;
    if kind.ends_with(CERT_SUFFIX) {
        let cert = Certificate::from_bytes(blob).map_err(|_| Error::Malformed(WHAT))?;
        Ok(ParsedKey::Certificate(Box::new(cert)))
    } else {
        let key = PublicKey::from_bytes(blob).map_err(|_| Error::Malformed(WHAT))?;
        Ok(ParsedKey::Plain(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::{LineEnding, SshSig};
    use std::path::PathBuf;
    use std::process::Command;

    /// A scratch directory per test; ssh-keygen writes its keys and signatures there.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "warren-hostkey-{tag}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn keygen(args: &[&str]) {
        let out = Command::new("ssh-keygen")
            .args(args)
            .output()
            .expect("ssh-keygen must be installed for these tests");
        assert!(
            out.status.success(),
            "ssh-keygen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ssh-keygen -t <kind>`: keys made by OpenSSH, not by the code under test.
    fn openssh_key(dir: &TempDir, name: &str, kind: &[&str]) -> PrivateKey {
        let path = dir.path(name);
        let mut args = vec![
            "-q",
            "-N",
            "",
            "-C",
            "test",
            "-f",
            path.to_str().unwrap(),
            "-t",
        ];
        args.extend_from_slice(kind);
        keygen(&args);
        crate::openssh_key::from_openssh(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn blob(key: &PrivateKey) -> Vec<u8> {
        key.public_key().to_bytes().unwrap()
    }

    fn random_key(alg: Algorithm) -> PrivateKey {
        PrivateKey::random(&mut rand::rng(), alg).unwrap()
    }

    fn all_keys(dir: &TempDir) -> Vec<PrivateKey> {
        vec![
            random_key(Algorithm::Ed25519),
            random_key(Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            }),
            random_key(Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            }),
            random_key(Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            }),
            openssh_key(dir, "ed25519", &["ed25519"]),
            openssh_key(dir, "p521", &["ecdsa", "-b", "521"]),
            openssh_key(dir, "rsa", &["rsa", "-b", "2048"]),
        ]
    }

    #[test]
    fn sign_verify_round_trips_and_tampering_fails() {
        let dir = TempDir::new("roundtrip");
        let data = b"exchange hash H";
        let mut seen = Vec::new();
        for key in all_keys(&dir) {
            let pk = blob(&key);
            let algs = algorithms_for(key.public_key());
            assert!(!algs.is_empty());
            for alg in &algs {
                seen.push(*alg);
                let sig = sign(&key, alg, data).unwrap();
                // The blob names the algorithm first.
                let mut r = Reader::new(&sig, "t");
                assert_eq!(r.utf8().unwrap(), *alg);
                match verify(alg, &pk, data, &sig).unwrap() {
                    ParsedKey::Plain(k) => assert_eq!(k.key_data(), key.public_key().key_data()),
                    ParsedKey::Certificate(_) => panic!("plain key parsed as certificate"),
                }
                // Tampered data.
                assert!(matches!(
                    verify(alg, &pk, b"exchange hash h", &sig),
                    Err(Error::HostKeySignature)
                ));
                // Every single-bit flip in the signature blob is caught.
                for i in 0..sig.len() {
                    let mut bad = sig.clone();
                    bad[i] ^= 0x01;
                    assert!(verify(alg, &pk, data, &bad).is_err(), "{alg} byte {i}");
                }
                // Truncated and extended blobs.
                for n in 0..sig.len() {
                    assert!(
                        verify(alg, &pk, data, &sig[..n]).is_err(),
                        "{alg} prefix {n}"
                    );
                }
                let mut longer = sig.clone();
                longer.push(0);
                assert!(verify(alg, &pk, data, &longer).is_err());
                // A certificate name for a plain key.
                let cert_alg = format!("{alg}{CERT_SUFFIX}");
                assert!(verify(&cert_alg, &pk, data, &sig).is_err());
            }
        }
        for alg in HOST_KEY_ALGORITHMS {
            assert!(seen.contains(alg), "{alg} untested");
        }
    }

    #[test]
    fn rsa_hash_names_are_not_interchangeable_and_sha1_is_refused() {
        let dir = TempDir::new("rsa");
        let key = openssh_key(&dir, "rsa", &["rsa", "-b", "2048"]);
        let pk = blob(&key);
        let data = b"data";
        let s256 = sign(&key, "rsa-sha2-256", data).unwrap();
        let s512 = sign(&key, "rsa-sha2-512", data).unwrap();
        assert!(verify("rsa-sha2-256", &pk, data, &s256).is_ok());
        assert!(verify("rsa-sha2-512", &pk, data, &s256).is_err());
        assert!(verify("rsa-sha2-256", &pk, data, &s512).is_err());
        // A SHA-256 signature relabelled as SHA-512 fails the math, not just the name check.
        let mut r = Reader::new(&s256, "t");
        r.utf8().unwrap();
        let raw = r.string().unwrap();
        let mut relabelled = Vec::new();
        relabelled.put_string(b"rsa-sha2-512");
        relabelled.put_string(raw);
        assert!(matches!(
            verify("rsa-sha2-512", &pk, data, &relabelled),
            Err(Error::HostKeySignature)
        ));
        assert!(sign(&key, "ssh-rsa", data).is_err());
        let mut sha1 = Vec::new();
        sha1.put_string(b"ssh-rsa");
        sha1.put_string(raw);
        assert!(verify("ssh-rsa", &pk, data, &sha1).is_err());
    }

    #[test]
    fn algorithm_must_fit_the_key() {
        let ed = random_key(Algorithm::Ed25519);
        let p256 = random_key(Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        });
        let p384 = random_key(Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        });
        let data = b"data";
        assert!(sign(&ed, "ecdsa-sha2-nistp256", data).is_err());
        assert!(sign(&p256, "ecdsa-sha2-nistp384", data).is_err());
        assert!(sign(&p256, "rsa-sha2-512", data).is_err());
        let sig = sign(&p256, "ecdsa-sha2-nistp256", data).unwrap();
        // Right signature, key blob of another type / curve.
        assert!(verify("ecdsa-sha2-nistp256", &blob(&p384), data, &sig).is_err());
        assert!(verify("ssh-ed25519", &blob(&ed), data, &sig).is_err());
        assert!(verify("ecdsa-sha2-nistp384", &blob(&p384), data, &sig).is_err());
        // Another key of the same type.
        let other = random_key(Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        });
        assert!(matches!(
            verify("ecdsa-sha2-nistp256", &blob(&other), data, &sig),
            Err(Error::HostKeySignature)
        ));
        assert!(verify("unknown-alg", &blob(&p256), data, &sig).is_err());
    }

    #[test]
    fn cert_algorithm_names_pair_with_the_plain_ones() {
        assert_eq!(HOST_CERT_ALGORITHMS.len(), HOST_KEY_ALGORITHMS.len());
        for (cert, plain) in HOST_CERT_ALGORITHMS.iter().zip(HOST_KEY_ALGORITHMS) {
            assert_eq!(cert.strip_suffix(CERT_SUFFIX), Some(*plain));
        }
    }

    /// A host certificate made by ssh-keygen verifies an exchange-hash signature made by
    /// the certified key under the certificate algorithm name, and only under it.
    #[test]
    fn host_certificate_signatures_verify_with_the_certified_key() {
        let dir = TempDir::new("hostcert");
        let host = openssh_key(&dir, "host", &["ed25519"]);
        openssh_key(&dir, "ca", &["ed25519"]);
        keygen(&[
            "-q",
            "-s",
            dir.path("ca").to_str().unwrap(),
            "-h",
            "-I",
            "h",
            "-n",
            "h",
            dir.path("host.pub").to_str().unwrap(),
        ]);
        let cert = Certificate::read_file(&dir.path("host-cert.pub")).unwrap();
        let blob = cert.to_bytes().unwrap();
        let data = b"exchange hash";
        let sig = sign(&host, "ssh-ed25519-cert-v01@openssh.com", data).unwrap();
        match verify("ssh-ed25519-cert-v01@openssh.com", &blob, data, &sig).unwrap() {
            ParsedKey::Certificate(c) => assert_eq!(c.public_key(), host.public_key().key_data()),
            ParsedKey::Plain(_) => panic!("certificate parsed as a plain key"),
        }
        assert!(verify("ssh-ed25519", &blob, data, &sig).is_err());
        assert!(matches!(
            verify("ssh-ed25519-cert-v01@openssh.com", &blob, b"other", &sig),
            Err(Error::HostKeySignature)
        ));
        let other = random_key(Algorithm::Ed25519);
        let forged = sign(&other, "ssh-ed25519", data).unwrap();
        assert!(verify("ssh-ed25519-cert-v01@openssh.com", &blob, data, &forged).is_err());
    }

    #[test]
    fn hostile_key_blobs_are_errors() {
        let key = random_key(Algorithm::Ed25519);
        let pk = blob(&key);
        for n in 0..pk.len() {
            assert!(parse_key_blob(&pk[..n]).is_err(), "prefix {n}");
        }
        let mut longer = pk.clone();
        longer.push(0);
        assert!(parse_key_blob(&longer).is_err());
        let mut huge = pk.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_key_blob(&huge).is_err());
        let mut fake_cert = Vec::new();
        fake_cert.put_string(b"ssh-ed25519-cert-v01@openssh.com");
        fake_cert.put_string(&[0; 32]);
        assert!(parse_key_blob(&fake_cert).is_err());
        let mut x: u32 = 7;
        for _ in 0..2000 {
            let n = (x % 200) as usize;
            let mut v: Vec<u8> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = parse_key_blob(&v);
            let _ = verify("ssh-ed25519", &pk, b"d", &v);
            // Plausible prefix, random rest.
            let mut p = Vec::new();
            p.put_string(b"ecdsa-sha2-nistp256");
            p.append(&mut v);
            let _ = parse_key_blob(&p);
        }
    }

    #[test]
    fn certificates_verify_with_the_certified_key() {
        let dir = TempDir::new("cert");
        openssh_key(&dir, "ca", &["ed25519"]);
        let user_ed = openssh_key(&dir, "ued", &["ed25519"]);
        let user_rsa = openssh_key(&dir, "ursa", &["rsa", "-b", "2048"]);
        let user_p384 = openssh_key(&dir, "up384", &["ecdsa", "-b", "384"]);
        let ca = dir.path("ca");
        for name in ["ued", "ursa", "up384"] {
            let pubf = dir.path(&format!("{name}.pub"));
            keygen(&[
                "-q",
                "-s",
                ca.to_str().unwrap(),
                "-I",
                "id",
                "-n",
                "alice",
                "-V",
                "+1h",
                pubf.to_str().unwrap(),
            ]);
        }
        let cert_blob = |name: &str| {
            let text = std::fs::read_to_string(dir.path(&format!("{name}-cert.pub"))).unwrap();
            Certificate::from_openssh(&text)
                .unwrap()
                .to_bytes()
                .unwrap()
        };
        let data = b"session id || userauth request";
        let cases: [(&PrivateKey, &str, &[&str]); 3] = [
            (&user_ed, "ued", &["ssh-ed25519-cert-v01@openssh.com"]),
            (
                &user_rsa,
                "ursa",
                &[
                    "rsa-sha2-512-cert-v01@openssh.com",
                    "rsa-sha2-256-cert-v01@openssh.com",
                ],
            ),
            (
                &user_p384,
                "up384",
                &["ecdsa-sha2-nistp384-cert-v01@openssh.com"],
            ),
        ];
        for (key, name, algs) in cases {
            let cb = cert_blob(name);
            for alg in algs {
                let sig = sign(key, alg, data).unwrap();
                // The signature carries the plain algorithm name.
                let plain = alg.strip_suffix(CERT_SUFFIX).unwrap();
                assert_eq!(Reader::new(&sig, "t").utf8().unwrap(), plain);
                match verify(alg, &cb, data, &sig).unwrap() {
                    ParsedKey::Certificate(c) => {
                        assert_eq!(c.valid_principals(), ["alice"]);
                        assert_eq!(c.public_key(), key.public_key().key_data());
                        c.verify_signature().unwrap();
                    }
                    ParsedKey::Plain(_) => panic!("certificate parsed as plain key"),
                }
                assert!(verify(alg, &cb, b"other", &sig).is_err());
                // A certificate blob under the plain name, a plain blob under the cert name.
                assert!(verify(plain, &cb, data, &sig).is_err());
                assert!(verify(alg, &blob(key), data, &sig).is_err());
            }
            // Signed by someone else's key: the certificate does not lend its name.
            let sig = sign(&user_ed, "ssh-ed25519", data).unwrap();
            if name != "ued" {
                assert!(verify(algs[0], &cb, data, &sig).is_err());
            }
        }
        assert!(
            verify(
                "ssh-rsa-cert-v01@openssh.com",
                &cert_blob("ursa"),
                data,
                &sign(&user_rsa, "rsa-sha2-512", data).unwrap()
            )
            .is_err()
        );
    }

    /// OpenSSH checks our raw signatures (wrapped as SSHSIG, whose inner signature is exactly
    /// the blob `sign` makes) and we check OpenSSH's.
    #[test]
    fn signatures_interoperate_with_openssh() {
        let dir = TempDir::new("sshsig");
        let msg_path = dir.path("msg");
        let msg = b"interop message\n";
        std::fs::write(&msg_path, msg).unwrap();
        let keys = [
            ("ed", vec!["ed25519"]),
            ("p256", vec!["ecdsa", "-b", "256"]),
            ("p384", vec!["ecdsa", "-b", "384"]),
            ("p521", vec!["ecdsa", "-b", "521"]),
            ("rsa", vec!["rsa", "-b", "2048"]),
        ];
        for (name, kind) in keys {
            let key = openssh_key(&dir, name, &kind);
            // Ours -> OpenSSH.
            for alg in algorithms_for(key.public_key()) {
                let signed = SshSig::signed_data("test", HashAlg::Sha512, msg).unwrap();
                let sig_blob = sign(&key, alg, &signed).unwrap();
                let sig = Signature::try_from(&sig_blob[..]).unwrap();
                let sshsig = SshSig::new(
                    key.public_key().key_data().clone(),
                    "test",
                    HashAlg::Sha512,
                    sig,
                )
                .unwrap();
                let sig_path = dir.path(&format!("{name}-{alg}.sig"));
                std::fs::write(&sig_path, sshsig.to_pem(LineEnding::LF).unwrap()).unwrap();
                let out = Command::new("ssh-keygen")
                    .args([
                        "-Y",
                        "check-novalidate",
                        "-n",
                        "test",
                        "-s",
                        sig_path.to_str().unwrap(),
                    ])
                    .stdin(std::fs::File::open(&msg_path).unwrap())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "OpenSSH rejected our {alg}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            // OpenSSH -> ours.
            keygen(&[
                "-Y",
                "sign",
                "-n",
                "test",
                "-f",
                dir.path(name).to_str().unwrap(),
                msg_path.to_str().unwrap(),
            ]);
            let pem = std::fs::read_to_string(dir.path("msg.sig")).unwrap();
            let theirs = SshSig::from_pem(&pem).unwrap();
            let signed = SshSig::signed_data("test", theirs.hash_alg(), msg).unwrap();
            let mut sig_blob = Vec::new();
            sig_blob.put_string(theirs.algorithm().as_str().as_bytes());
            sig_blob.put_string(theirs.signature_bytes());
            let alg = theirs.algorithm().as_str().to_string();
            verify(&alg, &blob(&key), &signed, &sig_blob).unwrap();
            assert!(verify(&alg, &blob(&key), &signed[1..], &sig_blob).is_err());
            std::fs::remove_file(dir.path("msg.sig")).unwrap();
        }
    }

    #[test]
    fn encrypted_keys_cannot_sign() {
        let dir = TempDir::new("enc");
        let path = dir.path("k");
        keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "secret",
            "-f",
            path.to_str().unwrap(),
        ]);
        let key = PrivateKey::read_openssh_file(&path).unwrap();
        assert!(sign(&key, "ssh-ed25519", b"x").is_err());
    }
}
