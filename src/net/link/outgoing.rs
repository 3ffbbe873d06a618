//! Links to neighbours, the shell around [`Sender`]: one
//! outgoing connection per neighbour per shard that carries this shard's
//! records.
//!
//! A link is a cursor into the shard's store, which is the replication log
//! (see `pure/store/`): it sends, in batches, what lies past its cursor, then
//! waits until the store changes. Live flooding and catch-up are this one
//! loop; the neighbour's `SINCE` (or its silence, for a basic server) says
//! where the cursor starts. A neighbour that is down or slow costs its
//! cursor and nothing else: no queue, no copies, nothing on the hot path.
//! Owns the reconnect loop (capped exponential backoff), heartbeats and
//! write deadlines; the protocol decisions are the session's.

use crate::net::link::tls::{self as link_tls, LinkTls};
use crate::pure::digest::Key;
use crate::pure::flood_tree::Trees;
use crate::pure::framing::{Frame, LineBuffer};
use crate::pure::link_session::{Liveness, Opening, Sender, SenderEvent};
use crate::pure::server_ids::ServerIds;
use crate::pure::store::Receiver;
use crate::pure::tree_out::TreeOut;
use crate::shard::{LinkStatus, Shard};
use event_listener::Event;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records per batch: one write carries up to this many AT lines.
const BATCH: usize = 1024;
/// Bytes per batch, so a run of long records still makes bounded writes.
const BATCH_BYTES: usize = 256 * 1024;
/// Steps of a backward seek between yields (see `Store::seek`).
const SEEK_STEPS: usize = 64 * 1024;
/// Digest entries a link announces at most per interval: a long list (a
/// receiver that restarted) goes out over several.
const ANNOUNCE_LINES: usize = 1024;
/// Longest line a neighbour sends on a link we dialled (`SINCE`, `ACK`, a
/// refusal echoing our opening).
const MAX_ANSWER_LINE: usize = 512;

/// How a link (re)connects and paces itself.
#[derive(Debug, Clone)]
pub(crate) struct LinkSettings {
    /// Name of this server, sent in the handshake.
    pub me: Rc<str>,
    /// The herd's shared secret, proved in the handshake.
    pub secret: Option<Rc<str>>,
    /// Mutual TLS around the link, when the herd has it.
    pub tls: Option<LinkTls>,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Records per second a link sends at most, so a returning neighbour
    /// is not buried, nor this shard.
    pub records_per_sec: u64,
    /// How long records may gather before a write.
    pub linger: Duration,
    /// Heartbeats and silence detection.
    pub liveness: Liveness,
    /// A write that takes longer than this ends the link.
    pub write_timeout: Duration,
    /// This server's run, said to neighbours (`TREE`); `None` to speak
    /// only the earlier link rules.
    pub run: Option<u64>,
    /// The fingerprint of this server's graph (`TREE`), or `None` when it
    /// does not send along trees.
    pub topology: Option<u64>,
    /// The herd's flood trees, as this server's config has them.
    pub trees: Arc<Trees>,
    /// Numbers for server names: records' origins.
    pub ids: Arc<ServerIds>,
    /// How often a link announces its server's digests.
    pub announce: Duration,
}

/// Keeps the link of `status` connected for as long as the shard runs and
/// the neighbour stays one.
pub(crate) async fn run(
    status: Rc<LinkStatus>,
    live_settings: Rc<RefCell<LinkSettings>>,
    shard: Rc<Shard>,
) {
    let mut backoff = live_settings.borrow().backoff_initial;
    let mut failures = 0u64;
    while !shard.stop.is_requested() && !status.retired.get() {
        // A reload changes the settings; each attempt takes those in force.
        let settings = live_settings.borrow().clone();
        match TcpStream::connect_timeout(status.addr, Duration::from_secs(2)).await {
            Ok(stream) => {
                failures = 0;
                backoff = settings.backoff_initial;
                tracing::info!(neighbour = %status.neighbour, addr = %status.addr, "link opened");
                status.caught_up.set(false);
                status.connected.set(true);
                let why = carry(&status, stream, &settings, &shard).await;
                status.connected.set(false);
                tracing::info!(
                    neighbour = %status.neighbour,
                    reason = %why,
                    behind = shard.unsent(status.cursor),
                    "link dropped"
                );
            }
            Err(e) => {
                failures += 1;
                // The first failure says why; repeats would flood the log
                // while a neighbour is down.
                if failures == 1 {
                    tracing::info!(neighbour = %status.neighbour, addr = %status.addr, error = %e, "link not opened; retrying");
                }
            }
        }
        if status.retired.get() {
            break;
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(settings.backoff_max);
    }
    if status.retired.get() {
        shard.close_cursor(status.cursor);
        tracing::info!(neighbour = %status.neighbour, "link closed: no longer a neighbour");
    }
}

/// What the reading side of a link hands the sending loop.
#[derive(Default)]
struct Heard {
    events: RefCell<VecDeque<SenderEvent>>,
    closed: Cell<bool>,
    wake: Event,
}

/// Reads the neighbour's lines (`SINCE`, `ACK`, refusals) into the
/// session until the link ends.
async fn listen(
    mut reader: impl AsyncReadExt + Unpin,
    session: Rc<RefCell<Sender>>,
    heard: Rc<Heard>,
) {
    let mut lines = LineBuffer::new(MAX_ANSWER_LINE);
    loop {
        let n = match reader.read(lines.spare()).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        lines.filled(n);
        while let Some(frame) = lines.next_frame() {
            let line = match frame {
                Frame::Line(line) | Frame::TooLong(line) => line,
            };
            let event = session.borrow_mut().on_line(line, Instant::now());
            if event != SenderEvent::None {
                heard.events.borrow_mut().push_back(event);
            }
        }
        heard.wake.notify(usize::MAX);
    }
    heard.closed.set(true);
    heard.wake.notify(usize::MAX);
}

/// Opens the session, then sends what lies past the cursor and waits for
/// more, until the link fails. Returns why it ended.
async fn carry(
    status: &LinkStatus,
    stream: TcpStream,
    settings: &LinkSettings,
    shard: &Rc<Shard>,
) -> String {
    // Latency matters more than packet count: records are whole lines.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(settings.write_timeout));
    let Some(tls) = &settings.tls else {
        return stream_records(status, stream, settings, shard).await;
    };
    // The TLS handshake has the link's deadline, like any link write.
    let handshake = futures_lite::future::or(
        async { Some(link_tls::connect(tls, stream, &status.neighbour).await) },
        async {
            glommio::timer::sleep(settings.liveness.dead_after).await;
            None
        },
    );
    match handshake.await {
        Some(Ok(stream)) => stream_records(status, stream, settings, shard).await,
        Some(Err(e)) => format!("TLS handshake failed: {e}"),
        None => "TLS handshake timed out".to_owned(),
    }
}

/// The link over an open connection (plain TCP, or TLS over it): opens
/// the session, then sends and waits in turn until the link ends. Returns
/// why it ended.
async fn stream_records<S>(
    status: &LinkStatus,
    stream: S,
    settings: &LinkSettings,
    shard: &Rc<Shard>,
) -> String
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let (reader, writer) = futures_lite::io::split(stream);
    let mut link = match Link::open(status, writer, settings, shard).await {
        Ok(link) => link,
        Err(why) => return why,
    };
    let listener_task =
        glommio::spawn_local(listen(reader, link.session.clone(), link.heard.clone()));
    let reason = link.run().await;
    drop(listener_task);
    reason
}

/// An open link's sending side and what it keeps between turns.
struct Link<'a, W> {
    status: &'a LinkStatus,
    settings: &'a LinkSettings,
    shard: &'a Rc<Shard>,
    writer: W,
    session: Rc<RefCell<Sender>>,
    heard: Rc<Heard>,
    /// The store's numbering when the link opened.
    epoch: u64,
    /// The store's last sequence number when the link opened.
    head: u64,
    /// The lines of the next write.
    out: Vec<u8>,
    /// Which records this link carries (the flood trees).
    branch: TreeOut,
    /// `Some(n)`: the cursor is being moved to just after sequence number n.
    seeking: Option<u64>,
    next_tick: Instant,
    next_announce: Instant,
    /// When records were last written (see `wait`'s linger).
    last_write: Instant,
    /// When the link opened, and the records sent since: the pace.
    started: Instant,
    sent: u64,
}

/// What a turn of sending did.
enum Sent {
    /// A batch went out (or was all passed over): more may follow at once.
    More,
    /// Nothing was left: the link is caught up and waits.
    Nothing,
}

impl<'a, W: futures_lite::AsyncWrite + Unpin> Link<'a, W> {
    /// Writes the link's opening (`PEER`, and `TREE` when it speaks trees).
    async fn open(
        status: &'a LinkStatus,
        writer: W,
        settings: &'a LinkSettings,
        shard: &'a Rc<Shard>,
    ) -> Result<Link<'a, W>, String> {
        let epoch = shard.epoch();
        let mut out = Vec::with_capacity(64 * 1024);
        let nonce = crate::net::nonce::fresh()
            .map_err(|e| format!("no randomness for the handshake nonce: {e}"))?;
        let head = shard.seq();
        let opening = Opening {
            me: settings.me.to_string(),
            neighbour: status.neighbour.to_string(),
            secret: settings.secret.as_deref().map(str::to_owned),
            nonce,
            shard: shard.id as u32,
            epoch,
            head,
            run: settings.run,
            topology: settings.topology,
        };
        let session = Sender::open(Instant::now(), settings.liveness, opening, &mut out);
        let now = Instant::now();
        let mut link = Link {
            status,
            settings,
            shard,
            writer,
            session: Rc::new(RefCell::new(session)),
            heard: Rc::new(Heard::default()),
            epoch,
            head,
            out: Vec::new(),
            branch: TreeOut::new(status.neighbour_id, settings.trees.clone()),
            seeking: None,
            next_tick: now + settings.liveness.tick(),
            next_announce: now,
            last_write: now,
            started: now,
            sent: 0,
        };
        link.write(&out).await?;
        link.out = out;
        Ok(link)
    }

    /// Turns until the link ends; returns why.
    async fn run(&mut self) -> String {
        loop {
            let now = Instant::now();
            let mut events: Vec<SenderEvent> = self.heard.events.borrow_mut().drain(..).collect();
            if now >= self.next_tick {
                self.next_tick = now + self.settings.liveness.tick();
                events.push(self.session.borrow_mut().on_tick(now));
            }
            for event in events {
                if let Err(why) = self.on_event(event).await {
                    return why;
                }
            }
            if let Some(why) = self.ended() {
                return why;
            }
            if let Some(n) = self.seeking {
                if self.shard.seek(self.status.cursor, n, SEEK_STEPS) {
                    self.seeking = None;
                } else {
                    // A long way back: let the shard's other work run between steps.
                    glommio::yield_if_needed().await;
                    continue;
                }
            }
            self.out.clear();
            let streaming = self.session.borrow().streaming();
            if streaming {
                match self.send(now).await {
                    Ok(Sent::More) => continue,
                    Ok(Sent::Nothing) => {}
                    Err(why) => return why,
                }
            }
            self.wait(streaming).await;
        }
    }

    /// Writes `bytes`, counted.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())?;
        let status = self.status;
        status
            .bytes_sent
            .set(status.bytes_sent.get() + bytes.len() as u64);
        Ok(())
    }

    /// What the session made of the neighbour's lines or the clock: an
    /// error when the link must end.
    async fn on_event(&mut self, event: SenderEvent) -> Result<(), String> {
        let (status, shard, settings) = (self.status, self.shard, self.settings);
        match event {
            SenderEvent::SendAfter(n) => {
                let session = self.session.borrow();
                if session.basic() {
                    tracing::info!(neighbour = %status.neighbour, "neighbour speaks only the basic link rules: sending every record as plain AT lines");
                }
                self.branch
                    .opened(n, self.head, session.tree_link(), session.announce_after());
                if n == 0 && session.receiver_knew_an_earlier_run() {
                    // This server started again while the receiver kept
                    // what it had sent: records made more than a second
                    // before now are left to the announcements.
                    self.branch.lazy_before(unix_seconds().saturating_sub(1));
                }
                if session.announce_after().is_some() {
                    shard.flood.start_digests();
                }
                status.tree.set(session.tree_link());
                self.seeking = Some(n);
            }
            SenderEvent::Close(why) => return Err(why.to_string()),
            SenderEvent::Write(bytes) => self.write(&bytes).await?,
            SenderEvent::Graft { origin, second } => {
                let origin = settings.ids.id(&origin);
                if origin == 0 {
                    return Ok(());
                }
                status.grafts.set(status.grafts.get() + 1);
                self.branch.graft(origin);
                // Back to before the entry's first record: the receiver
                // lacks some of them.
                let back = shard.before_entry(Key { origin, second });
                let at = self
                    .seeking
                    .unwrap_or_else(|| shard.sent_seq(status.cursor));
                self.branch.rewinding(at);
                if back < at {
                    self.seeking = Some(back);
                }
            }
            SenderEvent::Prune { origin } => {
                let origin = settings.ids.id(&origin);
                status.prunes.set(status.prunes.get() + 1);
                self.branch.prune(origin);
            }
            SenderEvent::None => {}
        }
        Ok(())
    }

    /// Why the link must end now, if it must.
    fn ended(&self) -> Option<String> {
        if self.heard.closed.get() {
            return Some("closed by neighbour".to_owned());
        }
        if self.status.retired.get() {
            return Some("no longer a neighbour (reload)".to_owned());
        }
        if self.shard.epoch() != self.epoch {
            // The store renumbered: the neighbour's mark no longer means
            // anything, so reopen and let it ask for everything.
            return Some("sequence numbers started over; reopening".to_owned());
        }
        if self.shard.trees().topology() != self.settings.trees.topology() {
            // A reload changed the graph: say the new one.
            return Some("the herd's graph changed (reload); reopening".to_owned());
        }
        None
    }

    /// Sends the announcements due and the next batch of records past the
    /// cursor; when there is none, notes that the link is caught up and
    /// sends what the session says then (acknowledgements, keepalives).
    async fn send(&mut self, now: Instant) -> Result<Sent, String> {
        let (status, shard, settings) = (self.status, self.shard, self.settings);
        let mut out = std::mem::take(&mut self.out);
        status.eager.set(self.branch.eager());
        if self.branch.announcing() && now >= self.next_announce {
            self.next_announce = now + settings.announce;
            let board = &shard.flood.lock().board;
            self.branch
                .announce(board, &settings.ids, ANNOUNCE_LINES, &mut out);
        }
        // Records the neighbour itself sent in its present run are passed
        // over: it holds them, or newer ones.
        let receiver = self.session.borrow().neighbour_run().map(|run| Receiver {
            id: status.neighbour_id,
            run,
        });
        let branch = &self.branch;
        let batch =
            shard.next_link_batch(status.cursor, BATCH, BATCH_BYTES, &mut out, receiver, |r| {
                branch.wants(r)
            });
        let result = match batch {
            Some(batch) => {
                self.session
                    .borrow_mut()
                    .note_sent(shard.sent_seq(status.cursor), now, &mut out);
                self.sent_batch(&out, batch.records as u64).await
            }
            None => {
                // Nothing left to send: caught up, and not behind since now.
                status.caught_up.set(true);
                status.idle_since.set(now);
                let sent_seq = shard.sent_seq(status.cursor);
                {
                    let mut session = self.session.borrow_mut();
                    session.note_sent(sent_seq, now, &mut out);
                    session.keepalive(sent_seq, now, &mut out);
                }
                if !out.is_empty() {
                    self.write(&out).await.map(|()| Sent::Nothing)
                } else {
                    Ok(Sent::Nothing)
                }
            }
        };
        self.out = out;
        result
    }

    /// Writes a batch of `records` records (none when all were passed
    /// over), then keeps to `link_records_per_sec`.
    async fn sent_batch(&mut self, out: &[u8], records: u64) -> Result<Sent, String> {
        if out.is_empty() {
            // All passed over: nothing to write, more may follow.
            glommio::yield_if_needed().await;
            return Ok(Sent::More);
        }
        self.write(out).await?;
        if records > 0 {
            // Only records start a linger: after an announcement or a
            // keepalive (every `link_announce_ms` on a quiet link), the
            // next record would wait for nothing to gather, on one link
            // in a hundred at 100 ms per hop: the tail of propagation.
            self.last_write = Instant::now();
        }
        self.sent += records;
        let status = self.status;
        status.sent.set(status.sent.get() + records);
        // Pace: at most `records_per_sec` on average.
        let due =
            Duration::from_secs_f64(self.sent as f64 / self.settings.records_per_sec.max(1) as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            glommio::timer::sleep(ahead).await;
        }
        Ok(Sent::More)
    }

    /// Nothing to send: waits for the store, the neighbour or the clock,
    /// then lingers so that a busy link writes batches.
    async fn wait(&self, streaming: bool) {
        let (status, shard, heard) = (self.status, self.shard, &self.heard);
        let store_changed = shard.changed.listen();
        let neighbour_spoke = heard.wake.listen();
        // Checked again after listening, so a change in between is not missed.
        if (streaming && shard.has_unsent(status.cursor))
            || !heard.events.borrow().is_empty()
            || heard.closed.get()
        {
            return;
        }
        let mut until = self.next_tick;
        if self.branch.announcing() {
            until = until.min(self.next_announce);
        }
        let wait = until.saturating_duration_since(Instant::now());
        futures_lite::future::or(
            futures_lite::future::or(store_changed, neighbour_spoke),
            glommio::timer::sleep(wait),
        )
        .await;
        // Linger, Nagle-style: every write costs the neighbour a wake-up,
        // which dwarfs a record. A link that wrote records less than `linger` ago
        // lets records gather until then, so a busy link writes batches.
        let since_last = self.last_write.elapsed();
        if since_last < self.settings.linger && !heard.closed.get() {
            glommio::timer::sleep(self.settings.linger - since_last).await;
        }
    }
}

/// Whole seconds since the Unix epoch, as records' origin seconds count
/// them (0 before it).
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
