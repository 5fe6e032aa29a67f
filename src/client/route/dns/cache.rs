//! A small answer cache that honours TTLs: an answer lives for its smallest record TTL
//! (at most an hour), and is handed out with its TTLs aged and the asker's query ID.

use super::message;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest an answer is kept, whatever its TTL says.
const MAX_TTL: u32 = 3600;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    qtype: u16,
    qclass: u16,
}

struct Entry {
    response: Vec<u8>,
    stored: Instant,
    ttl: u32,
}

pub struct Cache {
    entries: HashMap<Key, Entry>,
    capacity: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity,
        }
    }

    fn key(query: &[u8]) -> Option<Key> {
        let q = message::question(query)?;
        Some(Key {
            name: q.name,
            qtype: q.qtype,
            qclass: q.qclass,
        })
    }

    /// The cached answer to `query`, ready to send (its ID, aged TTLs), if still fresh.
    pub fn get(&mut self, query: &[u8], now: Instant) -> Option<Vec<u8>> {
        let key = Self::key(query)?;
        let entry = self.entries.get(&key)?;
        let elapsed = now.saturating_duration_since(entry.stored).as_secs();
        if elapsed >= u64::from(entry.ttl) {
            self.entries.remove(&key);
            return None;
        }
        let mut response = entry.response.clone();
        message::age(&mut response, elapsed as u32);
        message::set_id(&mut response, message::id(query)?);
        Some(response)
    }

    /// Keeps a complete, successful (or NXDOMAIN) answer with a TTL above 0.
    pub fn put(&mut self, response: &[u8], now: Instant) {
        if message::is_truncated(response) || !matches!(message::rcode(response), Some(0 | 3)) {
            return;
        }
        let (Some(key), Some(ttl)) = (Self::key(response), message::min_ttl(response)) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| {
                now.saturating_duration_since(e.stored) < Duration::from_secs(u64::from(e.ttl))
            });
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.stored)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            key,
            Entry {
                response: response.to_vec(),
                stored: now,
                ttl: ttl.min(MAX_TTL),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::tests::{answer, query};
    use super::*;

    #[test]
    fn serves_with_aged_ttl_and_the_askers_id_until_expiry() {
        let mut c = Cache::new(8);
        let t0 = Instant::now();
        c.put(&answer(1, "db.private", &[30, 60]), t0);
        let hit = c
            .get(
                &query(99, "DB.private", 1, None),
                t0 + Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(message::id(&hit), Some(99));
        assert_eq!(message::min_ttl(&hit), Some(20));
        assert!(
            c.get(&query(5, "db.private", 28, None), t0).is_none(),
            "other type"
        );
        assert!(
            c.get(
                &query(5, "db.private", 1, None),
                t0 + Duration::from_secs(30)
            )
            .is_none()
        );
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn skips_zero_ttl_errors_and_truncated() {
        let mut c = Cache::new(8);
        let now = Instant::now();
        c.put(&answer(1, "a.private", &[0]), now);
        let mut servfail = answer(1, "b.private", &[30]);
        servfail[3] |= 2;
        c.put(&servfail, now);
        let mut tc = answer(1, "c.private", &[30]);
        tc[2] |= 2;
        c.put(&tc, now);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn stays_within_capacity() {
        let mut c = Cache::new(2);
        let now = Instant::now();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            c.put(&answer(1, n, &[30]), now + Duration::from_secs(i as u64));
        }
        assert_eq!(c.len(), 2);
        assert!(
            c.get(&query(1, "a", 1, None), now + Duration::from_secs(3))
                .is_none()
        );
        assert!(
            c.get(&query(1, "c", 1, None), now + Duration::from_secs(3))
                .is_some()
        );
    }
}
