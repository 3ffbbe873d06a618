//! A herd across hosts: five `herd serve` processes, each in a network
//! namespace of its own, joined by a Linux bridge in one more namespace, so
//! links run over (virtual) Ethernet between distinct addresses rather than
//! over loopback. One server is cut off by taking its bridge port down, the
//! rest keep flooding, and all five converge once it is back.
//!
//! Needs root (namespaces, veths) and iproute2; CI runs as root. Without
//! root it runs in an unprivileged user namespace where the kernel allows
//! one (`support::privileged`), and is skipped with a line saying so where
//! it does not, unless `HERD_REQUIRE_ROOT_TESTS=1` (CI) makes that a failure.
//!
//! Also here: the example config in `deploy/` passes `check-config`.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use herd::pure::config::Config;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Every server listens on these ports, each on its own address.
const CLIENT_PORT: u16 = 12138;
const PEER_PORT: u16 = 22138;

/// The most any wait of this test takes. Longer than `PATIENCE`: noticing
/// a cut link takes a link timeout (2.5 s) and healing one a reconnect
/// backoff (up to 2 s) plus a SYN retransmission (1 s), on a machine that
/// may be building something else.
const DEADLINE: Duration = Duration::from_secs(30);

/// Connect and read timeout of one question to a server, so that one
/// unlucky attempt costs a few seconds of a poll, not the whole deadline.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The servers' subnet. Every address lives only inside this test's
/// namespaces, so it cannot clash with the host's networks (or with
/// another run of this test, which has its own bridge).
fn host_ip(i: usize) -> String {
    format!("10.231.0.{}", i + 1)
}

/// The address of the namespace the test asks from (the "phones").
const CLIENT_IP: &str = "10.231.0.100";

/// Runs `ip ARGS`; Err says which command failed and what `ip` said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "`ip {}` did not run ({e}); is iproute2 installed?",
                args.join(" ")
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS` and fails the test when it fails.
fn must_ip(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// Runs `f` on a thread of its own that has joined the network namespace
/// `ns`, so sockets `f` opens live there. Only that thread moves: the
/// namespace is a per-thread attribute, and the thread ends with `f`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    // Where `ip netns add` keeps its namespaces.
    let path = Path::new("/var/run/netns").join(ns);
    let handle = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering namespace {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Sends `text` to `addr` from namespace `ns`, half-closes and returns all
/// the server wrote before closing; None when it cannot be reached or does
/// not finish within `ASK_TIMEOUT`.
fn ask(ns: &str, addr: SocketAddr, text: &str) -> Option<String> {
    in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&addr, ASK_TIMEOUT).ok()?;
        s.set_read_timeout(Some(ASK_TIMEOUT)).ok()?;
        s.set_write_timeout(Some(ASK_TIMEOUT)).ok()?;
        s.write_all(text.as_bytes()).ok()?;
        s.shutdown(Shutdown::Write).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
}

/// The herd's token key: client addresses are not loopback, so phones
/// authenticate (or a server would refuse to start).
const TOKEN_KEY: &str = "multihost test token key, 32 bytes";

/// `AUTH <client> <token>` with a token good for an hour.
fn auth_line(client: &str) -> String {
    let key = herd::pure::token::TokenKey::new(TOKEN_KEY);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "AUTH {client} {}\n",
        herd::pure::token::issue(&key, client, now + 3600)
    )
}

/// What a server answered after the answer to `auth_line(client)`, which
/// must have been taken.
fn after_auth<'a>(reply: &'a str, client: &str) -> &'a str {
    let (first, rest) = reply.split_once('\n').unwrap_or((reply, ""));
    assert!(
        first.starts_with(&format!("AUTH {client} ")),
        "AUTH refused: {reply}"
    );
    rest
}

/// Interface names, then addresses, of the namespace this process runs in.
fn own_interfaces() -> String {
    let run = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut names: Vec<String> = run(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
        .collect();
    names.sort();
    let mut addrs: Vec<String> = run(&["-o", "addr", "show"])
        .lines()
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect();
    addrs.sort();
    format!("{}\n{}", names.join("\n"), addrs.join("\n"))
}

/// The namespaces, their wiring and the server processes of one test run.
/// Dropping it kills the servers it started (by PID) and deletes every
/// namespace it made (which deletes their veths), also when the test
/// panics.
struct Lab {
    /// Server names, in config order; server `i` lives in `hosts[i]`.
    names: Vec<String>,
    /// The namespace holding the bridge `br0`.
    bridge: String,
    /// One namespace per server.
    hosts: Vec<String>,
    /// The namespace the test's clients ask from.
    client: String,
    /// Every namespace made so far, for Drop.
    made: Vec<String>,
    /// Running servers: (index, process).
    servers: Vec<(usize, Child)>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

impl Lab {
    /// Makes the namespaces and the bridge and writes the config; starts
    /// nothing yet.
    fn new(names: &[&str]) -> Lab {
        let pid = std::process::id();
        // Namespace names are not bound by the 15-byte limit on interface
        // names; the pid keeps concurrent runs apart.
        let bridge = format!("herd-br-{pid}");
        let hosts: Vec<String> = (0..names.len())
            .map(|i| format!("herd-{pid}-{i}"))
            .collect();
        let client = format!("herd-{pid}-c");
        // A run killed before its Drop (SIGKILL) leaves its namespaces
        // behind; a later run with the same pid would then fail to make
        // them. They are ours by name: remove them first.
        for ns in hosts.iter().chain([&bridge, &client]) {
            let _ = ip(&["netns", "del", ns]);
        }
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("herd.json");
        let mut lab = Lab {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            bridge,
            hosts,
            client,
            made: Vec::new(),
            servers: Vec::new(),
            dir,
            config_path,
        };
        let root_before = own_interfaces();
        if let Err(e) = lab.add_netns(&lab.bridge.clone()) {
            panic!(
                "multihost: cannot create a network namespace: {e}\n\
                 This test needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2. \
                 It fails instead of skipping, so that a passing run always ran it."
            );
        }
        let br = lab.bridge.clone();
        must_ip(&["-n", &br, "link", "set", "lo", "up"]);
        // A bridge without STP forwards on a port as soon as it is up.
        must_ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        must_ip(&["-n", &br, "link", "set", "br0", "up"]);
        for i in 0..lab.hosts.len() {
            let ns = lab.hosts[i].clone();
            lab.attach(&ns, &format!("p{i}"), &host_ip(i));
        }
        let client = lab.client.clone();
        lab.attach(&client, "pc", CLIENT_IP);
        // Everything went into namespaces of our own: the namespace this
        // test runs in (the host's, in CI) has gained nothing.
        assert_eq!(
            own_interfaces(),
            root_before,
            "setting up the namespaces changed this namespace's interfaces or addresses"
        );
        lab.write_config();
        lab
    }

    fn add_netns(&mut self, ns: &str) -> Result<(), String> {
        ip(&["netns", "add", ns])?;
        self.made.push(ns.to_owned());
        Ok(())
    }

    /// Makes namespace `ns` with `lo` up and an `eth0` at `addr`/24, whose
    /// other end is bridge port `port`. Both ends are made right where they
    /// belong (`ip -n BRIDGE link add ... peer ... netns NS`), so no
    /// interface ever appears in this process's namespace, not even
    /// briefly; port names only need to be unique within the bridge's
    /// namespace, and stay far below 15 bytes.
    fn attach(&mut self, ns: &str, port: &str, addr: &str) {
        if let Err(e) = self.add_netns(ns) {
            panic!("{e}");
        }
        let br = self.bridge.clone();
        must_ip(&["-n", ns, "link", "set", "lo", "up"]);
        must_ip(&[
            "-n", &br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        must_ip(&["-n", &br, "link", "set", port, "master", "br0"]);
        must_ip(&["-n", &br, "link", "set", port, "up"]);
        must_ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        must_ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    /// The default herd's topology on the namespaces' addresses, with a
    /// secret (peer addresses are not loopback, so a server refuses to start
    /// without one). Written as JSON text, not from `ServerConfig` values,
    /// so fields added to the config types later do not break this test.
    fn write_config(&self) {
        let default = Config::default_herd();
        let servers: Vec<serde_json::Value> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let neighbours = &default.server(name).expect("a default server").neighbours;
                serde_json::json!({
                    "name": name,
                    "listen": format!("{}:{CLIENT_PORT}", host_ip(i)),
                    "peer_listen": format!("{}:{PEER_PORT}", host_ip(i)),
                    "neighbours": neighbours,
                })
            })
            .collect();
        // Client addresses are off loopback too: phones prove who they are.
        let config = serde_json::json!({
            "secret": "multihost test secret",
            "clients": {"auth": "token", "token_key": TOKEN_KEY, "read": "own"},
            "servers": servers,
        });
        std::fs::write(
            &self.config_path,
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} is not a server of this herd"))
    }

    fn addr(&self, i: usize) -> SocketAddr {
        format!("{}:{CLIENT_PORT}", host_ip(i)).parse().unwrap()
    }

    fn stderr_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.stderr", self.names[i]))
    }

    fn stderr(&self, i: usize) -> String {
        std::fs::read_to_string(self.stderr_path(i)).unwrap_or_default()
    }

    fn log(&self, i: usize) -> String {
        let path = self
            .dir
            .path()
            .join("logs")
            .join(format!("{}.log", self.names[i]));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Starts every server in its namespace, then waits until each says it
    /// listens.
    fn start_all(&mut self) {
        for i in 0..self.names.len() {
            let stderr = File::create(self.stderr_path(i)).unwrap();
            // `ip netns exec` enters the namespace and execs the command in
            // its own process (no fork), so the child's PID is the server's.
            let child = Command::new("ip")
                .args(["netns", "exec", &self.hosts[i]])
                .arg(herd_bin())
                .args(["serve", &self.names[i], "--config"])
                .arg(&self.config_path)
                .arg("--log-dir")
                .arg(self.dir.path().join("logs"))
                .args(["--shards", "1", "--log-level", "info"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning ip netns exec ... herd serve: {e}"));
            self.servers.push((i, child));
        }
        let herd = std::fs::canonicalize(herd_bin()).unwrap();
        for k in 0..self.servers.len() {
            let i = self.servers[k].0;
            let said = format!("herd {} listening", self.names[i]);
            let deadline = Instant::now() + DEADLINE;
            while !self.stderr(i).contains(&said) {
                if let Ok(Some(status)) = self.servers[k].1.try_wait() {
                    panic!("{} exited ({status}): {}", self.names[i], self.stderr(i));
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not start: {}",
                    self.names[i],
                    self.stderr(i)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // What Drop kills is the server itself, not a wrapper that
            // would leave it running in a namespace nobody can name.
            let pid = self.servers[k].1.id();
            assert_eq!(
                std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
                Some(herd.clone()),
                "process {pid} should be {}",
                self.names[i]
            );
        }
    }

    /// Sends an IAMAT to server `i` from namespace `from` and returns the
    /// AT line it answers.
    fn iamat(&self, from: &str, i: usize, client: &str, time: &str) -> String {
        let line = format!("IAMAT {client} +34.068930-118.445127 {time}\n");
        let reply = ask(from, self.addr(i), &format!("{}{line}", auth_line(client)))
            .unwrap_or_else(|| panic!("{} did not answer {line}", self.names[i]));
        let reply = after_auth(&reply, client);
        assert!(
            reply.starts_with(&format!("AT {} ", self.names[i])),
            "{}: {reply}",
            self.names[i]
        );
        reply.trim_end().to_owned()
    }

    /// The AT line server `i` holds for `client` (the first line of a
    /// WHATSAT reply), asked from namespace `from`; None when it holds none
    /// or does not answer.
    fn held(&self, from: &str, i: usize, client: &str) -> Option<String> {
        let asked = format!("{}WHATSAT {client} 10 1\n", auth_line(client));
        let reply = ask(from, self.addr(i), &asked)?;
        after_auth(&reply, client)
            .lines()
            .next()
            .filter(|l| l.starts_with("AT "))
            .map(str::to_owned)
    }

    /// Polls until every server of `servers` holds exactly `records`
    /// (client, AT line); fails after `DEADLINE` saying who lacks what.
    fn converge(&self, what: &str, servers: &[usize], records: &[(String, String)]) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut missing = Vec::new();
            for &i in servers {
                for (client, want) in records {
                    let got = self.held(&self.client, i, client);
                    if got.as_deref() != Some(want.as_str()) {
                        missing.push(format!("{} has {got:?} for {client}", self.names[i]));
                    }
                }
            }
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not converged after {DEADLINE:?}:\n{}",
                missing.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until server `i`'s log, past byte `from`, has a line with every
    /// one of `words`.
    fn await_log(&self, i: usize, from: usize, words: &[&str]) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = self.log(i);
            let found = log
                .get(from..)
                .is_some_and(|new| new.lines().any(|l| words.iter().all(|w| l.contains(w))));
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged a line with {words:?}",
                self.names[i]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Takes server `i`'s bridge port down or up. Down, its `eth0` loses
    /// carrier but keeps its address, so the server still answers from
    /// inside its own namespace: cut off from the herd, not stopped.
    fn set_port(&self, i: usize, state: &str) {
        must_ip(&["-n", &self.bridge, "link", "set", &format!("p{i}"), state]);
    }

    fn all_alive(&mut self) -> bool {
        self.servers
            .iter_mut()
            .all(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing run shows what each server said.
            for i in 0..self.names.len() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- {} stderr:\n{}", self.names[i], self.stderr(i));
                eprintln!(
                    "--- {} log tail:\n{}",
                    self.names[i],
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        // Our own children only, by PID; before the namespaces go, so none
        // is left running in a namespace that no longer has a name.
        for (_, child) in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting a namespace deletes its interfaces, and a veth goes with
        // either of its ends: this removes the whole network.
        for ns in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("multihost: cleanup: {e}");
            }
        }
    }
}

#[test]
fn five_servers_on_five_hosts_flood_survive_a_partition_and_converge_after_it() {
    if !privileged(
        "five_servers_on_five_hosts_flood_survive_a_partition_and_converge_after_it",
        true,
    ) {
        return;
    }
    let began = Instant::now();
    let default = Config::default_herd();
    let names: Vec<&str> = default.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Goloman", "Hands", "Holiday", "Wilkes", "Welsh"]);
    let mut lab = Lab::new(&names);
    lab.start_all();
    let up = began.elapsed();
    let all: Vec<usize> = (0..names.len()).collect();
    let (goloman, hands, holiday, wilkes, welsh) = (
        lab.index("Goloman"),
        lab.index("Hands"),
        lab.index("Holiday"),
        lab.index("Wilkes"),
        lab.index("Welsh"),
    );
    let phones = lab.client.clone();

    // Flooding across hosts: one IAMAT at Goloman reaches all five,
    // Welsh two hops away, as the same AT line.
    let first = lab.iamat(&phones, goloman, "phone-1", "1621464827.959498503");
    lab.converge(
        "the first record",
        &all,
        &[("phone-1".to_owned(), first.clone())],
    );
    let flooded = began.elapsed();

    // Cut Hands off. Its neighbours are Goloman and Wilkes, which stay
    // joined through each other and Holiday, so the other four are still
    // one connected herd.
    let hands_log = lab.log(hands).len();
    lab.set_port(hands, "down");
    let hands_ns = lab.hosts[hands].clone();
    let mut during = vec![(
        "phone-1".to_owned(),
        // A newer record of a client Hands already holds: after the heal
        // it must replace the one Hands has.
        lab.iamat(&phones, welsh, "phone-1", "1621464900"),
    )];
    for (i, t) in [(goloman, 1), (holiday, 2), (wilkes, 3)] {
        let client = format!("phone-during-{}", names[i]);
        during.push((
            client.clone(),
            lab.iamat(&phones, i, &client, &format!("162146490{t}")),
        ));
    }
    // Hands still takes IAMATs from phones on its side of the cut.
    let cut_off = (
        "phone-cut-off".to_owned(),
        lab.iamat(&hands_ns, hands, "phone-cut-off", "1621464910"),
    );
    let reachable: Vec<usize> = all.iter().copied().filter(|&i| i != hands).collect();
    lab.converge("records sent during the cut", &reachable, &during);
    // Hands notices the silence on its links (heartbeats, link_timeout_ms),
    // so the heal below goes through redial and catch-up, not through TCP
    // retransmitting into a link that never closed.
    for neighbour in ["Goloman", "Wilkes"] {
        lab.await_log(hands, hands_log, &["link dropped", neighbour]);
    }
    // The cut is real: nothing crossed it either way.
    for &i in &reachable {
        assert_eq!(
            lab.held(&phones, i, "phone-cut-off"),
            None,
            "{} got a record from cut-off Hands",
            names[i]
        );
    }
    assert_eq!(
        lab.held(&hands_ns, hands, "phone-1"),
        Some(first),
        "cut-off Hands still holds the old record"
    );
    for (client, _) in &during[1..] {
        assert_eq!(
            lab.held(&hands_ns, hands, client),
            None,
            "cut-off Hands got {client}"
        );
    }
    let partitioned = began.elapsed();

    // Heal: all five converge on every record, the newest of each client,
    // those sent on either side of the cut included.
    lab.set_port(hands, "up");
    let mut everything = during.clone();
    everything.push(cut_off);
    lab.converge("every record after the heal", &all, &everything);
    let healed = began.elapsed();
    assert!(lab.all_alive(), "a server exited during the test");
    eprintln!(
        "multihost: up {up:?}, flooded {:?}, partition noticed {:?}, healed {:?}, total {healed:?}",
        flooded - up,
        partitioned - flooded,
        healed - partitioned
    );
}

#[test]
fn the_example_multihost_config_in_deploy_passes_check_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/multihost.json");
    let out = Command::new(herd_bin())
        .args(["check-config", path])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok, 5 servers: Goloman, Hands, Holiday, Wilkes, Welsh"),
        "{stdout}"
    );
    // It is the example it claims to be: the default topology, one host per
    // server, explicit peer addresses off loopback, and so a secret, and
    // client addresses off loopback, and so tokens.
    let config = Config::load(Path::new(path)).unwrap();
    let default = Config::default_herd();
    assert!(config.secret.is_some(), "links across hosts need a secret");
    assert_eq!(
        config.clients.auth,
        herd::pure::clients::ClientAuth::Token,
        "phones across hosts need tokens"
    );
    let mut hosts = std::collections::HashSet::new();
    for (server, model) in config.servers.iter().zip(&default.servers) {
        assert_eq!(server.name, model.name);
        assert_eq!(server.neighbours, model.neighbours, "{}", server.name);
        assert!(
            server.peer_listen.is_some(),
            "{} has no peer_listen",
            server.name
        );
        let peer = config.peer_addr(&server.name).unwrap();
        let client = config.listen_addr(&server.name).unwrap();
        assert!(!peer.ip().is_loopback(), "{}: {peer}", server.name);
        assert_eq!(
            peer.ip(),
            client.ip(),
            "{}: one host per server",
            server.name
        );
        assert!(
            hosts.insert(client.ip()),
            "{}: a host of its own",
            server.name
        );
    }
}
