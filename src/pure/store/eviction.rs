//! The eviction order of a full store (see `Oldest`): which record goes
//! first when a new client needs room. Pure.

use super::slots::{Slots, NONE};
use crate::pure::protocol::PosixTime;
use crate::pure::record::Record;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// One record's place in eviction order, as of when it was stored: its
/// client time, and its slot and number to tell whether it is still the
/// record there (a replaced or removed record's entry is stale and skipped).
/// Ordered by time, then slot: the slot only makes the order total; ties in
/// time are settled by client id in [`Oldest::tied`]. 20 bytes: the
/// seconds are split so that the entry needs no 8-byte alignment.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    secs_hi: u32,
    secs_lo: u32,
    nanos: u32,
    pub(super) slot: u32,
    pub(super) seq: u32,
}

impl Entry {
    fn new(slot: u32, record: &Record) -> Entry {
        let time = record.time();
        Entry {
            secs_hi: (time.secs >> 32) as u32,
            secs_lo: time.secs as u32,
            nanos: time.nanos,
            slot,
            seq: record.seq() as u32,
        }
    }

    pub(super) fn time(&self) -> PosixTime {
        PosixTime {
            secs: (u64::from(self.secs_hi) << 32) | u64::from(self.secs_lo),
            nanos: self.nanos,
        }
    }
}

/// A record with the oldest client time seen so far, with its id copied so
/// that the order of `tied` never depends on what its slot holds later.
pub(super) struct Tied {
    pub(super) id: Box<str>,
    pub(super) slot: u32,
    pub(super) seq: u32,
}

/// The eviction order of a full store: a min-heap of entries, pushed on
/// every apply while the store is full (a push of the newest time, the
/// usual case, is one comparison), with stale entries dropped when they
/// reach the top. Entries of the oldest time are moved to `tied`, sorted by
/// client id, so that many clients with the same time (whole seconds) cost
/// one sort, not a heap scan per eviction. Rebuilt from the list when stale
/// entries make the heap half again as large as the store, so it holds at
/// most 1.5 entries per record.
#[derive(Default)]
pub(super) struct Oldest {
    pub(super) heap: BinaryHeap<Reverse<Entry>>,
    // Records whose client time is `tied_time`, by client id descending:
    // the oldest is last. Every live record is in `heap` or here.
    pub(super) tied: Vec<Tied>,
    pub(super) tied_time: PosixTime,
}

/// Whether `slot` still holds the record numbered `seq`.
pub(super) fn holds(slots: &Slots, slot: u32, seq: u32) -> bool {
    slots
        .record(slot)
        .is_some_and(|r| r.seq() == u64::from(seq))
}

impl Oldest {
    /// The order of every record in the list, in one pass (heapify is
    /// linear).
    pub(super) fn build(slots: &Slots, head: u32) -> Oldest {
        let mut entries = Vec::new();
        let mut at = head;
        while at != NONE {
            let slot = slots.get(at);
            if let Some(record) = &slot.record {
                entries.push(Reverse(Entry::new(at, record)));
            }
            at = slot.next;
        }
        Oldest {
            heap: BinaryHeap::from(entries),
            tied: Vec::new(),
            tied_time: PosixTime::default(),
        }
    }

    /// The slot of the oldest stored record (client time, then client id
    /// as bytes), or `None` when the store is empty.
    pub(super) fn oldest(&mut self, slots: &Slots) -> Option<u32> {
        loop {
            while self
                .tied
                .last()
                .is_some_and(|t| !holds(slots, t.slot, t.seq))
            {
                self.tied.pop();
            }
            while self
                .heap
                .peek()
                .is_some_and(|Reverse(e)| !holds(slots, e.slot, e.seq))
            {
                self.heap.pop();
            }
            let top = self.heap.peek().map(|Reverse(e)| e.time());
            let tied = self.tied.last().map(|t| t.slot);
            match (tied, top) {
                (None, None) => return None,
                (Some(slot), None) => return Some(slot),
                (Some(slot), Some(top)) if top > self.tied_time => return Some(slot),
                (Some(_), Some(top)) if top < self.tied_time => {
                    // An older record came in (the store was below its cap
                    // after expiry): the tied ones go back to the heap.
                    let time = self.tied_time;
                    for t in self.tied.drain(..) {
                        self.heap.push(Reverse(Entry {
                            secs_hi: (time.secs >> 32) as u32,
                            secs_lo: time.secs as u32,
                            nanos: time.nanos,
                            slot: t.slot,
                            seq: t.seq,
                        }));
                    }
                }
                (_, Some(top)) => {
                    // The heap's oldest time is the tied time, or nothing
                    // is tied: move every live record of that time over.
                    self.tied_time = top;
                    while let Some(&Reverse(e)) = self.heap.peek() {
                        if e.time() != top {
                            break;
                        }
                        self.heap.pop();
                        let Some(record) =
                            slots.record(e.slot).filter(|r| r.seq() == u64::from(e.seq))
                        else {
                            continue;
                        };
                        let id = record.client_id();
                        let at = self
                            .tied
                            .partition_point(|t| t.id.as_bytes() > id.as_bytes());
                        self.tied.insert(
                            at,
                            Tied {
                                id: id.into(),
                                slot: e.slot,
                                seq: e.seq,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Adds `record`, now in `slot`, to the order: one comparison for the
    /// newest time, the usual case.
    pub(super) fn push(&mut self, slot: u32, record: &Record) {
        self.heap.push(Reverse(Entry::new(slot, record)));
    }

    /// Entries held, stale ones included.
    pub(super) fn entries(&self) -> usize {
        self.heap.len() + self.tied.len()
    }
}

/// Whether `a` goes before `b` in eviction order: client time, then client
/// id as bytes. Every server uses the same rule, so servers that saw the
/// same records keep the same newest ones.
pub(super) fn evicted_before(a: &Record, b: &Record) -> bool {
    a.time()
        .cmp(&b.time())
        .then_with(|| a.client_id().as_bytes().cmp(b.client_id().as_bytes()))
        == Ordering::Less
}
