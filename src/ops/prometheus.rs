//! The text of `/metrics`: a server's [`ServerView`] in the Prometheus
//! text format 0.0.4, family by family, in a fixed order (the server, its
//! commands and inputs, the store, latencies, links and flood trees,
//! Places, the journal).
//!
//! Pure: no I/O, no executor. What is counted, and how shards publish it,
//! is `metrics.rs`, which does not name this file; the `/status` JSON is
//! made there too.

use crate::ops::metrics::{
    duplicates, journals, links, merged, not_ready, sum, JournalFigures, PlacesFigures, ServerView,
    AUTH_RESULTS, HTTP_APPS, HTTP_RESULTS, REFUSED_REASONS,
};
use crate::ops::tree_metrics::LinkTree;
use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Upper bounds of the histogram buckets in `/metrics`, in seconds.
const BUCKETS: [f64; 19] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text of `/metrics`: Prometheus text format 0.0.4.
pub(crate) fn render_prometheus(view: &ServerView, version: &str) -> String {
    let mut out = String::with_capacity(8 * 1024);
    server_lines(&mut out, view, version);
    command_lines(&mut out, view);
    http_lines(&mut out, view);
    connection_lines(&mut out, view);
    store_lines(&mut out, view);
    latency_lines(&mut out, view);
    link_lines(&mut out, view);
    neighbour_lines(&mut out, view);
    places_lines(&mut out, view);
    journal_lines(&mut out, view);
    out
}

/// The server itself: its build and name, uptime, and whether it is ready.
fn server_lines(out: &mut String, view: &ServerView, version: &str) {
    let server = label(&view.server);
    family(
        out,
        "herd_build_info",
        "gauge",
        "Always 1; the labels say which build and server.",
    );
    let _ = writeln!(
        out,
        "herd_build_info{{version=\"{}\",server=\"{server}\"}} 1",
        label(version)
    );
    family(
        out,
        "herd_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(out, "herd_uptime_seconds {}", view.uptime_seconds);
    family(
        out,
        "herd_ready",
        "gauge",
        "1 when the server is ready (see /readyz), else 0.",
    );
    let _ = writeln!(out, "herd_ready {}", u8::from(not_ready(view).is_empty()));
}

/// Client commands by kind and result, inputs turned away, and `AUTH` lines.
fn command_lines(out: &mut String, view: &ServerView) {
    family(
        out,
        "herd_commands_total",
        "counter",
        "Client commands by kind and result.",
    );
    let kinds = [
        ("IAMAT", "ok"),
        ("IAMAT", "invalid"),
        ("WHATSAT", "ok"),
        ("WHATSAT", "invalid"),
        ("other", "invalid"),
    ];
    for (i, (command, result)) in kinds.iter().enumerate() {
        let _ = writeln!(
            out,
            "herd_commands_total{{command=\"{command}\",result=\"{result}\"}} {}",
            sum(view, |s| s.commands[i])
        );
    }
    family(
        out,
        "herd_refused_total",
        "counter",
        "Inputs turned away, by reason.",
    );
    for (i, reason) in REFUSED_REASONS.iter().enumerate() {
        let _ = writeln!(
            out,
            "herd_refused_total{{reason=\"{reason}\"}} {}",
            sum(view, |s| s.refused[i])
        );
    }
    family(
        out,
        "herd_client_auth_total",
        "counter",
        "AUTH lines of clients, by result.",
    );
    for (i, result) in AUTH_RESULTS.iter().enumerate() {
        let _ = writeln!(
            out,
            "herd_client_auth_total{{result=\"{result}\"}} {}",
            sum(view, |s| s.auths[i])
        );
    }
}

/// HTTP requests of phone apps, by app and result.
fn http_lines(out: &mut String, view: &ServerView) {
    family(
        out,
        "herd_http_requests_total",
        "counter",
        "HTTP requests of phone apps (OwnTracks, Traccar Client), by app and result.",
    );
    for (a, app) in HTTP_APPS.iter().enumerate() {
        for (r, result) in HTTP_RESULTS.iter().enumerate() {
            let _ = writeln!(
                out,
                "herd_http_requests_total{{app=\"{app}\",result=\"{result}\"}} {}",
                sum(view, |s| s.http[a][r])
            );
        }
    }
}

/// Open connections, by port.
fn connection_lines(out: &mut String, view: &ServerView) {
    family(
        out,
        "herd_connections",
        "gauge",
        "Open connections, by port.",
    );
    let _ = writeln!(
        out,
        "herd_connections{{port=\"client\"}} {}",
        sum(view, |s| s.published.client_connections)
    );
    let _ = writeln!(
        out,
        "herd_connections{{port=\"peer\"}} {}",
        sum(view, |s| s.published.peer_connections)
    );
    counters(
        out,
        &[(
            "herd_connection_buffers_released_total",
            "Idle client connections that gave back their read and reply buffers (a sweep after their last read).",
            sum(view, |s| s.buffers_released),
        )],
    );
}

/// The store: records per shard, and what became of the records offered to it.
fn store_lines(out: &mut String, view: &ServerView) {
    family(
        out,
        "herd_records",
        "gauge",
        "Clients a shard holds records for.",
    );
    for s in &view.shards {
        let _ = writeln!(
            out,
            "herd_records{{shard=\"{}\"}} {}",
            s.shard, s.published.records
        );
    }
    family(
        out,
        "herd_store_updates_total",
        "counter",
        "Records offered to the store (by clients and links): stored as newer, or dropped as stale.",
    );
    let _ = writeln!(
        out,
        "herd_store_updates_total{{result=\"stored\"}} {}",
        sum(view, |s| s.stored)
    );
    let _ = writeln!(
        out,
        "herd_store_updates_total{{result=\"stale\"}} {}",
        sum(view, |s| s.stale)
    );
    counters(
        out,
        &[
            (
                "herd_store_evicted_total",
                "Records evicted from a full store (limits.max_records).",
                sum(view, |s| s.published.evicted),
            ),
            (
                "herd_store_refused_older_total",
                "New clients' records a full store did not take: older than all it held.",
                sum(view, |s| s.published.refused_older),
            ),
            (
                "herd_store_expired_total",
                "Records dropped by limits.record_ttl_ms.",
                sum(view, |s| s.published.expired),
            ),
        ],
    );
}

/// Each shard's command latency histogram.
fn latency_lines(out: &mut String, view: &ServerView) {
    family(
        out,
        "herd_command_duration_seconds",
        "histogram",
        "Per shard, from the read that brought a client command to the write of its reply.",
    );
    for s in &view.shards {
        let shard = format!("shard=\"{}\"", s.shard);
        histogram_lines(
            out,
            "herd_command_duration_seconds",
            &shard,
            &s.published.latency,
        );
    }
}

/// Each shard's outgoing links: up, and how far behind.
fn link_lines(out: &mut String, view: &ServerView) {
    family(
        out,
        "herd_link_up",
        "gauge",
        "1 when a shard's link to a neighbour is up.",
    );
    for (s, l) in links(view) {
        let _ = writeln!(
            out,
            "herd_link_up{{neighbour=\"{}\",shard=\"{s}\"}} {}",
            label(&l.neighbour),
            u8::from(l.up)
        );
    }
    family(
        out,
        "herd_link_behind_records",
        "gauge",
        "Record updates a shard stored but has not sent on its link to a neighbour.",
    );
    for (s, l) in links(view) {
        let _ = writeln!(
            out,
            "herd_link_behind_records{{neighbour=\"{}\",shard=\"{s}\"}} {}",
            label(&l.neighbour),
            l.behind_records
        );
    }
    family(
        out,
        "herd_link_behind_seconds",
        "gauge",
        "How long since a shard's link to a neighbour last had nothing to send (0: nothing unsent).",
    );
    for (s, l) in links(view) {
        let _ = writeln!(
            out,
            "herd_link_behind_seconds{{neighbour=\"{}\",shard=\"{s}\"}} {}",
            label(&l.neighbour),
            l.behind_seconds
        );
    }
}

/// Per neighbour: records sent, links from it, and the flood trees' families.
fn neighbour_lines(out: &mut String, view: &ServerView) {
    family(
        out,
        "herd_link_records_sent_total",
        "counter",
        "Records sent to a neighbour, all shards.",
    );
    for neighbour in &view.neighbours {
        let sent: u64 = view.links_to(neighbour).iter().map(|l| l.sent).sum();
        let _ = writeln!(
            out,
            "herd_link_records_sent_total{{neighbour=\"{}\"}} {sent}",
            label(neighbour)
        );
    }
    family(
        out,
        "herd_link_incoming",
        "gauge",
        "Open links from a neighbour (one per shard of the neighbour).",
    );
    for neighbour in &view.neighbours {
        let n = view.links_from(neighbour).len();
        let _ = writeln!(
            out,
            "herd_link_incoming{{neighbour=\"{}\"}} {n}",
            label(neighbour)
        );
    }
    let rows: Vec<TreeRow<'_>> = links(view)
        .map(|(s, l)| (s, l.neighbour.as_str(), &l.tree))
        .collect();
    tree_lines(out, &rows, &view.neighbours, &|n| duplicates(view, n));
}

/// One row: the shard, the neighbour, and the link's figures.
type TreeRow<'a> = (usize, &'a str, &'a LinkTree);

/// A per-neighbour counter family: name, help, and its figure of a link.
type Counter = (&'static str, &'static str, fn(&LinkTree) -> u64);

/// The flood-tree families (see `tree_metrics.rs`): `rows` are every shard's
/// links, `neighbours` the server's neighbours in config order, and
/// `duplicates` what each sent that was already held.
fn tree_lines(
    out: &mut String,
    rows: &[TreeRow<'_>],
    neighbours: &[String],
    duplicates: &dyn Fn(&str) -> u64,
) {
    family(
        out,
        "herd_link_tree",
        "gauge",
        "1 when a shard's link sends along flood trees (both ends agree on the graph), 0 when it floods.",
    );
    for (shard, neighbour, t) in rows {
        let _ = writeln!(
            out,
            "herd_link_tree{{neighbour=\"{}\",shard=\"{shard}\"}} {}",
            label(neighbour),
            u8::from(t.tree)
        );
    }
    family(
        out,
        "herd_link_eager_origins",
        "gauge",
        "Servers whose records a shard's link sends (all of them on a link that floods).",
    );
    for (shard, neighbour, t) in rows {
        let _ = writeln!(
            out,
            "herd_link_eager_origins{{neighbour=\"{}\",shard=\"{shard}\"}} {}",
            label(neighbour),
            t.eager
        );
    }
    let per_neighbour: [Counter; 3] = [
        (
            "herd_link_bytes_sent_total",
            "Bytes written on the links to a neighbour, all shards, every line counted.",
            |t| t.bytes_sent,
        ),
        (
            "herd_link_grafts_total",
            "GRAFTs a neighbour sent on this server's links (records it found missing).",
            |t| t.grafts,
        ),
        (
            "herd_link_prunes_total",
            "PRUNEs a neighbour sent on this server's links (its tree reaches it again).",
            |t| t.prunes,
        ),
    ];
    for (name, help, pick) in per_neighbour {
        family(out, name, "counter", help);
        for neighbour in neighbours {
            let total: u64 = rows
                .iter()
                .filter(|(_, n, _)| n == neighbour)
                .map(|(_, _, t)| pick(t))
                .sum();
            let _ = writeln!(out, "{name}{{neighbour=\"{}\"}} {total}", label(neighbour));
        }
    }
    family(
        out,
        "herd_link_duplicates_total",
        "counter",
        "Records a neighbour sent that this server already held, or held newer.",
    );
    for neighbour in neighbours {
        let _ = writeln!(
            out,
            "herd_link_duplicates_total{{neighbour=\"{}\"}} {}",
            label(neighbour),
            duplicates(neighbour)
        );
    }
}

/// The Places lookups and the upstream's latency histogram.
fn places_lines(out: &mut String, view: &ServerView) {
    let places = |f: fn(&PlacesFigures) -> u64| sum(view, |s| f(&s.published.places));
    counters(
        out,
        &[
            (
                "herd_places_lookups_total",
                "Places lookups (one per WHATSAT for a known client).",
                places(|p| p.lookups),
            ),
            (
                "herd_places_cache_hits_total",
                "Places lookups answered from the shard's cache.",
                places(|p| p.cache_hits),
            ),
            (
                "herd_places_coalesced_total",
                "Places lookups that joined an identical lookup in flight.",
                places(|p| p.coalesced),
            ),
            (
                "herd_places_upstream_requests_total",
                "HTTP requests sent to the Places upstream (retries included).",
                places(|p| p.upstream_requests),
            ),
            (
                "herd_places_upstream_errors_total",
                "Upstream lookups that ended in an error answer.",
                places(|p| p.upstream_errors),
            ),
        ],
    );
    family(
        out,
        "herd_places_upstream_duration_seconds",
        "histogram",
        "Upstream Places calls, from start to answer or timeout.",
    );
    histogram_lines(
        out,
        "herd_places_upstream_duration_seconds",
        "",
        &merged(view, |p| &p.upstream_latency),
    );
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Unlabelled counters: name, help and value of each.
fn counters(out: &mut String, rows: &[(&str, &str, u64)]) {
    for (name, help, value) in rows {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The `herd_journal_` families, only when the server keeps a journal.
fn journal_lines(out: &mut String, view: &ServerView) {
    let shards = journals(view);
    if shards.is_empty() {
        return;
    }
    let total = |f: fn(&JournalFigures) -> u64| shards.iter().map(|(_, j)| f(j)).sum::<u64>();
    family(
        out,
        "herd_journal_replayed_records",
        "gauge",
        "Records read back from the journal at start.",
    );
    let _ = writeln!(
        out,
        "herd_journal_replayed_records {}",
        total(|j| j.replayed)
    );
    family(
        out,
        "herd_journal_cut_bytes",
        "gauge",
        "Bytes of damaged journal tail cut off at start (0: none).",
    );
    let _ = writeln!(out, "herd_journal_cut_bytes {}", view.journal_cut_bytes);
    for (name, help, pick) in [
        (
            "herd_journal_bytes",
            "Length of the journal file a shard appends to.",
            (|j: &JournalFigures| j.file_bytes) as fn(&JournalFigures) -> u64,
        ),
        (
            "herd_journal_behind_records",
            "Record updates a shard stored but has not yet written to its journal.",
            |j| j.behind_records,
        ),
    ] {
        family(out, name, "gauge", help);
        for (shard, j) in &shards {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", pick(j));
        }
    }
    counters(
        out,
        &[
            (
                "herd_journal_writes_total",
                "Journal writes (each a batch of records).",
                total(|j| j.writes),
            ),
            (
                "herd_journal_syncs_total",
                "Journal syncs: fdatasync calls, or with fsync always \
             the synchronous (O_DSYNC) writes.",
                total(|j| j.syncs),
            ),
            (
                "herd_journal_compactions_total",
                "Journal files rewritten to the live records.",
                total(|j| j.compactions),
            ),
            (
                "herd_journal_errors_total",
                "Failed journal opens, writes, syncs and compactions.",
                total(|j| j.errors),
            ),
        ],
    );
    family(
        out,
        "herd_journal_sync_seconds_total",
        "counter",
        "Seconds spent in journal syncs.",
    );
    let seconds: f64 = shards.iter().map(|(_, j)| j.sync_seconds).sum();
    let _ = writeln!(out, "herd_journal_sync_seconds_total {seconds}");
}

/// The `_bucket`, `_sum` and `_count` lines of one histogram (microseconds
/// inside, seconds outside).
fn histogram_lines(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    let sep = if labels.is_empty() { "" } else { "," };
    for bound in BUCKETS {
        // The bound in microseconds; buckets are cumulative.
        let micros = (bound * 1e6).round() as u64;
        let count = if h.is_empty() {
            0
        } else {
            h.count_between(0, micros)
        };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.len());
    let sum_seconds = h.mean() * h.len() as f64 / 1e6;
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum_seconds}");
    let _ = writeln!(out, "{name}_count{braces} {}", h.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::tests::{from, link, view};
    use crate::ops::metrics::{
        status_json, HttpApp, HttpResult, LinkView, ShardFigures, ShardMetrics,
    };
    use crate::ops::tree_metrics::tests::tree;
    use serde_json::Value;

    #[test]
    fn prometheus_text_has_the_counters_and_a_cumulative_histogram() {
        let text = render_prometheus(&view(vec![link("Hands", false, false)], vec![]), "0.1.0");
        for line in [
            "herd_commands_total{command=\"IAMAT\",result=\"ok\"} 5",
            "herd_commands_total{command=\"WHATSAT\",result=\"invalid\"} 1",
            "herd_commands_total{command=\"WHATSAT\",result=\"ok\"} 0",
            "herd_refused_total{reason=\"line_too_long\"} 1",
            "herd_records{shard=\"0\"} 42",
            "herd_ready 0",
            "herd_link_up{neighbour=\"Hands\",shard=\"0\"} 0",
            "herd_link_behind_records{neighbour=\"Hands\",shard=\"0\"} 7",
            "herd_link_behind_seconds{neighbour=\"Hands\",shard=\"0\"} 2.5",
            "herd_link_records_sent_total{neighbour=\"Hands\"} 3",
            "herd_command_duration_seconds_bucket{shard=\"0\",le=\"0.00001\"} 0",
            "herd_command_duration_seconds_bucket{shard=\"0\",le=\"0.000025\"} 1",
            "herd_command_duration_seconds_bucket{shard=\"0\",le=\"0.0025\"} 1",
            "herd_command_duration_seconds_bucket{shard=\"0\",le=\"0.005\"} 2",
            "herd_command_duration_seconds_bucket{shard=\"0\",le=\"+Inf\"} 2",
            "herd_command_duration_seconds_count{shard=\"0\"} 2",
            "# TYPE herd_commands_total counter",
            "# TYPE herd_command_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` or `name value`, every
        // name is herd_ prefixed, and counters end in _total.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').expect("name and value");
            assert!(name.starts_with("herd_"), "{l}");
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
        for l in text
            .lines()
            .filter(|l| l.starts_with("# TYPE") && l.ends_with("counter"))
        {
            assert!(
                l.split(' ').nth(2).is_some_and(|n| n.ends_with("_total")),
                "{l}"
            );
        }
    }

    #[test]
    fn journal_families_appear_only_with_a_journal_and_sum_over_shards() {
        let mut v = view(vec![], vec![]);
        let text = render_prometheus(&v, "0.1.0");
        assert!(!text.contains("herd_journal"), "{text}");
        assert_eq!(status_json(&v, "0.1.0")["journal"], Value::Null);
        let figures = JournalFigures {
            replayed: 10,
            file_bytes: 4096,
            behind_records: 3,
            writes: 7,
            syncs: 5,
            sync_seconds: 0.25,
            compactions: 1,
            errors: 0,
        };
        v.shards[0].published.journal = Some(figures);
        let mut second = v.shards[0].clone();
        second.shard = 1;
        second.published.journal = Some(JournalFigures {
            file_bytes: 8192,
            errors: 2,
            ..figures
        });
        v.shards.push(second);
        v.journal_cut_bytes = 17;
        let text = render_prometheus(&v, "0.1.0");
        for line in [
            "herd_journal_replayed_records 20",
            "herd_journal_cut_bytes 17",
            "herd_journal_bytes{shard=\"0\"} 4096",
            "herd_journal_bytes{shard=\"1\"} 8192",
            "herd_journal_behind_records{shard=\"1\"} 3",
            "herd_journal_writes_total 14",
            "herd_journal_syncs_total 10",
            "herd_journal_compactions_total 2",
            "herd_journal_errors_total 2",
            "herd_journal_sync_seconds_total 0.5",
            "# TYPE herd_journal_bytes gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let status = status_json(&v, "0.1.0");
        assert_eq!(status["journal"]["bytes"], 12288);
        assert_eq!(status["journal"]["cut_bytes"], 17);
        assert_eq!(status["journal"]["errors"], 2);
    }

    #[test]
    fn tree_metrics_sum_a_neighbour_s_shards_and_name_every_neighbour() {
        let (a, b) = (tree(true, 2), tree(true, 3));
        let rows = [(0, "Hands", &a), (1, "Hands", &b)];
        let mut out = String::new();
        let neighbours = ["Hands".to_owned(), "Welsh".to_owned()];
        tree_lines(&mut out, &rows, &neighbours, &|n| {
            if n == "Hands" {
                7
            } else {
                0
            }
        });
        for line in [
            "herd_link_tree{neighbour=\"Hands\",shard=\"1\"} 1",
            "herd_link_eager_origins{neighbour=\"Hands\",shard=\"0\"} 2",
            "herd_link_bytes_sent_total{neighbour=\"Hands\"} 200",
            "herd_link_grafts_total{neighbour=\"Hands\"} 4",
            "herd_link_prunes_total{neighbour=\"Welsh\"} 0",
            "herd_link_duplicates_total{neighbour=\"Hands\"} 7",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    /// A server whose every family of `/metrics` has samples: two shards,
    /// a link up on a tree and one down, journals, Places figures, a name
    /// and a neighbour that need escaping, one shard with no latencies.
    fn every_family() -> ServerView {
        let shard = |id: usize| {
            let m = ShardMetrics::new(id);
            m.commands.iamat_ok.add(5 + id as u64);
            m.commands.iamat_invalid.add(2);
            m.commands.whatsat_ok.add(3);
            m.commands.other_invalid.inc();
            m.refused.line_too_long.inc();
            m.refused.per_ip.add(4);
            m.refused.client_tls_handshake.inc();
            m.auths.ok.add(6);
            m.auths.expired.inc();
            m.http.count(HttpApp::OwnTracks, HttpResult::Stored);
            m.http.count(HttpApp::OsmAnd, HttpResult::Invalid);
            m.http.count(HttpApp::Unknown, HttpResult::TimedOut);
            m.stored.add(40);
            m.stale.add(id as u64);
            m.buffers_released.add(3 + id as u64);
            ShardFigures::of(&m)
        };
        let tree = LinkTree {
            tree: true,
            eager: 2,
            origins: 5,
            bytes_sent: 1234,
            grafts: 3,
            prunes: 1,
        };
        let mut first = shard(0);
        let p = &mut first.published;
        p.records = 42;
        p.client_connections = 9;
        p.peer_connections = 2;
        p.evicted = 1;
        p.refused_older = 2;
        p.expired = 3;
        p.links = vec![
            LinkView {
                tree,
                ..link("Hands", true, true)
            },
            link("We\\lsh\"", false, false),
        ];
        p.duplicates = vec![("Hands".to_owned(), 4)];
        p.places = PlacesFigures {
            lookups: 10,
            cache_hits: 6,
            coalesced: 1,
            upstream_requests: 4,
            upstream_errors: 1,
        };
        p.journal = Some(JournalFigures {
            replayed: 10,
            file_bytes: 4096,
            behind_records: 3,
            writes: 7,
            syncs: 5,
            sync_seconds: 0.25,
            compactions: 1,
            errors: 0,
        });
        for micros in [20, 3_000, 70_000, 12_000_000] {
            p.latency.saturating_record(micros);
        }
        p.upstream_latency.saturating_record(45_000);
        let mut second = shard(1);
        let p = &mut second.published;
        p.records = 40;
        p.client_connections = 1;
        p.links = vec![link("Hands", true, false)];
        p.duplicates = vec![("Hands".to_owned(), 1), ("We\\lsh\"".to_owned(), 2)];
        p.journal = Some(JournalFigures {
            file_bytes: 8192,
            errors: 2,
            ..first.published.journal.unwrap_or_default()
        });
        ServerView {
            server: "Golo\"man".to_owned(),
            listen: "127.0.0.1:12138".to_owned(),
            peer_listen: "127.0.0.1:22138".to_owned(),
            uptime_seconds: 12.25,
            neighbours: vec!["Hands".to_owned(), "We\\lsh\"".to_owned()],
            shards: vec![first, second],
            incoming: vec![from("Hands", true)],
            journal_cut_bytes: 17,
        }
    }

    /// The whole text of `/metrics` for [`every_family`]: families, their
    /// order, help, labels and values, byte for byte.
    const PINNED: &str = r##"# HELP herd_build_info Always 1; the labels say which build and server.
# TYPE herd_build_info gauge
herd_build_info{version="0.1.0",server="Golo\"man"} 1
# HELP herd_uptime_seconds Seconds since the server started.
# TYPE herd_uptime_seconds gauge
herd_uptime_seconds 12.25
# HELP herd_ready 1 when the server is ready (see /readyz), else 0.
# TYPE herd_ready gauge
herd_ready 0
# HELP herd_commands_total Client commands by kind and result.
# TYPE herd_commands_total counter
herd_commands_total{command="IAMAT",result="ok"} 11
herd_commands_total{command="IAMAT",result="invalid"} 4
herd_commands_total{command="WHATSAT",result="ok"} 6
herd_commands_total{command="WHATSAT",result="invalid"} 0
herd_commands_total{command="other",result="invalid"} 2
# HELP herd_refused_total Inputs turned away, by reason.
# TYPE herd_refused_total counter
herd_refused_total{reason="line_too_long"} 2
herd_refused_total{reason="future_time"} 0
herd_refused_total{reason="connection_limit"} 0
herd_refused_total{reason="per_ip"} 8
herd_refused_total{reason="handshake"} 0
herd_refused_total{reason="link_future_record"} 0
herd_refused_total{reason="link_invalid_line"} 0
herd_refused_total{reason="unauthenticated"} 0
herd_refused_total{reason="other_client"} 0
herd_refused_total{reason="client_tls_handshake"} 2
# HELP herd_client_auth_total AUTH lines of clients, by result.
# TYPE herd_client_auth_total counter
herd_client_auth_total{result="ok"} 12
herd_client_auth_total{result="bad"} 0
herd_client_auth_total{result="expired"} 2
herd_client_auth_total{result="limited"} 0
herd_client_auth_total{result="other_client"} 0
herd_client_auth_total{result="off"} 0
# HELP herd_http_requests_total HTTP requests of phone apps (OwnTracks, Traccar Client), by app and result.
# TYPE herd_http_requests_total counter
herd_http_requests_total{app="owntracks",result="stored"} 2
herd_http_requests_total{app="owntracks",result="ignored"} 0
herd_http_requests_total{app="owntracks",result="invalid"} 0
herd_http_requests_total{app="owntracks",result="unauthorized"} 0
herd_http_requests_total{app="owntracks",result="forbidden"} 0
herd_http_requests_total{app="owntracks",result="too_large"} 0
herd_http_requests_total{app="owntracks",result="not_found"} 0
herd_http_requests_total{app="owntracks",result="unavailable"} 0
herd_http_requests_total{app="owntracks",result="timed_out"} 0
herd_http_requests_total{app="osmand",result="stored"} 0
herd_http_requests_total{app="osmand",result="ignored"} 0
herd_http_requests_total{app="osmand",result="invalid"} 2
herd_http_requests_total{app="osmand",result="unauthorized"} 0
herd_http_requests_total{app="osmand",result="forbidden"} 0
herd_http_requests_total{app="osmand",result="too_large"} 0
herd_http_requests_total{app="osmand",result="not_found"} 0
herd_http_requests_total{app="osmand",result="unavailable"} 0
herd_http_requests_total{app="osmand",result="timed_out"} 0
herd_http_requests_total{app="none",result="stored"} 0
herd_http_requests_total{app="none",result="ignored"} 0
herd_http_requests_total{app="none",result="invalid"} 0
herd_http_requests_total{app="none",result="unauthorized"} 0
herd_http_requests_total{app="none",result="forbidden"} 0
herd_http_requests_total{app="none",result="too_large"} 0
herd_http_requests_total{app="none",result="not_found"} 0
herd_http_requests_total{app="none",result="unavailable"} 0
herd_http_requests_total{app="none",result="timed_out"} 2
# HELP herd_connections Open connections, by port.
# TYPE herd_connections gauge
herd_connections{port="client"} 10
herd_connections{port="peer"} 2
# HELP herd_connection_buffers_released_total Idle client connections that gave back their read and reply buffers (a sweep after their last read).
# TYPE herd_connection_buffers_released_total counter
herd_connection_buffers_released_total 7
# HELP herd_records Clients a shard holds records for.
# TYPE herd_records gauge
herd_records{shard="0"} 42
herd_records{shard="1"} 40
# HELP herd_store_updates_total Records offered to the store (by clients and links): stored as newer, or dropped as stale.
# TYPE herd_store_updates_total counter
herd_store_updates_total{result="stored"} 80
herd_store_updates_total{result="stale"} 1
# HELP herd_store_evicted_total Records evicted from a full store (limits.max_records).
# TYPE herd_store_evicted_total counter
herd_store_evicted_total 1
# HELP herd_store_refused_older_total New clients' records a full store did not take: older than all it held.
# TYPE herd_store_refused_older_total counter
herd_store_refused_older_total 2
# HELP herd_store_expired_total Records dropped by limits.record_ttl_ms.
# TYPE herd_store_expired_total counter
herd_store_expired_total 3
# HELP herd_command_duration_seconds Per shard, from the read that brought a client command to the write of its reply.
# TYPE herd_command_duration_seconds histogram
herd_command_duration_seconds_bucket{shard="0",le="0.00001"} 0
herd_command_duration_seconds_bucket{shard="0",le="0.000025"} 1
herd_command_duration_seconds_bucket{shard="0",le="0.00005"} 1
herd_command_duration_seconds_bucket{shard="0",le="0.0001"} 1
herd_command_duration_seconds_bucket{shard="0",le="0.00025"} 1
herd_command_duration_seconds_bucket{shard="0",le="0.0005"} 1
herd_command_duration_seconds_bucket{shard="0",le="0.001"} 1
herd_command_duration_seconds_bucket{shard="0",le="0.0025"} 1
herd_command_duration_seconds_bucket{shard="0",le="0.005"} 2
herd_command_duration_seconds_bucket{shard="0",le="0.01"} 2
herd_command_duration_seconds_bucket{shard="0",le="0.025"} 2
herd_command_duration_seconds_bucket{shard="0",le="0.05"} 2
herd_command_duration_seconds_bucket{shard="0",le="0.1"} 3
herd_command_duration_seconds_bucket{shard="0",le="0.25"} 3
herd_command_duration_seconds_bucket{shard="0",le="0.5"} 3
herd_command_duration_seconds_bucket{shard="0",le="1"} 3
herd_command_duration_seconds_bucket{shard="0",le="2.5"} 3
herd_command_duration_seconds_bucket{shard="0",le="5"} 3
herd_command_duration_seconds_bucket{shard="0",le="10"} 3
herd_command_duration_seconds_bucket{shard="0",le="+Inf"} 4
herd_command_duration_seconds_sum{shard="0"} 12.098764
herd_command_duration_seconds_count{shard="0"} 4
herd_command_duration_seconds_bucket{shard="1",le="0.00001"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.000025"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.00005"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.0001"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.00025"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.0005"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.001"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.0025"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.005"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.01"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.025"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.05"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.1"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.25"} 0
herd_command_duration_seconds_bucket{shard="1",le="0.5"} 0
herd_command_duration_seconds_bucket{shard="1",le="1"} 0
herd_command_duration_seconds_bucket{shard="1",le="2.5"} 0
herd_command_duration_seconds_bucket{shard="1",le="5"} 0
herd_command_duration_seconds_bucket{shard="1",le="10"} 0
herd_command_duration_seconds_bucket{shard="1",le="+Inf"} 0
herd_command_duration_seconds_sum{shard="1"} 0
herd_command_duration_seconds_count{shard="1"} 0
# HELP herd_link_up 1 when a shard's link to a neighbour is up.
# TYPE herd_link_up gauge
herd_link_up{neighbour="Hands",shard="0"} 1
herd_link_up{neighbour="We\\lsh\"",shard="0"} 0
herd_link_up{neighbour="Hands",shard="1"} 1
# HELP herd_link_behind_records Record updates a shard stored but has not sent on its link to a neighbour.
# TYPE herd_link_behind_records gauge
herd_link_behind_records{neighbour="Hands",shard="0"} 0
herd_link_behind_records{neighbour="We\\lsh\"",shard="0"} 7
herd_link_behind_records{neighbour="Hands",shard="1"} 0
# HELP herd_link_behind_seconds How long since a shard's link to a neighbour last had nothing to send (0: nothing unsent).
# TYPE herd_link_behind_seconds gauge
herd_link_behind_seconds{neighbour="Hands",shard="0"} 0
herd_link_behind_seconds{neighbour="We\\lsh\"",shard="0"} 2.5
herd_link_behind_seconds{neighbour="Hands",shard="1"} 0
# HELP herd_link_records_sent_total Records sent to a neighbour, all shards.
# TYPE herd_link_records_sent_total counter
herd_link_records_sent_total{neighbour="Hands"} 6
herd_link_records_sent_total{neighbour="We\\lsh\""} 3
# HELP herd_link_incoming Open links from a neighbour (one per shard of the neighbour).
# TYPE herd_link_incoming gauge
herd_link_incoming{neighbour="Hands"} 1
herd_link_incoming{neighbour="We\\lsh\""} 0
# HELP herd_link_tree 1 when a shard's link sends along flood trees (both ends agree on the graph), 0 when it floods.
# TYPE herd_link_tree gauge
herd_link_tree{neighbour="Hands",shard="0"} 1
herd_link_tree{neighbour="We\\lsh\"",shard="0"} 0
herd_link_tree{neighbour="Hands",shard="1"} 0
# HELP herd_link_eager_origins Servers whose records a shard's link sends (all of them on a link that floods).
# TYPE herd_link_eager_origins gauge
herd_link_eager_origins{neighbour="Hands",shard="0"} 2
herd_link_eager_origins{neighbour="We\\lsh\"",shard="0"} 0
herd_link_eager_origins{neighbour="Hands",shard="1"} 0
# HELP herd_link_bytes_sent_total Bytes written on the links to a neighbour, all shards, every line counted.
# TYPE herd_link_bytes_sent_total counter
herd_link_bytes_sent_total{neighbour="Hands"} 1234
herd_link_bytes_sent_total{neighbour="We\\lsh\""} 0
# HELP herd_link_grafts_total GRAFTs a neighbour sent on this server's links (records it found missing).
# TYPE herd_link_grafts_total counter
herd_link_grafts_total{neighbour="Hands"} 3
herd_link_grafts_total{neighbour="We\\lsh\""} 0
# HELP herd_link_prunes_total PRUNEs a neighbour sent on this server's links (its tree reaches it again).
# TYPE herd_link_prunes_total counter
herd_link_prunes_total{neighbour="Hands"} 1
herd_link_prunes_total{neighbour="We\\lsh\""} 0
# HELP herd_link_duplicates_total Records a neighbour sent that this server already held, or held newer.
# TYPE herd_link_duplicates_total counter
herd_link_duplicates_total{neighbour="Hands"} 5
herd_link_duplicates_total{neighbour="We\\lsh\""} 2
# HELP herd_places_lookups_total Places lookups (one per WHATSAT for a known client).
# TYPE herd_places_lookups_total counter
herd_places_lookups_total 10
# HELP herd_places_cache_hits_total Places lookups answered from the shard's cache.
# TYPE herd_places_cache_hits_total counter
herd_places_cache_hits_total 6
# HELP herd_places_coalesced_total Places lookups that joined an identical lookup in flight.
# TYPE herd_places_coalesced_total counter
herd_places_coalesced_total 1
# HELP herd_places_upstream_requests_total HTTP requests sent to the Places upstream (retries included).
# TYPE herd_places_upstream_requests_total counter
herd_places_upstream_requests_total 4
# HELP herd_places_upstream_errors_total Upstream lookups that ended in an error answer.
# TYPE herd_places_upstream_errors_total counter
herd_places_upstream_errors_total 1
# HELP herd_places_upstream_duration_seconds Upstream Places calls, from start to answer or timeout.
# TYPE herd_places_upstream_duration_seconds histogram
herd_places_upstream_duration_seconds_bucket{le="0.00001"} 0
herd_places_upstream_duration_seconds_bucket{le="0.000025"} 0
herd_places_upstream_duration_seconds_bucket{le="0.00005"} 0
herd_places_upstream_duration_seconds_bucket{le="0.0001"} 0
herd_places_upstream_duration_seconds_bucket{le="0.00025"} 0
herd_places_upstream_duration_seconds_bucket{le="0.0005"} 0
herd_places_upstream_duration_seconds_bucket{le="0.001"} 0
herd_places_upstream_duration_seconds_bucket{le="0.0025"} 0
herd_places_upstream_duration_seconds_bucket{le="0.005"} 0
herd_places_upstream_duration_seconds_bucket{le="0.01"} 0
herd_places_upstream_duration_seconds_bucket{le="0.025"} 0
herd_places_upstream_duration_seconds_bucket{le="0.05"} 1
herd_places_upstream_duration_seconds_bucket{le="0.1"} 1
herd_places_upstream_duration_seconds_bucket{le="0.25"} 1
herd_places_upstream_duration_seconds_bucket{le="0.5"} 1
herd_places_upstream_duration_seconds_bucket{le="1"} 1
herd_places_upstream_duration_seconds_bucket{le="2.5"} 1
herd_places_upstream_duration_seconds_bucket{le="5"} 1
herd_places_upstream_duration_seconds_bucket{le="10"} 1
herd_places_upstream_duration_seconds_bucket{le="+Inf"} 1
herd_places_upstream_duration_seconds_sum 0.044928
herd_places_upstream_duration_seconds_count 1
# HELP herd_journal_replayed_records Records read back from the journal at start.
# TYPE herd_journal_replayed_records gauge
herd_journal_replayed_records 20
# HELP herd_journal_cut_bytes Bytes of damaged journal tail cut off at start (0: none).
# TYPE herd_journal_cut_bytes gauge
herd_journal_cut_bytes 17
# HELP herd_journal_bytes Length of the journal file a shard appends to.
# TYPE herd_journal_bytes gauge
herd_journal_bytes{shard="0"} 4096
herd_journal_bytes{shard="1"} 8192
# HELP herd_journal_behind_records Record updates a shard stored but has not yet written to its journal.
# TYPE herd_journal_behind_records gauge
herd_journal_behind_records{shard="0"} 3
herd_journal_behind_records{shard="1"} 3
# HELP herd_journal_writes_total Journal writes (each a batch of records).
# TYPE herd_journal_writes_total counter
herd_journal_writes_total 14
# HELP herd_journal_syncs_total Journal syncs: fdatasync calls, or with fsync always the synchronous (O_DSYNC) writes.
# TYPE herd_journal_syncs_total counter
herd_journal_syncs_total 10
# HELP herd_journal_compactions_total Journal files rewritten to the live records.
# TYPE herd_journal_compactions_total counter
herd_journal_compactions_total 2
# HELP herd_journal_errors_total Failed journal opens, writes, syncs and compactions.
# TYPE herd_journal_errors_total counter
herd_journal_errors_total 2
# HELP herd_journal_sync_seconds_total Seconds spent in journal syncs.
# TYPE herd_journal_sync_seconds_total counter
herd_journal_sync_seconds_total 0.5
"##;

    #[test]
    fn prometheus_text_of_a_server_with_every_family_is_pinned() {
        let text = render_prometheus(&every_family(), "0.1.0");
        // The first line that differs, then the whole (its end included).
        for (n, (got, want)) in text.lines().zip(PINNED.lines()).enumerate() {
            assert_eq!(got, want, "line {}", n + 1);
        }
        assert_eq!(text, PINNED);
    }
}
