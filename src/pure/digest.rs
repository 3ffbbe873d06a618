//! Digests of what a server holds, the summaries that lazy links carry
//! (PROTOCOL.md, "Flood trees"): per origin and per second of the origin's
//! receive time, the XOR of the fingerprints of the records held and their
//! number. Two servers that hold the same records there have the same
//! entry; a record one lacks makes them differ.
//!
//! [`ShardDigests`] is one shard's part: it folds records in as a cursor
//! passes them and out as they leave, and keeps, per entry, where in the
//! shard's log its first record lies (a `GRAFT` resends from there).
//! [`Board`] is the server's sum over its shards, with a version per
//! change, which links announce and receivers compare against. Pure: the
//! time is a parameter.

use crate::pure::record::Record;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// 64 bits of `bytes`, the same on every server and version (PROTOCOL.md
/// gives the steps): word-at-a-time, so a record's costs a few ns.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (bytes.len() as u64) ^ K;
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 32;
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 32;
    }
    // murmur3's final mix.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The whole second at which a record's origin made it: its client time
/// plus its skew (the skew is the origin's receive time minus the client
/// time). Seconds of it end as real time passes, whatever client times
/// clients send, so an entry of a past second stops changing once its
/// records have spread. 0 for a line without a skew of the usual form.
pub(crate) fn origin_second(record: &Record) -> u64 {
    let mut fields = record.line().splitn(4, ' ');
    let skew = fields.nth(2).unwrap_or("");
    let time = record.time();
    let (negative, digits) = match skew.as_bytes().first() {
        Some(b'+') => (false, &skew[1..]),
        Some(b'-') => (true, &skew[1..]),
        _ => return 0,
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut secs = 0u64;
    for b in int.bytes() {
        secs = secs
            .saturating_mul(10)
            .saturating_add(u64::from(b.wrapping_sub(b'0')));
    }
    let nanos = frac
        .bytes()
        .take(9)
        .fold(0u64, |n, b| n * 10 + u64::from(b.wrapping_sub(b'0')));
    let client = u128::from(time.secs) * 1_000_000_000 + u128::from(time.nanos);
    let skew = u128::from(secs) * 1_000_000_000 + u128::from(nanos);
    let origin = if negative {
        client.saturating_sub(skew)
    } else {
        client.saturating_add(skew)
    };
    u64::try_from(origin / 1_000_000_000).unwrap_or(u64::MAX)
}

/// An entry's place: the origin's server id and the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    /// The server id of the records' origin.
    pub origin: u8,
    /// The second of the origin's receive time.
    pub second: u64,
}

/// An entry: the XOR of the fingerprints of the records there, and their
/// number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Digest {
    /// XOR of the records' fingerprints.
    pub xor: u64,
    /// How many records.
    pub count: u64,
}

/// One shard's entry: how many of its records are there, where the first
/// one folded in lies in its log, and what changed since it was last
/// taken for the board.
#[derive(Debug, Clone, Copy, Default)]
struct Local {
    count: u64,
    /// No record of the entry lies before this sequence number.
    lo: u32,
    xor_change: u64,
    count_change: i64,
    changed: bool,
}

/// A change of one entry of a shard, for the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    /// Which entry.
    pub key: Key,
    /// XOR this into the entry.
    pub xor: u64,
    /// Add this to its count.
    pub count: i64,
}

/// One shard's digests: the records a cursor has passed, folded in.
#[derive(Debug, Default)]
pub(crate) struct ShardDigests {
    entries: HashMap<Key, Local>,
    changed: Vec<Key>,
}

impl ShardDigests {
    /// Folds in `record` (of origin `origin`), numbered `seq` in the log.
    pub(crate) fn add(&mut self, record: &Record, seq: u32) {
        let key = key_of(record);
        let fp = fingerprint(record.line().as_bytes());
        let local = self.entries.entry(key).or_insert(Local {
            lo: seq,
            ..Local::default()
        });
        local.count += 1;
        local.lo = local.lo.min(seq);
        local.xor_change ^= fp;
        local.count_change += 1;
        if !local.changed {
            local.changed = true;
            self.changed.push(key);
        }
    }

    /// Folds out `record`, which was folded in and leaves the shard.
    pub(crate) fn remove(&mut self, record: &Record) {
        let key = key_of(record);
        let fp = fingerprint(record.line().as_bytes());
        let Some(local) = self.entries.get_mut(&key) else {
            return;
        };
        local.count = local.count.saturating_sub(1);
        local.xor_change ^= fp;
        local.count_change -= 1;
        if !local.changed {
            local.changed = true;
            self.changed.push(key);
        }
    }

    /// The changes since the last call, for the board; entries left empty
    /// are forgotten.
    pub(crate) fn take(&mut self) -> Vec<Change> {
        let mut out = Vec::with_capacity(self.changed.len());
        for key in self.changed.drain(..) {
            let Some(local) = self.entries.get_mut(&key) else {
                continue;
            };
            if local.xor_change != 0 || local.count_change != 0 {
                out.push(Change {
                    key,
                    xor: local.xor_change,
                    count: local.count_change,
                });
            }
            local.xor_change = 0;
            local.count_change = 0;
            local.changed = false;
            if local.count == 0 {
                self.entries.remove(&key);
            }
        }
        out
    }

    /// No record of entry `key` lies before this sequence number in the
    /// shard's log; `None` when none was folded in.
    pub(crate) fn lo(&self, key: Key) -> Option<u32> {
        self.entries.get(&key).map(|l| l.lo)
    }

    /// The log was renumbered: where entries begin is no longer known, so
    /// every one begins at the start.
    pub(crate) fn renumbered(&mut self) {
        for local in self.entries.values_mut() {
            local.lo = 0;
        }
    }
}

/// The entry a record is folded into.
fn key_of(record: &Record) -> Key {
    Key {
        origin: record.tags().origin,
        second: origin_second(record),
    }
}

/// One entry of the board.
#[derive(Debug, Clone, Copy)]
struct Entry {
    digest: Digest,
    version: u64,
    changed: Instant,
}

/// The server's digests, the sum over its shards, each change numbered by a
/// version that only grows, so a link announces what changed since the
/// version it last announced. Entries left empty are kept for a while, so
/// that links announce them emptied, then forgotten.
#[derive(Debug, Default)]
pub(crate) struct Board {
    entries: HashMap<Key, Entry>,
    by_version: BTreeMap<u64, Key>,
    version: u64,
    /// By origin id: the latest second of a record of it that this server's
    /// parent in its tree brought (see `Shard::apply`).
    from_parent: HashMap<u8, u64>,
}

/// How long an emptied entry is kept before it is forgotten.
const KEEP_EMPTY: Duration = Duration::from_secs(60);

impl Board {
    /// Applies a shard's changes, at `now`.
    pub(crate) fn apply(&mut self, changes: &[Change], now: Instant) {
        for change in changes {
            self.version += 1;
            let entry = self.entries.entry(change.key).or_insert(Entry {
                digest: Digest::default(),
                version: 0,
                changed: now,
            });
            self.by_version.remove(&entry.version);
            entry.digest.xor ^= change.xor;
            entry.digest.count = entry.digest.count.saturating_add_signed(change.count);
            entry.version = self.version;
            entry.changed = now;
            self.by_version.insert(self.version, change.key);
        }
    }

    /// Forgets entries that have been empty for a while.
    pub(crate) fn forget_empty(&mut self, now: Instant) {
        let gone: Vec<(Key, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.digest == Digest::default()
                    && now.saturating_duration_since(e.changed) >= KEEP_EMPTY
            })
            .map(|(k, e)| (*k, e.version))
            .collect();
        for (key, version) in gone {
            self.entries.remove(&key);
            self.by_version.remove(&version);
        }
    }

    /// This server's digest of entry `key` and since when it has been so
    /// (`None`: never held anything there, or forgotten; as empty).
    pub(crate) fn get(&self, key: Key) -> (Digest, Option<Instant>) {
        match self.entries.get(&key) {
            Some(e) => (e.digest, Some(e.changed)),
            None => (Digest::default(), None),
        }
    }

    /// At most `max` entries changed after version `after`, oldest change
    /// first, with their versions.
    pub(crate) fn changed_after(&self, after: u64, max: usize) -> Vec<(Key, Digest, u64)> {
        self.by_version
            .range(after.saturating_add(1)..)
            .take(max)
            .filter_map(|(&v, key)| Some((*key, self.entries.get(key)?.digest, v)))
            .collect()
    }

    /// A shard saw its parent in `origin`'s tree bring a record of it from
    /// `second`.
    pub(crate) fn parent_brought(&mut self, origin: u8, second: u64) {
        let latest = self.from_parent.entry(origin).or_insert(second);
        *latest = (*latest).max(second);
    }

    /// The latest second of a record of `origin` its tree's parent brought.
    pub(crate) fn latest_from_parent(&self, origin: u8) -> Option<u64> {
        self.from_parent.get(&origin).copied()
    }

    /// Entries held (emptied ones not yet forgotten included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::protocol::{parse_line, Command, Parsed};
    use crate::pure::record::Tags;

    fn at(line: &str, origin: u8) -> Record {
        let Parsed::Command(Command::At(at)) = parse_line(line.as_bytes()) else {
            panic!("not an AT line: {line}")
        };
        Record::from_at(&at, Tags { source: 0, origin })
    }

    #[test]
    fn fingerprints_follow_the_documented_steps() {
        // Computed independently from PROTOCOL.md's steps (Python).
        assert_eq!(fingerprint(b""), 0x9ca0_66f1_a4ab_2eea);
        assert_eq!(fingerprint(b"AT A +0.1 c +1+2 3"), 0xd9a9_659e_eafb_34e3);
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abc\0"));
    }

    #[test]
    fn the_origin_second_is_the_client_time_plus_the_skew() {
        let r = at("AT A +0.263873386 c +1+2 1621464827.959498503", 1);
        assert_eq!(origin_second(&r), 1621464828);
        let r = at("AT A -2.500000000 c +1+2 1000.4", 1);
        assert_eq!(origin_second(&r), 997);
        let r = at("AT A -20.000000000 c +1+2 5", 1);
        assert_eq!(origin_second(&r), 0, "before the epoch: the epoch");
        let r = at("AT A +9.999999999 c +1+2 0.000000001", 1);
        assert_eq!(origin_second(&r), 10);
    }

    #[test]
    fn a_shard_folds_records_in_and_out_and_hands_the_board_its_changes() {
        let mut shard = ShardDigests::default();
        let (a, b) = (
            at("AT A +1.000000000 a +1+2 100", 1),
            at("AT A +1.000000000 b +1+2 100", 1),
        );
        shard.add(&a, 7);
        shard.add(&b, 9);
        let key = Key {
            origin: 1,
            second: 101,
        };
        assert_eq!(shard.lo(key), Some(7));
        let t0 = Instant::now();
        let mut board = Board::default();
        board.apply(&shard.take(), t0);
        let both = fingerprint(a.line().as_bytes()) ^ fingerprint(b.line().as_bytes());
        assert_eq!(
            board.get(key),
            (
                Digest {
                    xor: both,
                    count: 2
                },
                Some(t0)
            )
        );
        assert!(shard.take().is_empty(), "nothing changed since");
        shard.remove(&a);
        shard.remove(&b);
        let t1 = t0 + Duration::from_secs(1);
        board.apply(&shard.take(), t1);
        assert_eq!(board.get(key), (Digest::default(), Some(t1)));
        assert_eq!(shard.lo(key), None, "an empty entry is forgotten");
        board.forget_empty(t1 + KEEP_EMPTY);
        assert_eq!(board.get(key), (Digest::default(), None));
        assert_eq!(board.len(), 0);
    }

    #[test]
    fn the_board_sums_shards_and_lists_changes_by_version() {
        let (mut s0, mut s1) = (ShardDigests::default(), ShardDigests::default());
        let x = at("AT A +0.000000000 x +1+2 50", 1);
        let y = at("AT B +0.000000000 y +1+2 50", 2);
        let z = at("AT A +0.000000000 z +1+2 51", 1);
        s0.add(&x, 1);
        s1.add(&y, 1);
        let t = Instant::now();
        let mut board = Board::default();
        board.apply(&s0.take(), t);
        board.apply(&s1.take(), t);
        let v = board.version;
        s1.add(&z, 2);
        board.apply(&s1.take(), t);
        let changed = board.changed_after(v, 10);
        assert_eq!(changed.len(), 1);
        assert_eq!(
            changed[0].0,
            Key {
                origin: 1,
                second: 51
            }
        );
        assert_eq!(board.changed_after(0, 10).len(), 3);
        assert_eq!(
            board.changed_after(0, 2).len(),
            2,
            "at most as many as asked"
        );
        // An entry changed again moves to the newest version.
        s0.remove(&x);
        board.apply(&s0.take(), t);
        let keys: Vec<Key> = board.changed_after(0, 10).iter().map(|c| c.0).collect();
        assert_eq!(keys.last().map(|k| k.second), Some(50));
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn the_parent_s_latest_second_only_grows() {
        let mut board = Board::default();
        assert_eq!(board.latest_from_parent(3), None);
        board.parent_brought(3, 10);
        board.parent_brought(3, 8);
        assert_eq!(board.latest_from_parent(3), Some(10));
    }
}
