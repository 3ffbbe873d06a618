//! Start-up of one server: one pinned glommio executor per shard, each
//! listening on the same port (SO_REUSEPORT), joined by a channel mesh.
//!
//! [`start`] is the library's entry point: it runs one server in the
//! calling process and returns a [`Running`] (bound addresses, reload,
//! stop). Owns the order things start in, the broadcast that wakes every
//! shard for a reload or the stop, and the start-up summary. Holds no
//! protocol logic: shards, routing, links and connections do the work.
//! Signals, the log file and systemd are the `herd serve` process's.

use crate::admin::endpoint::{self, Registry};
use crate::net::admission::{Admission, Port};
use crate::net::client_auth::{lock_failures, ClientRules, Clients};
use crate::net::client_tls::ClientTls;
use crate::net::connection;
use crate::net::lines;
use crate::net::link::incoming;
use crate::net::link::outgoing::{self as link, LinkSettings};
use crate::net::link::tls::LinkTls;
use crate::net::per_ip::PerIp;
use crate::net::phones;
use crate::net::route::{self, Router, ToOwner};
use crate::places::answer::{AnswerSettings, CachedOfflinePlaces, Clock, Places};
use crate::places::key::Grid;
use crate::places::upstream::{Upstream, UpstreamSettings};
use crate::pure::auth_limit::AuthFailures;
use crate::pure::catchup::Marks;
use crate::pure::config::{Config, PlacesApi, PlacesSource};
use crate::pure::flood_tree::Trees;
use crate::pure::link_session::Liveness;
use crate::pure::ring::Ring;
use crate::pure::server_ids::ServerIds;
use crate::shard::flood::{self, Flood};
use crate::shard::journal::{self, Durability, JournalPlan};
use crate::shard::Shard;
use event_listener::Event;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Memory each executor registers with io_uring for file I/O: the
/// journal's write buffers (a batch of 256 KiB and a block) come from it,
/// and from the heap when it is used up.
const IO_MEMORY: usize = 512 * 1024;

/// How long a stopping server may take to finish replies and flush floods.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Sets the log level in force (a reload changed `logging.level`).
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

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

/// The addresses a server listens on, with any port 0 resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Clients.
    pub client: SocketAddr,
    /// Links from neighbours.
    pub peer: SocketAddr,
    /// The admin endpoint, unless it is off.
    pub admin: Option<SocketAddr>,
    /// Clients over TLS, when the server takes them.
    pub client_tls: Option<SocketAddr>,
    /// Phone apps over HTTP, when the server takes them.
    pub http: Option<SocketAddr>,
    /// Phone apps over HTTPS, when the server takes them.
    pub https: Option<SocketAddr>,
}

/// What an accept loop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// Lines: the client protocol (plain or TLS), or links.
    Lines(Port),
    /// Phone apps over HTTP, or HTTPS.
    Phones {
        /// Inside TLS.
        https: bool,
    },
}

/// What a starting shard tells [`start`].
enum Started {
    /// Its listeners are bound, here (port 0 resolved).
    Bound(Bound),
    /// It serves.
    Ready,
    /// It could not start, for this reason.
    Failed(String),
    /// Its executor ended (or never ran) before it said it serves: it
    /// could not be built, or it panicked.
    Gone,
}

/// A shard's voice while it starts: what it says reaches `start`, tagged
/// with its number. Every shard ends its start-up with a last word, even
/// one whose executor never ran its future or unwound from a panic: the
/// drop says `Gone` unless `Ready` or `Failed` was said. So `start` waits
/// for exactly one last word per shard and never for a shard that died.
struct Herald {
    shard: usize,
    to: mpsc::Sender<(usize, Started)>,
    done: bool,
}

impl Herald {
    fn say(&mut self, word: Started) {
        self.done |= matches!(word, Started::Ready | Started::Failed(_) | Started::Gone);
        let _ = self.to.send((self.shard, word));
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if !self.done {
            self.say(Started::Gone);
        }
    }
}

/// What every shard needs to start; all `Send`, copied into each executor.
#[derive(Clone)]
struct ShardPlan {
    name: String,
    /// Where to listen; shard 0 may be given port 0 and find the port, the
    /// others then listen on the port it found.
    bound: Bound,
    config: Config,
    shards: usize,
    marks: Arc<Marks>,
    /// The Places upstream, or `None` for the offline sample data.
    places: Option<UpstreamSettings>,
    /// Mutual TLS for links, when the herd has a `tls` section.
    tls: Option<LinkTls>,
    /// The test fault of [`StartOptions::fail_shard_before_join`].
    fail_before_join: Option<usize>,
    /// TLS for clients, when the server has a `client_tls_listen`.
    client_tls: Option<ClientTls>,
    /// Failed `AUTH`s by address and client, shared by all shards.
    auth_failures: Arc<Mutex<AuthFailures>>,
    /// Client connections per source address, shared by all shards (no
    /// limit: `u32::MAX`, so that a reload can set one).
    per_ip: Arc<PerIp>,
    /// What the admin endpoint reads.
    registry: Arc<Registry>,
    /// The config in force, changed by reloads, and the stop.
    control: Arc<Control>,
    /// The journal, when the herd has a `persistence` section.
    journal: Option<Arc<JournalPlan>>,
    /// Numbers for server names, shared by the shards; a reload only adds.
    ids: Arc<Mutex<ServerIds>>,
    /// This server's run: drawn at start, said to neighbours.
    run: u64,
    /// The flood-tree state the shards share.
    flood: Arc<Flood>,
}

impl ShardPlan {
    /// The server ids with every server of `config` numbered: the same
    /// numbers in every shard, whichever config each saw first.
    fn ids_for(&self, config: &Config) -> Arc<ServerIds> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let extended =
            std::mem::take(&mut *ids).with(config.servers.iter().map(|s| s.name.as_str()));
        *ids = extended;
        Arc::new(ids.clone())
    }

    /// The herd's flood trees, as `config` has them.
    fn trees_for(&self, config: &Config) -> Arc<Trees> {
        let servers = config
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.neighbours.as_slice()));
        Arc::new(Trees::new(servers, &self.name, &self.ids_for(config)))
    }

    /// This server's run, when it speaks trees (`limits.link_tree`).
    fn run_for(&self, config: &Config) -> Option<u64> {
        config.limits.link_tree.then_some(self.run)
    }
}

/// The config in force, reloads of it, and the stop: written by a reload
/// (SIGHUP, `POST /reload`, [`Running::reconfigure`]) or a stop on their
/// own threads; every shard is woken by `Control::changed` and follows.
pub struct Control {
    name: String,
    path: Option<PathBuf>,
    current: Mutex<Arc<Config>>,
    generation: AtomicU64,
    set_log_level: Option<SetLogLevel>,
    stopping: AtomicBool,
    /// Notified on a new config in force and on the stop: a broadcast to
    /// every shard, so none polls.
    changed: Event,
}

impl crate::admin::endpoint::ConfigInForce for Control {
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
    /// is put in force; anything else is refused with the reasons
    /// `check-config` gives, and changes nothing.
    pub fn reload(&self) -> Result<String, String> {
        let result = match &self.path {
            None => Err("started without --config: there is no file to re-read".to_owned()),
            Some(path) => Config::load(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|new| self.put_in_force(new)),
        };
        match &result {
            Ok(said) => tracing::info!(changes = %said, "config reloaded"),
            Err(why) => tracing::warn!(%why, "reload refused; the old config stays in force"),
        }
        result
    }

    /// Puts a validated config in force and wakes every shard to follow it.
    fn put_in_force(&self, new: Config) -> Result<String, String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let changes = crate::pure::reload::compare(&current, &new, &self.name)?;
        if current.logging.level != new.logging.level {
            if let Some(set) = &self.set_log_level {
                set(new.logging.level.as_deref().unwrap_or("info"))?;
            }
        }
        *current = Arc::new(new);
        self.generation.fetch_add(1, Ordering::SeqCst);
        drop(current);
        self.changed.notify(usize::MAX);
        Ok(changes.summary())
    }

    /// Asks every shard to stop: finish replies, flush floods, return.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.changed.notify(usize::MAX);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once the stop is asked for.
    async fn stopped(&self) {
        loop {
            let changed = self.changed.listen();
            // Checked after listening, so a stop in between is not missed.
            if self.is_stopping() {
                return;
            }
            changed.await;
        }
    }
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
    let shards = options.shards.unwrap_or(cpus.len()).max(1);
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
    // SO_REUSEPORT would let a second copy of this server share the port
    // silently, so a listener that already answers there is an error. (A
    // plain bind cannot tell: connections of a killed predecessor still hold
    // the port until they time out.) A killed predecessor's listener can
    // outlive it briefly while the kernel tears its io_uring down, so only a
    // listener that keeps answering for two seconds counts.
    let client_tls_at = config.client_tls_addr(&name);
    let phones_at = [config.http_addr(&name), config.https_addr(&name)];
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
            return Err(StartError::InUse { server: name, addr });
        }
    }
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
    let tls_port = client_tls_addr.or(config.https_addr(&name));
    let client_tls = match (
        tls_port,
        config.client_tls_paths(&name, &options.config_dir),
    ) {
        (Some(_), Some((cert, key))) => {
            Some(ClientTls::load(&cert, &key).map_err(|e| bad(e.to_string()))?)
        }
        (Some(addr), None) => {
            return Err(bad(format!(
                "{addr} (client_tls_listen or https_listen) needs a certificate: a client_tls \
                 or tls section"
            )))
        }
        (None, _) => None,
    };
    // Replayed before any shard starts: every file, whatever shard count
    // wrote it, sorted to the shards that own its records now.
    let journal = match (
        &config.persistence,
        config.journal_dir(&name, &options.config_dir),
    ) {
        (Some(p), Some(dir)) => {
            let replayed =
                journal::replay(&dir, shards, &ids).map_err(|why| StartError::Journal {
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
    };
    let control = Arc::new(Control {
        name: name.clone(),
        path: options.config_path.clone(),
        current: Mutex::new(Arc::new(config.clone())),
        generation: AtomicU64::new(0),
        set_log_level: options.set_log_level.clone(),
        stopping: AtomicBool::new(false),
        changed: Event::new(),
    });
    let registry = Registry::new(&name, control.clone())
        .with_journal_cut_bytes(journal.as_ref().map_or(0, |j| j.replayed.cut_bytes));
    let mut plan = ShardPlan {
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
    let mesh = (shards > 1).then(|| MeshBuilder::full(shards, config.limits.channel_capacity));
    // Every shard speaks on one channel; each one's `Herald` guarantees a
    // last word, so the waits below end whatever a shard does.
    let (tell, heard) = mpsc::channel::<(usize, Started)>();
    let mut running = Running {
        name: name.clone(),
        bound: plan.bound,
        cpus: (0..shards).map(|i| cpus[i % cpus.len()]).collect(),
        places,
        control,
        executors: Vec::with_capacity(shards),
    };
    for i in 0..shards {
        let cpu = running.cpus[i];
        let mut herald = Herald {
            shard: i,
            to: tell.clone(),
            done: false,
        };
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

/// How a shard's links dial and pace themselves, from a config.
fn link_settings(plan: &ShardPlan, config: &Config) -> LinkSettings {
    let limits = &config.limits;
    let liveness = liveness(config);
    let trees = plan.trees_for(config);
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
        run: plan.run_for(config),
        topology: plan.run_for(config).map(|_| trees.topology()),
        trees,
        ids: plan.ids_for(config),
        announce: Duration::from_millis(limits.link_announce_ms),
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
fn admission(
    plan: &ShardPlan,
    config: &Config,
    live: &Rc<RefCell<Vec<Rc<str>>>>,
    clients: &Clients,
) -> Admission {
    let limits = &config.limits;
    Admission {
        me: plan.name.as_str().into(),
        neighbours: live.borrow().clone(),
        live_neighbours: live.clone(),
        secret: config.secret.clone(),
        tls: plan.tls.clone(),
        client_tls: plan.client_tls.clone(),
        clients: clients.clone(),
        http_request_timeout: Duration::from_millis(limits.http_request_timeout_ms),
        max_line: limits.max_line_bytes,
        link_max_line: crate::pure::record::max_at_line(limits.max_line_bytes),
        liveness: liveness(config),
        max_future_skew: Duration::from_millis(limits.max_future_skew_ms),
        idle_timeout: Duration::from_millis(limits.client_idle_timeout_ms),
        write_timeout: Duration::from_millis(limits.write_timeout_ms),
        max_connections: limits.max_connections_per_shard,
        marks: plan.marks.clone(),
        inbound: plan.registry.inbound.clone(),
        ids: plan.ids_for(config),
        run: plan.run_for(config),
        topology: plan
            .run_for(config)
            .map(|_| plan.trees_for(config).topology()),
        flood: plan.flood.clone(),
        announce: Duration::from_millis(limits.link_announce_ms),
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
    /// The client rules every connection of the shard reads.
    clients: Clients,
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
        self.shard.set_trees(self.plan.trees_for(&config));
        *self.link_settings.borrow_mut() = link_settings(&self.plan, &config);
        *self.admission.borrow_mut() = Rc::new(admission(
            &self.plan,
            &config,
            &self.neighbours,
            &self.clients,
        ));
        self.follow_clients(&old, &config);
        let ids = self.plan.ids_for(&config);
        for (name, addr) in &changes.added {
            let status = self
                .shard
                .add_link(name.as_str().into(), ids.id(name), *addr);
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
        // Shared by the shards: each sets the same value.
        lock_failures(&self.plan.auth_failures)
            .set_limit(config.limits.client_auth_failures_per_min);
        tracing::info!(shard = self.shard.id, changes = %changes.summary(), "shard follows the reloaded config");
    }

    /// Puts the new client rules in force for every connection, and closes
    /// the client connections whose token's key is gone.
    fn follow_clients(&self, old: &Config, new: &Config) {
        if old.clients == new.clients {
            return;
        }
        let rules = ClientRules::of(&new.clients);
        let kept: Vec<u32> = rules.keys.iter().map(|k| k.id()).collect();
        *self.clients.rules.borrow_mut() = rules;
        let closed = self
            .shard
            .connections
            .revoke_clients(|key| key.is_some_and(|id| !kept.contains(&id)));
        if closed > 0 {
            tracing::info!(
                shard = self.shard.id,
                closed,
                "client connections closed: the key of their token was removed"
            );
        }
    }
}

/// One shard: its listeners, its links, its owner service, then its
/// accept loop.
async fn run_shard(
    plan: ShardPlan,
    mesh: Option<MeshBuilder<ToOwner, glommio::channels::channel_mesh::Full>>,
    herald: &mut Herald,
) -> Result<(), String> {
    // Bound before anything else, so that the first shard can tell the
    // others which port a port 0 became.
    let listener =
        TcpListener::bind(plan.bound.client).map_err(|e| bind_error("", plan.bound.client, e))?;
    let peer_listener = TcpListener::bind(plan.bound.peer)
        .map_err(|e| bind_error(" for links", plan.bound.peer, e))?;
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| format!("reading a bound address: {e}"))
    };
    let client_tls_listener = match plan.bound.client_tls {
        Some(addr) => Some(
            TcpListener::bind(addr).map_err(|e| bind_error(" for clients over TLS", addr, e))?,
        ),
        None => None,
    };
    let bind_phones = |addr: Option<SocketAddr>, what: &str| match addr {
        Some(addr) => TcpListener::bind(addr)
            .map(Some)
            .map_err(|e| bind_error(&format!(" for phone apps over {what}"), addr, e)),
        None => Ok(None),
    };
    let http_listener = bind_phones(plan.bound.http, "HTTP")?;
    let https_listener = bind_phones(plan.bound.https, "HTTPS")?;
    let bound_at = |l: &Option<TcpListener>| match l {
        Some(l) => local(l).map(Some),
        None => Ok(None),
    };
    let mut bound = Bound {
        client: local(&listener)?,
        peer: local(&peer_listener)?,
        admin: None,
        client_tls: bound_at(&client_tls_listener)?,
        http: bound_at(&http_listener)?,
        https: bound_at(&https_listener)?,
    };
    // The admin endpoint is small: one shard serves it, the first started
    // (its number on the mesh is not known yet); the others are not given
    // an admin address.
    let admin_listener = match plan.bound.admin {
        Some(addr) => {
            let l =
                TcpListener::bind(addr).map_err(|e| bind_error(" for admin requests", addr, e))?;
            bound.admin = Some(local(&l)?);
            Some(l)
        }
        None => None,
    };
    plan.registry.set_addresses(bound.client, bound.peer);
    herald.say(Started::Bound(bound));
    if let Some(shard) = plan.fail_before_join {
        // The first shard's number on the mesh is not known yet; the fault
        // names shards by start order, which the herald knows.
        if herald.shard == shard {
            return Err(format!(
                "shard {shard}: failed before joining the mesh (test fault)"
            ));
        }
    }
    let (senders, receivers) = match mesh {
        Some(mesh) => {
            // The join waits for every shard; one that failed never comes,
            // and `start` then asks the rest to stop: this one listens.
            let joined = futures_lite::future::or(async { Some(mesh.join().await) }, async {
                plan.control.stopped().await;
                None
            });
            let (s, r) = joined
                .await
                .ok_or("stopped while waiting for the other shards")?
                .map_err(|e| format!("joining the shard mesh: {e}"))?;
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
    let ids = plan.ids_for(&config);
    let neighbours: Vec<(Rc<str>, u8, SocketAddr)> = config
        .server(&plan.name)
        .map(|s| {
            s.neighbours
                .iter()
                .filter_map(|n| Some((Rc::from(n.as_str()), ids.id(n), config.peer_addr(n)?)))
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
                .map_err(|e| format!("shard {id}: places upstream: {e}"))?,
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
        plan.journal
            .as_ref()
            .map(|j| Rc::new(Durability::new(j.fsync))),
        plan.flood.clone(),
    ));
    shard.set_trees(plan.trees_for(&config));
    plan.registry.add_shard(shard.metrics.clone());
    // The journal's records go in before the links open: the links' cursors
    // are at the start of the store, so neighbours are sent them too, and
    // catch-up fills in what this server missed while it was down.
    if let (Some(j), Some(durability)) = (&plan.journal, shard.durability()) {
        let opened = journal::open(&shard, j)
            .await
            .map_err(|e| format!("shard {id}: journal: {e}"))?;
        let records = j
            .replayed
            .records
            .get(id)
            .map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default();
        let read = records.len();
        for record in records {
            shard.apply(record, 0);
            // A large journal: let the executor breathe between records.
            glommio::yield_if_needed().await;
        }
        durability.set_replayed(read);
        tracing::info!(
            shard = id,
            read,
            records = shard.records(),
            "journal applied"
        );
        glommio::spawn_local(journal::run(
            shard.clone(),
            durability.clone(),
            j.clone(),
            opened,
        ))
        .detach();
    }
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
    let clients = Clients {
        rules: Rc::new(RefCell::new(ClientRules::of(&config.clients))),
        failures: plan.auth_failures.clone(),
    };
    let live = Rc::new(Live {
        admission: RefCell::new(Rc::new(admission(
            &plan,
            &config,
            &live_neighbours,
            &clients,
        ))),
        clients,
        plan: plan.clone(),
        shard: shard.clone(),
        config: RefCell::new(config.clone()),
        generation: std::cell::Cell::new(generation),
        link_settings,
        neighbours: live_neighbours,
    });
    if let Some(admin_listener) = admin_listener {
        let (registry, shard) = (plan.registry.clone(), shard.clone());
        glommio::spawn_local(async move {
            endpoint::serve(admin_listener, registry, shard.stop.wait()).await;
        })
        .detach();
    }
    herald.say(Started::Ready);
    {
        // Woken by the control's broadcast, never polled: a new config in
        // force, or the stop.
        let (shard, live, control) = (shard.clone(), live.clone(), plan.control.clone());
        glommio::spawn_local(async move {
            loop {
                let changed = control.changed.listen();
                if control.is_stopping() {
                    break;
                }
                live.follow();
                changed.await;
            }
            shard.stop.request();
            shard.connections.stop_reading();
        })
        .detach();
    }
    glommio::spawn_local(publish(shard.clone())).detach();
    glommio::spawn_local(flood::run(
        shard.clone(),
        Duration::from_millis(limits.link_announce_ms),
    ))
    .detach();
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
    glommio::spawn_local(close_idle_clients(shard.clone(), live.clone())).detach();
    let links_in = glommio::spawn_local(accept(
        peer_listener,
        Door::Lines(Port::Peer),
        Limit {
            per_ip: None,
            refused_per_ip: refused_per_ip.clone(),
        },
        router.clone(),
        live.clone(),
    ));
    // The per-IP limit is for clients: a neighbour's links are not.
    let client_limit = || Limit {
        per_ip: Some(plan.per_ip.clone()),
        refused_per_ip: refused_per_ip.clone(),
    };
    let others: Vec<_> = [
        (client_tls_listener, Door::Lines(Port::ClientTls)),
        (http_listener, Door::Phones { https: false }),
        (https_listener, Door::Phones { https: true }),
    ]
    .into_iter()
    .filter_map(|(listener, door)| {
        let listener = listener?;
        Some(glommio::spawn_local(accept(
            listener,
            door,
            client_limit(),
            router.clone(),
            live.clone(),
        )))
    })
    .collect();
    accept(
        listener,
        Door::Lines(Port::Client),
        client_limit(),
        router,
        live,
    )
    .await;
    links_in.await;
    for other in others {
        other.await;
    }
    drain(&shard).await;
    Ok(())
}

/// The message of a listener that could not bind `addr`, with why when its
/// port is one the host gives outgoing connections.
fn bind_error(what: &str, addr: SocketAddr, e: glommio::GlommioError<()>) -> String {
    let hint = match &e {
        glommio::GlommioError::IoError(io) => crate::process::host::bind_hint(addr, io),
        _ => String::new(),
    };
    format!("cannot listen{what} on {addr}: {e}{hint}")
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

/// Failed accepts of one listener, told in at most one log line a second.
#[derive(Default)]
struct AcceptFailures {
    /// Failures not yet told.
    untold: u64,
    /// When the last line was written.
    told_at: Option<std::time::Instant>,
}

impl AcceptFailures {
    /// Counts a failure at `now`; returns how many to tell (this one
    /// included) when a line is due.
    fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        self.untold += 1;
        let due = self.told_at.map_or(true, |at| {
            now.saturating_duration_since(at) >= Duration::from_secs(1)
        });
        if !due {
            return None;
        }
        self.told_at = Some(now);
        Some(std::mem::take(&mut self.untold))
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
    door: Door,
    limit: Limit,
    router: Rc<Router>,
    live: Rc<Live>,
) {
    let shard = live.shard.clone();
    let id = shard.id;
    let mut failures = AcceptFailures::default();
    // Checked on every turn, not only by the race below: an accept that
    // fails at once (out of file descriptors, which the kernel reserves
    // before it waits) never lets the stop branch be polled.
    while !shard.stop.is_requested() {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stop.wait().await;
            None
        });
        let stream = match accepted.await {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of file descriptors or memory: back off, keep serving
                // those already here, and say so once a second, not on
                // every retry.
                if let Some(failed) = failures.note(std::time::Instant::now()) {
                    tracing::warn!(
                        shard = id,
                        ?door,
                        error = %e,
                        failed,
                        "accept failed; retrying every 50 ms (out of file descriptors? see tuning.md)"
                    );
                }
                futures_lite::future::or(
                    glommio::timer::sleep(Duration::from_millis(50)),
                    shard.stop.wait(),
                )
                .await;
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
                ?door,
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
            // Clients idle out by the shard's sweep; links are watched by
            // their sessions.
            let peer = door == Door::Lines(Port::Peer);
            let idle_after = (!peer).then_some(admission.idle_timeout);
            let registered = shard
                .connections
                .register(stream.as_raw_fd(), peer, idle_after);
            let activity = registered.activity();
            match door {
                Door::Lines(Port::Peer) => {
                    incoming::serve(stream, router, admission, activity).await
                }
                Door::Lines(port) => {
                    connection::serve(stream, port, router, admission, activity).await
                }
                Door::Phones { https } => {
                    phones::serve(stream, https, router, admission, activity).await
                }
            }
        })
        .detach();
    }
}

/// Closes clients that sent nothing for `limits.client_idle_timeout_ms`
/// while the server waited for them, sweeping eight times per timeout (at
/// most once a second, at least every 10 ms): a client is closed between
/// its timeout and three sweeps after it (see `Activity::idle_at`). A
/// reload's timeout applies to the clients that connect after it, and
/// sets the sweep's pace.
async fn close_idle_clients(shard: Rc<Shard>, live: Rc<Live>) {
    while !shard.stop.is_requested() {
        let idle_timeout = live.admission.borrow().idle_timeout;
        let pace = (idle_timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        glommio::timer::sleep(pace).await;
        let closed = shard.connections.close_idle(Instant::now());
        if closed > 0 {
            tracing::debug!(shard = shard.id, closed, "idle clients closed");
        }
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
        let cutoff = lines::now().saturating_sub(ttl);
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
    // The journal writes and syncs what it has not yet (`everysec` too).
    while shard.durability().is_some_and(|d| !d.idle()) && Instant::now() < deadline {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn words(heard: &mpsc::Receiver<(usize, Started)>) -> Vec<String> {
        heard
            .try_iter()
            .map(|(shard, word)| {
                let word = match word {
                    Started::Bound(_) => "bound".to_owned(),
                    Started::Ready => "ready".to_owned(),
                    Started::Failed(why) => format!("failed: {why}"),
                    Started::Gone => "gone".to_owned(),
                };
                format!("{shard} {word}")
            })
            .collect()
    }

    #[test]
    fn a_shard_that_ends_before_it_serves_says_gone_and_one_that_serves_says_no_more() {
        let (tell, heard) = mpsc::channel();
        let herald = |shard| Herald {
            shard,
            to: tell.clone(),
            done: false,
        };
        let bound = Bound {
            client: "127.0.0.1:1".parse().unwrap(),
            peer: "127.0.0.1:2".parse().unwrap(),
            admin: None,
            client_tls: None,
            http: None,
            https: None,
        };
        // Dropped unrun (an executor that could not be built), or unwound
        // after saying where it bound: `start` still hears a last word.
        drop(herald(1));
        let mut second = herald(2);
        second.say(Started::Bound(bound));
        drop(second);
        // A shard that serves, or failed and said so, says nothing more.
        let mut third = herald(3);
        third.say(Started::Ready);
        drop(third);
        let mut fourth = herald(4);
        fourth.say(Started::Failed("no port".to_owned()));
        drop(fourth);
        assert_eq!(
            words(&heard),
            [
                "1 gone",
                "2 bound",
                "2 gone",
                "3 ready",
                "4 failed: no port"
            ]
        );
    }

    #[test]
    fn failed_accepts_are_told_at_once_then_at_most_once_a_second_with_a_count() {
        let mut failures = AcceptFailures::default();
        let t0 = Instant::now();
        assert_eq!(failures.note(t0), Some(1), "the first is told at once");
        let ms = |n| t0 + Duration::from_millis(n);
        // Retries every 50 ms: the next 19 wait for the second to pass.
        for n in 1..20 {
            assert_eq!(failures.note(ms(50 * n)), None, "retry {n}");
        }
        assert_eq!(failures.note(ms(1000)), Some(20));
        assert_eq!(failures.note(ms(1500)), None);
        assert_eq!(failures.note(ms(2000)), Some(2));
    }
}
