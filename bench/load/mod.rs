//! `herd-bench load`: drives a server with IAMAT/WHATSAT requests, or with
//! OwnTracks locations posted over HTTP (`--post owntracks`, to a herd's
//! `http_listen`), in a closed loop (fixed requests in flight) or an open
//! loop (fixed schedule, latency measured from the scheduled time, so a
//! stalled server cannot hide its stall: coordinated omission is
//! corrected), validates every reply and reports latency quantiles.
//!
//! One pinned thread per `--cpus` entry, each driving its connections
//! through its own io_uring (`uring.rs`): per loop turn, one system call
//! submits every send and receive and collects every completion. Each owns
//! its connections and its `Stats` outright (no locks, no atomics on the hot
//! path) and hands them back when it ends. Nothing is allocated, and no
//! timer or task is made, per request. Every loop is bounded by the run's
//! clock: nothing waits past the end of the run plus the 2 s drain.
//!
//! The busy share of the generator's and the server's CPUs over the measured
//! window is read from /proc/stat, so every figure says whether the server
//!
//! The parts: `plan.rs` (what every executor shares, and the run's clock),
//! `driver.rs` (one executor's connections and the reply reader both loops
//! share), `closed.rs` (requests in flight), `open.rs` (requests on a
//! timetable); this file holds the options and starts, joins and reports
//! the executors.

mod closed;
mod driver;
mod open;
mod plan;

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpStream;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};

use crate::host::{self, CpuTimes};
use crate::posts::{self, Posts};
use crate::report::{self, CpuUse, ServerCpu, Summary};
use crate::stats::Stats;
use crate::tls::{self, Tls};
use crate::uring::Conns;
use crate::workload::Workload;
use driver::{Driver, Line, Work};
use plan::{Clock, Plan};

/// Options of `herd-bench load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Server to load, HOST:PORT.
    #[arg(long)]
    pub addr: String,
    /// Server name every AT reply must carry (not checked when absent).
    #[arg(long)]
    pub server: Option<String>,
    /// TCP connections, split evenly over the executors.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Closed loop: requests kept in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Open loop: total requests/s over all connections (closed loop when
    /// absent).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before the measured window, seconds (sent and validated, not
    /// recorded).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Distinct client ids, partitioned across connections.
    #[arg(long, default_value_t = 1_000_000)]
    pub clients: u64,
    /// Percent of requests that are WHATSATs (about clients this connection
    /// already sent an IAMAT for).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub whatsat_pct: u32,
    /// WHATSAT radius, km (0 < r <= 50).
    #[arg(long, default_value_t = 10.0)]
    pub radius: f64,
    /// WHATSAT max results (0..=20).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub max_results: u32,
    /// CPUs to run executors on, one pinned executor each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub cpus: Vec<usize>,
    /// Write an HdrHistogram interval log (one histogram per second).
    #[arg(long)]
    pub hist_log: Option<PathBuf>,
    /// Server process whose VmRSS/VmHWM to report at the end, and whose
    /// CPU time (user + system, /proc/PID/stat) over the measured window is
    /// reported per request answered.
    #[arg(long)]
    pub pid: Option<i32>,
    /// Text naming this run in the report.
    #[arg(long, default_value = "load")]
    pub label: String,
    /// Print only the JSON line.
    #[arg(long)]
    pub json_only: bool,
    /// Requests to send in all, split over the connections like the
    /// clients (with as many clients, each gets exactly one IAMAT: a fill).
    /// The run then ends when the last is answered, or at the end of the
    /// window, whichever comes first.
    #[arg(long)]
    pub requests: Option<u64>,
    /// CPUs the server runs on. Their busy share over the measured window
    /// (from /proc/stat) is reported, and a closed-loop run that left them
    /// under 95 % busy is flagged generator-bound: it measured the generator.
    #[arg(long, value_delimiter = ',')]
    pub server_cpus: Vec<usize>,
    /// Open loop: abort (exit 2) when the warm-up send-lag p99 exceeds this
    /// many milliseconds, as the generator then cannot keep its schedule.
    #[arg(long, default_value_t = 1.0)]
    pub max_send_lag_ms: f64,
    /// The herd's clients.token_key: each connection first proves, with
    /// AUTH, that it speaks for its one client (needs --clients equal to
    /// --connections, as a token is for one client id); with --post, every
    /// post carries the token as its Basic password instead.
    #[arg(long)]
    pub token_key: Option<String>,
    /// Speak TLS (to a herd's client_tls_listen), trusting the CA
    /// certificates of this PEM file (`herd certs`' ca.pem); the server's
    /// certificate must name --addr's host. Handshakes are done before the
    /// run; records are sealed and opened on the generator's CPUs.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Post each update over HTTP/1.1 as this phone app does, instead of
    /// sending IAMAT lines (to a herd's http_listen): keep-alive, and with
    /// --depth above 1 pipelined. Every response must be 200 with the body
    /// `[]`. Connection c posts as user bench-<c> for --clients devices;
    /// with --token-key, the Basic password is its one client's token.
    #[arg(long, value_enum)]
    pub post: Option<PostApp>,
}

/// The phone apps whose posts `--post` sends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostApp {
    /// OwnTracks in HTTP mode: `POST /owntracks` with a JSON location.
    Owntracks,
}

/// How long to wait for outstanding replies once the run is over.
const DRAIN: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Delay between the last executor being connected and the first request,
/// so every executor starts on the same instant.
const START_DELAY: Duration = Duration::from_millis(50);
/// Receive buffer per connection (grows for large WHATSAT replies).
const INBUF: usize = 16 * 1024;
/// A server CPU less busy than this in a closed-loop run was waiting for
/// the generator: the run measured the generator, not the server.
pub const SATURATED_PCT: f64 = 95.0;

/// Sleeps the thread until `at` (nothing else runs on it before the start).
fn sleep_until(at: Instant) {
    let left = at.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

/// Body of one executor thread: connect its connections, report ready,
/// wait for the common start, run them all, return its statistics.
fn executor_main(
    plan: Arc<Plan>,
    cpu: usize,
    conns: Range<usize>,
    ready: mpsc::Sender<Result<()>>,
    go: mpsc::Receiver<Instant>,
) -> Result<Stats> {
    let connected = (|| {
        host::pin_thread(cpu)?;
        // Timers of this thread fire when asked, not up to 50 µs later (the
        // default slack): an open loop's schedule depends on it.
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut streams = Vec::with_capacity(conns.len());
        for c in conns.clone() {
            streams.push(connect(&plan, c)?);
        }
        Conns::new(streams, INBUF).map_err(|e| anyhow!("setting up io_uring: {e}"))
    })();
    let conns_io = match connected {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow!("{e:#}")));
            return Err(e);
        }
    };
    let t0 = go
        .recv()
        .map_err(|_| anyhow!("start cancelled: another executor failed"))?;
    let warm_end = t0 + plan.warmup;
    let end = warm_end + plan.duration;
    let lines = conns
        .clone()
        .map(|c| Line {
            work: work_of(&plan, c),
            pending: VecDeque::with_capacity(plan.depth),
            echoes: Vec::with_capacity(plan.depth * 64),
            echo_start: 0,
            quota: plan.quota_of(c),
            alive: true,
            last_body: Vec::new(),
        })
        .collect();
    let mut driver = Driver {
        plan: plan.clone(),
        clock: Clock {
            t0,
            warm_end,
            end,
            drain_end: end + DRAIN,
        },
        conns: conns_io,
        lines,
        stats: Stats::new(plan.intervals)?,
        outstanding: 0,
        fresh: Vec::new(),
        events: Vec::with_capacity(1024),
        dues: Vec::with_capacity(1024),
        hopeless: None,
        busy_lines: 0,
    };
    if plan.rate.is_some() {
        driver.open(conns.start)?;
    } else {
        driver.closed()?;
    }
    Ok(driver.stats)
}

/// What connection `c` sends: IAMAT lines, or posts, whose client ids
/// and token are those of the run (see `posts.rs`).
fn work_of(plan: &Plan, c: usize) -> Work {
    let clients = plan.clients_of(c);
    if plan.post.is_none() {
        return Work::Lines(Workload::new(
            c,
            clients,
            plan.base_secs,
            plan.whatsat_pct,
            plan.radius.clone(),
            plan.max_results,
        ));
    }
    // One client per connection with a token (checked with the options).
    let password = plan.token_key.as_ref().map(|key| {
        let client = posts::client_id(c, plan.base_secs, 0);
        herd::pure::token::issue(key, &client, plan.base_secs + 24 * 3600)
    });
    Work::Posts(Posts::new(
        c,
        clients,
        plan.base_secs,
        &plan.host,
        password.as_deref(),
    ))
}

/// Opens connection `c`: TCP, then the TLS handshake and the AUTH line
/// when the run has them (posts carry their token in each request
/// instead), all before the run and on a blocking socket whose every wait
/// is bounded by `CONNECT_TIMEOUT`.
fn connect(plan: &Plan, c: usize) -> Result<(TcpStream, Option<Tls>)> {
    let mut stream = TcpStream::connect_timeout(&plan.addr, CONNECT_TIMEOUT)
        .map_err(|e| anyhow!("cannot connect to {} (connection {c}): {e}", plan.addr))?;
    // Requests are written in batches already; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let auth_line = plan.token_key.as_ref().filter(|_| plan.post.is_none());
    if plan.tls.is_none() && auth_line.is_none() {
        return Ok((stream, None));
    }
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONNECT_TIMEOUT)))
        .map_err(|e| anyhow!("connection {c}: {e}"))?;
    let mut session = match &plan.tls {
        Some(tls) => Some(
            tls.handshake(&mut stream)
                .map_err(|e| anyhow!("connection {c} to {}: {e:#}", plan.addr))?,
        ),
        None => None,
    };
    if let Some(key) = auth_line {
        match &mut session {
            Some(session) => {
                let mut tls = rustls::Stream::new(session, &mut stream);
                authenticate(&mut tls, key, c, plan.base_secs)?;
            }
            None => authenticate(&mut &stream, key, c, plan.base_secs)?,
        }
    }
    // From here on the ring does the waiting, bounded by the run's clock.
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    Ok((stream, session.map(|s| Tls::new(s, INBUF))))
}

/// Proves, before the run, that connection `c` speaks for its one client
/// (`bench-<c>-0`): one AUTH and its answer, once per connection, as a phone
/// would. `stream`'s reads are bounded by its socket's timeout.
fn authenticate(
    stream: &mut (impl std::io::Read + std::io::Write),
    key: &herd::pure::token::TokenKey,
    c: usize,
    now_secs: u64,
) -> Result<()> {
    let client = format!("bench-{c}-0");
    let token = herd::pure::token::issue(key, &client, now_secs + 24 * 3600);
    stream
        .write_all(format!("AUTH {client} {token}\n").as_bytes())
        .map_err(|e| anyhow!("AUTH on connection {c}: {e}"))?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // Bounded: the answer is one short line.
    while answer.len() < 512 && !answer.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            Ok(_) => bail!("connection {c} closed before answering AUTH"),
            Err(e) => bail!("connection {c}: no answer to AUTH: {e}"),
        }
    }
    if !answer.starts_with(format!("AUTH {client} ").as_bytes()) {
        bail!(
            "connection {c}: AUTH refused ({}): is --token-key the herd's clients.token_key?",
            String::from_utf8_lossy(&answer).trim_end()
        );
    }
    Ok(())
}

/// What the CPUs had done at one instant: every CPU's ticks, and the CPU
/// time the server process (`--pid`) had used.
struct CpuSample {
    cpus: CpuTimes,
    server: Option<Duration>,
}

impl CpuSample {
    fn read(pid: Option<i32>) -> Option<CpuSample> {
        Some(CpuSample {
            cpus: CpuTimes::read().ok()?,
            server: pid.and_then(|pid| host::process_cpu_time(pid).ok()),
        })
    }
}

/// Reads /proc/stat (and the server's /proc/PID/stat) at the start of the
/// measured window and again at its end, or as soon as `done` says the run
/// ended early; on a thread of its own, so the executors never wait for it.
fn sample_cpus(
    start: Instant,
    end: Instant,
    pid: Option<i32>,
    done: mpsc::Receiver<()>,
) -> Option<(CpuSample, CpuSample)> {
    sleep_until(start);
    let first = CpuSample::read(pid)?;
    let _ = done.recv_timeout(end.saturating_duration_since(Instant::now()));
    let second = CpuSample::read(pid)?;
    Some((first, second))
}

/// Runs `herd-bench load`; returns the error count (replies that were
/// wrong, missing or lost with their connection). `Err` means the run could
/// not be made at all.
pub fn run(args: &LoadArgs) -> Result<u64> {
    if args.connections == 0 || args.depth == 0 {
        bail!("--connections and --depth must be at least 1");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of requests/s");
        }
    }
    let duration = host::seconds("--duration", args.duration)?;
    let warmup = host::seconds("--warmup", args.warmup)?;
    if duration.is_zero() {
        bail!("--duration must be more than 0 s");
    }
    if args.clients < args.connections as u64 {
        bail!("--clients must be at least --connections (each connection owns its clients)");
    }
    if args.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    if args.token_key.is_some() && args.clients != args.connections as u64 {
        bail!("--token-key needs one client per connection: --clients equal to --connections");
    }
    if args.post.is_some() && args.whatsat_pct > 0 {
        bail!("--post sends locations only: no --whatsat-pct");
    }
    if args.post.is_some() && args.server.is_some() {
        bail!("--post: herd answers a post with [], which names no server: no --server");
    }
    if !(args.radius > 0.0 && args.radius <= 50.0) {
        bail!("--radius must be in (0, 50] km");
    }
    if !(args.max_send_lag_ms.is_finite() && args.max_send_lag_ms >= 0.0) {
        bail!("--max-send-lag-ms must be a number >= 0");
    }
    host::check_cpus(&args.cpus)?;
    if !args.server_cpus.is_empty() {
        host::check_cpus(&args.server_cpus)?;
    }
    let addr = host::resolve(&args.addr)?;
    if let Some(pid) = args.pid {
        report::read_memory(pid)?;
    }
    host::raise_fd_limit();
    let plan = Arc::new(Plan {
        addr,
        host: args.addr.clone(),
        post: args.post,
        server: args.server.clone(),
        connections: args.connections,
        depth: args.depth,
        rate: args.rate,
        warmup,
        duration,
        clients: args.clients,
        requests: args.requests,
        whatsat_pct: args.whatsat_pct,
        radius: args.radius.to_string(),
        max_results: args.max_results,
        // Client times start at the current second, so a rerun against the
        // same herd still sends records newer than the ones it stored.
        base_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1_700_000_000, |d| d.as_secs()),
        intervals: if args.hist_log.is_some() {
            duration.as_secs_f64().ceil() as usize
        } else {
            0
        },
        max_lag_ns: (args.max_send_lag_ms * 1e6) as u64,
        abort: AtomicBool::new(false),
        token_key: args
            .token_key
            .as_deref()
            .map(herd::pure::token::TokenKey::new),
        tls: args
            .tls_ca
            .as_deref()
            .map(|ca| tls::Client::new(ca, &args.addr))
            .transpose()?,
    });
    let executors = args.cpus.len().min(args.connections);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut go = Vec::with_capacity(executors);
    let mut handles = Vec::with_capacity(executors);
    for (e, &cpu) in args.cpus.iter().take(executors).enumerate() {
        let conns = e * args.connections / executors..(e + 1) * args.connections / executors;
        let (go_tx, go_rx) = mpsc::channel();
        go.push(go_tx);
        let (plan, ready) = (plan.clone(), ready_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-{e}"))
            .spawn(move || executor_main(plan, cpu, conns, ready, go_rx))
            .map_err(|e| anyhow!("starting an executor thread for CPU {cpu}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..executors {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(anyhow!("an executor stopped before it was ready"));
                break;
            }
        }
    }
    if let Some(e) = failure {
        // Dropping the start channels releases the executors still waiting.
        drop(go);
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }
    let t0 = Instant::now() + START_DELAY;
    let window_start = SystemTime::now() + START_DELAY + warmup;
    let (done_tx, done_rx) = mpsc::channel();
    let pid = args.pid;
    let sampler =
        std::thread::spawn(move || sample_cpus(t0 + warmup, t0 + warmup + duration, pid, done_rx));
    for tx in &go {
        let _ = tx.send(t0);
    }
    let mut merged = Stats::new(0)?;
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(stats)) => merged.merge(stats)?,
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(anyhow!("an executor thread panicked"));
            }
        }
    }
    let _ = done_tx.send(());
    let cpu_times = sampler.join().ok().flatten();
    if let Some(e) = failure {
        return Err(e);
    }
    // Replies are recorded in runs of equal latency (`record_replies`):
    // every one of them is in the histogram all the same.
    debug_assert_eq!(merged.latency.len(), merged.requests);
    // A run with --requests may end before its window does: its rate is
    // over the time it took.
    let window = match (args.requests, merged.last_reply) {
        (Some(_), Some(last)) => last
            .saturating_duration_since(t0 + warmup)
            .min(duration)
            .max(Duration::from_millis(1)),
        _ => duration,
    };
    let memory = match args.pid.map(report::read_memory) {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            eprintln!("herd-bench: server memory not reported: {e:#}");
            None
        }
        None => None,
    };
    if let Some(path) = &args.hist_log {
        let seconds = window.as_secs_f64().ceil() as usize;
        report::write_interval_log(
            path,
            &merged.per_second[..seconds.min(merged.per_second.len())],
            window_start,
            window,
            &args.label,
        )?;
    }
    let open = args.rate.is_some();
    // The server's own CPU time over the window, per request answered in
    // it: what one request costs the server, whoever was the bottleneck.
    let server_cpu = cpu_times.as_ref().and_then(|(before, after)| {
        let used = after.server?.checked_sub(before.server?)?;
        Some(ServerCpu {
            seconds: used.as_secs_f64(),
            us_per_request: (merged.requests > 0)
                .then(|| used.as_secs_f64() * 1e6 / merged.requests as f64),
        })
    });
    // With --pid, the server process's own share of its CPUs judges
    // saturation: a core kept busy by someone else is not the server busy.
    let process_busy = server_cpu
        .filter(|_| !args.server_cpus.is_empty())
        .map(|c| c.seconds * 100.0 / window.as_secs_f64() / args.server_cpus.len() as f64);
    let cpu = cpu_times.as_ref().map(|(before, after)| {
        let busy = |cpus: &[usize]| -> BTreeMap<usize, f64> {
            cpus.iter()
                .filter_map(|&c| after.cpus.busy_pct_since(&before.cpus, c).map(|p| (c, p)))
                .collect()
        };
        CpuUse::new(
            busy(&args.cpus[..executors]),
            busy(&args.server_cpus),
            process_busy,
            !open,
        )
    });
    let summary = Summary {
        label: &args.label,
        mode: if open { "open" } else { "closed" },
        protocol: match args.post {
            Some(PostApp::Owntracks) => "owntracks",
            None => "line",
        },
        connections: args.connections,
        depth: (!open).then_some(args.depth),
        target_rate: args.rate,
        achieved_rate: merged.requests as f64 / window.as_secs_f64(),
        requests: merged.requests,
        errors: merged.errors,
        latency: &merged.latency,
        send_lag: open.then_some(&merged.send_lag),
        memory,
        cpu,
        server_cpu,
        duration_s: window.as_secs_f64(),
    };
    summary.print(args.json_only);
    for s in &merged.samples {
        eprintln!("herd-bench: error: {s}");
    }
    Ok(merged.errors.total())
}
