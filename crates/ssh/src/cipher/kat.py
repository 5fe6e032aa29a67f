#!/usr/bin/env python3
"""Independent known-answer packets for cipher/tests.rs, built from the specs with the
`cryptography` package (OpenSSL), not from our Rust code:

- chacha20-poly1305@openssh.com: OpenSSH PROTOCOL.chacha20poly1305
- aes*-gcm@openssh.com: RFC 5647 section 7 as OpenSSH implements it
- aes*-ctr + hmac-sha2-*: RFC 4344, RFC 6668, RFC 4253 section 6 (classic) and OpenSSH
  PROTOCOL section 1.5 (-etm@openssh.com)

Padding is all zero bytes and minimal, so the Rust side can reproduce the packets exactly
with a zero-padding sealer. Run: python3 kat.py
"""
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305


def frame(payload, block, length_excluded):
    counted = (1 if length_excluded else 5) + len(payload)
    pad = block - counted % block
    if pad < 4:
        pad += block
    return struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + b"\0" * pad


def chacha20(key, seq, counter, data):
    # DJB ChaCha20: 64-bit little-endian block counter, then the 64-bit nonce (seq, big endian).
    nonce = struct.pack("<Q", counter) + struct.pack(">Q", seq)
    enc = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    return enc.update(data) + enc.finalize()


def chacha_packet(key, seq, payload):
    k2, k1 = key[:32], key[32:]
    plain = frame(payload, 8, True)
    enc_len = chacha20(k1, seq, 0, plain[:4])
    poly_key = chacha20(k2, seq, 0, b"\0" * 32)
    body = chacha20(k2, seq, 1, plain[4:])
    tag = Poly1305.generate_tag(poly_key, enc_len + body)
    return enc_len + body + tag


def gcm_packets(key, iv, payloads):
    fixed, counter = iv[:4], int.from_bytes(iv[4:], "big")
    out = []
    for p in payloads:
        plain = frame(p, 16, True)
        nonce = fixed + (counter % 2**64).to_bytes(8, "big")
        ct = AESGCM(key).encrypt(nonce, plain[4:], plain[:4])
        out.append(plain[:4] + ct)
        counter += 1
    return out


def ctr_packets(key, iv, mac_key, digest, etm, first_seq, payloads):
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()  # one stream for the direction
    out = []
    for i, p in enumerate(payloads):
        seq = struct.pack(">I", (first_seq + i) % 2**32)
        plain = frame(p, 16, etm)
        if etm:
            wire = plain[:4] + enc.update(plain[4:])
            tag = hmac.new(mac_key, seq + wire, digest).digest()
        else:
            tag = hmac.new(mac_key, seq + plain, digest).digest()
            wire = enc.update(plain)
        out.append(wire + tag)
    return out


def key(n, start):
    return bytes((start + i) % 256 for i in range(n))


P1 = b"\x5e" + b"warren known-answer payload"
P2 = b"\x14" + bytes(range(40))

print("chacha seq=7 key=key(64,0x10):", chacha_packet(key(64, 0x10), 7, P1).hex())
print("chacha seq=0xfffffffe key=key(64,0x10):", chacha_packet(key(64, 0x10), 0xFFFFFFFE, P2).hex())
for n, name in ((16, "aes128"), (32, "aes256")):
    iv = bytes.fromhex("00112233fffffffffffffffe")
    for i, pk in enumerate(gcm_packets(key(n, 0x40), iv, [P1, P2, P1])):
        print(f"{name}-gcm packet {i} key=key({n},0x40):", pk.hex())
for (n, name, mac, dig, etm) in (
    (16, "aes128-ctr", "hmac-sha2-256", hashlib.sha256, False),
    (32, "aes256-ctr", "hmac-sha2-512-etm", hashlib.sha512, True),
    (24, "aes192-ctr", "hmac-sha2-256-etm", hashlib.sha256, True),
    (32, "aes256-ctr", "hmac-sha2-512", hashlib.sha512, False),
):
    ml = dig().digest_size
    iv = bytes.fromhex("000102030405060708090a0b0c0d0eff")  # counter carries across bytes
    for i, pk in enumerate(ctr_packets(key(n, 0x80), iv, key(ml, 0xc0), dig, etm, 0xFFFFFFFE, [P1, P2, P1])):
        print(f"{name} {mac} packet {i} seq={(0xFFFFFFFE + i) % 2**32:#x}:", pk.hex())
