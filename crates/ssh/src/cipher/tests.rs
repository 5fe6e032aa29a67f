//! Round trips, tampering, hostile lengths and known answers for every protection mode.
//! The known-answer packets come from `kat.py`, an independent construction from the specs.

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `n` bytes counting up from `start`, as kat.py's `key()`.
fn counting(n: usize, start: u8) -> Vec<u8> {
    (0..n).map(|i| start.wrapping_add(i as u8)).collect()
}

fn keys(cipher: &str, mac: &str) -> DirectionKeys {
    let (k, iv, m) = key_material_sizes(cipher, mac).unwrap();
    DirectionKeys {
        cipher: cipher.into(),
        mac: mac.into(),
        key: counting(k, 1),
        iv: counting(iv, 0x31),
        mac_key: counting(m, 0x77),
    }
}

/// Every (cipher, mac) we can negotiate, plus "none"; AEADs once (their MAC is ignored).
fn all_modes() -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("none", "none")];
    for c in CIPHERS {
        if is_aead(c) {
            v.push((c, ""));
        } else {
            for m in MACS {
                v.push((c, m));
            }
        }
    }
    v
}

fn pair(cipher: &str, mac: &str) -> (Box<dyn Sealer>, Box<dyn Opener>) {
    if cipher == "none" {
        return (plain_sealer(), plain_opener());
    }
    let k = keys(cipher, mac);
    (sealer(&k).unwrap(), opener(&k).unwrap())
}

fn fresh_opener(cipher: &str, mac: &str) -> Box<dyn Opener> {
    pair(cipher, mac).1
}

/// Reads packets back-to-back from `wire` the way the transport will: buffer the header,
/// ask the length, buffer the rest, open.
fn read_all(op: &mut dyn Opener, first_seq: u32, wire: &mut [u8]) -> Result<Vec<Vec<u8>>> {
    let mut seq = first_seq;
    let mut pos = 0;
    let mut payloads = Vec::new();
    while pos < wire.len() {
        let h = op.header_len();
        let header = wire
            .get_mut(pos..pos + h)
            .ok_or(Error::Malformed("short"))?;
        let len = op.packet_len(seq, header)?;
        // Asking again (a caller that re-polls) must not change anything.
        assert_eq!(op.packet_len(seq, &mut wire[pos..pos + h])?, len);
        let total = 4 + len + op.tag_len();
        let packet = wire
            .get_mut(pos..pos + total)
            .ok_or(Error::Malformed("short"))?;
        let range = op.open(seq, packet)?;
        payloads.push(packet[range].to_vec());
        pos += total;
        seq = seq.wrapping_add(1);
    }
    Ok(payloads)
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j * 7 + i * 13) as u8).collect()
}

/// Length, encrypted-region and padding invariants of RFC 4253 §6, checked on the plaintext
/// an opener recovered.
fn block_and_aad(cipher: &str, mac: &str) -> (usize, bool) {
    match cipher {
        "none" => (8, false),
        "chacha20-poly1305@openssh.com" => (8, true),
        c if is_aead(c) => (16, true),
        _ => (16, mac.ends_with("-etm@openssh.com")),
    }
}

#[test]
fn every_mode_round_trips_many_packets_across_the_sequence_wrap() {
    let sizes = [
        0usize, 1, 2, 3, 4, 7, 8, 11, 12, 15, 16, 17, 31, 32, 33, 255, 1000, 16_384, 32_768,
        39_999, 40_000,
    ];
    for (cipher, mac) in all_modes() {
        let (mut s, mut o) = pair(cipher, mac);
        let (block, excluded) = block_and_aad(cipher, mac);
        let first_seq = u32::MAX - 7;
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let p = payload(i, n);
            let before = wire.len();
            let seq = first_seq.wrapping_add(i as u32);
            if i % 2 == 0 {
                s.seal(seq, &p, &mut wire);
            } else {
                // The zero-copy path: payload written after 5 reserved bytes.
                wire.extend_from_slice(&[0; 5]);
                wire.extend_from_slice(&p);
                s.seal_in_place(seq, &mut wire, before);
            }
            let on_wire = wire.len() - before;
            assert!(on_wire <= n + s.max_overhead(), "{cipher} {mac}: overhead");
            let enc = on_wire - o.tag_len() - if excluded { 4 } else { 0 };
            assert_eq!(enc % block, 0, "{cipher} {mac}: block multiple");
            sent.push(p);
        }
        let got = read_all(o.as_mut(), first_seq, &mut wire).unwrap();
        assert_eq!(got.len(), sent.len(), "{cipher} {mac}");
        for (i, (g, p)) in got.iter().zip(&sent).enumerate() {
            assert_eq!(g, p, "{cipher} {mac} packet {i}");
        }
    }
}

#[test]
fn padding_is_at_least_four_bytes_and_random() {
    for (cipher, mac) in all_modes() {
        let (mut s, mut o) = pair(cipher, mac);
        let mut wire = Vec::new();
        for n in 0..64 {
            s.seal(n as u32, &payload(n, n), &mut wire);
        }
        let (mut pos, mut zero_pads) = (0, 0);
        for seq in 0..64u32 {
            let h = o.header_len();
            let len = o.packet_len(seq, &mut wire[pos..pos + h]).unwrap();
            let total = 4 + len + o.tag_len();
            let packet = &mut wire[pos..pos + total];
            let r = o.open(seq, packet).unwrap();
            assert_eq!(r.len(), seq as usize);
            let padding = &packet[r.end..4 + len];
            assert!(padding.len() >= 4 && padding.len() == packet[4] as usize);
            let (block, _) = block_and_aad(cipher, mac);
            assert!(
                padding.len() < 4 + block,
                "{cipher}: padding longer than needed"
            );
            if padding.iter().all(|&b| b == 0) {
                zero_pads += 1;
            }
            pos += total;
        }
        assert!(zero_pads < 2, "{cipher} {mac}: padding should be random");
    }
}

#[test]
fn seal_in_place_leaves_earlier_output_alone() {
    for (cipher, mac) in all_modes() {
        let (mut s, mut o) = pair(cipher, mac);
        let mut out = b"earlier packets".to_vec();
        let start = out.len();
        out.extend_from_slice(&[0; 5]);
        out.extend_from_slice(b"channel data");
        s.seal_in_place(9, &mut out, start);
        assert_eq!(&out[..start], b"earlier packets");
        let got = read_all(o.as_mut(), 9, &mut out[start..]).unwrap();
        assert_eq!(got, [b"channel data".to_vec()], "{cipher} {mac}");
    }
}

#[test]
fn any_flipped_bit_is_detected() {
    for (cipher, mac) in all_modes() {
        if cipher == "none" {
            continue;
        }
        let (mut s, _) = pair(cipher, mac);
        let mut wire = Vec::new();
        s.seal(5, &payload(1, 45), &mut wire);
        assert_eq!(
            read_all(fresh_opener(cipher, mac).as_mut(), 5, &mut wire.clone())
                .unwrap()
                .len(),
            1
        );
        for i in 0..wire.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = wire.clone();
                bad[i] ^= bit;
                let r = read_all(fresh_opener(cipher, mac).as_mut(), 5, &mut bad);
                assert!(r.is_err(), "{cipher} {mac}: flip at byte {i} accepted");
            }
        }
        // The right packet under the wrong sequence number is refused too (GCM's nonce is
        // its own invocation counter, covered by the known answers instead).
        assert!(
            is_aead(cipher) && cipher != "chacha20-poly1305@openssh.com"
                || matches!(
                    read_all(fresh_opener(cipher, mac).as_mut(), 6, &mut wire.clone()),
                    Err(Error::Mac | Error::Malformed(_))
                )
        );
        // So is a truncated or overlong packet handed to open.
        let mut o = fresh_opener(cipher, mac);
        let h = o.header_len();
        o.packet_len(5, &mut wire[..h]).unwrap();
        let mut short = wire[..wire.len() - 1].to_vec();
        assert!(o.open(5, &mut short).is_err());
    }
}

#[test]
fn hostile_lengths_are_refused_before_buffering() {
    for (cipher, mac) in all_modes() {
        let (mut s, o) = pair(cipher, mac);
        let mut wire = Vec::new();
        s.seal(3, &payload(0, 20), &mut wire);
        let real = (wire.len() - 4 - o.tag_len()) as u32;
        for hostile in [
            0u32,
            1,
            4,
            real + 1,
            real + 8,
            (MAX_PACKET_LEN + 16) as u32,
            0x7fff_fff0,
            u32::MAX,
        ] {
            let mut bad = wire.clone();
            // The length is either in clear or XOR-encrypted (CTR, ChaCha20): XOR-ing the
            // difference sets the plaintext length the opener will see.
            for (b, d) in bad[..4].iter_mut().zip((real ^ hostile).to_be_bytes()) {
                *b ^= d;
            }
            let mut o = fresh_opener(cipher, mac);
            let h = o.header_len();
            let r = o.packet_len(3, &mut bad[..h]);
            if block_and_aad(cipher, mac).0 == 8 && hostile == real + 8 {
                // A plausible length for 8-byte blocks: only `open` can tell (or, for
                // "none", the missing bytes).
                assert_eq!(r.unwrap(), real as usize + 8);
                continue;
            }
            assert!(
                matches!(r, Err(Error::Malformed(_))),
                "{cipher} {mac}: length {hostile:#x} accepted"
            );
        }
        // A header shorter than header_len is an error, not a panic.
        let mut o = fresh_opener(cipher, mac);
        let h = o.header_len();
        assert!(o.packet_len(3, &mut wire[..h - 1]).is_err());
        assert!(o.open(3, &mut wire[..3]).is_err());
    }
}

#[test]
fn bad_padding_length_is_refused() {
    // With "none" the padding length can be set freely: below 4, and beyond the packet.
    for pad in [0u8, 3, 12, 255] {
        let mut s = plain_sealer();
        let mut wire = Vec::new();
        s.seal(0, b"abcdef", &mut wire);
        wire[4] = pad;
        let mut o = plain_opener();
        let len = o.packet_len(0, &mut wire[..4]).unwrap();
        assert_eq!(len, 12);
        assert!(
            matches!(o.open(0, &mut wire), Err(Error::Malformed(_))),
            "pad {pad}"
        );
    }
}

#[test]
fn names_and_sizes() {
    assert_eq!(CIPHERS[0], "chacha20-poly1305@openssh.com");
    assert_eq!(MACS[0], "hmac-sha2-256-etm@openssh.com");
    for c in CIPHERS {
        for m in MACS {
            assert!(key_material_sizes(c, m).is_some(), "{c} {m}");
        }
    }
    assert!(is_aead("aes128-gcm@openssh.com") && !is_aead("aes128-ctr"));
    assert_eq!(
        key_material_sizes("chacha20-poly1305@openssh.com", "whatever"),
        Some((64, 0, 0))
    );
    assert_eq!(
        key_material_sizes("aes256-gcm@openssh.com", ""),
        Some((32, 12, 0))
    );
    assert_eq!(
        key_material_sizes("aes192-ctr", "hmac-sha2-512"),
        Some((24, 16, 64))
    );
    assert_eq!(
        key_material_sizes("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
        Some((16, 16, 32))
    );
    assert_eq!(key_material_sizes("aes128-ctr", "hmac-sha1"), None);
    assert_eq!(key_material_sizes("aes128-cbc", "hmac-sha2-256"), None);
    assert_eq!(key_material_sizes("none", "none"), None);
}

#[test]
fn unknown_names_and_wrong_key_lengths_are_errors() {
    for (cipher, mac) in all_modes().into_iter().skip(1) {
        let good = keys(cipher, mac);
        assert!(sealer(&good).is_ok() && opener(&good).is_ok());
        let mut k = good.clone();
        k.key.push(0);
        assert!(
            sealer(&k).is_err() && opener(&k).is_err(),
            "{cipher} long key"
        );
        let mut k = good.clone();
        k.key.pop();
        assert!(
            sealer(&k).is_err() && opener(&k).is_err(),
            "{cipher} short key"
        );
        if !good.iv.is_empty() {
            let mut k = good.clone();
            k.iv.pop();
            assert!(
                sealer(&k).is_err() && opener(&k).is_err(),
                "{cipher} short iv"
            );
        }
        if !is_aead(cipher) {
            let mut k = good.clone();
            k.mac_key.pop();
            assert!(
                sealer(&k).is_err() && opener(&k).is_err(),
                "{mac} short mac key"
            );
            let mut k = good.clone();
            k.mac = "hmac-md5".into();
            assert!(sealer(&k).is_err() && opener(&k).is_err());
        }
    }
    let mut k = keys("aes128-ctr", "hmac-sha2-256");
    k.cipher = "none".into();
    assert!(sealer(&k).is_err(), "none is never negotiated");
    k.cipher = "3des-cbc".into();
    assert!(opener(&k).is_err());
    // The debug form never shows key bytes.
    let dbg = format!("{:?}", keys("aes128-ctr", "hmac-sha2-256"));
    assert!(!dbg.contains("key: ["), "{dbg}");
}

// Known answers from kat.py (zero padding, minimal length).

const P1: &[u8] = b"\x5ewarren known-answer payload";

fn p2() -> Vec<u8> {
    let mut p = vec![0x14];
    p.extend(0..40u8);
    p
}

/// Seals with zero padding and compares with the expected packets, then opens them.
fn check_kat(k: &DirectionKeys, first_seq: u32, payloads: &[Vec<u8>], expected: &[&str]) {
    let mut s = sealer_with(k, Padding::Zero).unwrap();
    let mut o = opener(k).unwrap();
    for (i, (p, e)) in payloads.iter().zip(expected).enumerate() {
        let seq = first_seq.wrapping_add(i as u32);
        let mut wire = Vec::new();
        s.seal(seq, p, &mut wire);
        let expected = unhex(e);
        assert_eq!(wire, expected, "{} {} packet {i}", k.cipher, k.mac);
        let mut got = read_all(o.as_mut(), seq, &mut expected.clone()).unwrap();
        assert_eq!(got.pop().as_ref(), Some(p));
    }
}

#[test]
fn chacha20_poly1305_matches_openssh_construction() {
    let k = DirectionKeys {
        cipher: "chacha20-poly1305@openssh.com".into(),
        mac: String::new(),
        key: counting(64, 0x10),
        iv: Vec::new(),
        mac_key: Vec::new(),
    };
    check_kat(
        &k,
        7,
        &[P1.to_vec()],
        &[
            "b5441959fd7eea4402b93a7d20fc9be2c7e2909ab1774f83b9a43dd0342c9e29ae244dcbe823b32f631fc33465a35885305f4286a6f2ae59462b486a",
        ],
    );
    check_kat(
        &k,
        0xffff_fffe,
        &[p2()],
        &[
            "c62c194e8aa894984edcf65891f02107375928f63f1a1c3c384c16d8744becc155a31af60638459769092eadb43c6427b39e8ff4d9f6522999f8256a51fbf65a57e5aad2",
        ],
    );
}

#[test]
fn aes_gcm_matches_rfc5647_nonce_handling() {
    let payloads = [P1.to_vec(), p2(), P1.to_vec()];
    for (cipher, n, expected) in [
        (
            "aes128-gcm@openssh.com",
            16,
            [
                "00000030baef76587b8ac4faddbe54ee9187b4b20cd38f35ff19fab18b10ea821987b890a171ede5404e3d180bb1e5b90656384e6de0402b91b293d04981fc8c0de085ae",
                "000000306464eadfd9ad3912b918fdf4707f672382b3f859dca8399e124da62575f07790fc67db19ab9d0c0bf2bce724e95b64af0b5f12a9ea1088f1705b7018a0db015b",
                "00000030a4b4103b2874d2f4bf74f983b6ac3c01404266469a685ab9905798b235dc11fcfdbff297940bf854f47369f090d526c77d118a13232b5da68ab6991ecf1e517f",
            ],
        ),
        (
            "aes256-gcm@openssh.com",
            32,
            [
                "00000030e97a136e6fc21101f574a32611c79bec7447ae00b32ee5ac4ebf64fb45afc1d1f7360f9f8025f1afe2824e99139f6975515474095ba62d16a9f93da98bb2d4c0",
                "00000030aafb0a6a16622d6bb6c173109565bc1fc3ec652f9f85e73e173f4b07519793de8b06f2c6c801cae85775946758c09f16d394050bfa0ead34ae3f223f67130f35",
                "00000030fb483b6303ed9de2cbd68ec9b7d27576dca552459b57aa4fe733d9af6941b3831923afa6b6c003bf245a67ff0f092f2c4f431a08b845e0378515be41301bf86c",
            ],
        ),
    ] {
        let k = DirectionKeys {
            cipher: cipher.into(),
            mac: String::new(),
            key: counting(n, 0x40),
            iv: unhex("00112233fffffffffffffffe"),
            mac_key: Vec::new(),
        };
        // The sequence number plays no part in GCM: any start gives the same packets.
        check_kat(&k, 1234, &payloads, &expected);
    }
}

#[test]
fn aes_ctr_hmac_match_rfc4253_and_openssh_etm() {
    let payloads = [P1.to_vec(), p2(), P1.to_vec()];
    for (cipher, n, mac, ml, expected) in [
        (
            "aes128-ctr",
            16,
            "hmac-sha2-256",
            32,
            [
                "a692821d2bf4044f748dd1c018ccd0d307efc90e47f540cd0b04c321aca49e7a21d7c326e8ef02a2216f25eb2552db4a91d73cc7d02477e61d989075bf6a247b79a20eb24d15c6e55d5a6843f581bd79",
                "6a4a52ae775823c562d7a1d2517b8a93045cc4c08d45b88762e749c9439c5f067f674bda4f4b4bdf9e19b06bed13c3190da6ba80a111ce550cb162127bfddf4a26ba3434149c8ae672455880445f2f7f6afb4007eab2b92da213c7c5e7abc25f",
                "8363a764f8de694a8f6a65bec86a1051eb95155c065f6f23fb4abe2dc55acfbe6352458334e72f04e0f75d5769f8f333aaa5a0d7e83b35861d07e56e764c2c77198272717da0247516f2475c9873a237",
            ],
        ),
        (
            "aes256-ctr",
            32,
            "hmac-sha2-512-etm@openssh.com",
            64,
            [
                "000000301365251058456aea1b123fdb739315f5e5d81453a08f2a0069758c91aa205965a9966b47dc6796accf220ed43e55663cc99a8e0031ee00e5d0ff02cdee5b2d787f2eedf7d661e31ed2ca487cef866a0e675d7582697c2b5c3381b53ac795e9c634f0d0e9a68e9b774eeac772e3bc1dc1",
                "00000030a3e906ca9134f629cb4b583d54b00d01727c59b8c4307850aec73961eb7dc3d93d7abde0e95f66032e7c327a8bf59acc9f0725e786a2dd3fda505eeeb2917c3b427093106d298bc294fbaacd772dfee3dcddc02a4f2147367fa67e29cf19feea5abc42001a0899776521ed25dfb83533",
                "0000003059977fdefd2744fda5957c287fcd0a7661abe163475ad79c756d41ef8c2379aa2fb36dd9e283da9afbff1c8fd494bf67e87d5304862e740cbfbd23f9aa853822818fade070e885e632e2dff35bc9c928f931ed20a3f6c4e440311fd5c77635576c44bb956849d8489727d39ace086425",
            ],
        ),
        (
            "aes192-ctr",
            24,
            "hmac-sha2-256-etm@openssh.com",
            32,
            [
                "0000003004200914bdd051982e404671a1aba7e7e3152129ba7f1a458cbdf8901160b82606e6492953c2400eb8000bd779cd3beca39a895aab6011548d13e2c8cfd1bbfa7748d0cbffbb3175ec61b19cd251b19b",
                "00000030f7db7c4f35e4ba1d85b580ab6aad6d11c7165227ced16f6a26df18f9164b4c18c3534feb024f521ac2d298292960fc778dc091aa752438a415285150425b1ea361c032dc0d97d91e9288e0f8336fd6cc",
                "000000307492b0283c38b855f16072008620ecab47aaa5a5b8d304814e54e29a7954233710a093bfe4d41fb30f041f76329375527291001429f990054621d70365ea0656aea0b82bf8707dfd85bfda0de0dea4c3",
            ],
        ),
        (
            "aes256-ctr",
            32,
            "hmac-sha2-512",
            64,
            [
                "003b525d256978e5490b34da249656fbfcc54e57bcdc2d0462399391b74c3604cd966b47dc6796accf220ed43e55663cb4b89cdb593b6225c47b4ba281b6aa33935b5c56ebd4c6d1d07e4e461ec839f24ce78577bec6457d4f8b5201c5843b94cbe304d63020a81f32582fea74abad92",
                "a5fd06f78123f22dcf4f543158bc0905767845a4d82c7c54aac3356de771c7dd397e81dcd56362072a78165fadd29acc4ac908bf8f55219385fe124708a32717880ae7ff3a45c95c642aecd24f37835b2bbfb420e5b0694868403510f0eff38ecdb2037affffb5b525bd15664f3c31409c117e7f259d06ce93c2483f3852c451",
                "0fd8962a3a24d09c7e734be0c84817c558dd40b88cf0adff89df6ceeadf8d006a4d3b66be8ca7c5f4154472492861e3c96778947b14e152c5dd517de6b37bc83d8406d0c0b3ea1a91298e66afe5ecd4228c2b278ed408f1c2ee921e15b6cdf2dc379604f322743969ee4c1e5d78be510",
            ],
        ),
    ] {
        let k = DirectionKeys {
            cipher: cipher.into(),
            mac: mac.into(),
            key: counting(n, 0x80),
            iv: unhex("000102030405060708090a0b0c0d0eff"),
            mac_key: counting(ml, 0xc0),
        };
        // Big-endian sequence numbers, through the wrap.
        check_kat(&k, u32::MAX - 1, &payloads, &expected);
    }
}
