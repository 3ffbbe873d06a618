//! Links to neighbours: one outgoing connection per neighbour per shard that
//! opens with the `PEER` handshake and then carries flooded AT lines.
//!
//! Owns the reconnect loop (capped exponential backoff) and the bounded
//! [`FloodQueue`] of its neighbour; the shard only enqueues. Incoming links
//! are accepted by the connection code, which checks their handshake.

use crate::flood::FloodQueue;
use crate::protocol;
use crate::record::Record;
use event_listener::Event;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

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
pub async fn run(link: Rc<Link>, settings: LinkSettings) {
    let mut backoff = settings.backoff_initial;
    let mut failures = 0u64;
    loop {
        match TcpStream::connect_timeout(link.addr, Duration::from_secs(2)).await {
            Ok(stream) => {
                failures = 0;
                backoff = settings.backoff_initial;
                tracing::info!(neighbour = %link.neighbour, addr = %link.addr, "link opened");
                link.connected.set(true);
                let why = carry(&link, stream, &settings).await;
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

/// Sends the handshake, then flooded records until the link fails.
async fn carry(link: &Rc<Link>, stream: TcpStream, settings: &LinkSettings) -> String {
    // Latency matters more than packet count: records are whole lines.
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let closed = Rc::new(Cell::new(false));
    // The neighbour never writes on this link except to refuse it: a read
    // that ends means the link is gone, even while nothing is sent.
    let watcher = {
        let closed = closed.clone();
        let link = link.clone();
        glommio::spawn_local(async move {
            let mut buf = [0u8; 512];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        tracing::warn!(reply = %String::from_utf8_lossy(&buf[..n]).trim_end(), "neighbour answered on a link")
                    }
                }
            }
            closed.set(true);
            link.doorbell.notify(usize::MAX);
        })
    };
    let mut line = String::new();
    protocol::write_peer(&mut line, &settings.me, &settings.credential);
    line.push('\n');
    if let Err(e) = writer.write_all(line.as_bytes()).await {
        drop(watcher);
        return e.to_string();
    }
    let mut out = Vec::with_capacity(64 * 1024);
    let reason = loop {
        if closed.get() {
            break "closed by neighbour".to_owned();
        }
        let batch = link.queue.borrow_mut().take(BATCH);
        if batch.is_empty() {
            let listener = link.doorbell.listen();
            // Re-check after listening, or a flood between take and listen
            // would wait for the next one.
            if link.queue.borrow().is_empty() && !closed.get() {
                listener.await;
            }
            continue;
        }
        out.clear();
        for record in &batch {
            out.extend_from_slice(record.line().as_bytes());
            out.push(b'\n');
        }
        if let Err(e) = writer.write_all(&out).await {
            link.queue.borrow_mut().put_back(batch);
            break e.to_string();
        }
    };
    drop(watcher);
    reason
}
