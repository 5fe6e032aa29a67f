use super::*;
use ssh_key::{HashAlg, LineEnding, PublicKey};

const PLAIN: &str = include_str!("testdata/p256_short_scalar");
const PUBLIC: &str = include_str!("testdata/p256_short_scalar.pub");
const CTR: &str = include_str!("testdata/p256_short_scalar_aes256_ctr");
const GCM: &str = include_str!("testdata/p256_short_scalar_aes256_gcm");
const PASSPHRASE: &[u8] = b"correct horse";

fn public() -> PublicKey {
    PublicKey::from_openssh(PUBLIC.trim()).expect("the .pub parses")
}

/// The key signs, and its signature verifies against the .pub ssh-keygen wrote: the
/// widened scalar is the same number, not just a key that parses.
fn assert_is_the_keygen_key(key: &PrivateKey) {
    assert!(!key.is_encrypted());
    assert_eq!(key.public_key().key_data(), public().key_data());
    assert_eq!(key.comment().as_str_lossy(), "short scalar test key");
    let sig = key
        .sign("warren-test", HashAlg::Sha256, b"message")
        .expect("sign");
    public()
        .verify("warren-test", b"message", &sig)
        .expect("signature verifies with the .pub key");
}

/// Documents why the repair exists; when a later ssh-key accepts this key, this fails and
/// the module can go.
#[test]
fn ssh_key_alone_refuses_a_short_scalar() {
    let e = PrivateKey::from_openssh(PLAIN).expect_err("ssh-key still refuses it");
    assert!(is_length(&e), "{e:?}");
}

#[test]
fn an_unencrypted_key_with_a_short_scalar_loads() {
    let key = from_openssh(PLAIN).expect("repaired");
    assert_is_the_keygen_key(&key);
    // Written back by ssh-key (scalar at full size), it reads without the repair.
    let text = key.to_openssh(LineEnding::LF).expect("encode");
    assert_is_the_keygen_key(&PrivateKey::from_openssh(&*text).expect("plain ssh-key reads it"));
}

#[test]
fn encrypted_keys_with_a_short_scalar_decrypt() {
    for pem in [CTR, GCM] {
        let key = from_openssh(pem).expect("the envelope parses");
        assert!(key.is_encrypted());
        assert!(is_length(
            &key.decrypt(PASSPHRASE).expect_err("ssh-key alone refuses")
        ));
        assert_is_the_keygen_key(&decrypt(pem, &key, PASSPHRASE).expect("decrypts"));
    }
}

#[test]
fn a_wrong_passphrase_is_a_crypto_error() {
    for pem in [CTR, GCM] {
        let key = from_openssh(pem).unwrap();
        let e = decrypt(pem, &key, b"wrong").expect_err("wrong passphrase");
        assert!(matches!(e, Error::Crypto), "{e:?}");
    }
}

#[test]
fn other_keys_take_ssh_keys_own_path() {
    let mut rng = rand::rng();
    for alg in [
        ssh_key::Algorithm::Ed25519,
        ssh_key::Algorithm::Ecdsa {
            curve: ssh_key::EcdsaCurve::NistP256,
        },
    ] {
        let key = PrivateKey::random(&mut rng, alg).unwrap();
        let text = key.to_openssh(LineEnding::LF).unwrap();
        assert_eq!(from_openssh(&text).unwrap(), key);
    }
}

#[test]
fn damaged_keys_give_errors() {
    // Cut inside the base64 body, and one byte of the private section changed.
    let cut = &PLAIN[..PLAIN.len() / 2];
    assert!(from_openssh(cut).is_err());
    let doc = Document::decode_pem(PLAIN).unwrap();
    let env = Envelope::parse(&doc.0).unwrap();
    let mut private = env.private.to_vec();
    private[0] ^= 1; // check ints now differ
    let damaged = env.plain_document(&private);
    assert!(PrivateKey::from_bytes(&damaged).is_err());
    assert!(
        full_size_scalar(&private).is_some(),
        "the repair itself does not check"
    );
    let repaired = full_size_scalar(&private).unwrap();
    assert!(PrivateKey::from_bytes(&env.plain_document(&repaired)).is_err());
    // Not an ECDSA key, or no short scalar: nothing to repair.
    assert!(full_size_scalar(&private[..12]).is_none());
    assert!(full_size_scalar(b"").is_none());
}

/// Every truncation and every single-byte change of a key file's document goes through the
/// repair's own parsing without a panic (ssh-key's parsing is fuzzed upstream).
#[test]
fn mangled_documents_never_panic() {
    let doc = Document::decode_pem(PLAIN).unwrap().0;
    let try_repair = |bytes: &[u8]| {
        if let Some(env) = Envelope::parse(bytes)
            && let Some(private) = full_size_scalar(env.private)
        {
            let _ = PrivateKey::from_bytes(&env.plain_document(&private));
        }
    };
    for len in 0..doc.len() {
        try_repair(&doc[..len]);
    }
    for i in 0..doc.len() {
        for x in [0x01, 0x80, 0xff] {
            let mut bytes = doc.to_vec();
            bytes[i] ^= x;
            try_repair(&bytes);
        }
    }
}
