//! What the cluster registry stores in etcd and under which keys.
//!
//! Kept free of the etcd client so that it builds without the `cluster` feature (the fuzz
//! build) and can be unit-tested on its own. Everything read back from etcd goes through
//! [`parse_key`] and the `parse_*` functions here: etcd content is less trusted than our own
//! config (any holder of an etcd login can write it), so nothing here panics on it.

use serde::{Deserialize, Serialize};

/// Largest value the registry accepts from etcd. Ours are a few hundred bytes; a larger one
/// was not written by a warrend node and would only cost memory in every node's cache.
pub const MAX_VALUE_LEN: usize = 4096;

/// One published name (`-R name:port`): who owns it and where it lives.
///
/// Field order matters: `user` is serialized first, so "the stored record belongs to user U"
/// is a byte-range comparison that etcd can evaluate inside a transaction
/// ([`user_value_range`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub user: String,
    pub key_fp: String,
    pub node: String,
    pub conn: u64,
    /// RFC 3339.
    pub since: String,
}

/// One live warrend node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// `host:port` that the other nodes dial for the node-to-node link.
    pub link: String,
    /// RFC 3339.
    pub started: String,
}

/// What a key under the prefix stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Name { name: String, port: u16 },
    Member { node: String },
}

const NAMES: &str = "names/";
const MEMBERS: &str = "members/";

/// `<prefix>names/<enc(name)>:<port>`.
pub fn name_key(prefix: &str, name: &str, port: u16) -> String {
    format!("{prefix}{NAMES}{}:{port}", encode(name))
}

/// `<prefix>members/<enc(node)>`.
pub fn member_key(prefix: &str, node: &str) -> String {
    format!("{prefix}{MEMBERS}{}", encode(node))
}

/// The inverse of [`name_key`] / [`member_key`]; `None` for anything we did not write
/// (other keys under the prefix are ignored, not an error).
pub fn parse_key(prefix: &str, key: &[u8]) -> Option<Key> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?;
    if let Some(r) = rest.strip_prefix(NAMES) {
        let (enc, port) = r.rsplit_once(':')?;
        // u16's parser takes a leading '+': only canonical decimal keys are ours.
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port = port.parse().ok()?;
        let name = decode(enc)?;
        (name_key(prefix, &name, port) == key).then_some(Key::Name { name, port })
    } else if let Some(enc) = rest.strip_prefix(MEMBERS) {
        let node = decode(enc)?;
        (member_key(prefix, &node) == key).then_some(Key::Member { node })
    } else {
        None
    }
}

/// The serialized record: deterministic, so an equal record is an equal etcd value.
pub fn encode_record(rec: &NameRecord) -> Vec<u8> {
    // Serializing a struct of strings and integers cannot fail.
    serde_json::to_vec(rec).unwrap_or_default()
}

pub fn encode_member(m: &Member) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

pub fn parse_record(value: &[u8]) -> Result<NameRecord, String> {
    parse(value)
}

pub fn parse_member(value: &[u8]) -> Result<Member, String> {
    parse(value)
}

fn parse<T: for<'a> Deserialize<'a>>(value: &[u8]) -> Result<T, String> {
    if value.len() > MAX_VALUE_LEN {
        return Err(format!(
            "value of {} bytes (limit {MAX_VALUE_LEN})",
            value.len()
        ));
    }
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

/// `[low, high)` such that a value written by [`encode_record`] is in the range exactly when
/// its `user` is `user`: the serialized record starts with `{"user":<json string>,`, a JSON
/// string ends at its only unescaped quote, so no other user's prefix shares it.
pub fn user_value_range(user: &str) -> (Vec<u8>, Vec<u8>) {
    let mut low = b"{\"user\":".to_vec();
    low.extend(serde_json::to_vec(user).unwrap_or_default());
    low.push(b',');
    let mut high = low.clone();
    // ',' + 1 = '-': every value that starts with `low` sorts below `high`.
    if let Some(last) = high.last_mut() {
        *last += 1;
    }
    (low, high)
}

/// Percent-encoding of everything but `[A-Za-z0-9._-]`: user-chosen names cannot contain the
/// `/` or `:` that structure keys, and two names never share a key.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str) -> NameRecord {
        NameRecord {
            user: user.into(),
            key_fp: "SHA256:x".into(),
            node: "n1".into(),
            conn: 7,
            since: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn keys_round_trip_and_stay_under_the_prefix() {
        for name in ["web", "a/b", "../../x", "a:1", "%41", "ünï", "", "a b\n"] {
            let k = name_key("/warren/", name, 8080);
            assert!(k.starts_with("/warren/names/"), "{k}");
            assert_eq!(k.matches('/').count(), 3, "{k}");
            assert_eq!(
                parse_key("/warren/", k.as_bytes()),
                Some(Key::Name {
                    name: name.into(),
                    port: 8080
                })
            );
        }
        assert_ne!(name_key("/p/", "a:1", 2), name_key("/p/", "a", 12));
        let m = member_key("/p/", "node/1");
        assert_eq!(
            parse_key("/p/", m.as_bytes()),
            Some(Key::Member {
                node: "node/1".into()
            })
        );
    }

    #[test]
    fn foreign_keys_are_ignored() {
        for k in [
            &b"/p/names/web:+80"[..],
            b"/p/names/web:99999",
            b"/p/names/web",
            b"/p/names/w%2:1",
            b"/p/names/w%zz:1",
            b"/p/names/a%2fb:1",
            b"/p/names/a/b:1",
            b"/p/other/x",
            b"/q/names/web:80",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_key("/p/", k), None, "{}", String::from_utf8_lossy(k));
        }
    }

    #[test]
    fn user_range_matches_exactly_that_user() {
        for user in ["alice", "al\"ice", "al,ice", "a\\", ""] {
            let (lo, hi) = user_value_range(user);
            let mine = encode_record(&rec(user));
            assert!(mine > lo && mine < hi, "{user}");
            for other in ["alice2", "alic", "al", "alice\"", "bob", "a", "al\"ice,"] {
                if other == user {
                    continue;
                }
                let v = encode_record(&rec(other));
                assert!(!(v > lo && v < hi), "{user} vs {other}");
            }
        }
    }

    #[test]
    fn hostile_values_are_errors() {
        assert!(parse_record(b"").is_err());
        assert!(parse_record(b"{\"user\":1}").is_err());
        assert!(parse_record(&vec![b' '; MAX_VALUE_LEN + 1]).is_err());
        assert_eq!(parse_record(&encode_record(&rec("a"))), Ok(rec("a")));
    }
}
