use super::ecdh::{curve25519_k, hybrid_k};
use super::*;
use ml_kem::{Decapsulate, Encapsulate, Kem, KeyExport, MlKem768};

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr32(s: &str) -> [u8; 32] {
    hex(s).try_into().unwrap()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// SHA-256 from ring, so the known answers below are not computed by the code under test.
fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    ring_digest(&ring::digest::SHA256, parts)
}

/// SHA-512 from ring, likewise.
fn sha512(parts: &[&[u8]]) -> Vec<u8> {
    ring_digest(&ring::digest::SHA512, parts)
}

fn ring_digest(alg: &'static ring::digest::Algorithm, parts: &[&[u8]]) -> Vec<u8> {
    let mut c = ring::digest::Context::new(alg);
    for p in parts {
        c.update(p);
    }
    c.finish().as_ref().to_vec()
}

fn ssh_string(v: &[u8]) -> Vec<u8> {
    let mut o = (v.len() as u32).to_be_bytes().to_vec();
    o.extend_from_slice(v);
    o
}

/// A slow, variable-time X25519 written from RFC 7748 §5 for the tests only: ring does not
/// take a fixed scalar, so the RFC vectors are checked against this and this is then used as
/// the far end of exchanges with the real code.
mod x25519_ref {
    type Fe = [u64; 5];
    const MASK: u64 = (1 << 51) - 1;
    const ZERO: Fe = [0; 5];
    const ONE: Fe = [1, 0, 0, 0, 0];
    const A24: Fe = [121665, 0, 0, 0, 0];

    fn weak(mut t: Fe) -> Fe {
        for _ in 0..2 {
            for i in 0..4 {
                t[i + 1] += t[i] >> 51;
                t[i] &= MASK;
            }
            t[0] += 19 * (t[4] >> 51);
            t[4] &= MASK;
        }
        t
    }

    fn add(a: Fe, b: Fe) -> Fe {
        weak(std::array::from_fn(|i| a[i] + b[i]))
    }

    fn sub(a: Fe, b: Fe) -> Fe {
        // a + 4p - b keeps every limb positive for weakly reduced b.
        let four_p: Fe = [4 * (MASK - 18), 4 * MASK, 4 * MASK, 4 * MASK, 4 * MASK];
        weak(std::array::from_fn(|i| a[i] + four_p[i] - b[i]))
    }

    fn mul(a: Fe, b: Fe) -> Fe {
        let mut r = [0u128; 5];
        for i in 0..5 {
            for j in 0..5 {
                let p = a[i] as u128 * b[j] as u128;
                if i + j < 5 {
                    r[i + j] += p;
                } else {
                    r[i + j - 5] += 19 * p;
                }
            }
        }
        for i in 0..4 {
            r[i + 1] += r[i] >> 51;
            r[i] &= MASK as u128;
        }
        r[0] += 19 * (r[4] >> 51);
        r[4] &= MASK as u128;
        weak(std::array::from_fn(|i| r[i] as u64))
    }

    fn inv(a: Fe) -> Fe {
        // a^(p-2), p - 2 = 2^255 - 21.
        let mut e = [0xffu8; 32];
        e[0] = 0xeb;
        e[31] = 0x7f;
        let mut r = ONE;
        for i in (0..255).rev() {
            r = mul(r, r);
            if (e[i / 8] >> (i % 8)) & 1 == 1 {
                r = mul(r, a);
            }
        }
        r
    }

    fn from_bytes(b: &[u8; 32]) -> Fe {
        let mut b = *b;
        b[31] &= 0x7f;
        let n: [u64; 4] =
            std::array::from_fn(|i| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap()));
        [
            n[0] & MASK,
            ((n[0] >> 51) | (n[1] << 13)) & MASK,
            ((n[1] >> 38) | (n[2] << 26)) & MASK,
            ((n[2] >> 25) | (n[3] << 39)) & MASK,
            (n[3] >> 12) & MASK,
        ]
    }

    fn to_bytes(a: Fe) -> [u8; 32] {
        let mut t = weak(a);
        let mut q = (t[0] + 19) >> 51;
        for limb in &t[1..] {
            q = (limb + q) >> 51;
        }
        t[0] += 19 * q;
        for i in 0..4 {
            t[i + 1] += t[i] >> 51;
            t[i] &= MASK;
        }
        t[4] &= MASK;
        let n = [
            t[0] | (t[1] << 51),
            (t[1] >> 13) | (t[2] << 38),
            (t[2] >> 26) | (t[3] << 25),
            (t[3] >> 39) | (t[4] << 12),
        ];
        let mut out = [0u8; 32];
        for i in 0..4 {
            out[8 * i..8 * i + 8].copy_from_slice(&n[i].to_le_bytes());
        }
        out
    }

    pub fn x25519(k: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
        let mut k = *k;
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        let x1 = from_bytes(u);
        let (mut x2, mut z2, mut x3, mut z3) = (ONE, ZERO, x1, ONE);
        let mut swap = 0;
        for t in (0..255).rev() {
            let kt = (k[t / 8] >> (t % 8)) & 1;
            if swap ^ kt == 1 {
                std::mem::swap(&mut x2, &mut x3);
                std::mem::swap(&mut z2, &mut z3);
            }
            swap = kt;
            let a = add(x2, z2);
            let aa = mul(a, a);
            let b = sub(x2, z2);
            let bb = mul(b, b);
            let e = sub(aa, bb);
            let c = add(x3, z3);
            let d = sub(x3, z3);
            let da = mul(d, a);
            let cb = mul(c, b);
            let s = add(da, cb);
            x3 = mul(s, s);
            let m = sub(da, cb);
            z3 = mul(x1, mul(m, m));
            x2 = mul(aa, bb);
            z2 = mul(e, add(aa, mul(A24, e)));
        }
        if swap == 1 {
            std::mem::swap(&mut x2, &mut x3);
            std::mem::swap(&mut z2, &mut z3);
        }
        to_bytes(mul(x2, inv(z2)))
    }

    pub fn public(k: &[u8; 32]) -> [u8; 32] {
        let mut nine = [0u8; 32];
        nine[0] = 9;
        x25519(k, &nine)
    }
}

// RFC 7748 §6.1.
const ALICE_PRIV: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const ALICE_PUB: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const BOB_PRIV: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const BOB_PUB: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

#[test]
fn reference_x25519_matches_rfc7748() {
    use x25519_ref::{public, x25519};
    // §5.2
    assert_eq!(
        x25519(
            &arr32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
            &arr32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
        ),
        arr32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    );
    assert_eq!(
        x25519(
            &arr32("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
            &arr32("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")
        ),
        arr32("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")
    );
    // §5.2 iterated, 1 and 1000 rounds.
    let (mut k, mut u) = ([0u8; 32], [0u8; 32]);
    k[0] = 9;
    u[0] = 9;
    for i in 1..=1000 {
        let r = x25519(&k, &u);
        u = k;
        k = r;
        if i == 1 {
            assert_eq!(
                k,
                arr32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
            );
        }
    }
    assert_eq!(
        k,
        arr32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    );
    // §6.1
    assert_eq!(public(&arr32(ALICE_PRIV)), arr32(ALICE_PUB));
    assert_eq!(public(&arr32(BOB_PRIV)), arr32(BOB_PUB));
    assert_eq!(x25519(&arr32(ALICE_PRIV), &arr32(BOB_PUB)), arr32(SHARED));
    assert_eq!(x25519(&arr32(BOB_PRIV), &arr32(ALICE_PUB)), arr32(SHARED));
}

#[test]
fn curve25519_k_is_an_mpint_of_the_x25519_output() {
    // RFC 7748 §6.1 secret: top bit clear, so no pad byte.
    let mut want = vec![0, 0, 0, 32];
    want.extend_from_slice(&hex(SHARED));
    assert_eq!(curve25519_k(&hex(SHARED)), want);
    // Top bit set: a 0x00 is prepended; leading zeros: stripped.
    let mut high = [0x11u8; 32];
    high[0] = 0x80;
    let k = curve25519_k(&high);
    assert_eq!(&k[..5], &[0, 0, 0, 33, 0]);
    let mut low = [0x22u8; 32];
    low[0] = 0;
    low[1] = 0;
    assert_eq!(&curve25519_k(&low)[..5], &[0, 0, 0, 30, 0x22]);
}

#[test]
fn hybrid_k_known_answer() {
    // Computed with Python hashlib: string(SHA256(bytes(range(32)) || RFC 7748 shared)).
    let ml: Vec<u8> = (0..32).collect();
    assert_eq!(
        hybrid_k(&ml, &hex(SHARED)),
        hex("000000202f3032e0e0944759a516fd8c31953e089addd524450255d1560fb48c486900f6")
    );
}

#[test]
fn curve25519_server_against_rfc7748_client() {
    for alg in ["curve25519-sha256", "curve25519-sha256@libssh.org"] {
        // The client is Alice with her RFC key; the real server code answers.
        let (q_s, k) = server_kex(alg, &hex(ALICE_PUB)).unwrap();
        assert_eq!(q_s.len(), 32);
        let want = x25519_ref::x25519(&arr32(ALICE_PRIV), &q_s.clone().try_into().unwrap());
        assert_eq!(k, curve25519_k(&want));
    }
}

#[test]
fn curve25519_client_against_rfc7748_server() {
    let c = ClientKex::new("curve25519-sha256").unwrap();
    let q_c: [u8; 32] = c.init_payload().try_into().unwrap();
    // The server is Bob with his RFC key.
    let want = x25519_ref::x25519(&arr32(BOB_PRIV), &q_c);
    assert_eq!(c.finish(&hex(BOB_PUB)).unwrap(), curve25519_k(&want));
}

#[test]
fn hybrid_client_against_independent_server() {
    let c = ClientKex::new("mlkem768x25519-sha256").unwrap();
    let q_c = c.init_payload().to_vec();
    assert_eq!(q_c.len(), 1184 + 32);
    // Server side built here from the primitives: ek || x25519, reply ct || x25519.
    let ek = ml_kem::ml_kem_768::EncapsulationKey::new(q_c[..1184].try_into().unwrap()).unwrap();
    let (ct, ss) = ek.encapsulate_with_rng(&mut rand::rng());
    let x = x25519_ref::x25519(&arr32(BOB_PRIV), &q_c[1184..].try_into().unwrap());
    let mut reply = ct.to_vec();
    reply.extend_from_slice(&hex(BOB_PUB));
    let mut want = vec![0, 0, 0, 32];
    want.extend_from_slice(&sha256(&[&ss, &x]));
    assert_eq!(c.finish(&reply).unwrap(), want);
}

#[test]
fn hybrid_server_against_independent_client() {
    let (dk, ek) = MlKem768::generate_keypair_from_rng(&mut rand::rng());
    let mut q_c = ek.to_bytes().to_vec();
    q_c.extend_from_slice(&hex(ALICE_PUB));
    let (q_s, k) = server_kex("mlkem768x25519-sha256", &q_c).unwrap();
    assert_eq!(q_s.len(), 1088 + 32);
    let ss = dk.decapsulate_slice(&q_s[..1088]).unwrap();
    let x = x25519_ref::x25519(&arr32(ALICE_PRIV), &q_s[1088..].try_into().unwrap());
    let mut want = vec![0, 0, 0, 32];
    want.extend_from_slice(&sha256(&[&ss, &x]));
    assert_eq!(k, want);
}

/// sntrup761x25519-sha512 against a server built here from the primitives (the sntrup761
/// crate's encapsulation and the RFC X25519): Q_C = sntrup761 pk 1158 || x25519 32, Q_S =
/// ciphertext 1039 || x25519 32, K = string(SHA-512(kem secret || x25519 secret)).
#[test]
fn sntrup_client_against_independent_server() {
    for alg in [
        "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com",
    ] {
        let c = ClientKex::new(alg).unwrap();
        let q_c = c.init_payload().to_vec();
        assert_eq!(q_c.len(), 1158 + 32);
        let ek = sntrup761::EncapsulationKey::try_from(&q_c[..1158]).unwrap();
        let (ct, ss) = ek.encapsulate(rand::rng());
        let x = x25519_ref::x25519(&arr32(BOB_PRIV), &q_c[1158..].try_into().unwrap());
        let mut reply = ct.as_ref().to_vec();
        reply.extend_from_slice(&hex(BOB_PUB));
        assert_eq!(
            c.finish(&reply).unwrap(),
            ssh_string(&sha512(&[ss.as_ref(), &x]))
        );
    }
}

#[test]
fn sntrup_server_against_independent_client() {
    let (ek, dk) = sntrup761::generate_key(rand::rng());
    let mut q_c = ek.as_ref().to_vec();
    q_c.extend_from_slice(&hex(ALICE_PUB));
    let (q_s, k) = server_kex("sntrup761x25519-sha512@openssh.com", &q_c).unwrap();
    assert_eq!(q_s.len(), 1039 + 32);
    let ct = sntrup761::Ciphertext::try_from(&q_s[..1039]).unwrap();
    let ss = dk.decapsulate(&ct);
    let x = x25519_ref::x25519(&arr32(ALICE_PRIV), &q_s[1039..].try_into().unwrap());
    assert_eq!(k, ssh_string(&sha512(&[ss.as_ref(), &x])));
}

/// Hostile or broken sntrup761 halves: wrong lengths are errors, a zero X25519 half is
/// refused, a public key of arbitrary bytes does not panic, and a tampered ciphertext only
/// yields a different secret (implicit rejection; the host key signature then fails).
#[test]
fn sntrup_refuses_bad_sizes_and_zero_points_and_survives_garbage() {
    let alg = "sntrup761x25519-sha512";
    for n in [0, 32, 1158, 1189, 1191, 1216] {
        assert!(server_kex(alg, &vec![9; n]).is_err(), "{n}");
    }
    for n in [0, 32, 1039, 1070, 1072, 1120] {
        let c = ClientKex::new(alg).unwrap();
        assert!(c.finish(&vec![9; n]).is_err(), "{n}");
    }
    let c = ClientKex::new(alg).unwrap();
    let mut q_c = c.init_payload()[..1158].to_vec();
    q_c.extend_from_slice(&[0; 32]);
    assert!(server_kex(alg, &q_c).is_err(), "zero X25519 half");
    for fill in [0x00u8, 0xff, 0x5a] {
        let mut junk = vec![fill; 1158];
        junk.extend_from_slice(&hex(ALICE_PUB));
        let _ = server_kex(alg, &junk);
    }
    let (mut q_s, k_server) = server_kex(alg, c.init_payload()).unwrap();
    q_s[100] ^= 1;
    assert_ne!(c.finish(&q_s).unwrap(), k_server);
}

/// The sha512 methods hash H and derive keys with SHA-512 (RFC 4253 §7.2 with HASH =
/// SHA-512), the others with SHA-256.
#[test]
fn sha512_methods_hash_and_derive_with_sha512() {
    let k = ssh_string(&[7; 64]);
    let h = [3u8; 64];
    let sid = [4u8; 64];
    for (alg, digest) in [
        (
            "sntrup761x25519-sha512@openssh.com",
            sha512 as fn(&[&[u8]]) -> Vec<u8>,
        ),
        ("sntrup761x25519-sha512", sha512),
        ("mlkem768x25519-sha256", sha256),
        ("curve25519-sha256@libssh.org", sha256),
    ] {
        // K1 = HASH(K || H || "C" || session_id), Kn = HASH(K || H || K1 || ... || Kn-1).
        let mut want = digest(&[&k, &h, b"C", &sid]);
        while want.len() < 80 {
            let next = digest(&[&k, &h, &want]);
            want.extend_from_slice(&next);
        }
        assert_eq!(derive_key(alg, &k, &h, b'C', &sid, 80), want[..80], "{alg}");
    }
}

#[test]
fn full_exchange_agrees_for_every_method() {
    for alg in KEX_ALGORITHMS {
        let c = ClientKex::new(alg).unwrap();
        let q_c = c.init_payload().to_vec();
        let (q_s, k_server) = server_kex(alg, &q_c).unwrap();
        let k_client = c.finish(&q_s).unwrap();
        assert_eq!(k_client, k_server, "{alg}");
        let h = |k: &[u8]| {
            exchange_hash(
                alg,
                b"SSH-2.0-a",
                b"SSH-2.0-b",
                b"\x14ic",
                b"\x14is",
                b"ks",
                &q_c,
                &q_s,
                k,
            )
        };
        assert_eq!(h(&k_client), h(&k_server));
        let hash_len = if alg.contains("-sha512") { 64 } else { 32 };
        assert_eq!(h(&k_client).len(), hash_len, "{alg}");
        // Two runs never share a secret.
        let c2 = ClientKex::new(alg).unwrap();
        let (q_s2, k2) = server_kex(alg, c2.init_payload()).unwrap();
        assert_ne!(k2, k_server);
        assert_eq!(c2.finish(&q_s2).unwrap(), k2);
    }
}

#[test]
fn small_order_x25519_points_are_refused() {
    let bad = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    for p in bad {
        assert!(server_kex("curve25519-sha256", &hex(p)).is_err(), "{p}");
        let c = ClientKex::new("curve25519-sha256").unwrap();
        assert!(c.finish(&hex(p)).is_err(), "{p}");
        // The hybrid must not accept a zero X25519 half either.
        let c = ClientKex::new("mlkem768x25519-sha256").unwrap();
        let mut q_c = c.init_payload()[..1184].to_vec();
        q_c.extend_from_slice(&hex(p));
        assert!(server_kex("mlkem768x25519-sha256", &q_c).is_err(), "{p}");
        let (q_s, _) = server_kex("mlkem768x25519-sha256", c.init_payload()).unwrap();
        let mut reply = q_s[..1088].to_vec();
        reply.extend_from_slice(&hex(p));
        assert!(c.finish(&reply).is_err(), "{p}");
    }
}

#[test]
fn wrong_lengths_and_unknown_methods_are_errors() {
    assert!(ClientKex::new("diffie-hellman-group14-sha1").is_err());
    assert!(ClientKex::new("ext-info-c").is_err());
    for n in [0, 31, 33, 1216] {
        assert!(server_kex("curve25519-sha256", &vec![9; n]).is_err(), "{n}");
        let c = ClientKex::new("curve25519-sha256").unwrap();
        assert!(c.finish(&vec![9; n]).is_err(), "{n}");
    }
    for n in [0, 32, 1184, 1215, 1217, 1120] {
        assert!(
            server_kex("mlkem768x25519-sha256", &vec![9; n]).is_err(),
            "{n}"
        );
    }
    for n in [0, 32, 1088, 1119, 1121, 1216] {
        let c = ClientKex::new("mlkem768x25519-sha256").unwrap();
        assert!(c.finish(&vec![9; n]).is_err(), "{n}");
    }
}

#[test]
fn invalid_mlkem_encapsulation_key_is_refused() {
    let c = ClientKex::new("mlkem768x25519-sha256").unwrap();
    let mut q_c = c.init_payload().to_vec();
    // First 12-bit coefficient = 0xfff >= q (3329): fails the FIPS 203 modulus check.
    q_c[0] = 0xff;
    q_c[1] |= 0x0f;
    assert!(server_kex("mlkem768x25519-sha256", &q_c).is_err());
}

#[test]
fn tampered_mlkem_ciphertext_gives_a_different_secret() {
    let c = ClientKex::new("mlkem768x25519-sha256").unwrap();
    let (mut q_s, k_server) = server_kex("mlkem768x25519-sha256", c.init_payload()).unwrap();
    q_s[100] ^= 1;
    // Implicit rejection: no error here, but the secrets differ, so the signature check fails.
    assert_ne!(c.finish(&q_s).unwrap(), k_server);
}

#[test]
fn exchange_hash_known_answer() {
    let k = curve25519_k(&hex(SHARED));
    let ic = [&[20u8][..], &[b'c'; 20]].concat();
    let is = [&[20u8][..], &[b's'; 30]].concat();
    let args = (
        &b"SSH-2.0-OpenSSH_9.9"[..],
        &b"SSH-2.0-warren"[..],
        &ic[..],
        &is[..],
        &b"hostkey-blob"[..],
        [0u8; 32],
        [7u8; 32],
    );
    let h = exchange_hash(
        "curve25519-sha256",
        args.0,
        args.1,
        args.2,
        args.3,
        args.4,
        &args.5,
        &args.6,
        &k,
    );
    // Python hashlib over the same fields.
    assert_eq!(
        h,
        hex("7823e8e43469ef98e112012b8e10b30d2b21c7cc001f70bc73f5c57ba4baf8a3")
    );
    // And by hand with ring's SHA-256.
    let parts: Vec<Vec<u8>> = [args.0, args.1, args.2, args.3, args.4, &args.5, &args.6]
        .iter()
        .map(|p| ssh_string(p))
        .collect();
    let mut refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
    refs.push(&k);
    assert_eq!(h, sha256(&refs));
    // Every input matters (moving a byte between adjacent fields changes the framing).
    let h2 = exchange_hash(
        "curve25519-sha256",
        b"SSH-2.0-OpenSSH_9.",
        b"9SSH-2.0-warren",
        args.2,
        args.3,
        args.4,
        &args.5,
        &args.6,
        &k,
    );
    assert_ne!(h, h2);
}

#[test]
fn derive_key_known_answer() {
    let k = curve25519_k(&hex(SHARED));
    let h: Vec<u8> = (1..=32).collect();
    let sid: Vec<u8> = (100..132).collect();
    // Python hashlib: K1 || K2 || K3 truncated to 80.
    let want = hex(concat!(
        "8e7916ad6be60943ae54e36d7c6346bfec991a53105ad40ff736db6d3b412689",
        "c484f264e7af0fd00b4429c365fc647465b6c996550144387bd170c1f6ef657e",
        "b041644e91e48148ccedaffea3a88582"
    ));
    assert_eq!(
        derive_key("curve25519-sha256", &k, &h, b'C', &sid, 80),
        want
    );
    assert_eq!(
        derive_key("curve25519-sha256", &k, &h, b'C', &sid, 64),
        want[..64]
    );
    assert_eq!(
        derive_key("curve25519-sha256", &k, &h, b'C', &sid, 16),
        want[..16]
    );
    // The same by hand with ring's SHA-256.
    let k1 = sha256(&[&k, &h, b"C", &sid]);
    let k2 = sha256(&[&k, &h, &k1]);
    let k3 = sha256(&[&k, &h, &k1, &k2]);
    assert_eq!([k1, k2, k3].concat()[..80], want[..]);
    assert_ne!(
        derive_key("curve25519-sha256", &k, &h, b'D', &sid, 32),
        want[..32]
    );
}

fn sample_kexinit() -> KexInit {
    KexInit {
        cookie: *b"0123456789abcdef",
        kex: names(&[
            "mlkem768x25519-sha256",
            "curve25519-sha256",
            "ext-info-c",
            KEX_STRICT_C,
        ]),
        host_key: names(&["ssh-ed25519", "rsa-sha2-512"]),
        cipher_c2s: names(&["chacha20-poly1305@openssh.com", "aes256-ctr"]),
        cipher_s2c: names(&["aes128-gcm@openssh.com"]),
        mac_c2s: names(&["hmac-sha2-256-etm@openssh.com"]),
        mac_s2c: vec![],
        comp_c2s: names(&["none", "zlib@openssh.com"]),
        comp_s2c: names(&["none"]),
        first_kex_follows: true,
    }
}

#[test]
fn kexinit_round_trips() {
    let k = sample_kexinit();
    let enc = k.encode();
    assert_eq!(enc[0], 20);
    assert_eq!(&enc[1..17], b"0123456789abcdef");
    // Two empty language lists, the guess flag, the reserved word.
    assert_eq!(
        &enc[enc.len() - 13..],
        &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    );
    assert_eq!(KexInit::decode(&enc).unwrap(), k);
    // Layout of the first list by hand.
    let first = "mlkem768x25519-sha256,curve25519-sha256,ext-info-c,kex-strict-c-v00@openssh.com";
    assert_eq!(&enc[17..21], (first.len() as u32).to_be_bytes());
    assert_eq!(&enc[21..21 + first.len()], first.as_bytes());
    // Trailing bytes after the reserved word are tolerated, as OpenSSH does.
    let mut longer = enc.clone();
    longer.push(0);
    assert_eq!(KexInit::decode(&longer).unwrap(), k);
}

#[test]
fn kexinit_decode_rejects_truncated_and_garbage() {
    let enc = sample_kexinit().encode();
    for n in 0..enc.len() {
        assert!(KexInit::decode(&enc[..n]).is_err(), "prefix {n}");
    }
    let mut wrong_type = enc.clone();
    wrong_type[0] = 21;
    assert!(KexInit::decode(&wrong_type).is_err());
    // A name-list length far beyond the payload.
    let mut huge = enc.clone();
    huge[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(KexInit::decode(&huge).is_err());
    // Empty names and non-printable bytes inside a list.
    for bad in [&b"a,,b"[..], b"a,", b",a", b"a b", b"a\x00", b"\xc3\xa9"] {
        let mut v = vec![20u8];
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(&ssh_string(bad));
        for _ in 0..9 {
            v.extend_from_slice(&[0, 0, 0, 0]);
        }
        v.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert!(KexInit::decode(&v).is_err(), "{bad:?}");
    }
    // Pseudo-random garbage never panics.
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let n = (x % 300) as usize;
        let v: Vec<u8> = (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let _ = KexInit::decode(&v);
    }
}

fn aead(c: &str) -> bool {
    c.contains("gcm") || c.starts_with("chacha20-poly1305")
}

fn pair() -> (KexInit, KexInit) {
    let client = KexInit {
        cookie: [1; 16],
        kex: names(&[
            "mlkem768x25519-sha256",
            "curve25519-sha256",
            EXT_INFO_C,
            KEX_STRICT_C,
        ]),
        host_key: names(&["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"]),
        cipher_c2s: names(&["aes256-ctr", "chacha20-poly1305@openssh.com"]),
        cipher_s2c: names(&["chacha20-poly1305@openssh.com", "aes256-ctr"]),
        mac_c2s: names(&["hmac-sha2-512", "hmac-sha2-256-etm@openssh.com"]),
        mac_s2c: names(&["hmac-sha2-256"]),
        comp_c2s: names(&["none", "zlib@openssh.com"]),
        comp_s2c: names(&["none"]),
        first_kex_follows: false,
    };
    let server = KexInit {
        cookie: [2; 16],
        kex: names(&[
            "curve25519-sha256",
            "mlkem768x25519-sha256",
            EXT_INFO_S,
            KEX_STRICT_S,
        ]),
        host_key: names(&["rsa-sha2-256", "rsa-sha2-512"]),
        cipher_c2s: names(&["chacha20-poly1305@openssh.com", "aes256-ctr"]),
        cipher_s2c: names(&["aes256-ctr", "chacha20-poly1305@openssh.com"]),
        mac_c2s: names(&["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512"]),
        mac_s2c: names(&["hmac-sha2-512"]),
        comp_c2s: names(&["zlib@openssh.com", "none"]),
        comp_s2c: names(&["none"]),
        first_kex_follows: false,
    };
    (client, server)
}

#[test]
fn negotiation_follows_client_preference() {
    let (c, s) = pair();
    let n = negotiate(Role::Client, &c, &s, aead).unwrap();
    assert_eq!(n.kex, "mlkem768x25519-sha256");
    assert_eq!(n.host_key, "rsa-sha2-512");
    assert_eq!(n.cipher_c2s, "aes256-ctr");
    assert_eq!(n.mac_c2s, "hmac-sha2-512");
    assert_eq!(n.cipher_s2c, "chacha20-poly1305@openssh.com");
    // AEAD: the MAC is irrelevant, even though the MAC lists have nothing in common.
    assert_eq!(n.mac_s2c, "");
    assert_eq!(n.comp_c2s, "none");
    assert_eq!(n.comp_s2c, "none");
    assert!(n.strict);
    assert!(n.peer_ext_info);
    assert!(!n.ignore_next_kex_packet);
    // The same inputs from the server's seat give the same algorithms.
    let m = negotiate(Role::Server, &c, &s, aead).unwrap();
    assert_eq!(
        (m.kex, m.cipher_c2s, m.mac_s2c),
        (n.kex, n.cipher_c2s, n.mac_s2c)
    );
}

#[test]
fn negotiation_without_common_algorithm_fails() {
    let (c, mut s) = pair();
    s.mac_c2s = names(&["hmac-sha1"]);
    let e = negotiate(Role::Server, &c, &s, aead).unwrap_err();
    match e {
        Error::NoCommonAlgorithm { what, ours, theirs } => {
            assert_eq!(what, "MAC client->server");
            assert_eq!(ours, "hmac-sha1");
            assert_eq!(theirs, "hmac-sha2-512,hmac-sha2-256-etm@openssh.com");
        }
        e => panic!("{e:?}"),
    }
    // With an AEAD c2s cipher the MAC slot no longer matters.
    let mut c2 = c.clone();
    c2.cipher_c2s = names(&["chacha20-poly1305@openssh.com"]);
    assert_eq!(negotiate(Role::Server, &c2, &s, aead).unwrap().mac_c2s, "");

    for slot in 0..8 {
        let (c, mut s) = pair();
        let l = match slot {
            0 => &mut s.kex,
            1 => &mut s.host_key,
            2 => &mut s.cipher_c2s,
            3 => &mut s.cipher_s2c,
            4 => &mut s.mac_c2s,
            5 => &mut s.mac_s2c,
            6 => &mut s.comp_c2s,
            _ => &mut s.comp_s2c,
        };
        *l = names(&["nothing-in-common"]);
        let r = negotiate(Role::Client, &c, &s, aead);
        // s2c is chacha (AEAD) so an empty MAC match there is fine.
        if slot == 5 {
            assert!(r.is_ok());
        } else {
            assert!(
                matches!(r, Err(Error::NoCommonAlgorithm { .. })),
                "slot {slot}"
            );
        }
    }
}

#[test]
fn pseudo_algorithms_are_never_chosen() {
    let (mut c, mut s) = pair();
    c.kex = names(&[EXT_INFO_C, KEX_STRICT_C, "ext-info-s", "curve25519-sha256"]);
    s.kex = names(&[EXT_INFO_C, "ext-info-s", KEX_STRICT_C, "curve25519-sha256"]);
    assert_eq!(
        negotiate(Role::Client, &c, &s, aead).unwrap().kex,
        "curve25519-sha256"
    );
    s.kex.pop();
    assert!(negotiate(Role::Client, &c, &s, aead).is_err());
}

#[test]
fn strict_and_ext_info_need_the_right_side() {
    let (c, s) = pair();
    // Only the client is strict.
    let mut s1 = s.clone();
    s1.kex.retain(|n| n != KEX_STRICT_S);
    assert!(!negotiate(Role::Client, &c, &s1, aead).unwrap().strict);
    // Markers on the wrong sides do not count.
    let mut c2 = c.clone();
    let mut s2 = s.clone();
    c2.kex = names(&["curve25519-sha256", KEX_STRICT_S, EXT_INFO_S]);
    s2.kex = names(&["curve25519-sha256", KEX_STRICT_C, EXT_INFO_C]);
    let n = negotiate(Role::Client, &c2, &s2, aead).unwrap();
    assert!(!n.strict);
    assert!(!n.peer_ext_info);
    assert!(
        !negotiate(Role::Server, &c2, &s2, aead)
            .unwrap()
            .peer_ext_info
    );
    // ext-info is about the peer: the server sees the client's ext-info-c, and a client
    // whose server sends no ext-info-s gets false even though it offered ext-info-c itself.
    assert!(
        negotiate(Role::Server, &c, &s1, aead)
            .unwrap()
            .peer_ext_info
    );
    let mut s3 = s.clone();
    s3.kex.retain(|n| n != EXT_INFO_S);
    assert!(
        !negotiate(Role::Client, &c, &s3, aead)
            .unwrap()
            .peer_ext_info
    );
    assert!(
        negotiate(Role::Server, &c, &s3, aead)
            .unwrap()
            .peer_ext_info
    );
}

#[test]
fn wrong_first_kex_guess_is_flagged() {
    let (mut c, s) = pair();
    // Client guessed mlkem, server prefers curve25519: the guess is wrong.
    c.first_kex_follows = true;
    assert!(
        negotiate(Role::Server, &c, &s, aead)
            .unwrap()
            .ignore_next_kex_packet
    );
    // Our own flag is not the peer's guess.
    assert!(
        !negotiate(Role::Client, &c, &s, aead)
            .unwrap()
            .ignore_next_kex_packet
    );
    // Same first kex and host key algorithm: the guess is right.
    let mut s2 = s.clone();
    s2.kex = names(&["mlkem768x25519-sha256", "curve25519-sha256"]);
    s2.host_key = names(&["ssh-ed25519"]);
    assert!(
        !negotiate(Role::Server, &c, &s2, aead)
            .unwrap()
            .ignore_next_kex_packet
    );
    // Right kex, wrong host key algorithm: wrong.
    s2.host_key = names(&["rsa-sha2-512", "ssh-ed25519"]);
    assert!(
        negotiate(Role::Server, &c, &s2, aead)
            .unwrap()
            .ignore_next_kex_packet
    );
}

#[test]
fn random_cookies_differ() {
    assert_ne!(random_cookie().unwrap(), random_cookie().unwrap());
}
