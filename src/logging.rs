//! Logging set-up: tracing to `<log-dir>/<name>.log` through a non-blocking
//! writer, so a slow disk never stalls a shard.
//!
//! Owns only the subscriber; what is logged is decided where it happens.

use anyhow::Context;
use std::path::Path;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Starts logging; keep the guard alive until exit so buffered lines are written.
pub fn init(dir: &Path, name: &str, level: &str) -> anyhow::Result<WorkerGuard> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating log directory {}", dir.display()))?;
    let file = tracing_appender::rolling::never(dir, format!("{name}.log"));
    // Lossy: under overload, dropping log lines beats stalling the server.
    let (writer, guard) = tracing_appender::non_blocking(file);
    let filter = EnvFilter::try_new(level).with_context(|| format!("bad log level {level:?}"))?;
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_thread_names(true)
        .with_env_filter(filter)
        .try_init()
        .map_err(|e| anyhow::anyhow!("starting the logger: {e}"))?;
    Ok(guard)
}
