//! The Places answer cache of one shard: least recently used out, bounded both by
//! entries and by bytes, each entry served for a time-to-live.
//! It owns only the bookkeeping; what an entry weighs is the caller's word.
//! It must stay pure: no I/O, no runtime types, and it never reads the clock
//! (callers pass "now").

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Sentinel for "no slot" in the recency list.
const NIL: usize = usize::MAX;

/// One cache slot: a value, its weight, when it was stored, its place in the recency list.
struct Slot<K, V> {
    /// The key, to unmap the slot when it is evicted.
    key: K,
    /// The cached value.
    value: V,
    /// Bytes the value holds, as the caller measured them.
    weight: usize,
    /// When it was stored; expiry is measured from here.
    stored_at: Instant,
    /// More recently used neighbour (towards `head`).
    prev: usize,
    /// Less recently used neighbour (towards `tail`).
    next: usize,
}

/// A bounded LRU map with a time-to-live, on slots in a Vec linked by index.
/// Expired entries are not removed eagerly: a lookup that finds one moves it to the
/// least-recently-used end, so it is the first to go.
pub(crate) struct LruTtl<K, V> {
    /// Key to slot index.
    map: HashMap<K, usize, ahash::RandomState>,
    /// Slot storage, dense: an evicted slot is filled by the last one.
    slots: Vec<Slot<K, V>>,
    /// Most recently used slot.
    head: usize,
    /// Least recently used slot.
    tail: usize,
    /// Maximum entries; 0 disables caching.
    max_entries: usize,
    /// Maximum total weight; 0 disables caching.
    max_bytes: usize,
    /// Total weight held now.
    bytes: usize,
    /// How long an entry is served.
    ttl: Duration,
}

impl<K: Hash + Eq + Clone, V: Clone> LruTtl<K, V> {
    /// An empty cache holding at most `max_entries` entries weighing at most `max_bytes`.
    pub(crate) fn new(max_entries: usize, max_bytes: usize, ttl: Duration) -> Self {
        Self {
            map: HashMap::default(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            max_entries,
            max_bytes,
            bytes: 0,
            ttl,
        }
    }

    /// Entries held, expired ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Total weight held, expired entries included.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The live value for `key`, marking it most recently used.
    pub(crate) fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        let index = *self.map.get(key)?;
        let slot = self.slots.get(index)?;
        let fresh = now.saturating_duration_since(slot.stored_at) < self.ttl;
        let value = fresh.then(|| slot.value.clone());
        self.unlink(index);
        if fresh {
            self.push_front(index);
        } else {
            self.push_back(index);
        }
        value
    }

    /// Stores `value` (weighing `weight` bytes) for `key` as of `now`, then evicts the
    /// least recently used until both bounds hold. A value heavier than the whole byte
    /// bound is not stored: it would only empty the cache.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: usize, now: Instant) {
        if self.max_entries == 0 || weight > self.max_bytes {
            return;
        }
        if let Some(&index) = self.map.get(&key) {
            if let Some(slot) = self.slots.get_mut(index) {
                self.bytes = self.bytes - slot.weight + weight;
                slot.value = value;
                slot.weight = weight;
                slot.stored_at = now;
            }
            self.unlink(index);
            self.push_front(index);
        } else {
            self.slots.push(Slot {
                key: key.clone(),
                value,
                weight,
                stored_at: now,
                prev: NIL,
                next: NIL,
            });
            let index = self.slots.len() - 1;
            self.map.insert(key, index);
            self.bytes += weight;
            self.push_front(index);
        }
        // Bounded: each turn removes one entry; the newest is at the front and fits alone.
        while self.slots.len() > self.max_entries || self.bytes > self.max_bytes {
            if !self.evict_tail() {
                break;
            }
        }
    }

    /// Removes the least recently used entry; false when there is none.
    fn evict_tail(&mut self) -> bool {
        let victim = self.tail;
        if victim == NIL {
            return false;
        }
        self.unlink(victim);
        let last = self.slots.len() - 1;
        if victim != last {
            // The last slot moves into the victim's place: relink it there.
            let (prev, next) = (self.slots[last].prev, self.slots[last].next);
            match self.slots.get_mut(prev) {
                Some(p) => p.next = victim,
                None => self.head = victim,
            }
            match self.slots.get_mut(next) {
                Some(n) => n.prev = victim,
                None => self.tail = victim,
            }
            if let Some(index) = self.map.get_mut(&self.slots[last].key) {
                *index = victim;
            }
        }
        let gone = self.slots.swap_remove(victim);
        self.map.remove(&gone.key);
        self.bytes -= gone.weight;
        true
    }

    /// Takes a slot out of the recency list.
    fn unlink(&mut self, index: usize) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        let (prev, next) = (slot.prev, slot.next);
        match self.slots.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
        if let Some(slot) = self.slots.get_mut(index) {
            slot.prev = NIL;
            slot.next = NIL;
        }
    }

    /// Links an unlinked slot in as most recently used.
    fn push_front(&mut self, index: usize) {
        let old_head = self.head;
        if let Some(slot) = self.slots.get_mut(index) {
            slot.prev = NIL;
            slot.next = old_head;
        }
        match self.slots.get_mut(old_head) {
            Some(h) => h.prev = index,
            None => self.tail = index,
        }
        self.head = index;
    }

    /// Links an unlinked slot in as least recently used.
    fn push_back(&mut self, index: usize) {
        let old_tail = self.tail;
        if let Some(slot) = self.slots.get_mut(index) {
            slot.prev = old_tail;
            slot.next = NIL;
        }
        match self.slots.get_mut(old_tail) {
            Some(t) => t.next = index,
            None => self.head = index,
        }
        self.tail = index;
    }

    /// Keys from most to least recently used (test helper for list integrity).
    #[cfg(test)]
    fn order(&self) -> Vec<K> {
        let mut keys = Vec::new();
        let mut at = self.head;
        for _ in 0..self.slots.len() {
            let Some(slot) = self.slots.get(at) else {
                break;
            };
            keys.push(slot.key.clone());
            at = slot.next;
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ANY: usize = usize::MAX;

    #[test]
    fn lru_evicts_least_recently_used() {
        let t0 = Instant::now();
        let mut cache = LruTtl::new(3, ANY, Duration::from_secs(60));
        cache.insert(1, "a", 1, t0);
        cache.insert(2, "b", 1, t0);
        cache.insert(3, "c", 1, t0);
        assert_eq!(cache.get(&1, t0), Some("a")); // 1 is now most recent, 2 least
        cache.insert(4, "d", 1, t0);
        assert_eq!(cache.get(&2, t0), None);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.order(), vec![4, 1, 3]);
        cache.insert(3, "c2", 1, t0); // update moves to front, no eviction
        assert_eq!(cache.order(), vec![3, 4, 1]);
        assert_eq!(cache.get(&3, t0), Some("c2"));
        cache.insert(5, "e", 1, t0);
        assert_eq!(cache.order(), vec![5, 3, 4]);
        assert_eq!(cache.get(&1, t0), None);
    }

    #[test]
    fn entries_expire_after_ttl_and_are_evicted_first() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut cache = LruTtl::new(2, ANY, ttl);
        cache.insert("x", 1, 1, t0);
        cache.insert("y", 2, 1, t0 + Duration::from_secs(5));
        let almost = t0 + ttl - Duration::from_millis(1);
        assert_eq!(cache.get(&"x", almost), Some(1));
        assert_eq!(cache.get(&"x", t0 + ttl), None);
        // The expired "x" went to the back, so it is evicted before the live "y".
        assert_eq!(cache.order(), vec!["y", "x"]);
        cache.insert("z", 3, 1, t0 + ttl);
        assert_eq!(cache.get(&"y", t0 + ttl), Some(2));
        assert_eq!(cache.get(&"z", t0 + ttl), Some(3));
        // Re-storing refreshes the time.
        cache.insert("y", 4, 1, t0 + ttl * 3);
        assert_eq!(
            cache.get(&"y", t0 + ttl * 3 + Duration::from_secs(9)),
            Some(4)
        );
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let t0 = Instant::now();
        let mut cache = LruTtl::new(0, ANY, Duration::from_secs(60));
        cache.insert(1, 1, 1, t0);
        assert_eq!(cache.get(&1, t0), None);
        let mut no_bytes = LruTtl::new(10, 0, Duration::from_secs(60));
        no_bytes.insert(1, 1, 1, t0);
        assert_eq!(no_bytes.get(&1, t0), None);
        let mut one = LruTtl::new(1, ANY, Duration::from_secs(60));
        one.insert(1, 1, 1, t0);
        one.insert(2, 2, 1, t0);
        assert_eq!((one.get(&1, t0), one.get(&2, t0)), (None, Some(2)));
    }

    #[test]
    fn byte_bound_evicts_least_recently_used_until_the_new_entry_fits() {
        let t0 = Instant::now();
        let mut cache = LruTtl::new(100, 10, Duration::from_secs(60));
        cache.insert('a', 'a', 4, t0);
        cache.insert('b', 'b', 4, t0);
        assert_eq!(cache.get(&'a', t0), Some('a')); // b is now least recent
        cache.insert('c', 'c', 4, t0);
        assert_eq!(cache.order(), vec!['c', 'a']);
        assert_eq!(cache.bytes(), 8);
        // One heavy entry pushes out both others.
        cache.insert('d', 'd', 9, t0);
        assert_eq!(cache.order(), vec!['d']);
        assert_eq!(cache.bytes(), 9);
        // Heavier than the whole bound: not stored, nothing evicted for it.
        cache.insert('e', 'e', 11, t0);
        assert_eq!(cache.order(), vec!['d']);
        // Re-storing a key with a new weight re-weighs it.
        cache.insert('d', 'D', 2, t0);
        assert_eq!(cache.bytes(), 2);
        assert_eq!(cache.get(&'d', t0), Some('D'));
    }

    proptest! {
        /// The recency list always holds exactly the mapped keys, both bounds hold,
        /// and the byte count is the sum of the weights held.
        #[test]
        fn lru_list_matches_map_and_bounds_hold(
            ops in proptest::collection::vec((0u8..12, any::<bool>(), 0usize..8), 0..200),
            cap in 0usize..6,
            max_bytes in 0usize..20,
        ) {
            let t0 = Instant::now();
            let mut cache = LruTtl::new(cap, max_bytes, Duration::from_secs(60));
            for (k, is_insert, weight) in ops {
                if is_insert {
                    cache.insert(k, k, weight, t0);
                    if cap > 0 && weight <= max_bytes {
                        prop_assert_eq!(cache.order().first().copied(), Some(k));
                    }
                } else {
                    let _ = cache.get(&k, t0);
                }
                prop_assert!(cache.len() <= cap);
                prop_assert!(cache.bytes() <= max_bytes);
                let weights: usize = cache.slots.iter().map(|s| s.weight).sum();
                prop_assert_eq!(weights, cache.bytes());
                let mut order = cache.order();
                prop_assert_eq!(order.len(), cache.len());
                for key in &order {
                    let index = cache.map[key];
                    prop_assert_eq!(&cache.slots[index].key, key);
                }
                order.sort_unstable();
                order.dedup();
                prop_assert_eq!(order.len(), cache.len());
            }
        }
    }
}
