//! Flood trees in real herds (PROTOCOL.md, "Flood trees"): each record
//! crosses N - 1 links and none comes back, counted by the servers' own
//! metrics; an eager link that dies is repaired over a lazy one and the
//! graft pruned once it heals; a slow link does not keep records from
//! anyone; a server held to the earlier link rules is flooded to and its
//! records reach everyone. Real `herd serve` processes on loopback, every
//! wait bounded.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use herd::pure::config::Config;
use std::net::SocketAddr;
use support::proxy::Proxy;
use support::*;

const DEFAULT: [&str; 5] = ["Goloman", "Hands", "Holiday", "Wilkes", "Welsh"];

/// One series of a server's `/metrics`, or 0 when it is not there yet.
fn metric_of(herd: &Herd, server: &str, series: &str) -> f64 {
    try_http(herd.admin_addr(server), "GET", "/metrics")
        .and_then(|(_, text)| metric(&text, series))
        .unwrap_or(0.0)
}

/// The sum, over `servers` and their neighbours, of a per-neighbour
/// series `family{neighbour="..."}`.
fn sum_over_links(herd: &Herd, servers: &[&str], family: &str) -> f64 {
    servers
        .iter()
        .map(|s| {
            let server = herd.config.server(s).unwrap();
            server
                .neighbours
                .iter()
                .map(|n| metric_of(herd, s, &format!("{family}{{neighbour=\"{n}\"}}")))
                .sum::<f64>()
        })
        .sum()
}

/// Waits until every link of every server sends along trees (both ends
/// said the same graph): what a herd of this version does by itself.
fn wait_for_trees(herd: &Herd, servers: &[&str]) {
    wait_for_trees_but(herd, servers, "");
}

/// [`wait_for_trees`], but for links to `but`.
fn wait_for_trees_but(herd: &Herd, servers: &[&str], but: &str) {
    for s in servers {
        let server = herd.config.server(s).unwrap().clone();
        for n in server.neighbours.iter().filter(|n| *n != but) {
            let series = format!("herd_link_tree{{neighbour=\"{n}\",shard=\"0\"}}");
            eventually(&format!("{s}'s link to {n} sends along trees"), || {
                (metric_of(herd, s, &series) == 1.0).then_some(())
            });
        }
    }
}

/// Sends `count` IAMATs of new clients to `addr` and waits until every
/// server in `servers` holds the last of them; returns the AT lines.
fn fill(
    herd: &Herd,
    addr: SocketAddr,
    prefix: &str,
    count: usize,
    servers: &[&str],
) -> Vec<String> {
    let lines: Vec<String> = (0..count)
        .map(|i| {
            format!(
                "IAMAT {prefix}{i} +34.068930-118.445127 {}",
                1_700_000_000 + i
            )
        })
        .collect();
    let replies = send_all(addr, &lines);
    for s in servers {
        for (i, want) in replies
            .iter()
            .enumerate()
            .step_by(count.div_ceil(10).max(1))
        {
            let got = eventually(&format!("{prefix}{i} on {s}"), || {
                stored_at_line(herd.addr(s), &format!("{prefix}{i}"))
            });
            assert_eq!(&got, want);
        }
        let last = count - 1;
        let got = eventually(&format!("{prefix}{last} on {s}"), || {
            stored_at_line(herd.addr(s), &format!("{prefix}{last}"))
        });
        assert_eq!(got, replies[last]);
    }
    replies
}

/// Records sent, duplicates received, and link bytes, all servers.
fn totals(herd: &Herd, servers: &[&str]) -> (f64, f64, f64) {
    (
        sum_over_links(herd, servers, "herd_link_records_sent_total"),
        sum_over_links(herd, servers, "herd_link_duplicates_total"),
        sum_over_links(herd, servers, "herd_link_bytes_sent_total"),
    )
}

/// Fills a herd of `servers` with `count` records at `first`, once its
/// links send along trees, and checks what its metrics counted: each
/// record sent exactly N - 1 times, none back, and link bytes within the
/// issue's budget of 1.25 (N - 1) copies of the records.
fn each_record_crosses_n_minus_1_links(mut config: Config, servers: &[&str], first: &str) {
    // Announcements every second, comparisons after two: no record in flight
    // on loopback takes that long, so no graft resends what is coming anyway.
    config.limits.link_announce_ms = 1000;
    let herd = Herd::start(config, 1);
    wait_for_trees(&herd, servers);
    let before = totals(&herd, servers);
    let count = 2000;
    let replies = fill(&herd, herd.addr(first), "tree", count, servers);
    let n = servers.len() as f64;
    let (records, duplicates, bytes) = eventually("every record counted", || {
        let t = totals(&herd, servers);
        let records = t.0 - before.0;
        (records >= (n - 1.0) * count as f64).then_some((records, t.1 - before.1, t.2 - before.2))
    });
    assert_eq!(
        records,
        (n - 1.0) * count as f64,
        "N - 1 copies of each record"
    );
    assert_eq!(duplicates, 0.0, "no record sent to a server that had it");
    let copy: usize = replies.iter().map(|r| r.len() + 1).sum();
    let budget = 1.25 * (n - 1.0) * copy as f64;
    assert!(
        bytes <= budget,
        "{bytes} link bytes for {count} records of {copy} bytes: over 1.25 (N - 1) copies ({budget})"
    );
    assert_eq!(
        sum_over_links(&herd, servers, "herd_link_grafts_total"),
        0.0
    );
}

#[test]
fn in_the_default_herd_each_record_crosses_four_links_and_none_comes_back() {
    each_record_crosses_n_minus_1_links(default_herd_on_free_ports(), &DEFAULT, "Goloman");
}

#[test]
fn in_a_ring_of_ten_with_chords_each_record_crosses_nine_links() {
    let names: Vec<String> = (0..10).map(|i| format!("S{i}")).collect();
    let pairs: Vec<(String, String)> = (0..10)
        .flat_map(|i| [1, 3].map(|d| (names[i].clone(), names[(i + d) % 10].clone())))
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let servers: Vec<&str> = names.iter().map(String::as_str).collect();
    each_record_crosses_n_minus_1_links(herd_of(&servers, &pairs), &servers, "S3");
}

/// The default herd in which Goloman reaches Holiday only through a proxy
/// the test holds: Goloman's own config names the proxy as Holiday's peer
/// address; everyone else's names Holiday itself. In Goloman's tree,
/// Goloman -> Holiday -> Welsh: the proxy carries an eager link.
fn herd_with_a_proxied_eager_link(limits: impl FnOnce(&mut Config)) -> (Herd, Proxy) {
    let mut config = default_herd_on_free_ports();
    config.limits.link_heartbeat_ms = 200;
    config.limits.link_timeout_ms = 500;
    limits(&mut config);
    let proxy = Proxy::start(config.peer_addr("Holiday").unwrap());
    let mut herd = start_some(config.clone(), &[]);
    for name in DEFAULT.iter().filter(|n| **n != "Goloman") {
        herd.start_server(name);
    }
    // Goloman reads a config of its own.
    let mut mine = config;
    let holiday = mine
        .servers
        .iter_mut()
        .find(|s| s.name == "Holiday")
        .unwrap();
    holiday.peer_listen = Some(proxy.addr.to_string());
    let path = write_file(herd.dir.path(), "goloman.json", &mine.to_json_pretty());
    let stderr = std::fs::File::create(herd.dir.path().join("Goloman.stderr")).unwrap();
    let child = serve_command("Goloman", &path, &herd.log_dir())
        .args(["--shards", "1", "--log-level", "debug"])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    herd.children.push(("Goloman".to_owned(), child));
    wait_listening(herd.addr("Goloman"));
    wait_for_trees(&herd, &DEFAULT);
    (herd, proxy)
}

#[test]
fn records_an_eager_link_would_have_carried_come_over_a_lazy_one_and_the_graft_ends_when_it_heals()
{
    let (herd, proxy) = herd_with_a_proxied_eager_link(|_| {});
    fill(&herd, herd.addr("Goloman"), "before", 20, &DEFAULT);
    proxy.cut();
    // Goloman's records go on, and reach Holiday and Welsh by another way:
    // Holiday finds them missing from what Wilkes announces, and grafts.
    fill(&herd, herd.addr("Goloman"), "during", 200, &DEFAULT);
    // Shards publish their figures a few times a second.
    eventually("Holiday grafted its lazy link from Wilkes", || {
        let series = "herd_link_grafts_total{neighbour=\"Holiday\"}";
        (metric_of(&herd, "Wilkes", series) >= 1.0).then_some(())
    });
    // The link heals: Goloman's tree reaches Holiday again, the graft ends.
    proxy.heal();
    let mut round = 0;
    eventually("Holiday prunes its graft", || {
        round += 1;
        fill(
            &herd,
            herd.addr("Goloman"),
            &format!("after{round}-"),
            5,
            &["Holiday"],
        );
        let prunes = metric_of(
            &herd,
            "Wilkes",
            "herd_link_prunes_total{neighbour=\"Holiday\"}",
        );
        (prunes >= 1.0).then_some(())
    });
    fill(&herd, herd.addr("Goloman"), "healed", 50, &DEFAULT);
}

#[test]
fn a_slow_eager_link_keeps_no_record_from_anyone() {
    let (herd, proxy) = herd_with_a_proxied_eager_link(|_| {});
    proxy.slow_to(4_000);
    // 300 records of about 80 bytes: six seconds through the slow link.
    let replies = fill(&herd, herd.addr("Goloman"), "slow", 300, &DEFAULT);
    for s in DEFAULT {
        for (i, want) in replies.iter().enumerate() {
            assert_eq!(
                stored_at_line(herd.addr(s), &format!("slow{i}")).as_ref(),
                Some(want),
                "on {s}"
            );
        }
    }
}

#[test]
fn a_server_held_to_the_earlier_link_rules_is_flooded_to_and_floods() {
    let mut config = default_herd_on_free_ports();
    config.limits.link_announce_ms = 1000;
    let mut herd = start_some(config.clone(), &[]);
    for name in DEFAULT.iter().filter(|n| **n != "Wilkes") {
        herd.start_server(name);
    }
    // Wilkes, the centre of the herd's triangles, speaks only the earlier
    // rules: no TREE, so its links flood both ways.
    let mut old = config;
    old.limits.link_tree = false;
    let path = write_file(herd.dir.path(), "wilkes.json", &old.to_json_pretty());
    let stderr = std::fs::File::create(herd.dir.path().join("Wilkes.stderr")).unwrap();
    let child = serve_command("Wilkes", &path, &herd.log_dir())
        .args(["--shards", "1", "--log-level", "debug"])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    herd.children.push(("Wilkes".to_owned(), child));
    wait_listening(herd.addr("Wilkes"));
    // Links between the others send along trees; any link with Wilkes floods.
    wait_for_trees_but(&herd, &["Goloman", "Hands", "Holiday", "Welsh"], "Wilkes");
    for s in ["Goloman", "Hands", "Holiday"] {
        let series = "herd_link_tree{neighbour=\"Wilkes\",shard=\"0\"}";
        eventually(&format!("{s}'s link to Wilkes is up"), || {
            let (code, text) = try_http(herd.admin_addr(s), "GET", "/metrics")?;
            (code == 200 && text.contains("herd_link_up{neighbour=\"Wilkes\",shard=\"0\"} 1"))
                .then_some(())
        });
        assert_eq!(metric_of(&herd, s, series), 0.0, "{s} floods to Wilkes");
    }
    assert_eq!(
        metric_of(
            &herd,
            "Goloman",
            "herd_link_tree{neighbour=\"Hands\",shard=\"0\"}"
        ),
        1.0
    );
    // Every server's records reach every server, Wilkes' too.
    for s in DEFAULT {
        fill(&herd, herd.addr(s), &format!("{s}-"), 30, &DEFAULT);
    }
    // Wilkes gets every record of its neighbours' from each of them, as
    // before trees: its duplicates show it.
    let dups = sum_over_links(&herd, &["Wilkes"], "herd_link_duplicates_total");
    assert!(dups > 0.0, "a flooded server receives copies");
}
