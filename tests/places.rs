//! WHATSAT through a real `herd-places-mock` process over HTTP(S): answers
//! cut and formatted, coalescing, caching, upstream failures and timeouts,
//! IAMATs unaffected by a hanging upstream, and TLS with a test CA, over the
//! legacy API; and over Places API (New), the default: the same replies in
//! the legacy JSON, Google's errors as legacy statuses, and the key in no
//! file, log line, `/status` or `/metrics`.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use herd::pure::config::{Config, PlacesApi, Provider};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// A `herd-places-mock` process, killed when dropped.
struct Mock {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
}

impl Mock {
    fn start(extra: &[&str]) -> Mock {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_herd-places-mock"))
            .args(["--listen", &addr.to_string(), "--tls-ca-out"])
            .arg(&ca)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("places-mock listening on"), "{line}");
        assert!(line.contains("sample data"), "{line}");
        Mock {
            child,
            addr,
            _dir: dir,
            ca,
        }
    }

    /// The mock's counters, from its `/stats` endpoint (plain HTTP only).
    fn stats(&self) -> serde_json::Value {
        let (status, body) = http(self.addr, "GET", "/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn requests(&self) -> u64 {
        self.stats()["requests"].as_u64().unwrap()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server whose WHATSATs go to `base_url`, over the legacy API.
fn herd_with_upstream(base_url: String, edit: impl FnOnce(&mut Config)) -> Herd {
    herd_with_api(PlacesApi::Legacy, base_url, edit)
}

/// The key the mock takes on its New endpoint in these tests.
const NEW_KEY: &str = "AIza-herd-test-key-4f1c";

/// One server whose WHATSATs go to `base_url` over `api`; the New API gets
/// the key the mock takes.
fn herd_with_api(api: PlacesApi, base_url: String, edit: impl FnOnce(&mut Config)) -> Herd {
    let mut config = herd_of(&["Near"], &[]);
    config.places.provider = Provider::Mock;
    config.places.api = api;
    config.places.base_url = Some(base_url);
    if api == PlacesApi::New {
        config.places.key = Some(NEW_KEY.to_owned());
    }
    edit(&mut config);
    Herd::start(config, 1)
}

const KIWI: &str = "IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n";

fn whatsat(addr: SocketAddr, line: &str) -> (String, serde_json::Value, String) {
    let reply = exchange_text(addr, line);
    let (at, json) = reply.split_once('\n').unwrap();
    (at.to_owned(), serde_json::from_str(json).unwrap(), reply)
}

#[test]
fn whatsat_returns_the_upstream_answer_cut_to_max_results_and_within_the_radius() {
    let mock = Mock::start(&[]);
    let herd = herd_with_upstream(format!("http://{}", mock.addr), |_| {});
    let addr = herd.addr("Near");
    let at = exchange_text(addr, KIWI);
    let (first, json, reply) = whatsat(addr, "WHATSAT kiwi 5 4\n");
    assert_eq!(format!("{first}\n"), at);
    assert!(reply.ends_with("}\n\n") && !reply[..reply.len() - 2].contains("\n\n"));
    assert_eq!(json["status"], "OK");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        let loc = &r["geometry"]["location"];
        let d = herd::places::answer::distance_m(
            34.068930,
            -118.445127,
            loc["lat"].as_f64().unwrap(),
            loc["lng"].as_f64().unwrap(),
        );
        assert!(d <= 5_000.0, "{d} m");
    }
    assert_eq!(mock.requests(), 1);
}

#[test]
fn concurrent_identical_whatsats_make_one_upstream_request() {
    let mock = Mock::start(&["--latency-ms", "400"]);
    // No cache: only coalescing can keep it to one request.
    let herd = herd_with_upstream(format!("http://{}", mock.addr), |c| {
        c.places.cache_entries = 0
    });
    let addr = herd.addr("Near");
    exchange_text(addr, KIWI);
    let askers: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || whatsat(addr, "WHATSAT kiwi 10 3\n").1))
        .collect();
    for a in askers {
        assert_eq!(a.join().unwrap()["results"].as_array().unwrap().len(), 3);
    }
    assert_eq!(mock.requests(), 1);
    // Without a cache, a later WHATSAT asks again.
    whatsat(addr, "WHATSAT kiwi 10 3\n");
    assert_eq!(mock.requests(), 2);
}

#[test]
fn a_cached_answer_serves_any_max_results_and_expires() {
    let mock = Mock::start(&[]);
    let herd = herd_with_upstream(format!("http://{}", mock.addr), |c| {
        c.places.cache_ttl_ms = 1_000
    });
    let addr = herd.addr("Near");
    exchange_text(addr, KIWI);
    assert_eq!(
        whatsat(addr, "WHATSAT kiwi 10 2\n").1["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        whatsat(addr, "WHATSAT kiwi 10 7\n").1["results"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert_eq!(mock.requests(), 1, "the second came from the cache");
    std::thread::sleep(Duration::from_millis(1_300));
    whatsat(addr, "WHATSAT kiwi 10 2\n");
    assert_eq!(mock.requests(), 2, "expired, asked again");
}

#[test]
fn upstream_failures_give_google_shaped_errors() {
    let mock = Mock::start(&["--key", NEW_KEY]);
    for (api, fault, status, says) in [
        (PlacesApi::Legacy, "500", "UNKNOWN_ERROR", "HTTP 500"),
        (PlacesApi::Legacy, "notjson", "UNKNOWN_ERROR", "not JSON"),
        (
            PlacesApi::Legacy,
            "OVER_QUERY_LIMIT",
            "OVER_QUERY_LIMIT",
            "",
        ),
        (PlacesApi::Legacy, "hang", "UNKNOWN_ERROR", "timed out"),
        (PlacesApi::New, "500", "UNKNOWN_ERROR", "internal error"),
        (PlacesApi::New, "notjson", "UNKNOWN_ERROR", "not JSON"),
        (
            PlacesApi::New,
            "OVER_QUERY_LIMIT",
            "OVER_QUERY_LIMIT",
            "OVER_QUERY_LIMIT",
        ),
        (
            PlacesApi::New,
            "REQUEST_DENIED",
            "REQUEST_DENIED",
            "REQUEST_DENIED",
        ),
        (
            PlacesApi::New,
            "API_KEY_INVALID",
            "REQUEST_DENIED",
            "API_KEY_INVALID",
        ),
        (
            PlacesApi::New,
            "INVALID_ARGUMENT",
            "INVALID_REQUEST",
            "INVALID_ARGUMENT",
        ),
        (
            PlacesApi::New,
            "UNAVAILABLE",
            "UNKNOWN_ERROR",
            "UNAVAILABLE",
        ),
        (PlacesApi::New, "hang", "UNKNOWN_ERROR", "timed out"),
    ] {
        let url = format!("http://{}/fault/{fault}", mock.addr);
        let herd = herd_with_api(api, url, |c| {
            c.limits.places_timeout_ms = 500;
        });
        let addr = herd.addr("Near");
        let at = exchange_text(addr, KIWI);
        let (first, json, reply) = whatsat(addr, "WHATSAT kiwi 10 3\n");
        assert_eq!(format!("{first}\n"), at, "{fault}");
        assert_eq!(json["status"], status, "{fault}: {reply}");
        assert_eq!(json["results"].as_array().unwrap().len(), 0, "{fault}");
        let message = json["error_message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{fault}: {message}");
        assert!(reply.ends_with("}\n\n"), "{fault}");
    }
}

#[test]
fn iamats_keep_being_answered_while_the_upstream_hangs() {
    let mock = Mock::start(&[]);
    let herd = herd_with_upstream(format!("http://{}/fault/hang", mock.addr), |c| {
        c.limits.places_timeout_ms = 4_000;
    });
    let addr = herd.addr("Near");
    exchange_text(addr, KIWI);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let asker = std::thread::spawn(move || {
        let reply = whatsat(addr, "WHATSAT kiwi 10 3\n").1;
        let _ = done_tx.send(());
        reply
    });
    // Wait until the hanging request is really at the upstream.
    eventually("the WHATSAT at the upstream", || {
        (mock.requests() == 1).then_some(())
    });
    // One shard: these IAMATs share it with the hanging WHATSAT.
    for i in 0..50 {
        let reply = exchange_text(addr, &format!("IAMAT busy{i} +1-2 3\n"));
        assert!(reply.starts_with("AT Near "), "{reply}");
    }
    assert!(
        done_rx.try_recv().is_err(),
        "the WHATSAT was still waiting meanwhile"
    );
    assert_eq!(asker.join().unwrap()["status"], "UNKNOWN_ERROR");
}

#[test]
fn https_upstream_with_a_test_ca_round_trips_and_fails_without_it() {
    let mock = Mock::start(&["--tls"]);
    let url = format!("https://localhost:{}", mock.addr.port());
    let ca = mock.ca.clone();
    let herd = herd_with_upstream(url.clone(), |c| c.places.ca_file = Some(ca));
    let addr = herd.addr("Near");
    exchange_text(addr, KIWI);
    let (_, json, _) = whatsat(addr, "WHATSAT kiwi 10 3\n");
    assert_eq!(json["status"], "OK");
    assert_eq!(json["results"].as_array().unwrap().len(), 3);

    let untrusting = herd_with_upstream(url, |_| {});
    let addr = untrusting.addr("Near");
    exchange_text(addr, KIWI);
    let (_, json, _) = whatsat(addr, "WHATSAT kiwi 10 3\n");
    assert_eq!(json["status"], "UNKNOWN_ERROR");
    assert!(
        json["error_message"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{json}"
    );
}

#[test]
fn a_google_provider_without_a_key_refuses_to_start() {
    let mut config = herd_of(&["Keyless"], &[]);
    config.places.provider = Provider::Google;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let out = serve_command("Keyless", &path, dir.path())
        .args(["--shards", "1"])
        .env_remove("HERD_PLACES_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HERD_PLACES_KEY"));
}

#[test]
fn the_api_key_is_sent_upstream_but_never_logged() {
    let mock = Mock::start(&[]);
    let mut config = herd_of(&["Secretive"], &[]);
    config.places.provider = Provider::Mock;
    config.places.api = PlacesApi::Legacy;
    // A failing upstream makes the client log the request it made.
    config.places.base_url = Some(format!("http://{}/fault/500", mock.addr));
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let key = "k3y-that-must-not-leak";
    let mut child = serve_command("Secretive", &path, dir.path())
        .args(["--shards", "1", "--log-level", "debug"])
        .env("HERD_PLACES_KEY", key)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(banner.contains("key set"), "{banner}");
    let addr = config.listen_addr("Secretive").unwrap();
    exchange_text(addr, KIWI);
    let (_, json, _) = whatsat(addr, "WHATSAT kiwi 10 3\n");
    assert_eq!(json["status"], "UNKNOWN_ERROR");
    let log_path = dir.path().join("Secretive.log");
    let log = eventually("the upstream failure logged", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains("HTTP 500").then_some(log)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("REDACTED"), "{log}");
    assert!(!log.contains(key), "the key leaked into the log");
    assert!(!banner.contains(key));
}

#[test]
fn auto_with_a_key_asks_places_api_new_and_replies_in_the_legacy_json() {
    let mock = Mock::start(&["--key", NEW_KEY]);
    let mut config = herd_of(&["Near"], &[]);
    // As a new user sets it up: the default provider and API, a key.
    config.places.key = Some(NEW_KEY.to_owned());
    config.places.base_url = Some(format!("http://{}", mock.addr));
    let herd = Herd::start(config, 1);
    let addr = herd.addr("Near");
    let at = exchange_text(addr, KIWI);
    let (first, json, reply) = whatsat(addr, "WHATSAT kiwi 5 4\n");
    assert_eq!(format!("{first}\n"), at);
    assert!(reply.ends_with("}\n\n") && !reply[..reply.len() - 2].contains("\n\n"));
    assert_eq!(json["status"], "OK", "{reply}");
    assert_eq!(json["html_attributions"], serde_json::json!([]));
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        let loc = &r["geometry"]["location"];
        let d = herd::places::answer::distance_m(
            34.068930,
            -118.445127,
            loc["lat"].as_f64().unwrap(),
            loc["lng"].as_f64().unwrap(),
        );
        assert!(d <= 5_000.0, "{d} m");
        assert!(
            r["name"].as_str().unwrap().starts_with("Sample Place"),
            "{r}"
        );
        assert!(
            r["place_id"].is_string() && r["vicinity"].is_string(),
            "{r}"
        );
        assert!(
            r.get("rating").is_none(),
            "an Enterprise field under pro: {r}"
        );
    }
    let stats = mock.stats();
    assert_eq!(stats["new_requests"], 1, "{stats}");
    assert_eq!(stats["requests"], 1, "{stats}");
    let seen = &stats["last_request"];
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/v1/places:searchNearby");
    assert_eq!(seen["headers"]["x-goog-api-key"], NEW_KEY);
}

#[test]
fn the_places_key_is_in_no_file_log_status_or_metrics_even_at_debug() {
    // The mock takes another key: every lookup is refused, the path that
    // logs most about a request.
    let mock = Mock::start(&["--key", "AIza-the-right-one"]);
    let mut config = herd_of(&["Secretive"], &[]);
    config.places.provider = Provider::Google;
    config.places.base_url = Some(format!("http://{}", mock.addr));
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let key = "AIza-k3y-that-must-not-leak";
    let mut child = KillOnDrop(
        serve_command("Secretive", &path, dir.path())
            .args(["--shards", "1", "--log-level", "debug"])
            .env("HERD_PLACES_KEY", key)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(
        banner.contains("Places API (New)") && banner.contains("billed as Nearby Search Pro"),
        "{banner}"
    );
    let addr = config.listen_addr("Secretive").unwrap();
    wait_listening(addr);
    exchange_text(addr, KIWI);
    let (_, json, _) = whatsat(addr, "WHATSAT kiwi 10 3\n");
    assert_eq!(json["status"], "REQUEST_DENIED", "{json}");
    assert_eq!(
        json["error_message"],
        "API key not valid. Please pass a valid API key."
    );
    assert_eq!(
        mock.stats()["last_request"]["headers"]["x-goog-api-key"],
        key
    );
    let log_path = dir.path().join("Secretive.log");
    eventually("the refusal logged", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains("REQUEST_DENIED").then_some(())
    });
    let admin = config.admin_addr("Secretive").unwrap();
    let (_, status) = http(admin, "GET", "/status");
    let (_, metrics) = http(admin, "GET", "/metrics");
    drop(child);
    assert!(!banner.contains(key), "stderr: {banner}");
    assert!(!status.contains(key), "/status: {status}");
    assert!(!metrics.contains(key), "/metrics");
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        assert!(
            !String::from_utf8_lossy(&bytes).contains(key),
            "the key is in {}",
            path.display()
        );
    }
    assert!(files >= 2, "the config and the log were read");
}

#[test]
fn check_config_refuses_every_field_and_names_the_choice() {
    let mut config = herd_of(&["Near"], &[]);
    config.places.fields = herd::pure::config::PlacesFields::Preset("*".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let out = Command::new(herd_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("places.fields \"*\" asks Google for every field"),
        "{text}"
    );
}
