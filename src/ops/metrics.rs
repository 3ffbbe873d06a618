//! What a server counts, and how the admin endpoint reads it.
//!
//! Each shard writes its own [`ShardMetrics`] and nothing else does: the
//! hot-path counters are single-writer atomics (a relaxed load and store,
//! no locked instruction), read by the admin endpoint on another thread.
//! What is costly to keep in atomics (histograms, link positions, the
//! store's size) the shard publishes a few times a second into
//! [`ShardMetrics::published`]; the lock there is taken by the publisher
//! and by a scrape, never per command.
//!
//! Pure: no I/O, no executor. A [`ServerView`] is every shard's figures
//! plus the server's own; [`status_json`] turns it into the JSON of
//! `/status`, and `prometheus.rs`, above this file, into the text of
//! `/metrics`.

use crate::ops::tree_metrics::{self, LinkTree};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A counter with one writer: the shard that owns it. Readers on other
/// threads see a recent value; increments are never lost because no one
/// else writes.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning shard may call this.
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Only the owning shard may call this.
    pub(crate) fn add(&self, n: u64) {
        // Load and store, not fetch_add: one writer, so no read-modify-write
        // race, and no locked instruction on the hot path.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Client commands by kind and result.
#[derive(Debug, Default)]
pub(crate) struct Commands {
    /// IAMATs answered with their AT line.
    pub iamat_ok: Counter,
    /// IAMATs answered `?` (malformed, or a client time too far ahead).
    pub iamat_invalid: Counter,
    /// WHATSATs answered with a record and places.
    pub whatsat_ok: Counter,
    /// WHATSATs answered `?` (malformed, or no record for the client).
    pub whatsat_invalid: Counter,
    /// Other lines answered `?` (unknown commands, link lines on the client
    /// port, over-long lines).
    pub other_invalid: Counter,
}

/// Inputs turned away, by reason.
#[derive(Debug, Default)]
pub(crate) struct Refused {
    /// Lines over `max_line_bytes` (clients) or the link limit (links).
    pub line_too_long: Counter,
    /// IAMATs whose client time is too far ahead of this server's clock.
    pub future_time: Counter,
    /// Connections closed because the shard was at `max_connections_per_shard`.
    pub connection_limit: Counter,
    /// Connections closed by `max_connections_per_ip`.
    pub per_ip: Counter,
    /// Link handshakes refused (not a neighbour, bad proof, bad certificate).
    pub handshake: Counter,
    /// Records from links dropped: client time too far ahead.
    pub link_future_record: Counter,
    /// Lines on links that are not part of the link protocol.
    pub link_invalid_line: Counter,
    /// IAMATs and WHATSATs of a connection that has not proved who it is
    /// (or whose token expired), with `clients.auth: "token"`.
    pub unauthenticated: Counter,
    /// IAMATs for, and WHATSATs of (`read: "own"`), another client than
    /// the one the connection proved it is.
    pub other_client: Counter,
    /// TLS handshakes of clients that failed (plain bytes, no common
    /// version, a client that does not trust the certificate).
    pub client_tls_handshake: Counter,
}

/// Reasons in [`Refused`], as the `reason` label.
pub(crate) const REFUSED_REASONS: [&str; 10] = [
    "line_too_long",
    "future_time",
    "connection_limit",
    "per_ip",
    "handshake",
    "link_future_record",
    "link_invalid_line",
    "unauthenticated",
    "other_client",
    "client_tls_handshake",
];

impl Refused {
    fn values(&self) -> [u64; 10] {
        [
            self.line_too_long.get(),
            self.future_time.get(),
            self.connection_limit.get(),
            self.per_ip.get(),
            self.handshake.get(),
            self.link_future_record.get(),
            self.link_invalid_line.get(),
            self.unauthenticated.get(),
            self.other_client.get(),
            self.client_tls_handshake.get(),
        ]
    }
}

/// `AUTH` lines by what became of them.
#[derive(Debug, Default)]
pub(crate) struct Auths {
    /// A good token: the connection speaks for its client until the expiry.
    pub ok: Counter,
    /// Not a good token for the client: malformed, forged, tampered, or
    /// signed by a key the server does not have.
    pub bad: Counter,
    /// A good token past its expiry.
    pub expired: Counter,
    /// Refused unchecked: too many failures from the address for the client.
    pub limited: Counter,
    /// A good token for another client than the connection already proved.
    pub other_client: Counter,
    /// `AUTH` on a server whose clients do not authenticate.
    pub off: Counter,
}

/// Results in [`Auths`], as the `result` label.
pub(crate) const AUTH_RESULTS: [&str; 6] =
    ["ok", "bad", "expired", "limited", "other_client", "off"];

impl Auths {
    fn values(&self) -> [u64; 6] {
        [
            self.ok.get(),
            self.bad.get(),
            self.expired.get(),
            self.limited.get(),
            self.other_client.get(),
            self.off.get(),
        ]
    }
}

/// Which phone app an HTTP request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpApp {
    /// OwnTracks (`/owntracks`).
    OwnTracks,
    /// Traccar Client, the OsmAnd protocol (`/osmand`).
    OsmAnd,
    /// Neither: another path, or a request closed before it was whole.
    Unknown,
}

/// `app` label values, by [`HttpApp`].
pub(crate) const HTTP_APPS: [&str; 3] = ["owntracks", "osmand", "none"];

/// What became of an HTTP request of a phone app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpResult {
    /// A position stored (200).
    Stored,
    /// Taken, not stored: another message type, an empty body (200).
    Ignored,
    /// Malformed, out of range, too far ahead (400).
    Invalid,
    /// No or a bad token (401).
    Unauthorized,
    /// Credentials for another client than the request names (403).
    Forbidden,
    /// A body over the bound (413).
    TooLarge,
    /// Another path or method (404, 405).
    NotFound,
    /// Not stored: the journal stopped (503).
    Unavailable,
    /// Closed: not whole within `http_request_timeout_ms`.
    TimedOut,
}

/// `result` label values, by [`HttpResult`].
pub(crate) const HTTP_RESULTS: [&str; 9] = [
    "stored",
    "ignored",
    "invalid",
    "unauthorized",
    "forbidden",
    "too_large",
    "not_found",
    "unavailable",
    "timed_out",
];

/// HTTP requests of phone apps, by app and result.
#[derive(Debug, Default)]
pub(crate) struct HttpRequests {
    counts: [[Counter; 9]; 3],
}

impl HttpRequests {
    /// Counts one request.
    pub(crate) fn count(&self, app: HttpApp, result: HttpResult) {
        self.counts[app as usize][result as usize].inc();
    }

    fn values(&self) -> [[u64; 9]; 3] {
        self.counts
            .each_ref()
            .map(|row| row.each_ref().map(Counter::get))
    }
}

/// Everything one shard counts.
#[derive(Debug)]
pub(crate) struct ShardMetrics {
    /// The shard's id.
    pub shard: usize,
    /// Client commands.
    pub commands: Commands,
    /// Inputs turned away.
    pub refused: Refused,
    /// `AUTH` lines.
    pub auths: Auths,
    /// HTTP requests of phone apps.
    pub http: HttpRequests,
    /// Records this shard stored (newer than what it held).
    pub stored: Counter,
    /// Records this shard dropped as not newer than what it held.
    pub stale: Counter,
    /// Idle client connections that gave back their read and reply
    /// buffers.
    pub buffers_released: Counter,
    /// What the shard publishes a few times a second.
    pub published: Mutex<Published>,
}

impl ShardMetrics {
    /// Zeroed metrics of shard `shard`.
    pub(crate) fn new(shard: usize) -> ShardMetrics {
        ShardMetrics {
            shard,
            commands: Commands::default(),
            refused: Refused::default(),
            auths: Auths::default(),
            http: HttpRequests::default(),
            stored: Counter::default(),
            stale: Counter::default(),
            buffers_released: Counter::default(),
            published: Mutex::new(Published::default()),
        }
    }

    /// A copy of the last published figures.
    pub(crate) fn published(&self) -> Published {
        self.published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s at two significant
/// figures (1 %): small enough to copy a few times a second.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds")
}

/// One outgoing link of one shard, as published.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LinkView {
    /// The neighbour's name.
    pub neighbour: String,
    /// Its peer address.
    pub addr: String,
    /// Whether the link is up.
    pub up: bool,
    /// Whether, since it opened, the link has sent everything the store held.
    pub caught_up: bool,
    /// Updates stored but not yet sent on this link.
    pub behind_records: u64,
    /// How long since this link last had nothing left to send (0 when it
    /// has nothing to send now).
    pub behind_seconds: f64,
    /// Records sent on this link since the server started.
    pub sent: u64,
    /// Its flood-tree figures.
    pub tree: LinkTree,
}

/// Places figures of one shard since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlacesFigures {
    /// Lookups asked of the Places source (one per WHATSAT with a record).
    pub lookups: u64,
    /// Lookups answered from the cache.
    pub cache_hits: u64,
    /// Lookups that joined an identical one already in flight.
    pub coalesced: u64,
    /// HTTP requests sent upstream (retries included).
    pub upstream_requests: u64,
    /// Upstream lookups that ended in an error answer.
    pub upstream_errors: u64,
}

/// One shard's journal (`persistence`), as its writer counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct JournalFigures {
    /// Records this shard took from the journal at start.
    pub replayed: u64,
    /// The length of the file being appended to, bytes.
    pub file_bytes: u64,
    /// Record updates stored but not yet written to the file.
    pub behind_records: u64,
    /// Writes (each a batch of records: group commit).
    pub writes: u64,
    /// `fdatasync` calls, and synchronous writes (`always`).
    pub syncs: u64,
    /// Seconds spent in them.
    pub sync_seconds: f64,
    /// Files rewritten to the live records.
    pub compactions: u64,
    /// Failed opens, writes, syncs and compactions.
    pub errors: u64,
}

/// What a shard publishes a few times a second.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// Clients this shard holds records for.
    pub records: u64,
    /// Open client connections.
    pub client_connections: u64,
    /// Open connections on the peer port.
    pub peer_connections: u64,
    /// Records evicted from the full store.
    pub evicted: u64,
    /// New records the full store refused as older than all it held.
    pub refused_older: u64,
    /// Records expired by `record_ttl_ms`.
    pub expired: u64,
    /// The shard's outgoing links.
    pub links: Vec<LinkView>,
    /// By neighbour: records from it this shard already held (or held
    /// newer), since it started.
    pub duplicates: Vec<(String, u64)>,
    /// Places figures.
    pub places: PlacesFigures,
    /// The journal's figures, when the server keeps one.
    pub journal: Option<JournalFigures>,
    /// Command latency since start: from the read that brought a command to
    /// the write of its reply, microseconds.
    pub latency: Histogram<u64>,
    /// The same over the last publishing interval only.
    pub latency_recent: Histogram<u64>,
    /// Upstream Places call latency since start, microseconds.
    pub upstream_latency: Histogram<u64>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            records: 0,
            client_connections: 0,
            peer_connections: 0,
            evicted: 0,
            refused_older: 0,
            expired: 0,
            links: Vec::new(),
            duplicates: Vec::new(),
            places: PlacesFigures::default(),
            journal: None,
            latency: latency_histogram(),
            latency_recent: latency_histogram(),
            upstream_latency: latency_histogram(),
        }
    }
}

/// One incoming link's state, for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IncomingView {
    /// The neighbour that dialled.
    pub neighbour: String,
    /// Whether it has sent everything it held when the link opened.
    pub caught_up: bool,
}

/// The server's open incoming links, shared by its shards: a link is
/// counted in when its handshake completes and out when it ends. The lock is
/// taken at those moments and at a scrape, never per record.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    links: Mutex<std::collections::HashMap<u64, IncomingView>>,
    next: AtomicU64,
}

impl Inbound {
    fn links(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, IncomingView>> {
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts in a link from `neighbour`, not caught up yet; its place.
    pub(crate) fn opened(&self, neighbour: &str) -> u64 {
        let place = self.next.fetch_add(1, Ordering::Relaxed);
        self.links().insert(
            place,
            IncomingView {
                neighbour: neighbour.to_owned(),
                caught_up: false,
            },
        );
        place
    }

    /// The link at `place` has received all its neighbour held when it opened.
    pub(crate) fn caught_up(&self, place: u64) {
        if let Some(link) = self.links().get_mut(&place) {
            link.caught_up = true;
        }
    }

    /// The link at `place` ended.
    pub(crate) fn closed(&self, place: u64) {
        self.links().remove(&place);
    }

    /// Every open incoming link.
    pub(crate) fn views(&self) -> Vec<IncomingView> {
        self.links().values().cloned().collect()
    }
}

/// Everything the admin endpoint shows of one server at one moment.
#[derive(Debug, Clone)]
pub(crate) struct ServerView {
    /// The server's name.
    pub server: String,
    /// Its client address.
    pub listen: String,
    /// Its peer address.
    pub peer_listen: String,
    /// Seconds since it started.
    pub uptime_seconds: f64,
    /// Its neighbours, in config order.
    pub neighbours: Vec<String>,
    /// Each shard's counters and published figures.
    pub shards: Vec<ShardFigures>,
    /// Open incoming links.
    pub incoming: Vec<IncomingView>,
    /// Bytes of damaged journal tail cut off at start.
    pub journal_cut_bytes: u64,
}

/// One shard's figures, copied out of its [`ShardMetrics`].
#[derive(Debug, Clone)]
pub(crate) struct ShardFigures {
    /// The shard's id.
    pub shard: usize,
    /// IAMAT ok, IAMAT invalid, WHATSAT ok, WHATSAT invalid, other invalid.
    pub commands: [u64; 5],
    /// By `REFUSED_REASONS`.
    pub refused: [u64; 10],
    /// By `AUTH_RESULTS`.
    pub auths: [u64; 6],
    /// By `HTTP_APPS`, then `HTTP_RESULTS`.
    pub http: [[u64; 9]; 3],
    /// Records stored, and dropped as stale.
    pub stored: u64,
    /// Records dropped as not newer.
    pub stale: u64,
    /// Idle client connections that gave back their buffers.
    pub buffers_released: u64,
    /// The published part.
    pub published: Published,
}

impl ShardFigures {
    /// Copies a shard's figures.
    pub(crate) fn of(m: &ShardMetrics) -> ShardFigures {
        let c = &m.commands;
        ShardFigures {
            shard: m.shard,
            commands: [
                c.iamat_ok.get(),
                c.iamat_invalid.get(),
                c.whatsat_ok.get(),
                c.whatsat_invalid.get(),
                c.other_invalid.get(),
            ],
            refused: m.refused.values(),
            auths: m.auths.values(),
            http: m.http.values(),
            stored: m.stored.get(),
            stale: m.stale.get(),
            buffers_released: m.buffers_released.get(),
            published: m.published(),
        }
    }
}

impl ServerView {
    /// Every shard's outgoing link to `neighbour`.
    pub(crate) fn links_to(&self, neighbour: &str) -> Vec<&LinkView> {
        links(self)
            .map(|(_, l)| l)
            .filter(|l| l.neighbour == neighbour)
            .collect()
    }

    /// The open incoming links from `neighbour`.
    pub(crate) fn links_from(&self, neighbour: &str) -> Vec<&IncomingView> {
        self.incoming
            .iter()
            .filter(|i| i.neighbour == neighbour)
            .collect()
    }
}

/// Why a server is not ready; empty when it is.
pub(crate) fn not_ready(view: &ServerView) -> Vec<String> {
    let mut why = Vec::new();
    for neighbour in &view.neighbours {
        let links = view.links_to(neighbour);
        let down = links.iter().filter(|l| !l.up).count();
        if links.is_empty() {
            why.push(format!("link to {neighbour} not started"));
        } else if down > 0 {
            why.push(format!(
                "link to {neighbour} is down ({down} of {} shards)",
                links.len()
            ));
        } else if links.iter().any(|l| !l.caught_up) {
            why.push(format!("link to {neighbour} is still catching up"));
        }
        let incoming = view.links_from(neighbour);
        if incoming.is_empty() {
            why.push(format!("no link from {neighbour}"));
        } else if incoming.iter().any(|i| !i.caught_up) {
            why.push(format!("catch-up from {neighbour} not done"));
        }
    }
    why
}

/// Records from `neighbour` the shards already held, all shards.
pub(crate) fn duplicates(view: &ServerView, neighbour: &str) -> u64 {
    view.shards
        .iter()
        .flat_map(|s| &s.published.duplicates)
        .filter(|(n, _)| n == neighbour)
        .map(|(_, d)| d)
        .sum()
}

/// The sum over shards of one figure.
pub(crate) fn sum(view: &ServerView, f: impl Fn(&ShardFigures) -> u64) -> u64 {
    view.shards.iter().map(f).sum()
}

/// All shards' histograms of one kind, added up.
pub(crate) fn merged(
    view: &ServerView,
    pick: impl Fn(&Published) -> &Histogram<u64>,
) -> Histogram<u64> {
    let mut all = latency_histogram();
    for s in &view.shards {
        // Same bounds everywhere: adding cannot fail; a failure would only
        // lose that shard's share of a picture.
        let _ = all.add(pick(&s.published));
    }
    all
}

/// Each shard's journal figures, with the shard id; empty without a journal.
pub(crate) fn journals(view: &ServerView) -> Vec<(usize, JournalFigures)> {
    view.shards
        .iter()
        .filter_map(|s| Some((s.shard, s.published.journal?)))
        .collect()
}

/// Every shard's links, with the shard id.
pub(crate) fn links(view: &ServerView) -> impl Iterator<Item = (usize, &LinkView)> {
    view.shards
        .iter()
        .flat_map(|s| s.published.links.iter().map(move |l| (s.shard, l)))
}

/// Quantiles of a histogram, in seconds.
fn quantiles(h: &Histogram<u64>) -> Value {
    let at = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1e6
        }
    };
    json!({
        "count": h.len(),
        "p50": at(0.5),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": if h.is_empty() { 0.0 } else { h.max() as f64 / 1e6 },
    })
}

/// The JSON of `/status`.
pub(crate) fn status_json(view: &ServerView, version: &str) -> Value {
    let why = not_ready(view);
    let links = outgoing_json(view);
    let incoming = incoming_json(view);
    let c = |i: usize| sum(view, |s| s.commands[i]);
    let refused: serde_json::Map<String, Value> = REFUSED_REASONS
        .iter()
        .enumerate()
        .map(|(i, reason)| ((*reason).to_owned(), json!(sum(view, |s| s.refused[i]))))
        .collect();
    let auths: serde_json::Map<String, Value> = AUTH_RESULTS
        .iter()
        .enumerate()
        .map(|(i, result)| ((*result).to_owned(), json!(sum(view, |s| s.auths[i]))))
        .collect();
    let places = |f: fn(&PlacesFigures) -> u64| sum(view, |s| f(&s.published.places));
    json!({
        "server": view.server,
        "version": version,
        "uptime_seconds": view.uptime_seconds,
        "listen": view.listen,
        "peer_listen": view.peer_listen,
        "shards": view.shards.len(),
        "ready": why.is_empty(),
        "not_ready": why,
        "records": sum(view, |s| s.published.records),
        "connections": {
            "client": sum(view, |s| s.published.client_connections),
            "peer": sum(view, |s| s.published.peer_connections),
        },
        "commands": {
            "IAMAT": {"ok": c(0), "invalid": c(1)},
            "WHATSAT": {"ok": c(2), "invalid": c(3)},
            "other": {"invalid": c(4)},
        },
        "latency_seconds": quantiles(&merged(view, |p| &p.latency)),
        "latency_recent_seconds": quantiles(&merged(view, |p| &p.latency_recent)),
        "links": links,
        "incoming": incoming,
        "store": {
            "stored": sum(view, |s| s.stored),
            "stale": sum(view, |s| s.stale),
            "evicted": sum(view, |s| s.published.evicted),
            "refused_older": sum(view, |s| s.published.refused_older),
            "expired": sum(view, |s| s.published.expired),
        },
        "refused": refused,
        "client_auth": auths,
        "http": HTTP_APPS
            .iter()
            .enumerate()
            .map(|(a, app)| {
                let results: serde_json::Map<String, Value> = HTTP_RESULTS
                    .iter()
                    .enumerate()
                    .map(|(r, result)| ((*result).to_owned(), json!(sum(view, |s| s.http[a][r]))))
                    .collect();
                ((*app).to_owned(), Value::Object(results))
            })
            .collect::<serde_json::Map<String, Value>>(),
        "places": {
            "lookups": places(|p| p.lookups),
            "cache_hits": places(|p| p.cache_hits),
            "coalesced": places(|p| p.coalesced),
            "upstream_requests": places(|p| p.upstream_requests),
            "upstream_errors": places(|p| p.upstream_errors),
            "upstream_latency_seconds": quantiles(&merged(view, |p| &p.upstream_latency)),
        },
        "journal": journal_json(view),
    })
}

/// Per neighbour, this server's links to it on every shard: their state,
/// how far behind they are, and their flood trees.
fn outgoing_json(view: &ServerView) -> Vec<Value> {
    view.neighbours
        .iter()
        .map(|neighbour| {
            let of = view.links_to(neighbour);
            let up = of.iter().filter(|l| l.up).count();
            let state = if of.is_empty() || up == 0 {
                "down"
            } else if up == of.len() {
                "up"
            } else {
                "partial"
            };
            json!({
                "neighbour": neighbour,
                "addr": of.first().map(|l| l.addr.clone()).unwrap_or_default(),
                "state": state,
                "shards_up": up,
                "shards": of.len(),
                "caught_up": !of.is_empty() && of.iter().all(|l| l.caught_up),
                "behind_records": of.iter().map(|l| l.behind_records).sum::<u64>(),
                "behind_seconds": of.iter().map(|l| l.behind_seconds).fold(0.0, f64::max),
                "sent": of.iter().map(|l| l.sent).sum::<u64>(),
                "flood": tree_metrics::link_json(
                    &of.iter().map(|l| &l.tree).collect::<Vec<_>>(),
                    duplicates(view, neighbour),
                ),
            })
        })
        .collect()
}

/// Per neighbour, its open links to this server.
fn incoming_json(view: &ServerView) -> Vec<Value> {
    view.neighbours
        .iter()
        .map(|neighbour| {
            let of = view.links_from(neighbour);
            json!({
                "neighbour": neighbour,
                "links": of.len(),
                "caught_up": !of.is_empty() && of.iter().all(|i| i.caught_up),
            })
        })
        .collect()
}

/// The journal part of `/status`: `null` without a journal.
fn journal_json(view: &ServerView) -> Value {
    let shards = journals(view);
    if shards.is_empty() {
        return Value::Null;
    }
    let total = |f: fn(&JournalFigures) -> u64| shards.iter().map(|(_, j)| f(j)).sum::<u64>();
    json!({
        "replayed": total(|j| j.replayed),
        "cut_bytes": view.journal_cut_bytes,
        "bytes": total(|j| j.file_bytes),
        "behind_records": total(|j| j.behind_records),
        "writes": total(|j| j.writes),
        "syncs": total(|j| j.syncs),
        "sync_seconds": shards.iter().map(|(_, j)| j.sync_seconds).sum::<f64>(),
        "compactions": total(|j| j.compactions),
        "errors": total(|j| j.errors),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A link of shard 0 to `neighbour`; also used by `prometheus`' tests.
    pub(crate) fn link(neighbour: &str, up: bool, caught_up: bool) -> LinkView {
        LinkView {
            neighbour: neighbour.to_owned(),
            addr: "127.0.0.1:22139".to_owned(),
            up,
            caught_up,
            behind_records: if up { 0 } else { 7 },
            behind_seconds: if up { 0.0 } else { 2.5 },
            sent: 3,
            tree: LinkTree::default(),
        }
    }

    /// A one-shard server with a few counts; also used by `prometheus`' tests.
    pub(crate) fn view(links: Vec<LinkView>, incoming: Vec<IncomingView>) -> ServerView {
        let metrics = ShardMetrics::new(0);
        metrics.commands.iamat_ok.add(5);
        metrics.commands.whatsat_invalid.inc();
        metrics.refused.line_too_long.inc();
        {
            let mut p = metrics.published.lock().expect("not poisoned");
            p.records = 42;
            p.links = links;
            p.latency.saturating_record(20);
            p.latency.saturating_record(3_000);
        }
        ServerView {
            server: "Goloman".to_owned(),
            listen: "127.0.0.1:12138".to_owned(),
            peer_listen: "127.0.0.1:22138".to_owned(),
            uptime_seconds: 1.5,
            neighbours: vec!["Hands".to_owned()],
            shards: vec![ShardFigures::of(&metrics)],
            incoming,
            journal_cut_bytes: 0,
        }
    }

    /// A link from `neighbour`; also used by `prometheus`' tests.
    pub(crate) fn from(neighbour: &str, caught_up: bool) -> IncomingView {
        IncomingView {
            neighbour: neighbour.to_owned(),
            caught_up,
        }
    }

    #[test]
    fn inbound_links_are_counted_in_caught_up_and_out() {
        let inbound = Inbound::default();
        let a = inbound.opened("Hands");
        let b = inbound.opened("Hands");
        assert_ne!(a, b);
        inbound.caught_up(a);
        let mut views = inbound.views();
        views.sort_by_key(|v| v.caught_up);
        assert_eq!(views, [from("Hands", false), from("Hands", true)]);
        inbound.closed(b);
        assert_eq!(inbound.views(), [from("Hands", true)]);
    }

    #[test]
    fn a_counter_adds_up() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
    }

    #[test]
    fn ready_needs_every_link_up_and_caught_up_both_ways() {
        assert!(not_ready(&view(
            vec![link("Hands", true, true)],
            vec![from("Hands", true)]
        ))
        .is_empty());
        let down = not_ready(&view(
            vec![link("Hands", false, false)],
            vec![from("Hands", true)],
        ));
        assert_eq!(down, ["link to Hands is down (1 of 1 shards)"]);
        let behind = not_ready(&view(
            vec![link("Hands", true, false)],
            vec![from("Hands", true)],
        ));
        assert_eq!(behind, ["link to Hands is still catching up"]);
        let no_in = not_ready(&view(vec![link("Hands", true, true)], vec![]));
        assert_eq!(no_in, ["no link from Hands"]);
        let filling = not_ready(&view(
            vec![link("Hands", true, true)],
            vec![from("Hands", false)],
        ));
        assert_eq!(filling, ["catch-up from Hands not done"]);
    }

    #[test]
    fn status_json_summarises_links_per_neighbour() {
        let mut v = view(vec![link("Hands", true, true)], vec![from("Hands", true)]);
        let mut second = v.shards[0].clone();
        second.shard = 1;
        second.published.links = vec![link("Hands", false, false)];
        v.shards.push(second);
        let status = status_json(&v, "0.1.0");
        assert_eq!(status["records"], 84);
        assert_eq!(status["commands"]["IAMAT"]["ok"], 10);
        assert_eq!(status["links"][0]["state"], "partial");
        assert_eq!(status["links"][0]["shards_up"], 1);
        assert_eq!(status["links"][0]["behind_records"], 7);
        assert_eq!(status["links"][0]["behind_seconds"], 2.5);
        assert_eq!(status["ready"], false);
        assert_eq!(status["latency_seconds"]["count"], 4);
        assert!(status["latency_seconds"]["max"]
            .as_f64()
            .is_some_and(|m| m > 0.0029));
    }
}
