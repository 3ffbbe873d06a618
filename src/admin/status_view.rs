//! `herd status`'s view of a herd: the `/status` document each server's
//! admin endpoint serves, and the table made from two successive samples of
//! every server.
//!
//! Pure: no I/O and no clock reads (each sample carries the instant it was
//! taken), so the same samples always give the same text. Fetching and the
//! refresh loop live in [`crate::admin::status`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::fmt::Write as _;
use std::time::Instant;

/// A server's `GET /status` document.
///
/// Servers of another version may lack fields, add some or change a type:
/// every field here is optional, unknown fields are ignored, and a field
/// that is null or of an unexpected type reads as absent, so one odd field
/// costs one cell of the table, never the server's whole row.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The server's own name.
    #[serde(deserialize_with = "lenient")]
    pub server: Option<String>,
    /// herd version it runs.
    #[serde(deserialize_with = "lenient")]
    pub version: Option<String>,
    /// Seconds since it started; going down between samples means a restart.
    #[serde(deserialize_with = "lenient")]
    pub uptime_seconds: Option<f64>,
    /// Client address.
    #[serde(deserialize_with = "lenient")]
    pub listen: Option<String>,
    /// Link address.
    #[serde(deserialize_with = "lenient")]
    pub peer_listen: Option<String>,
    /// Shards it runs.
    #[serde(deserialize_with = "lenient")]
    pub shards: Option<u64>,
    /// Whether it considers itself ready.
    #[serde(deserialize_with = "lenient")]
    pub ready: Option<bool>,
    /// Why it is not ready, when it is not.
    #[serde(deserialize_with = "lenient")]
    pub not_ready: Vec<String>,
    /// Records it holds, all shards together.
    #[serde(deserialize_with = "lenient")]
    pub records: Option<u64>,
    /// Open connections.
    #[serde(deserialize_with = "lenient")]
    pub connections: Connections,
    /// Commands counted since start.
    #[serde(deserialize_with = "lenient")]
    pub commands: Commands,
    /// Command latency since start.
    #[serde(deserialize_with = "lenient")]
    pub latency_seconds: Latency,
    /// Command latency over about the last second.
    #[serde(deserialize_with = "lenient")]
    pub latency_recent_seconds: Latency,
    /// Its links, one per neighbour.
    #[serde(deserialize_with = "lenient")]
    pub links: Vec<LinkStatus>,
}

/// Open connections of one server.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Connections {
    /// Client connections.
    #[serde(deserialize_with = "lenient")]
    pub client: Option<u64>,
    /// Link connections.
    #[serde(deserialize_with = "lenient")]
    pub peer: Option<u64>,
}

/// Command counters of one server.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Commands {
    /// IAMAT lines.
    #[serde(rename = "IAMAT", deserialize_with = "lenient")]
    pub iamat: Counts,
    /// WHATSAT lines.
    #[serde(rename = "WHATSAT", deserialize_with = "lenient")]
    pub whatsat: Counts,
    /// Anything else.
    #[serde(deserialize_with = "lenient")]
    pub other: Counts,
}

/// How many lines of one command were answered, and how many were invalid.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Valid ones.
    #[serde(deserialize_with = "lenient")]
    pub ok: Option<u64>,
    /// Invalid ones (answered `? ...`).
    #[serde(deserialize_with = "lenient")]
    pub invalid: Option<u64>,
}

impl Counts {
    /// Valid and invalid together: every line of the command the server
    /// read. `None` when the server reports neither.
    pub fn total(&self) -> Option<u64> {
        match (self.ok, self.invalid) {
            (None, None) => None,
            (ok, invalid) => Some(ok.unwrap_or(0).saturating_add(invalid.unwrap_or(0))),
        }
    }
}

/// A latency summary, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Commands measured (0 when idle; the quantiles are then meaningless).
    #[serde(deserialize_with = "lenient")]
    pub count: Option<u64>,
    /// Median.
    #[serde(deserialize_with = "lenient")]
    pub p50: Option<f64>,
    /// 99th percentile.
    #[serde(deserialize_with = "lenient")]
    pub p99: Option<f64>,
    /// 99.9th percentile.
    #[serde(deserialize_with = "lenient")]
    pub p999: Option<f64>,
    /// Slowest.
    #[serde(deserialize_with = "lenient")]
    pub max: Option<f64>,
}

/// One link of a server, to one neighbour.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LinkStatus {
    /// The neighbour's name.
    #[serde(deserialize_with = "lenient")]
    pub neighbour: Option<String>,
    /// The neighbour's peer address.
    #[serde(deserialize_with = "lenient")]
    pub addr: Option<String>,
    /// `up`, `down` or `partial` (up from some of the server's shards).
    #[serde(deserialize_with = "lenient")]
    pub state: Option<String>,
    /// Shards whose link to the neighbour is up.
    #[serde(deserialize_with = "lenient")]
    pub shards_up: Option<u64>,
    /// Shards of the server.
    #[serde(deserialize_with = "lenient")]
    pub shards: Option<u64>,
    /// Records stored but not yet sent to the neighbour.
    #[serde(deserialize_with = "lenient")]
    pub behind_records: Option<u64>,
    /// How old the oldest unsent record is, in seconds.
    #[serde(deserialize_with = "lenient")]
    pub behind_seconds: Option<f64>,
    /// The link's part in the flood trees (servers before them say none).
    #[serde(deserialize_with = "lenient")]
    pub flood: Option<FloodStatus>,
}

/// A link's part in the flood trees (PROTOCOL.md, "Flood trees").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FloodStatus {
    /// `eager` (every origin's records), `lazy` (announcements only),
    /// `tree` (some origins'), or `mixed` (shards differ).
    #[serde(deserialize_with = "lenient")]
    pub state: Option<String>,
    /// Servers whose records the link sends.
    #[serde(deserialize_with = "lenient")]
    pub eager_origins: Option<u64>,
    /// Servers of the herd.
    #[serde(deserialize_with = "lenient")]
    pub origins: Option<u64>,
    /// `GRAFT`s the neighbour sent.
    #[serde(deserialize_with = "lenient")]
    pub grafts: Option<u64>,
}

impl FloodStatus {
    /// In a few words: `eager`, `lazy`, `tree 2/5`, with the grafts when
    /// any came.
    fn shown(&self) -> String {
        let state = self.state.as_deref().unwrap_or("-");
        let mut text = match (state, self.eager_origins, self.origins) {
            ("tree", Some(e), Some(o)) => format!("tree {e}/{o}"),
            _ => short(state, 12),
        };
        if let Some(g) = self.grafts.filter(|&g| g > 0) {
            text.push_str(&format!(" grafts {g}"));
        }
        text
    }
}

/// Reads any JSON value, then the wanted type from it, and takes the
/// default where the value is not of that type: the one rule that keeps a
/// field of an unexpected shape from failing the whole document.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

impl Status {
    /// Parses a `/status` body. Only text that is not JSON, or JSON that is
    /// not an object, is an error.
    pub fn parse(body: &[u8]) -> Result<Status, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(body)?;
        // serde would take an array as the fields in order: not a status.
        if !value.is_object() {
            return Err(serde::de::Error::custom("the status is not a JSON object"));
        }
        Status::deserialize(value)
    }
}

/// One `/status` document and when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// What the server said.
    pub status: Status,
    /// When the answer came.
    pub taken: Instant,
}

/// What one round of fetching got from one server.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// The config gives the server no admin endpoint (`admin_listen: null`).
    NoAdmin,
    /// No usable answer; why, in a few words (`connection refused`).
    Down(String),
    /// An answer.
    Up(Box<Sample>),
}

/// One server's row: its latest fetch and its previous good sample, from
/// which the rates come.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerView {
    /// The name in the config.
    pub name: String,
    /// This round's fetch.
    pub now: Fetched,
    /// The last good sample of an earlier round, if any.
    pub prev: Option<Sample>,
}

/// Lines per second of one command between two samples of one server, or
/// `None` when there is no honest answer: the counter is missing, no time
/// passed, or the server restarted in between (its uptime or the counter
/// went down), when the difference means nothing.
pub fn rate(prev: &Sample, now: &Sample, counter: impl Fn(&Status) -> Option<u64>) -> Option<f64> {
    if let (Some(before), Some(after)) = (prev.status.uptime_seconds, now.status.uptime_seconds) {
        if after < before {
            return None;
        }
    }
    let delta = counter(&now.status)?.checked_sub(counter(&prev.status)?)?;
    let secs = now.taken.checked_duration_since(prev.taken)?.as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // a rate needs no more than 52 bits
    Some(delta as f64 / secs)
}

/// A duration in seconds in the unit that reads best: `0s`, `85µs`,
/// `1.5ms`, `2.50s`, `95s`. `-` for nonsense (negative, not finite).
pub fn human_seconds(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_owned();
    }
    if secs == 0.0 {
        return "0s".to_owned();
    }
    // Decide on the rounded value, so 999.7µs reads 1.0ms, not 1000µs.
    let micros = (secs * 1e6).round();
    if micros < 1000.0 {
        return format!("{micros:.0}µs");
    }
    let millis = secs * 1e3;
    if millis < 999.95 {
        return format!("{millis:.1}ms");
    }
    if secs < 59.995 {
        return format!("{secs:.2}s");
    }
    format!("{secs:.0}s")
}

/// The longest a `not_ready` reason or a down reason is shown, in characters.
const REASON_CHARS: usize = 60;
/// The most `not_ready` reasons shown under a server.
const REASONS_SHOWN: usize = 3;

/// `text` cut to `max` characters, with `…` where it was cut.
fn short(text: &str, max: usize) -> String {
    // One line: a reason with a newline would break the table.
    let text = text.split(['\r', '\n']).next().unwrap_or_default().trim();
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn rate_cell(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
}

/// The header of the server rows, and which columns are numbers (right
/// aligned).
const COLUMNS: [(&str, bool); 7] = [
    ("SERVER", false),
    ("STATE", false),
    ("READY", false),
    ("RECORDS", true),
    ("IAMAT/s", true),
    ("WHATSAT/s", true),
    ("P99", true),
];

/// What goes under a server row.
enum Detail {
    /// A line of text, indented.
    Note(String),
    /// A link: neighbour, state, lag in records, lag in time, its part in
    /// the flood trees (empty from servers before them).
    Link([String; 5]),
}

/// One server's row before alignment: its cells (only name and state for a
/// server without numbers, then `rest` spans the other columns) and the
/// lines under it.
struct Row {
    cells: Vec<String>,
    rest: Option<String>,
    details: Vec<Detail>,
}

fn row_of(view: &ServerView) -> Row {
    match &view.now {
        Fetched::NoAdmin => Row {
            cells: vec![view.name.clone(), "-".to_owned()],
            rest: Some("no admin endpoint".to_owned()),
            details: Vec::new(),
        },
        Fetched::Down(why) => Row {
            cells: vec![view.name.clone(), "down".to_owned()],
            rest: Some(short(why, REASON_CHARS)),
            details: Vec::new(),
        },
        Fetched::Up(now) => {
            let status = &now.status;
            let rate_of = |counter: fn(&Status) -> Option<u64>| {
                view.prev.as_ref().and_then(|prev| rate(prev, now, counter))
            };
            let recent = &status.latency_recent_seconds;
            // An idle second reports count 0 and zeros: no latency to show.
            let p99 = match (recent.count, recent.p99) {
                (Some(0), _) | (_, None) => "-".to_owned(),
                (_, Some(p99)) => human_seconds(p99),
            };
            let cells = vec![
                view.name.clone(),
                "up".to_owned(),
                match status.ready {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }
                .to_owned(),
                or_dash(status.records),
                rate_cell(rate_of(|s| s.commands.iamat.total())),
                rate_cell(rate_of(|s| s.commands.whatsat.total())),
                p99,
            ];
            let mut details = Vec::new();
            if let Some(answered_as) = status.server.as_deref() {
                if answered_as != view.name {
                    details.push(Detail::Note(format!(
                        "note: the server at this admin address says it is {}",
                        short(answered_as, REASON_CHARS)
                    )));
                }
            }
            if status.ready == Some(false) {
                let mut reasons: Vec<String> = status
                    .not_ready
                    .iter()
                    .take(REASONS_SHOWN)
                    .map(|r| short(r, REASON_CHARS))
                    .collect();
                if status.not_ready.len() > REASONS_SHOWN {
                    reasons.push(format!("{} more", status.not_ready.len() - REASONS_SHOWN));
                }
                if reasons.is_empty() {
                    reasons.push("no reason given".to_owned());
                }
                details.push(Detail::Note(format!("not ready: {}", reasons.join("; "))));
            }
            for link in &status.links {
                let state = link.state.as_deref().unwrap_or("-");
                let state = match (state, link.shards_up, link.shards) {
                    ("partial", Some(up), Some(of)) => format!("partial {up}/{of}"),
                    _ => short(state, 20),
                };
                details.push(Detail::Link([
                    short(link.neighbour.as_deref().unwrap_or("?"), 30),
                    state,
                    or_dash(link.behind_records),
                    link.behind_seconds
                        .map_or_else(|| "-".to_owned(), human_seconds),
                    link.flood
                        .as_ref()
                        .map(FloodStatus::shown)
                        .unwrap_or_default(),
                ]));
            }
            Row {
                cells,
                rest: None,
                details,
            }
        }
    }
}

fn pad(out: &mut String, text: &str, width: usize, right: bool) {
    // `{:>w$}` counts chars, which is the display width of all we print
    // (ASCII, µ and …) as long as server names are not wide characters.
    if right {
        let _ = write!(out, "{text:>width$}");
    } else {
        let _ = write!(out, "{text:<width$}");
    }
}

/// The table of a herd: a summary line, then a header and one row per
/// server (config order) in aligned columns, each followed by its notes and
/// its links (`link NEIGHBOUR STATE lag N records T FLOOD`, aligned
/// across servers; FLOOD is `eager`, `lazy` or `tree E/N` and the grafts
/// its neighbour asked, when any).
/// Rates come from each server's previous sample and read `-` until there is
/// one. No escape codes: the caller clears the screen if it wants to.
pub fn render(views: &[ServerView]) -> String {
    let rows: Vec<Row> = views.iter().map(row_of).collect();

    let mut widths: Vec<usize> = COLUMNS.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(&row.cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut link_widths = [0usize; 5];
    for row in &rows {
        for detail in &row.details {
            if let Detail::Link(cells) = detail {
                for (w, cell) in link_widths.iter_mut().zip(cells) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
    }

    let count = |f: fn(&Fetched) -> bool| views.iter().filter(|v| f(&v.now)).count();
    let up = count(|f| matches!(f, Fetched::Up(_)));
    let down = count(|f| matches!(f, Fetched::Down(_)));
    let no_admin = count(|f| matches!(f, Fetched::NoAdmin));
    let not_ready = count(|f| matches!(f, Fetched::Up(s) if s.status.ready == Some(false)));
    let mut out = String::new();
    let _ = write!(
        out,
        "{} server{}: {up} up, {down} down",
        views.len(),
        if views.len() == 1 { "" } else { "s" }
    );
    if no_admin > 0 {
        let _ = write!(out, ", {no_admin} without admin endpoint");
    }
    if not_ready > 0 {
        let _ = write!(out, "; {not_ready} not ready");
    }
    out.push_str("\n\n");

    let mut line = String::new();
    let finish = |out: &mut String, line: &mut String| {
        out.push_str(line.trim_end());
        out.push('\n');
        line.clear();
    };
    for (i, ((header, right), width)) in COLUMNS.iter().zip(&widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        pad(&mut line, header, *width, *right);
    }
    finish(&mut out, &mut line);

    for row in &rows {
        for (i, (cell, ((_, right), width))) in row
            .cells
            .iter()
            .zip(COLUMNS.iter().zip(&widths))
            .enumerate()
        {
            if i > 0 {
                line.push_str("  ");
            }
            pad(&mut line, cell, *width, *right);
        }
        if let Some(rest) = &row.rest {
            line.push_str("  ");
            line.push_str(rest);
        }
        finish(&mut out, &mut line);
        for detail in &row.details {
            match detail {
                Detail::Note(text) => line.push_str(&format!("  {text}")),
                Detail::Link([neighbour, state, records, secs, flood]) => {
                    line.push_str("  link ");
                    pad(&mut line, neighbour, link_widths[0], false);
                    line.push_str("  ");
                    pad(&mut line, state, link_widths[1], false);
                    line.push_str("  lag ");
                    pad(&mut line, records, link_widths[2], true);
                    line.push_str(" records  ");
                    pad(&mut line, secs, link_widths[3], true);
                    if !flood.is_empty() {
                        line.push_str("  ");
                        line.push_str(flood);
                    }
                }
            }
            finish(&mut out, &mut line);
        }
    }
    out
}

/// The example document of the admin endpoint's description.
#[cfg(test)]
pub(crate) const EXAMPLE_STATUS: &str = r#"{
  "server": "Goloman",
  "version": "0.1.0",
  "uptime_seconds": 12.5,
  "listen": "127.0.0.1:12138",
  "peer_listen": "127.0.0.1:22138",
  "shards": 1,
  "ready": false,
  "not_ready": ["link to Hands is down"],
  "records": 1234,
  "connections": {"client": 10, "peer": 3},
  "commands": {
    "IAMAT":   {"ok": 5, "invalid": 0},
    "WHATSAT": {"ok": 2, "invalid": 1},
    "other":   {"invalid": 3}
  },
  "latency_seconds":        {"count": 7, "p50": 0.00002, "p99": 0.0001, "p999": 0.0002, "max": 0.0003},
  "latency_recent_seconds": {"count": 3, "p50": 0.00002, "p99": 0.0001, "p999": 0.0002, "max": 0.0003},
  "links": [
    {"neighbour": "Hands", "addr": "127.0.0.1:22139", "state": "up", "shards_up": 1, "shards": 1,
     "behind_records": 0, "behind_seconds": 0.0}
  ]
}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(name: &str, uptime: f64, iamat: u64, whatsat: u64) -> Status {
        Status {
            server: Some(name.to_owned()),
            uptime_seconds: Some(uptime),
            ready: Some(true),
            records: Some(iamat),
            commands: Commands {
                iamat: Counts {
                    ok: Some(iamat),
                    invalid: Some(0),
                },
                whatsat: Counts {
                    ok: Some(whatsat),
                    invalid: Some(0),
                },
                other: Counts::default(),
            },
            latency_recent_seconds: Latency {
                count: Some(10),
                p99: Some(0.000_085),
                ..Latency::default()
            },
            ..Status::default()
        }
    }

    fn link(neighbour: &str, state: &str, up: u64, of: u64, behind: u64, secs: f64) -> LinkStatus {
        LinkStatus {
            neighbour: Some(neighbour.to_owned()),
            state: Some(state.to_owned()),
            shards_up: Some(up),
            shards: Some(of),
            behind_records: Some(behind),
            behind_seconds: Some(secs),
            ..LinkStatus::default()
        }
    }

    fn up(name: &str, prev: Option<Sample>, now: Sample) -> ServerView {
        ServerView {
            name: name.to_owned(),
            now: Fetched::Up(Box::new(now)),
            prev,
        }
    }

    fn sample(status: Status, taken: Instant) -> Sample {
        Sample { status, taken }
    }

    /// The line of the server row of `name` in a rendered table.
    fn row<'a>(table: &'a str, name: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
    }

    /// The cells of `name`'s row, by whitespace.
    fn cells<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
        row(table, name).split_whitespace().collect()
    }

    /// The lines under `name`'s row, up to the next server row.
    fn under<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
        table
            .lines()
            .skip_while(|l| l.split_whitespace().next() != Some(name))
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .collect()
    }

    /// A herd of four in every state: Goloman up with two samples, one of its
    /// links partial and one down and its readiness failing; Hands down;
    /// Holiday up for the first time; Welsh without an admin endpoint.
    fn mixed_herd() -> Vec<ServerView> {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let mut goloman = status("Goloman", 30.0, 1_200, 40);
        goloman.ready = Some(false);
        goloman.not_ready = vec!["link to Hands is down".to_owned()];
        goloman.links = vec![
            link("Hands", "down", 0, 2, 17, 1.5),
            link("Holiday", "partial", 1, 2, 0, 0.0),
            link("Wilkes", "up", 2, 2, 3, 0.000_4),
        ];
        let mut goloman_before = goloman.clone();
        goloman_before.uptime_seconds = Some(28.0);
        goloman_before.commands.iamat.ok = Some(1_000);
        goloman_before.commands.whatsat.ok = Some(39);
        let mut holiday = status("Holiday", 5.0, 7, 0);
        holiday.latency_recent_seconds = Latency {
            count: Some(0),
            p99: Some(0.0),
            ..Latency::default()
        };
        vec![
            up(
                "Goloman",
                Some(sample(goloman_before, t0)),
                sample(goloman, t1),
            ),
            ServerView {
                name: "Hands".to_owned(),
                now: Fetched::Down("connection refused".to_owned()),
                prev: None,
            },
            up("Holiday", None, sample(holiday, t1)),
            ServerView {
                name: "Welsh".to_owned(),
                now: Fetched::NoAdmin,
                prev: None,
            },
        ]
    }

    #[test]
    fn the_example_document_parses_field_by_field() {
        let s = Status::parse(EXAMPLE_STATUS.as_bytes()).expect("parses");
        assert_eq!(s.server.as_deref(), Some("Goloman"));
        assert_eq!(s.uptime_seconds, Some(12.5));
        assert_eq!(s.ready, Some(false));
        assert_eq!(s.not_ready, ["link to Hands is down"]);
        assert_eq!(s.records, Some(1234));
        assert_eq!(s.connections.client, Some(10));
        assert_eq!(s.commands.iamat.total(), Some(5));
        assert_eq!(s.commands.whatsat.total(), Some(3));
        assert_eq!(s.commands.other.total(), Some(3), "ok missing counts 0");
        assert_eq!(s.latency_recent_seconds.p99, Some(0.0001));
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.links[0].neighbour.as_deref(), Some("Hands"));
        assert_eq!(s.links[0].behind_records, Some(0));
        assert_eq!(s.links[0].behind_seconds, Some(0.0));
    }

    #[test]
    fn missing_null_unknown_and_mistyped_fields_never_fail_the_document() {
        let s = Status::parse(b"{}").expect("empty object");
        assert_eq!(s, Status::default());
        let s = Status::parse(
            br#"{"records": "many", "ready": null, "future": {"x": 1},
                 "commands": {"IAMAT": {"ok": -1, "invalid": 2}, "WHATSAT": 7},
                 "links": [{"neighbour": "Hands", "behind_seconds": null, "state": 3}],
                 "latency_recent_seconds": "fast"}"#,
        )
        .expect("odd fields");
        assert_eq!(s.records, None);
        assert_eq!(s.ready, None);
        assert_eq!(
            s.commands.iamat.total(),
            Some(2),
            "a negative count is no count"
        );
        assert_eq!(s.commands.whatsat, Counts::default());
        assert_eq!(s.latency_recent_seconds, Latency::default());
        assert_eq!(s.links[0].neighbour.as_deref(), Some("Hands"));
        assert_eq!(s.links[0].state, None);
        assert_eq!(s.links[0].behind_seconds, None);
        assert!(Status::parse(b"<html>").is_err(), "not JSON");
        assert!(Status::parse(b"[]").is_err(), "not an object");
        assert!(Status::parse(br#"{"records": 1"#).is_err(), "truncated");
    }

    #[test]
    fn a_rate_is_the_counter_difference_over_the_time_between_samples() {
        let t0 = Instant::now();
        let a = sample(status("A", 10.0, 100, 0), t0);
        let b = sample(status("A", 12.0, 400, 0), t0 + Duration::from_secs(2));
        let iamat = |s: &Status| s.commands.iamat.total();
        assert_eq!(rate(&a, &b, iamat), Some(150.0));
        let mut invalid = b.clone();
        invalid.status.commands.iamat.invalid = Some(100);
        assert_eq!(
            rate(&a, &invalid, iamat),
            Some(200.0),
            "invalid lines count"
        );
        let half = sample(status("A", 10.5, 150, 0), t0 + Duration::from_millis(500));
        assert_eq!(rate(&a, &half, iamat), Some(100.0));
    }

    #[test]
    fn no_rate_across_a_restart_or_without_time_or_counter() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let iamat = |s: &Status| s.commands.iamat.total();
        let a = sample(status("A", 100.0, 500, 0), t0);
        // Restarted and already past the old count: only uptime tells.
        let restarted = sample(status("A", 0.5, 900, 0), t1);
        assert_eq!(rate(&a, &restarted, iamat), None);
        // Counter went down, uptime unknown.
        let mut no_uptime = sample(status("A", 0.0, 20, 0), t1);
        no_uptime.status.uptime_seconds = None;
        assert_eq!(rate(&a, &no_uptime, iamat), None);
        assert_eq!(
            rate(&a, &sample(status("A", 100.0, 600, 0), t0), iamat),
            None,
            "no time"
        );
        assert_eq!(rate(&a, &a, iamat), None, "same sample");
        let mut missing = sample(status("A", 101.0, 0, 0), t1);
        missing.status.commands = Commands::default();
        assert_eq!(rate(&a, &missing, iamat), None, "counter missing");
        // Samples handed in the wrong order.
        assert_eq!(rate(&sample(status("A", 1.0, 0, 0), t1), &a, iamat), None);
    }

    #[test]
    fn durations_read_in_human_units() {
        assert_eq!(human_seconds(0.0), "0s");
        assert_eq!(human_seconds(0.000_000_4), "0µs");
        assert_eq!(human_seconds(0.000_02), "20µs");
        assert_eq!(human_seconds(0.0001), "100µs");
        assert_eq!(human_seconds(0.000_999_7), "1.0ms", "rounds up into ms");
        assert_eq!(human_seconds(0.0015), "1.5ms");
        assert_eq!(human_seconds(0.25), "250.0ms");
        assert_eq!(human_seconds(0.999_97), "1.00s");
        assert_eq!(human_seconds(2.5), "2.50s");
        assert_eq!(human_seconds(95.2), "95s");
        assert_eq!(human_seconds(-1.0), "-");
        assert_eq!(human_seconds(f64::NAN), "-");
    }

    #[test]
    fn the_table_of_a_mixed_herd_shows_every_state() {
        let table = render(&mixed_herd());
        // Printed by `cargo test -- --nocapture`: how `herd status --once` looks.
        println!("{table}");
        assert_eq!(
            table.lines().next(),
            Some("4 servers: 2 up, 1 down, 1 without admin endpoint; 1 not ready")
        );
        assert_eq!(
            cells(&table, "SERVER"),
            [
                "SERVER",
                "STATE",
                "READY",
                "RECORDS",
                "IAMAT/s",
                "WHATSAT/s",
                "P99"
            ]
        );
        // 200 IAMATs and 1 WHATSAT over 2 s.
        assert_eq!(
            cells(&table, "Goloman"),
            ["Goloman", "up", "no", "1200", "100.0", "0.5", "85µs"]
        );
        assert_eq!(
            under(&table, "Goloman"),
            [
                "  not ready: link to Hands is down",
                "  link Hands    down         lag 17 records  1.50s",
                "  link Holiday  partial 1/2  lag  0 records     0s",
                "  link Wilkes   up           lag  3 records  400µs",
            ]
        );
        assert_eq!(
            cells(&table, "Hands"),
            ["Hands", "down", "connection", "refused"]
        );
        assert!(under(&table, "Hands").is_empty());
        // First sample: no rates yet; an idle second: no latency.
        assert_eq!(
            cells(&table, "Holiday"),
            ["Holiday", "up", "yes", "7", "-", "-", "-"]
        );
        assert_eq!(
            cells(&table, "Welsh"),
            ["Welsh", "-", "no", "admin", "endpoint"]
        );
    }

    #[test]
    fn columns_are_aligned_whatever_the_widths() {
        let mut views = mixed_herd();
        views[0].name = "A-very-long-server-name".to_owned();
        let table = render(&views);
        let header = row(&table, "SERVER");
        // The header is ASCII: its byte offsets are char offsets.
        let at = |h: &str| header.find(h).expect("header");
        for name in ["A-very-long-server-name", "Holiday"] {
            let chars: Vec<char> = row(&table, name).chars().collect();
            // Text columns start where their header starts...
            let state: String = chars[at("STATE")..].iter().take(3).collect();
            assert_eq!(state, "up ", "{table}");
            assert_eq!(chars[at("STATE") - 1], ' ', "{table}");
            // ...numbers end where their header ends.
            for h in ["RECORDS", "IAMAT/s", "WHATSAT/s", "P99"] {
                let end = at(h) + h.len();
                assert_ne!(chars[end - 1], ' ', "{h} of {name}:\n{table}");
                assert!(end == chars.len() || chars[end] == ' ', "{h}:\n{table}");
            }
        }
        // A reason takes the place of the columns after STATE.
        for name in ["Hands", "Welsh"] {
            let chars: Vec<char> = row(&table, name).chars().collect();
            assert_ne!(chars[at("READY")], ' ', "{table}");
            assert_eq!(chars[at("READY") - 1], ' ', "{table}");
        }
        // Link lines line up with each other: states start, lags end, in one
        // column each.
        let links: Vec<Vec<char>> = table
            .lines()
            .filter(|l| l.starts_with("  link "))
            .map(|l| l.chars().collect())
            .collect();
        assert_eq!(links.len(), 3);
        let state_at: Vec<usize> = links
            .iter()
            .map(|l| {
                let name_end = (7..l.len()).find(|&i| l[i] == ' ').expect("name");
                (name_end..l.len()).find(|&i| l[i] != ' ').expect("state")
            })
            .collect();
        assert!(state_at.windows(2).all(|w| w[0] == w[1]), "{table}");
        assert!(
            links.windows(2).all(|w| w[0].len() == w[1].len()),
            "{table}"
        );
    }

    #[test]
    fn a_link_shows_which_origins_it_carries_along_the_trees() {
        let t0 = Instant::now();
        let mut s = status("A", 1.0, 0, 0);
        let flood = |state: &str, eager, grafts| FloodStatus {
            state: Some(state.to_owned()),
            eager_origins: Some(eager),
            origins: Some(5),
            grafts: Some(grafts),
        };
        s.links = vec![
            LinkStatus {
                flood: Some(flood("tree", 2, 0)),
                ..link("B", "up", 1, 1, 0, 0.0)
            },
            LinkStatus {
                flood: Some(flood("lazy", 0, 3)),
                ..link("C", "up", 1, 1, 0, 0.0)
            },
            LinkStatus {
                flood: Some(flood("eager", 5, 0)),
                ..link("D", "up", 1, 1, 0, 0.0)
            },
        ];
        let table = render(&[up("A", None, sample(s, t0))]);
        assert_eq!(
            under(&table, "A"),
            [
                "  link B  up  lag 0 records  0s  tree 2/5",
                "  link C  up  lag 0 records  0s  lazy grafts 3",
                "  link D  up  lag 0 records  0s  eager",
            ]
        );
        let parsed: LinkStatus = serde_json::from_str(
            r#"{"neighbour": "B", "flood": {"state": "tree", "eager_origins": 2, "origins": 5}}"#,
        )
        .unwrap();
        assert_eq!(parsed.flood.map(|f| f.shown()).as_deref(), Some("tree 2/5"));
    }

    #[test]
    fn a_restarted_server_shows_no_rates() {
        let t0 = Instant::now();
        let view = up(
            "A",
            Some(sample(status("A", 500.0, 1_000, 10), t0)),
            sample(status("A", 0.9, 2_000, 20), t0 + Duration::from_secs(1)),
        );
        let table = render(&[view]);
        assert_eq!(
            cells(&table, "A"),
            ["A", "up", "yes", "2000", "-", "-", "85µs"]
        );
    }

    #[test]
    fn a_down_reason_is_one_short_line() {
        let view = ServerView {
            name: "A".to_owned(),
            now: Fetched::Down(format!("{}\nsecond line", "x".repeat(200))),
            prev: None,
        };
        let table = render(&[view]);
        let line = row(&table, "A");
        assert!(line.ends_with('…'), "{line}");
        assert!(!table.contains("second line"), "{table}");
        assert!(line.chars().count() < 100, "{line}");
    }

    #[test]
    fn not_ready_reasons_are_shortened_and_counted() {
        let t0 = Instant::now();
        let mut s = status("A", 1.0, 0, 0);
        s.ready = Some(false);
        s.not_ready = (1..=5).map(|i| format!("reason {i}")).collect();
        let table = render(&[up("A", None, sample(s.clone(), t0))]);
        assert_eq!(
            under(&table, "A"),
            ["  not ready: reason 1; reason 2; reason 3; 2 more"]
        );
        s.not_ready.clear();
        let table = render(&[up("A", None, sample(s, t0))]);
        assert_eq!(under(&table, "A"), ["  not ready: no reason given"]);
    }

    #[test]
    fn a_server_answering_under_another_name_is_pointed_out() {
        let t0 = Instant::now();
        let table = render(&[up("A", None, sample(status("B", 1.0, 0, 0), t0))]);
        assert_eq!(
            under(&table, "A"),
            ["  note: the server at this admin address says it is B"]
        );
    }

    #[test]
    fn a_document_with_nothing_in_it_renders_dashes() {
        let t0 = Instant::now();
        let table = render(&[up(
            "A",
            Some(sample(Status::default(), t0)),
            sample(Status::default(), t0 + Duration::from_secs(1)),
        )]);
        assert_eq!(cells(&table, "A"), ["A", "up", "-", "-", "-", "-", "-"]);
        assert!(under(&table, "A").is_empty());
        let odd = Status {
            links: vec![LinkStatus::default()],
            ..Status::default()
        };
        let table = render(&[up("A", None, sample(odd, t0))]);
        assert_eq!(under(&table, "A"), ["  link ?  -  lag - records  -"]);
    }

    #[test]
    fn an_empty_herd_renders_a_header_only() {
        let table = render(&[]);
        assert_eq!(
            table,
            "0 servers: 0 up, 0 down\n\nSERVER  STATE  READY  RECORDS  IAMAT/s  WHATSAT/s  P99\n"
        );
    }
}
