//! The command line as a user meets it: check-config, serve's start-up
//! errors, and `herd up` bringing a whole herd up and down.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn check_config_accepts_a_good_herd() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "herd.json",
        &herd::pure::config::Config::default_herd().to_json_pretty(),
    );
    let out = Command::new(herd_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok, 5 servers"), "{text}");
}

#[test]
fn check_config_explains_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "bad.json",
        r#"{"servers": [
            {"name": "A", "listen": "127.0.0.1:9001", "neighbours": ["B", "Ghost"]},
            {"name": "B", "listen": "not an address", "neighbours": []},
            {"name": "B", "listen": "127.0.0.1:9003", "neighbours": []}
        ]}"#,
    );
    let out = Command::new(herd_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Ghost"), "unknown neighbour: {text}");
    assert!(text.contains("not an address"), "bad address: {text}");
    assert!(
        text.contains("B is used by more than one server"),
        "duplicate name: {text}"
    );
    assert!(text.contains("does not list"), "asymmetric: {text}");
}

#[test]
fn check_config_names_a_missing_file() {
    let out = Command::new(herd_bin())
        .args(["check-config", "/nonexistent/herd.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/herd.json"), "{stderr}");
    // Each cause once, not again as the source of the one before.
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn check_config_names_every_unknown_field_and_bad_value_with_its_path_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{
  "secert": "s",
  "servers": [
    {"name": "A", "listen": "127.0.0.1:12138", "neighbours": ["B"]},
    {"name": "B", "listen": "127.0.0.1:12139", "neighbors": ["A"]}
  ],
  "limits": {"max_records": "many"}
}"#;
    let path = write_file(dir.path(), "herd.json", text);
    let out = Command::new(herd_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in [
        "secert: unknown field; did you mean `secret`?",
        "servers[1].neighbors: unknown field; did you mean `neighbours`?",
        "limits.max_records: invalid type: string \"many\"",
    ] {
        assert_eq!(stderr.matches(said).count(), 1, "{said:?} once in {stderr}");
    }
}

#[test]
fn serve_refuses_a_name_that_is_not_in_the_herd_names_the_servers_and_writes_no_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(herd_bin())
        .args(["serve", "Nobody", "--log-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Nobody is not a server of this herd; its servers are Goloman, Hands, Holiday, Wilkes, Welsh"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("Nobody.log").exists(),
        "a log for no server"
    );
}

#[test]
fn a_second_copy_of_a_running_server_refuses_to_start() {
    let herd = Herd::start(herd_of(&["Once"], &[]), 1);
    let out = serve_command("Once", &herd.config_path, &herd.log_dir())
        .args(["--shards", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already listens"),
        "{out:?}"
    );
    // The first copy still serves alone.
    assert!(exchange_text(herd.addr("Once"), "IAMAT x +1-2 3\n").starts_with("AT Once "));
}

/// `herd up` of the config at `path`, in a process group of its own like
/// a shell job (so Ctrl-C can go to the group), its output piped.
fn herd_up(path: &Path, logs: &Path, stderr: Stdio) -> Child {
    Command::new(herd_bin())
        .arg("up")
        .arg("--config")
        .arg(path)
        .arg("--log-dir")
        .arg(logs)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .unwrap()
}

/// What `up` printed up to its "Ctrl-C" line (all of it, if it ended first).
/// Its stdout stays open: `up` prints as it stops, too.
fn banner_of(up: &mut Child) -> String {
    let mut stdout = BufReader::new(up.stdout.as_mut().unwrap());
    let mut banner = String::new();
    while !banner.contains("Ctrl-C") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        banner.push_str(&line);
    }
    banner
}

#[test]
fn herd_up_runs_every_server_and_stops_them_all_gracefully_on_ctrl_c() {
    let config = default_herd_on_free_ports();
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let mut up = herd_up(&path, &dir.path().join("logs"), Stdio::null());
    let banner = banner_of(&mut up);
    assert!(banner.contains("nc "), "{banner}");
    for server in &config.servers {
        assert!(banner.contains(&server.listen), "{banner}");
        wait_listening(config.listen_addr(&server.name).unwrap());
    }
    // The herd floods: a record given to Goloman shows up at Welsh.
    let at = exchange_text(
        config.listen_addr("Goloman").unwrap(),
        "IAMAT upped +1-2 3\n",
    );
    let got = eventually("record at Welsh", || {
        stored_at_line(config.listen_addr("Welsh").unwrap(), "upped")
    });
    assert_eq!(got + "\n", at);

    // A second `herd up` of the same herd is refused, and says why: it must
    // not take the first herd's answers for its own servers'.
    let mut second = herd_up(&path, &dir.path().join("logs2"), Stdio::piped());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second herd up kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    second
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    let mut why = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut why)
        .unwrap();
    assert!(!status.success(), "a second herd up exited 0: {said}");
    assert!(!said.contains("herd is up"), "{said}");
    assert!(why.contains("a herd already runs here"), "{why}");
    // The first herd is untouched.
    assert!(stored_at_line(config.listen_addr("Welsh").unwrap(), "upped").is_some());

    // Ctrl-C at a terminal: SIGINT to the whole foreground group.
    let status = ctrl_c(&mut up);
    assert!(status.success(), "{status}");
    // Every server stopped gracefully (one signal each, not two).
    assert_stopped_gracefully(&config, &dir.path().join("logs"));
    for server in &config.servers {
        let addr = config.listen_addr(&server.name).unwrap();
        eventually("servers gone", || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                .is_err()
                .then_some(())
        });
    }
}

/// SIGINT to up's whole process group, as Ctrl-C at a terminal sends it;
/// how up exited.
fn ctrl_c(up: &mut Child) -> std::process::ExitStatus {
    let group = nix::unistd::Pid::from_raw(-(up.id() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = up.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "herd up did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every server's log says its shards stopped: one signal each, not two.
fn assert_stopped_gracefully(config: &herd::pure::config::Config, logs: &Path) {
    for server in &config.servers {
        let log = std::fs::read_to_string(logs.join(format!("{}.log", server.name))).unwrap();
        assert!(log.contains("shard stopped"), "{}: {log}", server.name);
    }
}

/// `herd up | head`: whoever reads up's output may go away before the herd
/// stops. Up still stops every server gracefully and exits 0 (it once
/// panicked on the closed pipe as it printed "stopping the herd").
#[test]
fn herd_up_whose_output_nobody_reads_any_more_still_stops_its_herd() {
    let config = default_herd_on_free_ports();
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let mut up = herd_up(&path, &dir.path().join("logs"), Stdio::null());
    let banner = banner_of(&mut up);
    assert!(banner.contains("Ctrl-C"), "{banner}");
    for server in &config.servers {
        wait_listening(config.listen_addr(&server.name).unwrap());
    }
    drop(up.stdout.take());
    let status = ctrl_c(&mut up);
    assert!(status.success(), "{status}");
    assert_stopped_gracefully(&config, &dir.path().join("logs"));
}

/// Whether process `pid` still runs (a zombie, waiting for whoever adopted
/// it to reap it, does not).
fn process_runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        state.is_some_and(|s| s != 'Z' && s != 'X')
    })
}

#[test]
fn the_servers_of_a_herd_up_killed_outright_stop_with_it() {
    let config = default_herd_on_free_ports();
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let mut up = herd_up(&path, &dir.path().join("logs"), Stdio::null());
    let banner = banner_of(&mut up);
    assert!(banner.contains("herd is up"), "{banner}");
    // Its servers, by the pids their admin endpoints give.
    let servers: Vec<u32> = config
        .servers
        .iter()
        .map(|s| {
            let admin = config.admin_addr(&s.name).unwrap();
            let (_, body) = http(admin, "GET", "/healthz");
            let health: serde_json::Value = serde_json::from_str(&body).unwrap();
            u32::try_from(health["pid"].as_u64().unwrap()).unwrap()
        })
        .collect();
    assert!(servers.iter().all(|&pid| process_runs(pid)));
    // As `kill -9`, or a wrapper's timeout, would end it: no chance to stop
    // its servers itself.
    up.kill().unwrap();
    up.wait().unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<u32> = servers
            .iter()
            .copied()
            .filter(|&pid| process_runs(pid))
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            // Our own test's servers, by pid: not left running.
            for &pid in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("servers {left:?} outlived herd up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each stopped gracefully, by the one SIGTERM the kernel sent.
    assert_stopped_gracefully(&config, &dir.path().join("logs"));
}

#[test]
fn serve_pins_shards_to_the_cpus_asked_and_refuses_others() {
    let usable = herd::process::server::usable_cpus().unwrap();
    let last = *usable.last().unwrap();
    let mut herd = Herd::start(herd_of(&[], &[]), 1);
    herd.config = herd_of(&["Pinned"], &[]);
    std::fs::write(&herd.config_path, herd.config.to_json_pretty()).unwrap();
    let out = serve_command("Pinned", &herd.config_path, &herd.log_dir())
        .args(["--cpus", "9999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CPU 9999 is not in"),
        "{out:?}"
    );
    let mut child = serve_command("Pinned", &herd.config_path, &herd.log_dir())
        .args(["--cpus", &last.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        banner.contains(&format!("with 1 shard(s) on CPUs [{last}]")),
        "{banner}"
    );
}

/// `herd certs --config FILE --out DIR` run as a user would: it writes a CA
/// and a certificate and key per server (keys 0600), prints a tls section
/// that, pasted into the config, makes every server's files load, and
/// refuses to overwrite without --force.
#[test]
fn certs_makes_files_that_every_server_loads_and_refuses_to_overwrite() {
    use herd::pure::config::{config_dir, Config};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default_herd();
    let config_path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let certs = |force: bool| {
        let mut cmd = Command::new(herd_bin());
        cmd.arg("certs")
            .arg("--config")
            .arg(&config_path)
            .arg("--out")
            .arg(dir.path().join("certs"));
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let out = certs(false);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let section = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"tls\": "))
        .unwrap_or_else(|| panic!("no tls section in {stdout}"));
    assert_eq!(
        section,
        r#"{"ca": "certs/ca.pem", "cert": "certs/{name}.pem", "key": "certs/{name}-key.pem"}"#
    );

    // Paste the section into the config, as the output says.
    let mut value: serde_json::Value = serde_json::from_str(&config.to_json_pretty()).unwrap();
    value["tls"] = serde_json::from_str(section).unwrap();
    std::fs::write(&config_path, value.to_string()).unwrap();
    let loaded = Config::load(&config_path).unwrap();
    for server in &loaded.servers {
        let paths = loaded
            .tls_paths(&server.name, &config_dir(&config_path))
            .unwrap();
        let tls = herd::net::link::tls::LinkTls::load(&paths, &server.name)
            .unwrap_or_else(|e| panic!("{}: {e}", server.name));
        assert_eq!(tls.name(), server.name);
        let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", paths.key.display());
    }
    let ca_key = dir.path().join("certs/ca-key.pem");
    let mode = std::fs::metadata(&ca_key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let ca = std::fs::read(dir.path().join("certs/ca.pem")).unwrap();
    let again = certs(false);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("already exist") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dir.path().join("certs/ca.pem")).unwrap(), ca);
    let forced = certs(true);
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(std::fs::read(dir.path().join("certs/ca.pem")).unwrap(), ca);
}

#[test]
fn the_readme_config_listing_is_the_default_herd_with_every_default_limit() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme
        .split_once("This is the default herd plus the default")
        .expect("the listing's heading")
        .1;
    let json = after
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a json block")
        .0;
    let listed: serde_json::Value = serde_json::from_str(json).unwrap();
    let default = serde_json::to_value(herd::pure::config::Config::default_herd()).unwrap();
    // Every limit and Places setting, with its default value: no more, no fewer.
    for section in ["limits", "places"] {
        assert_eq!(listed[section], default[section], "README's {section}");
    }
    assert_eq!(listed["servers"], default["servers"], "README's servers");
}

#[test]
fn check_config_warns_of_derived_ports_in_the_hosts_ephemeral_range() {
    let Some((low, high)) = herd::process::host::ephemeral_range() else {
        return;
    };
    // A client port whose admin port (client + 20000) lands in the range.
    let client = low.saturating_sub(20_000).max(1024);
    if !(low..=high).contains(&(client + 20_000)) {
        return;
    }
    let mut config = herd_of(&["Derived"], &[]);
    config.servers[0].listen = format!("127.0.0.1:{client}");
    config.servers[0].admin_listen = herd::pure::config::AdminListen::Default;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "herd.json", &config.to_json_pretty());
    let out = Command::new(herd_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: Derived: admin address (client port + 20000) 127.0.0.1:{}",
            client + 20_000
        )) && stderr.contains("ephemeral port range"),
        "{stderr}"
    );
}
