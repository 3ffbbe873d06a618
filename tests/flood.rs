//! Flood trees in real herds (PROTOCOL.md, "Flood trees"): each record
//! crosses N - 1 links and none comes back, counted by the servers' own
//! metrics; an eager link that dies is repaired over a lazy one and the
//! graft pruned once it heals; a slow link does not keep records from
//! anyone; a server held to the earlier link rules is flooded to and its
//! records reach everyone; a server inside the trees killed -9 mid-stream
//! and restarted leaves no record missing; a partition heals into the newest record of
//! every client everywhere, and trees again. Real `herd serve` processes on loopback, every
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

/// Starts `name` of `herd` reading `config`, a config of its own (another
/// server's peer address through a proxy, or other limits), and waits
/// until it takes clients.
fn start_with_own_config(herd: &mut Herd, name: &str, config: &Config) {
    let file = format!("{}.json", name.to_lowercase());
    let path = write_file(herd.dir.path(), &file, &config.to_json_pretty());
    let stderr = std::fs::File::create(herd.dir.path().join(format!("{name}.stderr"))).unwrap();
    let child = serve_command(name, &path, &herd.log_dir())
        .args(["--shards", "1", "--log-level", "debug"])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    herd.children.push((name.to_owned(), child));
    wait_listening(herd.addr(name));
}

/// `config` with `server`'s peer address replaced by `addr`.
fn with_peer_at(mut config: Config, server: &str, addr: SocketAddr) -> Config {
    let entry = config
        .servers
        .iter_mut()
        .find(|s| s.name == server)
        .unwrap();
    entry.peer_listen = Some(addr.to_string());
    config
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
    let mine = with_peer_at(config, "Holiday", proxy.addr);
    start_with_own_config(&mut herd, "Goloman", &mine);
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
    start_with_own_config(&mut herd, "Wilkes", &old);
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

/// Sends one IAMAT per client of `clients` to `addr`, each at `time`.
fn update(addr: SocketAddr, clients: &[String], location: &str, time: &str) -> Vec<String> {
    let lines: Vec<String> = clients
        .iter()
        .map(|c| format!("IAMAT {c} {location} {time}"))
        .collect();
    send_all(addr, &lines)
}

#[test]
fn a_partition_of_the_default_herd_heals_and_every_server_holds_every_newest_record() {
    // {Holiday, Welsh} cut from {Goloman, Hands, Wilkes}: the four links
    // between Holiday and Goloman or Wilkes go through proxies the test
    // holds (each direction is a link of its own, dialled by its sender).
    let mut config = default_herd_on_free_ports();
    config.limits.link_heartbeat_ms = 200;
    config.limits.link_timeout_ms = 500;
    let to_holiday = Proxy::start(config.peer_addr("Holiday").unwrap());
    let to_goloman = Proxy::start(config.peer_addr("Goloman").unwrap());
    let to_wilkes = Proxy::start(config.peer_addr("Wilkes").unwrap());
    let mut herd = start_some(config.clone(), &["Hands", "Welsh"]);
    for name in ["Goloman", "Wilkes"] {
        let mine = with_peer_at(config.clone(), "Holiday", to_holiday.addr);
        start_with_own_config(&mut herd, name, &mine);
    }
    let holiday = with_peer_at(config.clone(), "Goloman", to_goloman.addr);
    let holiday = with_peer_at(holiday, "Wilkes", to_wilkes.addr);
    start_with_own_config(&mut herd, "Holiday", &holiday);
    wait_for_trees(&herd, &DEFAULT);
    fill(&herd, herd.addr("Goloman"), "before", 50, &DEFAULT);

    for proxy in [&to_holiday, &to_goloman, &to_wilkes] {
        proxy.cut();
    }
    // Each side keeps taking updates; the same clients move on both sides,
    // and the newer time must win everywhere once the herd is whole.
    let east: Vec<String> = (0..100).map(|i| format!("east{i}")).collect();
    let west: Vec<String> = (0..100).map(|i| format!("west{i}")).collect();
    let both: Vec<String> = (0..40).map(|i| format!("both{i}")).collect();
    let mut replies = update(herd.addr("Hands"), &east, "+1-2", "1700000100");
    replies.extend(update(herd.addr("Welsh"), &west, "+3-4", "1700000100"));
    replies.extend(update(
        herd.addr("Wilkes"),
        &both[..20],
        "+1-2",
        "1700000200",
    ));
    replies.extend(update(
        herd.addr("Holiday"),
        &both[..20],
        "+3-4",
        "1700000300",
    ));
    replies.extend(update(
        herd.addr("Goloman"),
        &both[20..],
        "+1-2",
        "1700000300",
    ));
    replies.extend(update(
        herd.addr("Welsh"),
        &both[20..],
        "+3-4",
        "1700000200",
    ));
    // Each side holds its own records (polled: links deliver them).
    eventually("the east side holds its records", || {
        stored_at_line(herd.addr("Goloman"), "east99")
    });
    eventually("the west side holds its records", || {
        stored_at_line(herd.addr("Holiday"), "west99")
    });
    assert_eq!(stored_at_line(herd.addr("Goloman"), "west0"), None, "cut");
    assert_eq!(stored_at_line(herd.addr("Welsh"), "east0"), None, "cut");

    for proxy in [&to_holiday, &to_goloman, &to_wilkes] {
        proxy.heal();
    }
    // The newest reply of each client, by its client time.
    let mut expected = std::collections::BTreeMap::new();
    for line in &replies {
        let id = line.split(' ').nth(3).unwrap().to_owned();
        let time = line.rsplit(' ').next().unwrap().to_owned();
        let newer = expected
            .get(&id)
            .is_none_or(|old: &String| time.as_str() > old.rsplit(' ').next().unwrap());
        if newer {
            expected.insert(id, line.clone());
        }
    }
    for s in DEFAULT {
        for (id, want) in &expected {
            let got = eventually(&format!("{id} on {s} after the heal"), || {
                stored_at_line(herd.addr(s), id).filter(|got| got == want)
            });
            assert_eq!(&got, want);
        }
    }
    // The trees form again over the healed links.
    wait_for_trees(&herd, &DEFAULT);
    fill(&herd, herd.addr("Welsh"), "healed", 50, &DEFAULT);
}

#[test]
fn a_tree_node_killed_mid_stream_and_restarted_leaves_every_server_with_every_newest_record() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mut config = default_herd_on_free_ports();
    config.limits.link_heartbeat_ms = 200;
    config.limits.link_timeout_ms = 500;
    let mut herd = Herd::start(config, 1);
    wait_for_trees(&herd, &DEFAULT);
    // Holiday carries every record of Goloman's, Hands' and Wilkes' trees
    // to Welsh, its only neighbour.
    let (goloman, wilkes) = (herd.addr("Goloman"), herd.addr("Wilkes"));
    let running = Arc::new(AtomicBool::new(true));
    let rounds = Arc::new(AtomicU64::new(0));
    let writer = {
        let (running, rounds) = (running.clone(), rounds.clone());
        std::thread::spawn(move || {
            let mut replies = Vec::new();
            // Bounded: at most 5000 rounds, and it stops when told.
            for round in 0..5000u64 {
                if !running.load(Ordering::SeqCst) {
                    break;
                }
                let lines: Vec<String> = (0..20)
                    .map(|c| {
                        format!(
                            "IAMAT mid{c}-{} +1-2 {}.{round:06}",
                            round % 7,
                            1000 + round
                        )
                    })
                    .collect();
                let to = if round % 2 == 0 { goloman } else { wilkes };
                replies.extend(send_all(to, &lines));
                rounds.store(round + 1, Ordering::SeqCst);
            }
            replies
        })
    };
    let after = |n: u64| {
        eventually(&format!("{n} rounds of updates"), || {
            (rounds.load(Ordering::SeqCst) >= n).then_some(())
        })
    };
    after(20);
    herd.kill("Holiday");
    after(60);
    herd.start_server("Holiday");
    wait_listening(herd.addr("Holiday"));
    after(120);
    running.store(false, Ordering::SeqCst);
    let replies = writer.join().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for line in &replies {
        let id = line.split(' ').nth(3).unwrap().to_owned();
        let time: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let newer = expected
            .get(&id)
            .is_none_or(|(t, _): &(f64, String)| time > *t);
        if newer {
            expected.insert(id, (time, line.clone()));
        }
    }
    for s in DEFAULT {
        for (id, (_, want)) in &expected {
            let got = eventually(&format!("{id} on {s}"), || {
                stored_at_line(herd.addr(s), id).filter(|got| got == want)
            });
            assert_eq!(&got, want);
        }
    }
}
