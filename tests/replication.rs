//! Replication from the store itself: a down neighbour costs no memory and
//! gets everything once it starts, a record longer than any IAMAT line
//! reaches every server, and a neighbour that speaks only the basic link
//! rules (PEER, then AT lines) receives every record. Real processes on
//! loopback; every wait is bounded.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::*;

/// A server started with `--log-level info` (debug would log every line
/// of the load), killed when dropped.
struct Quiet(Child);

impl Drop for Quiet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends `count` IAMATs over `clients` client ids (`load<k>`) on one
/// connection, client times growing, and reads every reply (on a thread of
/// its own, so neither side blocks the other). Each IAMAT is about 4 KB
/// (a client time with a long fraction, which is valid): what a copy per
/// neighbour would cost shows. Returns the last AT line of each client.
fn load(addr: SocketAddr, first: u64, count: u64, clients: u64) -> Vec<String> {
    let writer = connect(addr);
    let reader = writer.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    let reading = std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut last = vec![String::new(); clients as usize];
        for i in 0..count {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("AT "), "{line}");
            last[(i % clients) as usize] = line.trim_end().to_owned();
        }
        tx.send(last).unwrap();
    });
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, writer);
    let fraction = "5".repeat(3_900);
    for i in first..first + count {
        // Times grow with i, so every IAMAT is newer than the stored one.
        writeln!(
            writer,
            "IAMAT load{} +1-2 {}.{fraction}",
            i % clients,
            1_000_000 + i
        )
        .unwrap();
    }
    writer.flush().unwrap();
    let last = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    reading.join().unwrap();
    last
}

#[test]
fn updates_while_every_neighbour_is_down_cost_no_memory_and_all_arrive_later() {
    let config = herd_of(&["A", "B", "C"], &[("A", "B"), ("A", "C")]);
    let mut herd = Herd::start(herd_of(&[], &[]), 1);
    herd.config = config;
    std::fs::write(&herd.config_path, herd.config.to_json_pretty()).unwrap();
    let a_addr = herd.addr("A");
    let a = Quiet(
        serve_command("A", &herd.config_path, &herd.log_dir())
            .args(["--shards", "1", "--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(a_addr);
    // B and C are down. Every client gets a record, then RSS is measured
    // across 40,000 more updates (160 MB of records): copies queued per
    // down neighbour would be hundreds of MB, the store holds 4 MB.
    load(a_addr, 0, 2_000, 1_000);
    let before = vm_rss_kib(a.0.id());
    let last = load(a_addr, 2_000, 40_000, 1_000);
    let after = vm_rss_kib(a.0.id());
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 40,000 updates of 1,000 clients"
    );
    // The neighbours start and receive the newest record of every client.
    herd.start_server("B");
    herd.start_server("C");
    for name in ["B", "C"] {
        let addr = herd.addr(name);
        for (k, want) in last.iter().enumerate() {
            let got = eventually("the newest records on a neighbour that was down", || {
                stored_at_line(addr, &format!("load{k}")).filter(|got| got == want)
            });
            assert_eq!(&got, want);
        }
    }
}

#[test]
fn a_record_longer_than_any_iamat_line_reaches_every_server() {
    let herd = Herd::start(default_herd_on_free_ports(), 1);
    // A valid IAMAT just under the 4,096-byte limit: its AT line is longer
    // than the limit (server name and skew are added).
    let id = "x".repeat(255);
    let head = format!("IAMAT {id} +34.068930-118.445127 1700000000.");
    let line = format!("{head}{}", "1".repeat(4090 - head.len()));
    assert_eq!(line.len(), 4090);
    let reply = exchange_text(herd.addr("Goloman"), &format!("{line}\n"));
    assert!(reply.starts_with("AT Goloman "), "{}", &reply[..60]);
    let at_line = reply.trim_end().to_owned();
    assert!(at_line.len() > 4096, "{}", at_line.len());
    for name in ["Hands", "Holiday", "Wilkes", "Welsh"] {
        let got = eventually("the long record everywhere", || {
            stored_at_line(herd.addr(name), &id)
        });
        assert_eq!(got, at_line, "on {name}");
    }
}

/// A neighbour that knows only the basic link rules: it does the handshake
/// (a herd without a secret), answers our `STREAM` extension as an invalid command (or says nothing),
/// and keeps every AT line it is sent. Returns what it received, line by
/// line, on a channel.
fn basic_neighbour(listener: TcpListener, answer_stream: bool) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // One link per shard of the sender; the test uses one shard.
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut writer = stream.try_clone().unwrap();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            // The handshake is not optional: a herd never sends records
            // to a neighbour that did not prove the secret (here, none).
            if line.starts_with("PEER ")
                && writer
                    .write_all(format!("CHALLENGE {} -\n", "0".repeat(32)).as_bytes())
                    .is_err()
            {
                return;
            }
            if line.starts_with("STREAM")
                && answer_stream
                && writer.write_all(format!("? {line}\n").as_bytes()).is_err()
            {
                return;
            }
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn basic_neighbour_receives_every_record(answer_stream: bool) {
    let mut config = herd_of(&["A", "Basic"], &[("A", "Basic")]);
    // A silent neighbour is taken for a basic one after the link timeout.
    config.limits.link_heartbeat_ms = 200;
    config.limits.link_timeout_ms = 500;
    let basic_addr = config.peer_addr("Basic").unwrap();
    let mut herd = Herd::start(herd_of(&[], &[]), 1);
    herd.config = config;
    std::fs::write(&herd.config_path, herd.config.to_json_pretty()).unwrap();
    herd.start_server("A");
    let a_addr = herd.addr("A");
    // Records stored before the basic neighbour is up, and after.
    let mut sent = send_all(
        a_addr,
        &(0..50)
            .map(|i| format!("IAMAT early{i} +1-2 5"))
            .collect::<Vec<_>>(),
    );
    let received = basic_neighbour(TcpListener::bind(basic_addr).unwrap(), answer_stream);
    let first = received.recv_timeout(PATIENCE).unwrap();
    assert!(first.starts_with("PEER A "), "{first}");
    sent.extend(send_all(
        a_addr,
        &(0..50)
            .map(|i| format!("IAMAT late{i} +1-2 5"))
            .collect::<Vec<_>>(),
    ));
    let mut lines = Vec::new();
    let mut missing: Vec<&String> = sent.iter().collect();
    while !missing.is_empty() {
        let line = received.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!(
                "{} records never came: {:?}",
                missing.len(),
                &missing[..3.min(missing.len())]
            )
        });
        missing.retain(|want| **want != line);
        lines.push(line);
    }
    // Nothing but the opening and AT lines: no SEQ for a basic server.
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("AT ") || l.starts_with("STREAM ") || l == "PROOF -"),
        "{lines:?}"
    );
}

#[test]
fn a_neighbour_that_refuses_the_stream_extension_receives_every_record() {
    basic_neighbour_receives_every_record(true);
}

#[test]
fn a_neighbour_that_never_answers_receives_every_record() {
    basic_neighbour_receives_every_record(false);
}
