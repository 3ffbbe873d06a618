//! Real herds of several `herd serve` processes on loopback: flooding,
//! handshakes, neighbours going down and coming back.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use support::*;

#[test]
fn a_record_sent_to_goloman_reaches_welsh_two_hops_away() {
    let herd = Herd::start(default_herd_on_free_ports(), 2);
    let at = exchange_text(
        herd.addr("Goloman"),
        "IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n",
    );
    assert!(at.starts_with("AT Goloman "), "{at}");
    let at_welsh = eventually("record at Welsh", || {
        stored_at_line(herd.addr("Welsh"), "kiwi")
    });
    assert_eq!(
        at_welsh + "\n",
        at,
        "Welsh holds Goloman's AT line unchanged"
    );
}

#[test]
fn every_server_converges_on_the_newest_record_whatever_server_got_it() {
    let herd = Herd::start(default_herd_on_free_ports(), 2);
    let names = ["Goloman", "Hands", "Holiday", "Wilkes", "Welsh"];
    // Updates of the same clients arrive at different servers, out of order.
    let mut newest = Vec::new();
    for c in 0..20 {
        let mut last = String::new();
        for (k, t) in [3u32, 1, 4, 2].iter().enumerate() {
            let server = names[(c + k) % names.len()];
            let reply = exchange_text(herd.addr(server), &format!("IAMAT conv{c} +1-2 {t}\n"));
            if *t == 4 {
                last = reply.trim_end().to_owned();
            }
        }
        newest.push(last);
    }
    for name in names {
        for (c, want) in newest.iter().enumerate() {
            let got = eventually("convergence", || {
                stored_at_line(herd.addr(name), &format!("conv{c}")).filter(|got| got == want)
            });
            assert_eq!(&got, want);
        }
    }
}

#[test]
fn a_server_keeps_serving_while_its_neighbours_are_down() {
    let herd = start_some(default_herd_on_free_ports(), &["Goloman"]);
    let reply = exchange_text(herd.addr("Goloman"), "IAMAT alone +1-2 3\n");
    assert!(reply.starts_with("AT Goloman "), "{reply}");
    assert!(stored_at_line(herd.addr("Goloman"), "alone").is_some());
}

#[test]
fn records_queued_while_a_neighbour_was_down_reach_it_when_it_comes_up() {
    let mut herd = start_some(default_herd_on_free_ports(), &["Goloman"]);
    let at = exchange_text(herd.addr("Goloman"), "IAMAT early +1-2 3\n");
    herd.start_server("Hands");
    let got = eventually("queued record at Hands", || {
        stored_at_line(herd.addr("Hands"), "early")
    });
    assert_eq!(got + "\n", at);
}

#[test]
fn a_killed_and_restarted_server_rejoins_and_receives_new_records() {
    let mut herd = Herd::start(default_herd_on_free_ports(), 2);
    exchange_text(herd.addr("Goloman"), "IAMAT before +1-2 3\n");
    eventually("first record at Hands", || {
        stored_at_line(herd.addr("Hands"), "before")
    });
    herd.kill("Hands");
    herd.start_server("Hands");
    // Links to the new Hands come up with backoff; keep sending fresh records
    // until one gets through, then require the rest to arrive too.
    let mut t = 10;
    let first = eventually("a new record at the restarted Hands", || {
        t += 1;
        exchange_text(herd.addr("Goloman"), &format!("IAMAT after{t} +1-2 {t}\n"));
        stored_at_line(herd.addr("Hands"), &format!("after{t}"))
    });
    assert!(first.starts_with("AT Goloman "));
    for i in 0..20 {
        exchange_text(herd.addr("Goloman"), &format!("IAMAT later{i} +1-2 5\n"));
    }
    for i in 0..20 {
        eventually("later records at Hands", || {
            stored_at_line(herd.addr("Hands"), &format!("later{i}"))
        });
    }
    assert!(herd.alive("Goloman") && herd.alive("Hands"));
}

/// Everything the server sends until it closes the connection.
fn rest_of(mut stream: std::net::TcpStream) -> String {
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn a_herd_with_a_secret_refuses_a_peer_with_a_wrong_secret() {
    let mut config = herd_of(&["A", "B"], &[("A", "B")]);
    config.secret = Some("s3cret".into());
    let herd = start_some(config, &["A"]);
    let (addr, peer) = (herd.addr("A"), herd.peer_addr("A"));
    let (mut s, sent, challenge) = dial_link(peer, "B", "A", Some("other secret"));
    assert!(challenge.starts_with("CHALLENGE "), "{challenge}");
    s.write_all(b"AT B +0.000000001 injected +1-2 5\n").unwrap();
    let proof_line = sent.lines().nth(1).unwrap();
    assert_eq!(
        rest_of(s),
        format!("? {proof_line}\n"),
        "refused, then closed"
    );
    assert_eq!(stored_at_line(addr, "injected"), None);
    eventually("the refusal in the log", || {
        herd.log("A").contains("handshake refused").then_some(())
    });

    // The right secret is accepted and its records are applied.
    let (mut s, _, _) = dial_link(peer, "B", "A", Some("s3cret"));
    s.write_all(b"AT B +0.000000001 welcome +1-2 5\n").unwrap();
    let got = eventually("record over a good link", || {
        stored_at_line(addr, "welcome")
    });
    assert_eq!(got, "AT B +0.000000001 welcome +1-2 5");
}

#[test]
fn a_peer_that_is_not_a_neighbour_is_refused() {
    let herd = start_some(herd_of(&["A", "B", "C"], &[("A", "B"), ("B", "C")]), &["A"]);
    let nonce = test_nonce();
    for name in ["C", "Stranger", "A"] {
        let mut s = connect(herd.peer_addr("A"));
        let handshake = format!("PEER {name} {nonce}\n");
        s.write_all(format!("{handshake}AT C +0.000000001 sneaky +1-2 5\n").as_bytes())
            .unwrap();
        assert_eq!(rest_of(s), format!("? {handshake}"));
    }
    // A malformed nonce is refused too.
    let mut s = connect(herd.peer_addr("A"));
    s.write_all(b"PEER B -\n").unwrap();
    assert_eq!(rest_of(s), "? PEER B -\n");
    assert_eq!(stored_at_line(herd.addr("A"), "sneaky"), None);
}

#[test]
fn peer_lines_on_the_client_port_are_invalid_commands() {
    let herd = start_some(herd_of(&["A", "B"], &[("A", "B")]), &["A"]);
    let nonce = test_nonce();
    let mut client = Client::new(herd.addr("A"));
    client.send(&format!("PEER B {nonce}\n"));
    assert_eq!(client.line().trim_end(), format!("? PEER B {nonce}"));
    client.send("PROOF -\nAT B +0.000000001 injected +1-2 5\n");
    assert_eq!(client.line().trim_end(), "? PROOF -");
    assert_eq!(
        client.line().trim_end(),
        "? AT B +0.000000001 injected +1-2 5"
    );
    // The connection is still a client's.
    client.send("IAMAT ok +1-2 5\n");
    assert!(client.line().starts_with("AT A "));
    assert_eq!(stored_at_line(herd.addr("A"), "injected"), None);
}

#[test]
fn a_herd_with_a_secret_floods_between_its_own_servers() {
    let mut config = herd_of(&["A", "B", "C"], &[("A", "B"), ("B", "C")]);
    config.secret = Some("herd-secret".into());
    let herd = Herd::start(config, 1);
    let at = exchange_text(herd.addr("A"), "IAMAT secretive +1-2 3\n");
    let got = eventually("record at C", || {
        stored_at_line(herd.addr("C"), "secretive")
    });
    assert_eq!(got + "\n", at);
}
