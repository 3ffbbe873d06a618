//! The sending end of a link's flood trees (PROTOCOL.md, "Flood trees"),
//! for one connection: which records the link sends (the receiver's
//! origins as a child, the ones it grafted, its own records in a catch-up
//! from nothing, everything on a link that floods), and the digest entries
//! it announces. The receiving end is `repair.rs`.
//!
//! Pure: the shell (`net/link/outgoing.rs`) feeds it the receiver's `SINCE`,
//! `GRAFT` and `PRUNE`, asks it about each record past the cursor, and
//! writes what it announces; where a graft sends the cursor back is the
//! store's (`Store::before_entry`).

use crate::pure::digest::{origin_second, Board};
use crate::pure::flood_lines::{self, FloodLine};
use crate::pure::flood_tree::{bit, Origins, Trees};
use crate::pure::record::Record;
use crate::pure::server_ids::ServerIds;
use std::sync::Arc;

/// What one link sends along the trees.
#[derive(Debug, Clone)]
pub(crate) struct TreeOut {
    /// The receiver's server id.
    neighbour: u8,
    trees: Arc<Trees>,
    /// Whether the link is a tree link (both ends, same graph); else it
    /// floods.
    tree_link: bool,
    /// Origins the receiver grafted.
    grafted: Origins,
    /// A receiver that holds nothing of this stream (`SINCE 0`) is sent
    /// the records it made itself, up to this number: no tree brings them.
    own_until: u64,
    /// The version of the last announcement written, once the receiver
    /// takes them.
    announced: Option<u64>,
    /// A receiver that held records of this sender's earlier run is sent
    /// records made before this second only when it grafts their origin:
    /// it most likely holds them, and the announcements find any it lacks
    /// (a sender restarted empty refills from its own parents, and would
    /// otherwise pass it all again).
    lazy_before: Option<u64>,
    /// The furthest the cursor had gone when a graft moved it back: the
    /// records of the receiver's tree origins up to there that were made
    /// from `lazy_before` on have been sent already.
    passed: u64,
}

impl TreeOut {
    /// A link to `neighbour` (a server id), sending along `trees`; it
    /// floods until [`TreeOut::opened`] says otherwise.
    pub(crate) fn new(neighbour: u8, trees: Arc<Trees>) -> TreeOut {
        TreeOut {
            neighbour,
            trees,
            tree_link: false,
            grafted: 0,
            own_until: 0,
            announced: None,
            lazy_before: None,
            passed: 0,
        }
    }

    /// The receiver answered: `SINCE since`, with this stream at `head` when
    /// the link opened; whether it is a tree link, and the version to
    /// announce after (`None`: it takes no announcements).
    pub(crate) fn opened(
        &mut self,
        since: u64,
        head: u64,
        tree_link: bool,
        announce_after: Option<u64>,
    ) {
        self.tree_link = tree_link;
        self.own_until = if since == 0 { head } else { 0 };
        self.announced = announce_after;
        self.lazy_before = None;
        self.passed = 0;
    }

    /// The receiver holds nothing of this stream but held records of the
    /// sender's earlier run (its `TREE` named another run of ours): records
    /// made before `second` go to it only for origins it grafts.
    pub(crate) fn lazy_before(&mut self, second: u64) {
        if self.tree_link {
            self.lazy_before = Some(second);
        }
    }

    /// The cursor is about to move back from `at` for a graft.
    pub(crate) fn rewinding(&mut self, at: u64) {
        self.passed = self.passed.max(at);
    }

    /// Whether the link sends `record`.
    pub(crate) fn wants(&self, record: &Record) -> bool {
        if !self.tree_link {
            return true;
        }
        let tags = record.tags();
        if !self.trees.knows(tags.origin) {
            return true;
        }
        if let Some(before) = self.lazy_before {
            let grafted = self.grafted & bit(tags.origin) != 0;
            if origin_second(record) < before {
                if !grafted {
                    return false;
                }
            } else if record.seq() <= self.passed
                && self.trees.children_of(self.neighbour) & bit(tags.origin) != 0
            {
                // Sent before a graft moved the cursor back.
                return false;
            }
        }
        self.eager() & bit(tags.origin) != 0
            || (tags.origin == self.neighbour && record.seq() <= self.own_until)
    }

    /// The origins whose records the link sends now (all when it floods).
    pub(crate) fn eager(&self) -> Origins {
        if !self.tree_link {
            return Origins::MAX;
        }
        self.trees.children_of(self.neighbour) | self.grafted
    }

    /// The receiver grafted `origin` (a server id): its records go on this
    /// link from now on, until pruned.
    pub(crate) fn graft(&mut self, origin: u8) {
        self.grafted |= bit(origin);
    }

    /// The receiver pruned `origin`.
    pub(crate) fn prune(&mut self, origin: u8) {
        self.grafted &= !bit(origin);
    }

    /// Whether the receiver takes announcements.
    pub(crate) fn announcing(&self) -> bool {
        self.announced.is_some()
    }

    /// Appends at most `max` digest entries of `board` changed since the
    /// last announcement, then the version they bring the receiver to;
    /// nothing when none changed. Entries of origins without a name here
    /// are left out: no receiver could tell which they are.
    pub(crate) fn announce(
        &mut self,
        board: &Board,
        ids: &ServerIds,
        max: usize,
        out: &mut Vec<u8>,
    ) {
        let Some(after) = self.announced else {
            return;
        };
        let changed = board.changed_after(after, max);
        let Some(&(_, _, last)) = changed.last() else {
            return;
        };
        for (key, digest, _) in &changed {
            if let Some(origin) = ids.name(key.origin) {
                let entry = FloodLine::Entry {
                    origin,
                    second: key.second,
                    digest: *digest,
                };
                flood_lines::write(out, &entry);
            }
        }
        flood_lines::write(out, &FloodLine::Version(last));
        self.announced = Some(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::digest::Change;
    use crate::pure::digest::Key;
    use crate::pure::protocol::{parse_line, Command, Parsed};
    use crate::pure::record::Tags;
    use std::time::Instant;

    /// The line A - B - C, seen from B, and its ids.
    fn line_at_b() -> (Arc<Trees>, ServerIds) {
        let servers = [
            ("A".to_owned(), vec!["B".to_owned()]),
            ("B".to_owned(), vec!["A".to_owned(), "C".to_owned()]),
            ("C".to_owned(), vec!["B".to_owned()]),
        ];
        let ids = ServerIds::new(["A", "B", "C"]);
        let trees = Trees::new(
            servers.iter().map(|(n, l)| (n.as_str(), l.as_slice())),
            "B",
            &ids,
        );
        (Arc::new(trees), ids)
    }

    fn made_by(origin: u8, seq: u32) -> Record {
        let line = format!("AT X +0.000000001 c{seq} +1+2 5");
        let Parsed::Command(Command::At(at)) = parse_line(line.as_bytes()) else {
            panic!("AT did not parse")
        };
        let mut r = Record::from_at(&at, Tags { source: 0, origin });
        r.set_seq(seq);
        r
    }

    #[test]
    fn a_tree_link_sends_its_children_s_origins_grafts_and_a_new_receiver_s_own_records() {
        let (trees, _) = line_at_b();
        // B to C: C is B's child in A's tree and in B's, not in C's own.
        let mut to_c = TreeOut::new(3, trees);
        assert!(to_c.wants(&made_by(3, 1)), "floods until opened");
        to_c.opened(40, 50, true, Some(0));
        assert!(to_c.wants(&made_by(1, 1)) && to_c.wants(&made_by(2, 1)));
        assert!(!to_c.wants(&made_by(3, 60)), "C's own records come from C");
        assert!(
            to_c.wants(&made_by(0, 60)),
            "origins without a tree go everywhere"
        );
        to_c.graft(3);
        assert!(to_c.wants(&made_by(3, 60)));
        to_c.prune(3);
        assert!(!to_c.wants(&made_by(3, 60)));
        // From nothing, C gets back what it made that B held at the opening.
        to_c.opened(0, 50, true, Some(0));
        assert!(to_c.wants(&made_by(3, 50)) && !to_c.wants(&made_by(3, 51)));
        // A link that floods sends everything.
        to_c.opened(40, 50, false, None);
        assert!(to_c.wants(&made_by(3, 60)));
        assert_eq!(to_c.eager(), Origins::MAX);
    }

    /// A record of `origin` made at `second` (its skew is 0).
    fn made_at(origin: u8, seq: u32, second: u64) -> Record {
        let line = format!("AT X +0.000000000 c{seq} +1+2 {second}");
        let Parsed::Command(Command::At(at)) = parse_line(line.as_bytes()) else {
            panic!("AT did not parse")
        };
        let mut r = Record::from_at(&at, Tags { source: 0, origin });
        r.set_seq(seq);
        r
    }

    #[test]
    fn a_receiver_of_an_earlier_run_is_sent_older_records_only_when_it_grafts_and_nothing_twice() {
        let (trees, _) = line_at_b();
        let mut to_c = TreeOut::new(3, trees);
        to_c.opened(0, 0, true, Some(0));
        to_c.lazy_before(100);
        assert!(
            !to_c.wants(&made_at(1, 1, 99)),
            "older: left to the announcements"
        );
        assert!(
            to_c.wants(&made_at(1, 2, 100)),
            "from the second on: along the tree"
        );
        assert!(
            !to_c.wants(&made_at(3, 3, 100)),
            "C's own records still come from C"
        );
        // C finds second 99 of A's missing and grafts it: the cursor goes
        // back from 2; A's older records go, those sent already do not.
        to_c.graft(1);
        to_c.rewinding(2);
        assert!(to_c.wants(&made_at(1, 1, 99)));
        assert!(!to_c.wants(&made_at(1, 2, 100)), "sent before the graft");
        assert!(to_c.wants(&made_at(1, 5, 100)), "past where the cursor was");
        // A new opening forgets all of it.
        to_c.opened(0, 0, true, Some(0));
        to_c.prune(1);
        assert!(to_c.wants(&made_at(1, 1, 99)));
    }

    #[test]
    fn announcements_list_what_changed_then_the_version() {
        let (trees, ids) = line_at_b();
        let mut board = Board::default();
        let change = |origin, second, xor| Change {
            key: Key { origin, second },
            xor,
            count: 1,
        };
        let t = Instant::now();
        board.apply(&[change(1, 10, 0xab), change(0, 10, 1)], t);
        let mut to_c = TreeOut::new(3, trees);
        let mut out = Vec::new();
        to_c.announce(&board, &ids, 10, &mut out);
        assert!(out.is_empty(), "not before the receiver takes them");
        to_c.opened(0, 0, true, Some(0));
        to_c.announce(&board, &ids, 10, &mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "IHAVE A 10 00000000000000ab 1\nIHAVE 2\n"
        );
        out.clear();
        to_c.announce(&board, &ids, 10, &mut out);
        assert!(out.is_empty(), "nothing changed since");
        board.apply(&[change(1, 11, 1), change(2, 11, 2)], t);
        to_c.announce(&board, &ids, 1, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "IHAVE A 11 0000000000000001 1\nIHAVE 3\n",
            "at most as many as asked; the rest next time"
        );
    }
}
