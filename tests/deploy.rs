//! What `deploy/` ships matches the server it is for: the alert rules
//! (`deploy/prometheus/`) and the Grafana dashboard (`deploy/grafana/`)
//! name only metrics, and match only label values, that the `/metrics` of a
//! live server has; the packaged config and unit agree with each other.
//!
//! The live server runs as a real process with a neighbour (so the link
//! families exist) and a journal (so the `herd_journal_` families do).
//! With `promtool` on PATH the dashboard's queries are also parsed as
//! PromQL; `HERD_REQUIRE_PROMTOOL=1` (set by CI, which installs it) makes
//! its absence a failure instead of a skip.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use herd::pure::config::{Config, PersistenceConfig};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use support::*;

/// A file of the repository, as text.
fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// What a Prometheus text page holds: each sample name with the label
/// sets it appears with, and the family names of its `# TYPE` lines.
#[derive(Default)]
struct Live {
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    families: BTreeSet<String>,
}

/// Parses Prometheus text format: the sample lines (`name value` or
/// `name{a="x",b="y"} value`) and the family names of `# TYPE` lines.
fn parse_exposition(text: &str) -> Live {
    let mut live = Live::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(family) = rest.split(' ').next() {
                live.families.insert(family.to_owned());
            }
        }
    }
    let series = &mut live.series;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => {
                let (inside, _) = rest.rsplit_once('}').expect("labels end with }");
                (name, parse_matchers(inside))
            }
            None => (line.split(' ').next().unwrap_or(line), Vec::new()),
        };
        let labels = labels
            .into_iter()
            .map(|(label, op, value)| {
                assert_eq!(op, "=", "{line}");
                (label, value)
            })
            .collect();
        series.entry(name.to_owned()).or_default().push(labels);
    }
    live
}

/// One matcher of a selector: `(label, operator, value)`.
type Matcher = (String, String, String);

/// The matchers inside the braces of a selector (or the labels of an
/// exposition line), each value unescaped.
fn parse_matchers(inside: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = inside.trim();
    while !rest.is_empty() {
        let label_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or_else(|| panic!("no operator after a label in {{{inside}}}"));
        let label = rest[..label_end].to_owned();
        rest = rest[label_end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .unwrap_or_else(|| panic!("no operator in {{{inside}}}"));
        rest = rest[op.len()..].trim_start();
        assert!(rest.starts_with('"'), "unquoted value in {{{inside}}}");
        let mut value = String::new();
        let mut chars = rest[1..].char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i + 2,
                Some((_, '\\')) => {
                    if let Some((_, c)) = chars.next() {
                        value.push(if c == 'n' { '\n' } else { c });
                    }
                }
                Some((_, c)) => value.push(c),
                None => panic!("unterminated value in {{{inside}}}"),
            }
        };
        out.push((label, op.to_owned(), value));
        rest = rest[end..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    out
}

/// Every use of a `herd_` metric in `text` (a query, a rules file, a JSON
/// document): its name and the matchers in the braces after it, if any.
/// A bare `herd_` (the prefix, in prose) is not a use.
fn metric_uses(text: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut uses = Vec::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut at = 0;
    while let Some(found) = text[at..].find("herd_") {
        let start = at + found;
        let mut end = start;
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        at = end;
        if start > 0 && word(bytes[start - 1]) {
            continue;
        }
        // A colon ends a name in prose ("herd_x: ..."), not in a query.
        let name = text[start..end].trim_end_matches(':');
        if name.ends_with('_') {
            continue;
        }
        let matchers = if bytes.get(end) == Some(&b'{') {
            let close = text[end..].find('}').expect("selector braces close") + end;
            // JSON strings carry the query with escaped quotes.
            parse_matchers(&text[end + 1..close].replace("\\\"", "\""))
        } else {
            Vec::new()
        };
        uses.push((name.to_owned(), matchers));
    }
    uses
}

/// Where a name is used: in a query, only sample names select anything (a
/// histogram's `_bucket`, `_sum` and `_count`, never its bare family name);
/// in prose, a family name is a name of /metrics too.
#[derive(Clone, Copy, PartialEq)]
enum Used {
    InQueries,
    InProse,
}

/// What in `text` does not match `live`: metric names it lacks, and label
/// values matched with `=` or `=~` (a plain alternation) that no series of
/// the metric has. Labels Prometheus adds (`instance`, `job`), labels whose
/// values come from a config (`neighbour`: server names; `shard`) and
/// Grafana variables are not herd's to have.
fn missing_from(text: &str, live: &Live, used: Used) -> BTreeSet<String> {
    let mut missing = BTreeSet::new();
    for (name, matchers) in metric_uses(text) {
        let Some(series) = live.series.get(&name) else {
            if !(used == Used::InProse && live.families.contains(&name)) {
                missing.insert(name);
            }
            continue;
        };
        for (label, op, value) in matchers {
            let not_herds = ["instance", "job", "neighbour", "shard"];
            if not_herds.contains(&label.as_str()) || value.contains('$') {
                continue;
            }
            let values: Vec<&str> = match op.as_str() {
                "=" => vec![value.as_str()],
                "=~" if value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_|.+".contains(c)) =>
                {
                    value.split('|').collect()
                }
                _ => continue,
            };
            for v in values {
                if !series
                    .iter()
                    .any(|s| s.get(&label).map(String::as_str) == Some(v))
                {
                    missing.insert(format!("{name}{{{label}=\"{v}\"}}"));
                }
            }
        }
    }
    missing
}

/// The `/metrics` of a live server with a neighbour and a journal, once
/// its shards have published their links and journal (four times a second).
fn live_metrics() -> Live {
    let mut config = herd_of(&["Goloman", "Hands"], &[("Goloman", "Hands")]);
    config.persistence = Some(PersistenceConfig {
        dir: "journal".to_owned(),
        fsync: Default::default(),
    });
    let herd = Herd::start(config, 2);
    let text = eventually("link and journal series in /metrics", || {
        let (code, text) = try_http(herd.admin_addr("Goloman"), "GET", "/metrics")?;
        let published = text.contains("herd_link_up{neighbour=\"Hands\",shard=\"1\"}")
            && text.contains("herd_journal_bytes{shard=\"1\"}");
        (code == 200 && published).then_some(text)
    });
    parse_exposition(&text)
}

#[test]
fn alert_rules_and_dashboard_use_only_what_a_live_server_exports() {
    let live = live_metrics();
    // The parser itself finds what it must, or an empty result would pass.
    assert!(live.series["herd_refused_total"]
        .iter()
        .any(|s| s.get("reason").map(String::as_str) == Some("per_ip")));
    assert!(live
        .series
        .contains_key("herd_command_duration_seconds_bucket"));
    assert!(live.series.contains_key("herd_journal_sync_seconds_total"));
    assert!(live.families.contains("herd_command_duration_seconds"));
    // And the comparison finds what is not there.
    let made_up = "rate(herd_refused_total{reason=\"nonsense\"}[5m]) + herd_no_such_thing \
                   + sum(herd_command_duration_seconds)";
    let owned = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        missing_from(made_up, &live, Used::InQueries),
        owned(&[
            "herd_command_duration_seconds",
            "herd_no_such_thing",
            "herd_refused_total{reason=\"nonsense\"}",
        ])
    );
    assert_eq!(
        missing_from(made_up, &live, Used::InProse),
        owned(&[
            "herd_no_such_thing",
            "herd_refused_total{reason=\"nonsense\"}"
        ])
    );

    // The queries: each rule's expression (one line each, so that all are
    // read here) and each of the dashboard's.
    let rules = repo_file("deploy/prometheus/herd-alerts.yml");
    let exprs: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect();
    let alerts = rules.lines().filter(|l| l.trim().starts_with("- alert: "));
    assert_eq!(
        exprs.len(),
        alerts.count(),
        "a rule without a one-line expr"
    );
    let dashboard: Value =
        serde_json::from_str(&repo_file("deploy/grafana/herd.json")).expect("valid JSON");
    let queries = dashboard_queries(&dashboard);
    let mut used = 0;
    for query in exprs.iter().chain(&queries) {
        used += metric_uses(query).len();
        let missing = missing_from(query, &live, Used::InQueries);
        assert!(
            missing.is_empty(),
            "the query {query} uses what /metrics does not have: {missing:?}"
        );
    }
    assert!(used > 40, "the queries use only {used} metrics");

    // Everything else in the files (descriptions, the test cases' series).
    for path in [
        "deploy/prometheus/herd-alerts.yml",
        "deploy/prometheus/herd-alerts.test.yml",
        "deploy/grafana/herd.json",
    ] {
        let text = repo_file(path);
        assert!(metric_uses(&text).len() > 10, "{path} uses few metrics");
        let missing = missing_from(&text, &live, Used::InProse);
        assert!(
            missing.is_empty(),
            "{path} names what /metrics does not have: {missing:?}"
        );
    }
}

#[test]
fn every_alert_has_a_summary_a_description_and_test_cases() {
    let rules = repo_file("deploy/prometheus/herd-alerts.yml");
    let tests = repo_file("deploy/prometheus/herd-alerts.test.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let count = |text: &str, what: &str| text.lines().filter(|l| l.trim() == what).count();
    assert_eq!(
        rules
            .lines()
            .filter(|l| l.trim().starts_with("summary: "))
            .count(),
        alerts.len()
    );
    assert_eq!(count(&rules, "description: >-"), alerts.len());
    for alert in alerts {
        // One case where it is expected to fire, one where it is not.
        assert!(
            count(&tests, &format!("alertname: {alert}")) >= 2,
            "{alert} lacks test cases"
        );
    }
}

/// The dashboard's queries, each with the Grafana variables put in as a
/// Prometheus server would see them.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    let top = dashboard["panels"].as_array().expect("panels");
    // A collapsed row holds its panels inside it.
    let nested = top
        .iter()
        .flat_map(|p| p["panels"].as_array().into_iter().flatten());
    for panel in top.iter().chain(nested) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target has an expr");
            queries.push(
                expr.replace("$__rate_interval", "1m")
                    .replace("$instance", ".*"),
            );
        }
    }
    queries
}

#[test]
fn the_dashboard_is_importable_and_its_queries_parse() {
    let dashboard: Value =
        serde_json::from_str(&repo_file("deploy/grafana/herd.json")).expect("valid JSON");
    assert_eq!(dashboard["uid"], "herd");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(variable("instance")["type"], "query");
    assert_eq!(
        variable("instance")["definition"],
        "label_values(herd_build_info, instance)"
    );
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(ids.insert(panel["id"].as_u64().expect("id")), "{panel}");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{panel}");
        }
        if panel["type"] == "row" {
            continue;
        }
        // Every panel reads the chosen data source and the chosen servers.
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(expr.contains("instance=~\"$instance\""), "{expr}");
        }
    }
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "{queries:?}");

    // PromQL syntax: promtool parses each query as a recording rule.
    if Command::new("promtool").arg("--version").output().is_err() {
        let why = "promtool is not installed (apt-get install prometheus): the dashboard's \
                   queries were not parsed as PromQL";
        assert!(
            std::env::var("HERD_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "{why} (HERD_REQUIRE_PROMTOOL=1 makes that a failure)"
        );
        eprintln!("SKIPPED {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("dashboard-queries.yml");
    let mut text = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        text.push_str(&format!(
            "      - record: herd_dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(query).unwrap()
        ));
    }
    std::fs::write(&rules, text).unwrap();
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool refuses a dashboard query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_packaged_config_is_valid_and_journals_where_the_unit_may_write() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/herd.json");
    let out = Command::new(herd_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.persistence.as_ref().map(|p| p.dir.as_str()),
        Some("/var/lib/herd")
    );
    // Loopback only: safe to start as it is, before the operator edits it.
    for server in &config.servers {
        assert!(config.listen_addr(&server.name).unwrap().ip().is_loopback());
    }
    let unit = repo_file("deploy/herd@.service");
    let line = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"))
            .to_owned()
    };
    assert_eq!(line("StateDirectory="), "herd");
    assert_eq!(line("LogsDirectory="), "herd");
    assert!(
        line("ExecStart=").starts_with(
            "/usr/bin/herd serve %i --config /etc/herd/herd.json --log-dir /var/log/herd"
        ),
        "the unit runs the packaged binary on the packaged config"
    );
    // The package puts the binary and the config where the unit looks.
    let manifest = repo_file("Cargo.toml");
    for asset in [
        "[\"target/release/herd\", \"usr/bin/\", \"755\"]",
        "[\"deploy/herd.json\", \"etc/herd/herd.json\", \"640\"]",
        "[\"deploy/herd@.service\", \"usr/lib/systemd/system/\", \"644\"]",
    ] {
        assert!(
            manifest.contains(asset),
            "Cargo.toml lacks the asset {asset}"
        );
    }
}
