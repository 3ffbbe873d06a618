//! Client identity and TLS through the `herd` binary: `herd token` makes
//! tokens the servers take, a server open to other hosts without tokens
//! refuses to start, tokens reach no log even at debug, and `herd certs`
//! makes certificates clients over TLS can check.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use herd::pure::clients::{ClientAuth, ClientsConfig, ReadRule, TokenKeys};
use std::io::Write;
use std::process::{Command, Stdio};
use support::*;

const KEY: &str = "the herd's token key, 32 bytes!!";

fn with_tokens(mut config: herd::Config) -> herd::Config {
    config.clients = ClientsConfig {
        auth: ClientAuth::Token,
        token_key: TokenKeys::One(KEY.to_owned()),
        read: ReadRule::Own,
    };
    config
}

/// `herd token ARGS... --config PATH`: (status, stdout, stderr).
fn herd_token(path: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(herd_bin())
        .arg("token")
        .args(args)
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn herd_token_makes_tokens_every_server_of_the_herd_takes() {
    let config = with_tokens(herd_of(&["A", "B"], &[("A", "B")]));
    let herd = Herd::start(config, 1);
    let path = herd.log_dir().join("herd.json");
    std::fs::write(&path, herd.config.to_json_pretty()).unwrap();
    let (ok, stdout, stderr) = herd_token(&path, &["alice.phone", "--ttl", "600"]);
    assert!(ok, "{stderr}");
    let token = stdout.trim();
    assert!(token.starts_with("herd1."), "{stdout}");
    assert!(stderr.contains("good until"), "{stderr}");
    // Stateless: both servers take it, with no word between them.
    for name in ["A", "B"] {
        let reply = exchange_text(
            herd.addr(name),
            &format!("AUTH alice.phone {token}\nIAMAT alice.phone +1-2 3\n"),
        );
        let mut lines = reply.lines();
        let auth = lines.next().unwrap();
        let expiry: u64 = auth
            .strip_prefix("AUTH alice.phone ")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (unix_now() + 590..=unix_now() + 600).contains(&expiry),
            "{auth}"
        );
        assert!(lines.next().unwrap().starts_with(&format!("AT {name} ")));
    }
    // What it refuses, saying why.
    for (args, says) in [
        (vec!["has space"], "not a client id"),
        (vec!["alice", "--ttl", "0"], "--ttl 0"),
    ] {
        let (ok, _, stderr) = herd_token(&path, &args);
        assert!(!ok && stderr.contains(says), "{args:?}: {stderr}");
    }
    let keyless = herd.log_dir().join("keyless.json");
    std::fs::write(&keyless, herd_of(&["A"], &[]).to_json_pretty()).unwrap();
    let (ok, _, stderr) = herd_token(&keyless, &["alice"]);
    assert!(!ok && stderr.contains("no clients.token_key"), "{stderr}");
}

#[test]
fn a_server_open_to_other_hosts_without_tokens_refuses_to_start_and_names_clients() {
    let mut config = herd_of(&["A"], &[]);
    config.servers[0].listen = format!("0.0.0.0:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let out = serve_command("A", &path, dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not loopback and clients.auth is \"none\"")
            && stderr.contains("\"clients\"")
            && stderr.contains("\"insecure_clients\": true"),
        "{stderr}"
    );
    let check = Command::new(herd_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("clients.auth"));
    // Tokens, or the risk accepted, make the same config valid.
    let mut accepted = config.clone();
    accepted.insecure_clients = true;
    for fixed in [with_tokens(config), accepted] {
        let path = write_file(dir.path(), "fixed.json", &fixed.to_json_pretty());
        let check = Command::new(herd_bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(check.status.success(), "{check:?}");
    }
}

#[test]
fn tokens_reach_no_log_even_at_debug() {
    let config = with_tokens(herd_of(&["Quiet"], &[]));
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let mut child = KillOnDrop(
        serve_command("Quiet", &path, dir.path())
            .args(["--shards", "1", "--log-level", "debug"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = config.listen_addr("Quiet").unwrap();
    wait_listening(addr);
    let good = client_token(KEY, "alice.phone", 600);
    let foreign = client_token("a key this herd has never had..", "alice.phone", 600);
    let reply = exchange_text(
        addr,
        &format!(
            "AUTH alice.phone {foreign}\nAUTH alice.phone {good} extra\nAUTH alice.phone {good}\n"
        ),
    );
    assert_eq!(
        reply.lines().take(2).collect::<Vec<_>>(),
        ["? AUTH alice.phone", "? AUTH alice.phone"],
        "refusals carry no token"
    );
    assert!(reply
        .lines()
        .nth(2)
        .unwrap()
        .starts_with("AUTH alice.phone "));
    let log_path = dir.path().join("Quiet.log");
    let log = eventually("the three AUTH lines logged", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        (log.matches("AUTH alice.phone").count() >= 3).then_some(log)
    });
    let admin = config.admin_addr("Quiet").unwrap();
    let (_, status) = http(admin, "GET", "/status");
    let _ = child.0.kill();
    for (what, text) in [("log", &log), ("/status", &status)] {
        for secret in [&good, &foreign] {
            // The MAC part is what must not leak.
            let mac = secret.rsplit('.').next().unwrap();
            assert!(!text.contains(mac), "a token is in the {what}");
        }
        assert!(!text.contains(KEY), "the token key is in the {what}");
    }
    assert!(log.contains("<token not shown>"), "{log}");
}

#[test]
fn herd_certs_names_the_client_host_so_tls_clients_can_check_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_tokens(herd_of(&["Sealed"], &[]));
    config.servers[0].client_tls_listen = Some(format!("127.0.0.1:{}", free_port()));
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let certs = Command::new(herd_bin())
        .args(["certs", "--config"])
        .arg(&path)
        .arg("--out")
        .arg(dir.path().join("certs"))
        .output()
        .unwrap();
    assert!(certs.status.success(), "{certs:?}");
    config.tls = Some(herd::pure::config::TlsConfig {
        ca: "certs/ca.pem".into(),
        cert: "certs/{name}.pem".into(),
        key: "certs/{name}-key.pem".into(),
    });
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let _child = KillOnDrop(
        serve_command("Sealed", &path, dir.path())
            .args(["--shards", "1"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let tls_addr = config.client_tls_addr("Sealed").unwrap();
    wait_listening(tls_addr);
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.pem")).unwrap();
    let mut stream = tls_client(tls_addr, &ca).expect("the certificate names 127.0.0.1");
    let token = client_token(KEY, "kiwi", 60);
    stream
        .write_all(format!("AUTH kiwi {token}\nIAMAT kiwi +1-2 3\n").as_bytes())
        .unwrap();
    let replies = read_lines(&mut stream, 2);
    let lines: Vec<&str> = replies.lines().collect();
    assert!(lines[0].starts_with("AUTH kiwi "), "{replies}");
    assert!(lines[1].starts_with("AT Sealed "), "{replies}");
}
