//! An incoming link: a connection to the peer port, from a neighbour that
//! sends this server its records.
//!
//! It must open with the link handshake (`PEER`, our `CHALLENGE`, their
//! `PROOF`; inside mutual TLS when the herd has it). Then a
//! [`link_session::Receiver`] decides what its lines mean: its AT lines
//! are records, routed to their owner shards as a client's IAMATs are; its
//! flood-tree lines go to [`TreeIn`]. Its session, not the idle sweep,
//! watches it: a read times out every heartbeat tick, to send keepalives
//! and to give up on a silent neighbour.

use crate::net::admission::{Admission, Held};
use crate::net::lines::{flush, now, reply_invalid, shown, End, Socket};
use crate::net::link::tls;
use crate::net::link::tree_in::{TreeIn, TreeSettings};
use crate::net::route::Router;
use crate::pure::flood_tree::Trees;
use crate::pure::framing::{Frame, LineBuffer};
use crate::pure::link_session::{self, Challenge, Receiver, ReceiverEvent};
use crate::pure::protocol::{self, Command, Parsed};
use crate::pure::record::{Record, Tags};
use crate::shard::{Activity, NeighbourId, Shard};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

/// Where a connection to the peer port stands.
#[derive(Debug)]
enum Stage {
    /// Nothing read yet: the first line must be `PEER`, naming a neighbour
    /// (one of these, on a TLS link: the names in the dialler's
    /// certificate).
    Opening(Option<Vec<String>>),
    /// `PEER` answered with our `CHALLENGE`: the next line must be `PROOF`.
    Proving(Box<Proving>),
    /// The handshake is done: AT lines and flood-tree lines.
    Link(Box<Incoming>),
}

/// A neighbour half way through the handshake.
#[derive(Debug)]
struct Proving {
    from: NeighbourId,
    challenge: Challenge,
}

/// An incoming link: who it is from and its session.
#[derive(Debug)]
struct Incoming {
    from: NeighbourId,
    /// The neighbour's server id: the source tag of its records.
    source: u8,
    session: Receiver,
    /// Records dropped for a client time too far ahead.
    future_records: u64,
    /// Its place among the server's incoming links (for readiness).
    place: u64,
    /// Whether the neighbour has sent all it held when the link opened.
    caught_up: bool,
    /// Its flood-tree lines (announcements in, requests out).
    tree: TreeIn,
}

impl Incoming {
    /// The clock's turn: a keepalive and flood-tree requests into `out`
    /// when due. False (and logged) when the neighbour has been silent too
    /// long, or the link must reopen.
    fn tick(
        &mut self,
        admission: &Admission,
        shard: &Shard,
        peer: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        let neighbour = &admission.neighbours[self.from];
        if !admission.live_neighbours.borrow().contains(neighbour) {
            tracing::info!(%peer, %neighbour, "incoming link closed: no longer a neighbour");
            return false;
        }
        let now = Instant::now();
        if let Err(why) = self.session.on_tick(now, out) {
            tracing::warn!(%peer, %neighbour, %why, "incoming link closed");
            return false;
        }
        let trees = shard.trees();
        if admission
            .topology
            .is_some_and(|said| said != trees.topology())
        {
            // A reload changed the graph: the sender must hear the new one.
            tracing::info!(%peer, %neighbour, "incoming link closed: the herd's graph changed");
            return false;
        }
        if let Some(run) = self.session.sender_run() {
            // A neighbour that speaks trees: this server compares digests.
            admission.flood.start_digests();
            let settings = tree_settings(admission, &trees);
            self.tree.tick(run, &settings, now, out);
        }
        true
    }
}

/// What an incoming link's flood-tree lines need of this server.
fn tree_settings<'a>(admission: &'a Admission, trees: &'a Trees) -> TreeSettings<'a> {
    TreeSettings {
        flood: &admission.flood,
        trees,
        ids: &admission.ids,
        announce: admission.announce,
    }
}

/// Serves one connection to the peer port until it closes or fails.
pub(crate) async fn serve(
    stream: TcpStream,
    router: Rc<Router>,
    admission: Rc<Admission>,
    held: Held,
) {
    // `held`, an argument, is dropped when this returns: the connection
    // keeps its places until it ends.
    let activity = held.activity().clone();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // Records are whole lines; waiting to fill packets only adds latency.
    let _ = stream.set_nodelay(true);
    // A stranger on the peer port gets a link timeout, not a client's idle
    // time, to finish the handshake; the session's tick takes over then.
    let _ = stream.set_read_timeout(Some(admission.liveness.dead_after));
    let _ = stream.set_write_timeout(Some(admission.write_timeout));
    match admission.tls.clone() {
        Some(tls) => {
            // Boxed: a TLS session is kilobytes, and every client
            // connection's task would otherwise reserve room for one.
            Box::pin(async move {
                // The socket's read and write timeouts bound the handshake.
                match tls::accept(&tls, stream).await {
                    Ok((stream, names)) => {
                        converse(stream, Some(names), peer, router, admission, activity).await;
                    }
                    Err(e) => {
                        router.shard().metrics.refused.handshake.inc();
                        tracing::warn!(%peer, error = %e, "link refused: TLS handshake failed")
                    }
                }
            })
            .await
        }
        None => converse(stream, None, peer, router, admission, activity).await,
    }
}

/// Reads the handshake, then the link's lines, until the connection ends.
async fn converse<S: Socket>(
    mut stream: S,
    // On a TLS link: the herd names in the dialler's certificate.
    certified: Option<Vec<String>>,
    peer: String,
    router: Rc<Router>,
    admission: Rc<Admission>,
    activity: Rc<Activity>,
) {
    let mut lines = LineBuffer::new(admission.max_line);
    // Grows with the lines it holds; a quiet link costs nothing here.
    let mut out: Vec<u8> = Vec::new();
    let mut stage = Stage::Opening(certified);
    let end = loop {
        activity.waiting();
        let read = stream.read(lines.spare()).await;
        activity.read();
        let n = match read {
            Ok(0) => break End::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                let Stage::Link(link) = &mut stage else {
                    // The handshake took longer than a link may be silent.
                    break End::IdleTimeout;
                };
                // A link's reads time out every heartbeat tick: time to
                // send a keepalive, or to give up on a silent neighbour.
                if !link.tick(&admission, router.shard(), &peer, &mut out) {
                    break End::Silent;
                }
                if let Err(e) = flush(&mut stream, &mut out).await {
                    break e;
                }
                continue;
            }
            Err(_) => break End::ReadFailed,
        };
        lines.filled(n);
        let opening = !matches!(stage, Stage::Link(_));
        if !opening {
            // Started together, the owners' lookups of a read's records
            // overlap (see the client's connection).
            router.prefetch(lines.lines_ahead());
        }
        while let Some(frame) = lines.next_frame() {
            match handle(frame, &mut stage, &router, &admission, &peer, &mut out) {
                Then::Next => {}
                Then::Wait(wait) => wait.await,
                Then::Close => {
                    let _ = stream.write_all(&out).await;
                    tracing::info!(%peer, "connection closed after a refused handshake");
                    return;
                }
            }
        }
        if let Stage::Link(link) = &mut stage {
            // A busy link's reads never time out: keepalives are due by the
            // clock all the same, or the sender would take it for dead.
            if !link.tick(&admission, router.shard(), &peer, &mut out) {
                break End::Silent;
            }
            if opening {
                // Neighbours may be quiet for long stretches: a link never
                // idles out, its session watches it instead, woken every
                // tick. Its AT lines are longer than the IAMATs they came
                // from. Flood-tree comparisons come every announcement
                // interval.
                let tick = admission.liveness.tick().min(admission.announce);
                let _ = stream.tcp().set_read_timeout(Some(tick));
                let _ = stream
                    .tcp()
                    .set_write_timeout(Some(admission.liveness.dead_after));
                lines.raise_limit(admission.link_max_line);
            }
        }
        if let Err(e) = flush(&mut stream, &mut out).await {
            break e;
        }
    };
    // End of input also ends a last line without '\n': take it, then close.
    if end == End::Closed {
        if let Some(frame) = lines.finish() {
            if let Then::Wait(wait) =
                handle(frame, &mut stage, &router, &admission, &peer, &mut out)
            {
                wait.await;
            }
        }
        if !out.is_empty() {
            let _ = stream.write_all(&out).await;
        }
    }
    ended(stage, &admission, &peer, end);
}

/// What a link leaves when it ends: its place among the incoming links,
/// and the mark of what it received, from which its neighbour's next link
/// resumes.
fn ended(stage: Stage, admission: &Admission, peer: &str, end: End) {
    match stage {
        Stage::Link(link) => {
            admission.inbound.closed(link.place);
            let neighbour = &admission.neighbours[link.from];
            let mark = link.session.mark();
            if let Some((shard, epoch, received)) = mark {
                admission.marks.record(neighbour, shard, epoch, received);
            }
            tracing::info!(%peer, %neighbour, %end, received = ?mark.map(|m| m.2), future_records_dropped = link.future_records, "incoming link dropped");
        }
        _ => tracing::debug!(%peer, %end, "connection ended during the link handshake"),
    }
}

/// What handling a line on the peer port leaves to do.
enum Then<'a> {
    /// Nothing: on to the next line.
    Next,
    /// The connection must close (a refused handshake).
    Close,
    /// Await this: a record on its way to the shard that owns it. Boxed
    /// when taken, so that the link's task carries no future of it.
    Wait(Pin<Box<dyn Future<Output = ()> + 'a>>),
}

/// Handles one framed line, appending any answer to `out`; says what is
/// left to do.
fn handle<'a>(
    frame: Frame<'_>,
    stage: &mut Stage,
    router: &'a Router,
    admission: &Admission,
    peer: &str,
    out: &mut Vec<u8>,
) -> Then<'a> {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLong(start) => {
            let Stage::Link(link) = stage else {
                tracing::warn!(%peer, "handshake refused: over-long line");
                reply_invalid(out, start, peer);
                return Then::Close;
            };
            // Longer than any record a herd server makes: not a record, and
            // the mark must not move past it.
            router.shard().metrics.refused.line_too_long.inc();
            link.session.refuse();
            tracing::warn!(%peer, "over-long line on a link refused");
            return Then::Next;
        }
    };
    let parsed = protocol::parse_line(line);
    let Stage::Link(link) = stage else {
        if handshake(parsed, line, stage, admission, peer, out) {
            return Then::Next;
        }
        router.shard().metrics.refused.handshake.inc();
        return Then::Close;
    };
    let record = on_link(link, parsed, line, router, admission, peer, out);
    if !link.caught_up && link.session.caught_up() {
        link.caught_up = true;
        admission.inbound.caught_up(link.place);
    }
    let run = link.session.sender_run().unwrap_or(0);
    match record.and_then(|record| router.try_route(record, run)) {
        Some(forward) => Then::Wait(Box::pin(router.forward(forward))),
        None => Then::Next,
    }
}

/// One line of the handshake on the peer port; false when the connection
/// must close (the line was refused). Nonces and proofs are never logged.
fn handshake(
    parsed: Parsed<'_>,
    line: &[u8],
    stage: &mut Stage,
    admission: &Admission,
    peer: &str,
    out: &mut Vec<u8>,
) -> bool {
    let secret = admission.secret.as_deref();
    match (&*stage, parsed) {
        (_, Parsed::Empty) => true,
        (Stage::Opening(certified), Parsed::Command(Command::Peer(p))) => {
            if certified
                .as_ref()
                .is_some_and(|names| !names.iter().any(|n| n == p.name))
            {
                tracing::warn!(%peer, name = p.name, "handshake refused: the name is not the one in its TLS certificate");
                reply_invalid(out, line, peer);
                return false;
            }
            let neighbour = admission.neighbours.iter().position(|n| **n == *p.name);
            let (Some(from), true) = (neighbour, link_session::valid_nonce(p.nonce)) else {
                tracing::warn!(%peer, name = p.name, "handshake refused: not a neighbour, or a malformed nonce");
                reply_invalid(out, line, peer);
                return false;
            };
            let nonce = match crate::net::nonce::fresh() {
                Ok(nonce) => nonce,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "handshake abandoned: no randomness for a nonce");
                    return false;
                }
            };
            let challenge = Challenge::new(secret, &admission.me, p.name, p.nonce, nonce, out);
            *stage = Stage::Proving(Box::new(Proving { from, challenge }));
            true
        }
        (Stage::Proving(proving), Parsed::Command(Command::Proof(proof))) => {
            let from = proving.from;
            let neighbour = &admission.neighbours[from];
            if !proving.challenge.proved(secret, &admission.me, proof) {
                tracing::warn!(%peer, %neighbour, "handshake refused: the proof of the secret is wrong");
                reply_invalid(out, line, peer);
                return false;
            }
            tracing::info!(%peer, %neighbour, "incoming link accepted");
            let heard = TreeIn::resume(&admission.flood, neighbour);
            let source = admission.ids.id(neighbour);
            *stage = Stage::Link(Box::new(Incoming {
                from,
                source,
                tree: TreeIn::new(neighbour, source, Instant::now()),
                session: Receiver::new(Instant::now(), admission.liveness, admission.run)
                    .with_tree(admission.topology, heard),
                future_records: 0,
                place: admission.inbound.opened(neighbour),
                caught_up: false,
            }));
            true
        }
        _ => {
            tracing::warn!(%peer, line = %shown(line), "handshake refused: not the line expected");
            reply_invalid(out, line, peer);
            false
        }
    }
}

/// One line on an incoming link: the session does the stream's
/// bookkeeping; a record is returned to be routed (synchronous, so that the
/// connection's task stays small).
fn on_link(
    link: &mut Incoming,
    parsed: Parsed<'_>,
    line: &[u8],
    router: &Router,
    admission: &Admission,
    peer: &str,
    out: &mut Vec<u8>,
) -> Option<Record> {
    let neighbour = &admission.neighbours[link.from];
    if parsed == Parsed::Invalid {
        if let Some(run) = link.session.sender_run() {
            // Not a client line: maybe a flood-tree announcement.
            let text = String::from_utf8_lossy(line);
            let trees = router.shard().trees();
            let settings = tree_settings(admission, &trees);
            if link
                .tree
                .on_line(text.trim_end(), run, &settings, Instant::now())
            {
                return None;
            }
        }
    }
    let since = |shard, epoch| {
        let since = admission.marks.since(neighbour, shard, epoch);
        tracing::info!(%peer, %neighbour, shard, since, "link stream resumes");
        since
    };
    match link
        .session
        .on_line(parsed, line, Instant::now(), since, out)
    {
        ReceiverEvent::Record(at) if at.time.is_ahead_of(now(), admission.max_future_skew) => {
            // A neighbour with a clock far ahead, or a record made before
            // the bound existed: storing it would pin its client.
            link.future_records += 1;
            router.shard().metrics.refused.link_future_record.inc();
            tracing::warn!(%peer, %neighbour, client = at.client_id, dropped_so_far = link.future_records, "record from a link dropped: client time too far ahead");
            None
        }
        ReceiverEvent::Record(at) => {
            tracing::debug!(%peer, line = %String::from_utf8_lossy(line), "in: record");
            let tags = Tags {
                source: link.source,
                origin: admission.ids.id(at.server),
            };
            Some(Record::from_at(&at, tags))
        }
        ReceiverEvent::None => None,
        ReceiverEvent::Invalid => {
            router.shard().metrics.refused.link_invalid_line.inc();
            tracing::warn!(%peer, line = %shown(line), "invalid line on a link refused");
            None
        }
    }
}
