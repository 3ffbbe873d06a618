//! One shard's state and the owner's side of every command: apply a record
//! (its links then flood it), or answer a WHATSAT from a stored record
//! through Places.
//!
//! Owned by one executor (`Rc`, `RefCell`; the only lock is the one its
//! metrics are published under, a few times a second). It never reads or
//! writes a client socket: it returns replies as values; at a stop it only
//! shuts the reading side of its connections (`Connections::stop_reading`).
//! It knows nothing of links but their cursors in its store: flooding is
//! the links reading the store, which is the replication log (see
//! `pure/store/`, and `net/link/outgoing.rs` for the links).

pub(crate) mod flood;
pub(crate) mod journal;

use crate::ops::metrics::{self, ShardMetrics};
use crate::ops::tree_metrics::LinkTree;
use crate::places::answer::{Places, Rendered};
use crate::places::geo::NearbyQuery;
use crate::places::rendered;
use crate::places::rendered::error_answer;
use crate::pure::digest::{origin_second, Change, Key};
use crate::pure::flood_tree::Trees;
use crate::pure::protocol::parse_location;
use crate::pure::record::{Record, MAX_TAG};
use crate::pure::store::{Batch, CursorId, Receiver, Store};
use crate::rt::notice::Notice;
use event_listener::Event;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

/// Index of a neighbour in this server's neighbour list.
pub(crate) type NeighbourId = usize;

/// One shard's link to one neighbour, as the shard sees it: where the
/// neighbour is, the link's cursor in the store, and whether it is up.
pub(crate) struct LinkStatus {
    /// The neighbour's name.
    pub neighbour: Rc<str>,
    /// The neighbour's server id: the source tag of its records.
    pub neighbour_id: u8,
    /// Where the link dials.
    pub addr: SocketAddr,
    /// What was sent: everything in the store up to this cursor.
    pub cursor: CursorId,
    /// Whether the link is up now.
    pub connected: Cell<bool>,
    /// Whether, since it last opened, the link has sent all the store held.
    pub caught_up: Cell<bool>,
    /// When the link last had nothing left to send.
    pub idle_since: Cell<Instant>,
    /// Records sent since the server started.
    pub sent: Cell<u64>,
    /// Bytes written since the server started, every line counted.
    pub bytes_sent: Cell<u64>,
    /// Whether the link is a tree link now (PROTOCOL.md, "Flood trees").
    pub tree: Cell<bool>,
    /// The origins whose records the link sends now: all on a link that
    /// floods.
    pub eager: Cell<u128>,
    /// `GRAFT`s and `PRUNE`s the neighbour sent, since the server started.
    pub grafts: Cell<u64>,
    /// See `grafts`.
    pub prunes: Cell<u64>,
    /// Set when a reload removed this neighbour: the link closes.
    pub retired: Cell<bool>,
}

impl LinkStatus {
    /// A link to `neighbour` (server id `neighbour_id`) at `addr` reading
    /// the store through `cursor`.
    pub(crate) fn new(
        neighbour: Rc<str>,
        neighbour_id: u8,
        addr: SocketAddr,
        cursor: CursorId,
    ) -> LinkStatus {
        LinkStatus {
            neighbour,
            neighbour_id,
            addr,
            cursor,
            connected: Cell::new(false),
            caught_up: Cell::new(false),
            idle_since: Cell::new(Instant::now()),
            sent: Cell::new(0),
            bytes_sent: Cell::new(0),
            tree: Cell::new(false),
            eager: Cell::new(u128::MAX),
            grafts: Cell::new(0),
            prunes: Cell::new(0),
            retired: Cell::new(false),
        }
    }
}

/// A shard: its slice of the client-id space and its links to neighbours.
pub(crate) struct Shard {
    /// This shard's id (its place on the ring and in the channel mesh).
    pub id: usize,
    /// New on every start; with the store's generation it makes the epoch.
    epoch_base: u64,
    store: RefCell<Store>,
    /// Notified whenever a record is stored: links waiting for records.
    pub changed: Notice,
    links: RefCell<Vec<Rc<LinkStatus>>>,
    places: Rc<dyn Places>,
    places_timeout: Duration,
    /// Open connections on this shard (clients and incoming links).
    pub connections: Rc<Connections>,
    /// Set when the server is stopping.
    pub stop: Stop,
    /// What this shard counts, read by the admin endpoint.
    pub metrics: Arc<ShardMetrics>,
    /// Command latency since the last publication, microseconds.
    pub latency: RefCell<hdrhistogram::Histogram<u64>>,
    /// Records dropped by the TTL sweep.
    expired: Cell<u64>,
    /// The journal's progress, when the server keeps one.
    durability: Option<Rc<journal::Durability>>,
    /// The server's flood-tree state, shared by its shards.
    pub flood: Arc<flood::Flood>,
    /// The herd's flood trees as this server's config has them.
    trees: RefCell<Arc<Trees>>,
    /// By origin: the latest second of a record the origin's tree parent
    /// brought, since the last fold (noted while grafts are in force).
    from_parent: RefCell<HashMap<u8, u64>>,
    /// By source tag: records from that neighbour this shard already held
    /// (or held newer).
    stale_from: RefCell<Vec<u64>>,
}

/// A number that differs between starts (and between shards).
fn new_epoch(shard: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded from the OS once per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(shard);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// The sockets of a shard's open connections, so that a stop can end the
/// reads they wait in without each read also waiting on the stop, and so
/// that one sweep closes idle clients (see [`Connections::close_idle`]).
#[derive(Default)]
pub(crate) struct Connections {
    open: RefCell<HashMap<u64, (RawFd, Rc<Activity>), ahash::RandomState>>,
    next: Cell<u64>,
    /// Of those, connections on the peer port.
    peer: Cell<u64>,
}

/// A connection's reads, for the idle sweep: how many it made and whether
/// it waits in one now. Two cells set per read, no clock and no timer;
/// the sweep measures the time. Also how the sweep asks a client that has
/// waited a whole sweep to give back its buffers (see
/// [`Connections::close_idle`]).
pub(crate) struct Activity {
    reads: Cell<u64>,
    waiting: Cell<bool>,
    /// Closed after waiting this long in a read; `None`: never by the
    /// sweep (links, whose sessions watch them instead).
    idle_after: Option<Duration>,
    /// The sweep's view: the count of reads it last saw, and since when the
    /// connection has waited with no read (`None`: not waiting then).
    seen_reads: Cell<u64>,
    idle_since: Cell<Option<Instant>>,
    timed_out: Cell<bool>,
    /// The key of the token the connection authenticated with, if any: a
    /// reload that removes the key closes the connection.
    key_id: Cell<Option<u32>>,
    /// Set when a reload closed the connection's reading side because its
    /// key was removed or the clients' rules changed.
    revoked: Cell<bool>,
    /// Set by the sweep; the connection gives back its buffers when it
    /// next runs ([`Activity::take_release`]).
    release: Cell<bool>,
    /// What wakes the connection's task while it waits in a read, left by
    /// the connection ([`Activity::park`]) for the sweep.
    waker: Cell<Option<Waker>>,
}

impl Activity {
    /// A connection that has read nothing yet; `idle_after` as in the field.
    fn new(idle_after: Option<Duration>) -> Activity {
        Activity {
            reads: Cell::new(0),
            waiting: Cell::new(false),
            idle_after,
            seen_reads: Cell::new(0),
            idle_since: Cell::new(None),
            timed_out: Cell::new(false),
            key_id: Cell::new(None),
            revoked: Cell::new(false),
            release: Cell::new(false),
            waker: Cell::new(None),
        }
    }

    /// The connection's read is waiting and `waker` wakes it. Costs a
    /// comparison while it is the same task's waker as last time.
    pub(crate) fn park(&self, waker: &Waker) {
        let kept = match self.waker.take() {
            Some(kept) if kept.will_wake(waker) => kept,
            _ => waker.clone(),
        };
        self.waker.set(Some(kept));
    }

    /// Whether the sweep asked the connection to give back its buffers
    /// since it last looked.
    pub(crate) fn take_release(&self) -> bool {
        self.release.replace(false)
    }

    /// Asks the connection to give back its buffers, and wakes it to do so.
    fn ask_release(&self) {
        self.release.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// The connection proved who it is with a token of key `key_id`.
    pub(crate) fn authenticated(&self, key_id: u32) {
        self.key_id.set(Some(key_id));
    }

    /// Whether a reload closed the reading side (the read then ended as at
    /// end of input).
    pub(crate) fn revoked(&self) -> bool {
        self.revoked.get()
    }

    /// The connection starts waiting for input.
    pub(crate) fn waiting(&self) {
        self.waiting.set(true);
    }

    /// A read returned.
    pub(crate) fn read(&self) {
        self.waiting.set(false);
        self.reads.set(self.reads.get().wrapping_add(1));
    }

    /// Whether the sweep closed the reading side for idleness (the read
    /// then ended as at end of input).
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.get()
    }

    /// The sweep at `now`: true when the connection has waited in a read,
    /// with nothing read, for its idle time. The wait is counted from the
    /// first sweep that found the connection waiting with no read since the
    /// sweep before, so it is never overstated: with sweeps `pace` apart, a
    /// client is closed between its idle time and three paces after it
    /// began to wait. Time spent writing replies is not idle time (the
    /// write deadline bounds that), as with a socket read timeout.
    fn idle_at(&self, now: Instant) -> bool {
        let Some(idle_after) = self.idle_after else {
            return false;
        };
        let reads = self.reads.get();
        if !self.waiting.get() || reads != self.seen_reads.get() {
            self.seen_reads.set(reads);
            self.idle_since.set(None);
            return false;
        }
        let since = self.idle_since.get().unwrap_or(now);
        self.idle_since.set(Some(since));
        now.saturating_duration_since(since) >= idle_after
    }
}

/// A connection's place in [`Connections`]; dropping it (when the
/// connection ends) frees the place. Owned, so that it goes into the
/// connection's state before its task is spawned.
pub(crate) struct Registered {
    connections: Rc<Connections>,
    id: u64,
    peer: bool,
    activity: Rc<Activity>,
}

impl Registered {
    /// What the connection reports its reads to.
    pub(crate) fn activity(&self) -> &Rc<Activity> {
        &self.activity
    }
}

impl Connections {
    /// Counts a connection in until the returned guard is dropped; `peer`
    /// when it came in on the peer port. `idle_after`: how long it may go
    /// without a read before [`Connections::close_idle`] closes it.
    pub(crate) fn register(
        self: &Rc<Connections>,
        fd: RawFd,
        peer: bool,
        idle_after: Option<Duration>,
    ) -> Registered {
        let id = self.next.get();
        self.next.set(id + 1);
        let activity = Rc::new(Activity::new(idle_after));
        self.open.borrow_mut().insert(id, (fd, activity.clone()));
        if peer {
            self.peer.set(self.peer.get() + 1);
        }
        Registered {
            connections: self.clone(),
            id,
            peer,
            activity,
        }
    }

    /// Open connections on the peer port now.
    pub(crate) fn peers(&self) -> usize {
        usize::try_from(self.peer.get()).unwrap_or(usize::MAX)
    }

    /// Open connections now.
    pub(crate) fn count(&self) -> usize {
        self.open.borrow().len()
    }

    /// Shuts the reading side of every open connection: each read ends as
    /// at end of input, the connection answers what it had and closes.
    pub(crate) fn stop_reading(&self) {
        for (fd, _) in self.open.borrow().values() {
            // The socket may be closing already; nothing to do then.
            let _ = nix::sys::socket::shutdown(*fd, nix::sys::socket::Shutdown::Read);
        }
    }

    /// Shuts the reading side of every client connection (the idle sweep's
    /// kind: links have none) that `revoke` picks by the key its token was
    /// signed with (`None`: it has not authenticated); returns how many.
    pub(crate) fn revoke_clients(&self, revoke: impl Fn(Option<u32>) -> bool) -> usize {
        let mut closed = 0;
        for (fd, activity) in self.open.borrow().values() {
            let client = activity.idle_after.is_some();
            if client && !activity.revoked.get() && revoke(activity.key_id.get()) {
                activity.revoked.set(true);
                // The socket may be closing already; nothing to do then.
                let _ = nix::sys::socket::shutdown(*fd, nix::sys::socket::Shutdown::Read);
                closed += 1;
            }
        }
        closed
    }

    /// Shuts the reading side of every client that has waited in a read
    /// for its idle time by `now` (see [`Activity::idle_at`]); returns how
    /// many. One sweep for all instead of a timer per read: a socket read
    /// timeout put a timer into the reactor's tree and took it out again on
    /// every read that waited (about 2 % of a shard's core at 64 x 1, with
    /// its clock reads). A client this sweep first finds waiting with no
    /// read since the sweep before is asked, once per wait, to give back
    /// its buffers: ten thousand idle clients then hold no read or reply
    /// buffer, while busy ones, which read between sweeps, keep theirs.
    pub(crate) fn close_idle(&self, now: Instant) -> usize {
        let mut closed = 0;
        for (fd, activity) in self.open.borrow().values() {
            if activity.timed_out.get() {
                continue;
            }
            let was_idle = activity.idle_since.get().is_some();
            if activity.idle_at(now) {
                activity.timed_out.set(true);
                // The socket may be closing already; nothing to do then.
                let _ = nix::sys::socket::shutdown(*fd, nix::sys::socket::Shutdown::Read);
                closed += 1;
            } else if !was_idle && activity.idle_since.get().is_some() {
                activity.ask_release();
            }
        }
        closed
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open.borrow_mut().remove(&self.id);
        if self.peer {
            let c = &self.connections.peer;
            c.set(c.get().saturating_sub(1));
        }
    }
}

/// This shard's view of the process-wide stop request.
#[derive(Default)]
pub(crate) struct Stop {
    requested: Cell<bool>,
    event: Event,
}

impl Stop {
    /// Asks everything on this shard that waits on [`Stop::wait`] to stop.
    pub(crate) fn request(&self) {
        self.requested.set(true);
        self.event.notify(usize::MAX);
    }

    /// Whether stopping was requested.
    pub(crate) fn is_requested(&self) -> bool {
        self.requested.get()
    }

    /// Resolves once stopping is requested.
    pub(crate) async fn wait(&self) {
        while !self.requested.get() {
            let listener = self.event.listen();
            // Checked again after listening, so a request in between is not missed.
            if self.requested.get() {
                return;
            }
            listener.await;
        }
    }
}

impl Shard {
    /// A shard with an empty store of at most `max_records` records and a
    /// link cursor per neighbour (`neighbours`: name, server id and
    /// address).
    pub(crate) fn new(
        id: usize,
        neighbours: Vec<(Rc<str>, u8, SocketAddr)>,
        places: Rc<dyn Places>,
        places_timeout: Duration,
        max_records: usize,
        durability: Option<Rc<journal::Durability>>,
        flood: Arc<flood::Flood>,
    ) -> Shard {
        let mut store = Store::new().with_max_records(max_records);
        let links = neighbours
            .into_iter()
            .map(|(neighbour, neighbour_id, addr)| {
                Rc::new(LinkStatus::new(
                    neighbour,
                    neighbour_id,
                    addr,
                    store.open_cursor(),
                ))
            })
            .collect();
        Shard {
            id,
            epoch_base: new_epoch(id),
            store: RefCell::new(store),
            changed: Notice::default(),
            links: RefCell::new(links),
            places,
            places_timeout,
            connections: Rc::default(),
            stop: Stop::default(),
            metrics: Arc::new(ShardMetrics::new(id)),
            latency: RefCell::new(metrics::latency_histogram()),
            expired: Cell::new(0),
            durability,
            flood,
            trees: RefCell::new(Arc::new(Trees::default())),
            from_parent: RefCell::new(HashMap::new()),
            stale_from: RefCell::new(vec![0; usize::from(MAX_TAG) + 1]),
        }
    }

    /// The herd's flood trees, as this server's config has them now.
    pub(crate) fn trees(&self) -> Arc<Trees> {
        self.trees.borrow().clone()
    }

    /// A reload changed the config: these are the trees now.
    pub(crate) fn set_trees(&self, trees: Arc<Trees>) {
        *self.trees.borrow_mut() = trees;
    }

    /// Folds up to `max` new records into the store's digests (starting
    /// them the first time), and hands over what changed, the origins'
    /// latest seconds their tree parents brought since the last call, and
    /// whether every record is folded in.
    pub(crate) fn fold_digests(&self, max: usize) -> (Vec<Change>, Vec<(u8, u64)>, bool) {
        let mut store = self.store.borrow_mut();
        store.start_digests();
        let done = store.fold_digests(max);
        let changes = store.take_digest_changes();
        let from_parent = self.from_parent.borrow_mut().drain().collect();
        (changes, from_parent, done)
    }

    /// The sequence number a link must send after so that it sends every
    /// record of digest entry `key` this shard holds (see
    /// [`Store::before_entry`]).
    pub(crate) fn before_entry(&self, key: Key) -> u64 {
        self.store.borrow().before_entry(key)
    }

    /// The journal's progress, when the server keeps one.
    pub(crate) fn durability(&self) -> Option<&Rc<journal::Durability>> {
        self.durability.as_ref()
    }

    /// Whether an IAMAT's reply must wait for its record to be on disk
    /// (`persistence.fsync: always`).
    pub(crate) fn acks_wait(&self) -> bool {
        self.durability.as_ref().is_some_and(|d| d.acks_wait())
    }

    /// Applies a record as [`Shard::apply`] does, then answers `done` once
    /// the journal holds it on disk, or a newer one of its client (a stale
    /// record waits for all the store holds now, which includes it).
    pub(crate) fn apply_durable(&self, record: Record, done: futures_channel::oneshot::Sender<()>) {
        self.apply(record, 0);
        let Some(durability) = &self.durability else {
            let _ = done.send(());
            return;
        };
        let (generation, seq) = {
            let store = self.store.borrow();
            (store.generation(), store.seq())
        };
        durability.wait(generation, seq, done);
    }

    /// Loads into cache where the records of these client ids, applied
    /// soon after, will be looked up.
    pub(crate) fn prefetch<'a>(&self, client_ids: impl Iterator<Item = &'a [u8]>) {
        self.store.borrow().prefetch(client_ids);
    }

    /// Applies a record this shard owns. When it is newer than the stored
    /// one it is stored once, and the links send it from the store (one log
    /// for all links keeps a down neighbour free); the link to the
    /// neighbour it came from (its source tag), in that neighbour's run
    /// `run`, passes it over. Run 0: an IAMAT, a journal's record, or a
    /// neighbour that says no run.
    pub(crate) fn apply(&self, record: Record, run: u64) {
        if self.flood.grafting() {
            // A graft ends once the tree brings its origin's records again.
            let tags = record.tags();
            if tags.source != 0 && self.trees.borrow().parent(tags.origin) == Some(tags.source) {
                let second = origin_second(&record);
                let mut latest = self.from_parent.borrow_mut();
                let at = latest.entry(tags.origin).or_insert(second);
                *at = (*at).max(second);
            }
        }
        let source = usize::from(record.tags().source);
        if self.store.borrow_mut().apply_from(record, run).is_none() {
            self.metrics.stale.inc();
            if let Some(n) = self.stale_from.borrow_mut().get_mut(source) {
                *n += 1;
            }
            tracing::trace!(shard = self.id, "stale record dropped");
            return;
        }
        self.metrics.stored.inc();
        self.changed.notify();
    }

    /// The WHATSAT reply for a client this shard owns, or `None` when the
    /// client has no record (the command is then invalid).
    pub(crate) async fn nearby(
        &self,
        client_id: &str,
        radius_km: f64,
        max_results: usize,
    ) -> Option<Vec<u8>> {
        // The reply starts as the stored AT line, copied while the store is borrowed.
        let (mut reply, location) = {
            let store = self.store.borrow();
            let record = store.get(client_id)?;
            let line = record.line();
            // Sized for the AT line only: the answer's exact size is known once it is here.
            let mut reply = Vec::with_capacity(line.len() + 1);
            reply.extend_from_slice(line.trim_end_matches(['\r', '\n']).as_bytes());
            reply.push(b'\n');
            (reply, parse_location(record.location()))
        };
        // Stored records were parsed on the way in, so this always succeeds.
        let location = location?;
        let query = NearbyQuery {
            lat: location.lat,
            lon: location.lon,
            radius_m: radius_km * 1000.0,
        };
        let timeout = self.places_timeout;
        let found = futures_lite::future::or(self.places.nearby_rendered(query), async move {
            glommio::timer::sleep(timeout).await;
            Rendered::once(&error_answer(
                "UNKNOWN_ERROR",
                &format!(
                    "places upstream did not answer within {} ms",
                    timeout.as_millis()
                ),
            ))
        })
        .await;
        // The AT line is already in: the rest is the cut answer and the empty line.
        rendered::write_reply_json(
            &mut reply,
            &found.answer,
            max_results,
            found.within.as_ref(),
        );
        Some(reply)
    }

    /// Changes the store's limit (a reload); see [`Store::set_max_records`].
    pub(crate) fn set_max_records(&self, max_records: usize) {
        self.store.borrow_mut().set_max_records(max_records);
    }

    /// Number of clients this shard holds records for.
    pub(crate) fn records(&self) -> usize {
        self.store.borrow().len()
    }

    /// Records evicted from the full store so far, and new records it
    /// refused as older than all it held; see [`Store::apply`].
    pub(crate) fn evictions(&self) -> (u64, u64) {
        let store = self.store.borrow();
        (store.evicted(), store.refused())
    }

    /// Drops records with a client time before `cutoff`, looking at no more
    /// than `max` slots from `*cursor`; see [`Store::expire`].
    pub(crate) fn expire(
        &self,
        cursor: &mut usize,
        cutoff: crate::pure::protocol::PosixTime,
        max: usize,
    ) -> usize {
        let removed = self.store.borrow_mut().expire(cursor, cutoff, max);
        self.expired.set(self.expired.get() + removed as u64);
        removed
    }

    /// This shard's epoch: it changes on every start and whenever the store
    /// renumbers, so neighbours can tell that its sequence numbers started over.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch_base
            .wrapping_add(u64::from(self.store.borrow().generation()))
    }

    /// The sequence number of the last record this shard stored.
    pub(crate) fn seq(&self) -> u64 {
        self.store.borrow().seq()
    }

    /// The store's numbering generation; see [`Store::generation`].
    pub(crate) fn generation(&self) -> u32 {
        self.store.borrow().generation()
    }

    /// A new cursor at the start of the store (the journal's).
    pub(crate) fn open_cursor(&self) -> CursorId {
        self.store.borrow_mut().open_cursor()
    }

    /// Records held and the bytes of their AT lines: the size of a journal
    /// of exactly them, but for its framing.
    pub(crate) fn journal_size(&self) -> (usize, usize) {
        let store = self.store.borrow();
        (store.len(), store.line_bytes())
    }

    /// Moves a link's cursor to just after sequence number `after`, in at
    /// most `max_steps` steps; true when done. See [`Store::seek`].
    pub(crate) fn seek(&self, cursor: CursorId, after: u64, max_steps: usize) -> bool {
        self.store.borrow_mut().seek(cursor, after, max_steps)
    }

    /// Appends the next records past a cursor to `out` (the journal's:
    /// every one); what was appended, `None` when nothing is unsent. See
    /// [`Store::next_batch`].
    pub(crate) fn next_batch(
        &self,
        cursor: CursorId,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Option<Batch> {
        self.store
            .borrow_mut()
            .next_batch(cursor, max_records, max_bytes, out, None, |_| true)
    }

    /// Appends the next records past a link's cursor to `out`, passing over
    /// those that came from `receiver` in its present run and those `wants`
    /// says no to; what was passed, `None` when nothing is unsent. See
    /// [`Store::next_batch`].
    pub(crate) fn next_link_batch(
        &self,
        cursor: CursorId,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
        receiver: Option<Receiver>,
        wants: impl Fn(&Record) -> bool,
    ) -> Option<Batch> {
        self.store
            .borrow_mut()
            .next_batch(cursor, max_records, max_bytes, out, receiver, wants)
    }

    /// Whether a link has records to send.
    pub(crate) fn has_unsent(&self, cursor: CursorId) -> bool {
        self.store.borrow().has_unsent(cursor)
    }

    /// The sequence number a link has sent up to.
    pub(crate) fn sent_seq(&self, cursor: CursorId) -> u64 {
        self.store.borrow().sent_seq(cursor)
    }

    /// How many sequence numbers a link is behind (records it has not sent,
    /// counting each update of a record).
    pub(crate) fn unsent(&self, cursor: CursorId) -> u64 {
        let store = self.store.borrow();
        store.seq().saturating_sub(store.sent_seq(cursor))
    }

    /// This shard's links to its neighbours, now.
    pub(crate) fn links(&self) -> Vec<Rc<LinkStatus>> {
        self.links.borrow().clone()
    }

    /// Opens a link to a new neighbour (a reload added it): a cursor at the
    /// start of the store, so the neighbour is sent everything.
    pub(crate) fn add_link(
        &self,
        neighbour: Rc<str>,
        neighbour_id: u8,
        addr: SocketAddr,
    ) -> Rc<LinkStatus> {
        let cursor = self.store.borrow_mut().open_cursor();
        let link = Rc::new(LinkStatus::new(neighbour, neighbour_id, addr, cursor));
        self.links.borrow_mut().push(link.clone());
        link
    }

    /// Retires the link to `neighbour` (a reload removed it): its task
    /// ends and then closes its cursor ([`Shard::close_cursor`]).
    pub(crate) fn remove_link(&self, neighbour: &str) -> bool {
        let mut links = self.links.borrow_mut();
        let Some(i) = links.iter().position(|l| &*l.neighbour == neighbour) else {
            return false;
        };
        let link = links.remove(i);
        link.retired.set(true);
        // Wakes the link's task, if it waits for records, to see it.
        self.changed.notify();
        true
    }

    /// Closes a retired link's cursor, once its task no longer reads it.
    pub(crate) fn close_cursor(&self, cursor: CursorId) {
        self.store.borrow_mut().close_cursor(cursor);
    }

    /// Publishes this shard's figures for the admin endpoint. `recent`
    /// gathers the command latency of the current second; once a second
    /// (`close_second`) it is published as the last second's and starts
    /// over.
    pub(crate) fn publish(&self, recent: &mut hdrhistogram::Histogram<u64>, close_second: bool) {
        let places = self.places.figures();
        let now = Instant::now();
        let known = self.trees().known();
        let links = self
            .links()
            .iter()
            .map(|l| {
                let behind = self.unsent(l.cursor);
                let has_unsent = self.has_unsent(l.cursor);
                metrics::LinkView {
                    neighbour: l.neighbour.to_string(),
                    addr: l.addr.to_string(),
                    up: l.connected.get(),
                    caught_up: l.connected.get() && l.caught_up.get(),
                    behind_records: behind,
                    behind_seconds: if has_unsent {
                        now.saturating_duration_since(l.idle_since.get())
                            .as_secs_f64()
                    } else {
                        0.0
                    },
                    sent: l.sent.get(),
                    tree: LinkTree {
                        tree: l.tree.get(),
                        eager: (l.eager.get() & known).count_ones(),
                        origins: known.count_ones(),
                        bytes_sent: l.bytes_sent.get(),
                        grafts: l.grafts.get(),
                        prunes: l.prunes.get(),
                    },
                }
            })
            .collect();
        let duplicates = {
            let stale = self.stale_from.borrow();
            self.links()
                .iter()
                .map(|l| {
                    let n = stale.get(usize::from(l.neighbour_id)).copied();
                    (l.neighbour.to_string(), n.unwrap_or(0))
                })
                .collect()
        };
        let (evicted, refused_older) = self.evictions();
        let mut latency = self.latency.borrow_mut();
        let _ = recent.add(&*latency);
        let mut p = self
            .metrics
            .published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        p.records = self.records() as u64;
        let (all, peers) = (self.connections.count(), self.connections.peers());
        p.client_connections = all.saturating_sub(peers) as u64;
        p.peer_connections = peers as u64;
        p.evicted = evicted;
        p.refused_older = refused_older;
        p.expired = self.expired.get();
        p.links = links;
        p.duplicates = duplicates;
        p.places = places;
        p.journal = self
            .durability
            .as_ref()
            .map(|d| d.figures(|cursor| self.unsent(cursor)));
        // Same bounds: adding cannot fail.
        let _ = p.latency.add(&*latency);
        latency.reset();
        if close_second {
            p.latency_recent = recent.clone();
            recent.reset();
        }
        self.places.take_upstream_latency(&mut p.upstream_latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(idle_after_ms: u64) -> Activity {
        Activity::new(Some(Duration::from_millis(idle_after_ms)))
    }

    const PACE: Duration = Duration::from_millis(100);

    /// The first sweep (one every `PACE` from `start`, `sweeps` of them)
    /// that finds `activity` idle, as time since `start`; `between` runs
    /// before each sweep with its number.
    fn first_idle(
        activity: &Activity,
        start: Instant,
        sweeps: u32,
        between: impl Fn(u32, &Activity),
    ) -> Option<Duration> {
        (0..sweeps).find_map(|k| {
            between(k, activity);
            activity.idle_at(start + PACE * k).then_some(PACE * k)
        })
    }

    #[test]
    fn a_client_waiting_in_a_read_idles_out_after_its_time_and_never_before() {
        for idle_ms in [0, 50, 100, 800, 1_234] {
            let a = client(idle_ms);
            a.read(); // spoke once
            a.waiting();
            let at = first_idle(&a, Instant::now(), 100, |_, _| {}).expect("idled out");
            let idle = Duration::from_millis(idle_ms);
            assert!(at >= idle, "{idle_ms} ms: closed early, at {at:?}");
            assert!(
                at <= idle + PACE * 3,
                "{idle_ms} ms: closed late, at {at:?}"
            );
        }
    }

    #[test]
    fn a_read_between_sweeps_starts_the_wait_again() {
        let a = client(500);
        a.waiting();
        // Reads up to sweep 10, then silence: idle from there on.
        let at = first_idle(&a, Instant::now(), 100, |k, a| {
            if k <= 10 {
                a.read();
                a.waiting();
            }
        })
        .expect("idled out");
        assert!(at >= PACE * 10 + Duration::from_millis(500), "{at:?}");
        assert!(at <= PACE * 13 + Duration::from_millis(500), "{at:?}");
    }

    #[test]
    fn time_spent_writing_replies_is_not_idle_time() {
        // Not waiting in a read at any sweep (the connection is writing).
        let a = client(100);
        a.read();
        assert_eq!(first_idle(&a, Instant::now(), 50, |_, _| {}), None);
        // Writing at every other sweep: each one starts the wait again.
        let b = client(300);
        let at = first_idle(&b, Instant::now(), 50, |k, b| {
            if k % 2 == 0 {
                b.waiting();
            } else {
                b.read();
            }
        });
        assert_eq!(at, None);
    }

    #[test]
    fn links_never_idle_out_by_the_sweep() {
        let a = Activity::new(None);
        a.waiting();
        assert_eq!(first_idle(&a, Instant::now(), 50, |_, _| {}), None);
    }

    /// Counts the wakes of the task it stands for.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), Waker::from(wakes))
    }

    fn woken(wakes: &Wakes) -> usize {
        wakes.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn a_client_that_waited_a_whole_sweep_is_asked_once_to_give_back_its_buffers() {
        let connections = Rc::new(Connections::default());
        let registered = connections.register(-1, false, Some(Duration::from_secs(600)));
        let a = registered.activity();
        let (wakes, waker) = waker();
        let start = Instant::now();
        let sweep = |k: u32| connections.close_idle(start + PACE * k);
        a.read();
        a.waiting();
        a.park(&waker);
        assert_eq!(sweep(0), 0);
        assert!(!a.take_release(), "it read since the sweep before");
        sweep(1);
        assert!(a.take_release(), "a whole sweep without a read");
        assert_eq!(woken(&wakes), 1, "and woken to do it");
        for k in 2..5 {
            sweep(k);
        }
        assert!(!a.take_release(), "asked once per wait");
        assert_eq!(woken(&wakes), 1);
        // Busy again: asked again only after a new whole sweep of waiting.
        a.read();
        a.waiting();
        a.park(&waker);
        sweep(5);
        assert!(!a.take_release());
        sweep(6);
        assert!(a.take_release());
        assert_eq!(woken(&wakes), 2);
    }

    #[test]
    fn a_busy_client_and_a_link_are_never_asked_for_their_buffers() {
        let connections = Rc::new(Connections::default());
        let client = connections.register(-1, false, Some(Duration::from_secs(600)));
        let link = connections.register(-1, true, None);
        let (wakes, waker) = waker();
        let start = Instant::now();
        for k in 0..20 {
            for registered in [&client, &link] {
                let a = registered.activity();
                // The client reads between every two sweeps; the link waits.
                if !registered.peer {
                    a.read();
                }
                a.waiting();
                a.park(&waker);
            }
            connections.close_idle(start + PACE * k);
            assert!(!client.activity().take_release());
            assert!(!link.activity().take_release());
        }
        assert_eq!(woken(&wakes), 0);
    }
}
