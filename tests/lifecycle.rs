//! A server's life as a process: graceful stop on SIGTERM, a second signal
//! that does not wait, start-up without io_uring, and what its log file says.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use support::*;

#[test]
fn sigterm_stops_a_server_gracefully_with_exit_code_zero() {
    let mut herd = Herd::start(herd_of(&["Calm"], &[]), 2);
    let addr = herd.addr("Calm");
    assert!(exchange_text(addr, "IAMAT before.stop +1-2 3\n").starts_with("AT Calm "));
    // An idle client is let go: the server closes it rather than wait forever.
    let mut idle = connect(addr);
    herd.signal("Calm", Signal::SIGTERM);
    let status = herd.wait_exit("Calm");
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap_or(0), 0);
    assert!(
        herd.stderr("Calm").contains("herd Calm stopped"),
        "{}",
        herd.stderr("Calm")
    );
    let log = herd.log("Calm");
    assert!(log.contains("shard stopped"), "{log}");
    assert!(
        log.contains("records=1"),
        "the summary counts stored records: {log}"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut herd = Herd::start(herd_of(&["Stuck"], &[]), 1);
    let addr = herd.addr("Stuck");
    exchange_text(addr, "IAMAT big +1-2 3\n");
    // A client that asks for far more than the socket buffers hold and never
    // reads: its connection cannot finish, so draining would take the full
    // deadline.
    let mut hog = connect(addr);
    let request = "WHATSAT big 50 20\n".repeat(5_000);
    hog.write_all(request.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    herd.signal("Stuck", Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(herd.alive("Stuck"), "still draining after the first signal");
    herd.signal("Stuck", Signal::SIGTERM);
    let status = herd.wait_exit("Stuck");
    assert_eq!(
        status.code(),
        Some(130),
        "{status:?} (signal {:?})",
        status.signal()
    );
    drop(hog);
}

#[test]
fn without_io_uring_resources_start_up_fails_with_the_fix_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "herd.json",
        &herd_of(&["Lone"], &[]).to_json_pretty(),
    );
    let out = std::process::Command::new("prlimit")
        .args([
            "--memlock=0:0",
            herd_bin(),
            "serve",
            "Lone",
            "--shards",
            "1",
            "--config",
        ])
        .arg(&config)
        .arg("--log-dir")
        .arg(dir.path())
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not start the io_uring executors"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ulimit -l") && stderr.contains("tuning.md"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `herd serve NAME` of `config`, under an open-file limit of `files`
/// (soft and hard, so the server cannot raise it), logging into `dir`.
fn serve_with_open_files(
    config: &herd::pure::config::Config,
    name: &str,
    shards: usize,
    files: u64,
    dir: &std::path::Path,
) -> Served {
    let path = write_file(dir, "herd.json", &config.to_json_pretty());
    std::process::Command::new("prlimit")
        .arg(format!("--nofile={files}:{files}"))
        .args([
            herd_bin(),
            "serve",
            name,
            "--shards",
            &shards.to_string(),
            "--config",
        ])
        .arg(&path)
        .arg("--log-dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .map(Served)
        .expect("prlimit (util-linux) runs")
}

/// A server process started here (prlimit execs it: same PID), killed when
/// dropped unless it has exited: a failed assertion must not leave it
/// running. (std does not signal a child it has already reaped.)
struct Served(std::process::Child);

impl Served {
    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap())
    }

    /// Waits (bounded) for the server to exit.
    fn exit(&mut self) -> std::process::ExitStatus {
        eventually("the server to exit", || self.0.try_wait().unwrap())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn too_low_an_open_file_limit_is_refused_at_start_with_the_remedy() {
    let config = herd_of(&["Starved"], &[]);
    // From a limit where not even the executors start, through ones where
    // some shards would and others not, to one just short of the floor.
    for files in [8, 12, 17, 40, 63] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = serve_with_open_files(&config, "Starved", 2, files, dir.path());
        let status = server.exit();
        let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
        assert_eq!(
            status.code(),
            Some(1),
            "limit {files}: {status:?}\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("open-file limit (ulimit -n) is {files}"))
                && stderr.contains("need at least 64")
                && stderr.contains("tuning.md"),
            "limit {files}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "limit {files}: {stderr}");
    }
}

#[test]
fn a_server_out_of_file_descriptors_keeps_serving_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = herd_of(&["Full"], &[]);
    let addr = config.listen_addr("Full").unwrap();
    // The floor for two shards: it starts, with room for a few dozen clients.
    let mut server = serve_with_open_files(&config, "Full", 2, 64, dir.path());
    wait_listening(addr);
    let mut first = Client::new(addr);
    first.send("IAMAT first +1-2 3\n");
    assert!(first.line().starts_with("AT Full "));
    // More clients than descriptors: the kernel completes their handshakes
    // (the backlog), the server cannot accept them all.
    let crowd: Vec<_> = (0..80).map(|_| connect(addr)).collect();
    let log = dir.path().join("Full.log");
    eventually("the server to report failed accepts", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("accept failed").then_some(())
    });
    // Those it holds are still served.
    first.send("IAMAT first +1-2 4\n");
    assert!(first.line().starts_with("AT Full "));
    nix::sys::signal::kill(server.pid(), Signal::SIGTERM).unwrap();
    let status = server.exit();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("herd Full stopped"), "{stderr}");
    // Told with a count of failures (at most a line a second: unit-tested
    // in the server).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("failed="), "{text}");
    drop(crowd);
}

// What the log says of a connection: these need the server's own log
// file, so a process.

#[test]
fn a_client_that_does_not_read_its_replies_is_dropped() {
    let mut config = herd_of(&["Slow"], &[]);
    config.limits.write_timeout_ms = 300;
    let herd = Herd::start(config, 1);
    let addr = herd.addr("Slow");
    exchange_text(addr, "IAMAT big +1-2 3\n");
    let mut hog = connect(addr);
    // About 60 MB of replies asked for, far beyond any socket buffer.
    let request = "WHATSAT big 50 20\n".repeat(5_000);
    let _ = hog.write_all(request.as_bytes());
    eventually("the slow reader dropped", || {
        herd.log("Slow")
            .contains("did not take its replies in time")
            .then_some(())
    });
    // Everyone else is still served.
    assert!(exchange_text(addr, "IAMAT other +1-2 3\n").starts_with("AT Slow "));
}

#[test]
fn a_silent_client_is_closed_after_its_idle_timeout() {
    let mut config = herd_of(&["Quiet"], &[]);
    config.limits.client_idle_timeout_ms = 300;
    let herd = Herd::start(config, 2);
    let addr = herd.addr("Quiet");
    // One client that spoke once, one that never did, and one half way
    // through a line: each is closed by the server (end of input), not
    // left open; the partial line is not answered.
    let mut spoke = connect(addr);
    spoke.write_all(b"IAMAT once +1-2 3\n").unwrap();
    let mut never = connect(addr);
    let mut partial = connect(addr);
    partial.write_all(b"IAMAT half +1-2").unwrap();
    for (name, client, expected) in [
        ("spoke", &mut spoke, "AT Quiet "),
        ("never", &mut never, ""),
        ("partial", &mut partial, ""),
    ] {
        // A bound on the wait, not a timing assertion: a server that never
        // closes fails the read instead of hanging the test.
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut got = Vec::new();
        let result = client.read_to_end(&mut got);
        assert!(result.is_ok(), "{name}: not closed: {result:?}");
        let got = String::from_utf8_lossy(&got);
        if expected.is_empty() {
            assert_eq!(got, "", "{name}");
        } else {
            assert!(got.starts_with(expected), "{name}: {got}");
        }
    }
    // Everyone else is still served.
    assert!(exchange_text(addr, "IAMAT other +1-2 3\n").starts_with("AT Quiet "));
}

/// The ports tests hand servers: one left with a connection in TIME_WAIT
/// by a server that closed first (as the tests' fake servers do) passes
/// std's bind, which sets SO_REUSEADDR, but not glommio's, which does not:
/// `free_port` must not hand it out (a herd server failed to start on
/// such a port once, with "Address already in use").
#[test]
fn a_port_left_in_time_wait_is_not_taken_for_free() {
    // free_port's check and this bind are two steps, and another socket
    // may take the port in between (this failed once in CI with "Address
    // already in use"; what took it was not found): such a port is passed
    // over.
    let (port, listener) = (0..100)
        .find_map(|_| {
            let port = free_port();
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some((port, listener))
        })
        .expect("a free port in 100 tries");
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    // The server side closes first, so its end waits in TIME_WAIT.
    drop(accepted);
    let mut rest = Vec::new();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
    drop(client);
    drop(listener);
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "std calls the port free"
    );
    assert!(
        !bindable_as_herd_binds(port),
        "a bind without SO_REUSEADDR does not"
    );
}

#[test]
fn every_line_in_and_out_is_logged_at_debug_level() {
    let herd = Herd::start(herd_of(&["Solo"], &[]), 1);
    exchange_text(herd.addr("Solo"), "IAMAT logged +1-2 3\nNONSENSE\n");
    let log = eventually("log lines", || {
        let log = herd.log("Solo");
        (log.contains("? NONSENSE")).then_some(log)
    });
    assert!(log.contains("line=IAMAT logged +1-2 3"), "{log}");
    assert!(log.contains("line=NONSENSE"), "{log}");
    assert!(log.contains("reply=AT Solo "), "{log}");
}
