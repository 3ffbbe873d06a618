//! Links as an operator and an attacker meet them: their own port, a
//! handshake that cannot be replayed, logs that never show a proof, safe
//! defaults, and a herd that survives a server stopped by its client port.
//! Real `herd serve` processes on loopback.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use support::*;

/// A one-connection TCP relay to `target` that keeps a copy of every byte
/// the dialling side sent: a wiretap on a real link.
struct Wiretap {
    addr: SocketAddr,
    heard: Arc<Mutex<Vec<u8>>>,
}

impl Wiretap {
    fn start(target: SocketAddr) -> Wiretap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let copy = heard.clone();
        std::thread::spawn(move || {
            // The link of the one shard; its reconnects are not needed.
            let Ok((inbound, _)) = listener.accept() else {
                return;
            };
            let Ok(outbound) = TcpStream::connect(target) else {
                return;
            };
            let (mut in_r, mut out_w) =
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = in_r.read(&mut buf) {
                    if n == 0 || out_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    copy.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = out_w.shutdown(Shutdown::Write);
            });
            let (mut out_r, mut in_w) = (outbound, inbound);
            let _ = std::io::copy(&mut out_r, &mut in_w);
            let _ = in_w.shutdown(Shutdown::Write);
        });
        Wiretap { addr, heard }
    }

    fn heard(&self) -> String {
        String::from_utf8_lossy(&self.heard.lock().unwrap()).into_owned()
    }
}

#[test]
fn a_handshake_recorded_from_a_real_link_is_refused_when_replayed() {
    let mut config = herd_of(&["A", "B"], &[("A", "B")]);
    config.secret = Some("replay-me-not".into());
    let b = start_some(config.clone(), &["B"]);
    // A reaches B through the wiretap.
    let tap = Wiretap::start(b.peer_addr("B"));
    let mut config_a = config;
    config_a.servers[1].peer_listen = Some(tap.addr.to_string());
    let a = start_some(config_a, &["A"]);
    exchange_text(a.addr("A"), "IAMAT tapped +1-2 5\n");
    eventually("the record over the tapped link", || {
        stored_at_line(b.addr("B"), "tapped")
    });
    let recorded = tap.heard();
    let peer_line = recorded.lines().find(|l| l.starts_with("PEER ")).unwrap();
    let proof_line = recorded.lines().find(|l| l.starts_with("PROOF ")).unwrap();
    assert!(peer_line.starts_with("PEER A ") && proof_line.len() == "PROOF ".len() + 64);

    // The same bytes again, on a new connection to B's peer port.
    let mut replay = connect(b.peer_addr("B"));
    replay
        .write_all(format!("{peer_line}\n").as_bytes())
        .unwrap();
    let mut challenge = Vec::new();
    let mut byte = [0u8; 1];
    while replay.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        challenge.push(byte[0]);
    }
    assert!(challenge.starts_with(b"CHALLENGE "));
    replay
        .write_all(
            format!("{proof_line}\nSTREAM 0 1\nAT A +0.000000001 replayed +1-2 5\n").as_bytes(),
        )
        .unwrap();
    let mut rest = String::new();
    let _ = replay.read_to_string(&mut rest);
    assert_eq!(rest, format!("? {proof_line}\n"), "refused, then closed");
    assert_eq!(stored_at_line(b.addr("B"), "replayed"), None);
    // The real link was not disturbed.
    exchange_text(a.addr("A"), "IAMAT after +1-2 5\n");
    eventually("a record after the replay", || {
        stored_at_line(b.addr("B"), "after")
    });
}

/// Every run of `n` or more hex digits in `text`.
fn hex_runs(text: &str, n: usize) -> Vec<String> {
    let mut runs = Vec::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            if run.len() >= n {
                runs.push(run.clone());
            }
            run.clear();
        }
    }
    runs
}

#[test]
fn no_secret_nonce_or_proof_appears_in_any_log_of_a_debug_run() {
    let secret = "correct horse battery staple";
    let mut config = herd_of(&["A", "B", "C"], &[("A", "B"), ("B", "C")]);
    config.secret = Some(secret.into());
    // Servers run with --log-level debug (see support).
    let herd = Herd::start(config, 1);
    exchange_text(herd.addr("A"), "IAMAT logged +1-2 5\n");
    eventually("the record two hops away", || {
        stored_at_line(herd.addr("C"), "logged")
    });
    // Refused attempts are logged too: a wrong secret, a client-port PEER.
    let (mut s, _, _) = dial_link(herd.peer_addr("B"), "A", "B", Some("wrong"));
    let _ = s.read_to_string(&mut String::new());
    exchange_text(herd.addr("B"), &format!("PEER A {}\n", test_nonce()));
    let names = ["A", "B", "C"];
    eventually("every accepted link and the refusal in the logs", || {
        let b = herd.log("B");
        let accepted = names.iter().map(|n| herd.log(n)).collect::<String>();
        (accepted.matches("incoming link accepted").count() >= 4 && b.contains("handshake refused"))
            .then_some(())
    });
    for name in names {
        let log = herd.log(name);
        assert!(!log.contains(secret), "{name} logged the secret");
        // Nonces are 32 hex digits and proofs 64: no such run anywhere.
        assert_eq!(hex_runs(&log, 32), Vec::<String>::new(), "{name}'s log");
        assert!(!herd.stderr(name).contains(secret));
    }
}

#[test]
fn an_unprotected_peer_address_off_loopback_refuses_to_start_and_names_the_fix() {
    let mut config = herd_of(&["A"], &[]);
    config.servers[0].peer_listen = Some(format!("0.0.0.0:{}", free_port()));
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let out = serve_command("A", &path, dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not loopback")
            && stderr.contains("\"secret\"")
            && stderr.contains("\"insecure_links\": true"),
        "{stderr}"
    );
    let check = std::process::Command::new(herd_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!check.status.success());
    // Accepting the risk, or a secret, makes the same config valid.
    for edit in ["insecure_links", "secret"] {
        let mut fixed = config.clone();
        match edit {
            "secret" => fixed.secret = Some("s".into()),
            _ => fixed.insecure_links = true,
        }
        let path = write_file(dir.path(), "fixed.json", &fixed.to_json_pretty());
        let check = std::process::Command::new(herd_bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(check.status.success(), "{edit}: {check:?}");
    }
}

#[test]
fn stopping_a_server_by_its_client_port_leaves_its_neighbours_flooding() {
    let mut herd = Herd::start(default_herd_on_free_ports(), 1);
    exchange_text(herd.addr("Goloman"), "IAMAT before +1-2 5\n");
    eventually("links up: the record two hops away", || {
        stored_at_line(herd.addr("Welsh"), "before")
    });
    // What `lsof -ti:PORT | xargs kill` would stop: every process holding a
    // socket on Goloman's client port. Only Goloman itself, as links use
    // peer ports. (This test holds no connection to it now.)
    let port = herd.addr("Goloman").port();
    let goloman = herd.pid("Goloman").unwrap();
    let holders = eventually("only Goloman on its client port", || {
        let pids = pids_holding_port(port);
        (pids == vec![goloman]).then_some(pids)
    });
    assert_eq!(holders, vec![goloman]);
    herd.kill("Goloman");
    for name in ["Hands", "Holiday", "Wilkes", "Welsh"] {
        assert!(herd.alive(name), "{name} died with Goloman");
    }
    // Hands - Wilkes - Holiday - Welsh still floods without Goloman.
    exchange_text(herd.addr("Hands"), "IAMAT after +1-2 5\n");
    eventually("a record from Hands reaches Welsh", || {
        stored_at_line(herd.addr("Welsh"), "after")
    });
    for name in ["Hands", "Holiday", "Wilkes", "Welsh"] {
        assert!(herd.alive(name), "{name} is gone");
    }
}

/// A herd config using the certificates in `dir` (relative to the config
/// file, which `Herd` writes next to it).
fn with_tls(mut config: herd::pure::config::Config, certs: &str) -> herd::pure::config::Config {
    config.tls = Some(herd::pure::config::TlsConfig {
        ca: format!("{certs}/ca.pem"),
        cert: format!("{certs}/{{name}}.pem"),
        key: format!("{certs}/{{name}}-key.pem"),
    });
    config
}

#[test]
fn a_herd_with_tls_links_floods_two_hops() {
    let config = herd_of(&["A", "B", "C"], &[("A", "B"), ("B", "C")]);
    let mut herd = Herd::start(herd_of(&[], &[]), 1);
    herd::net::certs::write_herd_certs(&["A", "B", "C"], &herd.dir.path().join("certs"), false)
        .unwrap();
    herd.config = with_tls(config, "certs");
    std::fs::write(&herd.config_path, herd.config.to_json_pretty()).unwrap();
    for name in ["A", "B", "C"] {
        herd.start_server(name);
    }
    let at = exchange_text(herd.addr("A"), "IAMAT sealed +1-2 5\n");
    let got = eventually("the record two hops away over TLS", || {
        stored_at_line(herd.addr("C"), "sealed")
    });
    assert_eq!(got, at.trim_end());
    // A plain-text dialler gets no challenge on a TLS peer port.
    let (_, _, answer) = dial_link(herd.peer_addr("B"), "A", "B", None);
    assert!(!answer.starts_with("CHALLENGE"), "{answer}");
    assert_eq!(
        stored_at_line(herd.addr("B"), "sealed").as_deref(),
        Some(at.trim_end())
    );
}

#[test]
fn a_server_whose_certificate_comes_from_another_ca_is_refused_both_ways() {
    let config = herd_of(&["A", "B"], &[("A", "B")]);
    let mut a = Herd::start(herd_of(&[], &[]), 1);
    herd::net::certs::write_herd_certs(&["A", "B"], &a.dir.path().join("certs"), false).unwrap();
    a.config = with_tls(config.clone(), "certs");
    std::fs::write(&a.config_path, a.config.to_json_pretty()).unwrap();
    // B has a CA of its own, and a certificate from it.
    let mut b = Herd::start(herd_of(&[], &[]), 1);
    herd::net::certs::write_herd_certs(&["A", "B"], &b.dir.path().join("certs"), false).unwrap();
    b.config = with_tls(config, "certs");
    std::fs::write(&b.config_path, b.config.to_json_pretty()).unwrap();
    a.start_server("A");
    b.start_server("B");
    exchange_text(a.addr("A"), "IAMAT stranger +1-2 5\n");
    // A refuses B's certificate when it dials B, and when B dials A.
    eventually("both refusals in A's log", || {
        let log = a.log("A");
        (log.contains("TLS handshake failed") && log.contains("link refused: TLS handshake failed"))
            .then_some(())
    });
    eventually("B refuses A's certificate too", || {
        b.log("B").contains("TLS handshake failed").then_some(())
    });
    assert_eq!(stored_at_line(b.addr("B"), "stranger"), None);
    assert!(a.alive("A") && b.alive("B"));
}
