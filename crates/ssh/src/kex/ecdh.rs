//! The ephemeral Diffie-Hellman / KEM math of curve25519-sha256 (RFC 8731),
//! mlkem768x25519-sha256 (OpenSSH; draft-ietf-sshm-mlkem-hybrid-kex) and
//! sntrup761x25519-sha512 (OpenSSH's default from 9.0 to 9.8; draft-josefsson-ntruprime-ssh).
//! X25519 is ring's (constant-time, rejects the all-zero output of small-order points);
//! ML-KEM-768 is the `ml-kem` crate's, whose encapsulation-key check runs the FIPS 203
//! modulus test; Streamlined NTRU Prime 761 is the `sntrup761` crate's. Both hybrids send
//! the KEM's key or ciphertext followed by the X25519 key, and hash K as a string of
//! HASH(KEM secret || X25519 output), the method's own hash (SHA-256 or SHA-512).

use crate::error::{Error, Result};
use crate::wire::Put;
use ml_kem::{Decapsulate, Encapsulate, Kem, KeyExport, MlKem768};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

const X25519_LEN: usize = 32;
const MLKEM768_EK_LEN: usize = 1184;
const MLKEM768_CT_LEN: usize = 1088;
const SNTRUP761_PK_LEN: usize = sntrup761::PUBLIC_KEY_SIZE;
const SNTRUP761_CT_LEN: usize = sntrup761::CIPHERTEXT_SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Curve25519,
    MlKem768X25519,
    Sntrup761X25519,
}

impl Method {
    fn from_name(alg: &str) -> Result<Method> {
        match alg {
            "curve25519-sha256" | "curve25519-sha256@libssh.org" => Ok(Method::Curve25519),
            "mlkem768x25519-sha256" => Ok(Method::MlKem768X25519),
            "sntrup761x25519-sha512" | "sntrup761x25519-sha512@openssh.com" => {
                Ok(Method::Sntrup761X25519)
            }
            _ => Err(Error::Protocol(format!(
                "key exchange method {alg} not implemented"
            ))),
        }
    }
}

fn rng_error() -> Error {
    Error::Key("system random number generator failed".into())
}

fn x25519_keypair() -> Result<(EphemeralPrivateKey, Vec<u8>)> {
    let rng = ring::rand::SystemRandom::new();
    let sk = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| rng_error())?;
    let pk = sk.compute_public_key().map_err(|_| rng_error())?;
    Ok((sk, pk.as_ref().to_vec()))
}

/// Raw X25519 output. An all-zero result (the peer sent a small-order point) is refused:
/// it would make K known to anyone watching (RFC 7748 §6.1, RFC 8731 §3).
fn x25519_agree(sk: EphemeralPrivateKey, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if peer.len() != X25519_LEN {
        return Err(Error::Malformed("X25519 public key"));
    }
    let shared = agreement::agree_ephemeral(sk, &UnparsedPublicKey::new(&X25519, peer), |k| {
        Zeroizing::new(k.to_vec())
    })
    .map_err(|_| Error::Key("X25519 shared secret is zero (small-order point)".into()))?;
    if shared.iter().all(|&b| b == 0) {
        return Err(Error::Key("X25519 shared secret is zero".into()));
    }
    Ok(shared)
}

/// curve25519-sha256 hashes K as an mpint of the X25519 output read big-endian (RFC 8731 §3).
pub(super) fn curve25519_k(raw: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(raw.len() + 5);
    k.put_mpint_unsigned(raw);
    k
}

/// mlkem768x25519-sha256 hashes K as a string holding SHA-256(ML-KEM secret || X25519 output).
pub(super) fn hybrid_k(mlkem_ss: &[u8], x25519_ss: &[u8]) -> Vec<u8> {
    string_of(
        &Sha256::new()
            .chain_update(mlkem_ss)
            .chain_update(x25519_ss)
            .finalize(),
    )
}

/// sntrup761x25519-sha512 hashes K as a string holding SHA-512(sntrup761 secret || X25519
/// output), like the ML-KEM hybrid with its own hash (OpenSSH's kexsntrup761x25519.c).
pub(super) fn sntrup_k(kem_ss: &[u8], x25519_ss: &[u8]) -> Vec<u8> {
    string_of(
        &Sha512::new()
            .chain_update(kem_ss)
            .chain_update(x25519_ss)
            .finalize(),
    )
}

fn string_of(digest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + digest.len());
    k.put_string(digest);
    k
}

enum ClientState {
    Curve25519 {
        sk: EphemeralPrivateKey,
    },
    MlKem768X25519 {
        dk: Box<ml_kem::ml_kem_768::DecapsulationKey>,
        sk: EphemeralPrivateKey,
    },
    Sntrup761X25519 {
        /// Zeroed on drop by the crate.
        dk: Box<sntrup761::DecapsulationKey>,
        sk: EphemeralPrivateKey,
    },
}

/// Ephemeral client side of curve25519-sha256 / mlkem768x25519-sha256. Consumed by
/// [`ClientKex::finish`] so the secrets are used for exactly one exchange.
pub struct ClientKex {
    state: ClientState,
    init: Vec<u8>,
}

impl std::fmt::Debug for ClientKex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alg = match self.state {
            ClientState::Curve25519 { .. } => "curve25519-sha256",
            ClientState::MlKem768X25519 { .. } => "mlkem768x25519-sha256",
            ClientState::Sntrup761X25519 { .. } => "sntrup761x25519-sha512",
        };
        f.debug_struct("ClientKex").field("alg", &alg).finish()
    }
}

impl ClientKex {
    /// Fresh ephemeral keys for `alg`; an unknown name is an error.
    pub fn new(alg: &str) -> Result<ClientKex> {
        let (sk, x_pub) = x25519_keypair()?;
        Ok(match Method::from_name(alg)? {
            Method::Curve25519 => ClientKex {
                state: ClientState::Curve25519 { sk },
                init: x_pub,
            },
            Method::MlKem768X25519 => {
                let (dk, ek) = MlKem768::generate_keypair_from_rng(&mut rand::rng());
                let mut init = Vec::with_capacity(MLKEM768_EK_LEN + X25519_LEN);
                init.extend_from_slice(&ek.to_bytes());
                init.extend_from_slice(&x_pub);
                ClientKex {
                    state: ClientState::MlKem768X25519 {
                        dk: Box::new(dk),
                        sk,
                    },
                    init,
                }
            }
            Method::Sntrup761X25519 => {
                let (ek, dk) = sntrup761::generate_key(rand::rng());
                let mut init = Vec::with_capacity(SNTRUP761_PK_LEN + X25519_LEN);
                init.extend_from_slice(ek.as_ref());
                init.extend_from_slice(&x_pub);
                ClientKex {
                    state: ClientState::Sntrup761X25519 {
                        dk: Box::new(dk),
                        sk,
                    },
                    init,
                }
            }
        })
    }

    /// Q_C as sent in KEX_ECDH_INIT (x25519: 32 bytes; hybrids: ML-KEM ek 1184 or sntrup761
    /// public key 1158, then x25519 32).
    pub fn init_payload(&self) -> &[u8] {
        &self.init
    }

    /// From the server's Q_S (hybrids: ML-KEM ciphertext 1088 or sntrup761 ciphertext 1039,
    /// then x25519 32): the shared secret K already encoded as it is hashed (curve25519:
    /// mpint of the X25519 output; hybrids: string of HASH(kem_ss || x25519_ss)). Wrong
    /// lengths and an all-zero X25519 output are errors.
    pub fn finish(self, server_reply: &[u8]) -> Result<Vec<u8>> {
        match self.state {
            ClientState::Curve25519 { sk } => {
                if server_reply.len() != X25519_LEN {
                    return Err(Error::Malformed("curve25519 server public key"));
                }
                let x = x25519_agree(sk, server_reply)?;
                Ok(curve25519_k(&x))
            }
            ClientState::MlKem768X25519 { dk, sk } => {
                if server_reply.len() != MLKEM768_CT_LEN + X25519_LEN {
                    return Err(Error::Malformed("mlkem768x25519 server reply"));
                }
                let (ct, x_pub) = server_reply.split_at(MLKEM768_CT_LEN);
                let x = x25519_agree(sk, x_pub)?;
                // Decapsulation never fails on a well-sized ciphertext: a forged one yields an
                // unrelated secret (implicit rejection) and the host key signature fails later.
                let ss = dk
                    .decapsulate_slice(ct)
                    .map_err(|_| Error::Malformed("mlkem768 ciphertext"))?;
                Ok(hybrid_k(&ss, &x))
            }
            ClientState::Sntrup761X25519 { dk, sk } => {
                if server_reply.len() != SNTRUP761_CT_LEN + X25519_LEN {
                    return Err(Error::Malformed("sntrup761x25519 server reply"));
                }
                let (ct, x_pub) = server_reply.split_at(SNTRUP761_CT_LEN);
                let x = x25519_agree(sk, x_pub)?;
                let ct = sntrup761::Ciphertext::try_from(ct)
                    .map_err(|_| Error::Malformed("sntrup761 ciphertext"))?;
                // Implicit rejection, as with ML-KEM: a forged ciphertext gives an unrelated
                // secret, and the host key signature over H fails.
                let ss = dk.decapsulate(&ct);
                Ok(sntrup_k(ss.as_ref(), &x))
            }
        }
    }
}

/// Server side: from the client's Q_C returns (Q_S, encoded K).
pub fn server_kex(alg: &str, client_init: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    match Method::from_name(alg)? {
        Method::Curve25519 => {
            if client_init.len() != X25519_LEN {
                return Err(Error::Malformed("curve25519 client public key"));
            }
            let (sk, q_s) = x25519_keypair()?;
            let x = x25519_agree(sk, client_init)?;
            Ok((q_s, curve25519_k(&x)))
        }
        Method::MlKem768X25519 => {
            if client_init.len() != MLKEM768_EK_LEN + X25519_LEN {
                return Err(Error::Malformed("mlkem768x25519 client init"));
            }
            let (ek_bytes, x_pub) = client_init.split_at(MLKEM768_EK_LEN);
            let ek_bytes = ek_bytes
                .try_into()
                .map_err(|_| Error::Malformed("mlkem768 encapsulation key"))?;
            let ek = ml_kem::ml_kem_768::EncapsulationKey::new(ek_bytes)
                .map_err(|_| Error::Key("invalid ML-KEM-768 encapsulation key".into()))?;
            let (sk, x_q_s) = x25519_keypair()?;
            let x = x25519_agree(sk, x_pub)?;
            let (ct, ss) = ek.encapsulate_with_rng(&mut rand::rng());
            let mut q_s = Vec::with_capacity(MLKEM768_CT_LEN + X25519_LEN);
            q_s.extend_from_slice(&ct);
            q_s.extend_from_slice(&x_q_s);
            Ok((q_s, hybrid_k(&ss, &x)))
        }
        Method::Sntrup761X25519 => {
            if client_init.len() != SNTRUP761_PK_LEN + X25519_LEN {
                return Err(Error::Malformed("sntrup761x25519 client init"));
            }
            let (ek, x_pub) = client_init.split_at(SNTRUP761_PK_LEN);
            let ek = sntrup761::EncapsulationKey::try_from(ek)
                .map_err(|_| Error::Malformed("sntrup761 public key"))?;
            let (sk, x_q_s) = x25519_keypair()?;
            let x = x25519_agree(sk, x_pub)?;
            let (ct, ss) = ek.encapsulate(rand::rng());
            let mut q_s = Vec::with_capacity(SNTRUP761_CT_LEN + X25519_LEN);
            q_s.extend_from_slice(ct.as_ref());
            q_s.extend_from_slice(&x_q_s);
            Ok((q_s, sntrup_k(ss.as_ref(), &x)))
        }
    }
}
