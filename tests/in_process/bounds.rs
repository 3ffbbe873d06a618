//! Bounded under abuse: idle clients are closed, clients that do not read
//! are dropped, and a shard refuses connections past its limit, all while
//! the server keeps serving everyone else.

use crate::support::*;
use std::time::{Duration, Instant};

#[test]
fn an_idle_client_is_closed_after_the_idle_timeout() {
    let mut config = herd_of(&["Idle"], &[]);
    config.limits.client_idle_timeout_ms = 300;
    let herd = InHerd::start(config, 1);
    let mut quiet = connect(herd.addr("Idle"));
    let start = Instant::now();
    assert!(closed_by_server(&mut quiet));
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "not before the timeout"
    );
    assert!(exchange_text(herd.addr("Idle"), "IAMAT x +1-2 3\n").starts_with("AT Idle "));
}

/// A client that waits gives back its read and reply buffers (the idle
/// sweep asks it, a sweep after its last read) and is served as before
/// when it speaks again; a line it had half sent is kept.
#[test]
fn an_idle_client_gives_back_its_buffers_and_is_served_after() {
    let herd = InHerd::start(herd_of(&["Lean"], &[]), 1);
    let released = || herd.metric("Lean", "herd_connection_buffers_released_total");
    let mut client = Client::new(herd.addr("Lean"));
    client.send("IAMAT lean +1-2 3\n");
    assert!(client.line().starts_with("AT Lean "));
    let first = eventually("the idle client gave back its buffers", || {
        released().filter(|&n| n >= 1.0)
    });
    // A whole line and half of the next: the reply buffer can go, the
    // read buffer holding the half line must stay.
    client.send("IAMAT lean +1-2 4\nIAMAT lean +1-2 ");
    let reply = client.line();
    assert!(reply.trim_end().ends_with(" lean +1-2 4"), "{reply}");
    eventually("the reply buffer given back", || {
        released().filter(|&n| n > first)
    });
    client.send("5\n");
    let reply = client.line();
    let reply = reply.trim_end();
    assert!(
        reply.starts_with("AT Lean ") && reply.ends_with(" lean +1-2 5"),
        "{reply}"
    );
    assert_eq!(
        stored_at_line(herd.addr("Lean"), "lean").as_deref(),
        Some(reply)
    );
}

#[test]
fn a_shard_refuses_connections_past_its_limit_and_keeps_serving() {
    let mut config = herd_of(&["Full"], &[]);
    config.limits.max_connections_per_shard = 3;
    let herd = InHerd::start(config, 1);
    let addr = herd.addr("Full");
    let held: Vec<_> = (0..3).map(|_| Client::new(addr)).collect();
    // Make sure all three are accepted before the fourth knocks.
    for mut c in held.iter().map(|c| c.try_clone()) {
        c.send("IAMAT held +1-2 3\n");
        assert!(c.line().starts_with("AT Full "));
    }
    let mut extra = connect(addr);
    assert!(
        closed_by_server(&mut extra),
        "the fourth connection is closed"
    );
    eventually("the refusal counted", || {
        (herd.metric("Full", "herd_refused_total{reason=\"connection_limit\"}")? >= 1.0)
            .then_some(())
    });
    drop(held);
    eventually("a slot freed", || {
        let reply = try_exchange(addr, b"IAMAT again +1-2 3\n")?;
        reply.starts_with(b"AT Full ").then_some(())
    });
}

#[test]
fn records_older_than_the_ttl_are_dropped() {
    let mut config = herd_of(&["Brief"], &[]);
    config.limits.record_ttl_ms = Some(3_000);
    let herd = InHerd::start(config, 2);
    let addr = herd.addr("Brief");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    exchange_text(addr, &format!("IAMAT ancient +1-2 {}\n", now - 3600));
    exchange_text(addr, &format!("IAMAT fresh +1-2 {}.5\n", now));
    // The fresh record is still there right after, the ancient one goes first.
    assert!(stored_at_line(addr, "fresh").is_some());
    eventually("the ancient record dropped", || {
        stored_at_line(addr, "ancient").is_none().then_some(())
    });
    eventually(
        "the fresh record dropped once it is older than the TTL",
        || stored_at_line(addr, "fresh").is_none().then_some(()),
    );
}
