//! What a receiver makes of a neighbour's announcements: it compares each
//! announced digest with its own once both have stayed the same a while,
//! asks the neighbour to send an origin's records when they still differ
//! (`GRAFT`), and to stop once that origin's tree reaches it again
//! (`PRUNE`). PROTOCOL.md, "Flood trees", says why this loses nothing.
//!
//! One [`Heard`] per neighbour, shared by the links from it (one per shard
//! of the neighbour): each link feeds it what it reads and writes the
//! requests it makes. Pure: the time is a parameter; the board and the
//! trees are this server's.

use crate::pure::digest::{Board, Digest, Key};
use crate::pure::flood_tree::Trees;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The most differing entries kept per neighbour: past it, announcements
/// are dropped and the next link asks for all of them again.
const MAX_ENTRIES: usize = 1 << 18;

/// Requests kept for links that have not written them yet.
const MAX_REQUESTS: usize = 4096;

/// What a receiver asks of a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// `GRAFT <origin> <second>`: send that origin's records, from before
    /// that second.
    Graft {
        /// The origin's server id.
        origin: u8,
        /// The second whose entry differs.
        second: u64,
    },
    /// `PRUNE <origin>`: the origin's tree reaches here again.
    Prune {
        /// The origin's server id.
        origin: u8,
    },
}

/// One announced entry that does not match (yet).
#[derive(Debug, Clone, Copy)]
struct Announced {
    digest: Digest,
    /// The version of the announcement that brought it.
    version: u64,
    /// When it arrived with this digest.
    at: Instant,
    /// The digest a graft was asked for.
    asked: Option<Digest>,
}

/// A neighbour's announcements as one receiver heard them, and its grafts.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    /// The neighbour's run they came from (0: none heard yet).
    run: u64,
    /// The version of the last announcement heard from that run.
    version: u64,
    entries: HashMap<Key, Announced>,
    /// Grafted origins, with the latest second grafted.
    grafts: BTreeMap<u8, u64>,
    /// Requests made, numbered from 1 (`next - requests.len()` is the first
    /// kept): each link from the neighbour writes those it has not.
    requests: Vec<Request>,
    next: u64,
    /// Grafts and prunes asked, since the start.
    pub grafts_asked: u64,
    /// Prunes asked, since the start.
    pub prunes_asked: u64,
}

impl Heard {
    /// The neighbour says it is in run `run`: a new run starts over (its
    /// digests are new, and so is everything it was asked).
    pub(crate) fn run_is(&mut self, run: u64) {
        if run != self.run {
            *self = Heard {
                run,
                next: self.next,
                grafts_asked: self.grafts_asked,
                prunes_asked: self.prunes_asked,
                ..Heard::default()
            };
        }
    }

    /// The run and the version last heard from it, for `TREE`.
    pub(crate) fn resume(&self) -> (u64, u64) {
        (self.run, self.version)
    }

    /// A whole announcement: its entries, then its version (`IHAVE
    /// <version>`), read at `now`; `mine` is this server's board.
    pub(crate) fn announced(
        &mut self,
        entries: &[(Key, Digest)],
        version: u64,
        mine: &Board,
        now: Instant,
    ) {
        for &(key, digest) in entries {
            if let Some(known) = self.entries.get_mut(&key) {
                // A link of another shard may bring an older one later.
                if known.version >= version {
                    continue;
                }
                known.version = version;
                if known.digest != digest {
                    known.digest = digest;
                    known.at = now;
                }
                continue;
            }
            if mine.get(key).0 == digest {
                continue;
            }
            if self.entries.len() >= MAX_ENTRIES {
                // Asked again from the start by the next link.
                self.version = 0;
                return;
            }
            self.entries.insert(
                key,
                Announced {
                    digest,
                    version,
                    at: now,
                    asked: None,
                },
            );
        }
        self.version = self.version.max(version);
    }

    /// Compares what was announced with `mine` at `now`: an entry that
    /// matches is done with; one that still differs when both sides have
    /// stayed the same for `settle` is grafted (once per announced digest).
    /// A grafted origin is pruned once `trees`' parent brings its records
    /// from a later second and none of its grafted entries differs.
    /// `neighbour` is the neighbour's server id. New requests are kept for
    /// the links ([`Heard::requests_after`]).
    pub(crate) fn check(
        &mut self,
        mine: &Board,
        trees: &Trees,
        neighbour: u8,
        settle: Duration,
        now: Instant,
    ) {
        let mut made = Vec::new();
        let grafts = &mut self.grafts;
        self.entries.retain(|key, heard| {
            let (digest, since) = mine.get(*key);
            if digest == heard.digest {
                return false;
            }
            let mine_settled = match since {
                Some(t) => now.saturating_duration_since(t) >= settle,
                None => true,
            };
            let settled = mine_settled && now.saturating_duration_since(heard.at) >= settle;
            if settled && heard.asked != Some(heard.digest) {
                heard.asked = Some(heard.digest);
                made.push(Request::Graft {
                    origin: key.origin,
                    second: key.second,
                });
                // From the tree's own parent it is a resend, not a graft.
                if trees.parent(key.origin) != Some(neighbour) {
                    let latest = grafts.entry(key.origin).or_insert(key.second);
                    *latest = (*latest).max(key.second);
                }
            }
            true
        });
        let pending: Vec<u8> = self
            .entries
            .iter()
            .filter(|(_, h)| h.asked.is_some())
            .map(|(k, _)| k.origin)
            .collect();
        self.grafts.retain(|&origin, &mut second| {
            let healed = mine
                .latest_from_parent(origin)
                .is_some_and(|latest| latest > second);
            if healed && !pending.contains(&origin) {
                made.push(Request::Prune { origin });
                return false;
            }
            true
        });
        for request in made {
            match request {
                Request::Graft { .. } => self.grafts_asked += 1,
                Request::Prune { .. } => self.prunes_asked += 1,
            }
            self.push(request);
        }
    }

    fn push(&mut self, request: Request) {
        self.requests.push(request);
        self.next += 1;
        if self.requests.len() > MAX_REQUESTS {
            self.requests.drain(..MAX_REQUESTS / 2);
        }
    }

    /// The requests a link that wrote those up to `written` has not
    /// written, and the number to remember. A link that just opened passes
    /// `None`: it is told the grafts in force, so the neighbour's shard
    /// behind it sends those origins too, and every graft still unanswered.
    /// A resend asked of the tree's own parent is no graft in force, and
    /// one made just as the link opened would otherwise be lost with the
    /// numbers the link skips: asked once per digest, never again.
    pub(crate) fn requests_after(&self, written: Option<u64>) -> (Vec<Request>, u64) {
        let Some(written) = written else {
            let mut requests: Vec<Request> = self
                .grafts
                .iter()
                .map(|(&origin, &second)| Request::Graft { origin, second })
                .collect();
            let mut unanswered: Vec<Key> = self
                .entries
                .iter()
                .filter(|(_, heard)| heard.asked.is_some())
                .map(|(&key, _)| key)
                .collect();
            unanswered.sort_unstable();
            for key in unanswered {
                let graft = Request::Graft {
                    origin: key.origin,
                    second: key.second,
                };
                if !requests.contains(&graft) {
                    requests.push(graft);
                }
            }
            return (requests, self.next);
        };
        let first = self.next - self.requests.len() as u64;
        let skip = usize::try_from(written.saturating_sub(first)).unwrap_or(usize::MAX);
        (
            self.requests.iter().skip(skip).copied().collect(),
            self.next,
        )
    }

    /// Origins grafted now.
    pub(crate) fn grafted(&self) -> impl Iterator<Item = u8> + '_ {
        self.grafts.keys().copied()
    }

    /// Announced entries that differ from this server's, kept for now.
    #[cfg(test)]
    pub(crate) fn differing(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::digest::Change;
    use crate::pure::server_ids::ServerIds;

    const SETTLE: Duration = Duration::from_millis(200);

    fn key(origin: u8, second: u64) -> Key {
        Key { origin, second }
    }

    fn digest(xor: u64, count: u64) -> Digest {
        Digest { xor, count }
    }

    /// A line A - B - C: here is C, the neighbour is B (id 2), A's
    /// records (id 1) come from B.
    fn trees_at_c() -> Trees {
        let servers = [
            ("A".to_owned(), vec!["B".to_owned()]),
            ("B".to_owned(), vec!["A".to_owned(), "C".to_owned()]),
            ("C".to_owned(), vec!["B".to_owned()]),
        ];
        let ids = ServerIds::new(["A", "B", "C"]);
        Trees::new(
            servers.iter().map(|(n, l)| (n.as_str(), l.as_slice())),
            "C",
            &ids,
        )
    }

    fn board_with(entries: &[(Key, Digest)], at: Instant) -> Board {
        let mut board = Board::default();
        let changes: Vec<Change> = entries
            .iter()
            .map(|&(key, d)| Change {
                key,
                xor: d.xor,
                count: i64::try_from(d.count).unwrap(),
            })
            .collect();
        board.apply(&changes, at);
        board
    }

    #[test]
    fn a_settled_difference_is_grafted_once_and_a_match_is_forgotten() {
        let t0 = Instant::now();
        let mine = board_with(
            &[(key(1, 10), digest(5, 1)), (key(1, 11), digest(6, 1))],
            t0,
        );
        let mut heard = Heard::default();
        heard.run_is(42);
        heard.announced(
            &[(key(1, 10), digest(5, 1)), (key(1, 11), digest(7, 2))],
            3,
            &mine,
            t0,
        );
        assert_eq!(heard.differing(), 1, "the matching entry is not kept");
        assert_eq!(heard.resume(), (42, 3));
        let trees = trees_at_c();
        heard.check(&mine, &trees, 2, SETTLE, t0 + SETTLE / 2);
        assert_eq!(heard.requests_after(Some(0)).0, [], "not settled yet");
        heard.check(&mine, &trees, 2, SETTLE, t0 + SETTLE);
        let graft = Request::Graft {
            origin: 1,
            second: 11,
        };
        assert_eq!(heard.requests_after(Some(0)), (vec![graft], 1));
        heard.check(&mine, &trees, 2, SETTLE, t0 + SETTLE * 3);
        assert_eq!(heard.requests_after(Some(1)).0, [], "asked once per digest");
        // B is C's parent for A: a resend, not a graft to prune later.
        assert_eq!(heard.grafted().count(), 0);
        // Once the records arrive the entries match and are done with.
        let now = board_with(&[(key(1, 11), digest(7, 2))], t0);
        heard.check(&now, &trees, 2, SETTLE, t0 + SETTLE * 4);
        assert_eq!(heard.differing(), 0);
    }

    #[test]
    fn an_entry_still_changing_on_either_side_waits() {
        let t0 = Instant::now();
        let trees = trees_at_c();
        let mut heard = Heard::default();
        let mine = board_with(&[(key(1, 10), digest(1, 1))], t0 + SETTLE);
        heard.announced(&[(key(1, 10), digest(2, 2))], 1, &mine, t0);
        heard.check(&mine, &trees, 2, SETTLE, t0 + SETTLE * 3 / 2);
        assert_eq!(heard.requests_after(Some(0)).0, [], "mine changed lately");
        heard.announced(&[(key(1, 10), digest(3, 3))], 2, &mine, t0 + SETTLE * 3 / 2);
        heard.check(&mine, &trees, 2, SETTLE, t0 + SETTLE * 2);
        assert_eq!(heard.requests_after(Some(0)).0, [], "theirs changed lately");
        // An older announcement (another shard's link) changes nothing.
        heard.announced(&[(key(1, 10), digest(2, 2))], 1, &mine, t0 + SETTLE * 2);
        heard.check(&mine, &trees, 2, SETTLE, t0 + SETTLE * 5 / 2);
        assert_eq!(
            heard.requests_after(Some(0)).0,
            [Request::Graft {
                origin: 1,
                second: 10
            }]
        );
    }

    #[test]
    fn a_graft_off_the_tree_is_pruned_once_the_parent_brings_later_records() {
        let t0 = Instant::now();
        // Here is C; the announcing neighbour is "3" (not C's parent for A).
        let trees = trees_at_c();
        let mut mine = board_with(&[], t0);
        let mut heard = Heard::default();
        heard.announced(&[(key(1, 10), digest(9, 1))], 1, &mine, t0);
        heard.check(&mine, &trees, 3, SETTLE, t0 + SETTLE);
        assert_eq!(heard.grafted().collect::<Vec<_>>(), [1]);
        // The parent brings records of A, but the grafted entry differs.
        mine.parent_brought(1, 11);
        heard.check(&mine, &trees, 3, SETTLE, t0 + SETTLE * 2);
        assert_eq!(heard.grafted().count(), 1);
        // The graft's records came: pruned.
        mine.apply(
            &[Change {
                key: key(1, 10),
                xor: 9,
                count: 1,
            }],
            t0 + SETTLE * 2,
        );
        heard.check(&mine, &trees, 3, SETTLE, t0 + SETTLE * 3);
        assert_eq!(heard.grafted().count(), 0);
        assert_eq!(
            heard.requests_after(Some(1)).0,
            [Request::Prune { origin: 1 }]
        );
        // A link that opens now is told no grafts.
        assert_eq!(heard.requests_after(None), (vec![], 2));
        assert_eq!((heard.grafts_asked, heard.prunes_asked), (1, 1));
    }

    #[test]
    fn a_link_that_opens_after_a_resend_was_asked_is_told_it() {
        // B is C's parent for A: what C lacks of A is a resend from B, not
        // a graft in force. Asked just as a new link from B opened, it
        // must still reach B; asked once per digest, it is never asked
        // again (found by the flood simulation: a record never arrived).
        let t0 = Instant::now();
        let trees = trees_at_c();
        let mine = board_with(&[], t0);
        let mut heard = Heard::default();
        heard.run_is(7);
        heard.announced(&[(key(1, 10), digest(9, 1))], 1, &mine, t0);
        heard.check(&mine, &trees, 2, SETTLE, t0 + SETTLE);
        assert_eq!(heard.grafted().count(), 0, "a resend, not a graft");
        let resend = Request::Graft {
            origin: 1,
            second: 10,
        };
        assert_eq!(heard.requests_after(None), (vec![resend], 1));
        // Once the records came, a new link is told nothing.
        let now = board_with(&[(key(1, 10), digest(9, 1))], t0);
        heard.check(&now, &trees, 2, SETTLE, t0 + SETTLE * 2);
        assert_eq!(heard.requests_after(None), (vec![], 1));
    }

    #[test]
    fn a_new_run_of_the_neighbour_starts_over_and_a_new_link_learns_the_grafts() {
        let t0 = Instant::now();
        let trees = trees_at_c();
        let mine = board_with(&[], t0);
        let mut heard = Heard::default();
        heard.run_is(7);
        heard.announced(&[(key(1, 10), digest(9, 1))], 5, &mine, t0);
        heard.check(&mine, &trees, 3, SETTLE, t0 + SETTLE);
        assert_eq!(
            heard.requests_after(None).0,
            [Request::Graft {
                origin: 1,
                second: 10
            }]
        );
        heard.run_is(7);
        assert_eq!(heard.resume(), (7, 5), "the same run keeps all");
        heard.run_is(8);
        assert_eq!(heard.resume(), (8, 0));
        assert_eq!((heard.differing(), heard.grafted().count()), (0, 0));
        let (_, next) = heard.requests_after(None);
        assert_eq!(next, 1, "request numbers go on across runs");
    }
}
