//! The config in force and the stop, shared by a server's shards and the
//! threads that change them (signals, the admin endpoint's `POST /reload`,
//! [`crate::Running`]).

use crate::pure::config::Config;
use event_listener::Event;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Sets the log level in force (a reload changed `logging.level`).
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

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
    pub(super) changed: Event,
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
    /// Server `name`'s control, with `config` in force, re-read from
    /// `path` on a reload.
    pub(super) fn new(
        name: &str,
        path: Option<PathBuf>,
        config: Config,
        set_log_level: Option<SetLogLevel>,
    ) -> Control {
        Control {
            name: name.to_owned(),
            path,
            current: Mutex::new(Arc::new(config)),
            generation: AtomicU64::new(0),
            set_log_level,
            stopping: AtomicBool::new(false),
            changed: Event::new(),
        }
    }

    /// The config in force and its generation.
    pub(super) fn current(&self) -> (u64, Arc<Config>) {
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
    pub(super) fn put_in_force(&self, new: Config) -> Result<String, String> {
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

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once the stop is asked for.
    pub(super) async fn stopped(&self) {
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
