//! The command line: `herd serve`, `herd up`, `herd status`, `herd reload`,
//! `herd check-config` and `herd certs`.
//!
//! Parses arguments (clap) and loads the config, then hands over to
//! `serve` (around [`herd::start`]), [`crate::up`],
//! [`herd::ops::status`] or [`herd::process::certs`]. No protocol code
//! here, and no runtime of its own. (The local Places mock is a binary of
//! its own, `herd-places-mock`.)

use crate::serve::{self, ServeOptions};
use crate::up::{self, UpOptions};
use anyhow::Context;
use clap::{Parser, Subcommand};
use herd::ops::status;
use herd::process::certs;
use herd::pure::config::Config;
use std::io::Write;
use std::path::{Path, PathBuf};

/// herd: a thread-per-core server herd for mobile location updates.
#[derive(Debug, Parser)]
#[command(name = "herd", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one server of the herd.
    Serve {
        /// The server's name in the config (e.g. Goloman).
        name: String,
        /// Herd config (JSON); the default five-server herd if absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Shards (pinned executors); default: one per CPU to run on.
        #[arg(long)]
        shards: Option<usize>,
        /// CPUs to pin shards to, e.g. 2,3 (default: the affinity mask).
        #[arg(long, value_delimiter = ',')]
        cpus: Option<Vec<usize>>,
        /// Directory for `<NAME>.log`.
        #[arg(long, default_value = "logs")]
        log_dir: PathBuf,
        /// Log level or tracing filter: info, or debug to log every line in
        /// and out. Default: the config's logging.level, else info; when
        /// given here, a reload does not change it.
        #[arg(long)]
        log_level: Option<String>,
    },
    /// Run every server of the herd on this host until Ctrl-C.
    Up {
        /// Herd config (JSON); the default five-server herd if absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Shards per server.
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// Directory for the servers' logs.
        #[arg(long, default_value = "logs")]
        log_dir: PathBuf,
        /// Log level of every server.
        #[arg(long, default_value = "debug")]
        log_level: String,
    },
    /// Show every server of the herd, its links and its rates, refreshed
    /// every second (from each server's admin endpoint, GET /status).
    Status {
        /// Herd config (JSON); the default five-server herd if absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one table (two samples a second apart, for the rates) and
        /// exit, without clearing the screen.
        #[arg(long)]
        once: bool,
    },
    /// Ask a running server to re-read its config file (as SIGHUP does),
    /// through its admin endpoint; says what changed, or why the new config
    /// was refused (exit 1).
    Reload {
        /// The server's name in the config.
        name: String,
        /// Herd config (JSON) that says where the server's admin endpoint
        /// is; the default five-server herd if absent.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a config file and explain every problem in it.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Make a CA and a certificate and key per server of a config, for TLS on
    /// links; prints the "tls" section to put in the config.
    Certs {
        /// The herd config (JSON) whose servers get certificates.
        #[arg(long)]
        config: PathBuf,
        /// Directory to write ca.pem, ca-key.pem, NAME.pem and NAME-key.pem into.
        #[arg(long)]
        out: PathBuf,
        /// Replace files that already exist (every server then needs the new ones).
        #[arg(long)]
        force: bool,
    },
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default_herd()),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve {
            name,
            config,
            shards,
            cpus,
            log_dir,
            log_level,
        } => serve::serve(ServeOptions {
            name,
            // Relative paths in the config (TLS files) are from its folder.
            config_dir: config.as_deref().map_or_else(
                || std::path::PathBuf::from("."),
                herd::pure::config::config_dir,
            ),
            config: load(config.as_deref())?,
            config_path: config,
            shards: shards.or(cpus.as_ref().map(Vec::len)),
            log_dir,
            log_level,
            cpus,
        }),
        Cmd::Up {
            config,
            shards,
            log_dir,
            log_level,
        } => {
            let herd = load(config.as_deref())?;
            let config_path = config
                .map(|p| {
                    std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()))
                })
                .transpose()?;
            up::up(UpOptions {
                config_path,
                config: herd,
                shards: shards.max(1),
                log_dir,
                log_level,
            })
        }
        Cmd::Reload { name, config } => {
            // An invalid file would be refused by the server too: say so
            // here, without asking it.
            let herd = load(config.as_deref()).map_err(|e| {
                anyhow::anyhow!(
                    "the config is not valid, so {name} was not asked to reload:\n{e:#}"
                )
            })?;
            reload(&herd, &name)
        }
        Cmd::Status { config, once } => {
            let herd = load(config.as_deref())?;
            let label =
                config.map_or_else(|| "default herd".to_owned(), |p| p.display().to_string());
            status(&herd, &label, once)
        }
        Cmd::Certs { config, out, force } => certs(&config, &out, force),
        Cmd::CheckConfig { file } => {
            let config = Config::load(&file)?;
            println!(
                "{}: ok, {} servers: {}",
                file.display(),
                config.servers.len(),
                config
                    .servers
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
    }
}

/// Runs `herd reload NAME`: `POST /reload` on the server's admin endpoint.
fn reload(config: &Config, name: &str) -> anyhow::Result<()> {
    if config.server(name).is_none() {
        anyhow::bail!("{name} is not a server of this herd");
    }
    let addr = config
        .admin_addr(name)
        .with_context(|| format!("{name} has no admin endpoint (admin_listen is null)"))?;
    let raw =
        herd::ops::status::request(addr, "POST", "/reload", std::time::Duration::from_secs(10))
            .with_context(|| format!("asking {name} at {addr} to reload"))?;
    let response = herd::ops::status::parse_response(&raw)
        .with_context(|| format!("the answer of {name} at {addr}"))?;
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let message = body["message"].as_str().map_or_else(
        || String::from_utf8_lossy(&response.body).into_owned(),
        str::to_owned,
    );
    match response.status {
        200 => {
            println!("{name}: reloaded: {message}");
            Ok(())
        }
        _ => anyhow::bail!("{name}: reload refused, the old config stays in force:\n{message}"),
    }
}

/// Moves the cursor home and clears the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Runs `herd status`: with `once`, prints one table and returns; else
/// redraws the table every second until the process is interrupted.
/// `label` names the herd in the title (its config file).
fn status(config: &Config, label: &str, once_only: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout();
    if once_only {
        stdout
            .write_all(status::once(config, status::INTERVAL, status::FETCH_TIMEOUT).as_bytes())
            .context("writing to stdout")?;
        return Ok(());
    }
    let mut sampler = status::Sampler::default();
    loop {
        let started = std::time::Instant::now();
        let table = herd::ops::status_view::render(&sampler.round(config, status::FETCH_TIMEOUT));
        let frame = format!("{CLEAR}herd status: {label} (every second; Ctrl-C to quit)\n{table}");
        stdout
            .write_all(frame.as_bytes())
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
        std::thread::sleep(status::INTERVAL.saturating_sub(started.elapsed()));
    }
}

/// Runs `herd certs`: writes the files, then says what to put in the config.
fn certs(config_path: &Path, out: &Path, force: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
    let written = certs::write_herd_certs(&names, out, force)?;
    println!(
        "wrote {} files into {}: ca.pem and ca-key.pem (the herd CA; keep ca-key.pem \
         off the servers), and NAME.pem and NAME-key.pem for {}",
        written.len(),
        out.display(),
        names.join(", ")
    );
    println!(
        "each server needs ca.pem and its own two files; put this in {}:",
        config_path.display()
    );
    let section = certs::tls_section(&herd::pure::config::config_dir(config_path), out);
    println!("  {section}");
    Ok(())
}
