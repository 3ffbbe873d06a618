//! `herd serve`: one server as a process. Around [`start`], which runs the
//! shards, it adds what belongs to a process: the log file, signals
//! (SIGTERM/SIGINT stop, SIGHUP reopens the log and reloads), the start-up
//! line on stderr, and systemd's readiness notice.

use anyhow::Context;
use herd::process::server::{start, Control, SetLogLevel, StartOptions};
use herd::pure::config::Config;
use std::path::PathBuf;
use std::sync::Arc;

/// How to run one server of the herd as this process.
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

/// Set by `herd up` in each server it starts: its own process id.
pub const UP_PARENT_ENV: &str = "HERD_UP_PARENT";

/// Runs one server until the process is stopped.
pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    follow_herd_up()?;
    // Before the log file is made: a name that is no server gets no log.
    if opts.config.server(&opts.name).is_none() {
        let names: Vec<&str> = opts
            .config
            .servers
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        anyhow::bail!(
            "{} is not a server of this herd; its servers are {}",
            opts.name,
            names.join(", ")
        );
    }
    let level = opts
        .log_level
        .clone()
        .or_else(|| opts.config.logging.level.clone())
        .unwrap_or_else(|| "info".to_owned());
    // Kept here, not in a thread: dropped at return, it writes the last
    // lines ("shard stopped") before the process exits.
    let (logging, _log_guard) = crate::logging::init(
        &opts.log_dir,
        &opts.name,
        &level,
        opts.config.logging.format,
    )?;
    let logging = Arc::new(logging);
    let set_log_level: Option<SetLogLevel> = match opts.log_level {
        // Given on the command line: it holds, whatever a reload says.
        Some(_) => None,
        None => {
            let logging = logging.clone();
            Some(Arc::new(move |level: &str| logging.set_level(level)))
        }
    };
    // Each connection is a descriptor; the soft default would cap a
    // server at about a thousand clients.
    herd::process::server::raise_open_file_limit();
    let running = start(
        opts.config,
        StartOptions {
            name: opts.name.clone(),
            config_dir: opts.config_dir,
            config_path: opts.config_path,
            shards: opts.shards,
            cpus: opts.cpus,
            set_log_level,
            ..StartOptions::default()
        },
    )?;
    stop_on_signals(running.control(), logging.clone())?;
    if let Some(range) = herd::process::host::ephemeral_range() {
        let mine = format!("{}: ", opts.name);
        for warning in running.config_warnings(range) {
            if warning.starts_with(&mine) {
                tracing::warn!("{warning}");
            }
        }
    }
    eprintln!("{}; log {}", running.summary(), logging.path().display());
    let bound = running.bound();
    tracing::info!(
        server = %opts.name,
        listen = %bound.client,
        peer_listen = %bound.peer,
        admin = ?bound.admin,
        shards = running.cpus().len(),
        "started"
    );
    notify_systemd_ready();
    running.wait()?;
    tracing::info!(server = %opts.name, "stopped");
    eprintln!("herd {} stopped", opts.name);
    Ok(())
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
fn stop_on_signals(
    control: Arc<Control>,
    logging: Arc<crate::logging::Logging>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("herd-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    if let Err(e) = logging.reopen() {
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
                    control.stop();
                } else {
                    eprintln!("herd: second signal: exiting now");
                    std::process::exit(130);
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// A server started by `herd up` must not outlive it: when `herd up` ends
/// without stopping its servers (killed with SIGKILL, or its wrapper gone),
/// the kernel sends the server SIGTERM, its graceful stop.
fn follow_herd_up() -> anyhow::Result<()> {
    let Ok(parent) = std::env::var(UP_PARENT_ENV) else {
        return Ok(());
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .context("asking to be stopped with herd up")?;
    // `herd up` may have died before the request above: then no signal
    // comes, and this server's parent is no longer it.
    if nix::unistd::getppid().as_raw().to_string() != parent {
        anyhow::bail!("herd up (pid {parent}) that started this server is gone");
    }
    Ok(())
}
