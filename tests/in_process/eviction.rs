//! The bounded store and the per-IP connection limit, on real servers: a
//! herd whose stores are full keeps the same newest records everywhere, a
//! new record older than all a full store holds is answered but not kept,
//! and one address cannot hold more than its share of connections.

use crate::support::*;
use std::net::SocketAddr;

/// A client time a while ago, in whole seconds: valid, and far from any
/// TTL (none is set in these tests anyway).
fn base_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10_000
}

/// Which of `clients` the server at `addr` holds.
fn held(addr: SocketAddr, clients: &[String]) -> Vec<String> {
    clients
        .iter()
        .filter(|c| stored_at_line(addr, c).is_some())
        .cloned()
        .collect()
}

#[test]
fn a_full_herd_keeps_the_same_newest_records_on_every_server() {
    const CAP: u64 = 20;
    const CLIENTS: u64 = 60;
    let mut config = herd_of(
        &["Left", "Mid", "Right"],
        &[("Left", "Mid"), ("Mid", "Right")],
    );
    config.limits.max_records = Some(CAP);
    let herd = InHerd::start(config, 1);
    let t0 = base_time();
    // Client i has time t0 + i; they arrive out of time order and spread
    // over the three servers, so every server evicts and refuses some.
    let names = ["Left", "Mid", "Right"];
    let order: Vec<u64> = (0..CLIENTS).map(|k| (k * 37) % CLIENTS).collect();
    for (k, i) in order.iter().enumerate() {
        let addr = herd.addr(names[k % 3]);
        let reply = exchange_text(addr, &format!("IAMAT client{i:02} +1-2 {}\n", t0 + i));
        assert!(
            reply.starts_with("AT "),
            "every valid IAMAT is answered: {reply}"
        );
    }
    let clients: Vec<String> = (0..CLIENTS).map(|i| format!("client{i:02}")).collect();
    let newest: Vec<String> = clients[(CLIENTS - CAP) as usize..].to_vec();
    for name in names {
        eventually(&format!("{name} holds exactly the newest {CAP}"), || {
            (held(herd.addr(name), &clients) == newest).then_some(())
        });
    }
    eventually("evictions counted", || {
        (herd.metric("Left", "herd_store_evicted_total")? >= 1.0).then_some(())
    });
}

#[test]
fn a_new_record_older_than_all_a_full_store_holds_is_answered_but_not_stored() {
    let mut config = herd_of(&["Small"], &[]);
    config.limits.max_records = Some(2);
    let herd = InHerd::start(config, 1);
    let addr = herd.addr("Small");
    let t0 = base_time();
    exchange_text(addr, &format!("IAMAT a +1-2 {}\n", t0 + 10));
    exchange_text(addr, &format!("IAMAT b +1-2 {}\n", t0 + 20));
    let reply = exchange_text(addr, &format!("IAMAT old +1-2 {}\n", t0 + 5));
    assert!(reply.starts_with("AT Small "), "{reply}");
    assert!(stored_at_line(addr, "old").is_none(), "not stored");
    assert!(stored_at_line(addr, "a").is_some() && stored_at_line(addr, "b").is_some());
    // A newer one evicts the oldest, a.
    exchange_text(addr, &format!("IAMAT new +1-2 {}\n", t0 + 30));
    assert!(stored_at_line(addr, "new").is_some());
    assert!(stored_at_line(addr, "a").is_none());
    // An update of a stored client evicts nothing.
    exchange_text(addr, &format!("IAMAT b +1-2 {}\n", t0 + 40));
    assert!(stored_at_line(addr, "new").is_some() && stored_at_line(addr, "b").is_some());
}

#[test]
fn one_address_holds_at_most_its_connections_and_a_closed_one_frees_a_place() {
    let mut config = herd_of(&["Guard"], &[]);
    config.limits.max_connections_per_ip = Some(3);
    // Two shards: the limit is the server's, whichever shard accepts.
    let herd = InHerd::start(config, 2);
    let addr = herd.addr("Guard");
    let mut held: Vec<Client> = (0..3).map(|_| Client::new(addr)).collect();
    // All three are accepted (they answer) before the fourth knocks.
    for c in &mut held {
        c.send("IAMAT held +1-2 3\n");
        assert!(c.line().starts_with("AT Guard "));
    }
    let mut extra = connect(addr);
    assert!(closed_by_server(&mut extra), "the fourth is closed at once");
    eventually("the refusal counted", || {
        (herd.metric("Guard", "herd_refused_total{reason=\"per_ip\"}")? >= 1.0).then_some(())
    });
    held.pop();
    eventually("a place freed", || {
        let reply = try_exchange(addr, b"IAMAT again +1-2 3\n")?;
        reply.starts_with(b"AT Guard ").then_some(())
    });
    // The others were never disturbed.
    for c in &mut held {
        c.send("IAMAT still +1-2 4\n");
        assert!(c.line().starts_with("AT Guard "));
    }
}
