//! `herd-bench floor`: the I/O floor of a flooding server. The bare
//! server's connection loop (the same canned AT replies, `bare::write_replies`)
//! that also appends every batch of replies it sends to one outgoing TCP
//! connection per sink (`--sink`, one per neighbour), written in batches by
//! one task per sink. It parses nothing and stores nothing: the cheapest
//! server that answers *and* floods, so herd / floor is the cost of herd's
//! own work (parse, validate, store, order), and nothing the I/O of any
//! flooding server must pay.
//!
//! A slow or dead sink never holds up a client: each sink's buffer is
//! bounded (`--sink-buffer`), and a batch that does not fit is dropped for
//! that sink and counted, as herd's links cost a slow neighbour its cursor
//! and nothing on the hot path. Counts go to stderr once a second when they
//! move. It runs until killed (SIGTERM or SIGINT end it the default way).

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use event_listener::Event;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use crate::bare::write_replies;
use crate::host;
use crate::wire::InBuf;

/// Options of `herd-bench floor`.
#[derive(clap::Args, Debug, Clone)]
pub struct FloorArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one; the
    /// address is printed on stdout).
    #[arg(long)]
    pub listen: String,
    /// CPU to pin the executor to.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// A sink, HOST:PORT, that gets a copy of every reply (a neighbour):
    /// once per neighbour, three for herd's healthy shape
    /// (`herd-bench sink` discards what it reads).
    #[arg(long = "sink", required = true)]
    pub sinks: Vec<String>,
    /// Bytes each sink may have waiting for its writer; a batch of replies
    /// that does not fit is dropped for that sink and counted.
    #[arg(long, default_value_t = 4 << 20)]
    pub sink_buffer: usize,
}

/// How long a sink's writer waits before dialling again.
const REDIAL: Duration = Duration::from_millis(100);

/// One sink's waiting bytes and counters, shared by every connection
/// handler (appending) and the sink's writer task (draining).
struct Sink {
    addr: SocketAddr,
    /// Replies not yet taken by the writer, at most `limit` bytes.
    waiting: Vec<u8>,
    limit: usize,
    /// Bytes written to the sink, and bytes dropped because it was behind
    /// (or down).
    sent: u64,
    dropped: u64,
}

/// A sink and the event that wakes its writer.
struct SinkHandle {
    sink: RefCell<Sink>,
    /// Notified when `waiting` goes from empty to not empty.
    ready: Event,
}

impl SinkHandle {
    /// Appends one batch of replies whole, or drops and counts it when it
    /// does not fit: a client never waits for a sink.
    fn append(&self, batch: &[u8]) {
        let mut sink = self.sink.borrow_mut();
        if sink.waiting.len() + batch.len() > sink.limit {
            sink.dropped += batch.len() as u64;
            return;
        }
        let was_empty = sink.waiting.is_empty();
        sink.waiting.extend_from_slice(batch);
        drop(sink);
        // Only the first append of a batch wakes the writer: the others
        // find it already due to run.
        if was_empty {
            self.ready.notify(1);
        }
    }

    /// The sink is down: what waits is dropped and counted, so the buffer
    /// does not hold stale replies for a sink that may never return.
    fn drop_waiting(&self) {
        let mut sink = self.sink.borrow_mut();
        sink.dropped += sink.waiting.len() as u64;
        sink.waiting.clear();
    }
}

/// Drains one sink forever: takes everything waiting and writes it with one
/// write, dialling (again) whenever there is no connection.
async fn drain(handle: Rc<SinkHandle>) {
    let addr = handle.sink.borrow().addr;
    let mut batch: Vec<u8> = Vec::new();
    let mut stream: Option<TcpStream> = None;
    loop {
        if stream.is_none() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(_) => {
                    handle.drop_waiting();
                    glommio::timer::sleep(REDIAL).await;
                    continue;
                }
            }
        }
        if handle.sink.borrow().waiting.is_empty() {
            let listener = handle.ready.listen();
            // Appended between the check and the listen: no wake-up owed.
            if handle.sink.borrow().waiting.is_empty() {
                listener.await;
            }
        }
        // Swap, so the handlers append to an empty buffer while this batch
        // is written.
        batch.clear();
        std::mem::swap(&mut batch, &mut handle.sink.borrow_mut().waiting);
        let Some(s) = stream.as_mut() else { continue };
        match s.write_all(&batch).await {
            Ok(()) => handle.sink.borrow_mut().sent += batch.len() as u64,
            Err(_) => {
                handle.sink.borrow_mut().dropped += batch.len() as u64;
                stream = None;
            }
        }
    }
}

/// Serves one connection: one write to the client and one append per sink
/// per read batch.
async fn serve(mut stream: TcpStream, sinks: Rc<Vec<Rc<SinkHandle>>>) {
    let _ = stream.set_nodelay(true);
    let mut inbuf = InBuf::new(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        // A line over the buffer limit is not a client we serve.
        let Some(spare) = inbuf.spare() else { return };
        match stream.read(spare).await {
            Ok(0) | Err(_) => return,
            Ok(n) => inbuf.filled(n),
        }
        out.clear();
        let used = write_replies(inbuf.bytes(), &mut out);
        inbuf.consume(used);
        if out.is_empty() {
            continue;
        }
        for sink in sinks.iter() {
            sink.append(&out);
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Writes each sink's counters to stderr once a second when they moved.
async fn report(sinks: Rc<Vec<Rc<SinkHandle>>>) {
    let mut last: Vec<(u64, u64)> = vec![(0, 0); sinks.len()];
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        for (i, handle) in sinks.iter().enumerate() {
            let sink = handle.sink.borrow();
            if (sink.sent, sink.dropped) != last[i] {
                last[i] = (sink.sent, sink.dropped);
                eprintln!(
                    "floor sink {}: sent {} bytes, dropped {} bytes",
                    sink.addr, sink.sent, sink.dropped
                );
            }
        }
    }
}

/// Runs `herd-bench floor` until the process is killed.
pub fn run(args: &FloorArgs) -> Result<()> {
    host::check_cpus(&[args.cpu])?;
    let addr = host::resolve(&args.listen)?;
    let sinks = args
        .sinks
        .iter()
        .map(|s| host::resolve(s))
        .collect::<Result<Vec<_>>>()?;
    host::raise_fd_limit();
    let limit = args.sink_buffer;
    let handle = LocalExecutorBuilder::new(Placement::Fixed(args.cpu))
        .name("floor")
        .spawn(move || listen(addr, sinks, limit))
        .map_err(|e| anyhow!("starting the executor on CPU {}: {e}", args.cpu))?;
    handle
        .join()
        .map_err(|e| anyhow!("floor executor failed: {e}"))?
}

/// Starts the sinks' writers, binds, says where on stdout, and accepts
/// forever.
async fn listen(addr: SocketAddr, sinks: Vec<SocketAddr>, limit: usize) -> Result<()> {
    let sinks: Rc<Vec<Rc<SinkHandle>>> = Rc::new(
        sinks
            .into_iter()
            .map(|addr| {
                Rc::new(SinkHandle {
                    sink: RefCell::new(Sink {
                        addr,
                        waiting: Vec::with_capacity(limit.min(1 << 20)),
                        limit,
                        sent: 0,
                        dropped: 0,
                    }),
                    ready: Event::new(),
                })
            })
            .collect(),
    );
    for sink in sinks.iter() {
        glommio::spawn_local(drain(sink.clone())).detach();
    }
    glommio::spawn_local(report(sinks.clone())).detach();
    let listener = TcpListener::bind(addr).map_err(|e| anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| anyhow!("listener address: {e}"))?;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "floor listening on {local}");
    let _ = stdout.flush();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(stream, sinks.clone())).detach();
            }
            // Out of descriptors: pause instead of spinning.
            Err(_) => glommio::timer::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(limit: usize) -> SinkHandle {
        SinkHandle {
            sink: RefCell::new(Sink {
                addr: SocketAddr::from(([127, 0, 0, 1], 9)),
                waiting: Vec::new(),
                limit,
                sent: 0,
                dropped: 0,
            }),
            ready: Event::new(),
        }
    }

    #[test]
    fn a_batch_that_fits_waits_whole_and_one_that_does_not_is_counted_as_dropped() {
        let h = handle(10);
        h.append(b"AT a\n");
        h.append(b"AT bb\n");
        h.append(b"AT c\n");
        let sink = h.sink.borrow();
        assert_eq!(sink.waiting, b"AT a\nAT c\n");
        assert_eq!(sink.dropped, 6);
    }
}
