//! Start-up of one server: one pinned glommio executor per shard, each
//! listening on the same port (SO_REUSEPORT), joined by a channel mesh.
//!
//! Owns the order things start in and the start-up summary. Holds no
//! protocol logic: shards, routing, links and connections do the work.

use crate::catchup::Marks;
use crate::config::{Config, PlacesSource};
use crate::connection::{self, Admission, Port};
use crate::link::{self, LinkSettings};
use crate::link_session::Liveness;
use crate::link_tls::LinkTls;
use crate::nearby_key::Grid;
use crate::per_ip::PerIp;
use crate::places::{AnswerSettings, CachedOfflinePlaces, Clock, Places};
use crate::ring::Ring;
use crate::route::{self, Router, ToOwner};
use crate::shard::Shard;
use crate::upstream::{Upstream, UpstreamSettings};
use anyhow::{anyhow, bail, Context};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Memory each executor registers with io_uring for file I/O (unused).
const IO_MEMORY: usize = 512 * 1024;

/// How long a stopping server may take to finish replies and flush floods.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// How to run one server of the herd.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The server's name in the config.
    pub name: String,
    /// The herd.
    pub config: Config,
    /// The folder of the config file, which relative paths in it start from.
    pub config_dir: PathBuf,
    /// Shards to run; `None` means one per usable core.
    pub shards: Option<usize>,
    /// Directory for `<name>.log`.
    pub log_dir: PathBuf,
    /// tracing filter, e.g. `info` or `debug`.
    pub log_level: String,
    /// CPUs to pin shards to, in order; `None` means the affinity mask.
    pub cpus: Option<Vec<usize>>,
}

/// What every shard needs to start; all `Send`, copied into each executor.
#[derive(Clone)]
struct ShardPlan {
    name: String,
    listen: SocketAddr,
    /// Where neighbours' links come in.
    peer_listen: SocketAddr,
    /// Each neighbour and its peer address.
    neighbours: Vec<(String, SocketAddr)>,
    secret: Option<String>,
    config: Config,
    shards: usize,
    marks: Arc<Marks>,
    /// The Places upstream, or `None` for the offline sample data.
    places: Option<UpstreamSettings>,
    /// Mutual TLS for links, when the herd has a `tls` section.
    tls: Option<LinkTls>,
    /// Client connections per source address, shared by all shards; `None`
    /// when there is no per-IP limit.
    per_ip: Option<Arc<PerIp>>,
}

/// The CPUs this process may run on (its affinity mask).
pub fn usable_cpus() -> anyhow::Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .context("reading the CPU affinity mask")?;
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect();
    if cpus.is_empty() {
        bail!("no usable CPU in the affinity mask");
    }
    Ok(cpus)
}

/// Runs one server until the process is stopped.
pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let me = opts
        .config
        .server(&opts.name)
        .ok_or_else(|| anyhow!("{} is not a server of this herd", opts.name))?
        .clone();
    let listen = opts
        .config
        .listen_addr(&me.name)
        .ok_or_else(|| anyhow!("{}: bad listen address {}", me.name, me.listen))?;
    let peer_listen = opts
        .config
        .peer_addr(&me.name)
        .ok_or_else(|| anyhow!("{}: no usable peer address", me.name))?;
    let neighbours = me
        .neighbours
        .iter()
        .map(|n| {
            let addr = opts
                .config
                .peer_addr(n)
                .ok_or_else(|| anyhow!("neighbour {n} has no usable peer address"))?;
            Ok((n.clone(), addr))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let usable = usable_cpus()?;
    let cpus = match &opts.cpus {
        None => usable,
        Some(asked) => {
            if let Some(cpu) = asked.iter().find(|c| !usable.contains(c)) {
                bail!(
                    "{}: CPU {cpu} is not in this process's affinity mask {usable:?}",
                    me.name
                );
            }
            asked.clone()
        }
    };
    if cpus.is_empty() {
        bail!("{}: --cpus names no CPU", me.name);
    }
    let shards = opts.shards.unwrap_or(cpus.len()).max(1);
    // SO_REUSEPORT would let a second copy of this server share the port
    // silently, so a listener that already answers there is an error. (A
    // plain bind cannot tell: connections of a killed predecessor still hold
    // the port until they time out.) A killed predecessor's listener can
    // outlive it briefly while the kernel tears its io_uring down, so only a
    // listener that keeps answering for two seconds counts.
    for addr in [listen, peer_listen] {
        let answers =
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        let mut answered = 0;
        while answered < 20 && answers() {
            answered += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        if answered == 20 {
            bail!(
                "{}: something already listens on {addr}; is this server running already?",
                me.name
            );
        }
    }
    let places = places_settings(&opts.config)?;
    // Loaded and checked once, before anything listens: a wrong file is a
    // start-up error that names it.
    let tls = match opts.config.tls_paths(&me.name, &opts.config_dir) {
        None => None,
        Some(paths) => {
            Some(LinkTls::load(&paths, &me.name).map_err(|e| anyhow!("{}: {e}", me.name))?)
        }
    };
    let _log_guard = crate::logging::init(&opts.log_dir, &me.name, &opts.log_level)?;
    let plan = ShardPlan {
        name: me.name.clone(),
        listen,
        peer_listen,
        neighbours,
        secret: opts.config.secret.clone(),
        config: opts.config.clone(),
        shards,
        marks: Arc::new(Marks::new()),
        places: places.clone(),
        tls,
        per_ip: opts
            .config
            .limits
            .max_connections_per_ip
            .map(|limit| Arc::new(PerIp::new(limit))),
    };
    let stop = stop_on_signals()?;
    let mesh = (shards > 1).then(|| MeshBuilder::full(shards, opts.config.limits.channel_capacity));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
    let mut executors = Vec::with_capacity(shards);
    for i in 0..shards {
        let cpu = cpus[i % cpus.len()];
        let plan = plan.clone();
        let mesh = mesh.clone();
        let ready = ready_tx.clone();
        let stop = stop.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("herd-{i}"))
            // glommio reserves this for DMA file I/O, which herd does not
            // do; its 10 MiB default would be pinned memory for nothing.
            .io_memory(IO_MEMORY)
            .spin_before_park(Duration::from_micros(
                opts.config.limits.spin_before_park_us,
            ))
            .spawn(move || async move {
                if let Err(e) = run_shard(plan, mesh, ready.clone(), stop).await {
                    let _ = ready.send(Err(format!("{e:#}")));
                }
            })
            .map_err(|e| anyhow!("starting the executor for shard {i} on CPU {cpu}: {e}"))?;
        executors.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("{}: a shard failed to start: {e}", me.name),
            Err(_) => {
                // An executor that could not even start returns its error
                // from its thread; io_uring set-up is the usual cause.
                let why = executors
                    .into_iter()
                    .filter_map(|h| h.join().err())
                    .map(|e| e.to_string())
                    .next()
                    .unwrap_or_else(|| "no reason given".to_owned());
                bail!(
                    "{}: could not start the io_uring executors: {why}\n\
                     herd needs io_uring: Linux 5.8 or later, sysctl kernel.io_uring_disabled=0, \
                     a seccomp profile that allows io_uring_setup/io_uring_enter/io_uring_register, \
                     and enough locked memory (ulimit -l: glommio asks for at least 512 KiB). \
                     See tuning.md, section io_uring.",
                    me.name
                )
            }
        }
    }
    let places_note = match &places {
        None => "offline sample data (not real places)".to_owned(),
        // The key is never printed.
        Some(p) => format!(
            "{} (key {})",
            p.base_url,
            if p.key.is_some() { "set" } else { "not set" }
        ),
    };
    let neighbours = if me.neighbours.is_empty() {
        "none".to_owned()
    } else {
        me.neighbours.join(", ")
    };
    eprintln!(
        "herd {} listening on {listen} (links on {peer_listen}) with {shards} shard(s) on CPUs {:?}; \
         neighbours {neighbours}; \
         places {places_note}; log {}",
        me.name,
        &cpus[..shards.min(cpus.len())],
        opts.log_dir.join(format!("{}.log", me.name)).display(),
    );
    tracing::info!(server = %me.name, %listen, %peer_listen, shards, "started");
    for handle in executors {
        handle
            .join()
            .map_err(|e| anyhow!("shard executor failed: {e}"))?;
    }
    tracing::info!(server = %me.name, "stopped");
    eprintln!("herd {} stopped", me.name);
    Ok(())
}

/// The Places client settings from the config and `HERD_PLACES_KEY`, or
/// `None` for the offline provider.
fn places_settings(config: &Config) -> anyhow::Result<Option<UpstreamSettings>> {
    let p = &config.places;
    let source = p
        .resolve(std::env::var("HERD_PLACES_KEY").ok())
        .map_err(|e| anyhow!(e))?;
    let PlacesSource::Http { base_url, key } = source else {
        return Ok(None);
    };
    let extra_ca_pem = match &p.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading places.ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let settings = UpstreamSettings {
        base_url,
        key,
        timeout: Duration::from_millis(config.limits.places_timeout_ms),
        pool_connections: p.pool_connections,
        max_in_flight: p.max_in_flight,
        cache_entries: p.cache_entries,
        cache_ttl: Duration::from_millis(p.cache_ttl_ms),
        retries: p.retries,
        extra_ca_pem,
    };
    // Fail at start-up, not at the first WHATSAT, on a bad URL or CA file.
    Upstream::new(settings.clone()).map_err(|e| anyhow!("places upstream: {e}"))?;
    Ok(Some(settings))
}

/// The first SIGTERM or SIGINT asks the shards to stop gracefully; a
/// second one exits at once.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("herd-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen == 1 {
                    tracing::info!(signal, "stopping: finishing replies and flushing floods");
                    eprintln!("herd: signal {signal}: stopping (a second signal exits at once)");
                    flag.store(true, Ordering::SeqCst);
                } else {
                    eprintln!("herd: second signal: exiting now");
                    std::process::exit(130);
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(stop)
}

/// One shard: its links, its owner service, then its accept loop.
async fn run_shard(
    plan: ShardPlan,
    mesh: Option<MeshBuilder<ToOwner, glommio::channels::channel_mesh::Full>>,
    ready: mpsc::Sender<Result<usize, String>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (senders, receivers) = match mesh {
        Some(mesh) => {
            let (s, r) = mesh
                .join()
                .await
                .map_err(|e| anyhow!("joining the shard mesh: {e}"))?;
            (Some(s), Some(r))
        }
        None => (None, None),
    };
    // The mesh numbers shards in join order; that number is the shard's
    // place on the ring, so every shard agrees on who owns what.
    let id = senders.as_ref().map_or(0, |s| s.peer_id());
    let limits = &plan.config.limits;
    let me: Rc<str> = plan.name.as_str().into();
    let neighbours: Vec<(Rc<str>, SocketAddr)> = plan
        .neighbours
        .iter()
        .map(|(name, addr)| (name.as_str().into(), *addr))
        .collect();
    let p = &plan.config.places;
    let answers = AnswerSettings {
        cache_bytes: p.cache_bytes,
        grid: Grid::new(p.snap_m),
    };
    let clock: Clock = Rc::new(std::time::Instant::now);
    let places: Rc<dyn Places> = match &plan.places {
        // Offline answers are computed once per query too, through the same cache.
        None => Rc::new(CachedOfflinePlaces::new(
            p.cache_entries,
            Duration::from_millis(p.cache_ttl_ms),
            answers,
            clock,
        )),
        Some(settings) => Rc::new(
            Upstream::with_answers(settings.clone(), answers, clock)
                .map_err(|e| anyhow!("shard {id}: places upstream: {e}"))?,
        ),
    };
    let shard = Rc::new(Shard::new(
        id,
        me.clone(),
        neighbours,
        places,
        // A backstop only: the upstream client times out first, with a
        // message that says where.
        Duration::from_millis(limits.places_timeout_ms + 500),
        shard_max_records(limits.max_records, plan.shards),
    ));
    let liveness = Liveness::from_heartbeat(
        Duration::from_millis(limits.link_heartbeat_ms),
        Duration::from_millis(limits.link_timeout_ms),
    );
    for status in shard.links() {
        let settings = LinkSettings {
            me: me.clone(),
            secret: plan.secret.as_deref().map(Rc::from),
            tls: plan.tls.clone(),
            backoff_initial: Duration::from_millis(limits.link_backoff_initial_ms),
            backoff_max: Duration::from_millis(limits.link_backoff_max_ms),
            records_per_sec: limits.link_records_per_sec,
            linger: Duration::from_micros(limits.flood_linger_us),
            liveness,
            write_timeout: liveness.dead_after,
        };
        glommio::spawn_local(link::run(status.clone(), settings, shard.clone())).detach();
    }
    if let Some(receivers) = receivers {
        route::serve_owner(shard.clone(), receivers);
    }
    let router = Rc::new(Router::new(shard.clone(), Ring::new(plan.shards), senders));
    let admission = Rc::new(Admission {
        me: me.clone(),
        neighbours: shard.links().iter().map(|l| l.neighbour.clone()).collect(),
        secret: plan.secret.clone(),
        tls: plan.tls.clone(),
        max_line: limits.max_line_bytes,
        link_max_line: crate::record::max_at_line(limits.max_line_bytes),
        liveness,
        max_future_skew: Duration::from_millis(limits.max_future_skew_ms),
        idle_timeout: Duration::from_millis(limits.client_idle_timeout_ms),
        write_timeout: Duration::from_millis(limits.write_timeout_ms),
        marks: plan.marks.clone(),
    });
    let listener = TcpListener::bind(plan.listen)
        .map_err(|e| anyhow!("shard {id}: cannot listen on {}: {e}", plan.listen))?;
    let peer_listener = TcpListener::bind(plan.peer_listen).map_err(|e| {
        anyhow!(
            "shard {id}: cannot listen for links on {}: {e}",
            plan.peer_listen
        )
    })?;
    let _ = ready.send(Ok(id));
    {
        // The process-wide flag is polled: shards sleep in io_uring, and a
        // 50 ms delay to notice a stop is harmless.
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::SeqCst) {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            shard.stop.request();
            shard.connections.stop_reading();
        })
        .detach();
    }
    if let Some(ttl) = limits.record_ttl_ms {
        glommio::spawn_local(expire_records(shard.clone(), Duration::from_millis(ttl))).detach();
    }
    // Connections refused by the per-IP limit, logged once a second.
    let refused_per_ip = Rc::new(std::cell::Cell::new(0u64));
    glommio::spawn_local(report_refusals(
        shard.clone(),
        refused_per_ip.clone(),
        limits.max_connections_per_ip,
    ))
    .detach();
    let max_connections = limits.max_connections_per_shard;
    let links_in = glommio::spawn_local(accept(
        peer_listener,
        Port::Peer,
        Limit {
            max_connections,
            per_ip: None,
            refused_per_ip: refused_per_ip.clone(),
        },
        router.clone(),
        admission.clone(),
        shard.clone(),
    ));
    // The per-IP limit is for clients: a neighbour's links are not.
    let clients = Limit {
        max_connections,
        per_ip: plan.per_ip.clone(),
        refused_per_ip,
    };
    accept(
        listener,
        Port::Client,
        clients,
        router,
        admission,
        shard.clone(),
    )
    .await;
    links_in.await;
    drain(&shard).await;
    Ok(())
}

/// What an accept loop turns away.
struct Limit {
    /// Connections per shard, clients and links together.
    max_connections: usize,
    /// Connections per source address, when limited (clients only).
    per_ip: Option<Arc<PerIp>>,
    /// Connections refused by `per_ip`, for the once-a-second log line.
    refused_per_ip: Rc<std::cell::Cell<u64>>,
}

/// Accepts connections on one port until the shard stops, each served by
/// its own task.
async fn accept(
    listener: TcpListener,
    port: Port,
    limit: Limit,
    router: Rc<Router>,
    admission: Rc<Admission>,
    shard: Rc<Shard>,
) {
    let id = shard.id;
    let max_connections = limit.max_connections;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stop.wait().await;
            None
        });
        let stream = match accepted.await {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of file descriptors or memory: back off, keep serving.
                tracing::warn!(shard = id, ?port, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Links count too: the peer port is as open to strangers as the
        // client port until the handshake.
        if shard.connections.count() >= max_connections {
            tracing::warn!(
                shard = id,
                ?port,
                max_connections,
                "connection refused: shard at its connection limit"
            );
            drop(stream);
            continue;
        }
        // A connection whose address cannot be read is already gone; it
        // is served (and ends at once) without a place.
        let admitted = match (&limit.per_ip, stream.peer_addr()) {
            (Some(per_ip), Ok(peer)) => match per_ip.admit(peer.ip()) {
                Some(admitted) => Some(admitted),
                None => {
                    limit.refused_per_ip.set(limit.refused_per_ip.get() + 1);
                    drop(stream);
                    continue;
                }
            },
            _ => None,
        };
        let (router, admission, shard) = (router.clone(), admission.clone(), shard.clone());
        glommio::spawn_local(async move {
            let _admitted = admitted;
            let _registered = shard.connections.register(stream.as_raw_fd());
            connection::serve(stream, port, router, admission).await;
        })
        .detach();
    }
}

/// One shard's share of `limits.max_records`: `ceil(max / shards)`, or no
/// cap.
fn shard_max_records(max_records: Option<u64>, shards: usize) -> usize {
    let shards = u64::try_from(shards.max(1)).unwrap_or(u64::MAX);
    max_records.map_or(usize::MAX, |max| {
        usize::try_from(max.div_ceil(shards)).unwrap_or(usize::MAX)
    })
}

/// Logs, at most once a second, what the shard turned away since the last
/// line: records evicted from or refused by its full store, and
/// connections over the per-IP limit. Never a line per event: under a
/// flood of new clients or connections the log stays small.
async fn report_refusals(
    shard: Rc<Shard>,
    refused_per_ip: Rc<std::cell::Cell<u64>>,
    per_ip: Option<u32>,
) {
    let (mut evicted, mut refused) = (0, 0);
    let mut connections = 0;
    while !shard.stop.is_requested() {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let (e, r) = shard.evictions();
        if (e, r) != (evicted, refused) {
            tracing::info!(
                shard = shard.id,
                evicted = e - evicted,
                refused_older = r - refused,
                records = shard.records(),
                evicted_total = e,
                "store full: oldest records evicted, older new ones not stored"
            );
            (evicted, refused) = (e, r);
        }
        let c = refused_per_ip.get();
        if c != connections {
            tracing::warn!(
                shard = shard.id,
                refused = c - connections,
                max_connections_per_ip = per_ip.unwrap_or(0),
                "connections refused: too many from one address"
            );
            connections = c;
        }
    }
}

/// Drops records older than `ttl` (by client time), a few thousand slots
/// every 10 ms, so a large store is swept without a pause.
async fn expire_records(shard: Rc<Shard>, ttl: Duration) {
    const SLOTS_PER_STEP: usize = 4096;
    let mut cursor = 0;
    while !shard.stop.is_requested() {
        glommio::timer::sleep(Duration::from_millis(10)).await;
        let cutoff = connection::now().saturating_sub(ttl);
        let removed = shard.expire(&mut cursor, cutoff, SLOTS_PER_STEP);
        if removed > 0 {
            tracing::debug!(shard = shard.id, removed, "expired records");
        }
    }
}

/// Lets connections finish the replies they owe, then waits until every
/// link that is up has sent what the store holds, all within
/// [`DRAIN_DEADLINE`]; logs what was left.
async fn drain(shard: &Shard) {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while shard.connections.count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Records other shards routed here just before they stopped reading.
    glommio::timer::sleep(Duration::from_millis(100)).await;
    let pending = || {
        shard
            .links()
            .iter()
            .any(|l| l.connected.get() && shard.has_unsent(l.cursor))
    };
    while pending() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    let behind: Vec<String> = shard
        .links()
        .iter()
        .map(|l| format!("{}={}", l.neighbour, shard.unsent(l.cursor)))
        .collect();
    tracing::info!(
        shard = shard.id,
        records = shard.records(),
        connections_left = shard.connections.count(),
        links_behind = %behind.join(","),
        "shard stopped"
    );
}
