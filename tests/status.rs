//! `herd status --once` as a script meets it: the real binary reading the
//! admin endpoints of a real herd, one server of it killed.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use herd::pure::config::AdminListen;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use support::*;

/// One server row of a `--once` table: its cells, and the lines under it
/// (notes and links), trimmed.
#[derive(Debug)]
struct Row {
    cells: Vec<String>,
    under: Vec<String>,
}

impl Row {
    /// The line under this row for the link to `neighbour`, as words:
    /// `["link", neighbour, state, ...]`.
    fn link(&self, neighbour: &str) -> Option<Vec<&str>> {
        self.under
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|words| words.len() > 2 && words[0] == "link" && words[1] == neighbour)
    }
}

/// Runs `herd status --config CONFIG --once`; it must exit 0 whatever the
/// herd's state. Returns what it printed.
fn status_once(config: &Path) -> String {
    let out = Command::new(herd_bin())
        .arg("status")
        .arg("--config")
        .arg(config)
        .arg("--once")
        .output()
        .unwrap();
    assert!(out.status.success(), "herd status failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "--once clears no screen: {text:?}");
    text
}

/// The server rows of a table, by name: lines after the header that start
/// in the first column, each with the indented lines that follow it.
fn rows(table: &str) -> Vec<(String, Row)> {
    let mut rows: Vec<(String, Row)> = Vec::new();
    let body = table
        .lines()
        .skip_while(|l| !l.starts_with("SERVER "))
        .skip(1);
    for line in body {
        if line.starts_with(' ') {
            if let Some((_, row)) = rows.last_mut() {
                row.under.push(line.trim().to_owned());
            }
        } else if let Some(name) = line.split_whitespace().next() {
            let cells = line.split_whitespace().map(str::to_owned).collect();
            rows.push((
                name.to_owned(),
                Row {
                    cells,
                    under: Vec::new(),
                },
            ));
        }
    }
    rows
}

/// Runs `herd status --once` until `check` accepts its table, or fails the
/// test with the last table after PATIENCE.
fn status_until(config: &Path, what: &str, check: impl Fn(&[(String, Row)]) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let table = status_once(config);
        if check(&rows(&table)) {
            return table;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last table:\n{table}"
        );
    }
}

fn row<'a>(rows: &'a [(String, Row)], name: &str) -> Option<&'a Row> {
    rows.iter().find(|(n, _)| n == name).map(|(_, r)| r)
}

fn iamat(client: &str, i: usize) -> String {
    format!(
        "IAMAT {client} +34.068930-118.445127 {}.959498503",
        1_621_464_827 + i
    )
}

// Needs each server's admin endpoint (GET /status), which lands on main
// separately: until then every server of this herd shows as down.
#[test]
fn status_shows_a_killed_server_down_and_the_links_to_it_down() {
    let mut config = herd_of(
        &["Alpha", "Bravo", "Charlie", "Delta"],
        &[
            ("Alpha", "Bravo"),
            ("Bravo", "Charlie"),
            ("Alpha", "Charlie"),
        ],
    );
    // Delta is never started: the view must not even try to reach it.
    config.servers[3].admin_listen = AdminListen::Off;
    let mut herd = start_some(config, &["Alpha", "Bravo", "Charlie"]);

    let clients = ["kiwi.cs.ucla.edu", "lime.cs.ucla.edu", "pear.cs.ucla.edu"];
    let lines: Vec<String> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| iamat(c, i))
        .collect();
    let replies = send_all(herd.addr("Alpha"), &lines);
    assert!(
        replies.iter().all(|r| r.starts_with("AT Alpha ")),
        "{replies:?}"
    );
    for name in ["Bravo", "Charlie"] {
        for client in clients {
            eventually(&format!("{client} on {name}"), || {
                stored_at_line(herd.addr(name), client)
            });
        }
    }
    // The links to Charlie settle on their flood trees once Charlie's
    // answer to their opening comes; records reach Charlie before that (from
    // Alpha), so it is waited for: a link's tree state is what it last knew.
    status_until(
        &herd.config_path,
        "links to Charlie on their trees",
        |rows| {
            ["Alpha", "Bravo"].iter().all(|name| {
                row(rows, name)
                    .and_then(|r| r.link("Charlie"))
                    .is_some_and(|l| l[2] == "up" && l.ends_with(&["tree", "1/4"]))
            })
        },
    );
    herd.kill("Charlie");

    let table = status_until(&herd.config_path, "Charlie down in the view", |rows| {
        let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        if names != ["Alpha", "Bravo", "Charlie", "Delta"] {
            return false;
        }
        let survivors_see_it = ["Alpha", "Bravo"].iter().all(|name| {
            row(rows, name).is_some_and(|r| {
                r.cells.get(1).map(String::as_str) == Some("up")
                    && r.cells.get(3).map(String::as_str) == Some("3")
                    && r.link("Charlie").is_some_and(|l| l[2] == "down")
            })
        });
        let charlie_down = row(rows, "Charlie")
            .is_some_and(|r| r.cells.get(1).map(String::as_str) == Some("down"));
        survivors_see_it && charlie_down
    });

    // Now the whole table, line by line.
    let rows = rows(&table);
    let charlie = row(&rows, "Charlie").unwrap();
    assert_eq!(
        charlie.cells[1..],
        ["down", "connection", "refused"],
        "{table}"
    );
    assert!(charlie.under.is_empty(), "{table}");
    let delta = row(&rows, "Delta").unwrap();
    assert_eq!(
        delta.cells[1..],
        ["-", "no", "admin", "endpoint"],
        "{table}"
    );
    for (name, other) in [("Alpha", "Bravo"), ("Bravo", "Alpha")] {
        let r = row(&rows, name).unwrap();
        assert_eq!(r.cells.len(), 7, "{name}: {table}");
        // No IAMAT came between the two samples: a rate, and it is zero.
        assert_eq!(r.cells[4], "0.0", "{name} IAMAT/s: {table}");
        assert_eq!(r.cells[5], "0.0", "{name} WHATSAT/s: {table}");
        assert_eq!(
            r.link(other).map(|l| l[2].to_owned()),
            Some("up".to_owned()),
            "{name} to {other}: {table}"
        );
        let to_charlie = r.link("Charlie").unwrap();
        // `link Charlie down lag N records T FLOOD`, FLOOD being what the
        // link sent along the flood trees when it was last up (`tree 1/4`:
        // Charlie's own records, of four servers').
        assert_eq!(to_charlie[3], "lag", "{table}");
        assert!(to_charlie[4].parse::<u64>().is_ok(), "{table}");
        assert_eq!(to_charlie[5], "records", "{table}");
        assert_eq!(to_charlie[7..], ["tree", "1/4"], "{table}");
    }
    assert!(
        table.starts_with("4 servers: 2 up, 1 down, 1 without admin endpoint"),
        "{table}"
    );
}

#[test]
fn status_of_a_herd_that_is_not_running_shows_every_server_down_and_exits_0() {
    let config = herd_of(&["Alpha", "Bravo"], &[("Alpha", "Bravo")]);
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let started = Instant::now();
    let table = status_once(&path);
    // Two rounds a second apart, each bounded: never stuck on dead servers.
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
    let rows = rows(&table);
    assert_eq!(rows.len(), 2, "{table}");
    for (name, r) in &rows {
        assert_eq!(
            r.cells[1..],
            ["down", "connection", "refused"],
            "{name}: {table}"
        );
    }
    assert!(table.starts_with("2 servers: 0 up, 2 down\n"), "{table}");
}

#[test]
fn status_of_a_bad_config_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "bad.json", "{\"servers\": [,]}");
    let out = Command::new(herd_bin())
        .arg("status")
        .arg("--config")
        .arg(&path)
        .arg("--once")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1 column"), "{err}");
}
