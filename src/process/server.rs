//! Start-up of one server: one pinned glommio executor per shard, each
//! listening on the same port (SO_REUSEPORT), joined by a channel mesh.
//!
//! Owns the order things start in and the start-up summary. Holds no
//! protocol logic: shards, routing, links and connections do the work.

use crate::net::connection::{self, Admission, Port};
use crate::net::link_tls::LinkTls;
use crate::net::per_ip::PerIp;
use crate::net::route::{self, Router, ToOwner};
use crate::ops::admin::{self, Registry};
use crate::places::answer::{AnswerSettings, CachedOfflinePlaces, Clock, Places};
use crate::places::key::Grid;
use crate::places::upstream::{Upstream, UpstreamSettings};
use crate::process::logging::Logging;
use crate::pure::catchup::Marks;
use crate::pure::config::{Config, PlacesSource};
use crate::pure::link_session::Liveness;
use crate::pure::ring::Ring;
use crate::shard::link::{self, LinkSettings};
use crate::shard::Shard;
use anyhow::{anyhow, bail, Context};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
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
    /// The config file, re-read by a reload; `None` for the built-in herd.
    pub config_path: Option<PathBuf>,
    /// Shards to run; `None` means one per usable core.
    pub shards: Option<usize>,
    /// Directory for `<name>.log`.
    pub log_dir: PathBuf,
    /// tracing filter, e.g. `info` or `debug`; when given it holds for the
    /// life of the process, else the config's `logging.level` (or `info`).
    pub log_level: Option<String>,
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
    config: Config,
    shards: usize,
    marks: Arc<Marks>,
    /// The Places upstream, or `None` for the offline sample data.
    places: Option<UpstreamSettings>,
    /// Mutual TLS for links, when the herd has a `tls` section.
    tls: Option<LinkTls>,
    /// Client connections per source address, shared by all shards (no
    /// limit: `u32::MAX`, so that a reload can set one).
    per_ip: Arc<PerIp>,
    /// Where the admin endpoint listens (served by shard 0), if anywhere.
    admin: Option<SocketAddr>,
    /// What the admin endpoint reads.
    registry: Arc<Registry>,
    /// The config in force, changed by reloads.
    control: Arc<Control>,
}

/// The config in force, and reloads of it: written by a reload (SIGHUP or
/// `POST /reload`, on their own threads), read by each shard when the
/// generation moves.
pub struct Control {
    name: String,
    path: Option<PathBuf>,
    current: Mutex<Arc<Config>>,
    generation: AtomicU64,
    logging: Logging,
    /// The level came from the command line: reloads leave it.
    level_fixed: bool,
}

impl crate::ops::admin::ConfigInForce for Control {
    fn neighbours(&self) -> Vec<String> {
        let (_, config) = self.current();
        config
            .server(&self.name)
            .map(|s| s.neighbours.clone())
            .unwrap_or_default()
    }

    fn reload(&self) -> Result<String, String> {
        Control::reload(self)
    }
}

impl Control {
    /// The config in force and its generation.
    fn current(&self) -> (u64, Arc<Config>) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (self.generation.load(Ordering::SeqCst), current.clone())
    }

    /// Re-reads the config file: a valid one that still has this server
    /// is put in force (shards apply it within 50 ms); anything else is
    /// refused with the reasons `check-config` gives, and changes nothing.
    pub fn reload(&self) -> Result<String, String> {
        let result = self.try_reload();
        match &result {
            Ok(said) => tracing::info!(changes = %said, "config reloaded"),
            Err(why) => tracing::warn!(%why, "reload refused; the old config stays in force"),
        }
        result
    }

    fn try_reload(&self) -> Result<String, String> {
        let Some(path) = &self.path else {
            return Err("started without --config: there is no file to re-read".to_owned());
        };
        let new = Config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let changes = crate::pure::reload::compare(&current, &new, &self.name)?;
        if !self.level_fixed && current.logging.level != new.logging.level {
            let level = new.logging.level.as_deref().unwrap_or("info");
            self.logging.set_level(level)?;
        }
        *current = Arc::new(new);
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(changes.summary())
    }
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
    if let Some(n) = me
        .neighbours
        .iter()
        .find(|n| opts.config.peer_addr(n).is_none())
    {
        bail!("neighbour {n} has no usable peer address");
    }
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
    let level = opts
        .log_level
        .clone()
        .or_else(|| opts.config.logging.level.clone())
        .unwrap_or_else(|| "info".to_owned());
    let (logging, _log_guard) =
        crate::process::logging::init(&opts.log_dir, &me.name, &level, opts.config.logging.format)?;
    let control = Arc::new(Control {
        name: me.name.clone(),
        path: opts.config_path.clone(),
        current: Mutex::new(Arc::new(opts.config.clone())),
        generation: AtomicU64::new(0),
        logging,
        level_fixed: opts.log_level.is_some(),
    });
    let registry = Arc::new(Registry::new(
        &me.name,
        listen.to_string(),
        peer_listen.to_string(),
        control.clone(),
    ));
    let admin = opts.config.admin_addr(&me.name);
    let plan = ShardPlan {
        name: me.name.clone(),
        listen,
        peer_listen,
        config: opts.config.clone(),
        shards,
        marks: Arc::new(Marks::new()),
        places: places.clone(),
        tls,
        per_ip: Arc::new(PerIp::new(
            opts.config
                .limits
                .max_connections_per_ip
                .unwrap_or(u32::MAX),
        )),
        admin,
        registry,
        control: control.clone(),
    };
    let stop = stop_on_signals(control.clone())?;
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
    let admin_note = admin.map_or_else(|| "off".to_owned(), |a| a.to_string());
    eprintln!(
        "herd {} listening on {listen} (links on {peer_listen}, admin on {admin_note}) with \
         {shards} shard(s) on CPUs {:?}; neighbours {neighbours}; places {places_note}; log {}",
        me.name,
        &cpus[..shards.min(cpus.len())],
        control.logging.path().display(),
    );
    tracing::info!(server = %me.name, %listen, %peer_listen, admin = %admin_note, shards, "started");
    notify_systemd_ready();
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

/// Tells systemd (`Type=notify`) that the server is up: every shard
/// listens. Does nothing outside systemd.
fn notify_systemd_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    // An abstract socket is written with a leading '@'.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name),
        None => UnixAddr::from_pathname(std::path::Path::new(&path)),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr));
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not tell systemd the server is ready");
    }
}

/// The first SIGTERM or SIGINT asks the shards to stop gracefully; a
/// second one exits at once. SIGHUP reopens the log file and reloads the
/// config.
fn stop_on_signals(control: Arc<Control>) -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("herd-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    if let Err(e) = control.logging.reopen() {
                        eprintln!("herd: SIGHUP: reopening the log file: {e}");
                    }
                    tracing::info!("SIGHUP: log file reopened; reloading the config");
                    // The outcome is logged by the reload itself.
                    let _ = control.reload();
                    continue;
                }
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

/// How a shard's links dial and pace themselves, from a config.
fn link_settings(plan: &ShardPlan, config: &Config) -> LinkSettings {
    let limits = &config.limits;
    let liveness = liveness(config);
    LinkSettings {
        me: plan.name.as_str().into(),
        secret: config.secret.as_deref().map(Rc::from),
        // Taken at start only (a reload that changes it says so).
        tls: plan.tls.clone(),
        backoff_initial: Duration::from_millis(limits.link_backoff_initial_ms),
        backoff_max: Duration::from_millis(limits.link_backoff_max_ms),
        records_per_sec: limits.link_records_per_sec,
        linger: Duration::from_micros(limits.flood_linger_us),
        liveness,
        write_timeout: liveness.dead_after,
    }
}

fn liveness(config: &Config) -> Liveness {
    Liveness::from_heartbeat(
        Duration::from_millis(config.limits.link_heartbeat_ms),
        Duration::from_millis(config.limits.link_timeout_ms),
    )
}

/// Who may connect and with what limits, from a config. `live` is the
/// shard's list of neighbours now, shared by every version of it.
fn admission(plan: &ShardPlan, config: &Config, live: &Rc<RefCell<Vec<Rc<str>>>>) -> Admission {
    let limits = &config.limits;
    Admission {
        me: plan.name.as_str().into(),
        neighbours: live.borrow().clone(),
        live_neighbours: live.clone(),
        secret: config.secret.clone(),
        tls: plan.tls.clone(),
        max_line: limits.max_line_bytes,
        link_max_line: crate::pure::record::max_at_line(limits.max_line_bytes),
        liveness: liveness(config),
        max_future_skew: Duration::from_millis(limits.max_future_skew_ms),
        idle_timeout: Duration::from_millis(limits.client_idle_timeout_ms),
        write_timeout: Duration::from_millis(limits.write_timeout_ms),
        max_connections: limits.max_connections_per_shard,
        marks: plan.marks.clone(),
        inbound: plan.registry.inbound.clone(),
    }
}

/// What a shard changes when a reload puts a new config in force.
struct Live {
    plan: ShardPlan,
    shard: Rc<Shard>,
    /// The config this shard runs with.
    config: RefCell<Arc<Config>>,
    generation: std::cell::Cell<u64>,
    admission: RefCell<Rc<Admission>>,
    link_settings: Rc<RefCell<LinkSettings>>,
    neighbours: Rc<RefCell<Vec<Rc<str>>>>,
}

impl Live {
    /// Applies the config in force if it is newer than this shard's.
    fn follow(&self) {
        let (generation, config) = self.plan.control.current();
        if generation == self.generation.get() {
            return;
        }
        self.generation.set(generation);
        let old = self.config.replace(config.clone());
        let changes = match crate::pure::reload::compare(&old, &config, &self.plan.name) {
            Ok(changes) => changes,
            // The reload checked this already; a shard never runs half a config.
            Err(_) => return,
        };
        for name in &changes.removed {
            self.shard.remove_link(name);
        }
        let me = config.server(&self.plan.name);
        *self.neighbours.borrow_mut() = me
            .map(|s| s.neighbours.iter().map(|n| Rc::from(n.as_str())).collect())
            .unwrap_or_default();
        *self.link_settings.borrow_mut() = link_settings(&self.plan, &config);
        *self.admission.borrow_mut() = Rc::new(admission(&self.plan, &config, &self.neighbours));
        for (name, addr) in &changes.added {
            let status = self.shard.add_link(name.as_str().into(), *addr);
            glommio::spawn_local(link::run(
                status,
                self.link_settings.clone(),
                self.shard.clone(),
            ))
            .detach();
        }
        self.shard.set_max_records(shard_max_records(
            config.limits.max_records,
            self.plan.shards,
        ));
        self.plan
            .per_ip
            .set_limit(config.limits.max_connections_per_ip.unwrap_or(u32::MAX));
        tracing::info!(shard = self.shard.id, changes = %changes.summary(), "shard follows the reloaded config");
    }
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
    // The config in force now: a reload may have come before this shard.
    let (generation, config) = plan.control.current();
    let limits = &config.limits;
    let neighbours: Vec<(Rc<str>, SocketAddr)> = config
        .server(&plan.name)
        .map(|s| {
            s.neighbours
                .iter()
                .filter_map(|n| Some((Rc::from(n.as_str()), config.peer_addr(n)?)))
                .collect()
        })
        .unwrap_or_default();
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
        neighbours,
        places,
        // A backstop only: the upstream client times out first, with a
        // message that says where.
        Duration::from_millis(plan.config.limits.places_timeout_ms + 500),
        shard_max_records(limits.max_records, plan.shards),
    ));
    plan.registry.add_shard(shard.metrics.clone());
    let live_neighbours: Rc<RefCell<Vec<Rc<str>>>> = Rc::new(RefCell::new(
        shard.links().iter().map(|l| l.neighbour.clone()).collect(),
    ));
    let link_settings = Rc::new(RefCell::new(link_settings(&plan, &config)));
    for status in shard.links() {
        glommio::spawn_local(link::run(status, link_settings.clone(), shard.clone())).detach();
    }
    if let Some(receivers) = receivers {
        route::serve_owner(shard.clone(), receivers);
    }
    let router = Rc::new(Router::new(shard.clone(), Ring::new(plan.shards), senders));
    let live = Rc::new(Live {
        admission: RefCell::new(Rc::new(admission(&plan, &config, &live_neighbours))),
        plan: plan.clone(),
        shard: shard.clone(),
        config: RefCell::new(config.clone()),
        generation: std::cell::Cell::new(generation),
        link_settings,
        neighbours: live_neighbours,
    });
    let listener = TcpListener::bind(plan.listen)
        .map_err(|e| anyhow!("shard {id}: cannot listen on {}: {e}", plan.listen))?;
    let peer_listener = TcpListener::bind(plan.peer_listen).map_err(|e| {
        anyhow!(
            "shard {id}: cannot listen for links on {}: {e}",
            plan.peer_listen
        )
    })?;
    // The admin endpoint is small: the first shard serves it.
    if let (0, Some(addr)) = (id, plan.admin) {
        let admin_listener = TcpListener::bind(addr)
            .map_err(|e| anyhow!("cannot listen for admin requests on {addr}: {e}"))?;
        let (registry, shard) = (plan.registry.clone(), shard.clone());
        glommio::spawn_local(async move {
            admin::serve(admin_listener, registry, shard.stop.wait()).await;
        })
        .detach();
    }
    let _ = ready.send(Ok(id));
    {
        // The process-wide flags are polled: shards sleep in io_uring, and
        // a 50 ms delay to notice a stop or a reload is harmless.
        let (shard, live) = (shard.clone(), live.clone());
        glommio::spawn_local(async move {
            while !stop.load(Ordering::SeqCst) {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                live.follow();
            }
            shard.stop.request();
            shard.connections.stop_reading();
        })
        .detach();
    }
    glommio::spawn_local(publish(shard.clone())).detach();
    if let Some(ttl) = limits.record_ttl_ms {
        glommio::spawn_local(expire_records(shard.clone(), Duration::from_millis(ttl))).detach();
    }
    // Connections refused by the per-IP limit, logged once a second.
    let refused_per_ip = Rc::new(std::cell::Cell::new(0u64));
    glommio::spawn_local(report_refusals(
        shard.clone(),
        refused_per_ip.clone(),
        plan.per_ip.clone(),
    ))
    .detach();
    let links_in = glommio::spawn_local(accept(
        peer_listener,
        Port::Peer,
        Limit {
            per_ip: None,
            refused_per_ip: refused_per_ip.clone(),
        },
        router.clone(),
        live.clone(),
    ));
    // The per-IP limit is for clients: a neighbour's links are not.
    let clients = Limit {
        per_ip: Some(plan.per_ip.clone()),
        refused_per_ip,
    };
    accept(listener, Port::Client, clients, router, live).await;
    links_in.await;
    drain(&shard).await;
    Ok(())
}

/// Publishes the shard's figures for the admin endpoint four times a
/// second; the recent latency covers the last whole second.
async fn publish(shard: Rc<Shard>) {
    let mut recent = crate::ops::metrics::latency_histogram();
    let mut tick = 0u64;
    while !shard.stop.is_requested() {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        tick += 1;
        shard.publish(&mut recent, tick % 4 == 0);
    }
}

/// What an accept loop turns away.
struct Limit {
    /// Connections per source address, when limited (clients only).
    per_ip: Option<Arc<PerIp>>,
    /// Connections refused by `per_ip`, for the once-a-second log line.
    refused_per_ip: Rc<std::cell::Cell<u64>>,
}

/// Accepts connections on one port until the shard stops, each served by
/// its own task with the admission rules in force when it came.
async fn accept(
    listener: TcpListener,
    port: Port,
    limit: Limit,
    router: Rc<Router>,
    live: Rc<Live>,
) {
    let shard = live.shard.clone();
    let id = shard.id;
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
        let admission = live.admission.borrow().clone();
        let max_connections = admission.max_connections;
        // Links count too: the peer port is as open to strangers as the
        // client port until the handshake.
        if shard.connections.count() >= max_connections {
            shard.metrics.refused.connection_limit.inc();
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
            (Some(per_ip), Ok(peer)) if per_ip.limit() != u32::MAX => {
                match per_ip.admit(peer.ip()) {
                    Some(admitted) => Some(admitted),
                    None => {
                        shard.metrics.refused.per_ip.inc();
                        limit.refused_per_ip.set(limit.refused_per_ip.get() + 1);
                        drop(stream);
                        continue;
                    }
                }
            }
            _ => None,
        };
        let (router, shard) = (router.clone(), shard.clone());
        glommio::spawn_local(async move {
            let _admitted = admitted;
            let _registered = shard
                .connections
                .register(stream.as_raw_fd(), port == Port::Peer);
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
    per_ip: Arc<PerIp>,
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
                max_connections_per_ip = per_ip.limit(),
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
