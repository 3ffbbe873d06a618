//! Links to neighbours: one outgoing connection per neighbour per shard that
//! opens with the `PEER` handshake and then carries flooded AT lines.
//!
//! Owns the reconnect loop (capped exponential backoff) and the bounded
//! [`FloodQueue`] of its neighbour; the shard only enqueues. Incoming links
//! are accepted by the connection code, which checks their handshake.

use crate::flood::FloodQueue;
use crate::protocol;
use crate::record::Record;
use crate::shard::Shard;
use event_listener::Event;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Records written per batch: one write carries up to this many AT lines.
const BATCH: usize = 1024;

/// How a link (re)connects.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Name of this server, sent in the handshake.
    pub me: Rc<str>,
    /// Credential for the handshake (HMAC hex, or `-`).
    pub credential: String,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Records per second a catch-up sends at most.
    pub catch_up_rate: u64,
    /// How long floods may gather before a write.
    pub linger: Duration,
}

/// One shard's link to one neighbour.
pub struct Link {
    /// The neighbour's name.
    pub neighbour: Rc<str>,
    addr: SocketAddr,
    queue: RefCell<FloodQueue>,
    doorbell: Event,
    connected: Cell<bool>,
}

impl Link {
    /// A link to `neighbour` at `addr` with a queue of `capacity` records.
    pub fn new(neighbour: Rc<str>, addr: SocketAddr, capacity: usize) -> Link {
        Link {
            neighbour,
            addr,
            queue: RefCell::new(FloodQueue::new(capacity)),
            doorbell: Event::new(),
            connected: Cell::new(false),
        }
    }

    /// Queues a record for this neighbour.
    pub fn flood(&self, record: Record) {
        self.queue.borrow_mut().flood(record);
        self.doorbell.notify(1);
    }

    /// Whether the link is up now.
    pub fn is_connected(&self) -> bool {
        self.connected.get()
    }

    /// Records waiting for this neighbour.
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.borrow().dropped()
    }
}

/// Keeps `link` connected for as long as the shard runs.
pub async fn run(link: Rc<Link>, settings: LinkSettings, shard: Rc<Shard>) {
    let mut backoff = settings.backoff_initial;
    let mut failures = 0u64;
    while !shard.stop.is_requested() {
        match TcpStream::connect_timeout(link.addr, Duration::from_secs(2)).await {
            Ok(stream) => {
                failures = 0;
                backoff = settings.backoff_initial;
                tracing::info!(neighbour = %link.neighbour, addr = %link.addr, "link opened");
                link.connected.set(true);
                let why = carry(&link, stream, &settings, &shard).await;
                link.connected.set(false);
                tracing::info!(neighbour = %link.neighbour, reason = %why, queued = link.queued(), "link dropped");
            }
            Err(e) => {
                failures += 1;
                // The first failure says why; repeats would flood the log
                // while a neighbour is down.
                if failures == 1 {
                    tracing::info!(neighbour = %link.neighbour, addr = %link.addr, error = %e, "link not opened; retrying");
                }
            }
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

/// Opens the stream, resends what the neighbour lacks from the store, then
/// floods live records until the link fails. Returns why it ended.
async fn carry(
    link: &Rc<Link>,
    stream: TcpStream,
    settings: &LinkSettings,
    shard: &Rc<Shard>,
) -> String {
    // Latency matters more than packet count: records are whole lines.
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let mut opening = String::new();
    let epoch = shard.epoch();
    protocol::write_link_opening(
        &mut opening,
        &settings.me,
        &settings.credential,
        shard.id as u32,
        epoch,
    );
    if let Err(e) = writer.write_all(opening.as_bytes()).await {
        return e.to_string();
    }
    // The neighbour answers `SINCE <n>`: it has every record of this
    // stream numbered up to n. Anything else (a refusal) ends the link.
    let answer = futures_lite::future::or(read_line(&mut reader), async {
        glommio::timer::sleep(Duration::from_secs(5)).await;
        Err("no SINCE within 5 s".to_owned())
    });
    let since = match answer.await {
        Ok(line) => match protocol::parse_since(&line) {
            Some(n) => n,
            None => return format!("refused: {}", String::from_utf8_lossy(&line).trim_end()),
        },
        Err(e) => return e,
    };
    // Everything numbered up to `upto` is in the store; queued floods are
    // older than that and would be sent twice, so the catch-up replaces them.
    let upto = shard.seq();
    link.queue.borrow_mut().clear();
    let dropped_before = link.dropped();
    let closed = Rc::new(Cell::new(false));
    // The neighbour never writes again on this link: a read that ends means
    // the link is gone, even while nothing is sent.
    let watcher = {
        let closed = closed.clone();
        let link = link.clone();
        glommio::spawn_local(async move {
            let mut buf = [0u8; 512];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            closed.set(true);
            link.doorbell.notify(usize::MAX);
        })
    };
    let mut out = Vec::with_capacity(64 * 1024);
    if let Err(e) = catch_up(
        link,
        shard,
        &mut writer,
        &mut out,
        since,
        upto,
        settings,
        &closed,
    )
    .await
    {
        drop(watcher);
        return e;
    }
    let mut last_write = Instant::now();
    let reason = loop {
        if closed.get() {
            break "closed by neighbour".to_owned();
        }
        if shard.epoch() != epoch {
            // The store renumbered: the neighbour's mark no longer means
            // anything, so reopen and let it ask for everything.
            break "sequence numbers started over; reopening".to_owned();
        }
        if link.dropped() > dropped_before {
            // Records were dropped from the full queue: reconnecting makes the
            // neighbour say what it has, and the catch-up resends the rest.
            break "flood queue overflowed; reopening to catch up".to_owned();
        }
        let batch = link.queue.borrow_mut().take(BATCH);
        let Some(last) = batch.last().map(Record::seq) else {
            let listener = link.doorbell.listen();
            // Re-check after listening, or a flood between take and listen
            // would wait for the next one.
            if link.queue.borrow().is_empty() && !closed.get() && link.dropped() == dropped_before {
                listener.await;
                // Linger, Nagle-style: every write costs the neighbour a
                // wake-up, which dwarfs the record itself. A link that wrote
                // less than `linger` ago lets floods gather until then, so a
                // busy link writes batches; an idle one writes at once.
                let since_last = last_write.elapsed();
                if since_last < settings.linger && link.queued() < BATCH {
                    glommio::timer::sleep(settings.linger - since_last).await;
                }
            }
            continue;
        };
        out.clear();
        for record in &batch {
            out.extend_from_slice(record.line().as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(format!("SEQ {last}\n").as_bytes());
        if let Err(e) = writer.write_all(&out).await {
            link.queue.borrow_mut().put_back(batch);
            break e.to_string();
        }
        last_write = Instant::now();
    };
    drop(watcher);
    reason
}

/// Sends the stored records numbered in `(since, upto]`, paced to the
/// configured rate, then `SEQ upto`.
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    link: &Link,
    shard: &Shard,
    writer: &mut (impl AsyncWriteExt + Unpin),
    out: &mut Vec<u8>,
    since: u64,
    upto: u64,
    settings: &LinkSettings,
    closed: &Cell<bool>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut sent = 0u64;
    let mut cursor = 0;
    if since < upto {
        loop {
            let batch = shard.newer(&mut cursor, since, upto, BATCH);
            if batch.is_empty() && cursor >= shard.slots() {
                break;
            }
            if closed.get() {
                return Err("closed by neighbour during catch-up".to_owned());
            }
            out.clear();
            for record in &batch {
                out.extend_from_slice(record.line().as_bytes());
                out.push(b'\n');
            }
            writer.write_all(out).await.map_err(|e| e.to_string())?;
            sent += batch.len() as u64;
            // Pace: a returning neighbour must not be buried, nor this shard.
            let due = Duration::from_secs_f64(sent as f64 / settings.catch_up_rate.max(1) as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                glommio::timer::sleep(ahead).await;
            }
        }
    }
    writer
        .write_all(format!("SEQ {upto}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if sent > 0 {
        tracing::info!(neighbour = %link.neighbour, since, upto, sent, "caught up");
    }
    Ok(())
}

/// Reads one line (up to 256 bytes) byte by byte, so that nothing after it
/// is consumed.
async fn read_line(reader: &mut (impl AsyncReadExt + Unpin)) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        match reader.read(&mut byte).await {
            Ok(0) => return Err("closed before answering".to_owned()),
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("answer line too long".to_owned())
}
