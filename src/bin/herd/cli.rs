//! The command line: `herd serve`, `herd up`, `herd status`, `herd reload`,
//! `herd check-config`, `herd certs` and `herd token`.
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
    /// Print a token for one client id, signed with the first key of the
    /// config's clients.token_key: the phone proves who it is with
    /// `AUTH CLIENT TOKEN` (or as its HTTP password).
    Token {
        /// The client id the token is for (1 to 255 bytes, no white space).
        client: String,
        /// The herd config (JSON) with the clients section.
        #[arg(long)]
        config: PathBuf,
        /// How long the token is good for, in seconds (default 30 days).
        #[arg(long, default_value_t = DEFAULT_TOKEN_TTL_SECS)]
        ttl: u64,
    },
}

/// A token's life when `--ttl` is not given: 30 days.
const DEFAULT_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

/// The longest `--ttl`: ten years.
const MAX_TOKEN_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

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
        Cmd::Token {
            client,
            config,
            ttl,
        } => token(&config, &client, ttl),
        Cmd::CheckConfig { file } => {
            let config = Config::load(&file)?;
            // Not errors (another host's range may differ): said, not refused.
            if let Some(range) = herd::process::host::ephemeral_range() {
                for warning in config.ephemeral_warnings(range) {
                    eprintln!("warning: {warning}");
                }
            }
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

/// The hosts clients reach server `name` at: the IPs of its client and
/// client TLS addresses (not a wildcard), and `localhost` for loopback.
fn client_hosts(config: &Config, name: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for addr in [config.listen_addr(name), config.client_tls_addr(name)]
        .into_iter()
        .flatten()
    {
        let ip = addr.ip();
        if ip.is_unspecified() {
            continue;
        }
        for host in [
            Some(ip.to_string()),
            ip.is_loopback().then(|| "localhost".to_owned()),
        ]
        .into_iter()
        .flatten()
        {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    hosts
}

/// Runs `herd token`: prints the token on stdout, alone, for scripts; what
/// to know about it goes to stderr.
fn token(config_path: &Path, client: &str, ttl: u64) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let valid_id = !client.is_empty()
        && client.len() <= herd::pure::protocol::MAX_CLIENT_ID
        && !client.bytes().any(herd::pure::protocol::is_field_space);
    if !valid_id {
        anyhow::bail!(
            "{client:?} is not a client id: 1 to {} bytes with no white space",
            herd::pure::protocol::MAX_CLIENT_ID
        );
    }
    if ttl == 0 || ttl > MAX_TOKEN_TTL_SECS {
        anyhow::bail!("--ttl {ttl}: from 1 second to {MAX_TOKEN_TTL_SECS} (ten years)");
    }
    let key = config.clients.signing_key().with_context(|| {
        format!(
            "{} has no clients.token_key to sign with; add one (`openssl rand -hex 32`) and \
             \"auth\": \"token\" to its clients section",
            config_path.display()
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let expiry = now + ttl;
    println!("{}", herd::pure::token::issue(&key, client, expiry));
    eprintln!(
        "token for {client}, good until {expiry} (UNIX seconds); send `AUTH {client} <token>`"
    );
    if config.clients.auth != herd::pure::clients::ClientAuth::Token {
        eprintln!(
            "note: clients.auth is not \"token\" in {}: the servers take no tokens until it is",
            config_path.display()
        );
    }
    Ok(())
}

/// Runs `herd certs`: writes the files, then says what to put in the config.
fn certs(config_path: &Path, out: &Path, force: bool) -> anyhow::Result<()> {
    let config = Config::load_before_certs(config_path)?;
    let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
    // Each certificate also names where clients reach its server, so that
    // a client over TLS can check the host it dialled.
    let servers: Vec<(&str, Vec<String>)> = names
        .iter()
        .map(|name| (*name, client_hosts(&config, name)))
        .collect();
    let written = certs::write_herd_certs_with_hosts(&servers, out, force)?;
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
