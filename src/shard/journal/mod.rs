//! The journal: each shard's records on disk, so that a restarted server
//! keeps what it acknowledged. The shell around `pure/journal.rs`.
//!
//! The writer is one more cursor into the store, like a link: it writes,
//! in batches, what lies past its cursor to the shard's file through
//! glommio's `DmaFile` (direct I/O), then syncs as the `fsync` mode says.
//! A batch is one write and at most one `fdatasync` (with `always`, one
//! synchronous `O_DSYNC` write), whatever the number of records in it
//! (group commit), and a record updated twice before a
//! write goes out once. Direct I/O writes whole aligned blocks: the last,
//! partial block is kept in memory and written again, at its place, with
//! the next batch. With `always`, a second batch goes out while the first
//! is under way, starting at a block of its own (the format's gap).
//!
//! Files are named `journal-<generation>-<shard>.log`. A new file is
//! written from a new cursor at the start of the store, which walks exactly
//! the live records: that is both the fresh file of a start and compaction.
//! Appends switch to it once it has caught up and is synced; only then is
//! the old file removed. Replay ([`replay`]) reads every file of the
//! folder, whatever shard count wrote it.
//!
//! With `fsync: always`, an IAMAT's reply waits on [`Durability::wait`]:
//! it is answered once the writer's cursor has passed its record and the
//! file is synced.
//!
//! Files are filled with zeros, and synced, ahead of the entries (in the
//! background, a chunk at a time, see [`fill_after`]). A direct write that
//! extends a file must change its size and allocate blocks: the filesystem
//! takes the file's lock exclusively, io_uring hands the write to a worker
//! thread, and with `O_DSYNC` or `fdatasync` each write waits for the
//! filesystem's own journal to commit. A write over blocks that are already
//! there and already part of the file is none of that: it is issued from
//! the shard's thread and costs the device one trip (plus the cache flush
//! the sync asks for). Replay reads the zeros after the last entry as
//! padding, as it reads the padding of the last block.

use crate::ops::metrics::JournalFigures;
use crate::pure::config::Fsync;
use crate::pure::journal::{self, file_name};
use crate::pure::store::CursorId;
use crate::shard::Shard;
use futures_channel::oneshot;
use glommio::io::{DmaFile, OpenOptions};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod replay;

// The rest of the server knows one journal module: the start calls
// `journal::replay`, then `open` and `run` per shard.
pub(crate) use replay::{replay, Replayed};

/// Records per write.
const BATCH: usize = 4096;
/// Bytes of AT lines per write: one direct write of at most this much (plus
/// the kept partial block) goes out at a time.
const BATCH_BYTES: usize = 256 * 1024;
/// A file is rewritten once it is more than twice the live records and at
/// least this large: below it, compaction would cost more than it saves.
const COMPACT_MIN_BYTES: u64 = 256 * 1024;
/// Batches of a compaction's new file written per batch of appends: more
/// than one, so that it catches up with a store that keeps changing.
const COMPACT_BATCHES: usize = 4;
/// How often `everysec` syncs, at most.
const EVERYSEC: Duration = Duration::from_secs(1);
/// The wait before retrying after a failed write or sync.
const RETRY: Duration = Duration::from_secs(1);
/// With `always`, writes under way at once: while one waits for the
/// device, the records that came meanwhile go out in the next, instead of
/// waiting a whole trip for it to finish. Two writes never share a block
/// (see [`LogFile::start_batch`]).
const WRITES_IN_FLIGHT: usize = 2;
/// The zero fill ahead of the entries: never less than this ...
const FILL_MIN: u64 = 64 * 1024;
/// ... nor more than this, of which each write of the fill is one piece.
const FILL_MAX: u64 = 8 << 20;
const FILL_PIECE: u64 = 1 << 20;

/// The range to fill with zeros next, if one is due: the entries reach
/// `written` and the fill `filled`. A fill starts once less than half a
/// fill is left ahead of the entries; it is as large as what was written
/// (so a small journal stays small on disk: at most twice its entries),
/// within [`FILL_MIN`] and [`FILL_MAX`], and starts where both end, at a
/// multiple of `align`.
fn fill_after(written: u64, filled: u64, align: u64) -> Option<(u64, u64)> {
    let size = written.clamp(FILL_MIN, FILL_MAX);
    if filled > written && filled - written >= size / 2 {
        return None;
    }
    let from = written.max(filled).div_ceil(align) * align;
    Some((from, from + size))
}

/// A server's journal, shared by its shards: where files go, the mode,
/// and the start's old files, removed by the last shard to finish its
/// first file.
pub(crate) struct JournalPlan {
    /// The server's journal folder.
    pub dir: PathBuf,
    /// When to sync.
    pub fsync: Fsync,
    /// What replay found.
    pub replayed: Arc<Replayed>,
    /// Shards whose first file is complete.
    pub complete: AtomicUsize,
    /// Shards in this run.
    pub shards: usize,
}

impl JournalPlan {
    /// Whether files are opened with O_DSYNC: with `always`, every write is
    /// waited for anyway.
    fn dsync(&self) -> bool {
        self.fsync == Fsync::Always
    }
}

/// One record's waiter: answered once the journal holds `seq` of
/// `generation` (the store's numbering) on disk.
struct Waiter {
    generation: u32,
    seq: u64,
    done: oneshot::Sender<()>,
}

/// How far a shard's journal is on disk, and who waits for it.
pub(crate) struct Durability {
    fsync: Fsync,
    // (store generation, sequence number): every record numbered up to it
    // is written and synced as the mode says.
    synced: Cell<(u32, u64)>,
    waiters: RefCell<Vec<Waiter>>,
    // The writer has written and synced all the store held when it last
    // looked.
    idle: Cell<bool>,
    // What the writer counts, for the admin endpoint; `behind_records` is
    // worked out from `cursor` when published.
    figures: Cell<JournalFigures>,
    // The cursor of the file being appended to.
    cursor: Cell<Option<CursorId>>,
}

impl Durability {
    /// Nothing on disk yet.
    pub(crate) fn new(fsync: Fsync) -> Durability {
        Durability {
            fsync,
            synced: Cell::new((0, 0)),
            waiters: RefCell::new(Vec::new()),
            idle: Cell::new(false),
            figures: Cell::new(JournalFigures::default()),
            cursor: Cell::new(None),
        }
    }

    /// The writer's figures now; `unsent` counts the records past a cursor.
    pub(crate) fn figures(&self, unsent: impl Fn(CursorId) -> u64) -> JournalFigures {
        JournalFigures {
            behind_records: self.cursor.get().map_or(0, unsent),
            ..self.figures.get()
        }
    }

    /// The records this shard took from the journal at start.
    pub(crate) fn set_replayed(&self, records: usize) {
        self.count(|f| f.replayed = records as u64);
    }

    fn count(&self, change: impl FnOnce(&mut JournalFigures)) {
        let mut figures = self.figures.get();
        change(&mut figures);
        self.figures.set(figures);
    }

    /// Counts a sync (an `fdatasync`, or a synchronous write) begun at `began`.
    fn count_sync(&self, began: Instant) {
        self.count(|f| {
            f.syncs += 1;
            f.sync_seconds += began.elapsed().as_secs_f64();
        });
    }

    /// Whether an IAMAT's reply waits for its record to be on disk.
    pub(crate) fn acks_wait(&self) -> bool {
        self.fsync == Fsync::Always
    }

    /// Whether the writer has nothing left to write or sync.
    pub(crate) fn idle(&self) -> bool {
        self.idle.get()
    }

    fn reached(&self, generation: u32, seq: u64) -> bool {
        let (g, s) = self.synced.get();
        g == generation && s >= seq
    }

    /// Answers `done` once every record numbered up to `seq` (of store
    /// generation `generation`) is on disk.
    pub(crate) fn wait(&self, generation: u32, seq: u64, done: oneshot::Sender<()>) {
        if self.reached(generation, seq) {
            let _ = done.send(());
            return;
        }
        self.waiters.borrow_mut().push(Waiter {
            generation,
            seq,
            done,
        });
    }

    /// Everything up to `seq` of store generation `generation` is on disk:
    /// answers those who waited for it. A waiter of an older numbering
    /// (the store renumbered) waits for all the store holds now (up to
    /// `store_seq`), which includes its record.
    fn advance(&self, generation: u32, seq: u64, store_seq: u64) {
        self.synced.set((generation, seq));
        let waiting = std::mem::take(&mut *self.waiters.borrow_mut());
        let mut left = Vec::new();
        for mut w in waiting {
            if w.generation != generation {
                w.generation = generation;
                w.seq = store_seq;
            }
            if self.reached(w.generation, w.seq) {
                // The connection may be gone; nothing to answer then.
                let _ = w.done.send(());
            } else {
                left.push(w);
            }
        }
        *self.waiters.borrow_mut() = left;
    }
}

/// What [`LogFile::append`] did: whether a write finished, and whether
/// its batch reached the end of the store when taken.
struct Batch {
    wrote: bool,
    at_end: bool,
}

/// A write under way: its I/O and its length, and the store's position
/// (generation, sequence number) that its records reach.
struct InFlight {
    io: Pin<Box<dyn Future<Output = glommio::Result<usize, ()>>>>,
    len: usize,
    upto: (u32, u64),
    at_end: bool,
}

/// A zero fill under way: the range, and the task writing and syncing it.
struct Fill {
    from: u64,
    to: u64,
    task: glommio::Task<Result<(), String>>,
}

/// One journal file being written: the part of it that is not on disk in
/// whole blocks, and the cursor that feeds it.
struct LogFile {
    // Shared with the task of a zero fill.
    file: Rc<DmaFile>,
    path: PathBuf,
    // Where the file's zeros, written and synced, end.
    filled: u64,
    fill: Option<Fill>,
    // After a failed fill, none is tried again before this.
    no_fill_until: Option<Instant>,
    // Writes under way, oldest first.
    in_flight: VecDeque<InFlight>,
    // The store's position that the finished writes reach.
    done: (u32, u64),
    // Where the kept partial block starts (aligned).
    block_at: u64,
    // The bytes from `block_at` on, less than a block: written again, at
    // `block_at`, with the next batch.
    tail: Vec<u8>,
    cursor: CursorId,
    align: usize,
    // Opened with O_DSYNC (`fsync: always`): each write returns once it is
    // durable, so no separate `fdatasync` is needed, and each answered
    // batch costs the device one round trip instead of two.
    dsync: bool,
    // Where syncs are counted.
    durability: Option<Rc<Durability>>,
}

impl LogFile {
    /// A new file holding its header, read from a new cursor at the start
    /// of the store, in the plan's folder; its writes are synchronous
    /// when the plan says so.
    async fn create(plan: &JournalPlan, generation: u64, shard: &Shard) -> Result<LogFile, String> {
        let (dir, dsync) = (&plan.dir, plan.dsync());
        let path = dir.join(file_name(generation, shard.id));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(if dsync { libc::O_DSYNC } else { 0 })
            .dma_open(&path)
            .await
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let align = usize::try_from(file.alignment()).unwrap_or(4096).max(1);
        let mut tail = Vec::with_capacity(align);
        journal::write_header(&mut tail, u32::try_from(align).unwrap_or(4096));
        let mut log = LogFile {
            file: Rc::new(file),
            path,
            filled: 0,
            fill: None,
            no_fill_until: None,
            in_flight: VecDeque::new(),
            done: (0, 0),
            block_at: 0,
            tail,
            cursor: shard.open_cursor(),
            align,
            dsync,
            durability: shard.durability().cloned(),
        };
        // The header goes out now: a file that is named is a journal, and
        // its name is made durable with the folder's sync.
        let header = std::mem::take(&mut log.tail);
        if let Err(e) = log.write(header).await {
            shard.close_cursor(log.cursor);
            return Err(e);
        }
        sync_dir(dir).await;
        Ok(log)
    }

    /// The file's length: what was written, up to the padding.
    fn len(&self) -> u64 {
        self.block_at + self.tail.len() as u64
    }

    /// Starts writing the next batch past the cursor, if there is one;
    /// its I/O goes on while the caller does. Says whether it started one.
    async fn start_batch(&mut self, shard: &Shard, lines: &mut Vec<u8>) -> bool {
        lines.clear();
        if shard
            .next_batch(self.cursor, BATCH, BATCH_BYTES, lines)
            .is_none()
        {
            return false;
        }
        let upto = (shard.generation(), shard.sent_seq(self.cursor));
        let at_end = !shard.has_unsent(self.cursor);
        if !self.in_flight.is_empty() && !self.tail.is_empty() {
            // The partial last block is in a write under way, and the
            // device may apply two writes of one block in either order:
            // this one starts at a block of its own, after a gap of zeros
            // that replay skips.
            let end = self.block_at + self.tail.len() as u64;
            self.block_at = journal::gap_end(end, self.align as u64);
            self.tail.clear();
        }
        let mut data = std::mem::take(&mut self.tail);
        data.reserve(lines.len() + lines.len() / 8);
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            journal::write_entry(&mut data, line);
        }
        self.start(data, upto, at_end).await;
        true
    }

    /// Keeps up to `depth` writes under way. Returns once the oldest has
    /// finished (`wrote`), or, when there is room for another, once there
    /// is something to start it with (not `wrote`, not `at_end`).
    async fn append(
        &mut self,
        shard: &Shard,
        lines: &mut Vec<u8>,
        depth: usize,
    ) -> Result<Batch, String> {
        while self.in_flight.len() < depth && self.start_batch(shard, lines).await {}
        let more = Batch {
            wrote: false,
            at_end: false,
        };
        if self.in_flight.is_empty() {
            return Ok(Batch {
                wrote: false,
                at_end: true,
            });
        }
        if self.in_flight.len() < depth {
            let changed = shard.changed.listen();
            if shard.has_unsent(self.cursor) {
                return Ok(more);
            }
            let finished =
                futures_lite::future::or(async { Some(self.finish_oldest().await) }, async {
                    changed.await;
                    None
                })
                .await;
            return finished.unwrap_or(Ok(more));
        }
        self.finish_oldest().await
    }

    /// Waits for the oldest write under way and takes its result.
    async fn finish_oldest(&mut self) -> Result<Batch, String> {
        let Some(write) = self.in_flight.front_mut() else {
            return Err("no write under way".into());
        };
        let written = (&mut write.io).await;
        let len = write.len;
        match written {
            Ok(n) if n == len => {}
            Ok(n) => {
                return Err(format!(
                    "short write to {}: {n} of {len}",
                    self.path.display()
                ))
            }
            Err(e) => return Err(format!("writing {}: {e}", self.path.display())),
        }
        let Some(write) = self.in_flight.pop_front() else {
            return Err("no write under way".into());
        };
        self.done = write.upto;
        Ok(Batch {
            wrote: true,
            at_end: write.at_end,
        })
    }

    /// Writes `data` at `block_at` (nothing else under way).
    async fn write(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.start(data, self.done, false).await;
        self.finish_oldest().await.map(|_| ())
    }

    /// Starts writing `data` at `block_at`, padded with zeros to whole
    /// blocks, and keeps its last partial block for the next write.
    async fn start(&mut self, mut data: Vec<u8>, upto: (u32, u64), at_end: bool) {
        let whole = data.len().div_ceil(self.align) * self.align;
        let end = self.block_at + whole as u64;
        // The fill's zeros must not land after these entries.
        self.fill_done(end).await;
        let mut buf = self.file.alloc_dma_buffer(whole);
        let bytes = buf.as_bytes_mut();
        bytes[..data.len()].copy_from_slice(&data);
        bytes[data.len()..].fill(0);
        let (file, at) = (self.file.clone(), self.block_at);
        let durability = self.durability.clone().filter(|_| self.dsync);
        let mut io: Pin<Box<dyn Future<Output = _>>> = Box::pin(async move {
            let began = Instant::now();
            let written = file.write_at(buf, at).await;
            if let Some(d) = durability {
                d.count_sync(began);
            }
            written
        });
        // Polled once now, so that it is submitted with this turn's I/O
        // rather than when it is first waited for.
        if let Some(result) = futures_lite::future::poll_once(&mut io).await {
            io = Box::pin(std::future::ready(result));
        }
        self.in_flight.push_back(InFlight {
            io,
            len: whole,
            upto,
            at_end,
        });
        let full = data.len() / self.align * self.align;
        data.drain(..full);
        self.block_at += full as u64;
        self.tail = data;
        self.fill_ahead();
    }

    /// Waits for the zero fill under way if it reaches below `end`, and
    /// takes its result: the file's zeros then end where it ends. A failed
    /// fill costs only speed (writes past the zeros extend the file), so it
    /// is logged, and none is tried for a while.
    async fn fill_done(&mut self, end: u64) {
        let Some(fill) = self.fill.take_if(|f| f.from < end) else {
            return;
        };
        match fill.task.await {
            Ok(()) => self.filled = self.filled.max(fill.to),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "journal: zero fill failed; writes extend the file");
                self.no_fill_until = Some(Instant::now() + RETRY);
            }
        }
    }

    /// Starts the next zero fill in the background, if one is due and
    /// none is under way.
    fn fill_ahead(&mut self) {
        if self.fill.is_some() || self.no_fill_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        // The written blocks end at the kept partial block's end, rounded up.
        let align = self.align as u64;
        let written = self.len().div_ceil(align) * align;
        let Some((from, to)) = fill_after(written, self.filled, align) else {
            return;
        };
        let (file, path) = (self.file.clone(), self.path.clone());
        let task = glommio::spawn_local(async move {
            let failed =
                |e: &dyn std::fmt::Display| format!("filling {} with zeros: {e}", path.display());
            let mut at = from;
            while at < to {
                let len = FILL_PIECE.min(to - at);
                let mut zeros = file.alloc_dma_buffer(len as usize);
                zeros.as_bytes_mut().fill(0);
                match file.write_at(zeros, at).await.map_err(|e| failed(&e))? {
                    0 => return Err(failed(&"nothing written")),
                    n => at += n as u64,
                }
            }
            // Synced, so that the entries' syncs find nothing of the
            // filesystem's own to commit.
            file.fdatasync().await.map_err(|e| failed(&e))
        });
        self.fill = Some(Fill { from, to, task });
    }

    /// Closes the file, once its writes and a zero fill under way have
    /// stopped, and unlinks it off this thread (unlinking a large file can
    /// wait on the filesystem's journal). Returns its path.
    async fn discard(mut self) -> PathBuf {
        for write in self.in_flight.drain(..) {
            let _ = write.io.await;
        }
        if let Some(fill) = self.fill.take() {
            fill.task.cancel().await;
        }
        let _ = self.file.close_rc().await;
        remove(&self.path).await;
        self.path
    }

    /// Makes what was written durable (nothing to do with O_DSYNC).
    async fn sync(&self) -> Result<(), String> {
        if self.dsync {
            return Ok(());
        }
        let began = Instant::now();
        let synced = self.file.fdatasync().await;
        if let Some(d) = &self.durability {
            d.count_sync(began);
        }
        synced.map_err(|e| format!("syncing {}: {e}", self.path.display()))
    }
}

/// Makes a new or removed file name durable; a failure is logged (the
/// data is synced; only the name could be lost, and replay reads any).
async fn sync_dir(dir: &Path) {
    let synced = async { glommio::io::Directory::open(dir).await?.sync().await };
    if let Err(e) = synced.await {
        tracing::warn!(dir = %dir.display(), error = %e, "journal: folder not synced");
    }
}

/// A shard's journal with its first file open: what [`run`] goes on with.
pub(crate) struct Opened {
    log: LogFile,
    // The generation of the next file.
    generation: u64,
}

/// Opens `shard`'s first journal file. Called as the shard starts: a
/// folder that cannot take the journal (read-only, no direct I/O) fails
/// the start rather than leaving a server up that cannot keep its promise.
pub(crate) async fn open(shard: &Shard, plan: &JournalPlan) -> Result<Opened, String> {
    let generation = plan.replayed.generation;
    let log = LogFile::create(plan, generation, shard).await?;
    Ok(Opened {
        log,
        generation: generation + 1,
    })
}

/// Keeps `shard`'s journal for as long as the shard runs: writes what its
/// store takes, syncs per the mode, compacts, and answers the waiters.
/// After a failed write it starts a new file, retried every second.
pub(crate) async fn run(
    shard: Rc<Shard>,
    durability: Rc<Durability>,
    plan: Arc<JournalPlan>,
    opened: Opened,
) {
    let Opened {
        mut log,
        mut generation,
    } = opened;
    let mut lines = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut first = true;
    loop {
        let why = write(
            &shard,
            &durability,
            &plan,
            log,
            &mut generation,
            &mut first,
            &mut lines,
        )
        .await;
        durability.cursor.set(None);
        durability.count(|f| f.errors += 1);
        tracing::error!(shard = shard.id, error = %why, "journal: write failed; starting a new file");
        log = loop {
            glommio::timer::sleep(RETRY).await;
            if shard.stop.is_requested() {
                return;
            }
            let created = LogFile::create(&plan, generation, &shard).await;
            generation += 1;
            match created {
                Ok(log) => break log,
                Err(e) => {
                    durability.count(|f| f.errors += 1);
                    tracing::error!(shard = shard.id, error = %e, "journal: cannot open a file; retrying");
                }
            }
        };
    }
}

/// Appends to `log` until a write fails (returns why); starts and finishes
/// compactions on the way.
async fn write(
    shard: &Rc<Shard>,
    durability: &Durability,
    plan: &JournalPlan,
    mut log: LogFile,
    generation: &mut u64,
    first: &mut bool,
    lines: &mut Vec<u8>,
) -> String {
    // The file being written to replace `log` (compaction).
    let mut next: Option<LogFile> = None;
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    durability.cursor.set(Some(log.cursor));
    durability.count(|f| f.file_bytes = log.len());
    let depth = match durability.fsync {
        Fsync::Always => WRITES_IN_FLIGHT,
        Fsync::Everysec | Fsync::Off => 1,
    };
    loop {
        let Batch { wrote, at_end } = match log.append(shard, lines, depth).await {
            Ok(batch) => batch,
            Err(e) => return give_up(shard, &log, next, e),
        };
        if wrote {
            unsynced = true;
            durability.idle.set(false);
            durability.count(|f| {
                f.writes += 1;
                f.file_bytes = log.len();
            });
        }
        // Not `has_unsent` now: under steady load records always come while
        // a write is under way, and the file would never count as caught up.
        let caught_up = at_end;
        if unsynced && sync_due(durability.fsync, last_sync, caught_up, shard) {
            if let Err(e) = log.sync().await {
                return give_up(shard, &log, next, e);
            }
            last_sync = Instant::now();
            unsynced = false;
        }
        // What the cursor has passed is on disk as far as the mode asks.
        let settled = !unsynced || durability.fsync == Fsync::Off;
        if settled {
            advance(shard, durability, &log);
            if caught_up {
                finish_start(shard.id, plan, first).await;
            }
        }
        if next.is_none() && !*first && needs_compaction(log.len(), shard) {
            next = start_compaction(shard, durability, plan, &log, generation).await;
        }
        if let Some(n) = next.take() {
            // A few batches of the new file per round of appends: it must
            // outrun the updates, which it also writes, to catch up.
            match compaction_turn(shard, durability, n, lines).await {
                Compaction::Going(n) => next = Some(n),
                Compaction::Done(n) => {
                    let old = std::mem::replace(&mut log, n);
                    shard.close_cursor(old.cursor);
                    durability.cursor.set(Some(log.cursor));
                    durability.count(|f| {
                        f.compactions += 1;
                        f.file_bytes = log.len();
                    });
                    sync_dir(&plan.dir).await;
                    let removed = old.discard().await;
                    tracing::info!(shard = shard.id, bytes = log.len(), removed = %removed.display(), "journal: compacted");
                    // The new file holds every stored record, synced.
                    unsynced = false;
                    advance(shard, durability, &log);
                }
                Compaction::Abandoned => {}
            }
            glommio::yield_if_needed().await;
            continue;
        }
        // (With `always` the sync above left nothing unsynced.)
        if wrote || !log.in_flight.is_empty() {
            glommio::yield_if_needed().await;
            continue;
        }
        durability.idle.set(settled);
        // Nothing to write: wait for the store, or for the next sync.
        let changed = shard.changed.listen();
        if shard.has_unsent(log.cursor) {
            continue;
        }
        let wait = if unsynced {
            EVERYSEC.saturating_sub(last_sync.elapsed())
        } else {
            // The stop is looked at a few times a second.
            Duration::from_millis(200)
        };
        futures_lite::future::or(changed, glommio::timer::sleep(wait)).await;
    }
}

/// Whether written records must be synced now: at once with `always`,
/// a second after the last sync with `everysec` (or once caught up at a
/// stop), never with `off`.
fn sync_due(fsync: Fsync, last_sync: Instant, caught_up: bool, shard: &Shard) -> bool {
    match fsync {
        Fsync::Always => true,
        Fsync::Everysec => {
            last_sync.elapsed() >= EVERYSEC || (caught_up && shard.stop.is_requested())
        }
        Fsync::Off => false,
    }
}

/// The writer stops on `why`: its files' cursors no longer hold the store
/// back.
fn give_up(shard: &Shard, log: &LogFile, next: Option<LogFile>, why: String) -> String {
    shard.close_cursor(log.cursor);
    if let Some(n) = next {
        shard.close_cursor(n.cursor);
    }
    why
}

/// Where a compaction stands after a turn.
enum Compaction {
    /// Its new file is still catching up.
    Going(LogFile),
    /// Its new file holds every stored record, synced: it replaces the old.
    Done(LogFile),
    /// It failed, and its file is gone.
    Abandoned,
}

/// Creates the new file of a compaction of `log`; `None` (counted and
/// logged) when it cannot be made. Each try takes the next generation.
async fn start_compaction(
    shard: &Shard,
    durability: &Durability,
    plan: &JournalPlan,
    log: &LogFile,
    generation: &mut u64,
) -> Option<LogFile> {
    let made = match LogFile::create(plan, *generation, shard).await {
        Ok(n) => {
            tracing::info!(shard = shard.id, bytes = log.len(), live_bytes = live_bytes(shard), file = %n.path.display(), "journal: compacting");
            Some(n)
        }
        Err(e) => {
            durability.count(|f| f.errors += 1);
            tracing::warn!(shard = shard.id, error = %e, "journal: compaction not started");
            None
        }
    };
    *generation += 1;
    made
}

/// A few batches of a compaction's new file `n`.
async fn compaction_turn(
    shard: &Shard,
    durability: &Durability,
    mut n: LogFile,
    lines: &mut Vec<u8>,
) -> Compaction {
    match compact_step(shard, durability, &mut n, lines).await {
        Ok(false) => Compaction::Going(n),
        Ok(true) => Compaction::Done(n),
        Err(e) => {
            durability.count(|f| f.errors += 1);
            tracing::warn!(shard = shard.id, error = %e, "journal: compaction abandoned");
            shard.close_cursor(n.cursor);
            n.discard().await;
            Compaction::Abandoned
        }
    }
}

/// Writes a few batches of a compaction's new file; true once a batch
/// reached the end of the store and the file is synced after it. The file
/// then holds, on disk, every record the old one held or a newer one of
/// its client (the old file's cursor was behind this one's when this batch
/// was taken); what came since lies past its cursor and is appended to it
/// after the switch. Its cursor must not move before the switch.
async fn compact_step(
    shard: &Shard,
    durability: &Durability,
    next: &mut LogFile,
    lines: &mut Vec<u8>,
) -> Result<bool, String> {
    for _ in 0..COMPACT_BATCHES {
        let batch = next.append(shard, lines, 1).await?;
        if batch.wrote {
            durability.count(|f| f.writes += 1);
        }
        if batch.at_end {
            next.sync().await?;
            return Ok(true);
        }
        glommio::yield_if_needed().await;
    }
    Ok(false)
}

/// Answers the waiters for what `log`'s finished writes hold.
fn advance(shard: &Shard, durability: &Durability, log: &LogFile) {
    let (generation, seq) = log.done;
    durability.advance(generation, seq, shard.seq());
}

/// The bytes a journal of exactly the stored records takes.
fn live_bytes(shard: &Shard) -> u64 {
    let (records, line_bytes) = shard.journal_size();
    (journal::HEADER_LEN + records * journal::ENTRY_HEADER_LEN + line_bytes) as u64
}

/// Whether a file of `len` bytes is worth rewriting: over twice the live
/// records, and not small.
fn needs_compaction(len: u64, shard: &Shard) -> bool {
    len > COMPACT_MIN_BYTES && len > 2 * live_bytes(shard)
}

/// This shard's first file is complete: the last shard to get there
/// removes the files the start replayed (every record in them is in a new
/// file now).
async fn finish_start(shard: usize, plan: &JournalPlan, first: &mut bool) {
    if !*first {
        return;
    }
    *first = false;
    tracing::debug!(shard, "journal: first file complete");
    if plan.complete.fetch_add(1, Ordering::SeqCst) + 1 == plan.shards {
        for path in &plan.replayed.old_files {
            remove(path).await;
        }
        if !plan.replayed.old_files.is_empty() {
            tracing::info!(
                files = plan.replayed.old_files.len(),
                "journal: replayed files removed; every shard has written its own"
            );
        }
    }
}

/// Unlinks `path` on glommio's blocking-call thread, not the shard's.
async fn remove(path: &Path) {
    // Its records are in another file: a file left behind costs only
    // replay time, so a failure is logged and nothing more.
    if let Err(e) = glommio::io::remove(path).await {
        tracing::warn!(file = %path.display(), error = %e, "journal: old file not removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zero_fill_keeps_ahead_of_the_entries_and_grows_with_the_file() {
        // A new file: the smallest fill, from the first block on.
        assert_eq!(fill_after(512, 0, 512), Some((512, 512 + FILL_MIN)));
        // Half a fill or more left ahead: none due.
        assert_eq!(fill_after(1000, 1000 + FILL_MIN / 2, 512), None);
        // Less than half left: the next one starts where the zeros end.
        let filled = 4096 + FILL_MIN / 2 - 512;
        assert_eq!(
            fill_after(4096, filled, 512),
            Some((filled, filled + FILL_MIN))
        );
        // Entries past the zeros (a fill failed): from the entries' end,
        // aligned up.
        assert_eq!(fill_after(3 << 20, 1 << 20, 4096), Some((3 << 20, 6 << 20)));
        assert_eq!(fill_after(1001, 0, 512), Some((1024, 1024 + FILL_MIN)));
        // A large file: the largest fill, no more.
        assert_eq!(
            fill_after(100 << 20, 100 << 20, 4096),
            Some((100 << 20, (100 << 20) + FILL_MAX))
        );
    }
}
