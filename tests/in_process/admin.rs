//! The admin endpoint of real servers: `/metrics` counts exactly what was
//! sent, `/readyz` follows the neighbours, `/status` and `/healthz` answer,
//! and nothing else is served.

use crate::support::*;

/// N IAMATs, M WHATSATs (some for unknown clients) and some junk, sent to
/// a two-shard server: its counters say exactly that, and its neighbour
/// stored every record.
#[test]
fn metrics_count_every_command_exactly() {
    let herd = InHerd::start(herd_of(&["A", "B"], &[("A", "B")]), 2);
    let (n, known, unknown, junk) = (40, 12, 5, 3);
    let iamats: Vec<String> = (0..n)
        .map(|i| format!("IAMAT metrics-{i} +34.068930-118.445127 1621464827.{i:09}"))
        .collect();
    let replies = send_all(herd.addr("A"), &iamats);
    assert!(
        replies.iter().all(|r| r.starts_with("AT A ")),
        "{replies:?}"
    );
    let mut client = Client::new(herd.addr("A"));
    for i in 0..known {
        client.send(&format!("WHATSAT metrics-{i} 10 2\n"));
        assert!(client.whatsat_reply().starts_with("AT A "));
    }
    for i in 0..unknown {
        client.send(&format!("WHATSAT nobody-{i} 10 2\n"));
        assert!(client.line().starts_with("? WHATSAT"));
    }
    for _ in 0..junk {
        client.send("HELLO there\n");
        assert!(client.line().starts_with("? HELLO"));
    }
    client.send("IAMAT broken\n");
    assert!(client.line().starts_with("? IAMAT"));

    let admin = herd.admin_addr("A");
    let expected = [
        (
            "herd_commands_total{command=\"IAMAT\",result=\"ok\"}",
            n as f64,
        ),
        (
            "herd_commands_total{command=\"IAMAT\",result=\"invalid\"}",
            1.0,
        ),
        (
            "herd_commands_total{command=\"WHATSAT\",result=\"ok\"}",
            known as f64,
        ),
        (
            "herd_commands_total{command=\"WHATSAT\",result=\"invalid\"}",
            unknown as f64,
        ),
        (
            "herd_commands_total{command=\"other\",result=\"invalid\"}",
            junk as f64,
        ),
        ("herd_places_lookups_total", known as f64),
    ];
    // The counters are exact at once; gauges (records) follow within a
    // publishing interval, so the whole text is polled.
    let text = eventually("A's metrics to add up", || {
        let (status, text) = http(admin, "GET", "/metrics");
        assert_eq!(status, 200);
        let records: f64 = (0..2)
            .filter_map(|s| metric(&text, &format!("herd_records{{shard=\"{s}\"}}")))
            .sum();
        (records == n as f64).then_some(text)
    });
    for (series, value) in expected {
        assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
    }
    // Every command got a latency sample (two shards' histograms).
    let samples: f64 = (0..2)
        .filter_map(|s| {
            metric(
                &text,
                &format!("herd_command_duration_seconds_count{{shard=\"{s}\"}}"),
            )
        })
        .sum();
    assert_eq!(samples, (n + known + unknown + junk + 1) as f64, "{text}");
    // The neighbour stored them all, from the link.
    eventually("B to store every record", || {
        let (_, text) = http(herd.admin_addr("B"), "GET", "/metrics");
        (metric(&text, "herd_store_updates_total{result=\"stored\"}") == Some(n as f64))
            .then_some(())
    });
    let (_, status) = http(admin, "GET", "/status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(status["server"], "A");
    assert_eq!(status["shards"], 2);
    assert_eq!(status["records"], n);
    assert_eq!(status["commands"]["WHATSAT"]["invalid"], unknown);
    assert_eq!(status["links"][0]["neighbour"], "B");
}

/// A server is not ready while a neighbour is down, says why, and is ready
/// again once the neighbour is back and caught up.
#[test]
fn readyz_follows_the_neighbours() {
    let mut herd = InHerd::start(herd_of(&["A", "B"], &[("A", "B")]), 1);
    let admin = herd.admin_addr("A");
    eventually("A to be ready", || {
        (http(admin, "GET", "/readyz").0 == 200).then_some(())
    });
    assert_eq!(http(admin, "GET", "/healthz").0, 200);
    herd.stop("B");
    // Both directions are missed; the incoming side is seen at once, the
    // outgoing one within a publishing interval.
    let body = eventually("A not to be ready, for both links", || {
        let (status, body) = http(admin, "GET", "/readyz");
        assert!(status == 503 || status == 200, "{status} {body}");
        (body.contains("link to B is down") && body.contains("no link from B")).then_some(body)
    });
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["ready"], false);
    assert_eq!(http(admin, "GET", "/healthz").0, 200, "alive all along");
    herd.restart("B");
    eventually("A to be ready again", || {
        (http(admin, "GET", "/readyz").0 == 200).then_some(())
    });
    // The restarted server is ready only once refilled from A.
    let b = herd.admin_addr("B");
    eventually("B to be ready", || {
        (http(b, "GET", "/readyz").0 == 200).then_some(())
    });
}

#[test]
fn only_the_admin_paths_are_served() {
    let herd = InHerd::start(herd_of(&["A"], &[]), 1);
    let admin = herd.admin_addr("A");
    assert_eq!(http(admin, "GET", "/nothing").0, 404);
    assert_eq!(http(admin, "POST", "/metrics").0, 405);
    assert_eq!(http(admin, "GET", "/reload").0, 405);
    let (status, body) = http(admin, "GET", "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"not_ready":[],"ready":true}"#)
    );
    // The client port does not speak HTTP: a request line is a bad command.
    let reply = exchange_text(herd.addr("A"), "GET /metrics HTTP/1.1\n");
    assert!(reply.starts_with("? GET /metrics"), "{reply}");
}

/// `admin_listen: null` serves nothing, and the server runs as before.
#[test]
fn an_admin_endpoint_can_be_turned_off() {
    let config = lone_on_port_zero("A", herd::pure::config::AdminListen::Off);
    let running = start_in_process(config, "A", 1);
    assert_eq!(running.bound().admin, None, "no admin endpoint bound");
    let reply = exchange_text(running.bound().client, "IAMAT c +1+2 3\n");
    assert!(reply.starts_with("AT A "), "{reply}");
}
