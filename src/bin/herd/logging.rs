//! Logging set-up: tracing to `<log-dir>/<name>.log` through a non-blocking
//! writer, so a slow disk never stalls a shard; text or JSON lines; a level
//! that a reload changes in place; a file that SIGHUP reopens (logrotate
//! moves the file, then signals).
//!
//! Owns only the subscriber; what is logged is decided where it happens.

use anyhow::Context;
use herd::pure::config::LogFormat;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The log file, reopened by path on request. Written only by the
/// non-blocking writer's own thread, so the lock is never contended on a
/// shard.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Log lines waiting for the writer thread at most (see `init`).
const LOG_QUEUE_LINES: usize = 16_384;

/// The writer handed to the non-blocking worker.
struct Writer(Arc<LogFile>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().flush()
    }
}

/// A running logger's controls (level, reopening), shared with the
/// threads that reload and signal.
pub struct Logging {
    level: reload::Handle<EnvFilter, Registry>,
    file: Arc<LogFile>,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging")
            .field("file", &self.file.path)
            .finish_non_exhaustive()
    }
}

impl Logging {
    /// Changes the level (or filter) in place.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter =
            EnvFilter::try_new(level).map_err(|e| format!("bad log level {level:?}: {e}"))?;
        self.level
            .reload(filter)
            .map_err(|e| format!("changing the log level: {e}"))
    }

    /// Reopens the log file by its path: after logrotate moved the old one,
    /// new lines go to a new file there.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = LogFile::open(&self.file.path)?;
        let mut file = self.file.lock();
        let _ = file.flush();
        *file = fresh;
        Ok(())
    }

    /// Where the log goes.
    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

/// Starts logging to `<dir>/<name>.log` at `level`, in `format`. Keep the
/// guard until the server returns: dropping it writes the lines still
/// buffered (the controls live on in threads that never end).
pub fn init(
    dir: &Path,
    name: &str,
    level: &str,
    format: LogFormat,
) -> anyhow::Result<(Logging, WorkerGuard)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating log directory {}", dir.display()))?;
    let path = dir.join(format!("{name}.log"));
    let file = Arc::new(LogFile {
        file: Mutex::new(
            LogFile::open(&path).with_context(|| format!("opening {}", path.display()))?,
        ),
        path,
    });
    // Lossy: under overload, dropping log lines beats stalling the server.
    // The queue's slots are all written when it is made, so its length is
    // resident memory from the start: the default 128,000 lines held 4 MiB
    // of every server's RSS. Herd logs events, not requests; 16,384 lines
    // (512 KiB) outlast any burst the writer thread cannot keep up with.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(Writer(file.clone()));
    let filter = EnvFilter::try_new(level).with_context(|| format!("bad log level {level:?}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .with_thread_names(true);
    let registry = tracing_subscriber::registry().with(filter);
    let started = match format {
        LogFormat::Text => registry.with(lines).try_init(),
        LogFormat::Json => registry.with(lines.json()).try_init(),
    };
    started.map_err(|e| anyhow::anyhow!("starting the logger: {e}"))?;
    Ok((
        Logging {
            level: handle,
            file,
        },
        guard,
    ))
}
