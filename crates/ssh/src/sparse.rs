//! Giving back what a burst of channels made a table grow to.
//!
//! A `HashMap` keeps its capacity when entries leave. A session that once held 25,000
//! channels kept tables sized for them, about 150 MiB over warrend's sessions in the
//! benchmark's many phase, until it logged out. Shrinking once three quarters of the
//! table are empty costs O(1) per removal amortised: after a shrink to twice the
//! entries left, the next needs at least half of them gone.

use std::collections::HashMap;
use std::hash::Hash;

/// Tables this small are never shrunk: not worth a rehash.
const FLOOR: usize = 64;

/// Shrinks `map` to twice its entries when they fill less than a quarter of it.
pub(crate) fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > FLOOR && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_shrinks_after_a_burst_and_not_while_half_full() {
        let mut m: HashMap<u32, [u8; 256]> = HashMap::new();
        for i in 0..25_000 {
            m.insert(i, [0; 256]);
        }
        let burst = m.capacity();
        // Half gone: the table still has room for the burst (what it reports as capacity
        // falls as removals leave tombstones, but no shrink to 2 × 12,500 happened).
        for i in 0..12_500 {
            m.remove(&i);
            shrink_if_sparse(&mut m);
        }
        assert!(m.capacity() > 20_000, "{} of {burst}", m.capacity());
        for i in 12_500..25_000 {
            m.remove(&i);
            shrink_if_sparse(&mut m);
        }
        assert!(
            m.capacity() <= FLOOR * 2,
            "{} left of {burst}",
            m.capacity()
        );
        // A small table is left alone.
        m.insert(1, [0; 256]);
        shrink_if_sparse(&mut m);
        assert!(m.contains_key(&1));
    }
}
