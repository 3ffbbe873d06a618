//! The receiving end of a link's flood-tree lines (PROTOCOL.md, "Flood
//! trees"): takes the sender's `IHAVE` announcements into what this
//! server heard of that neighbour (`repair.rs`'s [`Heard`], shared by the
//! links from it), compares them with this server's digests every
//! `limits.link_announce_ms`, and writes the `GRAFT` and `PRUNE` lines it
//! asks for. The connection (`incoming.rs`) hands it the link's lines
//! and its clock turns; the records themselves never pass here.

use crate::pure::digest::{Digest, Key};
use crate::pure::flood_lines::{self, FloodLine};
use crate::pure::flood_tree::Trees;
use crate::pure::repair::Request;
use crate::pure::server_ids::ServerIds;
use crate::shard::flood::Flood;
use std::time::{Duration, Instant};

/// One incoming link's part of the flood trees.
#[derive(Debug)]
pub(crate) struct TreeIn {
    /// The neighbour's name and server id.
    neighbour: String,
    neighbour_id: u8,
    /// Entries of the announcement being read, until its version.
    entries: Vec<(Key, Digest)>,
    /// The requests this link has written (see `Heard::requests_after`).
    written: Option<u64>,
    next_check: Instant,
}

/// What a receiver needs of its server for the flood trees.
pub(crate) struct TreeSettings<'a> {
    /// The server's shared flood state.
    pub flood: &'a Flood,
    /// The herd's trees as this server's config has them now.
    pub trees: &'a Trees,
    /// Numbers for server names.
    pub ids: &'a ServerIds,
    /// How often links announce (comparisons wait two of these).
    pub announce: Duration,
}

impl TreeIn {
    /// The flood-tree part of a link from `neighbour` (server id `id`).
    pub(crate) fn new(neighbour: &str, id: u8, now: Instant) -> TreeIn {
        TreeIn {
            neighbour: neighbour.to_owned(),
            neighbour_id: id,
            entries: Vec::new(),
            written: None,
            next_check: now,
        }
    }

    /// What this server last heard from the neighbour: its run and the
    /// version of its last announcement, for `TREE`.
    pub(crate) fn resume(flood: &Flood, neighbour: &str) -> (u64, u64) {
        flood
            .lock()
            .heard
            .get(neighbour)
            .map_or((0, 0), |h| h.resume())
    }

    /// Takes `text` if it is an announcement line of a sender in run
    /// `run` (which said `TREE`); false for any other line.
    pub(crate) fn on_line(
        &mut self,
        text: &str,
        run: u64,
        settings: &TreeSettings<'_>,
        now: Instant,
    ) -> bool {
        match flood_lines::parse(text) {
            Some(FloodLine::Entry {
                origin,
                second,
                digest,
            }) => {
                // An origin without a number here cannot be compared.
                let origin = settings.ids.id(origin);
                if origin != 0 && self.entries.len() < 1 << 16 {
                    self.entries.push((Key { origin, second }, digest));
                }
                true
            }
            Some(FloodLine::Version(version)) => {
                let mut state = settings.flood.lock();
                let state = &mut *state;
                let heard = state.heard.entry(self.neighbour.clone()).or_default();
                heard.run_is(run);
                heard.announced(&self.entries, version, &state.board, now);
                self.entries.clear();
                true
            }
            _ => false,
        }
    }

    /// The clock's turn, for a sender in run `run` (which said `TREE`):
    /// at most once an announcement interval, compares what it announced
    /// with this server's digests and appends the requests this link has
    /// not written yet to `out`.
    pub(crate) fn tick(
        &mut self,
        run: u64,
        settings: &TreeSettings<'_>,
        now: Instant,
        out: &mut Vec<u8>,
    ) {
        if now < self.next_check || !settings.flood.complete() {
            return;
        }
        self.next_check = now + settings.announce;
        let requests = {
            let mut state = settings.flood.lock();
            let state = &mut *state;
            let heard = state.heard.entry(self.neighbour.clone()).or_default();
            heard.run_is(run);
            heard.check(
                &state.board,
                settings.trees,
                self.neighbour_id,
                2 * settings.announce,
                now,
            );
            let (requests, next) = heard.requests_after(self.written);
            self.written = Some(next);
            settings.flood.set_grafting(state);
            requests
        };
        for request in requests {
            let line = match request {
                Request::Graft { origin, second } => settings
                    .ids
                    .name(origin)
                    .map(|origin| FloodLine::Graft { origin, second }),
                Request::Prune { origin } => settings
                    .ids
                    .name(origin)
                    .map(|origin| FloodLine::Prune { origin }),
            };
            if let Some(line) = line {
                tracing::debug!(neighbour = %self.neighbour, ?line, "asking");
                flood_lines::write(out, &line);
            }
        }
    }
}
