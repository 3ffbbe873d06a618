//! Test support: real `herd` processes on free loopback ports, and plain
//! blocking TCP clients to talk to them. Every wait is bounded.

#![allow(dead_code)]

pub mod proxy;

use herd::pure::config::{AdminListen, Config, ServerConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The herd binary built for these tests.
pub fn herd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herd")
}

/// `herd serve NAME --config CONFIG --log-dir LOG_DIR`, for callers to add
/// their own options and stdio to.
pub fn serve_command(name: &str, config: &Path, log_dir: &Path) -> Command {
    let mut cmd = Command::new(herd_bin());
    cmd.arg("serve")
        .arg(name)
        .arg("--config")
        .arg(config)
        .arg("--log-dir")
        .arg(log_dir);
    cmd
}

/// A loopback port that was free a moment ago, never handed out twice in
/// one test process, and below the kernel's ephemeral range (32768 and up by
/// default), so no outgoing connection can take it before a server binds it.
///
/// Free as herd binds it: glommio's listeners set SO_REUSEPORT but not
/// SO_REUSEADDR, so a connection in TIME_WAIT on the port (left by an
/// earlier test binary's fake server that closed first) makes their bind
/// fail. std's `TcpListener::bind` sets SO_REUSEADDR and would call such a
/// port free, so the probe is a plain socket without it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another, but start each one elsewhere in
    // the range so that leftovers of the previous one are not in the way.
    let start = (std::process::id() % 100) * 120;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(20_000 + (start + offset) % 12_000).expect("port in range");
        if bindable_as_herd_binds(port) {
            return port;
        }
    }
}

/// Whether a listening socket without SO_REUSEADDR can bind 127.0.0.1:`port`
/// now.
pub fn bindable_as_herd_binds(port: u16) -> bool {
    use socket2::{Domain, Socket, Type};
    let Ok(socket) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
        return false;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    socket.bind(&addr.into()).is_ok() && socket.listen(1).is_ok()
}

/// The default five-server herd, moved to free loopback ports.
pub fn default_herd_on_free_ports() -> Config {
    let mut config = Config::default_herd();
    for server in &mut config.servers {
        server.listen = format!("127.0.0.1:{}", free_port());
        server.peer_listen = Some(format!("127.0.0.1:{}", free_port()));
        server.admin_listen = AdminListen::At(format!("127.0.0.1:{}", free_port()));
    }
    config
}

/// A herd of the given servers and symmetric neighbour pairs on free ports.
pub fn herd_of(names: &[&str], pairs: &[(&str, &str)]) -> Config {
    let mut config = Config::default_herd();
    config.servers = names
        .iter()
        .map(|name| ServerConfig {
            name: (*name).to_owned(),
            listen: format!("127.0.0.1:{}", free_port()),
            // Explicit: the default (client port + 10000) would land in the
            // kernel's ephemeral range, where an outgoing connection may
            // hold it.
            peer_listen: Some(format!("127.0.0.1:{}", free_port())),
            // The same for the admin port (client port + 20000).
            admin_listen: AdminListen::At(format!("127.0.0.1:{}", free_port())),
            neighbours: pairs
                .iter()
                .filter_map(|&(a, b)| {
                    if a == *name {
                        Some(b.to_owned())
                    } else if b == *name {
                        Some(a.to_owned())
                    } else {
                        None
                    }
                })
                .collect(),
            ..ServerConfig::default()
        })
        .collect();
    config
}

/// Real server processes of one herd, killed (by PID) when dropped.
pub struct Herd {
    pub config: Config,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub children: Vec<(String, Child)>,
    pub shards: usize,
}

impl Herd {
    /// Writes the config and starts every server in it.
    pub fn start(config: Config, shards: usize) -> Herd {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("herd.json");
        std::fs::write(&config_path, config.to_json_pretty()).expect("write config");
        let mut herd = Herd {
            config,
            dir,
            config_path,
            children: Vec::new(),
            shards,
        };
        let names: Vec<String> = herd.config.servers.iter().map(|s| s.name.clone()).collect();
        for name in names {
            herd.start_server(&name);
        }
        herd
    }

    /// Starts (or restarts) one server and waits until it accepts.
    pub fn start_server(&mut self, name: &str) {
        let said_before = self.stderr(name).len();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.stderr")))
            .expect("stderr file");
        let child = serve_command(name, &self.config_path, &self.log_dir())
            .arg("--shards")
            .arg(self.shards.to_string())
            .arg("--log-level")
            .arg("debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn herd serve");
        self.children.push((name.to_owned(), child));
        let deadline = Instant::now() + PATIENCE;
        // Started means: said so on stderr (every shard listens by then).
        while !self.stderr(name)[said_before..].contains(&format!("herd {name} listening")) {
            assert!(self.alive(name), "{name} exited: {}", self.stderr(name));
            assert!(
                Instant::now() < deadline,
                "{name} did not start: {}",
                self.stderr(name)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills one server with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal to one server.
    pub fn signal(&self, name: &str, signal: nix::sys::signal::Signal) {
        let (_, child) = self
            .children
            .iter()
            .find(|(n, _)| n == name)
            .expect("server started");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("kill");
    }

    /// Waits (bounded) for one server to exit and returns its status.
    pub fn wait_exit(&mut self, name: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("server started");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{name} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_dir().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// What a server printed on stderr, over all its starts.
    pub fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.stderr"))).unwrap_or_default()
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.config.listen_addr(name).expect("server in herd")
    }

    /// Where a server serves /metrics, /readyz and the rest.
    pub fn admin_addr(&self, name: &str) -> SocketAddr {
        self.config
            .admin_addr(name)
            .expect("server with an admin address")
    }

    /// Replaces the config file (what a reload re-reads) and this herd's
    /// view of it.
    pub fn rewrite_config(&mut self, config: Config) {
        std::fs::write(&self.config_path, config.to_json_pretty()).expect("write config");
        self.config = config;
    }

    /// Where a server takes links.
    pub fn peer_addr(&self, name: &str) -> SocketAddr {
        self.config.peer_addr(name).expect("server in herd")
    }

    /// The PID of a running server this herd started.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// Whether a server process is still running.
    pub fn alive(&mut self, name: &str) -> bool {
        self.children
            .iter_mut()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test shows what the servers said.
            for server in &self.config.servers {
                let log = self.log(&server.name);
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- {} stderr:\n{}", server.name, self.stderr(&server.name));
                eprintln!(
                    "--- {} log tail:\n{}",
                    server.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP/1.1 request (no body) to `addr`, through herd's own small
/// client (the one `herd status` and `herd reload` use): the status code
/// and the body. `None` when nothing answers there or the answer is not
/// HTTP.
pub fn try_http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let raw = herd::admin::status::request(addr, method, path, PATIENCE).ok()?;
    let response = herd::admin::status::parse_response(&raw).ok()?;
    Some((
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    ))
}

/// A child process killed (SIGKILL, by its PID) when dropped, whatever
/// happens in the test.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Like [`try_http`], failing the test when nothing answers.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    try_http(addr, method, path).unwrap_or_else(|| panic!("no HTTP answer from {addr}{path}"))
}

/// The value of one sample line of Prometheus text (`name{labels}` exactly
/// as written), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until something accepts connections at `addr`.
pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{addr} never started listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it returns `Some`, or fails the test after PATIENCE.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Connects with read and write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.set_write_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Sends `input`, half-closes, and reads everything until the server closes.
pub fn exchange(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(input).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to end");
    out
}

/// Like [`exchange`], but `None` where the server closes or resets early.
pub fn try_exchange(addr: SocketAddr, input: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, PATIENCE).ok()?;
    s.set_read_timeout(Some(PATIENCE)).ok()?;
    s.write_all(input).ok()?;
    s.shutdown(Shutdown::Write).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(out)
}

/// Like [`exchange`], as text.
pub fn exchange_text(addr: SocketAddr, input: &str) -> String {
    String::from_utf8(exchange(addr, input.as_bytes())).expect("utf-8 reply")
}

/// A line-oriented client on one connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        let s = connect(addr);
        Client {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        }
    }

    /// A second client on the same connection.
    pub fn try_clone(&self) -> Client {
        let s = self.writer.try_clone().expect("clone");
        Client {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        }
    }

    /// The connection itself (for reads that must see its end).
    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).expect("write");
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        line
    }

    /// Reads one WHATSAT reply: lines up to and including the empty one.
    pub fn whatsat_reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "connection closed mid-reply: {reply}");
            reply.push_str(&line);
            if line == "\n" {
                return reply;
            }
        }
    }
}

/// The AT line a server holds for `client`, asked with WHATSAT, or None.
pub fn stored_at_line(addr: SocketAddr, client: &str) -> Option<String> {
    let reply = exchange_text(addr, &format!("WHATSAT {client} 1 0\n"));
    if reply.starts_with("AT ") {
        reply.lines().next().map(str::to_owned)
    } else {
        None
    }
}

/// Writes a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// Sends IAMATs over one connection and returns the AT lines, in order.
pub fn send_all(addr: SocketAddr, lines: &[String]) -> Vec<String> {
    let mut s = connect(addr);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    s.write_all(text.as_bytes()).expect("write");
    let mut reader = BufReader::new(s);
    (0..lines.len())
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read line");
            line.trim_end().to_owned()
        })
        .collect()
}

/// Starts a places mock inside the current glommio executor and returns the
/// address it listens on. `serve` runs the mock's `serve` (tests include the
/// mock's source, `places-mock/mock.rs`) with the callback it is given.
pub async fn start_mock_with<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(Box<dyn FnOnce(SocketAddr)>) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + 'static,
{
    use std::cell::Cell;
    use std::rc::Rc;
    let slot = Rc::new(Cell::new(None));
    let seen = Rc::clone(&slot);
    let serving = serve(Box::new(move |addr| seen.set(Some(addr))));
    glommio::spawn_local(async move {
        if let Err(e) = serving.await {
            panic!("mock failed: {e}");
        }
    })
    .detach();
    for _ in 0..1000 {
        if let Some(addr) = slot.get() {
            return addr;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    panic!("mock did not start");
}

/// Runs `f` to completion on a fresh glommio executor thread.
pub fn run_glommio<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("executor thread ends cleanly")
}

/// A places mock's `/stats`, asked on a connection of its own (which the
/// mock counts too), from inside a glommio executor.
pub async fn mock_stats_json(addr: SocketAddr) -> serde_json::Value {
    use http_body_util::BodyExt;
    use hyper::rt::Executor;
    let stream = glommio::net::TcpStream::connect(addr).await.expect("mock");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(herd::rt::http::GlommioIo::new(stream))
            .await
            .expect("HTTP handshake");
    herd::rt::http::LocalExec.execute(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/stats")
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a request");
    let res = send.send_request(req).await.expect("stats answered");
    let body = res
        .into_body()
        .collect()
        .await
        .expect("stats body")
        .to_bytes();
    serde_json::from_slice(&body).expect("stats JSON")
}

/// A fresh handshake nonce, as a test dialler sends it.
pub fn test_nonce() -> String {
    herd::net::nonce::fresh().expect("random source")
}

/// Dials `peer` (a server's peer address) as neighbour `me` of server
/// `them`, and does the handshake with `secret` (what this dialler believes
/// the secret is). Returns the stream and the lines the handshake wrote
/// (`PEER` and, if the server's challenge came, `PROOF`), plus the server's
/// first answer line.
pub fn dial_link(
    peer: SocketAddr,
    me: &str,
    them: &str,
    secret: Option<&str>,
) -> (TcpStream, String, String) {
    use herd::pure::link_session::{proof, Exchange, Side};
    let mut stream = connect(peer);
    let nonce = test_nonce();
    let mut sent = format!("PEER {me} {nonce}\n");
    stream.write_all(sent.as_bytes()).expect("write PEER");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut answer = String::new();
    let _ = reader.read_line(&mut answer);
    let answer = answer.trim_end().to_owned();
    if let Some(rest) = answer.strip_prefix("CHALLENGE ") {
        let their_nonce = rest.split(' ').next().unwrap_or("");
        let x = Exchange {
            dialer: me,
            acceptor: them,
            dialer_nonce: &nonce,
            acceptor_nonce: their_nonce,
        };
        let line = format!("PROOF {}\n", proof(secret, Side::Dialer, &x));
        stream.write_all(line.as_bytes()).expect("write PROOF");
        sent.push_str(&line);
    }
    (stream, sent, answer)
}

/// PIDs of the processes holding a TCP socket whose local or remote port is
/// `port`: what `lsof -ti:PORT` lists, read from /proc.
pub fn pids_holding_port(port: u16) -> Vec<u32> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let port_of = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            };
            if port_of(cols[1]) == Some(port) || port_of(cols[2]) == Some(port) {
                inodes.insert(format!("socket:[{}]", cols[9]));
            }
        }
    }
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| inodes.contains(target.to_string_lossy().as_ref()))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Whether the server ends the connection (before `PATIENCE`), reading and
/// dropping whatever it sends first.
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + PATIENCE;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// A herd of its own config file: `config` as given, of which only the
/// servers `names` are started.
pub fn start_some(config: Config, names: &[&str]) -> Herd {
    let mut herd = Herd::start(herd_of(&[], &[]), 1);
    herd.config = config;
    std::fs::write(&herd.config_path, herd.config.to_json_pretty()).expect("write config");
    for name in names {
        herd.start_server(name);
    }
    herd
}

/// A server with no neighbours whose client and peer ports are 0 (the
/// kernel picks, `herd::start` reports), its admin endpoint as given.
pub fn port_zero_server(name: &str, admin_listen: AdminListen) -> ServerConfig {
    ServerConfig {
        name: name.to_owned(),
        listen: "127.0.0.1:0".to_owned(),
        peer_listen: Some("127.0.0.1:0".to_owned()),
        admin_listen,
        neighbours: Vec::new(),
        ..ServerConfig::default()
    }
}

/// An admin endpoint on a port the kernel picks.
pub fn admin_on_port_zero() -> AdminListen {
    AdminListen::At("127.0.0.1:0".to_owned())
}

/// A herd of one server, `port_zero_server(name, admin_listen)`.
pub fn lone_on_port_zero(name: &str, admin_listen: AdminListen) -> Config {
    let mut config = herd_of(&[], &[]);
    config.servers = vec![port_zero_server(name, admin_listen)];
    config
}

/// Starts server `name` of `config` in this process with `shards` shards.
pub fn start_in_process(config: Config, name: &str, shards: usize) -> herd::Running {
    let options = herd::StartOptions {
        shards: Some(shards),
        ..herd::StartOptions::named(name)
    };
    herd::start(config, options).unwrap_or_else(|e| panic!("{name} starts: {e}"))
}

/// A herd of servers started in this process with `herd::start`, on ports
/// the kernel chose: no process, no port guessed. Stopped (gracefully,
/// each waited for) when dropped.
pub struct InHerd {
    /// The herd as running: every address is a bound one.
    pub config: Config,
    shards: usize,
    running: Vec<(String, Option<herd::Running>)>,
}

impl InHerd {
    /// Starts every server of `template` (its names, neighbours, limits and
    /// secret; its addresses are ignored), then tells each where the others
    /// listen, and waits until every server is ready (links up both ways).
    pub fn start(template: Config, shards: usize) -> InHerd {
        let mut running = Vec::new();
        let mut config = template.clone();
        for server in &mut config.servers {
            // Alone, on free ports: nobody needs its peer port yet.
            let mut lone = template.clone();
            // The other listeners the template asks for come along.
            lone.servers = vec![ServerConfig {
                client_tls_listen: server.client_tls_listen.clone(),
                http_listen: server.http_listen.clone(),
                https_listen: server.https_listen.clone(),
                ..port_zero_server(&server.name, admin_on_port_zero())
            }];
            let started = start_in_process(lone, &server.name, shards);
            let bound = started.bound();
            server.listen = bound.client.to_string();
            server.peer_listen = Some(bound.peer.to_string());
            server.admin_listen = AdminListen::At(bound.admin.expect("admin on").to_string());
            server.client_tls_listen = bound.client_tls.map(|a| a.to_string());
            server.http_listen = bound.http.map(|a| a.to_string());
            server.https_listen = bound.https.map(|a| a.to_string());
            running.push((server.name.clone(), Some(started)));
        }
        let herd = InHerd {
            config,
            shards,
            running,
        };
        for (_, server) in &herd.running {
            let server = server.as_ref().expect("running");
            server
                .reconfigure(herd.config.clone())
                .expect("the herd's config is valid");
        }
        for server in &herd.config.servers {
            herd.wait_ready(&server.name);
        }
        herd
    }

    /// Waits until a server's `/readyz` says ready.
    pub fn wait_ready(&self, name: &str) {
        eventually(&format!("{name} ready"), || {
            let (code, _) = try_http(self.admin_addr(name), "GET", "/readyz")?;
            (code == 200).then_some(())
        });
    }

    /// Stops one server gracefully and waits until it is gone.
    pub fn stop(&mut self, name: &str) {
        let slot = self.slot(name);
        if let Some(server) = slot.take() {
            server.stop().expect("stops cleanly");
        }
    }

    /// Starts a stopped server again, on the addresses it had.
    pub fn restart(&mut self, name: &str) {
        let started = start_in_process(self.config.clone(), name, self.shards);
        *self.slot(name) = Some(started);
    }

    fn slot(&mut self, name: &str) -> &mut Option<herd::Running> {
        self.running
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
            .expect("server of this herd")
    }

    /// A server's client address.
    /// Server `name` as it runs.
    pub fn running(&self, name: &str) -> &herd::Running {
        self.running
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, r)| r.as_ref())
            .unwrap_or_else(|| panic!("{name} is not running"))
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.config.listen_addr(name).expect("server in herd")
    }

    /// Where a server takes links.
    pub fn peer_addr(&self, name: &str) -> SocketAddr {
        self.config.peer_addr(name).expect("server in herd")
    }

    /// Where a server serves /metrics, /readyz and the rest.
    pub fn admin_addr(&self, name: &str) -> SocketAddr {
        self.config.admin_addr(name).expect("server in herd")
    }

    /// One series of a server's `/metrics`, once it is published (shards
    /// publish four times a second).
    pub fn metric(&self, name: &str, series: &str) -> Option<f64> {
        let (code, text) = try_http(self.admin_addr(name), "GET", "/metrics")?;
        (code == 200).then(|| metric(&text, series)).flatten()
    }
}

/// Seconds since the UNIX epoch now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// A client token for `client` under the token key `key`, good for `ttl`
/// seconds from now.
pub fn client_token(key: &str, client: &str, ttl: u64) -> String {
    herd::pure::token::issue(
        &herd::pure::token::TokenKey::new(key),
        client,
        unix_now() + ttl,
    )
}

/// A TLS client trusting the PEM CA `ca`, connected to `addr` as 127.0.0.1.
pub fn tls_client(
    addr: SocketAddr,
    ca: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("an IP name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Drives the handshake to the end, so a refusal shows here.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

pub fn read_lines(stream: &mut impl Read, count: usize) -> String {
    let mut text = String::new();
    let mut byte = [0u8; 1];
    while text.matches('\n').count() < count {
        match stream.read(&mut byte) {
            Ok(1) => text.push(char::from(byte[0])),
            _ => break,
        }
    }
    text
}

/// What a test that needs privileges (mounts, network namespaces) does
/// here: `true` to run its scenario in this process now; `false` when it
/// ran in a child already (and passed), or was skipped with a line saying
/// so.
///
/// With the capabilities (root, as in CI) it runs here. Without them, it is
/// run again as `test` (its path in this test binary, for `--exact`) inside
/// an unprivileged user and mount namespace (`unshare -Urm`, and a network
/// namespace of its own with `net`), where the kernel allows that. Where it
/// does not, the test is skipped, unless `HERD_REQUIRE_ROOT_TESTS=1` (set by
/// CI), which makes it a failure, so that a green CI always ran it.
pub fn privileged(test: &str, net: bool) -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    if std::env::var_os("HERD_IN_USERNS").is_some() {
        return true;
    }
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("CapEff:"))?
                .to_owned();
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        })
        .unwrap_or(0);
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) && (!net || has(CAP_NET_ADMIN)) {
        return true;
    }
    let flags = if net { "-Urmn" } else { "-Urm" };
    let probe = Command::new("unshare")
        .args([flags, "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        let why = format!(
            "{test} needs root, or unprivileged user namespaces (`unshare {flags}`), for its \
             mounts and namespaces; neither is here"
        );
        if std::env::var("HERD_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!("{why} (HERD_REQUIRE_ROOT_TESTS=1 makes that a failure)");
        }
        eprintln!(
            "SKIPPED {why}: run `cargo test` as root to run it (HERD_REQUIRE_ROOT_TESTS=1 \
             fails instead of skipping)"
        );
        return false;
    }
    // Inside: loopback up, and a /run of its own for `ip netns`.
    let setup = if net {
        "mount -t tmpfs herd-run /run && ip link set lo up && exec \"$0\" \"$@\""
    } else {
        "exec \"$0\" \"$@\""
    };
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new("unshare")
        .args([flags, "sh", "-c", setup])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("HERD_IN_USERNS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs");
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test} in a user namespace did not end within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(
        status.success() && out.contains("1 passed"),
        "{test} in a user namespace ({flags}) failed: {status}\n{out}\n{err}"
    );
    eprintln!("{test}: ran in a user namespace ({flags}), passed");
    false
}
