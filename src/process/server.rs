//! Start-up of one server: one pinned glommio executor per shard, each
//! listening on the same port (SO_REUSEPORT), joined by a channel mesh.
//!
//! [`start`] is the library's entry point: it runs one server in the
//! calling process and returns a [`Running`] (bound addresses, reload,
//! stop). Owns the order things start in, the broadcast that wakes every
//! shard for a reload or the stop, and the start-up summary. Holds no
//! protocol logic: shards, routing, links and connections do the work.
//! Signals, the log file and systemd are the `herd serve` process's.

pub use crate::process::control::{Control, SetLogLevel};
pub use crate::process::plan::Bound;

use crate::admin::endpoint::Registry;
use crate::net::client_tls::ClientTls;
use crate::net::link::tls::LinkTls;
use crate::net::per_ip::PerIp;
use crate::places::upstream::{Upstream, UpstreamSettings};
use crate::process::plan::{Herald, ShardPlan, Started};
use crate::process::shard_run::run_shard;
use crate::pure::auth_limit::AuthFailures;
use crate::pure::catchup::Marks;
use crate::pure::config::{Config, PlacesApi, PlacesSource};
use crate::pure::server_ids::ServerIds;
use crate::shard::flood::Flood;
use crate::shard::journal::{self, JournalPlan};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Memory each executor registers with io_uring for file I/O: the
/// journal's write buffers (a batch of 256 KiB and a block) come from it,
/// and from the heap when it is used up.
const IO_MEMORY: usize = 512 * 1024;

/// How to start one server of the herd in this process ([`start`]).
#[derive(Clone, Default)]
pub struct StartOptions {
    /// The server's name in the config.
    pub name: String,
    /// The folder of the config file, which relative paths in it start from.
    pub config_dir: PathBuf,
    /// The config file, re-read by [`Running::reload`]; `None` when the
    /// config was not read from a file.
    pub config_path: Option<PathBuf>,
    /// Shards to run; `None` means one per usable core.
    pub shards: Option<usize>,
    /// CPUs to pin shards to, in order; `None` means the affinity mask.
    pub cpus: Option<Vec<usize>>,
    /// Sets the log level when a reload changes `logging.level`; `None`
    /// when the level is not the config's to change (given on the command
    /// line, or no logger of ours).
    pub set_log_level: Option<SetLogLevel>,
    /// A fault for tests: this shard fails after it bound its listeners
    /// and before it joins the others, as a shard whose set-up fails there
    /// would. `None` in every real start.
    #[doc(hidden)]
    pub fail_shard_before_join: Option<usize>,
}

impl StartOptions {
    /// Options for server `name`, everything else by default.
    pub fn named(name: &str) -> StartOptions {
        StartOptions {
            name: name.to_owned(),
            ..StartOptions::default()
        }
    }
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config cannot run this server (not in it, bad address, bad
    /// Places or TLS settings).
    #[error("{0}")]
    Config(String),
    /// The CPUs asked for are not usable.
    #[error("{0}")]
    Cpus(String),
    /// Another process already listens on one of the server's addresses.
    #[error("{server}: something already listens on {addr}; is this server running already?")]
    InUse {
        /// The server's name.
        server: String,
        /// The address that answered.
        addr: SocketAddr,
    },
    /// The open-file limit is too low to start.
    #[error("{0}")]
    OpenFiles(String),
    /// The io_uring executors could not start.
    #[error(
        "{server}: could not start the io_uring executors: {why}\n\
         herd needs io_uring: Linux 5.8 or later, sysctl kernel.io_uring_disabled=0, \
         a seccomp profile that allows io_uring_setup/io_uring_enter/io_uring_register, \
         and enough locked memory (ulimit -l: glommio asks for at least 512 KiB). \
         See tuning.md, section io_uring."
    )]
    Executors {
        /// The server's name.
        server: String,
        /// What glommio said.
        why: String,
    },
    /// The journal folder could not be made or read.
    #[error("{server}: {why}")]
    Journal {
        /// The server's name.
        server: String,
        /// What failed.
        why: String,
    },
    /// A shard started but failed before it listened (a bind, the mesh).
    #[error("{server}: a shard failed to start: {why}")]
    Shard {
        /// The server's name.
        server: String,
        /// What failed.
        why: String,
    },
}

/// A server running in this process: its addresses, its config in force,
/// and its stop. Dropping it stops the server and waits for it.
pub struct Running {
    name: String,
    bound: Bound,
    cpus: Vec<usize>,
    places: Option<UpstreamSettings>,
    control: Arc<Control>,
    executors: Vec<ExecutorJoinHandle<()>>,
}

impl Running {
    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses it listens on (port 0 resolved).
    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// The CPUs its shards are pinned to, in shard order.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The stop and the config in force, for other threads (signals).
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Re-reads the config file, as SIGHUP does.
    pub fn reload(&self) -> Result<String, String> {
        self.control.reload()
    }

    /// Puts `config` in force, as a reload of a file with it would:
    /// validated first, refused whole when invalid.
    pub fn reconfigure(&self, config: Config) -> Result<String, String> {
        config.validate().map_err(|e| e.to_string())?;
        self.control.put_in_force(config)
    }

    /// Stops the server gracefully and waits until every shard is gone.
    pub fn stop(mut self) -> Result<(), StartError> {
        self.control.stop();
        self.join()
    }

    /// Waits until the server stops (by [`Control::stop`], from a signal).
    pub fn wait(mut self) -> Result<(), StartError> {
        self.join()
    }

    /// The next word from a starting shard, with its number. A shard that
    /// failed or died stops the rest (those still joining the mesh see the
    /// stop and end too), and is the error.
    fn started(
        &mut self,
        from: &mpsc::Receiver<(usize, Started)>,
    ) -> Result<(usize, Started), StartError> {
        let server = self.name.clone();
        match from.recv() {
            Ok((_, Started::Failed(why))) => {
                self.control.stop();
                Err(StartError::Shard { server, why })
            }
            Ok((shard, Started::Gone)) => {
                self.control.stop();
                // An executor that could not even start returns its error
                // from its thread; io_uring set-up is the usual cause.
                let why = (shard < self.executors.len())
                    .then(|| self.executors.remove(shard).join().err())
                    .flatten()
                    .map_or_else(
                        || format!("shard {shard} ended while starting"),
                        |e| e.to_string(),
                    );
                Err(StartError::Executors { server, why })
            }
            Ok(word) => Ok(word),
            // Every herald is gone and a last word is missing: cannot be, as
            // each says one when dropped; reported rather than waited on.
            Err(_) => {
                self.control.stop();
                Err(StartError::Executors {
                    server,
                    why: "a shard ended without a word".to_owned(),
                })
            }
        }
    }

    fn join(&mut self) -> Result<(), StartError> {
        let mut failed = None;
        for handle in self.executors.drain(..) {
            if let Err(e) = handle.join() {
                failed.get_or_insert(StartError::Shard {
                    server: self.name.clone(),
                    why: format!("shard executor failed: {e}"),
                });
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Warnings about the config in force for an operator: its listen
    /// ports inside the host's ephemeral range `ephemeral`.
    pub fn config_warnings(&self, ephemeral: (u16, u16)) -> Vec<String> {
        self.control.current().1.ephemeral_warnings(ephemeral)
    }

    /// One line saying where the server listens, with what, for whom.
    pub fn summary(&self) -> String {
        let (_, config) = self.control.current();
        let neighbours = config
            .server(&self.name)
            .map(|s| s.neighbours.join(", "))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "none".to_owned());
        let places = match &self.places {
            None => "offline sample data (not real places)".to_owned(),
            // The key is never printed.
            Some(p) => {
                let billed = match (p.api, config.places.fields.mask()) {
                    (PlacesApi::New, Ok(mask)) => {
                        format!(", fields billed as {}", mask.sku().name())
                    }
                    _ => String::new(),
                };
                format!(
                    "{} ({}{billed}, key {})",
                    p.base_url,
                    p.api.describe(),
                    if p.key.is_some() { "set" } else { "not set" }
                )
            }
        };
        let Bound {
            client,
            peer,
            admin,
            client_tls,
            http,
            https,
        } = self.bound;
        let admin = admin.map_or_else(|| "off".to_owned(), |a| a.to_string());
        let tls = [
            (client_tls, "clients over TLS"),
            (http, "phone apps over HTTP"),
            (https, "phone apps over HTTPS"),
        ]
        .iter()
        .filter_map(|(at, what)| at.map(|a| format!(", {what} on {a}")))
        .collect::<String>();
        let auth = match config.clients.auth {
            crate::pure::clients::ClientAuth::None => "clients unauthenticated",
            crate::pure::clients::ClientAuth::Token => "clients authenticate with tokens",
        };
        format!(
            "herd {} listening on {client} (links on {peer}, admin on {admin}{tls}; {auth}) with \
             {} shard(s) on CPUs {:?}; neighbours {neighbours}; places {places}",
            self.name,
            self.cpus.len(),
            self.cpus,
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.executors.is_empty() {
            self.control.stop();
            let _ = self.join();
        }
    }
}

/// This process's open-file limit (the soft one, which is enforced).
fn open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| soft)
}

/// Raises this process's open-file limit to its hard limit, as a server
/// with thousands of connections needs and as Go and NATS do: the soft
/// default (often 1024) is a guard for programs that do not expect many
/// descriptors. Returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return hard;
        }
    }
    open_file_limit()
}

/// The CPUs this process may run on (its affinity mask).
pub fn usable_cpus() -> Result<Vec<usize>, String> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(|e| format!("reading the CPU affinity mask: {e}"))?;
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect();
    if cpus.is_empty() {
        return Err("no usable CPU in the affinity mask".to_owned());
    }
    Ok(cpus)
}

/// Starts server `options.name` of `config` in this process: one pinned
/// executor per shard. Returns once every shard listens. A port 0 in the
/// server's own addresses is given a free port, reported by
/// [`Running::bound`]. Installs no signal handler and no logger: that is
/// the process's business (`herd serve`).
pub fn start(config: Config, options: StartOptions) -> Result<Running, StartError> {
    let name = options.name.clone();
    let bad = |why: String| StartError::Config(format!("{name}: {why}"));
    let me = config
        .server(&name)
        .ok_or_else(|| StartError::Config(format!("{name} is not a server of this herd")))?
        .clone();
    let client = config
        .listen_addr(&name)
        .ok_or_else(|| bad(format!("bad listen address {}", me.listen)))?;
    let peer = config
        .peer_addr(&name)
        .ok_or_else(|| bad("no usable peer address".to_owned()))?;
    if let Some(n) = me.neighbours.iter().find(|n| config.peer_addr(n).is_none()) {
        return Err(bad(format!("neighbour {n} has no usable peer address")));
    }
    let cpus = cpus_for(&options)?;
    let shards = options.shards.unwrap_or(cpus.len()).max(1);
    check_open_files(&config, &name, shards)?;
    check_not_running(&config, &name, [client, peer])?;
    let places = places_settings(&config).map_err(bad)?;
    // Loaded and checked once, before anything listens: a wrong file is a
    // start-up error that names it.
    let tls = match config.tls_paths(&name, &options.config_dir) {
        None => None,
        Some(paths) => Some(LinkTls::load(&paths, &name).map_err(|e| bad(e.to_string()))?),
    };
    let ids = ServerIds::new(config.servers.iter().map(|s| s.name.as_str()));
    let run = crate::net::nonce::fresh_run()
        .map_err(|e| bad(format!("no randomness for the server's run: {e}")))?;
    let client_tls_addr = config.client_tls_addr(&name);
    let client_tls = client_tls_for(&config, &options).map_err(bad)?;
    let journal = replay_journal(&config, &options, shards, &ids)?;
    let control = Arc::new(Control::new(
        &name,
        options.config_path.clone(),
        config.clone(),
        options.set_log_level.clone(),
    ));
    let registry = Registry::new(&name, control.clone())
        .with_journal_cut_bytes(journal.as_ref().map_or(0, |j| j.replayed.cut_bytes));
    let plan = ShardPlan {
        name: name.clone(),
        bound: Bound {
            client,
            peer,
            admin: config.admin_addr(&name),
            client_tls: client_tls_addr,
            http: config.http_addr(&name),
            https: config.https_addr(&name),
        },
        config: config.clone(),
        shards,
        marks: Arc::new(Marks::new()),
        places: places.clone(),
        tls,
        fail_before_join: options.fail_shard_before_join,
        client_tls,
        auth_failures: Arc::new(Mutex::new(AuthFailures::new(
            config.limits.client_auth_failures_per_min,
        ))),
        per_ip: Arc::new(PerIp::new(
            config.limits.max_connections_per_ip.unwrap_or(u32::MAX),
        )),
        registry: Arc::new(registry),
        control: control.clone(),
        journal,
        ids: Arc::new(Mutex::new(ids)),
        run,
        flood: Arc::new(Flood::new(shards)),
    };
    let running = Running {
        name: name.clone(),
        bound: plan.bound,
        cpus: (0..shards).map(|i| cpus[i % cpus.len()]).collect(),
        places,
        control,
        executors: Vec::with_capacity(shards),
    };
    start_shards(plan, running)
}

/// Starts one executor per shard, pinned to its CPU, and waits until every
/// shard serves (or one failed, which stops the rest).
fn start_shards(mut plan: ShardPlan, mut running: Running) -> Result<Running, StartError> {
    let (name, shards) = (plan.name.clone(), plan.shards);
    let config = &plan.config;
    let mesh = (shards > 1).then(|| MeshBuilder::full(shards, config.limits.channel_capacity));
    // Every shard speaks on one channel; each one's `Herald` guarantees a
    // last word, so the waits below end whatever a shard does.
    let (tell, heard) = mpsc::channel::<(usize, Started)>();
    for i in 0..shards {
        let cpu = running.cpus[i];
        let mut herald = Herald::new(i, tell.clone());
        let (plan_i, mesh) = (plan.clone(), mesh.clone());
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("herd-{i}"))
            // glommio reserves this for DMA file I/O, which only the
            // journal does; its 10 MiB default would be pinned memory for
            // little.
            .io_memory(IO_MEMORY)
            .spin_before_park(Duration::from_micros(config.limits.spin_before_park_us))
            .spawn(move || async move {
                if let Err(e) = run_shard(plan_i, mesh, &mut herald).await {
                    herald.say(Started::Failed(e));
                }
            })
            .map_err(|e| StartError::Executors {
                server: name.clone(),
                why: format!("shard {i} on CPU {cpu}: {e}"),
            })?;
        running.executors.push(handle);
        // The first shard binds first: where it was given port 0, the port
        // it got is where the other shards listen too. A shard says where
        // it bound before it says it is ready.
        if i == 0 {
            if let (_, Started::Bound(bound)) = running.started(&heard)? {
                // One admin endpoint per server, the first shard's.
                plan.bound = Bound {
                    admin: None,
                    ..bound
                };
                running.bound = bound;
            }
        }
    }
    drop(tell);
    let mut ready = vec![false; shards];
    while ready.contains(&false) {
        if let (shard, Started::Ready) = running.started(&heard)? {
            ready[shard] = true;
        }
    }
    Ok(running)
}

/// The CPUs the shards are pinned to: those asked for, all usable in this
/// process, or the whole affinity mask.
fn cpus_for(options: &StartOptions) -> Result<Vec<usize>, StartError> {
    let name = &options.name;
    let usable = usable_cpus().map_err(StartError::Cpus)?;
    let cpus = match &options.cpus {
        None => usable,
        Some(asked) => {
            if let Some(cpu) = asked.iter().find(|c| !usable.contains(c)) {
                return Err(StartError::Cpus(format!(
                    "{name}: CPU {cpu} is not in this process's affinity mask {usable:?}"
                )));
            }
            asked.clone()
        }
    };
    if cpus.is_empty() {
        return Err(StartError::Cpus(format!("{name}: --cpus names no CPU")));
    }
    Ok(cpus)
}

/// Refuses a start that the open-file limit would cut short, and warns
/// when it is below what the connection limit allows.
fn check_open_files(config: &Config, name: &str, shards: usize) -> Result<(), StartError> {
    // Short of descriptors a shard fails half-way through starting (a
    // listener, a ring); refused here whole, with the remedy.
    let needed = config.limits.open_files(shards);
    let limit = open_file_limit();
    if limit < needed.to_start {
        return Err(StartError::OpenFiles(format!(
            "{name}: the open-file limit (ulimit -n) is {limit}; {shards} shard(s) need at least {} \
             to start. Raise it: `ulimit -n 65536`, or LimitNOFILE= in a systemd unit \
             (tuning.md, File descriptors)",
            needed.to_start
        )));
    }
    if limit < needed.to_serve {
        tracing::warn!(
            server = %name,
            limit,
            needed = needed.to_serve,
            max_connections_per_shard = config.limits.max_connections_per_shard,
            shards,
            "the open-file limit is below what the connection limit allows: past it, new \
             connections wait unaccepted (tuning.md, File descriptors)"
        );
    }
    Ok(())
}

/// Refuses to start a second copy of a server whose listeners answer.
fn check_not_running(
    config: &Config,
    name: &str,
    [client, peer]: [SocketAddr; 2],
) -> Result<(), StartError> {
    // SO_REUSEPORT would let a second copy of this server share the port
    // silently, so a listener that already answers there is an error. (A
    // plain bind cannot tell: connections of a killed predecessor still hold
    // the port until they time out.) A killed predecessor's listener can
    // outlive it briefly while the kernel tears its io_uring down, so only a
    // listener that keeps answering for two seconds counts.
    let client_tls_at = config.client_tls_addr(name);
    let phones_at = [config.http_addr(name), config.https_addr(name)];
    for addr in [
        Some(client),
        Some(peer),
        client_tls_at,
        phones_at[0],
        phones_at[1],
    ]
    .into_iter()
    .flatten()
    .filter(|a| a.port() != 0)
    {
        let answers =
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        let mut answered = 0;
        while answered < 20 && answers() {
            answered += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        if answered == 20 {
            return Err(StartError::InUse {
                server: name.to_owned(),
                addr,
            });
        }
    }
    Ok(())
}

/// TLS for clients, when the server has a client TLS or HTTPS port.
fn client_tls_for(config: &Config, options: &StartOptions) -> Result<Option<ClientTls>, String> {
    let name = &options.name;
    let tls_port = config.client_tls_addr(name).or(config.https_addr(name));
    match (tls_port, config.client_tls_paths(name, &options.config_dir)) {
        (Some(_), Some((cert, key))) => Ok(Some(
            ClientTls::load(&cert, &key).map_err(|e| e.to_string())?,
        )),
        (Some(addr), None) => Err(format!(
            "{addr} (client_tls_listen or https_listen) needs a certificate: a client_tls \
             or tls section"
        )),
        (None, _) => Ok(None),
    }
}

/// The journal replayed, when the herd has a `persistence` section.
fn replay_journal(
    config: &Config,
    options: &StartOptions,
    shards: usize,
    ids: &ServerIds,
) -> Result<Option<Arc<JournalPlan>>, StartError> {
    let name = &options.name;
    // Replayed before any shard starts: every file, whatever shard count
    // wrote it, sorted to the shards that own its records now.
    Ok(
        match (
            &config.persistence,
            config.journal_dir(name, &options.config_dir),
        ) {
            (Some(p), Some(dir)) => {
                let replayed =
                    journal::replay(&dir, shards, ids).map_err(|why| StartError::Journal {
                        server: name.clone(),
                        why,
                    })?;
                tracing::info!(
                    dir = %dir.display(),
                    files = replayed.old_files.len(),
                    records = replayed.read,
                    fsync = ?p.fsync,
                    "journal replayed"
                );
                Some(Arc::new(JournalPlan {
                    dir,
                    fsync: p.fsync,
                    replayed: Arc::new(replayed),
                    complete: std::sync::atomic::AtomicUsize::new(0),
                    shards,
                }))
            }
            _ => None,
        },
    )
}

/// The Places client settings from the config and `HERD_PLACES_KEY`, or
/// `None` for the offline provider.
fn places_settings(config: &Config) -> Result<Option<UpstreamSettings>, String> {
    let p = &config.places;
    let source = p.resolve(std::env::var("HERD_PLACES_KEY").ok())?;
    let PlacesSource::Http {
        base_url,
        key,
        api,
        field_mask,
    } = source
    else {
        return Ok(None);
    };
    let extra_ca_pem = match &p.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("reading places.ca_file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let settings = UpstreamSettings {
        base_url,
        api,
        field_mask,
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
    Upstream::new(settings.clone()).map_err(|e| format!("places upstream: {e}"))?;
    Ok(Some(settings))
}
