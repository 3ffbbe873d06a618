//! End-to-end tests of `herd-bench`: the load generator against the bare
//! baseline server (closed and open loop must report zero errors) and
//! against a deliberately wrong server (must report errors, exit 1). Real
//! processes on loopback; every child is killed by PID when its test ends.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;

use serde_json::Value;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_herd-bench");

/// The tests load the same CPUs: one at a time, or each skews the others.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `herd-bench bare` on a free loopback port; returns it and its
/// address.
fn start_bare() -> (Killed, String) {
    start_bare_with(&[])
}

/// `start_bare` with more arguments.
fn start_bare_with(extra: &[&str]) -> (Killed, String) {
    let mut child = Command::new(BIN)
        .args(["bare", "--listen", "127.0.0.1:0", "--cpu", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start herd-bench bare");
    let stdout = child.stdout.take().expect("bare stdout");
    let guard = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read bare's address");
    let addr = line
        .trim()
        .strip_prefix("bare listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from bare: {line:?}"))
        .to_owned();
    (guard, addr)
}

/// Runs `herd-bench load` with `args` after `--addr addr --json-only`.
fn load(addr: &str, args: &[&str]) -> (Output, Value) {
    let output = Command::new(BIN)
        .args(["load", "--addr", addr, "--json-only", "--cpus", "1"])
        .args(args)
        .output()
        .expect("run herd-bench load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .find_map(|l| l.strip_prefix("JSON "))
        .unwrap_or_else(|| {
            panic!(
                "no JSON line; stdout {stdout:?}, stderr {:?}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let value = serde_json::from_str(json).expect("JSON line parses");
    (output, value)
}

#[test]
fn closed_loop_against_bare_server_has_no_errors() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bare, addr) = start_bare();
    let (output, v) = load(
        &addr,
        &[
            "--connections",
            "4",
            "--depth",
            "1",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--server",
            "Bare",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["mode"], "closed");
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    assert!(v["p99_us"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn a_run_that_leaves_a_throttled_server_idle_is_flagged_generator_bound() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 2 ms per line: the bare server's CPU idles whatever the generator
    // does, as it would if the generator were too slow to load it.
    let (bare, addr) = start_bare_with(&["--delay-us", "2000"]);
    // Judged by the server process's own CPU time (--pid), not the core's:
    // another process on CPU 0 (a build, another test) must not make an
    // idle server look saturated.
    let pid = bare.0.id().to_string();
    let (output, v) = load(
        &addr,
        &[
            "--connections",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--server-cpus",
            "0",
            "--pid",
            &pid,
            "--server",
            "Bare",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["generator_bound"], true, "{v}");
    assert!(v["server_process_busy_pct"].as_f64().unwrap() < 95.0, "{v}");
    assert!(v["generator_cpus_busy_pct"]["1"].is_number(), "{v}");
    // The table says it in words too.
    let table = Command::new(BIN)
        .args(["load", "--addr", &addr, "--cpus", "1", "--server-cpus", "0"])
        .args(["--connections", "1", "--duration", "0.5", "--warmup", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(stdout.contains("generator-bound"), "{stdout}");
}

#[test]
fn a_fill_sends_exactly_the_requests_asked_for() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bare, addr) = start_bare();
    let (output, v) = load(
        &addr,
        &[
            "--connections",
            "8",
            "--depth",
            "16",
            "--clients",
            "1001",
            "--requests",
            "1001",
            "--duration",
            "30",
            "--warmup",
            "0",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["requests"], 1001, "{v}");
    // It ended when the last reply came, not at the 30 s window's end.
    assert!(v["duration_s"].as_f64().unwrap() < 30.0, "{v}");
}

#[test]
fn open_loop_against_bare_server_keeps_its_rate() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bare, addr) = start_bare();
    // A loaded test machine can delay timers by milliseconds; the 1 ms
    // default send-lag limit is for real measurements, not for CI.
    let (output, v) = load(
        &addr,
        &[
            "--connections",
            "4",
            "--rate",
            "500",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--max-send-lag-ms",
            "100",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["mode"], "open");
    let requests = v["requests"].as_f64().unwrap();
    assert!((800.0..=1200.0).contains(&requests), "{v}");
    assert!(v["send_lag_p99_us"].is_number(), "{v}");
}

#[test]
fn wrong_replies_are_counted_and_exit_1() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Answers every line with the same wrong AT line. Its threads end when
    // the test process does.
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines() {
                    if line.is_err()
                        || writer
                            .write_all(b"AT X +0.000000000 wrong +0+0 1\n")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let (output, v) = load(
        &addr,
        &["--connections", "2", "--duration", "1", "--warmup", "0"],
    );
    assert_eq!(output.status.code(), Some(1), "{v}");
    assert!(v["errors"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["requests"], 0, "{v}");
}

#[test]
fn unreachable_server_exits_2() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Bind then drop: nothing listens on that port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let output = Command::new(BIN)
        .args(["load", "--addr", &addr, "--duration", "1", "--warmup", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}

#[test]
fn open_loop_beyond_the_generator_aborts_with_exit_2() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bare, addr) = start_bare();
    let output = Command::new(BIN)
        .args(["load", "--addr", &addr, "--cpus", "1", "--connections", "4"])
        .args(["--rate", "5000000", "--duration", "0.5", "--warmup", "0.3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot keep up"), "{stderr}");
}

#[test]
fn open_loop_against_a_real_herd_counts_every_request_with_no_errors() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let herd = support::Herd::start(support::herd_of(&["Real"], &[]), 1);
    let addr = herd.addr("Real").to_string();
    let (output, v) = load(
        &addr,
        &[
            "--connections",
            "4",
            "--rate",
            "400",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--whatsat-pct",
            "20",
            "--server",
            "Real",
            "--max-send-lag-ms",
            "100",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let requests = v["requests"].as_f64().unwrap();
    assert!((640.0..=960.0).contains(&requests), "400/s for 2 s: {v}");
}

/// The token key of the herds these tests start with `clients.auth: "token"`.
const TOKEN_KEY: &str = "the bench's token key, 32 bytes!";

/// One server, "Real", whose clients must prove who they are with a token.
fn herd_with_tokens() -> support::Herd {
    let mut config = support::herd_of(&["Real"], &[]);
    config.clients = herd::pure::clients::ClientsConfig {
        auth: herd::pure::clients::ClientAuth::Token,
        token_key: herd::pure::clients::TokenKeys::One(TOKEN_KEY.to_owned()),
        read: herd::pure::clients::ReadRule::Own,
    };
    support::Herd::start(config, 1)
}

#[test]
fn a_token_key_needs_one_client_per_connection() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Refused before any connection is made: nothing listens there.
    let output = Command::new(BIN)
        .args(["load", "--addr", "127.0.0.1:9", "--connections", "4"])
        .args(["--clients", "8", "--token-key", TOKEN_KEY])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--token-key needs one client per connection"),
        "{stderr}"
    );
}

#[test]
fn connections_with_tokens_are_answered_and_a_wrong_key_is_refused() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let herd = herd_with_tokens();
    let addr = herd.addr("Real").to_string();
    let shape = [
        "--connections",
        "4",
        "--clients",
        "4",
        "--depth",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--server",
        "Real",
    ];
    let pid = herd.pid("Real").expect("Real's pid").to_string();
    let with_key = [&shape[..], &["--token-key", TOKEN_KEY, "--pid", &pid]].concat();
    let (output, v) = load(&addr, &with_key);
    assert_eq!(output.status.code(), Some(0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    // The server's CPU time over the window, per request (ticks of 10 ms:
    // possibly 0 in a short run, never missing).
    assert!(
        v["server_cpu_us_per_request"].as_f64().unwrap() >= 0.0,
        "{v}"
    );
    let output = Command::new(BIN)
        .args(["load", "--addr", &addr, "--cpus", "1"])
        .args(shape)
        .args(["--token-key", "another key of 16 bytes or more"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("AUTH refused"), "{stderr}");
}

#[test]
fn a_run_over_tls_with_tokens_is_answered_with_no_errors() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let certs = tempfile::tempdir().unwrap();
    let pki =
        herd::process::certs::make_pki_with_hosts(&[("Real", vec!["127.0.0.1".into()])]).unwrap();
    let file = |name: &str, text: &str| {
        let path = certs.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let ca = file("ca.pem", &pki.ca_pem);
    let mut config = support::herd_of(&["Real"], &[]);
    config.clients = herd::pure::clients::ClientsConfig {
        auth: herd::pure::clients::ClientAuth::Token,
        token_key: herd::pure::clients::TokenKeys::One(TOKEN_KEY.to_owned()),
        read: herd::pure::clients::ReadRule::Own,
    };
    config.client_tls = Some(herd::pure::clients::ClientTlsConfig {
        cert: file("real.pem", &pki.servers[0].cert_pem),
        key: file("real-key.pem", &pki.servers[0].key_pem),
    });
    config.servers[0].client_tls_listen = Some(format!("127.0.0.1:{}", support::free_port()));
    let herd = support::Herd::start(config, 1);
    let tls_addr = herd.config.client_tls_addr("Real").unwrap().to_string();
    for depth in ["1", "8"] {
        let (output, v) = load(
            &tls_addr,
            &[
                "--tls-ca",
                &ca,
                "--token-key",
                TOKEN_KEY,
                "--connections",
                "4",
                "--clients",
                "4",
                "--depth",
                depth,
                "--duration",
                "1",
                "--warmup",
                "0.5",
                "--server",
                "Real",
            ],
        );
        assert_eq!(output.status.code(), Some(0), "{v}");
        assert_eq!(v["errors"], 0, "{v}");
        assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    }
    // The plain port does not speak TLS: no handshake, exit 2.
    let output = Command::new(BIN)
        .args([
            "load",
            "--addr",
            &herd.addr("Real").to_string(),
            "--tls-ca",
            &ca,
        ])
        .args(["--connections", "1", "--duration", "1", "--warmup", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TLS handshake"), "{stderr}");
}

#[test]
fn a_tls_ca_file_without_a_certificate_is_refused() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let output = Command::new(BIN)
        .args(["load", "--addr", "127.0.0.1:9", "--tls-ca"])
        .arg(&empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
}

/// One server, "Real", that takes phone apps over HTTP too; with
/// `tokens`, its clients must prove who they are.
fn herd_with_http(tokens: bool) -> (support::Herd, String) {
    let mut config = support::herd_of(&["Real"], &[]);
    if tokens {
        config.clients = herd::pure::clients::ClientsConfig {
            auth: herd::pure::clients::ClientAuth::Token,
            token_key: herd::pure::clients::TokenKeys::One(TOKEN_KEY.to_owned()),
            read: herd::pure::clients::ReadRule::Own,
        };
    }
    config.servers[0].http_listen = Some(format!("127.0.0.1:{}", support::free_port()));
    let herd = support::Herd::start(config, 1);
    let http = herd.config.http_addr("Real").expect("Real's http_listen");
    support::wait_listening(http);
    (herd, http.to_string())
}

/// How many OwnTracks posts server "Real" counted with `result`.
fn owntracks_counted(herd: &support::Herd, result: &str) -> f64 {
    let (_, text) = support::http(herd.admin_addr("Real"), "GET", "/metrics");
    let series = format!("herd_http_requests_total{{app=\"owntracks\",result=\"{result}\"}}");
    support::metric(&text, &series).unwrap_or(0.0)
}

#[test]
fn owntracks_posts_to_a_real_herd_are_stored_and_answered_with_no_errors() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (herd, http) = herd_with_http(false);
    let pid = herd.pid("Real").expect("Real's pid").to_string();
    let mut answered = 0;
    // Closed loop, then pipelined: two devices a connection.
    for depth in ["1", "8"] {
        let (output, v) = load(
            &http,
            &[
                "--post",
                "owntracks",
                "--connections",
                "4",
                "--clients",
                "8",
                "--depth",
                depth,
                "--duration",
                "1",
                "--warmup",
                "0.5",
                "--pid",
                &pid,
            ],
        );
        assert_eq!(output.status.code(), Some(0), "{v}");
        assert_eq!(v["errors"], 0, "{v}");
        assert_eq!(v["protocol"], "owntracks", "{v}");
        let requests = v["requests"].as_u64().unwrap();
        assert!(requests > 0, "{v}");
        answered += requests;
    }
    // Every post was a location newer than its client's last: stored, not
    // merely answered (the warm-ups' posts are counted too).
    support::eventually("the posts counted as stored", || {
        (owntracks_counted(&herd, "stored") >= answered as f64).then_some(())
    });
    assert_eq!(owntracks_counted(&herd, "invalid"), 0.0);
}

#[test]
fn owntracks_posts_with_tokens_are_stored_and_a_wrong_key_is_counted_as_errors() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (herd, http) = herd_with_http(true);
    let shape = [
        "--post",
        "owntracks",
        "--connections",
        "4",
        "--clients",
        "4",
        "--depth",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.5",
    ];
    let (output, v) = load(&http, &[&shape[..], &["--token-key", TOKEN_KEY]].concat());
    assert_eq!(output.status.code(), Some(0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let answered = v["requests"].as_f64().unwrap();
    support::eventually("the posts counted as stored", || {
        (owntracks_counted(&herd, "stored") >= answered).then_some(())
    });
    // Each post carries its token: a wrong one is a 401 per post, each an
    // error, and the run exits 1.
    let wrong = [
        &shape[..],
        &["--token-key", "another key of 16 bytes or more"],
    ]
    .concat();
    let (output, v) = load(&http, &wrong);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{v}");
    assert!(v["errors_invalid"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["requests"], 0, "{v}");
    assert!(stderr.contains("status 401"), "{stderr}");
    support::eventually("the refused posts counted", || {
        (owntracks_counted(&herd, "unauthorized") > 0.0).then_some(())
    });
}

#[test]
fn posts_to_a_port_that_does_not_answer_http_end_their_connections_as_errors() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The line port answers each line of a post with a `?` line.
    let herd = support::Herd::start(support::herd_of(&["Real"], &[]), 1);
    let (output, v) = load(
        &herd.addr("Real").to_string(),
        &[
            "--post",
            "owntracks",
            "--connections",
            "2",
            "--clients",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{v}");
    assert_eq!(v["requests"], 0, "{v}");
    assert!(v["errors_connection"].as_u64().unwrap() > 0, "{v}");
    assert!(stderr.contains("cannot be framed"), "{stderr}");
}

#[test]
fn post_options_that_do_not_apply_are_refused_before_connecting() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Nothing listens there: each is refused before any connection.
    for (extra, said) in [
        (
            &["--post", "owntracks", "--whatsat-pct", "10"][..],
            "no --whatsat-pct",
        ),
        (&["--post", "owntracks", "--server", "Real"], "no --server"),
        (
            &[
                "--post",
                "owntracks",
                "--token-key",
                TOKEN_KEY,
                "--clients",
                "8",
            ],
            "one client per connection",
        ),
        (&["--post", "osmand"], "invalid value 'osmand'"),
    ] {
        let output = Command::new(BIN)
            .args(["load", "--addr", "127.0.0.1:9", "--connections", "4"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(said), "{extra:?}: {stderr}");
    }
}

#[test]
fn propagation_across_a_real_herd_sees_every_update_two_hops_away() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A - B - Probe: the probe (the bench) sits two hops from A.
    let config = support::herd_of(&["A", "B", "Probe"], &[("A", "B"), ("B", "Probe")]);
    let mut herd = support::Herd::start(support::herd_of(&[], &[]), 1);
    herd.config = config;
    std::fs::write(&herd.config_path, herd.config.to_json_pretty()).unwrap();
    herd.start_server("A");
    herd.start_server("B");
    let output = Command::new(BIN)
        .args([
            "propagation",
            "--json-only",
            "--count",
            "300",
            "--rate",
            "300",
            "--settle",
            "1",
        ])
        .args(["--send", &herd.addr("A").to_string()])
        .args([
            "--probe-listen",
            &herd.peer_addr("Probe").to_string(),
            "--probe-name",
            "Probe",
        ])
        .output()
        .expect("run herd-bench propagation");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .find_map(|l| l.strip_prefix("JSON "))
        .expect("JSON line");
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(output.status.code(), Some(0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["requests"], 300, "{v}");
}
