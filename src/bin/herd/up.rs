//! `herd up`: runs every server of a herd on this host, each as its own
//! `herd serve` process, and stops them all on Ctrl-C or SIGTERM; if it is
//! killed outright, the kernel stops them (each asks to be sent SIGTERM
//! when `herd up` dies).
//!
//! Owns only child processes it started, and signals them by their PID.

use anyhow::{anyhow, Context};
use herd::pure::config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `println!`, except that a stdout nobody reads any more (`herd up | head`,
/// a closed terminal) is no reason to stop: `println!` would panic on EPIPE
/// and leave the servers running without the one who stops them.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How to bring a herd up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Config file, or `None` for the default herd.
    pub config_path: Option<PathBuf>,
    /// The herd it describes.
    pub config: Config,
    /// Shards per server.
    pub shards: usize,
    /// Log directory for every server.
    pub log_dir: PathBuf,
    /// Log level for every server.
    pub log_level: String,
}

/// Starts the herd and waits for a signal; returns once every child is gone.
pub fn up(opts: UpOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the herd executable")?;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    refuse_if_taken(&opts)?;
    let mut children = spawn_all(&exe, &opts)?;
    if let Err(e) = wait_until_ours(&opts, &mut children) {
        stop_all(&mut children);
        return Err(e);
    }
    print_banner(&opts, children.len());
    wait_for_stop(&mut signals, &mut children);
    stop_all(&mut children);
    Ok(())
}

/// A herd already running here would answer every readiness check of
/// ours while our servers fail to bind: refused before anything starts.
fn refuse_if_taken(opts: &UpOptions) -> anyhow::Result<()> {
    let taken: Vec<String> = opts
        .config
        .servers
        .iter()
        .filter_map(|s| {
            let addr = opts.config.listen_addr(&s.name)?;
            answers(addr).then(|| format!("{} ({addr})", s.name))
        })
        .collect();
    if !taken.is_empty() {
        return Err(anyhow!(
            "a herd already runs here: something answers at the address of {}; stop it first \
             (herd status shows it), or give this herd other ports with --config",
            taken.join(", ")
        ));
    }
    Ok(())
}

/// Starts every server of the config, in config order; on a failure, stops
/// those already started.
fn spawn_all(exe: &Path, opts: &UpOptions) -> anyhow::Result<Vec<(String, Child)>> {
    // Spread the servers over the CPUs this process may use: server k's
    // shards start at CPU k (mod the count), so five one-shard servers on
    // two cores do not all share the first.
    let usable = herd::process::server::usable_cpus().map_err(anyhow::Error::msg)?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for (k, server) in opts.config.servers.iter().enumerate() {
        let cpus: Vec<String> = (0..opts.shards)
            .map(|i| usable[(k * opts.shards + i) % usable.len()].to_string())
            .collect();
        match spawn(exe, &server.name, opts, &cpus.join(",")) {
            Ok(child) => children.push((server.name.clone(), child)),
            Err(e) => {
                stop_all(&mut children);
                return Err(e);
            }
        }
    }
    Ok(children)
}

/// Waits until every server answers, so that the banner's nc line works at
/// once; a server counts as up only when it is our own child that answers
/// (its admin endpoint says its pid), not whatever holds the port.
fn wait_until_ours(opts: &UpOptions, children: &mut [(String, Child)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    for (k, server) in opts.config.servers.iter().enumerate() {
        let Some(addr) = opts.config.listen_addr(&server.name) else {
            continue;
        };
        let admin = opts.config.admin_addr(&server.name);
        let pid = children[k].1.id();
        let ours = || match admin {
            Some(admin) => answers_as(admin, pid),
            None => answers(addr),
        };
        while !ours() {
            let exited = children
                .iter_mut()
                .find_map(|(name, c)| matches!(c.try_wait(), Ok(Some(_))).then(|| name.clone()));
            if let Some(name) = exited {
                return Err(anyhow!(
                    "{name} exited during start-up (its error is above)"
                ));
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "{} did not start listening on {addr} within 15 s",
                    server.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// What the herd is and how to use it: its servers and their addresses,
/// where WHATSAT answers come from, an nc line to try, how to watch it.
fn print_banner(opts: &UpOptions, servers: usize) {
    say!("herd is up: {servers} servers on this host");
    for server in &opts.config.servers {
        let links = opts
            .config
            .peer_addr(&server.name)
            .map_or_else(|| "?".to_owned(), |a| a.to_string());
        let admin = opts
            .config
            .admin_addr(&server.name)
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        say!(
            "  {:<10} {:<22} links {:<22} admin {:<22} neighbours: {}",
            server.name,
            server.listen,
            links,
            admin,
            server.neighbours.join(", ")
        );
    }
    say!("logs in {}", opts.log_dir.display());
    match opts
        .config
        .places
        .resolve(std::env::var("HERD_PLACES_KEY").ok())
    {
        Ok(herd::pure::config::PlacesSource::Http { base_url, api, .. }) => {
            say!("WHATSAT answers come from {base_url} ({}).", api.describe())
        }
        _ => say!(
            "WHATSAT answers come from the offline provider: sample data, not real places \
             (set HERD_PLACES_KEY for Google)."
        ),
    }
    if let Some(first) = opts.config.servers.first() {
        let (host, port) = first
            .listen
            .rsplit_once(':')
            .unwrap_or(("127.0.0.1", "12138"));
        say!("try:  printf 'IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\\nWHATSAT kiwi.cs.ucla.edu 10 2\\n' | nc -N {host} {port}");
    }
    say!(
        "watch it:  herd status{}",
        opts.config_path
            .as_ref()
            .map_or_else(String::new, |p| format!(" --config {}", p.display()))
    );
    say!("Ctrl-C stops them all.");
}

/// Runs until Ctrl-C (or SIGTERM), or until one server exits.
fn wait_for_stop(signals: &mut signal_hook::iterator::Signals, children: &mut [(String, Child)]) {
    loop {
        if let Some(signal) = signals.pending().next() {
            say!("signal {signal}: stopping the herd");
            return;
        }
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                say!("{name} exited ({status}); stopping the herd");
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(exe: &Path, name: &str, opts: &UpOptions, cpus: &str) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(name)
        .arg("--shards")
        .arg(opts.shards.to_string())
        .arg("--cpus")
        .arg(cpus)
        .arg("--log-dir")
        .arg(&opts.log_dir)
        .arg("--log-level")
        .arg(&opts.log_level);
    if let Some(path) = &opts.config_path {
        cmd.arg("--config").arg(path);
    }
    // A process group of its own: Ctrl-C at the terminal reaches only
    // `herd up`, which then stops each server with one SIGTERM (a second
    // signal would make a server skip its graceful stop).
    cmd.process_group(0);
    // And when `herd up` dies without stopping them, they stop (see
    // `serve::follow_herd_up`).
    cmd.env(crate::serve::UP_PARENT_ENV, std::process::id().to_string());
    cmd.spawn().map_err(|e| anyhow!("starting {name}: {e}"))
}

/// Whether something accepts a connection at `addr` now.
fn answers(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// Whether the admin endpoint at `admin` is served by process `pid`.
fn answers_as(admin: std::net::SocketAddr, pid: u32) -> bool {
    let Ok(raw) =
        herd::admin::status::request(admin, "GET", "/healthz", Duration::from_millis(200))
    else {
        return false;
    };
    let Ok(response) = herd::admin::status::parse_response(&raw) else {
        return false;
    };
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    response.status == 200 && body["pid"].as_u64() == Some(u64::from(pid))
}

/// SIGTERM to every child (each drains for up to 5 s), then SIGKILL to any
/// still alive after 10 s.
fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    say!("{name} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
