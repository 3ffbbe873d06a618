//! The command line: `herd serve`, `herd up` and `herd check-config`.
//!
//! Parses arguments (clap) and loads the config, then hands over to
//! [`crate::server`] or [`crate::up`]. No protocol or runtime code here.

use crate::config::Config;
use crate::server::{self, ServeOptions};
use crate::up::{self, UpOptions};
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
        /// Shards (pinned executors); default: one per usable core.
        #[arg(long)]
        shards: Option<usize>,
        /// Directory for <NAME>.log.
        #[arg(long, default_value = "logs")]
        log_dir: PathBuf,
        /// Log level or tracing filter: info, or debug to log every line in and out.
        #[arg(long, default_value = "info")]
        log_level: String,
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
    /// Check a config file and explain every problem in it.
    CheckConfig {
        /// The config file.
        file: PathBuf,
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
            log_dir,
            log_level,
        } => server::serve(ServeOptions {
            name,
            config: load(config.as_deref())?,
            shards,
            log_dir,
            log_level,
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
