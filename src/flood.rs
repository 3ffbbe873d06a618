//! The flood queue: records waiting to be sent to one neighbour.
//!
//! Owned by one shard's link to one neighbour. Bounded: when full, older
//! records of a client give way to its newest, then the oldest records are
//! dropped and counted. Pure: the link task drains it and does the I/O.

use crate::record::Record;
use std::collections::{HashSet, VecDeque};

/// A bounded FIFO of AT lines for one neighbour.
#[derive(Debug)]
pub struct FloodQueue {
    records: VecDeque<Record>,
    capacity: usize,
    dropped: u64,
}

impl FloodQueue {
    /// A queue of at most `capacity` records (at least one).
    pub fn new(capacity: usize) -> FloodQueue {
        FloodQueue {
            records: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Enqueues a record to flood.
    pub fn flood(&mut self, record: Record) {
        if self.records.len() >= self.capacity {
            self.make_room();
        }
        self.records.push_back(record);
    }

    /// Keeps the newest record per client; if that frees too little, drops
    /// the oldest records so the next pushes are cheap again.
    fn make_room(&mut self) {
        let mut seen = HashSet::with_capacity(self.records.len());
        let mut kept: VecDeque<Record> = self
            .records
            .drain(..)
            .rev()
            .filter(|r| seen.insert(r.client_id().to_owned()))
            .collect();
        drop(seen);
        // `kept` is newest first; restore arrival order.
        kept.make_contiguous().reverse();
        // Leave room for this push and, on a large queue, an eighth more, so
        // that the next pushes do not have to coalesce again at once.
        let keep = self.capacity - (self.capacity / 8).max(1);
        if kept.len() > keep {
            let excess = kept.len() - keep;
            kept.drain(..excess);
            self.dropped += excess as u64;
        }
        self.records = kept;
    }

    /// Takes up to `max` records, oldest first.
    pub fn take(&mut self, max: usize) -> Vec<Record> {
        let n = max.min(self.records.len());
        self.records.drain(..n).collect()
    }

    /// Puts back records that could not be sent, ahead of newer ones.
    pub fn put_back(&mut self, records: Vec<Record>) {
        for r in records.into_iter().rev() {
            self.records.push_front(r);
        }
        while self.records.len() > self.capacity {
            // Over capacity only by what was in flight: keep the newest.
            self.records.pop_front();
            self.dropped += 1;
        }
    }

    /// Forgets every queued record (a catch-up resends them from the store).
    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records dropped because the queue was full, since it was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_line, Command, Parsed, PosixTime};

    fn record(client: &str, time: u64) -> Record {
        let line = format!("IAMAT {client} +1-2 {time}");
        let Parsed::Command(Command::IAmAt(i)) = parse_line(line.as_bytes()) else {
            panic!("bad test line")
        };
        Record::from_iamat(
            "A",
            PosixTime {
                secs: 100,
                nanos: 0,
            },
            &i,
        )
    }

    #[test]
    fn records_leave_in_arrival_order() {
        let mut q = FloodQueue::new(10);
        for t in 0..5 {
            q.flood(record(&format!("c{t}"), t));
        }
        let ids: Vec<_> = q.take(3).iter().map(|r| r.client_id().to_owned()).collect();
        assert_eq!(ids, ["c0", "c1", "c2"]);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn full_queue_keeps_the_newest_record_of_each_client() {
        let mut q = FloodQueue::new(4);
        q.flood(record("a", 1));
        q.flood(record("b", 1));
        q.flood(record("a", 2));
        q.flood(record("a", 3));
        q.flood(record("b", 2));
        let left: Vec<_> = q.take(10).iter().map(|r| r.line().to_owned()).collect();
        assert!(left.len() <= 4);
        assert!(left.iter().any(|l| l.ends_with(" a +1-2 3")));
        assert!(left.iter().any(|l| l.ends_with(" b +1-2 2")));
        assert_eq!(q.dropped(), 0, "coalescing is not a loss");
    }

    #[test]
    fn full_queue_of_distinct_clients_drops_the_oldest_and_counts_them() {
        let mut q = FloodQueue::new(8);
        for t in 0..100 {
            q.flood(record(&format!("c{t}"), t));
            assert!(q.len() <= 8);
        }
        let left = q.take(100);
        assert_eq!(
            left.last().map(|r| r.client_id().to_owned()),
            Some("c99".into())
        );
        assert_eq!(q.dropped() + left.len() as u64, 100);
    }

    #[test]
    fn records_put_back_go_first() {
        let mut q = FloodQueue::new(10);
        q.flood(record("a", 1));
        q.flood(record("b", 1));
        let batch = q.take(1);
        q.flood(record("c", 1));
        q.put_back(batch);
        let ids: Vec<_> = q
            .take(10)
            .iter()
            .map(|r| r.client_id().to_owned())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
