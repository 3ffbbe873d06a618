//! Catch-up marks: for every record stream a neighbour shard sends us, how
//! far we have received it, so that a reopened link resends only the rest.
//!
//! A stream is one shard of one neighbour in one epoch (the shard's start).
//! Marks are read when a link opens and written when it closes, never per
//! record, so the lock here is off the hot path. Pure: no I/O.

use std::collections::HashMap;
use std::sync::Mutex;

/// How far each neighbour shard's stream has been received.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    // (neighbour, its shard) -> (its epoch, last sequence number received)
    marks: Mutex<HashMap<(String, u32), (u64, u64)>>,
}

impl Marks {
    /// No marks: every stream starts from the beginning.
    pub(crate) fn new() -> Marks {
        Marks::default()
    }

    /// The sequence number a link from `neighbour`'s `shard` in `epoch`
    /// should resume after: ours if the epoch matches, else 0 (resend all).
    pub(crate) fn since(&self, neighbour: &str, shard: u32, epoch: u64) -> u64 {
        let marks = self
            .marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match marks.get(&(neighbour.to_owned(), shard)) {
            Some(&(e, seq)) if e == epoch => seq,
            _ => 0,
        }
    }

    /// Remembers that the stream was received up to `seq`. A lower mark for
    /// the same epoch never replaces a higher one (an old link closing late).
    pub(crate) fn record(&self, neighbour: &str, shard: u32, epoch: u64, seq: u64) {
        let mut marks = self
            .marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mark = marks
            .entry((neighbour.to_owned(), shard))
            .or_insert((epoch, 0));
        if mark.0 != epoch {
            *mark = (epoch, seq);
        } else if seq > mark.1 {
            mark.1 = seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_stream_starts_from_zero() {
        assert_eq!(Marks::new().since("A", 0, 7), 0);
    }

    #[test]
    fn a_known_stream_resumes_after_its_mark() {
        let marks = Marks::new();
        marks.record("A", 1, 7, 100);
        assert_eq!(marks.since("A", 1, 7), 100);
        assert_eq!(marks.since("A", 0, 7), 0, "another shard is another stream");
        assert_eq!(marks.since("B", 1, 7), 0);
    }

    #[test]
    fn a_new_epoch_starts_over() {
        let marks = Marks::new();
        marks.record("A", 1, 7, 100);
        assert_eq!(marks.since("A", 1, 8), 0, "the neighbour restarted");
        marks.record("A", 1, 8, 5);
        assert_eq!(marks.since("A", 1, 8), 5);
    }

    #[test]
    fn a_late_lower_mark_does_not_move_the_mark_back() {
        let marks = Marks::new();
        marks.record("A", 1, 7, 100);
        marks.record("A", 1, 7, 60);
        assert_eq!(marks.since("A", 1, 7), 100);
    }
}
