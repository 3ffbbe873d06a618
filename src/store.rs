//! The per-shard store: the newest record of every client this shard owns.
//!
//! Owned by one shard and touched only by it (no locks). Applies the ordering
//! rule: a record replaces the stored one only if it is newer. Pure: no I/O.

use crate::record::Record;
use hashbrown::HashTable;

/// Client id -> newest record, keyed by the id inside the record itself so
/// that no id is stored twice.
#[derive(Default)]
pub struct Store {
    table: HashTable<Record>,
    // Random keys per process: client ids come off the network, so a fixed
    // hash would let a client pick colliding ids.
    hasher: ahash::RandomState,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Stores `record` if it is newer than the stored record of its client.
    /// Returns the stored record when it was applied, `None` when it was stale.
    pub fn apply(&mut self, record: Record) -> Option<&Record> {
        let hash = self.hasher.hash_one(record.client_id());
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hash,
            |stored| stored.client_id() == record.client_id(),
            |stored| hasher.hash_one(stored.client_id()),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                if !record.is_newer_than(slot.get()) {
                    return None;
                }
                *slot.get_mut() = record;
                Some(slot.into_mut())
            }
            hashbrown::hash_table::Entry::Vacant(slot) => Some(slot.insert(record).into_mut()),
        }
    }

    /// The stored record of `client_id`.
    pub fn get(&self, client_id: &str) -> Option<&Record> {
        let hash = self.hasher.hash_one(client_id);
        self.table
            .find(hash, |stored| stored.client_id() == client_id)
    }

    /// Number of clients with a record.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no client has a record.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every stored record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.table.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_line, Command, Parsed, PosixTime};
    use proptest::prelude::*;

    fn record(server: &str, line: &str) -> Record {
        let Parsed::Command(Command::IAmAt(i)) = parse_line(line.as_bytes()) else {
            panic!("bad test line {line}")
        };
        Record::from_iamat(
            server,
            PosixTime {
                secs: 1000,
                nanos: 0,
            },
            &i,
        )
    }

    #[test]
    fn first_record_of_a_client_is_stored() {
        let mut store = Store::new();
        let r = record("A", "IAMAT c +1-2 10");
        assert_eq!(store.apply(r.clone()), Some(&r));
        assert_eq!(store.get("c"), Some(&r));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("d"), None);
    }

    #[test]
    fn older_iamat_is_not_stored() {
        let mut store = Store::new();
        let new = record("A", "IAMAT c +1-2 20");
        let old = record("A", "IAMAT c +3-4 10");
        store.apply(new.clone());
        assert_eq!(store.apply(old), None);
        assert_eq!(store.get("c"), Some(&new));
    }

    #[test]
    fn the_same_record_twice_is_dropped_the_second_time() {
        let mut store = Store::new();
        let r = record("A", "IAMAT c +1-2 10");
        assert!(store.apply(r.clone()).is_some());
        assert!(store.apply(r).is_none(), "a flood echo must stop here");
    }

    #[test]
    fn newer_record_replaces_the_stored_one() {
        let mut store = Store::new();
        store.apply(record("A", "IAMAT c +1-2 10"));
        let new = record("B", "IAMAT c +5-6 11");
        assert_eq!(store.apply(new.clone()), Some(&new));
        assert_eq!(store.get("c"), Some(&new));
        assert_eq!(store.len(), 1);
    }

    proptest! {
        #[test]
        fn any_arrival_order_leaves_the_same_store(
            updates in proptest::collection::vec((0u8..6, 0u64..5, 0u8..3, 0u8..3), 1..60),
            seed in any::<u64>(),
        ) {
            let servers = ["Goloman", "Hands", "Welsh"];
            let records: Vec<Record> = updates
                .iter()
                .map(|&(client, time, server, lat)| {
                    record(servers[server as usize], &format!("IAMAT c{client} +{lat}-1 {time}"))
                })
                .collect();
            let mut shuffled = records.clone();
            // A cheap deterministic shuffle driven by the seed.
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut a = Store::new();
            let mut b = Store::new();
            for r in records { a.apply(r); }
            for r in shuffled { b.apply(r); }
            let mut da: Vec<_> = a.records().map(|r| r.line().to_owned()).collect();
            let mut db: Vec<_> = b.records().map(|r| r.line().to_owned()).collect();
            da.sort();
            db.sort();
            prop_assert_eq!(da, db);
        }
    }
}
