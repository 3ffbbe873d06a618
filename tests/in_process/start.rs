//! `herd::start` itself: port 0 becomes a reported port, a stop waits
//! until the server is gone, a reconfigure opens links, and a failed start
//! says why.

use crate::support::*;
use std::net::TcpStream;
use std::time::Duration;

/// A one-server config with every port 0.
fn lone(name: &str) -> herd::Config {
    lone_on_port_zero(name, admin_on_port_zero())
}

#[test]
fn port_zero_is_bound_to_a_free_port_that_every_shard_serves() {
    let running = start_in_process(lone("Zero"), "Zero", 2);
    let bound = running.bound();
    assert_ne!(bound.client.port(), 0);
    assert_ne!(bound.peer.port(), 0);
    let admin = bound.admin.expect("admin on");
    assert_ne!(admin.port(), 0);
    // Clients spread over both shards (SO_REUSEPORT on the one port), and
    // every client id is answered whichever shard took the connection.
    for i in 0..40 {
        let reply = exchange_text(bound.client, &format!("IAMAT zero{i} +1-2 3\n"));
        assert!(reply.starts_with("AT Zero "), "{reply}");
    }
    for i in 0..40 {
        assert!(stored_at_line(bound.client, &format!("zero{i}")).is_some());
    }
    // The admin endpoint names the bound addresses, not port 0.
    let (code, status) = http(admin, "GET", "/status");
    assert_eq!(code, 200);
    assert!(status.contains(&bound.client.to_string()), "{status}");
    assert!(status.contains(&bound.peer.to_string()), "{status}");
    running.stop().expect("stops");
}

#[test]
fn stop_returns_once_nothing_listens_any_more() {
    let running = start_in_process(lone("Brief"), "Brief", 1);
    let bound = running.bound();
    let mut client = Client::new(bound.client);
    client.send("IAMAT brief +1-2 3\n");
    assert!(client.line().starts_with("AT Brief "));
    drop(client);
    running.stop().expect("stops");
    // Stopped means gone: no shard is left to accept.
    for addr in [bound.client, bound.peer, bound.admin.expect("admin on")] {
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "{addr} still accepts after stop returned"
        );
    }
}

#[test]
fn a_reconfigured_server_links_to_its_new_neighbour() {
    let herd = InHerd::start(herd_of(&["P", "Q"], &[("P", "Q")]), 1);
    let reply = exchange_text(herd.addr("P"), "IAMAT travels +1-2 3\n");
    assert!(reply.starts_with("AT P "), "{reply}");
    let seen = eventually("the record at Q", || {
        stored_at_line(herd.addr("Q"), "travels")
    });
    assert_eq!(seen, reply.trim_end());
}

#[test]
fn a_stopped_server_restarts_on_its_ports_and_is_refilled() {
    let mut herd = InHerd::start(herd_of(&["R", "S"], &[("R", "S")]), 1);
    exchange_text(herd.addr("R"), "IAMAT kept +1-2 3\n");
    eventually("at S", || stored_at_line(herd.addr("S"), "kept"));
    herd.stop("S");
    herd.restart("S");
    herd.wait_ready("S");
    eventually("refilled by R", || stored_at_line(herd.addr("S"), "kept"));
}

#[test]
fn a_start_that_cannot_bind_says_where() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = lone("Clash");
    // A listener without SO_REUSEPORT holds the port: the bind fails.
    config.servers[0].peer_listen = Some(taken.local_addr().unwrap().to_string());
    let err = match herd::start(config, herd::StartOptions::named("Clash")) {
        Ok(_) => panic!("started on a taken port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("Clash"), "{err}");
    assert!(
        err.contains(&taken.local_addr().unwrap().to_string()),
        "{err}"
    );
}

#[test]
fn a_server_not_in_the_config_is_refused() {
    let err = match herd::start(lone("Here"), herd::StartOptions::named("Elsewhere")) {
        Ok(_) => panic!("started a server the config lacks"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("Elsewhere is not a server"), "{err}");
}

#[test]
fn a_shard_that_fails_before_the_mesh_join_fails_the_start_instead_of_hanging_it() {
    let options = herd::StartOptions {
        shards: Some(2),
        fail_shard_before_join: Some(1),
        ..herd::StartOptions::named("Halting")
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = herd::start(lone("Halting"), options).map(|_| ());
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    let result = rx
        .recv_timeout(PATIENCE)
        .expect("start() returned (it hung waiting for the shard that failed)");
    let error = result.expect_err("a shard failed: the start must fail");
    assert!(error.contains("failed before joining the mesh"), "{error}");
}
