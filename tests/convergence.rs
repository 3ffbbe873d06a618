//! Nothing lost, the herd converges: servers killed and restarted empty,
//! neighbours down while records pour in, and concurrent updates spread over
//! every server all end with every server holding the same newest records.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::*;

const NAMES: [&str; 5] = ["Goloman", "Hands", "Holiday", "Wilkes", "Welsh"];

/// What `server` holds for each client, asked over one connection.
fn dump(addr: SocketAddr, clients: &[String]) -> BTreeMap<String, Option<String>> {
    let mut client = Client::new(addr);
    let mut held = BTreeMap::new();
    for id in clients {
        client.send(&format!("WHATSAT {id} 1 0\n"));
        let first = client.line();
        let line = if first.starts_with("AT ") {
            // Skip the JSON up to the empty line that ends the reply.
            while client.line() != "\n" {}
            Some(first.trim_end().to_owned())
        } else {
            None
        };
        held.insert(id.clone(), line);
    }
    held
}

/// Waits until every server holds exactly `expected`.
fn converged(herd: &Herd, names: &[&str], expected: &BTreeMap<String, Option<String>>) {
    let clients: Vec<String> = expected.keys().cloned().collect();
    for name in names {
        eventually(&format!("{name} to converge"), || {
            (dump(herd.addr(name), &clients) == *expected).then_some(())
        });
    }
}

/// The protocol's ordering, written out independently of the server: client
/// time as integers (seconds, nanoseconds), then the whole line as bytes.
fn order_key(at_line: &str) -> (u64, u32, String) {
    let time = at_line.rsplit(' ').next().unwrap();
    let (secs, frac) = time.split_once('.').unwrap_or((time, ""));
    let nanos: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    (
        secs.parse().unwrap(),
        nanos.parse().unwrap(),
        at_line.to_owned(),
    )
}

/// The newest AT line per client among `replies`, as a test oracle.
fn newest(replies: &[String]) -> BTreeMap<String, Option<String>> {
    let mut best: BTreeMap<String, String> = BTreeMap::new();
    for line in replies {
        let id = line.split(' ').nth(3).unwrap().to_owned();
        match best.get(&id) {
            Some(old) if order_key(old) >= order_key(line) => {}
            _ => {
                best.insert(id, line.clone());
            }
        }
    }
    best.into_iter().map(|(k, v)| (k, Some(v))).collect()
}

#[test]
fn a_server_restarted_empty_catches_up_with_everything_the_herd_holds() {
    let mut herd = Herd::start(default_herd_on_free_ports(), 2);
    let before: Vec<String> = (0..300)
        .map(|i| format!("IAMAT pre{i} +1-2 {}", 100 + i))
        .collect();
    let mut replies = send_all(herd.addr("Goloman"), &before);
    herd.kill("Hands");
    // Records that arrive while Hands is down, at servers on both sides.
    let during: Vec<String> = (0..300)
        .map(|i| format!("IAMAT mid{i} +3-4 {}", 100 + i))
        .collect();
    replies.extend(send_all(herd.addr("Welsh"), &during[..150]));
    replies.extend(send_all(herd.addr("Wilkes"), &during[150..]));
    let expected = newest(&replies);
    // The live servers get there by flooding; Hands must too, on its own.
    converged(&herd, &["Goloman"], &expected);
    herd.start_server("Hands");
    // Nobody speaks to Hands: it learns every record from its links alone.
    converged(&herd, &["Hands"], &expected);
    assert!(herd.log("Hands").contains("link stream resumes"));
}

#[test]
fn every_record_stored_while_a_neighbour_was_down_reaches_it() {
    let config = herd_of(&["A", "B"], &[("A", "B")]);
    let mut herd = Herd::start(config, 1);
    herd.kill("B");
    let lines: Vec<String> = (0..500).map(|i| format!("IAMAT q{i} +1-2 7")).collect();
    send_all(herd.addr("A"), &lines);
    herd.start_server("B");
    let clients: Vec<String> = (0..500).map(|i| format!("q{i}")).collect();
    let expected = dump(herd.addr("A"), &clients);
    converged(&herd, &["B"], &expected);
}

#[test]
fn a_server_killed_during_a_stream_of_updates_converges_after_restart() {
    let mut herd = Herd::start(default_herd_on_free_ports(), 2);
    let addrs: Vec<SocketAddr> = ["Goloman", "Wilkes", "Welsh"]
        .iter()
        .map(|n| herd.addr(n))
        .collect();
    let running = Arc::new(AtomicBool::new(true));
    let writer = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut replies = Vec::new();
            // Bounded: at most 4000 rounds, and it stops when told.
            for round in 0..4000u64 {
                if !running.load(Ordering::SeqCst) {
                    break;
                }
                let lines: Vec<String> = (0..20)
                    .map(|c| format!("IAMAT live{c} +1-2 {}.{round:06}", 1000 + round))
                    .collect();
                replies.extend(send_all(addrs[(round % 3) as usize], &lines));
            }
            replies
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    herd.kill("Hands");
    std::thread::sleep(std::time::Duration::from_millis(300));
    herd.start_server("Hands");
    std::thread::sleep(std::time::Duration::from_millis(300));
    running.store(false, Ordering::SeqCst);
    let replies = writer.join().unwrap();
    assert!(replies.len() >= 20);
    converged(&herd, &NAMES, &newest(&replies));
}

#[test]
fn concurrent_updates_spread_over_all_servers_converge_everywhere() {
    let herd = Herd::start(default_herd_on_free_ports(), 2);
    let threads: Vec<_> = NAMES
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let addr = herd.addr(name);
            std::thread::spawn(move || {
                let mut replies = Vec::new();
                for round in 0..10u64 {
                    // Each server sees every client with its own times, so
                    // ties and reorderings happen across the herd.
                    let lines: Vec<String> = (0..100)
                        .map(|c| {
                            format!("IAMAT conc{c} +{k}-{round} {}.{k}", 5000 + round * 7 % 10)
                        })
                        .collect();
                    replies.extend(send_all(addr, &lines));
                }
                replies
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in threads {
        replies.extend(t.join().unwrap());
    }
    assert_eq!(replies.len(), 5 * 10 * 100);
    converged(&herd, &NAMES, &newest(&replies));
}
