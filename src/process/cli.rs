//! The command line: `herd serve`, `herd up`, `herd status`,
//! `herd check-config`, `herd places-mock` and `herd certs`.
//!
//! Parses arguments (clap) and loads the config, then hands over to
//! [`crate::process::server`], [`crate::process::up`],
//! [`crate::ops::status`] or [`crate::process::certs`]. No protocol code
//! here; the one runtime it starts itself is the executor of `herd
//! places-mock`.

use crate::process::server::{self, ServeOptions};
use crate::process::up::{self, UpOptions};
use crate::pure::config::Config;
use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Run a local stand-in for the Google Places Nearby Search API (sample
    /// data) for tests, benchmarks and demos.
    PlacesMock {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:12150")]
        listen: std::net::SocketAddr,
        /// Delay before every answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Serve HTTPS with a fresh CA and certificate (for localhost and
        /// 127.0.0.1); the CA is written to --tls-ca-out.
        #[arg(long)]
        tls: bool,
        /// Where --tls writes the CA certificate clients must trust.
        #[arg(long, default_value = "places-mock-ca.pem")]
        tls_ca_out: PathBuf,
        /// Fault for every request: none, 500, hang, notjson, or a Google
        /// status such as OVER_QUERY_LIMIT.
        #[arg(long, default_value = "none")]
        fault: String,
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
        } => server::serve(ServeOptions {
            name,
            // Relative paths in the config (TLS files) are from its folder.
            config_dir: config.as_deref().map_or_else(
                || std::path::PathBuf::from("."),
                crate::pure::config::config_dir,
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
            crate::ops::status::run(&herd, &label, once)
        }
        Cmd::PlacesMock {
            listen,
            latency_ms,
            tls,
            tls_ca_out,
            fault,
        } => places_mock(listen, latency_ms, tls.then_some(tls_ca_out), &fault),
        Cmd::Certs { config, out, force } => crate::process::certs::run(&config, &out, force),
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
        crate::ops::status::request(addr, "POST", "/reload", std::time::Duration::from_secs(10))
            .with_context(|| format!("asking {name} at {addr} to reload"))?;
    let response = crate::ops::status::parse_response(&raw)
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

/// Runs `herd places-mock` on one glommio executor until the process ends.
fn places_mock(
    listen: std::net::SocketAddr,
    latency_ms: u64,
    tls_ca_out: Option<PathBuf>,
    fault: &str,
) -> anyhow::Result<()> {
    use crate::places::mock::{self as places_mock, MockSettings};
    let tls = match &tls_ca_out {
        Some(path) => {
            let pki = places_mock::local_pki().context("making a TLS certificate")?;
            std::fs::write(path, &pki.ca_pem)
                .with_context(|| format!("writing {}", path.display()))?;
            Some((pki.cert_pem.into_bytes(), pki.key_pem.into_bytes()))
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let settings = MockSettings {
        listen,
        latency: std::time::Duration::from_millis(latency_ms),
        tls,
        fault: places_mock::Fault::parse(fault),
    };
    let ca_note = tls_ca_out.map(|p| format!("; trust the CA in {}", p.display()));
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("places-mock")
        .spawn(move || async move {
            places_mock::serve(settings, |addr| {
                println!(
                    "places-mock listening on {scheme}://{addr} (sample data, not real places){}",
                    ca_note.unwrap_or_default()
                );
            })
            .await
        })
        .map_err(|e| anyhow::anyhow!("starting places-mock: {e}"))?;
    executor
        .join()
        .map_err(|e| anyhow::anyhow!("places-mock: {e}"))?
        .with_context(|| format!("places-mock on {listen}"))
}
