//! The store's index: a client id's hash -> the slot of its record.
//!
//! Why not a general hash table: in hashbrown a lookup touches two cache
//! lines before it reaches the slot, the group of control bytes and then
//! the entry, and with a million clients both miss. perf of one shard
//! taking IAMATs at 64 x 16 put 24 % of its core in the lookup, split
//! evenly between those two loads. Here an entry is a slot and 32 bits of
//! its hash, and a bucket is one 64-byte line of eight entries, so a
//! lookup of a client reads one line (and the next one when its bucket
//! overflowed) before the caller checks the record.
//!
//! Grows in small steps: the index is split into parts by the upper hash
//! bits, and each part rehashes on its own, from the hash bits its entries
//! keep (no record is touched). Pure and safe: no I/O, no `unsafe`.

/// Parts: each grows (and rehashes) on its own, so a growth moves 1/1024
/// of the ids. Filling 5 M clients, 256 parts still paused up to 3 ms;
/// 1024 kept it near 1 ms. The empty parts cost 40 KiB per store.
pub(crate) const PARTS: usize = 1024;

/// Slot numbers must stay below this: the two values above it mark free
/// entries.
pub(crate) const SLOT_LIMIT: u32 = u32::MAX - 1;

/// An entry never used since its part was last rebuilt: a lookup that
/// meets one in a bucket knows its id is in no later bucket.
const EMPTY: u32 = u32::MAX;
/// An entry whose id was removed: free for an insert, but a lookup goes on
/// past its bucket (an id inserted while it was taken may lie beyond).
const GONE: u32 = SLOT_LIMIT;

const WAYS: usize = 8;

/// Eight entries in one cache line: their hash bits, then their slots.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    hashes: [u32; WAYS],
    slots: [u32; WAYS],
}

impl Bucket {
    const FRESH: Bucket = Bucket {
        hashes: [0; WAYS],
        slots: [EMPTY; WAYS],
    };

    /// Bit i set when entry i holds a slot with hash bits `hash`. Written
    /// as a mask first so the compiler can compare all eight at once.
    fn matching(&self, hash: u32) -> u32 {
        let mut mask = 0;
        for i in 0..WAYS {
            mask |= u32::from(self.hashes[i] == hash && self.slots[i] < SLOT_LIMIT) << i;
        }
        mask
    }

    fn has_empty(&self) -> bool {
        self.slots.contains(&EMPTY)
    }
}

/// One part: buckets probed linearly (wrapping) from the bucket
/// the low hash bits name. Kept at most 7/8 full, counting removed
/// entries, so every probe ends at a bucket with an empty entry.
#[derive(Default)]
struct Part {
    buckets: Vec<Bucket>,
    len: usize,
    gone: usize,
}

impl Part {
    fn find(&self, hash: u32, is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.position(hash, is)
            .map(|(at, i)| self.buckets[at].slots[i])
    }

    /// The bucket a probe for `hash` starts at; the part has buckets.
    fn home(&self, hash: u32) -> usize {
        // The hash scaled to the part's length (Lemire's "fastrange"): any
        // length, not only powers of two, so a part grows in steps of
        // about 1.4 and not 2 (see `rebuild`).
        ((u64::from(hash) * self.buckets.len() as u64) >> 32) as usize
    }

    /// The bucket a probe visits after `at`, wrapping at the end.
    fn after(&self, at: usize) -> usize {
        if at + 1 == self.buckets.len() {
            0
        } else {
            at + 1
        }
    }

    /// Where the entry with `hash` whose slot `is` accepts lies: its bucket
    /// and its place there. The one probe that lookups and removals share.
    fn position(&self, hash: u32, mut is: impl FnMut(u32) -> bool) -> Option<(usize, usize)> {
        if self.buckets.is_empty() {
            return None;
        }
        let mut at = self.home(hash);
        loop {
            let bucket = &self.buckets[at];
            let mut matching = bucket.matching(hash);
            while matching != 0 {
                let i = matching.trailing_zeros() as usize;
                if is(bucket.slots[i]) {
                    return Some((at, i));
                }
                matching &= matching - 1;
            }
            if bucket.has_empty() {
                return None;
            }
            at = self.after(at);
        }
    }

    /// Adds an entry; the caller knows `slot` is not in the part.
    fn insert(&mut self, hash: u32, slot: u32) {
        if (self.len + self.gone + 1) * 8 > self.buckets.len() * WAYS * 7 {
            self.rebuild();
        }
        if self.place(hash, slot) {
            self.gone -= 1;
        }
        self.len += 1;
    }

    /// Puts an entry in the first free entry of its probe; says whether
    /// that one was a removed entry. The part has room.
    fn place(&mut self, hash: u32, slot: u32) -> bool {
        let mut at = self.home(hash);
        loop {
            let bucket = &mut self.buckets[at];
            if let Some(i) = bucket.slots.iter().position(|&s| s >= SLOT_LIMIT) {
                let was_gone = bucket.slots[i] == GONE;
                bucket.hashes[i] = hash;
                bucket.slots[i] = slot;
                return was_gone;
            }
            at = self.after(at);
        }
    }

    /// Removes the entry of `slot`, if the part has it.
    fn remove(&mut self, hash: u32, slot: u32) {
        let Some((at, i)) = self.position(hash, |s| s == slot) else {
            return;
        };
        let bucket = &mut self.buckets[at];
        // A bucket that still has an empty entry was never full since the
        // part was rebuilt, so no probe went past it and this entry may be
        // empty again; otherwise lookups must still go on past it.
        if bucket.has_empty() {
            bucket.slots[i] = EMPTY;
        } else {
            bucket.slots[i] = GONE;
            self.gone += 1;
        }
        self.len -= 1;
    }

    /// Rebuilds the part (dropping removed entries) with room for 3/2 of
    /// its entries: 2/3 full after, so it grows by about 1.3 at a time
    /// (7/8 over 2/3) and shrinks back when removals leave it mostly
    /// removed. It used to double to a power of two: between 7/16 and 7/8
    /// full, 8-byte entries cost 9 to 18 bytes per record (16 MiB at 1 M
    /// records, where the parts had just doubled); now 9 to 12 (about
    /// 10 MiB there).
    fn rebuild(&mut self) {
        let wanted = ((self.len + 1) * 3).div_ceil(2 * WAYS);
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::FRESH; wanted]);
        self.gone = 0;
        for bucket in &old {
            for i in 0..WAYS {
                if bucket.slots[i] < SLOT_LIMIT {
                    self.place(bucket.hashes[i], bucket.slots[i]);
                }
            }
        }
    }
}

/// Hash -> slot, in [`PARTS`] parts picked by the upper 32 bits of a
/// 64-bit hash; the lower 32 place and tag an entry within its part.
pub(crate) struct Index {
    parts: Vec<Part>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            parts: (0..PARTS).map(|_| Part::default()).collect(),
        }
    }
}

impl Index {
    fn part(hash: u64) -> usize {
        (hash >> 32) as usize % PARTS
    }

    /// The slot with `hash` that `is` accepts (the caller compares the
    /// record's id: hashes collide).
    pub(crate) fn find(&self, hash: u64, is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.parts[Index::part(hash)].find(hash as u32, is)
    }

    /// Starts loading the buckets that lookups of `hashes` start at, so
    /// that those lookups, soon after, find them in cache. The loads do not
    /// depend on each other, so the core has them all in flight at once,
    /// where the lookups one by one (with a line's parse between two) wait
    /// for each in turn. On x86_64 they are prefetch instructions, which
    /// retire at once: the parse that follows runs while they are in
    /// flight. A plain load (elsewhere) holds back every instruction
    /// after it from retiring until it arrives.
    pub(crate) fn prefetch(&self, hashes: &[u64]) {
        for &hash in hashes {
            let part = &self.parts[Index::part(hash)];
            if !part.buckets.is_empty() {
                touch(&part.buckets[part.home(hash as u32)]);
            }
        }
    }

    /// Adds `slot` under `hash`; the caller knows it is not indexed yet.
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        debug_assert!(slot < SLOT_LIMIT);
        self.parts[Index::part(hash)].insert(hash as u32, slot);
    }

    /// Removes `slot`, indexed under `hash`.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) {
        self.parts[Index::part(hash)].remove(hash as u32, slot);
    }

    /// Entries in all.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len).sum()
    }

    /// Parts holding at least one entry.
    #[cfg(test)]
    pub(crate) fn parts_used(&self) -> usize {
        self.parts.iter().filter(|p| p.len > 0).count()
    }
}

/// Asks for the cache line holding `bucket`, without waiting for it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn touch(bucket: &Bucket) {
    safe_arch::prefetch_t0(bucket);
}

/// Loads the cache line holding `bucket` (kept, or it would be dead code).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn touch(bucket: &Bucket) {
    std::hint::black_box(bucket.slots[0]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A hash in part 0 with low bits `low`: tests choose the low bits to
    /// make ids share buckets and probes.
    fn in_part0(low: u32) -> u64 {
        u64::from(low)
    }

    /// The index against a map, after any sequence of inserts and removes
    /// whose hashes fall in few buckets (so buckets overflow, probes run
    /// long and removed entries are passed and reused): every slot is
    /// found under its hash and no removed one is.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u8),
        Remove(u32),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                3 => (0u32..400, 0u8..6).prop_map(|(s, h)| Op::Insert(s, h)),
                2 => (0u32..400).prop_map(Op::Remove),
            ],
            0..1500,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn the_index_agrees_with_a_map(ops in ops()) {
            let mut index = Index::default();
            let mut model: HashMap<u32, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(slot, h) => {
                        if model.contains_key(&slot) {
                            continue;
                        }
                        // Few distinct hashes: many ids share a bucket.
                        let hash = in_part0(u32::from(h) * 0x1000 + (slot % 3));
                        index.insert(hash, slot);
                        model.insert(slot, hash);
                    }
                    Op::Remove(slot) => {
                        if let Some(hash) = model.remove(&slot) {
                            index.remove(hash, slot);
                        }
                    }
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for (&slot, &hash) in &model {
                prop_assert_eq!(index.find(hash, |s| s == slot), Some(slot));
            }
            for slot in 0..400 {
                if !model.contains_key(&slot) {
                    for h in 0..6u32 {
                        let hash = in_part0(h * 0x1000 + (slot % 3));
                        prop_assert_eq!(index.find(hash, |s| s == slot), None);
                    }
                }
            }
        }
    }

    #[test]
    fn ids_of_one_hash_are_told_apart_by_the_callers_check() {
        let mut index = Index::default();
        for slot in 0..100 {
            index.insert(7, slot);
        }
        for slot in 0..100 {
            assert_eq!(index.find(7, |s| s == slot), Some(slot));
        }
        assert_eq!(index.find(7, |s| s == 100), None);
        assert_eq!(index.find(8, |s| s == 5), None, "other hash bits");
    }

    #[test]
    fn a_part_emptied_and_filled_over_and_over_stays_small_and_exact() {
        // Removed entries are reused or dropped by a rebuild, so churn at a
        // steady size never grows the part.
        let mut index = Index::default();
        for round in 0..200u32 {
            for i in 0..1000u32 {
                index.insert(in_part0(i.wrapping_mul(0x9E37_79B9)), round * 1000 + i);
            }
            for i in 0..1000u32 {
                index.remove(in_part0(i.wrapping_mul(0x9E37_79B9)), round * 1000 + i);
            }
            assert_eq!(index.len(), 0);
        }
        let part = &index.parts[0];
        assert!(
            part.buckets.len() * WAYS <= 4 * 1000,
            "{} buckets for at most 1000 entries",
            part.buckets.len()
        );
        index.insert(in_part0(5), 3);
        assert_eq!(index.find(in_part0(5), |s| s == 3), Some(3));
    }

    #[test]
    fn a_growing_part_keeps_between_2_3_and_7_8_of_its_room_used() {
        // Room costs memory per record: a part never holds more than 3/2
        // of its entries' room (plus a bucket's rounding), or less than
        // 8/7 of it, at any size, so growth never leaves it half empty.
        let mut index = Index::default();
        for n in 1..=20_000u32 {
            index.insert(in_part0(n.wrapping_mul(0x9E37_79B9)), n);
            let part = &index.parts[0];
            let room = part.buckets.len() * WAYS;
            let len = part.len;
            assert!(room * 2 <= len * 3 + 2 * WAYS, "{len} entries in {room}");
            assert!(room * 7 >= len * 8, "{len} entries in {room}");
        }
        for n in 1..=20_000u32 {
            let hash = in_part0(n.wrapping_mul(0x9E37_79B9));
            assert_eq!(index.find(hash, |s| s == n), Some(n));
        }
    }

    #[test]
    fn removing_what_is_not_there_changes_nothing() {
        let mut index = Index::default();
        index.remove(1, 1);
        index.insert(1, 1);
        index.remove(1, 2);
        index.remove(2, 1);
        assert_eq!(index.len(), 1);
        assert_eq!(index.find(1, |s| s == 1), Some(1));
    }

    #[test]
    fn prefetching_reads_empty_and_filled_parts_alike() {
        let mut index = Index::default();
        // Parts never used have no buckets at all.
        index.prefetch(&[0, 1 << 32, u64::MAX]);
        index.insert(in_part0(3), 9);
        index.prefetch(&[in_part0(3), u64::MAX]);
        assert_eq!(index.find(in_part0(3), |s| s == 9), Some(9));
    }

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }
}
