//! Client identity and TLS, on servers started in this process: with
//! `clients.auth: "token"` a connection writes only the client it proved it
//! speaks for (`AUTH`), reads only it (`read: "own"`) or any (`"any"`);
//! bad tokens, guessing, expiry, reloads that change the keys, and the
//! client protocol over TLS, with handshakes that fail closed.

use crate::support::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use herd::pure::clients::{ClientAuth, ClientsConfig, ReadRule, TokenKeys};
use herd::pure::token::{issue, TokenKey};

const KEY_A: &str = "key A of the herd, 32 bytes long";
const KEY_B: &str = "key B of the herd, 32 bytes long";

fn now() -> u64 {
    unix_now()
}

fn token(key: &str, client: &str, ttl: u64) -> String {
    client_token(key, client, ttl)
}

fn clients(keys: &[&str], read: ReadRule) -> ClientsConfig {
    ClientsConfig {
        auth: ClientAuth::Token,
        token_key: TokenKeys::Many(keys.iter().map(|k| (*k).to_owned()).collect()),
        read,
    }
}

/// A one-server herd (two shards, so records cross to their owners) whose
/// clients authenticate with keys A then B.
fn token_config(read: ReadRule) -> herd::Config {
    let mut config = lone_on_port_zero("Gate", admin_on_port_zero());
    config.clients = clients(&[KEY_A, KEY_B], read);
    config
}

fn start(config: herd::Config) -> herd::Running {
    start_in_process(config, "Gate", 2)
}

const KIWI: &str = "+34.068930-118.445127";

fn iamat(client: &str, time: u64) -> String {
    format!("IAMAT {client} {KIWI} {time}.5\n")
}

/// AUTHs as `client` on a new connection and checks the answer.
fn authed(addr: SocketAddr, client: &str, token: &str) -> Client {
    let mut c = Client::new(addr);
    c.send(&format!("AUTH {client} {token}\n"));
    let reply = c.line();
    assert!(reply.starts_with(&format!("AUTH {client} ")), "{reply}");
    c
}

fn metric_of(admin: SocketAddr, series: &str) -> f64 {
    let (_, text) = http(admin, "GET", "/metrics");
    metric(&text, series).unwrap_or_else(|| panic!("no {series} in /metrics"))
}

#[test]
fn without_auth_every_iamat_and_whatsat_is_refused_and_nothing_is_stored() {
    let running = start(token_config(ReadRule::Own));
    let addr = running.bound().client;
    let mut c = Client::new(addr);
    let line = iamat("alice.phone", 1_700_000_000);
    c.send(&line);
    assert_eq!(c.line(), format!("? {line}"));
    c.send("WHATSAT alice.phone 10 1\n");
    assert_eq!(c.line(), "? WHATSAT alice.phone 10 1\n");
    // An authenticated reader finds no record: nothing was stored.
    let mut alice = authed(addr, "alice.phone", &token(KEY_A, "alice.phone", 60));
    alice.send("WHATSAT alice.phone 10 1\n");
    assert_eq!(alice.line(), "? WHATSAT alice.phone 10 1\n");
    let admin = running.bound().admin.unwrap();
    assert_eq!(
        metric_of(admin, "herd_refused_total{reason=\"unauthenticated\"}"),
        2.0
    );
    running.stop().unwrap();
}

#[test]
fn a_good_token_lets_a_connection_write_and_read_only_its_own_client() {
    let running = start(token_config(ReadRule::Own));
    let addr = running.bound().client;
    let alice_token = token(KEY_A, "alice.phone", 3600);
    let mut alice = Client::new(addr);
    alice.send(&format!("AUTH alice.phone {alice_token}\n"));
    let expiry: u64 = alice
        .line()
        .strip_prefix("AUTH alice.phone ")
        .and_then(|e| e.trim().parse().ok())
        .expect("AUTH alice.phone <expiry>");
    assert!((now() + 3590..=now() + 3600).contains(&expiry));
    alice.send(&iamat("alice.phone", 1_700_000_000));
    assert!(alice.line().starts_with("AT Gate "));
    // The forgery of the issue: moving someone else.
    let forged = iamat("bob.phone", 1_700_000_001);
    alice.send(&forged);
    assert_eq!(alice.line(), format!("? {forged}"));
    // And reading someone else.
    let mut bob = authed(addr, "bob.phone", &token(KEY_B, "bob.phone", 60));
    bob.send(&iamat("bob.phone", 1_700_000_002));
    assert!(bob.line().starts_with("AT Gate "));
    alice.send("WHATSAT bob.phone 10 1\n");
    assert_eq!(alice.line(), "? WHATSAT bob.phone 10 1\n");
    alice.send("WHATSAT alice.phone 10 1\n");
    let reply = alice.whatsat_reply();
    assert!(reply.contains(" alice.phone "), "{reply}");
    // Bob's record is his own: alice's attempt changed nothing.
    bob.send("WHATSAT bob.phone 10 0\n");
    assert!(bob.whatsat_reply().contains("1700000002.5"));
    let admin = running.bound().admin.unwrap();
    assert_eq!(
        metric_of(admin, "herd_refused_total{reason=\"other_client\"}"),
        2.0
    );
    assert_eq!(
        metric_of(admin, "herd_client_auth_total{result=\"ok\"}"),
        2.0
    );
    running.stop().unwrap();
}

#[test]
fn read_any_lets_an_authenticated_connection_read_every_client_and_write_only_its_own() {
    let running = start(token_config(ReadRule::Any));
    let addr = running.bound().client;
    let mut bob = authed(addr, "bob.phone", &token(KEY_A, "bob.phone", 60));
    bob.send(&iamat("bob.phone", 1_700_000_000));
    assert!(bob.line().starts_with("AT Gate "));
    let mut app = authed(addr, "dispatch.app", &token(KEY_A, "dispatch.app", 60));
    app.send("WHATSAT bob.phone 10 1\n");
    assert!(app.whatsat_reply().contains(" bob.phone "));
    let forged = iamat("bob.phone", 1_700_000_001);
    app.send(&forged);
    assert_eq!(app.line(), format!("? {forged}"));
    // Still nobody reads without proving who they are.
    let mut stranger = Client::new(addr);
    stranger.send("WHATSAT bob.phone 10 1\n");
    assert_eq!(stranger.line(), "? WHATSAT bob.phone 10 1\n");
    running.stop().unwrap();
}

#[test]
fn wrong_tampered_expired_and_foreign_tokens_are_refused_without_the_token() {
    let running = start(token_config(ReadRule::Own));
    let addr = running.bound().client;
    let good = token(KEY_A, "alice.phone", 60);
    let mut tampered = good.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let expired = issue(&TokenKey::new(KEY_A), "alice.phone", now() - 1);
    let cases = [
        ("not-a-token".to_owned(), "bad"),
        (tampered, "bad"),
        (token(KEY_A, "bob.phone", 60), "bad"),
        (
            token("a key this herd never had!!", "alice.phone", 60),
            "bad",
        ),
        (expired, "expired"),
    ];
    let mut c = Client::new(addr);
    for (bad, _) in &cases {
        c.send(&format!("AUTH alice.phone {bad}\n"));
        let reply = c.line();
        assert_eq!(reply, "? AUTH alice.phone\n", "{bad}");
    }
    let line = iamat("alice.phone", 1_700_000_000);
    c.send(&line);
    assert_eq!(c.line(), format!("? {line}"), "still unauthenticated");
    let admin = running.bound().admin.unwrap();
    assert_eq!(
        metric_of(admin, "herd_client_auth_total{result=\"bad\"}"),
        4.0
    );
    assert_eq!(
        metric_of(admin, "herd_client_auth_total{result=\"expired\"}"),
        1.0
    );
    // A malformed AUTH holding a token is refused without echoing it.
    c.send(&format!("AUTH alice.phone {good} extra\n"));
    assert_eq!(c.line(), "? AUTH alice.phone\n");
    running.stop().unwrap();
}

#[test]
fn a_second_auth_renews_the_same_client_and_refuses_another() {
    let running = start(token_config(ReadRule::Own));
    let addr = running.bound().client;
    let mut c = authed(addr, "alice.phone", &token(KEY_A, "alice.phone", 60));
    let renewed = token(KEY_B, "alice.phone", 7200);
    c.send(&format!("AUTH alice.phone {renewed}\n"));
    let reply = c.line();
    assert!(reply.starts_with("AUTH alice.phone "), "{reply}");
    c.send(&format!(
        "AUTH bob.phone {}\n",
        token(KEY_A, "bob.phone", 60)
    ));
    assert_eq!(c.line(), "? AUTH bob.phone\n");
    c.send(&iamat("alice.phone", 1_700_000_000));
    assert!(c.line().starts_with("AT Gate "), "still alice");
    running.stop().unwrap();
}

#[test]
fn a_server_without_tokens_refuses_auth_and_serves_everyone_as_before() {
    let running = start_in_process(lone_on_port_zero("Open", admin_on_port_zero()), "Open", 1);
    let addr = running.bound().client;
    let mut c = Client::new(addr);
    c.send(&format!(
        "AUTH alice.phone {}\n",
        token(KEY_A, "alice.phone", 60)
    ));
    assert_eq!(c.line(), "? AUTH alice.phone\n");
    c.send(&iamat("bob.phone", 1_700_000_000));
    assert!(c.line().starts_with("AT Open "));
    c.send("WHATSAT bob.phone 10 0\n");
    assert!(c.whatsat_reply().starts_with("AT Open "));
    let admin = running.bound().admin.unwrap();
    assert_eq!(
        metric_of(admin, "herd_client_auth_total{result=\"off\"}"),
        1.0
    );
    running.stop().unwrap();
}

#[test]
fn past_the_failure_limit_auth_is_refused_unchecked_for_that_address_and_client_only() {
    let mut config = token_config(ReadRule::Own);
    config.limits.client_auth_failures_per_min = 3;
    let running = start(config);
    let addr = running.bound().client;
    let mut c = Client::new(addr);
    for _ in 0..3 {
        c.send("AUTH alice.phone guess\n");
        assert_eq!(c.line(), "? AUTH alice.phone\n");
    }
    // The right token now: refused unchecked, for the rest of the minute.
    c.send(&format!(
        "AUTH alice.phone {}\n",
        token(KEY_A, "alice.phone", 60)
    ));
    assert_eq!(c.line(), "? AUTH alice.phone\n");
    // The same address, another client: checked as ever.
    let bob = authed(addr, "bob.phone", &token(KEY_A, "bob.phone", 60));
    drop(bob);
    let admin = running.bound().admin.unwrap();
    assert_eq!(
        metric_of(admin, "herd_client_auth_total{result=\"limited\"}"),
        1.0
    );
    assert_eq!(
        metric_of(admin, "herd_client_auth_total{result=\"bad\"}"),
        3.0
    );
    running.stop().unwrap();
}

#[test]
fn a_token_that_expires_during_a_connection_stops_its_commands_until_a_new_auth() {
    let running = start(token_config(ReadRule::Own));
    let addr = running.bound().client;
    let mut c = authed(addr, "alice.phone", &token(KEY_A, "alice.phone", 2));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut time = 1_700_000_000u64;
    // Accepted until the expiry passes, then refused: polled, not slept.
    loop {
        time += 1;
        let line = iamat("alice.phone", time);
        c.send(&line);
        let reply = c.line();
        if reply == format!("? {line}") {
            break;
        }
        assert!(reply.starts_with("AT Gate "), "{reply}");
        assert!(Instant::now() < deadline, "the token never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.send("WHATSAT alice.phone 10 0\n");
    assert_eq!(c.line(), "? WHATSAT alice.phone 10 0\n");
    c.send(&format!(
        "AUTH alice.phone {}\n",
        token(KEY_A, "alice.phone", 60)
    ));
    assert!(c.line().starts_with("AUTH alice.phone "));
    c.send(&iamat("alice.phone", time + 1));
    assert!(c.line().starts_with("AT Gate "));
    running.stop().unwrap();
}

#[test]
fn a_reload_that_removes_a_key_closes_the_connections_that_authenticated_with_it() {
    let config = token_config(ReadRule::Own);
    let running = start(config.clone());
    let addr = running.bound().client;
    let mut with_a = authed(addr, "alice.phone", &token(KEY_A, "alice.phone", 60));
    let mut with_b = authed(addr, "bob.phone", &token(KEY_B, "bob.phone", 60));
    let mut unauthenticated = Client::new(addr);
    unauthenticated.send("WHATSAT x 1 1\n");
    assert_eq!(unauthenticated.line(), "? WHATSAT x 1 1\n");
    let mut rotated = config;
    rotated.clients = clients(&[KEY_B], ReadRule::Own);
    // The running config has the bound ports; keep them.
    rotated.servers = vec![port_zero_server("Gate", admin_on_port_zero())];
    rotated.servers[0].listen = addr.to_string();
    rotated.servers[0].peer_listen = Some(running.bound().peer.to_string());
    rotated.servers[0].admin_listen =
        herd::pure::config::AdminListen::At(running.bound().admin.unwrap().to_string());
    running.reconfigure(rotated).expect("reload");
    with_a.stream().set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(
        closed_by_server(with_a.stream()),
        "the connection of the removed key is still open"
    );
    with_b.send(&iamat("bob.phone", 1_700_000_000));
    assert!(with_b.line().starts_with("AT Gate "), "key B stays good");
    unauthenticated.send("WHATSAT x 1 1\n");
    assert_eq!(unauthenticated.line(), "? WHATSAT x 1 1\n");
    // A token of the removed key is no longer taken, on any shard (each
    // follows the reload on its own: polled).
    let old_token = token(KEY_A, "alice.phone", 60);
    eventually("the removed key refused on every shard", || {
        let refused = (0..8).all(|_| {
            let mut again = Client::new(addr);
            again.send(&format!("AUTH alice.phone {old_token}\n"));
            again.line() == "? AUTH alice.phone\n"
        });
        refused.then_some(())
    });
    running.stop().unwrap();
}

#[test]
fn a_reload_that_turns_tokens_on_applies_to_connections_already_open() {
    let open = lone_on_port_zero("Gate", admin_on_port_zero());
    let running = start(open);
    let bound = running.bound();
    let mut c = Client::new(bound.client);
    c.send(&iamat("alice.phone", 1_700_000_000));
    assert!(c.line().starts_with("AT Gate "));
    let mut tokens = lone_on_port_zero("Gate", admin_on_port_zero());
    tokens.servers[0].listen = bound.client.to_string();
    tokens.servers[0].peer_listen = Some(bound.peer.to_string());
    tokens.servers[0].admin_listen =
        herd::pure::config::AdminListen::At(bound.admin.unwrap().to_string());
    tokens.clients = clients(&[KEY_A], ReadRule::Own);
    running.reconfigure(tokens).expect("reload");
    // Shards follow a reload on their own executors: polled.
    let mut time = 1_700_000_000;
    eventually("the open connection refused under tokens", || {
        time += 1;
        let line = iamat("alice.phone", time);
        c.send(&line);
        (c.line() == format!("? {line}")).then_some(())
    });
    running.stop().unwrap();
}

/// Certificates of one herd CA for `name`, naming 127.0.0.1 too; returns
/// the directory (kept alive by the caller) and the CA's PEM.
fn certs(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    herd::process::certs::write_herd_certs_with_hosts(
        &[(name, vec!["127.0.0.1".to_owned()])],
        dir.path(),
        false,
    )
    .unwrap();
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    (dir, ca)
}

/// A TLS server config of `name` with clients over TLS on a free port.
fn tls_config(name: &str, dir: &std::path::Path) -> herd::Config {
    let mut config = lone_on_port_zero(name, admin_on_port_zero());
    config.tls = Some(herd::pure::config::TlsConfig {
        ca: dir.join("ca.pem").display().to_string(),
        cert: dir.join("{name}.pem").display().to_string(),
        key: dir.join("{name}-key.pem").display().to_string(),
    });
    config.servers[0].client_tls_listen = Some("127.0.0.1:0".to_owned());
    config.clients = clients(&[KEY_A], ReadRule::Own);
    config
}

#[test]
fn clients_speak_the_same_protocol_over_tls() {
    let (dir, ca) = certs("Sealed");
    let running = start_in_process(tls_config("Sealed", dir.path()), "Sealed", 1);
    let tls_addr = running.bound().client_tls.expect("client TLS bound");
    assert_ne!(tls_addr.port(), 0);
    let mut stream = tls_client(tls_addr, &ca).expect("TLS handshake");
    let auth = format!(
        "AUTH alice.phone {}\n{}WHATSAT alice.phone 10 0\n",
        token(KEY_A, "alice.phone", 60),
        iamat("alice.phone", 1_700_000_000)
    );
    stream.write_all(auth.as_bytes()).unwrap();
    let replies = read_lines(&mut stream, 4);
    let lines: Vec<&str> = replies.lines().collect();
    assert!(lines[0].starts_with("AUTH alice.phone "), "{replies}");
    assert!(lines[1].starts_with("AT Sealed "), "{replies}");
    assert_eq!(lines[2], lines[1], "{replies}");
    // The plain port serves the same store.
    let stored = exchange_text(
        running.bound().client,
        &format!(
            "AUTH alice.phone {}\nWHATSAT alice.phone 10 0\n",
            token(KEY_A, "alice.phone", 60)
        ),
    );
    assert!(stored.contains(lines[1]), "{stored}");
    running.stop().unwrap();
}

#[test]
fn plain_bytes_and_untrusting_clients_on_the_tls_port_are_closed_and_the_server_serves_on() {
    let (dir, ca) = certs("Sealed");
    let running = start_in_process(tls_config("Sealed", dir.path()), "Sealed", 1);
    let tls_addr = running.bound().client_tls.unwrap();
    // Plain text where TLS is expected: closed, never answered in clear.
    let mut plain = TcpStream::connect(tls_addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(iamat("alice.phone", 1_700_000_000).as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("AT "),
        "answered in clear: {answer:?}"
    );
    // A client that trusts another CA refuses the server; the server
    // closes its end.
    let (_other_dir, other_ca) = certs("Sealed");
    assert!(tls_client(tls_addr, &other_ca).is_err());
    // Garbage of every size, then a client that does it right.
    for size in [1, 5, 300, 20_000] {
        let mut junk = TcpStream::connect(tls_addr).unwrap();
        let _ = junk.write_all(&vec![0x16; size]);
    }
    let mut good = tls_client(tls_addr, &ca).expect("the server still serves TLS");
    good.write_all(format!("AUTH c1 {}\n", token(KEY_A, "c1", 60)).as_bytes())
        .unwrap();
    assert!(read_lines(&mut good, 1).starts_with("AUTH c1 "));
    let admin = running.bound().admin.unwrap();
    eventually("failed handshakes counted", || {
        let (_, text) = http(admin, "GET", "/metrics");
        let failed = metric(&text, "herd_refused_total{reason=\"client_tls_handshake\"}")?;
        (failed >= 2.0).then_some(())
    });
    running.stop().unwrap();
}
