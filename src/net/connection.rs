//! A client connection: reads bytes, frames lines, parses them, routes each
//! command to its owner and writes the replies back in order.
//!
//! The only code that writes to a client socket, once per batch of replies
//! (a reply is never split across writes). Connections to the peer port
//! must open with the link handshake (`PEER`, our `CHALLENGE`, their
//! `PROOF`) and then become incoming links: a [`link_session::Receiver`]
//! decides what their lines mean, their AT lines are records. On the client
//! port every link line is an invalid command.

use crate::net::client_auth::{ClientSide, Clients};
use crate::net::client_tls::ClientTls;
use crate::net::link_tls::{self, LinkTls};
use crate::net::route::Router;
use crate::net::tree_in::{TreeIn, TreeSettings};
use crate::ops::metrics::Inbound;
use crate::pure::catchup::Marks;
use crate::pure::flood_tree::Trees;
use crate::pure::framing::{Frame, LineBuffer};
use crate::pure::link_session::{self, Challenge, Liveness, Receiver, ReceiverEvent};
use crate::pure::protocol::{self, Command, Parsed, PosixTime};
use crate::pure::record::{Record, Tags};
use crate::pure::server_ids::ServerIds;
use crate::shard::flood::Flood;
use crate::shard::{Activity, NeighbourId, Shard};
use futures_channel::oneshot;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Flush replies once this many bytes wait, even mid-batch.
const FLUSH_AT: usize = 64 * 1024;

/// Which listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// The client port: IAMAT and WHATSAT.
    Client,
    /// The client TLS port: the client protocol inside TLS.
    ClientTls,
    /// The peer port: links from neighbours only.
    Peer,
}

/// What a connection's peer may send, decided by its port and handshake.
#[derive(Debug)]
enum Role {
    /// On the peer port, nothing read yet: the first line must be `PEER`,
    /// naming a neighbour (one of these, on a TLS link: the names in the
    /// dialler's certificate).
    Opening(Option<Vec<String>>),
    /// `PEER` answered with our `CHALLENGE`: the next line must be `PROOF`.
    Proving(Box<Proving>),
    /// A client: IAMAT and WHATSAT.
    Client,
    /// An incoming link from a neighbour: AT lines.
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

/// Who may open incoming links, and how they prove it.
pub(crate) struct Admission {
    /// This server's name.
    pub me: Rc<str>,
    /// Neighbour names when this admission was made, indexed by
    /// [`NeighbourId`].
    pub neighbours: Vec<Rc<str>>,
    /// The shard's neighbours now (a reload changes them): an incoming link
    /// from a server that is no longer a neighbour is closed.
    pub live_neighbours: Rc<std::cell::RefCell<Vec<Rc<str>>>>,
    /// Shared secret of the herd.
    pub secret: Option<String>,
    /// Mutual TLS on the peer port, when the herd has it.
    pub tls: Option<LinkTls>,
    /// TLS on the client TLS port, when the server has one.
    pub client_tls: Option<ClientTls>,
    /// Who client connections may speak for, and read (live).
    pub clients: Clients,
    /// A phone app's HTTP request must be whole within this of its start.
    pub http_request_timeout: Duration,
    /// Line-length limit of clients.
    pub max_line: usize,
    /// Line-length limit of links: any AT line a valid IAMAT can produce.
    pub link_max_line: usize,
    /// Heartbeats and silence detection of links.
    pub liveness: Liveness,
    /// How far ahead of this server's clock a client time may be.
    pub max_future_skew: Duration,
    /// A client silent for this long is closed.
    pub idle_timeout: Duration,
    /// A client that takes no replies for this long is dropped.
    pub write_timeout: Duration,
    /// Connections one shard holds at once.
    pub max_connections: usize,
    /// How far each neighbour stream was received (shared by all shards).
    pub marks: Arc<Marks>,
    /// The server's open incoming links (shared by all shards).
    pub inbound: Arc<Inbound>,
    /// Numbers for server names: records' tags.
    pub ids: Arc<ServerIds>,
    /// This server's run, said to neighbours (`TREE`); `None` to speak
    /// only the earlier link rules.
    pub run: Option<u64>,
    /// The fingerprint of this server's graph (`TREE`), or `None` when it
    /// does not send along trees.
    pub topology: Option<u64>,
    /// The server's flood-tree state.
    pub flood: Arc<Flood>,
    /// How often links announce digests.
    pub announce: Duration,
}

/// The receive time, read once per read.
pub(crate) fn now() -> PosixTime {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    PosixTime {
        secs: since.as_secs(),
        nanos: since.subsec_nanos(),
    }
}

/// Serves one connection until it closes or fails.
pub(crate) async fn serve(
    stream: TcpStream,
    port: Port,
    router: Rc<Router>,
    admission: Rc<Admission>,
    activity: Rc<Activity>,
) {
    let address = stream.peer_addr().ok();
    let peer = address.map(|a| a.to_string()).unwrap_or_default();
    let ip = address.map(|a| a.ip());
    // Replies are whole lines; waiting to fill packets only adds latency.
    let _ = stream.set_nodelay(true);
    // Bounded waits: a silent client is closed, one that does not read its
    // replies is dropped (its socket buffer full, writes stall).
    // A stranger on the peer port gets a link timeout, not a client's idle
    // time, to finish the handshake.
    // A client's idle time is kept by the shard's sweep (`activity`), not a
    // socket timeout: that would cost a timer on every read that waits.
    let _ = stream.set_read_timeout(match port {
        Port::Client => None,
        // Until the handshake is done; the idle sweep takes over then.
        Port::Peer | Port::ClientTls => Some(admission.liveness.dead_after),
    });
    let _ = stream.set_write_timeout(Some(admission.write_timeout));
    let client = ClientSide::new(ip, activity.clone());
    match (&admission.tls, port) {
        (_, Port::ClientTls) => {
            let Some(tls) = admission.client_tls.clone() else {
                return;
            };
            // Boxed, as for links: only TLS connections carry a session.
            Box::pin(async move {
                match tls.accept(stream).await {
                    Ok(stream) => {
                        let _ = stream.get_ref().0.set_read_timeout(None);
                        let client = Some(client);
                        converse(
                            stream, port, None, client, peer, router, admission, activity,
                        )
                        .await;
                    }
                    Err(e) => {
                        router.shard().metrics.refused.client_tls_handshake.inc();
                        tracing::debug!(%peer, error = %e, "client TLS handshake failed; closed")
                    }
                }
            })
            .await
        }
        (Some(tls), Port::Peer) => {
            // Boxed: a TLS session is kilobytes, and every client
            // connection's task would otherwise reserve room for one.
            let tls = tls.clone();
            Box::pin(async move {
                // The socket's read and write timeouts bound the handshake.
                match link_tls::accept(&tls, stream).await {
                    Ok((stream, names)) => {
                        let certified = Some(names);
                        converse(
                            stream, port, certified, None, peer, router, admission, activity,
                        )
                        .await;
                    }
                    Err(e) => {
                        router.shard().metrics.refused.handshake.inc();
                        tracing::warn!(%peer, error = %e, "link refused: TLS handshake failed")
                    }
                }
            })
            .await
        }
        _ => {
            let client = (port == Port::Client).then_some(client);
            converse(
                stream, port, None, client, peer, router, admission, activity,
            )
            .await
        }
    }
}

/// A connection's bytes: plain TCP, or TLS over it. Its timeouts are those
/// of the TCP socket underneath.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for futures_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Reads, handles and answers lines until the connection ends.
#[allow(clippy::too_many_arguments)]
async fn converse<S: Socket>(
    mut stream: S,
    port: Port,
    // On a TLS link: the herd names in the dialler's certificate.
    certified: Option<Vec<String>>,
    // On a client port: the connection's identity.
    mut client: Option<ClientSide>,
    peer: String,
    router: Rc<Router>,
    admission: Rc<Admission>,
    activity: Rc<Activity>,
) {
    let mut lines = LineBuffer::new(admission.max_line);
    // Grows with the replies it holds; an idle connection costs nothing here.
    let mut out: Vec<u8> = Vec::new();
    let mut role = match port {
        Port::Client | Port::ClientTls => Role::Client,
        Port::Peer => Role::Opening(certified),
    };
    // With `fsync: always`, what answers once the records of the replies
    // in `out` are on disk: awaited before `out` is written. Empty in any
    // other mode.
    let mut on_disk: Vec<oneshot::Receiver<()>> = Vec::new();
    let end = 'conn: loop {
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
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                let Role::Link(link) = &mut role else {
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
        if matches!(role, Role::Client | Role::Link(_)) {
            // At 64 connections x 16 lines against 1 M clients, the
            // lookups' first loads were a quarter of the shard's time;
            // started together here, they overlap.
            router.prefetch(lines.lines_ahead());
        }
        // Latency is counted from here, once per read: every command of it
        // waits for the same write.
        let read_at = Instant::now();
        let received = now();
        let mut commands = 0u64;
        let opening = !matches!(role, Role::Link(_) | Role::Client);
        while let Some(frame) = lines.next_frame() {
            if matches!(role, Role::Client) {
                commands += 1;
            }
            if !handle(
                Arrived {
                    frame,
                    at: received,
                },
                &mut role,
                client.as_mut(),
                &router,
                &admission,
                &peer,
                &mut out,
                &mut on_disk,
            )
            .await
            {
                let _ = stream.write_all(&out).await;
                tracing::info!(%peer, "connection closed after a refused handshake");
                return;
            }
            if out.len() >= FLUSH_AT {
                if let Err(e) = flush_once_on_disk(&mut stream, &mut out, &mut on_disk).await {
                    break 'conn e;
                }
            }
        }
        if let Role::Link(link) = &mut role {
            // A busy link's reads never time out: keepalives are due by the
            // clock all the same, or the sender would take it for dead.
            if !link.tick(&admission, router.shard(), &peer, &mut out) {
                break End::Silent;
            }
        }
        if opening && matches!(role, Role::Link(_)) {
            // Neighbours may be quiet for long stretches: a link never idles
            // out, its session watches it instead, woken every tick. Its AT
            // lines are longer than the IAMATs they came from.
            // Flood-tree comparisons come every announcement interval.
            let tick = admission.liveness.tick().min(admission.announce);
            let _ = stream.tcp().set_read_timeout(Some(tick));
            let _ = stream
                .tcp()
                .set_write_timeout(Some(admission.liveness.dead_after));
            lines.raise_limit(admission.link_max_line);
        }
        if let Err(e) = flush_once_on_disk(&mut stream, &mut out, &mut on_disk).await {
            break e;
        }
        if commands > 0 {
            let micros = u64::try_from(read_at.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = router
                .shard()
                .latency
                .borrow_mut()
                .record_n(micros.max(1), commands);
        }
    };
    // End of input also ends a last line without '\n': answer it, then close.
    if end == End::Closed {
        if let Some(frame) = lines.finish() {
            handle(
                Arrived { frame, at: now() },
                &mut role,
                client.as_mut(),
                &router,
                &admission,
                &peer,
                &mut out,
                &mut on_disk,
            )
            .await;
        }
        if !out.is_empty() && written_to_disk(&mut on_disk).await {
            let _ = stream.write_all(&out).await;
        }
    }
    if end == End::WriteDeadline {
        tracing::warn!(%peer, "client dropped: it did not take its replies in time");
    }
    if activity.revoked() {
        tracing::info!(%peer, "client closed: a reload removed the key of its token");
    }
    match role {
        Role::Link(link) => {
            admission.inbound.closed(link.place);
            let neighbour = &admission.neighbours[link.from];
            let mark = link.session.mark();
            if let Some((shard, epoch, received)) = mark {
                admission.marks.record(neighbour, shard, epoch, received);
            }
            tracing::info!(%peer, %neighbour, %end, received = ?mark.map(|m| m.2), future_records_dropped = link.future_records, "incoming link dropped");
        }
        _ => tracing::debug!(%peer, %end, "connection ended"),
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed it (or a stop shut its reading side).
    Closed,
    /// A client sent nothing for `client_idle_timeout_ms`.
    IdleTimeout,
    /// A link heard nothing for `link_timeout_ms`, or its neighbour is no
    /// longer one.
    Silent,
    /// Reading failed.
    ReadFailed,
    /// The peer did not take its replies within the write deadline.
    WriteDeadline,
    /// Writing failed.
    WriteFailed,
    /// The journal stopped before records of owed replies were on disk
    /// (`fsync: always`): those replies are not sent.
    NotOnDisk,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Closed => "closed",
            End::IdleTimeout => "idle timeout",
            End::Silent => "silent",
            End::ReadFailed => "read failed",
            End::WriteDeadline => "write deadline passed",
            End::WriteFailed => "write failed",
            End::NotOnDisk => "journal stopped before the records were on disk",
        })
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
async fn flush_once_on_disk(
    stream: &mut impl Socket,
    out: &mut Vec<u8>,
    on_disk: &mut Vec<oneshot::Receiver<()>>,
) -> Result<(), End> {
    if !written_to_disk(on_disk).await {
        return Err(End::NotOnDisk);
    }
    flush(stream, out).await
}

/// Writes and clears the pending replies; names the failure if any.
async fn flush(stream: &mut impl Socket, out: &mut Vec<u8>) -> Result<(), End> {
    if out.is_empty() {
        return Ok(());
    }
    let result = stream.write_all(out).await;
    out.clear();
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::TimedOut => Err(End::WriteDeadline),
        Err(_) => Err(End::WriteFailed),
    }
}

/// A framed line and when the read that brought it returned. The lines of
/// one read share that receive time: one clock read per read, not one per
/// line (the clock was 2 % of a shard's core at 64 x 16).
struct Arrived<'a> {
    frame: Frame<'a>,
    at: PosixTime,
}

/// Handles one framed line, appending its reply to `out`. Returns false when
/// the connection must close (a refused handshake).
#[allow(clippy::too_many_arguments)]
async fn handle(
    arrived: Arrived<'_>,
    role: &mut Role,
    client: Option<&mut ClientSide>,
    router: &Router,
    admission: &Admission,
    peer: &str,
    out: &mut Vec<u8>,
    on_disk: &mut Vec<oneshot::Receiver<()>>,
) -> bool {
    let now = arrived.at;
    let line = match arrived.frame {
        Frame::Line(line) => line,
        Frame::TooLong(start) => {
            match role {
                Role::Opening(_) | Role::Proving(_) => {
                    tracing::warn!(%peer, "handshake refused: over-long line");
                    reply_invalid(out, start, peer);
                    return false;
                }
                Role::Link(link) => {
                    // Longer than any record a herd server makes: not a
                    // record, and the mark must not move past it.
                    router.shard().metrics.refused.line_too_long.inc();
                    link.session.refuse();
                    tracing::warn!(%peer, "over-long line on a link refused");
                    return true;
                }
                Role::Client => {}
            }
            let metrics = &router.shard().metrics;
            metrics.refused.line_too_long.inc();
            metrics.commands.other_invalid.inc();
            tracing::debug!(%peer, line = %String::from_utf8_lossy(start), "in: over-long line");
            reply_invalid(out, start, peer);
            return true;
        }
    };
    let parsed = protocol::parse_line(line);
    match role {
        Role::Link(link) => {
            let record = on_link(link, parsed, line, router, admission, peer, out);
            if !link.caught_up && link.session.caught_up() {
                link.caught_up = true;
                admission.inbound.caught_up(link.place);
            }
            if let Some(record) = record {
                let run = link.session.sender_run().unwrap_or(0);
                router.record(record, run).await;
            }
            return true;
        }
        Role::Opening(_) | Role::Proving(_) => {
            let accepted = handshake(parsed, line, role, admission, peer, out);
            if !accepted {
                router.shard().metrics.refused.handshake.inc();
            }
            return accepted;
        }
        Role::Client => {}
    }
    let Some(client) = client else {
        // A client role always has its side; nothing to answer otherwise.
        return false;
    };
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
                    on_disk.push(done);
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
    true
}

/// One line of the handshake on the peer port; false when the connection
/// must close (the line was refused). Nonces and proofs are never logged.
fn handshake(
    parsed: Parsed<'_>,
    line: &[u8],
    role: &mut Role,
    admission: &Admission,
    peer: &str,
    out: &mut Vec<u8>,
) -> bool {
    let secret = admission.secret.as_deref();
    match (&*role, parsed) {
        (_, Parsed::Empty) => true,
        (Role::Opening(certified), Parsed::Command(Command::Peer(p))) => {
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
            *role = Role::Proving(Box::new(Proving { from, challenge }));
            true
        }
        (Role::Proving(proving), Parsed::Command(Command::Proof(proof))) => {
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
            *role = Role::Link(Box::new(Incoming {
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

/// A line as logged: handshake lines lose their nonces and proofs, and
/// `AUTH` lines their tokens.
fn shown(line: &[u8]) -> String {
    if protocol::is_auth_line(line) {
        let mut refused = Vec::new();
        protocol::write_auth_refused(&mut refused, line);
        // `? AUTH <client>`: the line without its token.
        let kept = String::from_utf8_lossy(&refused[2..refused.len() - 1]).into_owned();
        return format!("{kept} <token not shown>");
    }
    link_session::redacted(line).unwrap_or_else(|| String::from_utf8_lossy(line).into_owned())
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

fn reply_invalid(out: &mut Vec<u8>, line: &[u8], peer: &str) {
    let start = out.len();
    protocol::write_invalid(out, line);
    tracing::debug!(%peer, reply = %shown(&out[start..out.len() - 1]), "out");
}
