//! `herd-bench load`: drives a server with IAMAT/WHATSAT requests in a
//! closed loop (fixed requests in flight) or an open loop (fixed schedule,
//! latency measured from the scheduled time, so a stalled server cannot hide
//! its stall: coordinated omission is corrected), validates every reply and
//! reports latency quantiles.
//!
//! One pinned glommio executor per `--cpus` entry; each owns its connections
//! and its `Stats` outright (no locks, no atomics on the hot path) and hands
//! them back through its join handle. Every loop is bounded by the run's
//! clock: nothing waits past the end of the run plus the 2 s drain.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

use crate::check::{check_iamat, check_whatsat, reply_len, Expected, ReplyKind};
use crate::host;
use crate::report::{self, Summary};
use crate::stats::Stats;
use crate::wire::{sleep_until, until, InBuf};
use crate::workload::{Request, Workload};

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
    /// Server process whose VmRSS/VmHWM to report at the end.
    #[arg(long)]
    pub pid: Option<i32>,
    /// Text naming this run in the report.
    #[arg(long, default_value = "load")]
    pub label: String,
    /// Print only the JSON line.
    #[arg(long)]
    pub json_only: bool,
    /// Let each executor spin this many microseconds before it sleeps: its
    /// wake-ups get cheaper (less generator latency in the figures) at the
    /// cost of a busy CPU. 0: sleep at once, like the server.
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Open loop: abort (exit 2) when the warm-up send-lag p99 exceeds this
    /// many milliseconds, as the generator then cannot keep its schedule.
    #[arg(long, default_value_t = 1.0)]
    pub max_send_lag_ms: f64,
}

/// How long to wait for outstanding replies once the run is over.
const DRAIN: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Delay between the last executor being connected and the first request,
/// so every executor starts on the same instant.
const START_DELAY: Duration = Duration::from_millis(50);
/// While an open-loop sender may still write, its reader wakes this often
/// to notice that the sender stopped.
const READER_TICK: Duration = Duration::from_millis(50);

/// What every executor needs to know; shared read-only across threads.
struct Plan {
    addr: SocketAddr,
    server: Option<String>,
    connections: usize,
    depth: usize,
    rate: Option<f64>,
    warmup: Duration,
    duration: Duration,
    clients: u64,
    whatsat_pct: u32,
    radius: String,
    max_results: u32,
    base_secs: u64,
    intervals: usize,
    max_lag_ns: u64,
    /// Set when any executor finds the generator cannot keep up.
    abort: AtomicBool,
}

impl Plan {
    /// Clients owned by connection `c`: an even split, the first
    /// `clients % connections` connections taking one more.
    fn clients_of(&self, c: usize) -> u32 {
        let n = self.connections as u64;
        let share = self.clients / n + u64::from((c as u64) < self.clients % n);
        share.min(u64::from(u32::MAX)) as u32
    }
}

/// The run's instants, the same on every executor.
#[derive(Clone, Copy, Debug)]
struct Clock {
    t0: Instant,
    warm_end: Instant,
    end: Instant,
    drain_end: Instant,
}

/// One executor's shared state: its plan, clock and statistics.
struct Env {
    plan: Arc<Plan>,
    clock: Clock,
    stats: RefCell<Stats>,
}

/// A request that awaits its reply; `at` is when it was sent (closed loop)
/// or scheduled (open loop): latency is measured from it.
#[derive(Clone, Copy, Debug)]
struct Pending {
    request: Request,
    at: Instant,
}

/// Buffers for rebuilding what a reply must echo.
#[derive(Default)]
struct Scratch {
    id: String,
    location: String,
    time: String,
}

fn kind(request: Request) -> ReplyKind {
    match request {
        Request::Iamat { .. } => ReplyKind::Iamat,
        Request::Whatsat { .. } => ReplyKind::Whatsat,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A reply, shortened and made printable for an error sample.
fn shown(reply: &[u8]) -> String {
    let cut = &reply[..reply.len().min(160)];
    format!("{:?}", String::from_utf8_lossy(cut))
}

impl Env {
    /// Validates one reply and records it.
    fn on_reply(
        &self,
        c: usize,
        work: &Workload,
        p: &Pending,
        reply: &[u8],
        now: Instant,
        s: &mut Scratch,
    ) {
        work.expected(p.request, &mut s.id, &mut s.location, &mut s.time);
        let expected = Expected {
            server: self.plan.server.as_deref(),
            id: &s.id,
            location: &s.location,
            time: &s.time,
        };
        let verdict = match p.request {
            Request::Iamat { .. } => check_iamat(reply, &expected),
            Request::Whatsat { .. } => {
                check_whatsat(reply, &expected, self.plan.max_results as usize)
            }
        };
        let mut stats = self.stats.borrow_mut();
        match verdict {
            Ok(()) => {
                stats.validated += 1;
                if p.at >= self.clock.warm_end && p.at < self.clock.end {
                    let ns = nanos(now.saturating_duration_since(p.at));
                    stats.requests += 1;
                    stats.latency.saturating_record(ns);
                    let second = (p.at - self.clock.warm_end).as_secs() as usize;
                    if let Some(h) = stats.per_second.get_mut(second) {
                        h.saturating_record(ns);
                    }
                }
            }
            Err(why) => {
                stats.errors.invalid += 1;
                stats.sample(|| format!("connection {c}: {why}: {}", shown(reply)));
            }
        }
    }

    /// Counts a failed connection and the replies it will never give.
    fn connection_failed(&self, c: usize, what: &str, outstanding: usize) {
        let mut stats = self.stats.borrow_mut();
        stats.errors.connection += 1;
        stats.errors.missing += outstanding as u64;
        stats.sample(|| format!("connection {c}: {what}"));
    }

    /// Counts replies that did not come before the drain deadline.
    fn replies_missing(&self, c: usize, outstanding: usize) {
        if outstanding == 0 {
            return;
        }
        let mut stats = self.stats.borrow_mut();
        stats.errors.missing += outstanding as u64;
        stats.sample(|| {
            format!("connection {c}: {outstanding} replies missing {DRAIN:?} after the run")
        });
    }
}

/// Closed loop on one connection: `depth` requests in flight; each reply
/// read lets one more out, written in one batch per read.
async fn closed_loop(env: Rc<Env>, c: usize, mut stream: TcpStream, mut work: Workload) {
    let clock = env.clock;
    let depth = env.plan.depth;
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(depth);
    let mut out = Vec::with_capacity(depth * 96);
    let mut inbuf = InBuf::new(64 * 1024);
    let mut scratch = Scratch::default();
    sleep_until(clock.t0).await;
    let mut answered = depth;
    loop {
        if answered > 0 && Instant::now() < clock.end {
            out.clear();
            for _ in 0..answered {
                let request = work.next_request(&mut out);
                pending.push_back(Pending {
                    request,
                    at: clock.t0,
                });
            }
            // Stamp after formatting: the requests leave now.
            let at = Instant::now();
            for p in pending.iter_mut().rev().take(answered) {
                p.at = at;
            }
            env.stats.borrow_mut().sent += answered as u64;
            match until(clock.drain_end, stream.write_all(&out)).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    return env.connection_failed(c, &format!("write: {e}"), pending.len())
                }
                None => return env.connection_failed(c, "write timed out", pending.len()),
            }
        }
        if pending.is_empty() {
            break;
        }
        let Some(spare) = inbuf.spare() else {
            return env.connection_failed(c, "reply too large to frame", pending.len());
        };
        let n = match until(clock.drain_end, stream.read(spare)).await {
            None => return env.replies_missing(c, pending.len()),
            Some(Ok(0)) => {
                return env.connection_failed(c, "server closed the connection", pending.len())
            }
            Some(Err(e)) => return env.connection_failed(c, &format!("read: {e}"), pending.len()),
            Some(Ok(n)) => n,
        };
        inbuf.filled(n);
        let now = Instant::now();
        answered = 0;
        while let Some(p) = pending.front() {
            let Some(len) = reply_len(inbuf.bytes(), kind(p.request)) else {
                break;
            };
            env.on_reply(c, &work, p, &inbuf.bytes()[..len], now, &mut scratch);
            inbuf.consume(len);
            pending.pop_front();
            answered += 1;
        }
    }
    if !inbuf.bytes().is_empty() {
        let mut stats = env.stats.borrow_mut();
        stats.errors.invalid += 1;
        stats.sample(|| format!("connection {c}: bytes after the last reply"));
    }
}

/// What an open-loop connection's sender and reader share.
struct OpenShared {
    pending: RefCell<VecDeque<Pending>>,
    /// The sender has sent its last request.
    sender_done: Cell<bool>,
    /// Stop sending: the reader is gone or the run aborted.
    stop: Cell<bool>,
    /// A connection error was counted already (count it once).
    broken: Cell<bool>,
}

impl OpenShared {
    fn connection_failed(&self, env: &Env, c: usize, what: &str) {
        self.stop.set(true);
        if !self.broken.replace(true) {
            env.connection_failed(c, what, 0);
        }
    }
}

/// Open loop on one connection: a sender task keeps the timetable while
/// this task reads and checks replies, so neither waits for the other.
async fn open_loop(env: Rc<Env>, c: usize, stream: TcpStream, work: Workload) {
    let (reader, writer) = futures_lite::io::split(stream);
    let shared = Rc::new(OpenShared {
        pending: RefCell::new(VecDeque::new()),
        sender_done: Cell::new(false),
        stop: Cell::new(false),
        broken: Cell::new(false),
    });
    // The reader only rebuilds echoes, which depend on the fixed parts.
    let echo = work.clone();
    let sender = glommio::spawn_local(open_sender(env.clone(), c, writer, work, shared.clone()));
    open_reader(&env, c, reader, &echo, &shared).await;
    sender.await;
}

async fn open_sender(
    env: Rc<Env>,
    c: usize,
    mut writer: WriteHalf<TcpStream>,
    mut work: Workload,
    shared: Rc<OpenShared>,
) {
    let clock = env.clock;
    let plan = &env.plan;
    let rate = plan.rate.unwrap_or(1.0);
    let interval_ns = plan.connections as f64 * 1e9 / rate;
    // Connections are staggered evenly over one interval.
    let offset_ns = c as f64 * 1e9 / rate;
    let due = |i: u64| clock.t0 + Duration::from_nanos((offset_ns + i as f64 * interval_ns) as u64);
    let mut i: u64 = 0;
    let mut out = Vec::with_capacity(4096);
    let mut dues: Vec<Instant> = Vec::new();
    loop {
        if shared.stop.get() || plan.abort.load(Ordering::Relaxed) {
            break;
        }
        let next = due(i);
        if next >= clock.end {
            break;
        }
        let now = Instant::now();
        if next > now {
            sleep_until(next).await;
            continue;
        }
        out.clear();
        dues.clear();
        {
            let mut pending = shared.pending.borrow_mut();
            loop {
                let d = due(i);
                if d > now || d >= clock.end {
                    break;
                }
                let request = work.next_request(&mut out);
                pending.push_back(Pending { request, at: d });
                dues.push(d);
                i += 1;
            }
        }
        let sent_at = Instant::now();
        {
            let mut stats = env.stats.borrow_mut();
            stats.sent += dues.len() as u64;
            for &d in &dues {
                let lag = nanos(sent_at.saturating_duration_since(d));
                if d < clock.warm_end {
                    stats.warmup_lag.saturating_record(lag);
                } else {
                    stats.send_lag.saturating_record(lag);
                }
            }
        }
        match until(clock.drain_end, writer.write_all(&out)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                shared.connection_failed(&env, c, &format!("write: {e}"));
                break;
            }
            None => {
                shared.connection_failed(&env, c, "write timed out");
                break;
            }
        }
    }
    shared.sender_done.set(true);
}

async fn open_reader(
    env: &Env,
    c: usize,
    mut reader: ReadHalf<TcpStream>,
    work: &Workload,
    shared: &OpenShared,
) {
    let clock = env.clock;
    let mut inbuf = InBuf::new(64 * 1024);
    let mut scratch = Scratch::default();
    loop {
        let sender_done = shared.sender_done.get();
        if shared.pending.borrow().is_empty() && (sender_done || shared.stop.get()) {
            break;
        }
        let now = Instant::now();
        let deadline = if sender_done || now >= clock.end {
            clock.drain_end
        } else {
            (now + READER_TICK).min(clock.end)
        };
        let Some(spare) = inbuf.spare() else {
            shared.connection_failed(env, c, "reply too large to frame");
            break;
        };
        let n = match until(deadline, reader.read(spare)).await {
            None if deadline == clock.drain_end => break,
            None => continue,
            Some(Ok(0)) => {
                shared.connection_failed(env, c, "server closed the connection");
                break;
            }
            Some(Err(e)) => {
                shared.connection_failed(env, c, &format!("read: {e}"));
                break;
            }
            Some(Ok(n)) => n,
        };
        inbuf.filled(n);
        let now = Instant::now();
        let mut pending = shared.pending.borrow_mut();
        while let Some(p) = pending.front() {
            let Some(len) = reply_len(inbuf.bytes(), kind(p.request)) else {
                break;
            };
            env.on_reply(c, work, p, &inbuf.bytes()[..len], now, &mut scratch);
            inbuf.consume(len);
            pending.pop_front();
        }
    }
    // Whatever is still pending will never be answered now.
    shared.stop.set(true);
    let outstanding = shared.pending.borrow().len();
    env.replies_missing(c, outstanding);
    if shared.pending.borrow().is_empty() && !inbuf.bytes().is_empty() {
        let mut stats = env.stats.borrow_mut();
        stats.errors.invalid += 1;
        stats.sample(|| format!("connection {c}: bytes after the last reply"));
    }
}

/// Body of one executor: connect its connections, report ready, wait for
/// the common start, run them all, return its statistics.
async fn executor_main(
    plan: Arc<Plan>,
    conns: Range<usize>,
    ready: mpsc::Sender<Result<()>>,
    go: mpsc::Receiver<Instant>,
) -> Result<Stats> {
    let mut streams = Vec::with_capacity(conns.len());
    for c in conns.clone() {
        match TcpStream::connect_timeout(plan.addr, CONNECT_TIMEOUT).await {
            Ok(stream) => {
                // Requests are written in batches already; Nagle would only
                // delay them.
                let _ = stream.set_nodelay(true);
                streams.push((c, stream));
            }
            Err(e) => {
                let e = anyhow!("cannot connect to {} (connection {c}): {e}", plan.addr);
                let _ = ready.send(Err(anyhow!("{e}")));
                return Err(e);
            }
        }
    }
    let _ = ready.send(Ok(()));
    // Blocking this thread is fine: nothing runs on it until the start.
    let t0 = go
        .recv()
        .map_err(|_| anyhow!("start cancelled: another executor failed"))?;
    let warm_end = t0 + plan.warmup;
    let end = warm_end + plan.duration;
    let env = Rc::new(Env {
        plan: plan.clone(),
        clock: Clock {
            t0,
            warm_end,
            end,
            drain_end: end + DRAIN,
        },
        stats: RefCell::new(Stats::new(plan.intervals)?),
    });
    let lag_abort: Rc<Cell<Option<u64>>> = Rc::new(Cell::new(None));
    if plan.rate.is_some() && !plan.warmup.is_zero() {
        let (env, lag_abort) = (env.clone(), lag_abort.clone());
        glommio::spawn_local(async move {
            sleep_until(env.clock.warm_end).await;
            let p99 = {
                let stats = env.stats.borrow();
                (!stats.warmup_lag.is_empty()).then(|| stats.warmup_lag.value_at_quantile(0.99))
            };
            if let Some(p99) = p99.filter(|&p| p > env.plan.max_lag_ns) {
                lag_abort.set(Some(p99));
                env.plan.abort.store(true, Ordering::Relaxed);
            }
        })
        .detach();
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|(c, stream)| {
            let work = Workload::new(
                c,
                plan.clients_of(c),
                plan.base_secs,
                plan.whatsat_pct,
                plan.radius.clone(),
                plan.max_results,
            );
            let env = env.clone();
            if plan.rate.is_some() {
                glommio::spawn_local(open_loop(env, c, stream, work))
            } else {
                glommio::spawn_local(closed_loop(env, c, stream, work))
            }
        })
        .collect();
    for task in tasks {
        task.await;
    }
    if let Some(p99) = lag_abort.get() {
        bail!(
            "the generator cannot keep up with {} requests/s on this executor's CPU: \
             warm-up send-lag p99 is {:.1} µs (limit {:.1} µs); use more --cpus, fewer \
             connections or a lower --rate",
            plan.rate.unwrap_or(0.0),
            report::micros(p99),
            report::micros(plan.max_lag_ns),
        );
    }
    let stats = env.stats.replace(Stats::new(0)?);
    Ok(stats)
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
    if !(args.radius > 0.0 && args.radius <= 50.0) {
        bail!("--radius must be in (0, 50] km");
    }
    if !(args.max_send_lag_ms.is_finite() && args.max_send_lag_ms >= 0.0) {
        bail!("--max-send-lag-ms must be a number >= 0");
    }
    host::check_cpus(&args.cpus)?;
    let addr = host::resolve(&args.addr)?;
    if let Some(pid) = args.pid {
        report::read_memory(pid)?;
    }
    host::raise_fd_limit();
    let plan = Arc::new(Plan {
        addr,
        server: args.server.clone(),
        connections: args.connections,
        depth: args.depth,
        rate: args.rate,
        warmup,
        duration,
        clients: args.clients,
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
        let mut builder =
            LocalExecutorBuilder::new(Placement::Fixed(cpu)).name(&format!("bench-{e}"));
        if args.spin_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(args.spin_us));
        }
        let handle = builder
            .spawn(move || executor_main(plan, conns, ready, go_rx))
            .map_err(|e| anyhow!("starting an executor on CPU {cpu}: {e}"))?;
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
            Err(e) => {
                failure.get_or_insert(anyhow!("executor failed: {e}"));
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let memory = match args.pid.map(report::read_memory) {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            eprintln!("herd-bench: server memory not reported: {e:#}");
            None
        }
        None => None,
    };
    if let Some(path) = &args.hist_log {
        report::write_interval_log(
            path,
            &merged.per_second,
            window_start,
            duration,
            &args.label,
        )?;
    }
    let open = args.rate.is_some();
    let summary = Summary {
        label: &args.label,
        mode: if open { "open" } else { "closed" },
        connections: args.connections,
        depth: (!open).then_some(args.depth),
        target_rate: args.rate,
        achieved_rate: merged.requests as f64 / duration.as_secs_f64(),
        requests: merged.requests,
        errors: merged.errors,
        latency: &merged.latency,
        send_lag: open.then_some(&merged.send_lag),
        memory,
        duration_s: duration.as_secs_f64(),
    };
    summary.print(args.json_only);
    for s in &merged.samples {
        eprintln!("herd-bench: error: {s}");
    }
    Ok(merged.errors.total())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(clients: u64, connections: usize) -> Plan {
        Plan {
            addr: "127.0.0.1:1".parse().unwrap(),
            server: None,
            connections,
            depth: 1,
            rate: None,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            clients,
            whatsat_pct: 0,
            radius: "10".into(),
            max_results: 5,
            base_secs: 1_700_000_000,
            intervals: 0,
            max_lag_ns: 1_000_000,
            abort: AtomicBool::new(false),
        }
    }

    #[test]
    fn clients_are_partitioned_across_connections() {
        let p = plan(10, 4);
        let shares: Vec<u32> = (0..4).map(|c| p.clients_of(c)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        assert_eq!(shares.iter().map(|&s| u64::from(s)).sum::<u64>(), 10);
    }
}
