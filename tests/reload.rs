//! Reloading a running herd: a new server joins by editing the config and
//! reloading its neighbours, a bad config changes nothing, limits and the
//! log level change in place, and SIGHUP reopens a moved log file.

mod support;

use herd::pure::config::{AdminListen, Config, ServerConfig};
use nix::sys::signal::Signal;
use support::*;

fn iamat(client: &str, i: u32) -> String {
    format!("IAMAT {client} +34.068930-118.445127 1621464827.{i:09}")
}

/// Asks a server to reload over its admin endpoint, as `herd reload` does.
fn reload(herd: &Herd, name: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(herd.admin_addr(name), "POST", "/reload");
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, body)
}

/// A sixth server joins a running five-server herd: only its two new
/// neighbours are reloaded (one by SIGHUP, one over HTTP). It receives
/// every record by catch-up, and its own records reach the others.
#[test]
fn a_new_server_joins_by_reloading_its_neighbours() {
    let mut herd = Herd::start(default_herd_on_free_ports(), 1);
    let before: Vec<String> = (0..30).map(|i| format!("before-{i}")).collect();
    let lines: Vec<String> = before
        .iter()
        .enumerate()
        .map(|(i, c)| iamat(c, i as u32))
        .collect();
    send_all(herd.addr("Hands"), &lines);
    for c in &before {
        eventually("the herd to hold the first records", || {
            stored_at_line(herd.addr("Welsh"), c)
        });
    }

    let mut config = herd.config.clone();
    config.servers.push(ServerConfig {
        name: "Sixth".to_owned(),
        listen: format!("127.0.0.1:{}", free_port()),
        peer_listen: Some(format!("127.0.0.1:{}", free_port())),
        admin_listen: AdminListen::At(format!("127.0.0.1:{}", free_port())),
        neighbours: vec!["Goloman".to_owned(), "Welsh".to_owned()],
        ..ServerConfig::default()
    });
    for server in &mut config.servers {
        if server.name == "Goloman" || server.name == "Welsh" {
            server.neighbours.push("Sixth".to_owned());
        }
    }
    config.validate().expect("the grown herd is valid");
    herd.rewrite_config(config);
    herd.start_server("Sixth");
    herd.signal("Goloman", Signal::SIGHUP);
    let (status, body) = reload(&herd, "Welsh");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "links opened to Sixth");
    eventually("Goloman to log its reload", || {
        herd.log("Goloman")
            .contains("config reloaded changes=links opened to Sixth")
            .then_some(())
    });

    for c in &before {
        eventually("Sixth to hold every earlier record", || {
            stored_at_line(herd.addr("Sixth"), c)
        });
    }
    let reply = exchange_text(herd.addr("Sixth"), &format!("{}\n", iamat("from-sixth", 1)));
    assert!(reply.starts_with("AT Sixth "), "{reply}");
    for name in ["Hands", "Holiday", "Goloman", "Welsh", "Wilkes"] {
        let got = eventually("Sixth's record to reach every server", || {
            stored_at_line(herd.addr(name), "from-sixth")
        });
        assert_eq!(got, reply.trim_end());
    }
    // Sixth's neighbours are ready with it; /status lists the new link.
    eventually("Welsh to be ready with its new link", || {
        (http(herd.admin_addr("Welsh"), "GET", "/readyz").0 == 200).then_some(())
    });
    let (_, status) = http(herd.admin_addr("Welsh"), "GET", "/status");
    assert!(status.contains("\"neighbour\":\"Sixth\""), "{status}");
}

/// A config that does not validate is refused with check-config's words,
/// and the old one stays in force; dropping a neighbour closes its links.
#[test]
fn a_broken_reload_changes_nothing_and_a_removed_neighbour_is_unlinked() {
    let mut herd = Herd::start(herd_of(&["A", "B", "C"], &[("A", "B"), ("B", "C")]), 1);
    let good = herd.config.clone();
    let mut broken = good.clone();
    // A lists C, but C does not list A.
    broken.servers[0].neighbours.push("C".to_owned());
    broken.limits.max_line_bytes = 10;
    herd.rewrite_config(broken);
    let (status, body) = reload(&herd, "A");
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("A lists C as a neighbour but C does not list A"),
        "{message}"
    );
    assert!(message.contains("limits.max_line_bytes is 10"), "{message}");
    // `herd reload` reads the same file, says the same and fails.
    let out = std::process::Command::new(herd_bin())
        .args(["reload", "A", "--config"])
        .arg(&herd.config_path)
        .output()
        .expect("run herd reload");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("not valid") && said.contains("C does not list A"),
        "{said}"
    );
    herd.signal("A", Signal::SIGHUP);
    eventually("the SIGHUP reload to be refused too", || {
        herd.log("A").contains("reload refused").then_some(())
    });
    // Nothing changed: A floods to B as before, and long lines still pass.
    let reply = exchange_text(herd.addr("A"), &format!("{}\n", iamat("still", 1)));
    assert!(reply.starts_with("AT A "), "{reply}");
    eventually("the record to reach C through B", || {
        stored_at_line(herd.addr("C"), "still")
    });

    // Now B drops C: both reload, and the link between them closes.
    let mut apart = good.clone();
    apart.servers[1].neighbours.retain(|n| n != "C");
    apart.servers[2].neighbours.clear();
    herd.rewrite_config(apart);
    let (status, body) = reload(&herd, "B");
    assert_eq!(status, 200, "{body}");
    let out = std::process::Command::new(herd_bin())
        .args(["reload", "C", "--config"])
        .arg(&herd.config_path)
        .output()
        .expect("run herd reload");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.trim(), "C: reloaded: links closed to B");
    eventually("B to close its link to C", || {
        herd.log("B")
            .contains("link closed: no longer a neighbour")
            .then_some(())
    });
    let reply = exchange_text(herd.addr("A"), &format!("{}\n", iamat("later", 2)));
    assert!(reply.starts_with("AT A "), "{reply}");
    eventually("B to store the new record", || {
        stored_at_line(herd.addr("B"), "later")
    });
    // B has no link to C any more, and C does not get B's new records.
    let (_, status) = http(herd.admin_addr("B"), "GET", "/status");
    assert!(!status.contains("\"neighbour\":\"C\""), "{status}");
    assert_eq!(stored_at_line(herd.addr("C"), "later"), None);
}

/// Limits and the log level change in place on reload, for connections
/// made after it.
#[test]
fn limits_and_the_log_level_change_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config: Config = herd_of(&["A"], &[]);
    config.logging.level = Some("info".to_owned());
    let path = dir.path().join("herd.json");
    std::fs::write(&path, config.to_json_pretty()).expect("write config");
    // No --log-level: the config's level is in force, and a reload moves it.
    let server = KillOnDrop(
        serve_command("A", &path, &dir.path().join("logs"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let addr = config.listen_addr("A").expect("addr");
    let admin = config.admin_addr("A").expect("admin");
    wait_listening(addr);
    let log = || std::fs::read_to_string(dir.path().join("logs/A.log")).unwrap_or_default();

    let long = format!("IAMAT {} +1+2 3", "c".repeat(200));
    assert!(exchange_text(addr, &format!("{long}\n")).starts_with("AT A "));
    exchange_text(addr, "IAMAT quiet +1+2 3\n");
    assert!(
        !log().contains("IAMAT quiet"),
        "debug lines are off at info"
    );

    config.limits.max_line_bytes = 100;
    config.logging.level = Some("debug".to_owned());
    std::fs::write(&path, config.to_json_pretty()).expect("write config");
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("logging.level") && body.contains("limits.max_line_bytes"),
        "{body}"
    );
    eventually("a new connection to get the new line limit", || {
        let reply = exchange_text(addr, &format!("{long}\n"));
        reply.starts_with("? IAMAT").then_some(())
    });
    exchange_text(addr, "IAMAT loud +1+2 3\n");
    eventually("debug lines to be logged", || {
        log().contains("IAMAT loud").then_some(())
    });
    drop(server);
}

/// SIGHUP after the log file was moved away (as logrotate does): new
/// lines go to a new file at the old path.
#[test]
fn sighup_reopens_a_moved_log_file() {
    let mut herd = Herd::start(herd_of(&["A"], &[]), 1);
    let log = herd.log_dir().join("A.log");
    let moved = herd.log_dir().join("A.log.1");
    eventually("the first lines to be written", || {
        herd.log("A").contains("started").then_some(())
    });
    std::fs::rename(&log, &moved).expect("move the log");
    herd.signal("A", Signal::SIGHUP);
    // The signal is handled on the server's own time: a line sent before
    // the new file is there would rightly go to the moved one.
    eventually("a new log file", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("log file reopened").then_some(())
    });
    exchange_text(herd.addr("A"), "IAMAT after-rotation +1+2 3\n");
    eventually("a new log file with the new lines", || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.contains("log file reopened") && text.contains("after-rotation")).then_some(())
    });
    let old = std::fs::read_to_string(&moved).expect("old log");
    assert!(
        old.contains("started"),
        "the old lines stay in the moved file"
    );
    assert!(
        !old.contains("after-rotation"),
        "no new line goes to the moved file"
    );
    assert!(herd.alive("A"));
}

/// JSON log lines when the config asks for them.
#[test]
fn logs_can_be_json_lines() {
    let mut config = herd_of(&["A"], &[]);
    config.logging.format = herd::pure::config::LogFormat::Json;
    let herd = Herd::start(config, 1);
    exchange_text(herd.addr("A"), "IAMAT json-client +1+2 3\n");
    let text = eventually("lines about the client", || {
        let text = herd.log("A");
        text.contains("json-client").then_some(text)
    });
    for line in text.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
}
