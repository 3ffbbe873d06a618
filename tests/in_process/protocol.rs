//! One real server on loopback, spoken to over TCP as PROTOCOL.md says.

use crate::support::*;

const KIWI: &str = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";

fn lone_server(shards: usize) -> InHerd {
    InHerd::start(herd_of(&["Solo"], &[]), shards)
}

fn assert_at_line(line: &str, server: &str, echo: &str) {
    let fields: Vec<&str> = line.trim_end_matches('\n').split(' ').collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(fields[0], "AT");
    assert_eq!(fields[1], server);
    let skew = fields[2];
    assert!(skew.starts_with('+') || skew.starts_with('-'), "{skew}");
    let (_, frac) = skew.split_once('.').expect("skew has a dot");
    assert_eq!(frac.len(), 9, "{skew}");
    assert!(frac.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(fields[3..].join(" "), echo);
}

#[test]
fn iamat_is_answered_with_an_at_line_echoing_the_client_fields() {
    let herd = lone_server(1);
    let reply = exchange_text(herd.addr("Solo"), KIWI);
    assert_eq!(reply.lines().count(), 1, "{reply}");
    assert!(reply.ends_with('\n'));
    assert_at_line(
        &reply,
        "Solo",
        "kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
    );
    // The client time is in 2021, so the skew is positive and years long.
    let skew: f64 = reply.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(skew > 100_000_000.0, "{skew}");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_client_time_slightly_ahead_gives_a_negative_skew() {
    let herd = lone_server(1);
    let soon = unix_now() + 3600;
    let reply = exchange_text(herd.addr("Solo"), &format!("IAMAT fut +1-2 {soon}.5\n"));
    assert!(reply.starts_with("AT Solo -"), "{reply}");
}

#[test]
fn a_client_time_more_than_a_day_ahead_is_invalid_and_pins_nothing() {
    let herd = lone_server(1);
    let addr = herd.addr("Solo");
    // Year 2286: stored, it would make every later real update look older.
    let reply = exchange_text(addr, "IAMAT pinned +1-2 9999999999.0\n");
    assert_eq!(reply, "? IAMAT pinned +1-2 9999999999.0\n");
    assert_eq!(stored_at_line(addr, "pinned"), None);
    let real = format!("IAMAT pinned +3-4 {}.0\n", unix_now());
    let reply = exchange_text(addr, &real);
    assert!(reply.starts_with("AT Solo "), "{reply}");
    assert_eq!(
        stored_at_line(addr, "pinned").as_deref(),
        Some(reply.trim_end())
    );
}

#[test]
fn whatsat_returns_the_stored_at_line_and_places_json_cut_to_max_results() {
    let herd = lone_server(2);
    let at = exchange_text(herd.addr("Solo"), KIWI);
    let mut client = Client::new(herd.addr("Solo"));
    client.send("WHATSAT kiwi.cs.ucla.edu 10 3\n");
    let reply = client.whatsat_reply();
    let (first, json) = reply.split_once('\n').unwrap();
    assert_eq!(format!("{first}\n"), at);
    assert!(reply.ends_with("}\n\n"), "{reply:?}");
    assert!(!reply[..reply.len() - 2].contains("\n\n"));
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(value["status"], "OK");
    assert_eq!(value["results"].as_array().unwrap().len(), 3);
    // Indented, one field per line.
    assert!(json.starts_with("{\n  \""), "{json}");
    client.send("WHATSAT kiwi.cs.ucla.edu 10 0\n");
    let none: serde_json::Value =
        serde_json::from_str(client.whatsat_reply().split_once('\n').unwrap().1).unwrap();
    assert_eq!(none["results"].as_array().unwrap().len(), 0);
}

#[test]
fn whatsat_for_an_unknown_client_is_invalid() {
    let herd = lone_server(1);
    let reply = exchange_text(herd.addr("Solo"), "WHATSAT nobody 10 3\n");
    assert_eq!(reply, "? WHATSAT nobody 10 3\n");
}

#[test]
fn invalid_commands_are_copied_back_and_the_connection_stays_open() {
    let herd = lone_server(1);
    let input =
        "HELLO world\nIAMAT a +1-2\nWHATSAT a 51 3\nIAMAT x +91+0 1\n\n   \nIAMAT ok +1-2 3\n";
    let reply = exchange_text(herd.addr("Solo"), input);
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(
        &lines[..4],
        &[
            "? HELLO world",
            "? IAMAT a +1-2",
            "? WHATSAT a 51 3",
            "? IAMAT x +91+0 1"
        ]
    );
    assert_eq!(lines.len(), 5, "blank lines get no reply: {reply}");
    assert!(lines[4].starts_with("AT Solo "), "{reply}");
}

#[test]
fn carriage_returns_and_odd_white_space_are_handled() {
    let herd = lone_server(1);
    let reply = exchange_text(herd.addr("Solo"), "\t IAMAT\x0bcr\x0c+1-2  5 \r\n");
    assert!(reply.starts_with("AT Solo "), "{reply:?}");
    assert!(reply.ends_with(" cr +1-2 5\n"), "{reply:?}");
}

#[test]
fn bad_utf8_is_invalid_and_does_not_hurt_the_server() {
    let herd = lone_server(1);
    let reply = exchange(
        herd.addr("Solo"),
        b"IAMAT \xff\xfe +1-2 3\nIAMAT ok +1-2 3\n",
    );
    assert!(reply.starts_with(b"? IAMAT \xff\xfe +1-2 3\n"), "{reply:?}");
    assert!(String::from_utf8_lossy(&reply).contains("AT Solo"));
}

#[test]
fn an_over_long_line_is_invalid_and_reading_resumes_after_it() {
    let herd = lone_server(1);
    let mut input = "X".repeat(10_000).into_bytes();
    input.extend_from_slice(b"\nIAMAT after +1-2 3\n");
    let reply = String::from_utf8(exchange(herd.addr("Solo"), &input)).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines.len(), 2, "{}", &reply[..200.min(reply.len())]);
    assert!(lines[0].starts_with("? XXXX"));
    assert!(
        lines[0].len() <= 4096 + 2,
        "only the first bytes are echoed"
    );
    assert!(lines[1].starts_with("AT Solo ") && lines[1].ends_with(" after +1-2 3"));
}

#[test]
fn a_last_line_without_newline_is_answered_at_end_of_input() {
    let herd = lone_server(1);
    let reply = exchange_text(herd.addr("Solo"), "IAMAT last +1-2 3");
    assert!(
        reply.starts_with("AT Solo ") && reply.ends_with(" last +1-2 3\n"),
        "{reply}"
    );
}

#[test]
fn older_iamat_is_answered_but_not_stored() {
    let herd = lone_server(2);
    let addr = herd.addr("Solo");
    let newer = exchange_text(addr, "IAMAT c +10+20 200\n");
    let older = exchange_text(addr, "IAMAT c +30+40 100\n");
    assert!(
        older.ends_with(" c +30+40 100\n"),
        "older is answered with its own line"
    );
    assert_eq!(stored_at_line(addr, "c").unwrap() + "\n", newer);
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let herd = lone_server(2);
    let mut input = String::new();
    for i in 0..500 {
        input.push_str(&format!("IAMAT p{i} +1-2 {i}\n"));
        if i % 50 == 0 {
            input.push_str(&format!("WHATSAT p{i} 1 1\n"));
        }
    }
    let reply = exchange_text(herd.addr("Solo"), &input);
    let mut lines = reply.lines();
    for i in 0..500 {
        let line = lines.next().unwrap();
        assert!(line.ends_with(&format!(" p{i} +1-2 {i}")), "{i}: {line}");
        if i % 50 == 0 {
            // The WHATSAT sees the IAMAT just before it, from any shard.
            let at = lines.next().unwrap();
            assert!(at.ends_with(&format!(" p{i} +1-2 {i}")), "{at}");
            for json_line in lines.by_ref() {
                if json_line.is_empty() {
                    break;
                }
            }
        }
    }
    assert_eq!(lines.next(), None);
}

#[test]
fn a_client_cannot_inject_an_at_line() {
    let herd = lone_server(1);
    let addr = herd.addr("Solo");
    let line = "AT Solo +0.000000001 victim +1-2 5";
    let reply = exchange_text(addr, &format!("{line}\n"));
    assert_eq!(reply, format!("? {line}\n"));
    assert_eq!(stored_at_line(addr, "victim"), None);
}

#[test]
fn link_lines_on_the_client_port_are_invalid_and_the_client_stays() {
    let herd = lone_server(1);
    let reply = exchange_text(
        herd.addr("Solo"),
        "IAMAT a +1-2 3\nPEER Solo -\nAT Solo +0.000000001 v +1-2 5\nIAMAT b +1-2 3\n",
    );
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines.len(), 4, "{reply}");
    assert_eq!(lines[1], "? PEER Solo -");
    assert_eq!(lines[2], "? AT Solo +0.000000001 v +1-2 5");
    assert!(lines[3].starts_with("AT Solo "), "{reply}");
    assert_eq!(stored_at_line(herd.addr("Solo"), "v"), None);
}

#[test]
fn thousand_clients_spread_over_all_shards_read_back_correctly() {
    let shards = 4;
    let herd = lone_server(shards);
    let addr = herd.addr("Solo");
    let ring = herd::pure::ring::Ring::new(shards);
    let mut per_shard = vec![0; shards];
    let mut input = String::new();
    for i in 0..1000 {
        let id = format!("client-{i}");
        per_shard[ring.owner(&id)] += 1;
        input.push_str(&format!(
            "IAMAT {id} +{}.5-{}.25 {}.{i}\n",
            i % 90,
            i % 180,
            1_700_000_000 + i
        ));
    }
    assert!(per_shard.iter().all(|&n| n > 150), "{per_shard:?}");
    let stored: Vec<String> = exchange_text(addr, &input)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(stored.len(), 1000);
    // Read back over several connections, each landing on some shard.
    for (chunk, expected) in stored.chunks(250).enumerate() {
        let mut client = Client::new(addr);
        for (k, want) in expected.iter().enumerate() {
            let i = chunk * 250 + k;
            client.send(&format!("WHATSAT client-{i} 5 1\n"));
            let reply = client.whatsat_reply();
            assert_eq!(reply.lines().next().unwrap(), want, "client-{i}");
        }
    }
}
