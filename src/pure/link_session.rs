//! The link protocol between two servers, as one pure state machine per end:
//! [`Sender`] for the side that dialled and sends its shard's records,
//! [`Receiver`] for the side that accepted and applies them.
//!
//! No I/O, no clock, no runtime types: the shell feeds in the lines it
//! read and the time, writes out the bytes the session asks for, and acts on
//! the events it returns. PROTOCOL.md ("Between servers") is the contract
//! this implements:
//!
//! - The handshake is mutual and cannot be replayed: the sender writes
//!   `PEER <name> <nonce>`; the receiver answers `CHALLENGE <nonce>
//!   <proof>`, proving the herd's secret over both names and both fresh
//!   nonces; the sender checks that proof and writes `PROOF <proof>`, its own
//!   over the same, then `STREAM <shard> <epoch>`. See [`proof`].
//! - A herd receiver answers `STREAM` with `SINCE <n>`: it holds that
//!   stream up to n. A receiver that speaks only the basic rules answers
//!   `? STREAM ...` or nothing; after [`Liveness::answer_within`] the sender
//!   falls back to plain AT lines from the start of its log, with no `SEQ`
//!   lines.
//! - Records are AT lines. After each batch, and when it has written
//!   nothing for a heartbeat, the sender writes `SEQ <m>`: it has sent the
//!   stream up to m. The receiver writes `ACK <n>` every heartbeat: it holds
//!   the stream up to n.
//! - Either end closes a herd link that has heard nothing for
//!   [`Liveness::dead_after`]: a neighbour gone without a FIN is found.
//!   A basic link is never closed for silence (a basic server sends
//!   nothing back); its writes still have a deadline in the shell.
//! - A receiver that refused a record line stops moving its mark: the
//!   position never moves past a record it does not hold, so a reopened
//!   link sends that record again.
//! - Servers of this version say `TREE` (the receiver before `SINCE`, the
//!   sender once it heard the receiver's): their run, a number drawn at
//!   start, so each end knows which life of the other it talks to, and the
//!   fingerprint of their graph, so both know whether they agree on the
//!   flood trees (PROTOCOL.md, "Flood trees"; the lines are
//!   `flood_lines.rs`'). Earlier servers ignore the line, and are never
//!   sent one they would refuse. A sender reads the receiver's `GRAFT` and
//!   `PRUNE`; the shell reads `IHAVE` (it is no concern of the stream).

use crate::pure::flood_lines::{self, FloodLine, Hello};
use crate::pure::protocol::{self, At, Command, Parsed};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Bytes of randomness in a handshake nonce; on the wire, twice as many
/// lowercase hex digits.
pub const NONCE_BYTES: usize = 16;

/// Which end of a link made a proof. The two ends' proofs cover the same
/// names and nonces but differ in this word, so a receiver's proof can
/// never be played back as a sender's, or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end that dialled (writes `PEER` and `PROOF`).
    Dialer,
    /// The end that accepted (writes `CHALLENGE`).
    Acceptor,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Dialer => "dialer",
            Side::Acceptor => "acceptor",
        }
    }
}

/// The names and nonces one handshake is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange<'a> {
    /// The dialling server's name.
    pub dialer: &'a str,
    /// The accepting server's name.
    pub acceptor: &'a str,
    /// The dialler's fresh nonce (hex), from `PEER`.
    pub dialer_nonce: &'a str,
    /// The acceptor's fresh nonce (hex), from `CHALLENGE`.
    pub acceptor_nonce: &'a str,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, side: Side, x: &Exchange<'_>) -> HmacSha256 {
    // HMAC hashes over-long keys and pads short ones: no key is rejected.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC takes keys of any length");
    };
    for (i, part) in [
        "herd-link",
        side.word(),
        x.dialer,
        x.acceptor,
        x.dialer_nonce,
        x.acceptor_nonce,
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            mac.update(b" ");
        }
        mac.update(part.as_bytes());
    }
    mac
}

/// The proof `side` gives of the herd's secret in handshake `x`: lowercase
/// hex HMAC-SHA256, under the secret, of
/// `"herd-link <side> <dialer> <acceptor> <dialer-nonce> <acceptor-nonce>"`
/// with `<side>` `dialer` or `acceptor`; `-` when the herd has no secret.
/// Both nonces are fresh per link, so a recorded proof is worth nothing on
/// the next one.
pub fn proof(secret: Option<&str>, side: Side, x: &Exchange<'_>) -> String {
    match secret {
        None => "-".to_owned(),
        Some(secret) => hex::encode(mac(secret, side, x).finalize().into_bytes()),
    }
}

/// Constant-time check of a received proof. Only the exact lowercase hex
/// form counts, and `-` only when there is no secret.
pub fn proof_ok(secret: Option<&str>, side: Side, x: &Exchange<'_>, received: &str) -> bool {
    let Some(secret) = secret else {
        return received == "-";
    };
    // One canonical form on the wire; rejecting uppercase reveals nothing.
    if received.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    match hex::decode(received) {
        Ok(tag) => mac(secret, side, x).verify_slice(&tag).is_ok(),
        Err(_) => false,
    }
}

/// A nonce as it must appear on the wire: exactly `2 * NONCE_BYTES`
/// lowercase hex digits.
pub fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == 2 * NONCE_BYTES
        && nonce
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A nonce from `NONCE_BYTES` random bytes (the shell draws them).
pub fn nonce_hex(random: &[u8; NONCE_BYTES]) -> String {
    hex::encode(random)
}

/// A handshake line for the log: its first word and, for `PEER`, the name;
/// never a nonce or a proof.
pub fn redacted(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_ascii_whitespace();
    match words.next()? {
        "PEER" => Some(format!("PEER {} ...", words.next().unwrap_or(""))),
        word @ ("CHALLENGE" | "PROOF") => Some(format!("{word} ...")),
        "?" => match words.next()? {
            "PEER" => Some(format!("? PEER {} ...", words.next().unwrap_or(""))),
            word @ ("CHALLENGE" | "PROOF") => Some(format!("? {word} ...")),
            _ => None,
        },
        _ => None,
    }
}

/// A neighbour's refusal line, fit for the log: a refused `PEER` or
/// `PROOF` echoes our nonce or proof, which are never logged.
fn refusal(text: &str) -> Closed {
    Closed::Refused(redacted(text.as_bytes()).unwrap_or_else(|| text.to_owned()))
}

/// The receiving end's half of the handshake, from `PEER` to `PROOF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    dialer: String,
    dialer_nonce: String,
    nonce: String,
}

impl Challenge {
    /// Answers the `PEER <dialer> <dialer_nonce>` line of a neighbour (the
    /// shell checked the name and the nonce's form): appends `CHALLENGE
    /// <nonce> <proof>` to `out`.
    pub fn new(
        secret: Option<&str>,
        me: &str,
        dialer: &str,
        dialer_nonce: &str,
        nonce: String,
        out: &mut Vec<u8>,
    ) -> Challenge {
        let challenge = Challenge {
            dialer: dialer.to_owned(),
            dialer_nonce: dialer_nonce.to_owned(),
            nonce,
        };
        let mine = proof(secret, Side::Acceptor, &challenge.exchange(me));
        out.extend_from_slice(format!("CHALLENGE {} {mine}\n", challenge.nonce).as_bytes());
        challenge
    }

    fn exchange<'a>(&'a self, me: &'a str) -> Exchange<'a> {
        Exchange {
            dialer: &self.dialer,
            acceptor: me,
            dialer_nonce: &self.dialer_nonce,
            acceptor_nonce: &self.nonce,
        }
    }

    /// Whether the dialler's `PROOF` proves the secret for this handshake.
    pub fn proved(&self, secret: Option<&str>, me: &str, received: &str) -> bool {
        proof_ok(secret, Side::Dialer, &self.exchange(me), received)
    }
}

/// How a link watches its neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// An end that has written nothing for this long writes a keepalive.
    pub heartbeat: Duration,
    /// A herd link that has heard nothing for this long is dead.
    pub dead_after: Duration,
    /// How long a sender waits for `SINCE` before taking the neighbour for
    /// one that speaks only the basic rules.
    pub answer_within: Duration,
}

impl Liveness {
    /// Timing from a heartbeat period: dead after two and a half periods
    /// of silence, so that with checks every quarter period a half-open
    /// link is found within three periods.
    pub fn from_heartbeat(heartbeat: Duration, dead_after: Duration) -> Liveness {
        Liveness {
            heartbeat,
            dead_after,
            answer_within: dead_after,
        }
    }

    /// How often the shell should call `on_tick`.
    pub fn tick(&self) -> Duration {
        (self.heartbeat / 4).max(Duration::from_millis(1))
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The neighbour refused the handshake (its `? ...` line).
    Refused(String),
    /// Nothing was heard for [`Liveness::dead_after`].
    Silent(Duration),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Refused(line) => write!(f, "refused: {line}"),
            Closed::Silent(d) => write!(f, "nothing heard for {} ms", d.as_millis()),
        }
    }
}

/// What the sender's shell must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEvent {
    /// Nothing changes.
    None,
    /// Start (or restart) sending after sequence number `after`: position
    /// the log cursor there, then send everything past it.
    SendAfter(u64),
    /// Write these bytes (the handshake's `PROOF` and `STREAM`).
    Write(Vec<u8>),
    /// The receiver asks for the records of `origin` (a server name) from
    /// before `second`, and from now on (`GRAFT`).
    Graft {
        /// The origin's server name.
        origin: String,
        /// The second whose digest entry differs.
        second: u64,
    },
    /// The receiver no longer needs the records of `origin` off its tree
    /// (`PRUNE`).
    Prune {
        /// The origin's server name.
        origin: String,
    },
    /// End the link.
    Close(Closed),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SenderPhase {
    /// `PEER` written at `opened`; waiting for `CHALLENGE`.
    Greeting { opened: Instant },
    /// `PROOF` and `STREAM` written at `opened`; waiting for `SINCE`.
    Opening { opened: Instant },
    /// Sending; `basic` when the neighbour speaks only the basic rules.
    Streaming { basic: bool },
}

/// The sending end of a link.
#[derive(Debug)]
pub struct Sender {
    phase: SenderPhase,
    liveness: Liveness,
    last_heard: Instant,
    last_written: Instant,
    /// The highest sequence number the neighbour acknowledged.
    acked: u64,
    /// What the handshake needs until `CHALLENGE` is answered.
    opening: Option<Box<Opening>>,
    /// This server's run and graph, said once the neighbour said its own;
    /// `None` when this server speaks only the earlier link rules.
    mine: Option<Hello>,
    /// What the neighbour said of itself (`TREE`).
    neighbour: Option<Hello>,
    /// The last `SEQ` written (or the receiver's `SINCE`), and when it
    /// was written.
    marked: (u64, Option<Instant>),
}

/// A link being opened: who is who, this end's nonce, what to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// This server's name.
    pub me: String,
    /// The neighbour dialled.
    pub neighbour: String,
    /// The herd's shared secret.
    pub secret: Option<String>,
    /// This link's fresh nonce (see [`nonce_hex`]).
    pub nonce: String,
    /// The sending shard.
    pub shard: u32,
    /// The sending shard's epoch.
    pub epoch: u64,
    /// The stream's last sequence number now, so the receiver knows when it
    /// has caught up.
    pub head: u64,
    /// This server's run (`TREE`), or `None` to speak only the earlier
    /// link rules.
    pub run: Option<u64>,
    /// The fingerprint of this server's graph (`TREE`), or `None` when it
    /// does not send along trees.
    pub topology: Option<u64>,
}

impl Sender {
    /// Opens a link: appends `PEER <me> <nonce>` to `out`.
    pub fn open(now: Instant, liveness: Liveness, opening: Opening, out: &mut Vec<u8>) -> Sender {
        let mut line = String::new();
        protocol::write_peer(&mut line, &opening.me, &opening.nonce);
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
        Sender {
            phase: SenderPhase::Greeting { opened: now },
            liveness,
            last_heard: now,
            last_written: now,
            acked: 0,
            mine: opening.run.map(|run| Hello {
                run,
                topology: opening.topology,
                heard: None,
            }),
            opening: Some(Box::new(opening)),
            neighbour: None,
            marked: (0, None),
        }
    }

    /// The neighbour's run, once it said it; `None` from a neighbour that
    /// speaks only the earlier link rules (or to one, when this server does).
    pub fn neighbour_run(&self) -> Option<u64> {
        self.neighbour.map(|h| h.run)
    }

    /// Whether this is a tree link: both ends send along trees, of the same
    /// graph.
    pub fn tree_link(&self) -> bool {
        let mine = self.mine.and_then(|h| h.topology);
        mine.is_some() && self.neighbour.and_then(|h| h.topology) == mine
    }

    /// The version of this server's announcements to start after, when the
    /// neighbour takes them (it said `TREE`): the one it last heard from
    /// this run, else 0.
    pub fn announce_after(&self) -> Option<u64> {
        let (mine, theirs) = (self.mine?, self.neighbour?);
        Some(match theirs.heard {
            Some((run, version)) if run == mine.run => version,
            _ => 0,
        })
    }

    /// Whether the receiver said (`TREE`) it heard from an earlier run of
    /// this server: it held records this server may send again.
    pub fn receiver_knew_an_earlier_run(&self) -> bool {
        match (self.mine, self.neighbour) {
            (Some(mine), Some(theirs)) => {
                matches!(theirs.heard, Some((run, _)) if run != 0 && run != mine.run)
            }
            _ => false,
        }
    }

    /// The neighbour's `TREE`: remember what it says, and answer with ours
    /// (once).
    fn on_tree(&mut self, text: &str) -> SenderEvent {
        let (Some(mine), Some(theirs)) = (self.mine, flood_lines::parse_tree(text)) else {
            return SenderEvent::None;
        };
        let first = self.neighbour.is_none();
        self.neighbour = Some(theirs);
        if !first {
            return SenderEvent::None;
        }
        let mut out = Vec::new();
        flood_lines::write_tree(&mut out, &mine);
        SenderEvent::Write(out)
    }

    /// The neighbour's `CHALLENGE <nonce> <proof>`: if its proof holds,
    /// answer with ours and `STREAM`.
    fn on_challenge(&mut self, text: &str, now: Instant) -> SenderEvent {
        let Some(o) = self.opening.take() else {
            return SenderEvent::None;
        };
        let mut words = text.split_ascii_whitespace().skip(1);
        let (Some(nonce), Some(received), None) = (words.next(), words.next(), words.next()) else {
            return SenderEvent::Close(Closed::Refused("a malformed CHALLENGE".to_owned()));
        };
        let x = Exchange {
            dialer: &o.me,
            acceptor: &o.neighbour,
            dialer_nonce: &o.nonce,
            acceptor_nonce: nonce,
        };
        let secret = o.secret.as_deref();
        if !valid_nonce(nonce) || !proof_ok(secret, Side::Acceptor, &x, received) {
            return SenderEvent::Close(Closed::Refused(
                "the neighbour did not prove the herd's secret".to_owned(),
            ));
        }
        let mut out = format!("PROOF {}\n", proof(secret, Side::Dialer, &x));
        let _ = writeln!(out, "STREAM {} {} {}", o.shard, o.epoch, o.head);
        self.phase = SenderPhase::Opening { opened: now };
        self.last_written = now;
        SenderEvent::Write(out.into_bytes())
    }

    /// Whether records may be sent now.
    pub fn streaming(&self) -> bool {
        matches!(self.phase, SenderPhase::Streaming { .. })
    }

    /// Whether the neighbour speaks only the basic rules.
    pub fn basic(&self) -> bool {
        self.phase == SenderPhase::Streaming { basic: true }
    }

    /// The highest sequence number the neighbour said it holds.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// A line the neighbour sent.
    pub fn on_line(&mut self, line: &[u8], now: Instant) -> SenderEvent {
        self.last_heard = now;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if let SenderPhase::Greeting { .. } = self.phase {
            if text.starts_with("CHALLENGE ") {
                return self.on_challenge(text, now);
            }
            if text.starts_with('?') {
                return SenderEvent::Close(refusal(text));
            }
            return SenderEvent::None;
        }
        if text.starts_with("TREE ") {
            return self.on_tree(text);
        }
        if let SenderPhase::Opening { .. } = self.phase {
            if let Some(n) = protocol::parse_since(line) {
                self.phase = SenderPhase::Streaming { basic: false };
                self.acked = n;
                self.marked.0 = n;
                return SenderEvent::SendAfter(n);
            }
            if text.starts_with("? STREAM") {
                // It took `PEER` but not our extension: a basic server.
                return self.fall_back();
            }
            if text.starts_with('?') {
                return SenderEvent::Close(refusal(text));
            }
            return SenderEvent::None;
        }
        if let Some(n) = parse_count_line(text, "ACK") {
            self.acked = self.acked.max(n);
        }
        if self.neighbour.is_some() {
            match flood_lines::parse(text) {
                Some(FloodLine::Graft { origin, second }) => {
                    return SenderEvent::Graft {
                        origin: origin.to_owned(),
                        second,
                    };
                }
                Some(FloodLine::Prune { origin }) => {
                    return SenderEvent::Prune {
                        origin: origin.to_owned(),
                    };
                }
                _ => {}
            }
        }
        // Anything else (a basic server's `? SEQ ...`) only shows it lives.
        SenderEvent::None
    }

    fn fall_back(&mut self) -> SenderEvent {
        self.phase = SenderPhase::Streaming { basic: true };
        SenderEvent::SendAfter(0)
    }

    /// Time passed: falls back to basic when `SINCE` never came; closes a
    /// herd link that went silent.
    pub fn on_tick(&mut self, now: Instant) -> SenderEvent {
        let silent = now.saturating_duration_since(self.last_heard);
        match self.phase {
            // Without a proof from the neighbour nothing is sent to it.
            SenderPhase::Greeting { opened } => {
                let waited = now.saturating_duration_since(opened);
                if waited >= self.liveness.answer_within {
                    return SenderEvent::Close(Closed::Silent(waited));
                }
                SenderEvent::None
            }
            SenderPhase::Opening { opened } => {
                if now.saturating_duration_since(opened) >= self.liveness.answer_within {
                    return self.fall_back();
                }
                SenderEvent::None
            }
            SenderPhase::Streaming { basic: false } if silent >= self.liveness.dead_after => {
                SenderEvent::Close(Closed::Silent(silent))
            }
            SenderPhase::Streaming { .. } => SenderEvent::None,
        }
    }

    /// Appends what follows a batch of records numbered up to `last`: `SEQ`
    /// on a herd link, nothing on a basic one.
    pub fn end_batch(&mut self, last: u64, now: Instant, out: &mut Vec<u8>) {
        self.last_written = now;
        if !self.basic() {
            write_count_line(out, "SEQ", last);
            self.marked = (last, Some(now));
        }
    }

    /// Appends `SEQ <sent>` when the stream moved past the last `SEQ` and
    /// that one is a tick old (a herd link only): the receiver's mark and
    /// its catch-up follow within a tick, at a few lines a second however
    /// many batches go out.
    pub fn note_sent(&mut self, sent: u64, now: Instant, out: &mut Vec<u8>) {
        if self.basic() || sent <= self.marked.0 {
            return;
        }
        let due = match self.marked.1 {
            Some(at) => now.saturating_duration_since(at) >= self.liveness.tick(),
            None => true,
        };
        if due {
            self.end_batch(sent, now, out);
        }
    }

    /// Appends a keepalive if this end has written nothing for a heartbeat
    /// (a herd link only); `sent` is the last sequence number sent.
    pub fn keepalive(&mut self, sent: u64, now: Instant, out: &mut Vec<u8>) {
        if self.phase != (SenderPhase::Streaming { basic: false }) {
            return;
        }
        if now.saturating_duration_since(self.last_written) >= self.liveness.heartbeat {
            self.end_batch(sent, now, out);
        }
    }
}

/// What the receiver's shell must do after a line.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverEvent<'a> {
    /// Nothing to apply.
    None,
    /// Apply this record (it came from this link's neighbour).
    Record(At<'a>),
    /// The line is not part of the link protocol: count and log it.
    Invalid,
}

/// The receiving end of a link, once its `PEER` line was accepted.
#[derive(Debug)]
pub struct Receiver {
    liveness: Liveness,
    /// The sending shard and its epoch, once `STREAM` was read: a herd link.
    stream: Option<(u32, u64)>,
    /// What the sender held when the link opened: caught up once received
    /// reaches it. `None` until `STREAM`, or from a sender that does not say
    /// (caught up at its first `SEQ`).
    head: Option<u64>,
    /// A `SEQ` was read on this link.
    seq_seen: bool,
    /// Records came before any `STREAM`: a basic sender.
    basic: bool,
    /// Every record of the stream up to this number has arrived.
    received: u64,
    /// A record line was refused: the mark stays where it was.
    refused: bool,
    last_heard: Instant,
    last_written: Instant,
    /// What this server says of itself before `SINCE`; `None` to speak
    /// only the earlier link rules.
    mine: Option<Hello>,
    /// What the sender said of itself.
    sender: Option<Hello>,
}

impl Receiver {
    /// A link whose `PEER` line was just accepted; `run` is this server's
    /// run, or `None` to speak only the earlier link rules.
    pub fn new(now: Instant, liveness: Liveness, run: Option<u64>) -> Receiver {
        Receiver {
            liveness,
            stream: None,
            head: None,
            seq_seen: false,
            basic: false,
            received: 0,
            refused: false,
            last_heard: now,
            last_written: now,
            mine: run.map(|run| Hello {
                run,
                topology: None,
                heard: Some((0, 0)),
            }),
            sender: None,
        }
    }

    /// The same receiver, saying the fingerprint of its graph (`None`: it
    /// does not send along trees) and what it last heard from the sender
    /// (its run and the version of its last announcement).
    pub(crate) fn with_tree(mut self, topology: Option<u64>, heard: (u64, u64)) -> Receiver {
        if let Some(mine) = &mut self.mine {
            mine.topology = topology;
            mine.heard = Some(heard);
        }
        self
    }

    /// The sender's run, once it said it: the life of the neighbour whose
    /// records this link brings.
    pub fn sender_run(&self) -> Option<u64> {
        self.sender.map(|h| h.run)
    }

    /// Whether this is a tree link: both ends send along trees, of the same
    /// graph.
    pub fn tree_link(&self) -> bool {
        let mine = self.mine.and_then(|h| h.topology);
        mine.is_some() && self.sender.and_then(|h| h.topology) == mine
    }

    /// The stream and how far it was received, once known: what to
    /// remember when the link ends, so the next one resumes there.
    pub fn mark(&self) -> Option<(u32, u64, u64)> {
        self.stream
            .map(|(shard, epoch)| (shard, epoch, self.received))
    }

    /// Whether the neighbour has sent everything it held when the link
    /// opened. A basic sender says nothing of what it holds: it counts as
    /// caught up once it sends records.
    pub fn caught_up(&self) -> bool {
        match (self.stream, self.head) {
            (None, _) => self.basic,
            (Some(_), Some(head)) => !self.refused && self.received >= head,
            (Some(_), None) => !self.refused && self.seq_seen,
        }
    }

    /// One line from the neighbour (`line`, and `parsed` from it). `since`
    /// says how far a stream was received on earlier links (0 when
    /// unknown). Replies go to `out`.
    pub fn on_line<'a>(
        &mut self,
        parsed: Parsed<'a>,
        line: &[u8],
        now: Instant,
        since: impl FnOnce(u32, u64) -> u64,
        out: &mut Vec<u8>,
    ) -> ReceiverEvent<'a> {
        self.last_heard = now;
        if parsed == Parsed::Invalid && self.stream.is_some() && self.mine.is_some() {
            // The link's own line, unknown to the client protocol.
            let text = String::from_utf8_lossy(line);
            if let Some(hello) = flood_lines::parse_tree(text.trim_end()) {
                self.sender = Some(hello);
                return ReceiverEvent::None;
            }
        }
        match parsed {
            Parsed::Command(Command::At(at)) => {
                self.basic |= self.stream.is_none();
                ReceiverEvent::Record(at)
            }
            Parsed::Command(Command::Stream { shard, epoch, head }) if self.stream.is_none() => {
                let n = since(shard, epoch);
                self.stream = Some((shard, epoch));
                self.head = head;
                self.received = n;
                if let Some(mine) = &self.mine {
                    // Before SINCE: an earlier sender ignores it there.
                    flood_lines::write_tree(out, mine);
                }
                write_count_line(out, "SINCE", n);
                self.last_written = now;
                ReceiverEvent::None
            }
            Parsed::Command(Command::Seq(seq)) if self.stream.is_some() => {
                self.seq_seen = true;
                if !self.refused {
                    self.received = self.received.max(seq);
                }
                ReceiverEvent::None
            }
            Parsed::Empty => ReceiverEvent::None,
            _ => {
                self.refused = true;
                ReceiverEvent::Invalid
            }
        }
    }

    /// A record line of this link was refused (it did not parse): the mark
    /// must not move past it.
    pub fn refuse(&mut self) {
        self.refused = true;
    }

    /// Time passed: appends `ACK` when a heartbeat is due on a herd link;
    /// `Err` when a herd link went silent.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<u8>) -> Result<(), Closed> {
        if self.stream.is_none() {
            // A basic sender: it neither expects nor sends keepalives.
            return Ok(());
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= self.liveness.dead_after {
            return Err(Closed::Silent(silent));
        }
        if now.saturating_duration_since(self.last_written) >= self.liveness.heartbeat {
            write_count_line(out, "ACK", self.received);
            self.last_written = now;
        }
        Ok(())
    }
}

/// Appends `<word> <n>\n`.
fn write_count_line(out: &mut Vec<u8>, word: &str, n: u64) {
    let mut line = String::with_capacity(word.len() + 22);
    let _ = writeln!(line, "{word} {n}");
    out.extend_from_slice(line.as_bytes());
}

/// `n` from a line `<word> <n>`.
fn parse_count_line(text: &str, word: &str) -> Option<u64> {
    let mut fields = text.split_ascii_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(w), Some(n), None) if w == word && n.bytes().all(|b| b.is_ascii_digit()) => {
            n.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::protocol::parse_line;

    fn liveness() -> Liveness {
        Liveness::from_heartbeat(Duration::from_millis(100), Duration::from_millis(250))
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    const N1: &str = "00000000000000000000000000000000";
    const N2: &str = "ffffffffffffffffffffffffffffffff";

    fn opening(secret: Option<&str>, shard: u32, epoch: u64) -> Opening {
        Opening {
            me: "A".into(),
            neighbour: "B".into(),
            secret: secret.map(str::to_owned),
            nonce: N1.into(),
            shard,
            epoch,
            head: 20,
            run: None,
            topology: None,
        }
    }

    /// A sender of a herd without a secret, past the handshake (its
    /// `PEER`, `PROOF` and `STREAM` appended to `out`), waiting for `SINCE`.
    fn opened(t0: Instant, live: Liveness, shard: u32, epoch: u64, out: &mut Vec<u8>) -> Sender {
        let mut s = Sender::open(t0, live, opening(None, shard, epoch), out);
        let challenge = format!("CHALLENGE {N2} -");
        match s.on_line(challenge.as_bytes(), t0) {
            SenderEvent::Write(bytes) => out.extend_from_slice(&bytes),
            other => panic!("{other:?}"),
        }
        s
    }

    /// Runs a sender and a receiver against each other, as two servers
    /// would, passing every byte one writes to the other.
    fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn a_sender_opens_with_peer_proof_and_stream_and_starts_after_since() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut s = opened(t0, liveness(), 2, 9, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("PEER A {N1}\nPROOF -\nSTREAM 2 9 20\n")
        );
        assert!(!s.streaming());
        assert_eq!(
            s.on_line(b"SINCE 40", ms(t0, 1)),
            SenderEvent::SendAfter(40)
        );
        assert!(s.streaming() && !s.basic());
        assert_eq!(s.acked(), 40);
    }

    #[test]
    fn a_refused_handshake_closes_the_link_and_the_reason_shows_no_nonce() {
        let t0 = Instant::now();
        let mut s = Sender::open(t0, liveness(), opening(None, 0, 1), &mut Vec::new());
        assert_eq!(
            s.on_line(format!("? PEER A {N1}").as_bytes(), t0),
            SenderEvent::Close(Closed::Refused("? PEER A ...".into()))
        );
        let mut s = opened(t0, liveness(), 0, 1, &mut Vec::new());
        assert_eq!(
            s.on_line(b"? PROOF 0123", t0),
            SenderEvent::Close(Closed::Refused("? PROOF ...".into()))
        );
    }

    #[test]
    fn a_neighbour_that_never_challenges_is_closed_and_gets_nothing() {
        let t0 = Instant::now();
        let mut s = Sender::open(t0, liveness(), opening(None, 0, 1), &mut Vec::new());
        assert_eq!(s.on_tick(ms(t0, 100)), SenderEvent::None);
        assert!(matches!(
            s.on_tick(ms(t0, 250)),
            SenderEvent::Close(Closed::Silent(_))
        ));
        assert!(!s.streaming());
    }

    /// Runs the handshake: a sender with `dialer_secret` against an
    /// acceptor with `acceptor_secret`. Returns what the sender did with
    /// the challenge, and whether the acceptor took the proof.
    fn handshake(dialer_secret: Option<&str>, acceptor_secret: Option<&str>) -> (bool, bool) {
        let t0 = Instant::now();
        let mut wire = Vec::new();
        let mut s = Sender::open(t0, liveness(), opening(dialer_secret, 0, 1), &mut wire);
        let peer = lines(&wire).remove(0);
        let Parsed::Command(Command::Peer(p)) = parse_line(&peer) else {
            panic!("not PEER");
        };
        let mut back = Vec::new();
        let c = Challenge::new(acceptor_secret, "B", p.name, p.nonce, N2.into(), &mut back);
        match s.on_line(&lines(&back)[0], t0) {
            SenderEvent::Write(bytes) => {
                let proof_line = lines(&bytes).remove(0);
                let Parsed::Command(Command::Proof(proof)) = parse_line(&proof_line) else {
                    panic!("not PROOF");
                };
                (true, c.proved(acceptor_secret, "B", proof))
            }
            SenderEvent::Close(Closed::Refused(_)) => (false, false),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_handshake_passes_with_the_same_secret_and_fails_with_another() {
        assert_eq!(handshake(Some("k"), Some("k")), (true, true));
        assert_eq!(handshake(None, None), (true, true));
        // The dialler checks the acceptor first: a wrong acceptor never
        // gets a proof.
        assert_eq!(handshake(Some("k"), Some("other")), (false, false));
        assert_eq!(handshake(Some("k"), None), (false, false));
        assert_eq!(handshake(None, Some("k")), (false, false));
    }

    #[test]
    fn a_recorded_proof_is_refused_on_a_new_link() {
        let secret = Some("k");
        let old = Exchange {
            dialer: "A",
            acceptor: "B",
            dialer_nonce: N1,
            acceptor_nonce: N2,
        };
        let recorded = proof(secret, Side::Dialer, &old);
        let other_nonce = "0123456789abcdef0123456789abcdef";
        // The acceptor draws a fresh nonce for the replayed PEER line.
        let c = Challenge::new(secret, "B", "A", N1, other_nonce.into(), &mut Vec::new());
        assert!(!c.proved(secret, "B", &recorded));
        // Nor does the acceptor's own proof stand for the dialler's.
        let c = Challenge::new(secret, "B", "A", N1, N2.into(), &mut Vec::new());
        assert!(!c.proved(secret, "B", &proof(secret, Side::Acceptor, &old)));
        assert!(c.proved(secret, "B", &recorded));
    }

    #[test]
    fn proofs_are_lowercase_hex_hmac_sha256_of_the_documented_message() {
        let x = Exchange {
            dialer: "A",
            acceptor: "B",
            dialer_nonce: N1,
            acceptor_nonce: N2,
        };
        // HMAC-SHA256 under "k" of "herd-link dialer A B <N1> <N2>",
        // computed independently (Python's hmac module).
        let want = "c81ee23f800890f6374db1953e79ad0331f2fdd3154de62e79c27558484d67b5";
        assert_eq!(proof(Some("k"), Side::Dialer, &x), want);
        assert!(proof_ok(Some("k"), Side::Dialer, &x, want));
        for bad in [&want.to_uppercase(), &want[..62], "", "-", "zz"] {
            assert!(!proof_ok(Some("k"), Side::Dialer, &x, bad), "{bad}");
        }
        assert_eq!(proof(None, Side::Dialer, &x), "-");
        assert!(proof_ok(None, Side::Dialer, &x, "-"));
        assert!(!proof_ok(None, Side::Dialer, &x, want));
    }

    #[test]
    fn nonces_have_one_form_and_handshake_lines_are_logged_without_them() {
        assert!(valid_nonce(N1) && valid_nonce(&nonce_hex(&[0xab; NONCE_BYTES])));
        for bad in [
            "",
            "-",
            &N1[1..],
            &N1.to_uppercase().replace('0', "A"),
            "g".repeat(32).as_str(),
        ] {
            assert!(!valid_nonce(bad), "{bad}");
        }
        for (line, shown) in [
            (format!("PEER A {N1}"), Some("PEER A ...")),
            (format!("CHALLENGE {N2} abc"), Some("CHALLENGE ...")),
            ("PROOF abc".to_owned(), Some("PROOF ...")),
            (format!("? PEER A {N1}"), Some("? PEER A ...")),
            ("? PROOF abc".to_owned(), Some("? PROOF ...")),
            ("IAMAT a +1+2 3".to_owned(), None),
        ] {
            assert_eq!(redacted(line.as_bytes()).as_deref(), shown, "{line}");
        }
    }

    #[test]
    fn a_neighbour_that_refuses_stream_gets_plain_at_lines_from_the_start() {
        let t0 = Instant::now();
        let mut s = opened(t0, liveness(), 0, 1, &mut Vec::new());
        assert_eq!(s.on_line(b"? STREAM 0 1", t0), SenderEvent::SendAfter(0));
        assert!(s.basic());
        let mut out = Vec::new();
        s.end_batch(10, t0, &mut out);
        s.keepalive(10, ms(t0, 1000), &mut out);
        assert!(out.is_empty(), "no SEQ lines to a basic server");
        // A basic server says nothing back; that is no reason to close.
        assert_eq!(s.on_tick(ms(t0, 10_000)), SenderEvent::None);
    }

    #[test]
    fn a_neighbour_that_never_answers_stream_is_taken_for_a_basic_one() {
        let t0 = Instant::now();
        let mut s = opened(t0, liveness(), 0, 1, &mut Vec::new());
        assert_eq!(s.on_tick(ms(t0, 100)), SenderEvent::None);
        assert_eq!(s.on_tick(ms(t0, 250)), SenderEvent::SendAfter(0));
        assert!(s.basic());
    }

    #[test]
    fn an_idle_herd_link_sends_seq_as_keepalive_once_per_heartbeat() {
        let t0 = Instant::now();
        let mut s = opened(t0, liveness(), 0, 1, &mut Vec::new());
        s.on_line(b"SINCE 0", t0);
        let mut out = Vec::new();
        s.end_batch(5, ms(t0, 10), &mut out);
        assert_eq!(out, b"SEQ 5\n");
        out.clear();
        s.keepalive(5, ms(t0, 50), &mut out);
        assert!(out.is_empty());
        s.keepalive(5, ms(t0, 110), &mut out);
        assert_eq!(out, b"SEQ 5\n");
        out.clear();
        s.keepalive(5, ms(t0, 150), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_silent_herd_link_is_closed_by_either_end_within_three_heartbeats() {
        let t0 = Instant::now();
        let live = liveness();
        let mut s = opened(t0, live, 0, 1, &mut Vec::new());
        s.on_line(b"SINCE 0", t0);
        let mut r = Receiver::new(t0, live, None);
        r.on_line(
            parse_line(b"STREAM 0 1"),
            b"STREAM 0 1",
            t0,
            |_, _| 0,
            &mut Vec::new(),
        );
        // Ticks every quarter heartbeat: the first tick at or past
        // dead_after closes, and that is before three heartbeats.
        let mut closed_at = None;
        let mut t = 0;
        while closed_at.is_none() && t <= 1000 {
            t += live.tick().as_millis() as u64;
            if let SenderEvent::Close(Closed::Silent(_)) = s.on_tick(ms(t0, t)) {
                closed_at = Some(t);
            }
        }
        let closed_at = closed_at.expect("sender closes");
        assert!(closed_at < 3 * 100, "{closed_at}");
        assert!(r.on_tick(ms(t0, closed_at), &mut Vec::new()).is_err());
        // Hearing anything keeps a link alive.
        let mut s = opened(t0, live, 0, 1, &mut Vec::new());
        s.on_line(b"SINCE 0", t0);
        for t in (0..1000).step_by(50) {
            s.on_line(b"ACK 0", ms(t0, t));
            assert_eq!(s.on_tick(ms(t0, t + 25)), SenderEvent::None);
        }
    }

    #[test]
    fn sender_and_receiver_agree_on_the_stream_and_the_mark() {
        let t0 = Instant::now();
        let live = liveness();
        let mut to_receiver = Vec::new();
        let mut s = opened(t0, live, 3, 77, &mut to_receiver);
        let mut r = Receiver::new(t0, live, None);
        let mut to_sender = Vec::new();
        let mut records = 0;
        let mut feed = |r: &mut Receiver, bytes: &mut Vec<u8>, back: &mut Vec<u8>| {
            for line in lines(bytes) {
                if let ReceiverEvent::Record(_) =
                    r.on_line(parse_line(&line), &line, t0, |_, _| 12, back)
                {
                    records += 1;
                }
            }
            bytes.clear();
        };
        // The handshake is the shell's business; the session starts at
        // STREAM.
        let stream_at = memchr_str(&to_receiver, "STREAM");
        to_receiver.drain(..stream_at);
        feed(&mut r, &mut to_receiver, &mut to_sender);
        assert_eq!(to_sender, b"SINCE 12\n");
        assert_eq!(s.on_line(b"SINCE 12", t0), SenderEvent::SendAfter(12));
        to_receiver.extend_from_slice(b"AT A +0.000000001 c +1+2 3\nAT A +0.000000001 d +1+2 3\n");
        s.end_batch(14, t0, &mut to_receiver);
        feed(&mut r, &mut to_receiver, &mut Vec::new());
        assert_eq!(r.mark(), Some((3, 77, 14)));
        assert!(!r.caught_up(), "the sender held 20 when it opened");
        s.end_batch(20, t0, &mut to_receiver);
        feed(&mut r, &mut to_receiver, &mut Vec::new());
        assert!(r.caught_up());
        assert_eq!(r.mark(), Some((3, 77, 20)));
        let mut ack = Vec::new();
        r.on_tick(ms(t0, 100), &mut ack).unwrap();
        assert_eq!(ack, b"ACK 20\n");
        s.on_line(b"ACK 20", ms(t0, 100));
        assert_eq!(s.acked(), 20);
        assert_eq!(records, 2);
    }

    #[test]
    fn a_receiver_is_caught_up_when_it_holds_what_the_sender_held_at_the_opening() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut r = Receiver::new(t0, liveness(), None);
        assert!(!r.caught_up(), "nothing heard yet");
        r.on_line(
            parse_line(b"STREAM 0 5 0"),
            b"STREAM 0 5 0",
            t0,
            |_, _| 0,
            &mut out,
        );
        assert!(r.caught_up(), "an empty stream is caught up at once");
        let mut r = Receiver::new(t0, liveness(), None);
        r.on_line(
            parse_line(b"STREAM 0 5 30"),
            b"STREAM 0 5 30",
            t0,
            |_, _| 30,
            &mut out,
        );
        assert!(r.caught_up(), "it already held all of it");
        let mut r = Receiver::new(t0, liveness(), None);
        r.on_line(
            parse_line(b"STREAM 0 5 30"),
            b"STREAM 0 5 30",
            t0,
            |_, _| 10,
            &mut out,
        );
        r.on_line(parse_line(b"SEQ 29"), b"SEQ 29", t0, |_, _| 0, &mut out);
        assert!(!r.caught_up());
        r.on_line(parse_line(b"SEQ 31"), b"SEQ 31", t0, |_, _| 0, &mut out);
        assert!(r.caught_up());
        // A sender that does not give its head: caught up at its first SEQ.
        let mut r = Receiver::new(t0, liveness(), None);
        r.on_line(
            parse_line(b"STREAM 0 5"),
            b"STREAM 0 5",
            t0,
            |_, _| 0,
            &mut out,
        );
        assert!(!r.caught_up());
        r.on_line(parse_line(b"SEQ 3"), b"SEQ 3", t0, |_, _| 0, &mut out);
        assert!(r.caught_up());
        // A refused record keeps it from ever counting as caught up.
        let mut r = Receiver::new(t0, liveness(), None);
        r.on_line(
            parse_line(b"STREAM 0 5 30"),
            b"STREAM 0 5 30",
            t0,
            |_, _| 0,
            &mut out,
        );
        r.refuse();
        r.on_line(parse_line(b"SEQ 40"), b"SEQ 40", t0, |_, _| 0, &mut out);
        assert!(!r.caught_up());
    }

    #[test]
    fn the_mark_never_moves_past_a_refused_record() {
        let t0 = Instant::now();
        let mut r = Receiver::new(t0, liveness(), None);
        let mut out = Vec::new();
        r.on_line(
            parse_line(b"STREAM 0 5"),
            b"STREAM 0 5",
            t0,
            |_, _| 0,
            &mut out,
        );
        r.on_line(parse_line(b"SEQ 10"), b"SEQ 10", t0, |_, _| 0, &mut out);
        assert_eq!(
            r.on_line(
                parse_line(b"AT broken"),
                b"AT broken",
                t0,
                |_, _| 0,
                &mut out
            ),
            ReceiverEvent::Invalid
        );
        r.on_line(parse_line(b"SEQ 20"), b"SEQ 20", t0, |_, _| 0, &mut out);
        assert_eq!(r.mark(), Some((0, 5, 10)));
        let mut r = Receiver::new(t0, liveness(), None);
        r.on_line(
            parse_line(b"STREAM 0 5"),
            b"STREAM 0 5",
            t0,
            |_, _| 0,
            &mut out,
        );
        r.refuse();
        r.on_line(parse_line(b"SEQ 20"), b"SEQ 20", t0, |_, _| 0, &mut out);
        assert_eq!(r.mark(), Some((0, 5, 0)));
    }

    #[test]
    fn a_basic_sender_gets_no_keepalives_and_is_never_closed_for_silence() {
        let t0 = Instant::now();
        let mut r = Receiver::new(t0, liveness(), None);
        let mut out = Vec::new();
        assert!(matches!(
            r.on_line(
                parse_line(b"AT B +0.000000001 c +1+2 3"),
                b"AT B +0.000000001 c +1+2 3",
                t0,
                |_, _| 0,
                &mut out
            ),
            ReceiverEvent::Record(_)
        ));
        assert!(r.on_tick(ms(t0, 60_000), &mut out).is_ok());
        assert!(out.is_empty());
        assert_eq!(r.mark(), None);
        assert!(r.caught_up(), "a basic sender cannot say more");
    }

    fn memchr_str(bytes: &[u8], word: &str) -> usize {
        bytes
            .windows(word.len())
            .position(|w| w == word.as_bytes())
            .expect("word present")
    }

    /// A sender with `sender_run` past the handshake and a receiver with
    /// `receiver_run` after STREAM: what the receiver answered, what the
    /// sender did with it, and the runs each then knows of the other.
    fn trees(
        sender_run: Option<u64>,
        receiver_run: Option<u64>,
    ) -> (String, Vec<SenderEvent>, Option<u64>, Option<u64>) {
        let (answer, events, s, r) = exchange(sender_run, None, receiver_run, None, (0, 0));
        (answer, events, s.neighbour_run(), r.sender_run())
    }

    /// The TREE exchange of a sender and a receiver, each with its run and
    /// graph, the receiver with what it heard of the sender: the
    /// receiver's answer to STREAM, the sender's events, and both sessions.
    fn exchange(
        sender_run: Option<u64>,
        sender_topology: Option<u64>,
        receiver_run: Option<u64>,
        receiver_topology: Option<u64>,
        heard: (u64, u64),
    ) -> (String, Vec<SenderEvent>, Sender, Receiver) {
        let t0 = Instant::now();
        let mut o = opening(None, 0, 1);
        o.run = sender_run;
        o.topology = sender_topology;
        let mut s = Sender::open(t0, liveness(), o, &mut Vec::new());
        s.on_line(format!("CHALLENGE {N2} -").as_bytes(), t0);
        let mut r = Receiver::new(t0, liveness(), receiver_run).with_tree(receiver_topology, heard);
        let mut answer = Vec::new();
        let stream = b"STREAM 0 1 0";
        r.on_line(parse_line(stream), stream, t0, |_, _| 0, &mut answer);
        let events: Vec<SenderEvent> = lines(&answer).iter().map(|l| s.on_line(l, t0)).collect();
        for event in &events {
            if let SenderEvent::Write(bytes) = event {
                for line in lines(bytes) {
                    let event = r.on_line(parse_line(&line), &line, t0, |_, _| 0, &mut Vec::new());
                    assert_eq!(event, ReceiverEvent::None, "TREE is no record and no error");
                }
            }
        }
        (String::from_utf8(answer).unwrap(), events, s, r)
    }

    #[test]
    fn both_ends_say_their_runs_when_both_speak_tree() {
        let (answer, events, theirs, senders) = trees(Some(5), Some(9));
        assert_eq!(answer, "TREE 9 - 0 0\nSINCE 0\n");
        assert_eq!(
            events,
            [
                SenderEvent::Write(b"TREE 5 -\n".to_vec()),
                SenderEvent::SendAfter(0)
            ]
        );
        assert_eq!((theirs, senders), (Some(9), Some(5)));
    }

    #[test]
    fn an_end_that_speaks_only_the_earlier_rules_hears_and_says_no_tree() {
        // An earlier receiver: no TREE, and the sender says none either.
        let (answer, events, theirs, senders) = trees(Some(5), None);
        assert_eq!(answer, "SINCE 0\n");
        assert_eq!(events, [SenderEvent::SendAfter(0)]);
        assert_eq!((theirs, senders), (None, None));
        // An earlier sender ignores the receiver's TREE and says none.
        let (answer, events, theirs, senders) = trees(None, Some(9));
        assert_eq!(answer, "TREE 9 - 0 0\nSINCE 0\n");
        assert_eq!(events, [SenderEvent::None, SenderEvent::SendAfter(0)]);
        assert_eq!((theirs, senders), (None, None));
    }

    #[test]
    fn a_link_is_a_tree_link_when_both_ends_say_the_same_graph() {
        let (answer, _, s, r) = exchange(Some(5), Some(0xab), Some(9), Some(0xab), (5, 70));
        assert_eq!(answer, "TREE 9 00000000000000ab 5 70\nSINCE 0\n");
        assert!(s.tree_link() && r.tree_link());
        assert_eq!(s.announce_after(), Some(70), "it heard this run up to 70");
        let (_, _, s, r) = exchange(Some(5), Some(0xab), Some(9), Some(0xab), (4, 70));
        assert_eq!(s.announce_after(), Some(0), "it heard another run");
        assert!(s.tree_link() && r.tree_link());
        for (a, b) in [(Some(0xab), Some(0xcd)), (Some(0xab), None), (None, None)] {
            let (_, _, s, r) = exchange(Some(5), a, Some(9), b, (0, 0));
            assert!(!s.tree_link() && !r.tree_link(), "{a:?} {b:?}");
            assert_eq!(s.announce_after(), Some(0), "announced to all who say TREE");
        }
        let (_, _, s, _) = exchange(Some(5), Some(0xab), None, None, (0, 0));
        assert_eq!(s.announce_after(), None, "nothing to an earlier receiver");
    }

    #[test]
    fn a_sender_hears_graft_and_prune_only_from_a_receiver_that_said_tree() {
        let (_, _, mut s, _) = exchange(Some(5), Some(1), Some(9), Some(1), (0, 0));
        let t0 = Instant::now();
        assert_eq!(
            s.on_line(b"GRAFT Hands 1700000000", t0),
            SenderEvent::Graft {
                origin: "Hands".into(),
                second: 1_700_000_000
            }
        );
        assert_eq!(
            s.on_line(b"PRUNE Hands", t0),
            SenderEvent::Prune {
                origin: "Hands".into()
            }
        );
        assert_eq!(s.on_line(b"GRAFT Hands x", t0), SenderEvent::None);
        let (_, _, mut s, _) = exchange(Some(5), Some(1), None, None, (0, 0));
        assert_eq!(s.on_line(b"GRAFT Hands 1", t0), SenderEvent::None);
    }

    #[test]
    fn count_lines_parse_strictly() {
        assert_eq!(parse_count_line("ACK 5", "ACK"), Some(5));
        assert_eq!(parse_count_line("ACK +5", "ACK"), None);
        assert_eq!(parse_count_line("ACK 5 6", "ACK"), None);
        assert_eq!(parse_count_line("SEQ 5", "ACK"), None);
    }
}
