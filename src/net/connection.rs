//! A client connection on the line protocol: reads bytes, frames lines,
//! parses them, routes each command to its owner and writes the replies
//! back in order.
//!
//! The only code that writes to a client socket, once per batch of replies
//! (a reply is never split across writes). Link lines are invalid commands
//! here: links come in on the peer port (`link/incoming.rs`).

use crate::net::admission::{Admission, Held, Port};
use crate::net::client_auth::ClientSide;
use crate::net::lines::{flush, now, reply_invalid, shown, End, Socket};
use crate::net::route::Router;
use crate::pure::framing::{self, Frame, LineBuffer};
use crate::pure::protocol::{self, Command, Parsed, PosixTime};
use crate::pure::record::Record;
use crate::shard::Activity;
use futures_channel::oneshot;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Flush replies once this many bytes wait, even mid-batch.
const FLUSH_AT: usize = 64 * 1024;

/// Serves one client connection, on the client port or inside TLS on the
/// client TLS port, on a task of its own until it closes or fails; it
/// keeps its places (`held`) until then.
pub(crate) fn spawn(
    stream: TcpStream,
    port: Port,
    router: Rc<Router>,
    admission: Rc<Admission>,
    held: Held,
) {
    let address = stream.peer_addr().ok();
    let peer: Box<str> = address.map(|a| a.to_string()).unwrap_or_default().into();
    // Replies are whole lines; waiting to fill packets only adds latency.
    let _ = stream.set_nodelay(true);
    // Bounded waits: a silent client is closed, one that does not read its
    // replies is dropped (its socket buffer full, writes stall).
    // A client's idle time is kept by the shard's sweep (`Activity`), not a
    // socket timeout: that would cost a timer on every read that waits.
    // A TLS handshake has the link timeout to finish.
    let _ = stream.set_read_timeout(match port {
        Port::ClientTls => Some(admission.liveness.dead_after),
        _ => None,
    });
    let _ = stream.set_write_timeout(Some(admission.write_timeout));
    let client = ClientSide::new();
    if port != Port::ClientTls {
        let mut conn = Conn::new(stream, client, peer, router, admission, held);
        // `conn` is run where it lies in the task, not moved into `run`'s
        // future: that would store it twice.
        glommio::spawn_local(async move { conn.run().await }).detach();
        return;
    }
    let Some(tls) = admission.client_tls.clone() else {
        return;
    };
    // A task type of its own: only TLS connections carry a session,
    // kilobytes that every plain connection's task would otherwise reserve
    // room for.
    glommio::spawn_local(async move {
        match tls.accept(stream).await {
            Ok(stream) => {
                let _ = stream.get_ref().0.set_read_timeout(None);
                let mut conn = Conn::new(stream, client, peer, router, admission, held);
                conn.run().await;
            }
            Err(e) => {
                router.shard().metrics.refused.client_tls_handshake.inc();
                tracing::debug!(%peer, error = %e, "client TLS handshake failed; closed")
            }
        }
    })
    .detach();
}

/// A connection's reply buffer and the disk writes its replies wait for.
struct Replies {
    /// Grows with the replies it holds; an idle connection costs nothing
    /// here.
    out: Vec<u8>,
    /// With `fsync: always`, what answers once the records of the replies
    /// in `out` are on disk: awaited before `out` is written. None in any
    /// other mode (boxed: 8 bytes of every connection's task, not 24).
    on_disk: OnDisk,
}

/// What a connection's replies wait for on disk (see [`Replies`]).
type OnDisk = Option<Box<Vec<oneshot::Receiver<()>>>>;

/// One connection's state. Most of what an idle connection costs is this
/// and the future of [`Conn::run`] that borrows it, so it is kept lean:
/// handling a line does not wait, and the rarely taken waits (a WHATSAT's,
/// a record's for another shard or for the disk) are boxed when taken.
struct Conn<S> {
    stream: S,
    lines: LineBuffer,
    replies: Replies,
    /// The connection's identity.
    client: ClientSide,
    /// The peer's address, as logged.
    peer: Box<str>,
    router: Rc<Router>,
    admission: Rc<Admission>,
    held: Held,
}

impl<S: Socket> Conn<S> {
    fn new(
        stream: S,
        client: ClientSide,
        peer: Box<str>,
        router: Rc<Router>,
        admission: Rc<Admission>,
        held: Held,
    ) -> Conn<S> {
        Conn {
            stream,
            lines: LineBuffer::new(admission.max_line),
            replies: Replies {
                out: Vec::new(),
                on_disk: None,
            },
            client,
            peer,
            router,
            admission,
            held,
        }
    }

    /// Reads, handles and answers lines until the connection ends.
    async fn run(&mut self) {
        let end = loop {
            // A stopping shard shuts the reading side of its connections,
            // so this read ends then too (as end of input).
            self.held.activity().waiting();
            let read = std::future::poll_fn(|cx| self.poll_read(cx)).await;
            let activity = self.held.activity();
            activity.read();
            let n = match read {
                // The idle sweep ends a silent client's read this way too.
                Ok(0) if activity.timed_out() => break End::IdleTimeout,
                Ok(0) => break End::Closed,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::TimedOut => break End::IdleTimeout,
                Err(_) => break End::ReadFailed,
            };
            self.lines.filled(n);
            if let Err(e) = self.answer().await {
                break e;
            }
        };
        self.end(end).await;
    }

    /// Reads into the line buffer. A client the idle sweep asked gives
    /// back its buffers first: the line buffer when it holds no part of a
    /// line, and the reply buffers (empty while a connection reads). While
    /// it has no line buffer the read goes to the stack, and one is
    /// allocated only once bytes come: a client that waits holds none.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let activity = self.held.activity();
        if activity.take_release() {
            let replies = &mut self.replies;
            let mut released = self.lines.release();
            if replies.out.is_empty() && replies.out.capacity() > 0 {
                replies.out = Vec::new();
                released = true;
            }
            if replies
                .on_disk
                .as_ref()
                .is_some_and(|waits| waits.is_empty())
            {
                replies.on_disk = None;
            }
            if released {
                self.router.shard().metrics.buffers_released.inc();
            }
        }
        let stream = Pin::new(&mut self.stream);
        let polled = if self.lines.is_released() {
            let mut first = [0u8; framing::INITIAL];
            let polled = stream.poll_read(cx, &mut first);
            if let Poll::Ready(Ok(n)) = polled {
                self.lines.spare()[..n].copy_from_slice(&first[..n]);
            }
            polled
        } else {
            stream.poll_read(cx, self.lines.spare())
        };
        if polled.is_pending() {
            // For the sweep, to wake the read when it asks for the buffers.
            activity.park(cx.waker());
        }
        polled
    }

    /// Answers every whole line the read brought, writes the replies, and
    /// counts the read's latency.
    async fn answer(&mut self) -> Result<(), End> {
        // At 64 connections x 16 lines against 1 M clients, the lookups'
        // first loads were a quarter of the shard's time; started together
        // here, they overlap.
        self.router.prefetch(self.lines.lines_ahead());
        // Latency is counted from here, once per read: every command of it
        // waits for the same write.
        let read_at = Instant::now();
        let received = now();
        let mut commands = 0u64;
        while let Some(frame) = self.lines.next_frame() {
            commands += 1;
            let arrived = Arrived {
                frame,
                at: received,
            };
            let with = Handling {
                client: &mut self.client,
                activity: self.held.activity(),
                router: &self.router,
                admission: &self.admission,
                peer: &self.peer,
            };
            if let Some(wait) = handle(arrived, with, &mut self.replies) {
                wait.await;
            }
            if self.replies.out.len() >= FLUSH_AT {
                flush_once_on_disk(&mut self.stream, &mut self.replies).await?;
            }
        }
        flush_once_on_disk(&mut self.stream, &mut self.replies).await?;
        if commands > 0 {
            let micros = u64::try_from(read_at.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = self
                .router
                .shard()
                .latency
                .borrow_mut()
                .record_n(micros.max(1), commands);
        }
        Ok(())
    }

    /// The connection's last steps once it ended `end`: a last line
    /// without `\n` answered at end of input, then what is logged.
    async fn end(&mut self, end: End) {
        let peer = &self.peer;
        if end == End::Closed {
            if let Some(frame) = self.lines.finish() {
                let arrived = Arrived { frame, at: now() };
                let with = Handling {
                    client: &mut self.client,
                    activity: self.held.activity(),
                    router: &self.router,
                    admission: &self.admission,
                    peer,
                };
                if let Some(wait) = handle(arrived, with, &mut self.replies) {
                    wait.await;
                }
            }
            let replies = &mut self.replies;
            if !replies.out.is_empty() && written_to_disk(&mut replies.on_disk).await {
                let _ = self.stream.write_all(&replies.out).await;
            }
        }
        if end == End::WriteDeadline {
            tracing::warn!(%peer, "client dropped: it did not take its replies in time");
        }
        if self.held.activity().revoked() {
            tracing::info!(%peer, "client closed: a reload removed the key of its token");
        }
        tracing::debug!(%peer, %end, "connection ended");
    }
}

/// Waits until the journal holds the records of the replies owed (`fsync:
/// always`); false if it stopped first, and those replies must not go out.
/// Boxed when there is anything to wait for: only that mode waits, and
/// every connection's task would otherwise carry this future.
async fn written_to_disk(on_disk: &mut OnDisk) -> bool {
    let Some(on_disk) = on_disk.as_mut().filter(|waits| !waits.is_empty()) else {
        return true;
    };
    Box::pin(async move {
        // Records are synced in order per shard, so waiting for each in
        // turn costs no more than waiting for the last.
        for done in on_disk.drain(..) {
            if done.await.is_err() {
                return false;
            }
        }
        true
    })
    .await
}

/// Writes and clears the pending replies once every record they answer is
/// on disk (`fsync: always`; nothing to wait for otherwise). Not an `async
/// fn`, as [`flush`]: one stores its arguments twice, in every
/// connection's task.
#[allow(clippy::manual_async_fn)]
fn flush_once_on_disk<'a>(
    stream: &'a mut impl Socket,
    replies: &'a mut Replies,
) -> impl Future<Output = Result<(), End>> + 'a {
    async move {
        if !written_to_disk(&mut replies.on_disk).await {
            return Err(End::NotOnDisk);
        }
        flush(stream, &mut replies.out).await
    }
}

/// A framed line and when the read that brought it returned. The lines of
/// one read share that receive time: one clock read per read, not one per
/// line (the clock was 2 % of a shard's core at 64 x 16).
struct Arrived<'a> {
    frame: Frame<'a>,
    at: PosixTime,
}

/// What handling a line needs of its connection.
struct Handling<'a> {
    client: &'a mut ClientSide,
    /// Where a reload finds the key of the token the client proved.
    activity: &'a Activity,
    router: &'a Router,
    admission: &'a Admission,
    peer: &'a str,
}

/// What is left of handling a line: a wait, which appends what it brings
/// to the replies. Boxed when taken (a WHATSAT's, a record's for another
/// shard or for the disk), so that an idle connection's task carries none.
type Wait<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Handles one framed line, appending its reply to `replies` when it has
/// one now; returns what is left to wait for, if anything.
fn handle<'a>(
    arrived: Arrived<'a>,
    with: Handling<'a>,
    replies: &'a mut Replies,
) -> Option<Wait<'a>> {
    let Handling {
        client,
        activity,
        router,
        admission,
        peer,
    } = with;
    let now = arrived.at;
    let Replies { out, on_disk } = replies;
    let line = match arrived.frame {
        Frame::Line(line) => line,
        Frame::TooLong(start) => {
            let metrics = &router.shard().metrics;
            metrics.refused.line_too_long.inc();
            metrics.commands.other_invalid.inc();
            tracing::debug!(%peer, line = %String::from_utf8_lossy(start), "in: over-long line");
            reply_invalid(out, start, peer);
            return None;
        }
    };
    let parsed = protocol::parse_line(line);
    let metrics = &router.shard().metrics;
    let commands = &metrics.commands;
    tracing::debug!(%peer, line = %shown(line), "in");
    match parsed {
        Parsed::Empty => {}
        Parsed::Command(Command::Auth(auth)) => {
            let start = out.len();
            if let Some(key_id) =
                client.on_auth(&admission.clients, auth, now.secs, metrics, peer, out)
            {
                activity.authenticated(key_id);
            }
            tracing::debug!(%peer, reply = %String::from_utf8_lossy(&out[start..out.len() - 1]), "out");
        }
        // A malformed AUTH may still hold a token: it is neither echoed
        // nor logged.
        Parsed::Invalid if protocol::is_auth_line(line) => {
            commands.other_invalid.inc();
            let start = out.len();
            protocol::write_auth_refused(out, line);
            tracing::debug!(%peer, reply = %String::from_utf8_lossy(&out[start..out.len() - 1]), "out");
        }
        Parsed::Command(Command::IAmAt(iamat))
            if !client.may_write(&admission.clients, iamat.client_id, now.secs, metrics) =>
        {
            tracing::debug!(%peer, client = iamat.client_id, "IAMAT refused: not the client this connection proved it is");
            commands.iamat_invalid.inc();
            reply_invalid(out, line, peer)
        }
        Parsed::Command(Command::WhatsAt(w))
            if !client.may_read(&admission.clients, w.client_id, now.secs, metrics) =>
        {
            tracing::debug!(%peer, client = w.client_id, "WHATSAT refused: this connection may not read that client");
            commands.whatsat_invalid.inc();
            reply_invalid(out, line, peer)
        }
        Parsed::Invalid
        | Parsed::Command(
            Command::At(_)
            | Command::Peer(_)
            | Command::Proof(_)
            | Command::Stream { .. }
            | Command::Seq(_),
        ) => {
            // The kind of a malformed command is its first word.
            if line.starts_with(b"IAMAT ") {
                commands.iamat_invalid.inc();
            } else if line.starts_with(b"WHATSAT ") {
                commands.whatsat_invalid.inc();
            } else {
                commands.other_invalid.inc();
            }
            reply_invalid(out, line, peer)
        }
        Parsed::Command(Command::IAmAt(iamat))
            if iamat.time.is_ahead_of(now, admission.max_future_skew) =>
        {
            tracing::debug!(%peer, "IAMAT refused: client time too far ahead");
            commands.iamat_invalid.inc();
            router.shard().metrics.refused.future_time.inc();
            reply_invalid(out, line, peer)
        }
        Parsed::Command(Command::IAmAt(iamat)) => {
            commands.iamat_ok.inc();
            let record = Record::from_iamat(&admission.me, now, &iamat, admission.my_id);
            return record_and_reply(record, router, peer, out, on_disk);
        }
        Parsed::Command(Command::WhatsAt(w)) => {
            // A WHATSAT may wait long (Places).
            return Some(Box::pin(whatsat(w, line, router, peer, out)));
        }
    }
    None
}

/// Replies to an IAMAT with its record and stores the record: right here
/// when this shard owns it and no disk acknowledgement is awaited;
/// otherwise returns the wait (a record owned by another shard, or one
/// whose reply waits for the disk).
fn record_and_reply<'a>(
    record: Record,
    router: &'a Router,
    peer: &str,
    out: &mut Vec<u8>,
    on_disk: &'a mut OnDisk,
) -> Option<Wait<'a>> {
    let start = out.len();
    out.extend_from_slice(record.line().as_bytes());
    out.push(b'\n');
    tracing::debug!(%peer, reply = %String::from_utf8_lossy(&out[start..out.len() - 1]), "out");
    let pending = router.try_record(record)?;
    Some(Box::pin(async move {
        if let Some(done) = router.record_acked(pending).await {
            on_disk.get_or_insert_with(Box::default).push(done);
        }
    }))
}

/// Appends the reply to a WHATSAT, from the shard that owns its client.
async fn whatsat(
    w: protocol::WhatsAt<'_>,
    line: &[u8],
    router: &Router,
    peer: &str,
    out: &mut Vec<u8>,
) {
    let commands = &router.shard().metrics.commands;
    match router.nearby(w.client_id, w.radius_km, w.max_results).await {
        Some(reply) => {
            commands.whatsat_ok.inc();
            tracing::debug!(%peer, reply = %String::from_utf8_lossy(&reply), "out");
            out.extend_from_slice(&reply);
        }
        None => {
            commands.whatsat_invalid.inc();
            reply_invalid(out, line, peer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn size_of_output<A, R>(_: &impl FnOnce(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Most of what an idle client connection costs is its task: its state
    /// and the future of `run` (3,088 bytes before either was kept lean,
    /// 536 after, 464 now), in one allocation with glommio's 48-byte task
    /// header. Within 456 bytes (8 more for the task's own future around
    /// them) the allocation fits jemalloc's 512-byte class; 8 bytes past
    /// that, it takes 640.
    #[test]
    fn a_client_connections_task_stays_small() {
        let state = std::mem::size_of::<Conn<TcpStream>>();
        let run = size_of_output(&Conn::<TcpStream>::run);
        eprintln!("a client connection's state {state} bytes, its run future {run}");
        assert!(state + run <= 456, "{state} + {run} bytes");
    }
}
