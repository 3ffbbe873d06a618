//! `herd-bench load`: drives a server with IAMAT/WHATSAT requests in a
//! closed loop (fixed requests in flight) or an open loop (fixed schedule,
//! latency measured from the scheduled time, so a stalled server cannot hide
//! its stall: coordinated omission is corrected), validates every reply and
//! reports latency quantiles.
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
//! was the bottleneck.

use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};

use crate::check::{check_iamat, check_whatsat_against, reply_len, Expected, ReplyKind};
use crate::host::{self, CpuTimes};
use crate::report::{self, CpuUse, Summary};
use crate::stats::Stats;
use crate::uring::{Conns, Event};
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
}

/// How long to wait for outstanding replies once the run is over.
const DRAIN: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Delay between the last executor being connected and the first request,
/// so every executor starts on the same instant.
const START_DELAY: Duration = Duration::from_millis(50);
/// The longest one wait for completions may last, so the clock is looked
/// at often enough to end the run on time.
const TICK: Duration = Duration::from_millis(10);
/// Open loop: when the next request is due sooner than this, poll instead
/// of sleeping, since a kernel timer would wake the generator late.
const SPIN: Duration = Duration::from_micros(30);
/// Open loop: a send this late means the generator cannot keep its
/// schedule at all; it stops at once instead of queueing without bound.
const HOPELESS_LAG: Duration = Duration::from_secs(1);
/// Closed loop: completions a turn waits for (see `Conns::wait`); measured
/// on the 2-core VM against the bare server at 64 x 16: 1 gave 0.74 M/s,
/// 4 gave 1.0 M/s, 16 no more, 32 less.
const BATCH: usize = 4;
/// Receive buffer per connection (grows for large WHATSAT replies).
const INBUF: usize = 16 * 1024;
/// A server CPU less busy than this in a closed-loop run was waiting for
/// the generator: the run measured the generator, not the server.
pub const SATURATED_PCT: f64 = 95.0;

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
    /// Requests to send in all; `None`: until the end of the window.
    requests: Option<u64>,
    whatsat_pct: u32,
    radius: String,
    max_results: u32,
    base_secs: u64,
    intervals: usize,
    max_lag_ns: u64,
    /// Set when any executor finds the generator cannot keep up.
    abort: AtomicBool,
}

/// `total` split evenly over `n` parts; part `i` of it (the first
/// `total % n` parts take one more).
fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((i as u64) < total % n)
}

impl Plan {
    /// Clients owned by connection `c`.
    fn clients_of(&self, c: usize) -> u32 {
        share(self.clients, self.connections, c).min(u64::from(u32::MAX)) as u32
    }

    /// Requests connection `c` may send in all.
    fn quota_of(&self, c: usize) -> u64 {
        self.requests
            .map_or(u64::MAX, |n| share(n, self.connections, c))
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

/// A request that awaits its reply; `at` is when it was sent (closed loop)
/// or scheduled (open loop): latency is measured from it.
#[derive(Clone, Copy, Debug)]
struct Pending {
    whatsat: bool,
    /// Length of its echo in the connection's `echoes`.
    echo_len: u32,
    at: Instant,
}

/// One connection's requests: what it sends next and what it awaits.
struct Line {
    work: Workload,
    pending: VecDeque<Pending>,
    /// What the replies of `pending` must echo, back to back, from
    /// `echo_start`.
    echoes: Vec<u8>,
    echo_start: usize,
    /// Requests this connection may still send.
    quota: u64,
    alive: bool,
    /// The last WHATSAT body that passed validation (see check.rs).
    last_body: Vec<u8>,
}

impl Line {
    fn take_echo(&mut self, len: usize) {
        self.echo_start += len;
        // Compact now and then, not per reply.
        if self.echo_start >= 64 * 1024 && self.echo_start * 2 >= self.echoes.len() {
            self.echoes.drain(..self.echo_start);
            self.echo_start = 0;
        }
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

/// One executor's run: its connections, their requests, its statistics.
/// Everything here belongs to one thread; nothing is shared but the plan.
struct Driver {
    plan: Arc<Plan>,
    clock: Clock,
    conns: Conns,
    lines: Vec<Line>,
    stats: Stats,
    /// Requests sent and not yet answered, over all live connections.
    outstanding: usize,
    /// Closed loop: (connection, requests) queued this turn, stamped with
    /// the time just before they are handed to the kernel.
    fresh: Vec<(usize, usize)>,
    events: Vec<(usize, Event)>,
    /// Open loop: scheduled times of the requests queued this turn.
    dues: Vec<Instant>,
    /// Open loop: how late a request went out when the schedule was lost.
    hopeless: Option<Duration>,
    /// Connections with requests awaiting replies.
    busy_lines: usize,
}

impl Driver {
    /// Queues up to `n` requests on connection `c`, sent or scheduled at
    /// `at`; returns how many (fewer once its quota is spent).
    fn issue(&mut self, c: usize, n: usize, at: Instant) -> usize {
        let line = &mut self.lines[c];
        let out = self.conns.queue(c);
        let n = n.min(usize::try_from(line.quota).unwrap_or(usize::MAX));
        if line.pending.is_empty() && n > 0 {
            self.busy_lines += 1;
        }
        for _ in 0..n {
            let before = line.echoes.len();
            let request = line.work.next_request(out, &mut line.echoes);
            line.pending.push_back(Pending {
                whatsat: matches!(request, Request::Whatsat { .. }),
                echo_len: (line.echoes.len() - before) as u32,
                at,
            });
        }
        line.quota -= n as u64;
        self.outstanding += n;
        self.stats.sent += n as u64;
        n
    }

    /// Frames, validates and records every complete reply received on `c`;
    /// returns how many there were.
    fn on_received(&mut self, c: usize, now: Instant) -> usize {
        let Driver {
            plan,
            clock,
            conns,
            lines,
            stats,
            outstanding,
            busy_lines,
            ..
        } = self;
        let line = &mut lines[c];
        let Some(inbuf) = conns.received(c) else {
            return 0;
        };
        let mut answered = 0;
        while let Some(&p) = line.pending.front() {
            let kind = if p.whatsat {
                ReplyKind::Whatsat
            } else {
                ReplyKind::Iamat
            };
            let Some(len) = reply_len(inbuf.bytes(), kind) else {
                break;
            };
            let reply = &inbuf.bytes()[..len];
            let echo = &line.echoes[line.echo_start..line.echo_start + p.echo_len as usize];
            let expected = Expected {
                server: plan.server.as_deref().map(str::as_bytes),
                echo,
            };
            let verdict = if p.whatsat {
                check_whatsat_against(
                    reply,
                    &expected,
                    plan.max_results as usize,
                    &mut line.last_body,
                )
            } else {
                check_iamat(reply, &expected)
            };
            match verdict {
                Ok(()) => {
                    stats.validated += 1;
                    if p.at >= clock.warm_end && p.at < clock.end {
                        let ns = nanos(now.saturating_duration_since(p.at));
                        stats.requests += 1;
                        stats.latency.saturating_record(ns);
                        let second = (p.at - clock.warm_end).as_secs() as usize;
                        if let Some(h) = stats.per_second.get_mut(second) {
                            h.saturating_record(ns);
                        }
                        stats.last_reply = stats.last_reply.max(Some(now));
                    }
                }
                Err(why) => {
                    stats.errors.invalid += 1;
                    stats.sample(|| format!("connection {c}: {why}: {}", shown(reply)));
                }
            }
            inbuf.consume(len);
            line.take_echo(p.echo_len as usize);
            line.pending.pop_front();
            answered += 1;
        }
        *outstanding -= answered;
        if answered > 0 && line.pending.is_empty() {
            *busy_lines -= 1;
        }
        if line.pending.is_empty() && !inbuf.bytes().is_empty() {
            stats.errors.invalid += 1;
            let extra = shown(inbuf.bytes());
            stats.sample(|| format!("connection {c}: bytes after the last reply: {extra}"));
            let all = inbuf.bytes().len();
            inbuf.consume(all);
        }
        answered
    }

    /// Counts a failed connection and the replies it will never give.
    fn fail(&mut self, c: usize, what: &str) {
        let line = &mut self.lines[c];
        if !line.alive {
            return;
        }
        line.alive = false;
        line.quota = 0;
        let lost = line.pending.len();
        if lost > 0 {
            self.busy_lines -= 1;
        }
        line.pending.clear();
        self.outstanding -= lost;
        self.stats.errors.connection += 1;
        self.stats.errors.missing += lost as u64;
        self.stats.sample(|| format!("connection {c}: {what}"));
    }

    /// Counts the replies that did not come before the drain deadline.
    fn give_up(&mut self) {
        for (c, line) in self.lines.iter_mut().enumerate() {
            let lost = line.pending.len();
            if lost == 0 {
                continue;
            }
            line.pending.clear();
            self.busy_lines -= 1;
            self.stats.errors.missing += lost as u64;
            self.stats.sample(|| {
                format!("connection {c}: {lost} replies missing {DRAIN:?} after the run")
            });
        }
        self.outstanding = 0;
    }

    /// Sends what is queued on `c` and keeps a receive armed while it lives.
    fn pump(&mut self, c: usize) {
        if !self.lines[c].alive {
            return;
        }
        if let Err(e) = self.conns.flush(c).and_then(|()| self.conns.arm(c)) {
            self.fail(c, &e.to_string());
        }
    }

    /// Waits for completions (at most `timeout`) and handles them; the
    /// closed loop refills each connection with as many requests as it got
    /// replies.
    fn turn(&mut self, timeout: Duration, refill: bool) -> Result<()> {
        // Batch only while enough connections await replies for a batch to
        // come at all.
        let batch = if refill && self.busy_lines >= 4 * BATCH {
            BATCH
        } else {
            1
        };
        self.conns
            .wait(batch, timeout, &mut self.events)
            .map_err(|e| anyhow!("io_uring wait: {e}"))?;
        let now = Instant::now();
        let mut events = std::mem::take(&mut self.events);
        for &(c, event) in &events {
            match event {
                Event::Received(_) => {
                    let answered = self.on_received(c, now);
                    if refill && answered > 0 && now < self.clock.end {
                        let n = self.issue(c, answered, now);
                        if n > 0 {
                            self.fresh.push((c, n));
                        }
                    }
                    self.pump(c);
                }
                Event::Closed => self.fail(c, "server closed the connection"),
                Event::Failed(errno) => {
                    let e = std::io::Error::from_raw_os_error(errno);
                    self.fail(c, &format!("socket: {e}"));
                }
                Event::Sent => {}
            }
        }
        events.clear();
        self.events = events;
        Ok(())
    }

    /// Gives the requests queued this turn their send time: now, just
    /// before the next wait hands them to the kernel.
    fn stamp(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let at = Instant::now();
        for &(c, n) in &self.fresh {
            let pending = &mut self.lines[c].pending;
            let from = pending.len() - n;
            for p in pending.range_mut(from..) {
                p.at = at;
            }
        }
        self.fresh.clear();
    }

    /// Closed loop: `depth` requests in flight per connection; each reply
    /// lets one more out.
    fn closed(&mut self) -> Result<()> {
        let depth = self.plan.depth;
        sleep_until(self.clock.t0);
        for c in 0..self.lines.len() {
            let n = self.issue(c, depth, self.clock.t0);
            self.fresh.push((c, n));
            self.pump(c);
        }
        self.stamp();
        loop {
            let now = Instant::now();
            if self.outstanding == 0 {
                break;
            }
            if now >= self.clock.drain_end {
                self.give_up();
                break;
            }
            let timeout = TICK.min(self.clock.drain_end - now);
            self.turn(timeout, true)?;
            self.stamp();
        }
        Ok(())
    }

    /// Open loop: request `j` of this executor is due at a fixed time; it
    /// goes out at the first turn at or after that time, and its latency
    /// counts from the due time, so a stalled server cannot hide its stall.
    fn open(&mut self, first: usize) -> Result<()> {
        let plan = self.plan.clone();
        let rate = plan.rate.unwrap_or(1.0);
        let (all, mine) = (plan.connections as f64, self.lines.len());
        // Connection `first + k` sends at (first + k + m * all) / rate for
        // m = 0, 1, ...: every connection of the whole run staggered
        // evenly. Merged over this executor's connections, in order.
        let t0 = self.clock.t0;
        let due = |j: usize| {
            let slot = (first + j % mine) as f64 + (j / mine) as f64 * all;
            t0 + Duration::from_nanos((slot * 1e9 / rate) as u64)
        };
        for c in 0..mine {
            self.pump(c);
        }
        let mut j = 0usize;
        let mut lag_checked = plan.warmup.is_zero();
        let mut stopped = false;
        loop {
            let now = Instant::now();
            if !lag_checked && now >= self.clock.warm_end {
                lag_checked = true;
                let lag = &self.stats.warmup_lag;
                if !lag.is_empty() && lag.value_at_quantile(0.99) > plan.max_lag_ns {
                    plan.abort.store(true, Ordering::Relaxed);
                }
            }
            stopped |= plan.abort.load(Ordering::Relaxed);
            let mut next = due(j);
            while !stopped && next <= now && next < self.clock.end {
                let c = j % mine;
                if self.lines[c].alive && self.issue(c, 1, next) == 1 {
                    self.dues.push(next);
                }
                j += 1;
                next = due(j);
            }
            let sending = !stopped && next < self.clock.end;
            if !self.dues.is_empty() {
                for c in 0..mine {
                    if self.conns.writing(c) {
                        self.pump(c);
                    }
                }
                self.record_lags();
            }
            if !sending && self.outstanding == 0 {
                break;
            }
            if now >= self.clock.drain_end {
                self.give_up();
                break;
            }
            // Sleep until the next request is due, but poll when it is due
            // sooner than a timer could wake this thread. Never spin for
            // long: on loopback much of the network work runs in softirq
            // threads on this same CPU, and a spinning generator starves
            // them (measured at 40 k/s: send-lag p99 3 ms always polling,
            // 0.1 to 2 ms like this, on this noisy VM).
            let wake = if sending { next } else { self.clock.drain_end };
            let mut timeout = wake.saturating_duration_since(Instant::now()).min(TICK);
            if timeout < SPIN {
                timeout = Duration::ZERO;
            }
            self.turn(timeout, false)?;
        }
        if let Some(lag) = self.hopeless.take() {
            bail!(
                "the generator cannot keep up with {rate} requests/s on this executor's CPU: \
                 a request went out {:.0} ms late; use more --cpus, fewer connections or a \
                 lower --rate",
                lag.as_secs_f64() * 1e3
            );
        }
        if plan.abort.load(Ordering::Relaxed) && lag_checked {
            let p99 = self.stats.warmup_lag.value_at_quantile(0.99);
            bail!(
                "the generator cannot keep up with {rate} requests/s on this executor's CPU: \
                 warm-up send-lag p99 is {:.1} µs (limit {:.1} µs); use more --cpus, fewer \
                 connections or a lower --rate",
                report::micros(p99),
                report::micros(plan.max_lag_ns),
            );
        }
        Ok(())
    }

    /// Records how late the requests queued this turn go out.
    fn record_lags(&mut self) {
        let sent_at = Instant::now();
        for &d in &self.dues {
            let lag = sent_at.saturating_duration_since(d);
            if lag > HOPELESS_LAG && self.hopeless.is_none() {
                self.hopeless = Some(lag);
                self.plan.abort.store(true, Ordering::Relaxed);
            }
            if d < self.clock.warm_end {
                self.stats.warmup_lag.saturating_record(nanos(lag));
            } else {
                self.stats.send_lag.saturating_record(nanos(lag));
            }
        }
        self.dues.clear();
    }
}

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
            let stream = TcpStream::connect_timeout(&plan.addr, CONNECT_TIMEOUT)
                .map_err(|e| anyhow!("cannot connect to {} (connection {c}): {e}", plan.addr))?;
            // Requests are written in batches already; Nagle would only
            // delay them.
            let _ = stream.set_nodelay(true);
            streams.push(stream);
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
            work: Workload::new(
                c,
                plan.clients_of(c),
                plan.base_secs,
                plan.whatsat_pct,
                plan.radius.clone(),
                plan.max_results,
            ),
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

/// Reads /proc/stat at the start of the measured window and again at its
/// end, or as soon as `done` says the run ended early; on a thread of its
/// own, so the executors never wait for it.
fn sample_cpus(
    start: Instant,
    end: Instant,
    done: mpsc::Receiver<()>,
) -> Option<(CpuTimes, CpuTimes)> {
    sleep_until(start);
    let first = CpuTimes::read().ok()?;
    let _ = done.recv_timeout(end.saturating_duration_since(Instant::now()));
    let second = CpuTimes::read().ok()?;
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
    let sampler =
        std::thread::spawn(move || sample_cpus(t0 + warmup, t0 + warmup + duration, done_rx));
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
    let cpu = cpu_times.map(|(before, after)| {
        let busy = |cpus: &[usize]| -> BTreeMap<usize, f64> {
            cpus.iter()
                .filter_map(|&c| after.busy_pct_since(&before, c).map(|p| (c, p)))
                .collect()
        };
        CpuUse::new(
            busy(&args.cpus[..executors]),
            busy(&args.server_cpus),
            !open,
        )
    });
    let summary = Summary {
        label: &args.label,
        mode: if open { "open" } else { "closed" },
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
        duration_s: window.as_secs_f64(),
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
            requests: Some(7),
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
        let quotas: Vec<u64> = (0..4).map(|c| p.quota_of(c)).collect();
        assert_eq!(quotas, [2, 2, 2, 1]);
    }
}
