//! Where a store keeps its records: slots in fixed-size chunks that never
//! move, threaded into the update-order list by their `prev`/`next`, and
//! the index from client id to slot. Pure.

use crate::pure::index::{self, SLOT_LIMIT};
use crate::pure::record::Record;

/// Slots per chunk: 4096 slots of 32 bytes are 128 KiB, small enough that
/// allocating one is not a pause, large enough that the chunk list is short.
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// No slot: the end of the update-order list or of the free list, or a
/// cursor before the head. Slot indices stay below it.
pub(super) const NONE: u32 = u32::MAX;

/// A record and its neighbours in update order. A free slot has no record,
/// and its `next` links the free list.
pub(super) struct Slot {
    pub(super) record: Option<Record>,
    pub(super) prev: u32,
    pub(super) next: u32,
}

/// Slots that never move: a list of fixed-size chunks, each allocated at its
/// full capacity once, so a push never reallocates or copies earlier slots.
#[derive(Default)]
pub(super) struct Slots {
    pub(super) chunks: Vec<Vec<Slot>>,
    pub(super) len: usize,
}

impl Slots {
    pub(super) fn get(&self, slot: u32) -> &Slot {
        let slot = slot as usize;
        &self.chunks[slot >> CHUNK_BITS][slot & (CHUNK - 1)]
    }

    pub(super) fn get_mut(&mut self, slot: u32) -> &mut Slot {
        let slot = slot as usize;
        &mut self.chunks[slot >> CHUNK_BITS][slot & (CHUNK - 1)]
    }

    pub(super) fn record(&self, slot: u32) -> Option<&Record> {
        self.get(slot).record.as_ref()
    }

    /// The sequence number of the record in `slot` (0 for a free slot).
    pub(super) fn seq(&self, slot: u32) -> u64 {
        self.record(slot).map_or(0, Record::seq)
    }

    /// Adds a slot at the end; `None` once slot indices would reach the
    /// index's limit (which is below `NONE`).
    pub(super) fn push(&mut self, slot: Slot) -> Option<u32> {
        let index = u32::try_from(self.len).ok().filter(|&i| i < SLOT_LIMIT)?;
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut()?.push(slot);
        self.len += 1;
        Some(index)
    }
}

/// Client id -> slot: the [`index::Index`] of 32-bit hash tags, with the
/// keys that hash client ids.
pub(super) struct Index {
    pub(super) table: index::Index,
    // Random keys per process: client ids come off the network, so a fixed
    // hash would let a client pick colliding ids.
    hasher: ahash::RandomState,
}

impl Index {
    pub(super) fn new() -> Index {
        Index {
            table: index::Index::default(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// The hash of a client id's bytes (as bytes, so that the look-ahead
    /// can hash an id it has not checked as text).
    pub(super) fn hash(&self, client_id: &[u8]) -> u64 {
        self.hasher.hash_one(client_id)
    }

    pub(super) fn find(&self, slots: &Slots, hash: u64, client_id: &str) -> Option<u32> {
        self.table.find(hash, |slot| {
            slots
                .record(slot)
                .is_some_and(|stored| stored.client_id() == client_id)
        })
    }

    pub(super) fn insert(&mut self, hash: u64, slot: u32) {
        self.table.insert(hash, slot);
    }

    pub(super) fn remove(&mut self, hash: u64, slot: u32) {
        self.table.remove(hash, slot);
    }
}
