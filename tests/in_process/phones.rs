//! Phone apps over HTTP, on servers started in this process: OwnTracks (HTTP
//! mode) and Traccar Client (OsmAnd) posts as the apps send them (payloads
//! from their public documentation, with the fields herd ignores), stored
//! as the IAMAT they stand for and flooded; every error; tokens; keep-alive;
//! the bounds (body size, header count, slow senders); HTTPS.

use crate::support::*;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use herd::pure::clients::{ClientAuth, ClientsConfig, ReadRule, TokenKeys};

const KEY: &str = "phones' token key, 32 bytes long";

/// The OwnTracks booklet's location message, as the issue quotes it.
const LOCATION: &str = r#"{"_type":"location","acc":11,"alt":38,"batt":87,"bs":1,"conn":"w","created_at":1796500000,"lat":48.85833,"lon":2.29513,"t":"u","tid":"JJ","tst":1796500000,"vac":3,"vel":0}"#;
const LWT: &str = r#"{"_type":"lwt","tst":1796500000}"#;
const TRANSITION: &str = r#"{"_type":"transition","event":"enter","desc":"Home","lat":48.85833,"lon":2.29513,"tst":1796500000,"wtst":1796400000,"acc":10,"t":"c","tid":"JJ"}"#;
/// Traccar Client's JSON report, as the issue quotes it.
const TRACCAR: &str = r#"{"device_id":"48241179","location":{"timestamp":"2026-12-06T20:00:00.000Z","coords":{"latitude":34.06893,"longitude":-118.445127,"accuracy":5,"speed":0,"heading":0,"altitude":80},"is_moving":false,"odometer":0,"event":"motionchange","battery":{"level":0.9,"is_charging":false},"activity":{"type":"still"},"extras":{}}}"#;

/// A one-server herd taking phone apps over HTTP on a free port.
fn phones_config(name: &str) -> herd::Config {
    let mut config = lone_on_port_zero(name, admin_on_port_zero());
    config.servers[0].http_listen = Some("127.0.0.1:0".to_owned());
    config
}

fn with_tokens(mut config: herd::Config) -> herd::Config {
    config.clients = ClientsConfig {
        auth: ClientAuth::Token,
        token_key: TokenKeys::One(KEY.to_owned()),
        read: ReadRule::Own,
    };
    config
}

/// One HTTP response: status, headers (lowercase names) and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response with a Content-Length body off `reader`.
fn read_reply(reader: &mut impl BufRead) -> Option<Reply> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).ok()? == 0 {
        return None;
    }
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A request: method, target, extra header lines, body.
fn request(method: &str, target: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: herd\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

/// Sends one request on a new connection and reads its reply.
fn send(addr: SocketAddr, text: &str) -> Reply {
    let stream = connect(addr);
    (&stream).write_all(text.as_bytes()).unwrap();
    read_reply(&mut BufReader::new(stream)).expect("a reply")
}

/// Writes `text` in two halves with `pause` between them, so that the
/// server reads a request that is not yet whole and its deadline is
/// watched (a request read whole in one go is answered before that).
fn write_in_two_parts(writer: &mut TcpStream, text: &str, pause: Duration) {
    let (head, rest) = text.as_bytes().split_at(text.len() / 2);
    writer.write_all(head).unwrap();
    std::thread::sleep(pause);
    writer.write_all(rest).unwrap();
}

/// `Authorization: Basic` for `user:password`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// What OwnTracks sends for user jane's phone, with `extra` headers.
fn owntracks(body: &str, extra: &[&str]) -> String {
    let mut headers = vec![
        "Content-Type: application/json",
        "X-Limit-U: jane",
        "X-Limit-D: phone",
        "User-Agent: Owntracks-Android/2.5",
    ];
    headers.extend_from_slice(extra);
    request("POST", "/owntracks", &headers, body)
}

fn http_addr(running: &herd::Running) -> SocketAddr {
    running.bound().http.expect("HTTP bound")
}

fn metric_of(running: &herd::Running, series: &str) -> f64 {
    let (_, text) = http(running.bound().admin.unwrap(), "GET", "/metrics");
    metric(&text, series).unwrap_or(0.0)
}

#[test]
fn an_owntracks_location_is_stored_as_the_iamat_it_stands_for() {
    let running = start_in_process(phones_config("Tower"), "Tower", 2);
    let reply = send(
        http_addr(&running),
        &owntracks(LOCATION, &[&basic("jane", "x")]),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "[]");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let at = stored_at_line(running.bound().client, "jane/phone").expect("stored");
    let fields: Vec<&str> = at.split(' ').collect();
    assert_eq!(fields[0..2], ["AT", "Tower"]);
    assert!(fields[2].starts_with('+'), "a skew: {at}");
    assert_eq!(
        fields[3..],
        ["jane/phone", "+48.858330+2.295130", "1796500000.000000000"]
    );
    assert_eq!(
        metric_of(
            &running,
            "herd_http_requests_total{app=\"owntracks\",result=\"stored\"}"
        ),
        1.0
    );
    running.stop().unwrap();
}

#[test]
fn other_owntracks_messages_and_empty_bodies_are_answered_and_not_stored() {
    let running = start_in_process(phones_config("Tower"), "Tower", 1);
    let addr = http_addr(&running);
    for body in [LWT, TRANSITION, ""] {
        let reply = send(addr, &owntracks(body, &[]));
        assert_eq!((reply.status, reply.body.as_str()), (200, "[]"), "{body}");
    }
    assert_eq!(stored_at_line(running.bound().client, "jane/phone"), None);
    assert_eq!(
        metric_of(
            &running,
            "herd_http_requests_total{app=\"owntracks\",result=\"ignored\"}"
        ),
        3.0
    );
    running.stop().unwrap();
}

#[test]
fn the_owntracks_id_falls_back_to_the_basic_user_and_tid() {
    let running = start_in_process(phones_config("Tower"), "Tower", 1);
    let text = request(
        "POST",
        "/owntracks",
        &["Content-Type: application/json", &basic("joe", "pw")],
        LOCATION,
    );
    assert_eq!(send(http_addr(&running), &text).status, 200);
    assert!(stored_at_line(running.bound().client, "joe/JJ").is_some());
    running.stop().unwrap();
}

#[test]
fn bad_posts_get_400_with_a_one_line_reason_and_nothing_is_stored() {
    let mut config = phones_config("Tower");
    config.limits.max_future_skew_ms = 60_000;
    let running = start_in_process(config, "Tower", 1);
    let addr = http_addr(&running);
    let far = format!(
        r#"{{"_type":"location","lat":1,"lon":2,"tst":{}}}"#,
        unix_now() + 3600
    );
    let long_user = format!("X-Limit-U: {}", "u".repeat(300));
    let cases: Vec<(String, &str)> = vec![
        (owntracks("{not json", &[]), "not JSON"),
        (
            owntracks(r#"{"_type":"location","lon":2,"tst":1}"#, &[]),
            "no latitude",
        ),
        (
            owntracks(r#"{"_type":"location","lat":100,"lon":2,"tst":1}"#, &[]),
            "out of [-90, 90]",
        ),
        (owntracks(&far, &[]), "too far ahead"),
        (
            request(
                "POST",
                "/owntracks",
                &[&long_user, "X-Limit-D: d"],
                LOCATION,
            ),
            "1 to 255",
        ),
        (
            request(
                "POST",
                "/owntracks",
                &["X-Limit-U: ja ne", "X-Limit-D: d"],
                LOCATION,
            ),
            "white space",
        ),
        (
            request(
                "POST",
                "/osmand",
                &["Content-Type: application/json"],
                "{\"device_id\":1}",
            ),
            "no \"location\"",
        ),
        (
            request("GET", "/osmand?id=7&lat=1&lon=200&timestamp=5", &[], ""),
            "out of [-180, 180]",
        ),
        (
            request("GET", "/osmand?lat=1&lon=2&timestamp=5", &[], ""),
            "no \"id\"",
        ),
    ];
    for (text, says) in &cases {
        let reply = send(addr, text);
        assert_eq!(reply.status, 400, "{text}: {reply:?}");
        assert!(reply.body.contains(says), "{text}: {}", reply.body);
        assert_eq!(
            reply.body.matches('\n').count(),
            1,
            "one line: {}",
            reply.body
        );
    }
    for id in ["jane/phone", "7"] {
        assert_eq!(stored_at_line(running.bound().client, id), None);
    }
    assert_eq!(
        metric_of(
            &running,
            "herd_http_requests_total{app=\"owntracks\",result=\"invalid\"}"
        ) + metric_of(
            &running,
            "herd_http_requests_total{app=\"osmand\",result=\"invalid\"}"
        ),
        cases.len() as f64
    );
    let lost = send(addr, &request("GET", "/elsewhere", &[], ""));
    assert_eq!(lost.status, 404);
    let wrong = send(addr, &request("GET", "/owntracks", &[], ""));
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("POST")));
    running.stop().unwrap();
}

#[test]
fn traccar_client_reports_in_json_a_form_and_a_query_are_stored() {
    let running = start_in_process(phones_config("Tower"), "Tower", 2);
    let addr = http_addr(&running);
    let json = send(
        addr,
        &request(
            "POST",
            "/osmand",
            &["Content-Type: application/json"],
            TRACCAR,
        ),
    );
    assert_eq!((json.status, json.body.as_str()), (200, ""), "{json:?}");
    let query = send(
        addr,
        &request(
            "GET",
            "/osmand?id=777&lat=51.5007&lon=-0.1246&timestamp=1796500000&hdop=1.2&altitude=15&speed=0",
            &[],
            "",
        ),
    );
    assert_eq!(query.status, 200, "{query:?}");
    let form = send(
        addr,
        &request(
            "POST",
            "/osmand",
            &["Content-Type: application/x-www-form-urlencoded"],
            "id=form-1&lat=-33.8688&lon=151.2093&timestamp=2026-12-06T10%3A00%3A00Z",
        ),
    );
    assert_eq!(form.status, 200, "{form:?}");
    let client = running.bound().client;
    for (id, tail) in [
        (
            "48241179",
            "48241179 +34.068930-118.445127 1796587200.000000000",
        ),
        ("777", "777 +51.500700-0.124600 1796500000.000000000"),
        (
            "form-1",
            "form-1 -33.868800+151.209300 1796551200.000000000",
        ),
    ] {
        let at = stored_at_line(client, id).unwrap_or_else(|| panic!("{id} not stored"));
        assert!(at.ends_with(tail), "{at}");
    }
    running.stop().unwrap();
}

#[test]
fn with_tokens_each_app_proves_its_client_and_nothing_else_is_stored() {
    let running = start_in_process(with_tokens(phones_config("Tower")), "Tower", 1);
    let addr = http_addr(&running);
    let jane = client_token(KEY, "jane/phone", 600);
    // OwnTracks: the Basic password is the client's token.
    let good = send(addr, &owntracks(LOCATION, &[&basic("jane", &jane)]));
    assert_eq!(good.status, 200, "{good:?}");
    let wrong = send(addr, &owntracks(LOCATION, &[&basic("jane", "guess")]));
    assert_eq!(wrong.status, 401);
    assert!(wrong
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic"));
    let none = send(addr, &owntracks(LOCATION, &[]));
    assert_eq!(none.status, 401);
    // Jane's token does not let X-Limit-U speak for joe.
    let text = request(
        "POST",
        "/owntracks",
        &["X-Limit-U: joe", "X-Limit-D: phone", &basic("jane", &jane)],
        LOCATION,
    );
    assert_eq!(send(addr, &text).status, 403);
    // Traccar Client: token= or a Bearer header.
    let tok = client_token(KEY, "777", 600);
    let query = format!("/osmand?id=777&lat=1&lon=2&timestamp=1796500000&token={tok}");
    assert_eq!(send(addr, &request("GET", &query, &[], "")).status, 200);
    let bearer = format!("Authorization: Bearer {tok}");
    let posted = request(
        "POST",
        "/osmand?id=777&lat=1&lon=2&timestamp=1796500001",
        &[&bearer],
        "",
    );
    assert_eq!(send(addr, &posted).status, 200);
    let unproven = send(
        addr,
        &request("GET", "/osmand?id=888&lat=1&lon=2&timestamp=1", &[], ""),
    );
    assert_eq!(unproven.status, 401);
    assert!(unproven
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    let stolen = format!("/osmand?id=888&lat=1&lon=2&timestamp=1&token={tok}");
    assert_eq!(send(addr, &request("GET", &stolen, &[], "")).status, 401);
    // Read back with the line protocol, as the owner.
    let line = running.bound().client;
    let mine = exchange_text(
        line,
        &format!(
            "AUTH 777 {}\nWHATSAT 777 1 0\nAUTH 888 {}\n",
            client_token(KEY, "777", 60),
            client_token(KEY, "888", 60)
        ),
    );
    assert!(
        mine.contains(" 777 +1.000000+2.000000 1796500001.000000000"),
        "{mine}"
    );
    let theirs = exchange_text(
        line,
        &format!(
            "AUTH 888 {}\nWHATSAT 888 1 0\n",
            client_token(KEY, "888", 60)
        ),
    );
    assert!(
        theirs.ends_with("? WHATSAT 888 1 0\n"),
        "888 stored nothing: {theirs}"
    );
    assert_eq!(
        metric_of(
            &running,
            "herd_http_requests_total{app=\"owntracks\",result=\"unauthorized\"}"
        ),
        2.0
    );
    running.stop().unwrap();
}

#[test]
fn one_keep_alive_connection_carries_many_requests_and_pipelined_ones() {
    let running = start_in_process(phones_config("Tower"), "Tower", 1);
    let stream = connect(http_addr(&running));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for i in 0..200u64 {
        let body = format!(
            r#"{{"_type":"location","lat":1,"lon":2,"tst":{}}}"#,
            1_796_500_000 + i
        );
        writer.write_all(owntracks(&body, &[]).as_bytes()).unwrap();
        let reply = read_reply(&mut reader).expect("a reply on the same connection");
        assert_eq!(reply.status, 200, "request {i}");
    }
    // Ten at once, answered in order.
    let burst: String = (0..10u64)
        .map(|i| {
            let q = format!(
                "/osmand?id=burst&lat=1&lon=2&timestamp={}",
                1_796_600_000 + i
            );
            request("GET", &q, &[], "")
        })
        .collect();
    writer.write_all(burst.as_bytes()).unwrap();
    for i in 0..10 {
        assert_eq!(
            read_reply(&mut reader).map(|r| r.status),
            Some(200),
            "pipelined {i}"
        );
    }
    let at = stored_at_line(running.bound().client, "jane/phone").unwrap();
    assert!(at.ends_with(" 1796500199.000000000"), "{at}");
    let at = stored_at_line(running.bound().client, "burst").unwrap();
    assert!(at.ends_with(" 1796600009.000000000"), "{at}");
    running.stop().unwrap();
}

#[test]
fn a_body_over_64_kib_and_too_many_headers_are_refused() {
    let running = start_in_process(phones_config("Tower"), "Tower", 1);
    let addr = http_addr(&running);
    let big = format!(
        r#"{{"_type":"location","lat":1,"lon":2,"tst":5,"pad":"{}"}}"#,
        "x".repeat(herd::net::phones::MAX_BODY_BYTES)
    );
    let reply = send(addr, &owntracks(&big, &[]));
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(stored_at_line(running.bound().client, "jane/phone"), None);
    let many: Vec<String> = (0..herd::net::phones::MAX_HEADERS + 1)
        .map(|i| format!("X-Extra-{i}: {i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let stream = connect(addr);
    (&stream)
        .write_all(owntracks(LOCATION, &many).as_bytes())
        .unwrap();
    // Refused by closing (with pipelined answers flushed together, hyper
    // closes without writing its 431).
    let reply = read_reply(&mut BufReader::new(stream));
    assert!(
        reply.as_ref().is_none_or(|r| r.status == 431),
        "too many headers answered {reply:?}"
    );
    assert_eq!(stored_at_line(running.bound().client, "jane/phone"), None);
    running.stop().unwrap();
}

#[test]
fn slow_senders_of_headers_or_body_are_closed_at_the_request_deadline() {
    let mut config = phones_config("Tower");
    config.limits.http_request_timeout_ms = 300;
    let running = start_in_process(config, "Tower", 1);
    let addr = http_addr(&running);
    let whole = owntracks(LOCATION, &[]);
    let head_end = whole.find("\r\n\r\n").unwrap();
    // Half the headers, then a byte now and then: never whole.
    let mut slow_head = TcpStream::connect(addr).unwrap();
    slow_head
        .write_all(&whole.as_bytes()[..head_end / 2])
        .unwrap();
    // Whole headers, half the body.
    let mut slow_body = TcpStream::connect(addr).unwrap();
    slow_body
        .write_all(&whole.as_bytes()[..head_end + 4 + LOCATION.len() / 2])
        .unwrap();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(50));
        let _ = slow_head.write_all(&whole.as_bytes()[head_end / 2 + i..head_end / 2 + i + 1]);
    }
    for stream in [&mut slow_head, &mut slow_body] {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    assert!(closed_by_server(&mut slow_head), "slow headers not closed");
    assert!(closed_by_server(&mut slow_body), "slow body not closed");
    assert_eq!(stored_at_line(running.bound().client, "jane/phone"), None);
    // A prompt sender on the same server is served.
    assert_eq!(send(addr, &whole).status, 200);
    eventually("the closed requests counted", || {
        let timed_out = metric_of(
            &running,
            "herd_http_requests_total{app=\"none\",result=\"timed_out\"}",
        );
        (timed_out >= 2.0).then_some(())
    });
    running.stop().unwrap();
}

/// The request deadline counts from each request's first byte: a request
/// that starts late in a quiet connection has its own whole timeout, a
/// connection idle between requests for longer than the timeout stays
/// open, and one that stalls mid-request later is still closed.
#[test]
fn each_request_has_its_own_deadline_and_the_quiet_between_them_has_none() {
    const TIMEOUT_MS: u64 = 2_000;
    let mut config = phones_config("Tower");
    config.limits.http_request_timeout_ms = TIMEOUT_MS;
    let running = start_in_process(config, "Tower", 1);
    let addr = http_addr(&running);
    let stream = connect(addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let post = |tst: u64| {
        owntracks(
            &format!(r#"{{"_type":"location","lat":1,"lon":2,"tst":{tst}}}"#),
            &[],
        )
    };
    let ms = |n: u64| Duration::from_millis(n);
    write_in_two_parts(&mut writer, &post(1_796_500_000), ms(TIMEOUT_MS / 5));
    assert_eq!(read_reply(&mut reader).map(|r| r.status), Some(200));
    // The second starts half a timeout later and takes 0.6 of one: it is
    // under way when the first one's deadline passes.
    std::thread::sleep(ms(TIMEOUT_MS / 2));
    write_in_two_parts(&mut writer, &post(1_796_500_001), ms(TIMEOUT_MS * 6 / 10));
    assert_eq!(
        read_reply(&mut reader).map(|r| r.status),
        Some(200),
        "a request cut at the deadline of the one before it"
    );
    // Quiet for longer than a timeout, then a third request.
    std::thread::sleep(ms(TIMEOUT_MS * 5 / 4));
    writer.write_all(post(1_796_500_002).as_bytes()).unwrap();
    assert_eq!(
        read_reply(&mut reader).map(|r| r.status),
        Some(200),
        "a connection closed for being quiet between requests"
    );
    let at = stored_at_line(running.bound().client, "jane/phone").unwrap();
    assert!(at.ends_with(" 1796500002.000000000"), "{at}");
    // A fourth that stops halfway is closed.
    let fourth = post(1_796_500_003);
    writer
        .write_all(&fourth.as_bytes()[..fourth.len() / 2])
        .unwrap();
    let mut stream = writer;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(
        closed_by_server(&mut stream),
        "a stalled request not closed"
    );
    let at = stored_at_line(running.bound().client, "jane/phone").unwrap();
    assert!(at.ends_with(" 1796500002.000000000"), "{at}");
    running.stop().unwrap();
}

/// The config has no upper bound on the request timeout: the largest
/// one is taken, and requests are served.
#[test]
fn the_largest_request_timeout_is_taken() {
    let mut config = phones_config("Tower");
    config.limits.http_request_timeout_ms = u64::MAX;
    let running = start_in_process(config, "Tower", 1);
    let addr = http_addr(&running);
    let stream = connect(addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let whole = owntracks(LOCATION, &[]);
    write_in_two_parts(&mut writer, &whole, Duration::from_millis(100));
    assert_eq!(read_reply(&mut reader).map(|r| r.status), Some(200));
    assert!(stored_at_line(running.bound().client, "jane/phone").is_some());
    running.stop().unwrap();
}

#[test]
fn a_phone_report_floods_to_the_rest_of_the_herd() {
    let mut template = herd_of(&["Near", "Far"], &[("Near", "Far")]);
    for server in &mut template.servers {
        server.http_listen = Some("127.0.0.1:0".to_owned());
    }
    let herd = InHerd::start(template, 1);
    let near = herd.running("Near").bound().http.expect("HTTP bound");
    let reply = send(near, &owntracks(LOCATION, &[]));
    assert_eq!(reply.status, 200);
    let at = eventually("the record at Far", || {
        stored_at_line(herd.addr("Far"), "jane/phone")
    });
    assert!(at.starts_with("AT Near "), "{at}");
    assert!(
        at.ends_with(" jane/phone +48.858330+2.295130 1796500000.000000000"),
        "{at}"
    );
}

#[test]
fn phones_post_over_https_with_the_servers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    herd::net::certs::write_herd_certs_with_hosts(
        &[("Tower", vec!["127.0.0.1".to_owned()])],
        dir.path(),
        false,
    )
    .unwrap();
    let mut config = lone_on_port_zero("Tower", admin_on_port_zero());
    config.tls = Some(herd::pure::config::TlsConfig {
        ca: dir.path().join("ca.pem").display().to_string(),
        cert: dir.path().join("{name}.pem").display().to_string(),
        key: dir.path().join("{name}-key.pem").display().to_string(),
    });
    config.servers[0].https_listen = Some("127.0.0.1:0".to_owned());
    let running = start_in_process(config, "Tower", 1);
    let https = running.bound().https.expect("HTTPS bound");
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let mut stream = tls_client(https, &ca).expect("TLS");
    stream
        .write_all(owntracks(LOCATION, &[]).as_bytes())
        .unwrap();
    let reply = read_reply(&mut BufReader::new(stream)).expect("a reply over TLS");
    assert_eq!((reply.status, reply.body.as_str()), (200, "[]"));
    assert!(stored_at_line(running.bound().client, "jane/phone").is_some());
    running.stop().unwrap();
}
