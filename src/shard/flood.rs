//! The server's flood-tree state, shared by its shards: the digests of all
//! it holds (the [`Board`]), what each neighbour announced and what it was
//! asked ([`Heard`]), and the shard task that folds each shard's records
//! into the board every `limits.link_announce_ms`.
//!
//! The lock is taken a few times per announcement interval per shard and
//! per link, and when a link opens; never per record. Links (`net/link/outgoing.rs`)
//! announce from the board and answer `GRAFT` and `PRUNE`; incoming links
//! (`net/link/incoming.rs`) feed [`Heard`] and write its requests.

use crate::pure::digest::Board;
use crate::pure::repair::Heard;
use crate::shard::Shard;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Records a shard folds into its digests per interval at most: a store
/// of millions is folded over seconds, not in one pause.
const FOLD_PER_TICK: usize = 64 * 1024;

/// What the lock guards.
#[derive(Debug, Default)]
pub(crate) struct FloodState {
    /// This server's digests.
    pub board: Board,
    /// By neighbour name: its announcements and this server's requests.
    pub heard: HashMap<String, Heard>,
}

/// The server's flood-tree state, one for all its shards.
#[derive(Debug)]
pub(crate) struct Flood {
    state: Mutex<FloodState>,
    /// Shards whose digests have held all their records at least once,
    /// and how many shards there are: until all have, the board lacks
    /// records the server holds, and nothing is compared with it.
    folded: AtomicUsize,
    shards: usize,
    /// Set once a neighbour speaks trees: from then on every shard keeps
    /// digests of its records.
    digesting: AtomicBool,
    /// Set while this server has grafts in force: shards then note which
    /// records come from the trees' parents.
    grafting: AtomicBool,
}

impl Flood {
    /// The state of a server of `shards` shards, before any digest.
    pub(crate) fn new(shards: usize) -> Flood {
        Flood {
            state: Mutex::default(),
            folded: AtomicUsize::new(0),
            shards,
            digesting: AtomicBool::new(false),
            grafting: AtomicBool::new(false),
        }
    }

    /// Whether the board holds every record of every shard (they may have
    /// changed since, as records do): announcements can be compared with it.
    pub(crate) fn complete(&self) -> bool {
        self.folded.load(Ordering::Relaxed) >= self.shards
    }

    /// The state, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, FloodState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A neighbour speaks trees: every shard starts keeping digests.
    pub(crate) fn start_digests(&self) {
        self.digesting.store(true, Ordering::Relaxed);
    }

    /// Whether shards keep digests.
    pub(crate) fn digesting(&self) -> bool {
        self.digesting.load(Ordering::Relaxed)
    }

    /// Whether this server has grafts in force.
    pub(crate) fn grafting(&self) -> bool {
        self.grafting.load(Ordering::Relaxed)
    }

    /// Notes whether any neighbour is grafted now.
    pub(crate) fn set_grafting(&self, state: &FloodState) {
        let any = state.heard.values().any(|h| h.grafted().next().is_some());
        self.grafting.store(any, Ordering::Relaxed);
    }
}

/// Every `every`, folds this shard's new records into its digests and hands
/// the changes to the board, for as long as the shard runs.
pub(crate) async fn run(shard: Rc<Shard>, every: Duration) {
    let mut last_sweep = Instant::now();
    let mut folded = false;
    while !shard.stop.is_requested() {
        glommio::timer::sleep(every).await;
        if !shard.flood.digesting() {
            continue;
        }
        let now = Instant::now();
        let (changes, from_parent, done) = shard.fold_digests(FOLD_PER_TICK);
        if done && !folded {
            folded = true;
            shard.flood.folded.fetch_add(1, Ordering::Relaxed);
        }
        if changes.is_empty() && from_parent.is_empty() && shard.id != 0 {
            continue;
        }
        let mut state = shard.flood.lock();
        state.board.apply(&changes, now);
        for (origin, second) in from_parent {
            state.board.parent_brought(origin, second);
        }
        // One shard clears out emptied entries, about once a second.
        if shard.id == 0 && now.saturating_duration_since(last_sweep) >= Duration::from_secs(1) {
            state.board.forget_empty(now);
            last_sweep = now;
        }
    }
}
