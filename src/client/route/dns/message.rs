//! Just enough of the DNS wire format (RFC 1035) for a forwarder: the question (the cache
//! key and the --dns-domain test), the TTLs (cache lifetime, and aged on a cache hit), the
//! UDP size the client accepts. Bytes from the network: every read is bounds-checked and
//! a malformed message is `None`, never a panic.

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower case, labels joined with '.', no trailing dot ("" for the root).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the question.
    pub end: usize,
}

const HEADER: usize = 12;
const TYPE_OPT: u16 = 41;

fn u16_at(m: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(at)?, *m.get(at + 1)?]))
}

pub fn set_id(m: &mut [u8], id: u16) {
    if m.len() >= 2 {
        m[..2].copy_from_slice(&id.to_be_bytes());
    }
}

pub fn id(m: &[u8]) -> Option<u16> {
    u16_at(m, 0)
}

pub fn rcode(m: &[u8]) -> Option<u8> {
    m.get(3).map(|b| b & 0x0f)
}

pub fn is_truncated(m: &[u8]) -> bool {
    m.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// Reads a (possibly compressed) name at `at`: the name and the offset after it.
fn read_name(m: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    // Pointers may only point backwards in sane messages; a hop limit stops loops anyway.
    for _ in 0..128 {
        let len = *m.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                return Some((name, end.unwrap_or(at + 1)));
            }
            0x00 => {
                let label = m.get(at + 1..at + 1 + usize::from(len))?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    name.push(char::from(b.to_ascii_lowercase()));
                }
                if name.len() > 255 {
                    return None;
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let ptr = usize::from(u16_at(m, at)? & 0x3fff);
                end.get_or_insert(at + 2);
                at = ptr;
            }
            _ => return None,
        }
    }
    None
}

/// The single question of a message (queries with any other count are refused).
pub fn question(m: &[u8]) -> Option<Question> {
    if m.len() < HEADER || u16_at(m, 4)? != 1 {
        return None;
    }
    let (name, at) = read_name(m, HEADER)?;
    Some(Question {
        name,
        qtype: u16_at(m, at)?,
        qclass: u16_at(m, at + 2)?,
        end: at + 4,
    })
}

/// One resource record's place in a message.
struct Record {
    rtype: u16,
    /// Offset of the CLASS field (TTL follows it).
    class_at: usize,
}

/// Every record after the question, or `None` if the message does not parse to its end.
fn records(m: &[u8]) -> Option<Vec<Record>> {
    let q = question(m)?;
    let count =
        usize::from(u16_at(m, 6)?) + usize::from(u16_at(m, 8)?) + usize::from(u16_at(m, 10)?);
    let mut at = q.end;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let (_, after) = read_name(m, at)?;
        let rtype = u16_at(m, after)?;
        let rdlen = usize::from(u16_at(m, after + 8)?);
        let next = after + 10 + rdlen;
        if next > m.len() {
            return None;
        }
        out.push(Record {
            rtype,
            class_at: after + 2,
        });
        at = next;
    }
    Some(out)
}

/// The smallest TTL of the records (OPT excluded: its TTL field holds flags); `None`
/// for a message without records or that does not parse.
pub fn min_ttl(m: &[u8]) -> Option<u32> {
    records(m)?
        .iter()
        .filter(|r| r.rtype != TYPE_OPT)
        .filter_map(|r| {
            let t = m.get(r.class_at + 2..r.class_at + 6)?;
            Some(u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
        })
        .min()
}

/// Lowers every TTL by `by` seconds (not below 0), in place: a cached answer tells the
/// client how long it has left, not how long it had when fetched.
pub fn age(m: &mut [u8], by: u32) -> bool {
    let Some(recs) = records(m) else {
        return false;
    };
    for r in recs.iter().filter(|r| r.rtype != TYPE_OPT) {
        let at = r.class_at + 2;
        let Some(t) = m.get(at..at + 4) else {
            return false;
        };
        let ttl = u32::from_be_bytes([t[0], t[1], t[2], t[3]]).saturating_sub(by);
        m[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
    }
    true
}

/// The largest UDP answer the client takes: its EDNS size, else 512 (RFC 6891).
pub fn udp_limit(query: &[u8]) -> usize {
    records(query)
        .and_then(|recs| {
            recs.iter()
                .find(|r| r.rtype == TYPE_OPT)
                .and_then(|r| u16_at(query, r.class_at))
        })
        .map_or(512, |size| usize::from(size).max(512))
}

/// The header and question of `response` with TC set: "too big for UDP, ask over TCP".
pub fn truncated(response: &[u8]) -> Option<Vec<u8>> {
    let q = question(response)?;
    let mut m = response.get(..q.end)?.to_vec();
    m[2] |= 0x02;
    m[6..12].fill(0);
    Some(m)
}

/// Whether `name` is `domain` or under it (both as [`Question::name`]).
pub fn is_under(name: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    domain.is_empty()
        || name == domain
        || name
            .strip_suffix(domain.as_str())
            .is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A query for `name`/`qtype`, with an OPT record when `edns` is given.
    pub fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        if let Some(size) = edns {
            m.push(0);
            m.extend_from_slice(&TYPE_OPT.to_be_bytes());
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        m
    }

    /// The answer to `query(id, name, 1, None)`: one A record per TTL, name compressed.
    pub fn answer(id: u16, name: &str, ttls: &[u32]) -> Vec<u8> {
        let mut m = query(id, name, 1, None);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = ttls.len() as u8;
        for (i, ttl) in ttls.iter().enumerate() {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&[0, 4, 10, 0, 2, i as u8]);
        }
        m
    }

    #[test]
    fn reads_the_question_lowercased() {
        let q = question(&query(7, "Db.Private", 28, None)).unwrap();
        assert_eq!((q.name.as_str(), q.qtype, q.qclass), ("db.private", 28, 1));
        assert_eq!(id(&query(7, "a", 1, None)), Some(7));
    }

    #[test]
    fn ttls_min_and_aging() {
        let mut a = answer(1, "db.private", &[300, 60]);
        assert_eq!(min_ttl(&a), Some(60));
        assert!(age(&mut a, 50));
        assert_eq!(min_ttl(&a), Some(10));
        assert!(age(&mut a, 100));
        assert_eq!(min_ttl(&a), Some(0));
        assert_eq!(min_ttl(&query(1, "x", 1, None)), None);
    }

    #[test]
    fn udp_limit_from_edns() {
        assert_eq!(udp_limit(&query(1, "x", 1, None)), 512);
        assert_eq!(udp_limit(&query(1, "x", 1, Some(1232))), 1232);
        assert_eq!(udp_limit(&query(1, "x", 1, Some(100))), 512);
        let t = truncated(&answer(3, "db.private", &[5, 5])).unwrap();
        assert!(is_truncated(&t));
        assert_eq!(question(&t).unwrap().end, t.len());
    }

    #[test]
    fn hostile_messages_are_none() {
        assert_eq!(question(&[0; 5]), None);
        // A pointer to itself.
        let mut m = query(1, "a", 1, None);
        m.truncate(12);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(question(&m), None);
        // An answer count beyond the end.
        let mut a = answer(1, "a", &[5]);
        a[7] = 9;
        assert_eq!(min_ttl(&a), None);
        assert!(!age(&mut a, 1));
        for n in 0..a.len() {
            let _ = (question(&a[..n]), min_ttl(&a[..n]), udp_limit(&a[..n]));
        }
    }

    #[test]
    fn domain_match() {
        assert!(is_under("db.private", "private"));
        assert!(is_under("private", "private."));
        assert!(!is_under("notprivate", "private"));
        assert!(is_under("a.b.internal.example", "Internal.Example"));
    }
}
