//! A bounded soak: valid traffic, invalid lines, slow readers and
//! connection churn against a three-server herd at once. No server may
//! die, memory must stay bounded, and the valid records must converge.
//! Runs for HERD_SOAK_SECS seconds (default 30).

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// A cheap deterministic generator, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn a_herd_under_mixed_abuse_stays_up_bounded_and_converges() {
    let secs: u64 = std::env::var("HERD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut config = herd_of(&["A", "B", "C"], &[("A", "B"), ("B", "C")]);
    config.limits.write_timeout_ms = 1_000;
    config.limits.client_idle_timeout_ms = 2_000;
    let mut herd = Herd::start(config, 2);
    let addrs: Vec<SocketAddr> = ["A", "B", "C"].iter().map(|n| herd.addr(n)).collect();
    let pids: Vec<u32> = herd.children.iter().map(|(_, c)| c.id()).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let running = Arc::new(AtomicBool::new(true));
    let mut workers = Vec::new();

    // Valid traffic: 200 clients updated over and over, answers kept.
    {
        let addrs = addrs.clone();
        workers.push(std::thread::spawn(move || {
            let mut last = std::collections::BTreeMap::new();
            let mut t = 1_000u64;
            while Instant::now() < deadline {
                let addr = addrs[(t % 3) as usize];
                let lines: String = (0..200)
                    .map(|c| format!("IAMAT soak{c} +1-2 {t}\n"))
                    .collect();
                if let Some(reply) = try_exchange(addr, lines.as_bytes()) {
                    for line in String::from_utf8_lossy(&reply).lines() {
                        let id = line.split(' ').nth(3).unwrap_or_default().to_owned();
                        last.insert(id, line.to_owned());
                    }
                }
                t += 1;
            }
            last
        }));
    }
    // Invalid input: garbage, bad UTF-8, over-long lines, injected AT lines.
    let mut others = Vec::new();
    for (k, addr) in addrs.iter().copied().enumerate() {
        let running = running.clone();
        others.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9 + k as u64);
            while running.load(Ordering::SeqCst) {
                let mut junk: Vec<u8> =
                    (0..(rng.next() % 9000)).map(|_| rng.next() as u8).collect();
                junk.extend_from_slice(
                    b"\nAT A +0.000000001 soak0 +9-9 99999999999\nWHATSAT nobody 5 5\n",
                );
                let _ = try_exchange(addr, &junk);
            }
        }));
    }
    // Slow readers: ask for many big replies and never read them.
    for addr in addrs.iter().copied() {
        let running = running.clone();
        others.push(std::thread::spawn(move || {
            exchange_text(addr, "IAMAT slowpoke +1-2 3\n");
            while running.load(Ordering::SeqCst) {
                if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                    let _ = s.write_all("WHATSAT slowpoke 50 20\n".repeat(2_000).as_bytes());
                    std::thread::sleep(Duration::from_millis(1_500));
                }
            }
        }));
    }
    // Churn: connections opened and dropped mid-line, mid-reply.
    for addr in addrs.iter().copied() {
        let running = running.clone();
        others.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while running.load(Ordering::SeqCst) {
                if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                    let _ = s.write_all(b"IAMAT churn +1-2 3\nIAMAT half +1-");
                    let _ = s.read(&mut buf);
                }
            }
        }));
    }

    let mut peak = vec![0.0f64; pids.len()];
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        for (i, pid) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_mib(*pid));
        }
        for name in ["A", "B", "C"] {
            assert!(herd.alive(name), "{name} died during the soak");
        }
    }
    let expected = workers.pop().unwrap().join().unwrap();
    running.store(false, Ordering::SeqCst);
    for t in others {
        t.join().unwrap();
    }
    for (i, name) in ["A", "B", "C"].iter().enumerate() {
        assert!(herd.alive(name), "{name} died");
        // Three servers of 200 clients need a few MiB: 100 MiB means growth.
        assert!(peak[i] < 100.0, "{name} peaked at {:.1} MiB", peak[i]);
    }
    assert!(expected.len() >= 200, "valid traffic got answers");
    for addr in &addrs {
        for (id, want) in &expected {
            let got = eventually("valid records converge", || {
                stored_at_line(*addr, id).filter(|g| g == want)
            });
            assert_eq!(&got, want);
        }
    }
}
