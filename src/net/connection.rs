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
use crate::pure::framing::{Frame, LineBuffer};
use crate::pure::protocol::{self, Command, Parsed, PosixTime};
use crate::pure::record::Record;
use crate::shard::Activity;
use futures_channel::oneshot;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::Instant;

/// Flush replies once this many bytes wait, even mid-batch.
const FLUSH_AT: usize = 64 * 1024;

/// Serves one client connection, on the client port or inside TLS on the
/// client TLS port, until it closes or fails.
pub(crate) async fn serve(
    stream: TcpStream,
    port: Port,
    router: Rc<Router>,
    admission: Rc<Admission>,
    held: Held,
) {
    // `held`, an argument, is dropped when this returns: the connection
    // keeps its places until it ends.
    let activity = held.activity().clone();
    let address = stream.peer_addr().ok();
    let peer = address.map(|a| a.to_string()).unwrap_or_default();
    let ip = address.map(|a| a.ip());
    // Replies are whole lines; waiting to fill packets only adds latency.
    let _ = stream.set_nodelay(true);
    // Bounded waits: a silent client is closed, one that does not read its
    // replies is dropped (its socket buffer full, writes stall).
    // A client's idle time is kept by the shard's sweep (`activity`), not a
    // socket timeout: that would cost a timer on every read that waits.
    // A TLS handshake has the link timeout to finish.
    let _ = stream.set_read_timeout(match port {
        Port::ClientTls => Some(admission.liveness.dead_after),
        _ => None,
    });
    let _ = stream.set_write_timeout(Some(admission.write_timeout));
    let client = ClientSide::new(ip, activity.clone());
    if port != Port::ClientTls {
        return converse(stream, client, peer, router, admission, activity).await;
    }
    let Some(tls) = admission.client_tls.clone() else {
        return;
    };
    // Boxed: only TLS connections carry a session, kilobytes that every
    // plain connection's task would otherwise reserve room for.
    Box::pin(async move {
        match tls.accept(stream).await {
            Ok(stream) => {
                let _ = stream.get_ref().0.set_read_timeout(None);
                converse(stream, client, peer, router, admission, activity).await;
            }
            Err(e) => {
                router.shard().metrics.refused.client_tls_handshake.inc();
                tracing::debug!(%peer, error = %e, "client TLS handshake failed; closed")
            }
        }
    })
    .await
}

/// A connection's reply buffer and the disk writes its replies wait for.
struct Replies {
    /// Grows with the replies it holds; an idle connection costs nothing
    /// here.
    out: Vec<u8>,
    /// With `fsync: always`, what answers once the records of the replies
    /// in `out` are on disk: awaited before `out` is written. Empty in any
    /// other mode.
    on_disk: Vec<oneshot::Receiver<()>>,
}

/// Reads, handles and answers lines until the connection ends.
async fn converse<S: Socket>(
    mut stream: S,
    mut client: ClientSide,
    peer: String,
    router: Rc<Router>,
    admission: Rc<Admission>,
    activity: Rc<Activity>,
) {
    let mut lines = LineBuffer::new(admission.max_line);
    let mut replies = Replies {
        out: Vec::new(),
        on_disk: Vec::new(),
    };
    let end = loop {
        // A stopping shard shuts the reading side of its connections, so
        // this read ends then too (as end of input).
        activity.waiting();
        let read = stream.read(lines.spare()).await;
        activity.read();
        let n = match read {
            // The idle sweep ends a silent client's read this way too.
            Ok(0) if activity.timed_out() => break End::IdleTimeout,
            Ok(0) => break End::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::TimedOut => break End::IdleTimeout,
            Err(_) => break End::ReadFailed,
        };
        lines.filled(n);
        let read = Read {
            client: &mut client,
            router: &router,
            admission: &admission,
            peer: &peer,
        };
        if let Err(e) = read.answer(&mut lines, &mut stream, &mut replies).await {
            break e;
        }
    };
    // End of input also ends a last line without '\n': answer it, then close.
    if end == End::Closed {
        if let Some(frame) = lines.finish() {
            let arrived = Arrived { frame, at: now() };
            handle(
                arrived,
                &mut client,
                &router,
                &admission,
                &peer,
                &mut replies,
            )
            .await;
        }
        if !replies.out.is_empty() && written_to_disk(&mut replies.on_disk).await {
            let _ = stream.write_all(&replies.out).await;
        }
    }
    if end == End::WriteDeadline {
        tracing::warn!(%peer, "client dropped: it did not take its replies in time");
    }
    if activity.revoked() {
        tracing::info!(%peer, "client closed: a reload removed the key of its token");
    }
    tracing::debug!(%peer, %end, "connection ended");
}

/// What answering one read's lines needs.
struct Read<'a> {
    client: &'a mut ClientSide,
    router: &'a Router,
    admission: &'a Admission,
    peer: &'a str,
}

impl Read<'_> {
    /// Answers every whole line the read brought, writes the replies, and
    /// counts the read's latency.
    async fn answer<S: Socket>(
        self,
        lines: &mut LineBuffer,
        stream: &mut S,
        replies: &mut Replies,
    ) -> Result<(), End> {
        // At 64 connections x 16 lines against 1 M clients, the lookups'
        // first loads were a quarter of the shard's time; started together
        // here, they overlap.
        self.router.prefetch(lines.lines_ahead());
        // Latency is counted from here, once per read: every command of it
        // waits for the same write.
        let read_at = Instant::now();
        let received = now();
        let mut commands = 0u64;
        while let Some(frame) = lines.next_frame() {
            commands += 1;
            let arrived = Arrived {
                frame,
                at: received,
            };
            handle(
                arrived,
                self.client,
                self.router,
                self.admission,
                self.peer,
                replies,
            )
            .await;
            if replies.out.len() >= FLUSH_AT {
                flush_once_on_disk(stream, replies).await?;
            }
        }
        flush_once_on_disk(stream, replies).await?;
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
}

/// Waits until the journal holds the records of the replies owed (`fsync:
/// always`); false if it stopped first, and those replies must not go out.
async fn written_to_disk(on_disk: &mut Vec<oneshot::Receiver<()>>) -> bool {
    // Records are synced in order per shard, so waiting for each in turn
    // costs no more than waiting for the last.
    for done in on_disk.drain(..) {
        if done.await.is_err() {
            return false;
        }
    }
    true
}

/// Writes and clears the pending replies once every record they answer is
/// on disk (`fsync: always`; nothing to wait for otherwise).
async fn flush_once_on_disk(stream: &mut impl Socket, replies: &mut Replies) -> Result<(), End> {
    if !written_to_disk(&mut replies.on_disk).await {
        return Err(End::NotOnDisk);
    }
    flush(stream, &mut replies.out).await
}

/// A framed line and when the read that brought it returned. The lines of
/// one read share that receive time: one clock read per read, not one per
/// line (the clock was 2 % of a shard's core at 64 x 16).
struct Arrived<'a> {
    frame: Frame<'a>,
    at: PosixTime,
}

/// Handles one framed line, appending its reply to `replies`.
async fn handle(
    arrived: Arrived<'_>,
    client: &mut ClientSide,
    router: &Router,
    admission: &Admission,
    peer: &str,
    replies: &mut Replies,
) {
    let now = arrived.at;
    let out = &mut replies.out;
    let line = match arrived.frame {
        Frame::Line(line) => line,
        Frame::TooLong(start) => {
            let metrics = &router.shard().metrics;
            metrics.refused.line_too_long.inc();
            metrics.commands.other_invalid.inc();
            tracing::debug!(%peer, line = %String::from_utf8_lossy(start), "in: over-long line");
            reply_invalid(out, start, peer);
            return;
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
            client.on_auth(&admission.clients, auth, now.secs, metrics, peer, out);
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
            let record =
                Record::from_iamat(&admission.me, now, &iamat, admission.ids.id(&admission.me));
            let start = out.len();
            out.extend_from_slice(record.line().as_bytes());
            out.push(b'\n');
            tracing::debug!(%peer, reply = %String::from_utf8_lossy(&out[start..out.len() - 1]), "out");
            if let Some(pending) = router.try_record(record) {
                // Boxed: only a record owned by another shard, or one whose
                // reply waits for the disk, waits here, and every idle
                // connection's task would otherwise carry this future.
                if let Some(done) = Box::pin(router.record_acked(pending)).await {
                    replies.on_disk.push(done);
                }
            }
        }
        Parsed::Command(Command::WhatsAt(w)) => {
            // Boxed: a WHATSAT may wait long (Places), and the connection's
            // task should not carry that future's size while it is idle.
            let nearby = Box::pin(router.nearby(w.client_id, w.radius_km, w.max_results));
            match nearby.await {
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
    }
}
