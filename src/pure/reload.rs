//! What a reload changes: the running config compared with a new one, for
//! one server. Pure: the caller reads and validates the file, and applies
//! what this says.
//!
//! Live: neighbours (links open and close), the secret, the log level,
//! `clients` and every limit but those in [`RESTART_ONLY_LIMITS`]. Addresses, TLS,
//! Places, persistence and the log format are taken at start only; a reload that changes
//! them is applied for the rest and says what waits for a restart.

use crate::pure::config::Config;
use std::net::SocketAddr;

/// Limits read once at start (channels, timers and clients built then).
pub(crate) const RESTART_ONLY_LIMITS: [&str; 5] = [
    "channel_capacity",
    "link_tree",
    "places_timeout_ms",
    "record_ttl_ms",
    "spin_before_park_us",
];

/// What a new config changes for one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// New neighbours and their peer addresses: links to open.
    pub added: Vec<(String, SocketAddr)>,
    /// Neighbours gone: links to close.
    pub removed: Vec<String>,
    /// Live settings that changed (limits by name, `secret`, `logging.level`).
    pub live: Vec<String>,
    /// Settings that changed but apply only after a restart.
    pub restart_only: Vec<String>,
}

impl Changes {
    /// Whether nothing changes.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    /// One line for the log and the reply of `herd reload`.
    pub(crate) fn summary(&self) -> String {
        if self.is_empty() {
            return "no changes".to_owned();
        }
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            let names: Vec<&str> = self.added.iter().map(|(n, _)| n.as_str()).collect();
            parts.push(format!("links opened to {}", names.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("links closed to {}", self.removed.join(", ")));
        }
        if !self.live.is_empty() {
            parts.push(format!("changed {}", self.live.join(", ")));
        }
        if !self.restart_only.is_empty() {
            parts.push(format!(
                "not applied until a restart: {}",
                self.restart_only.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// What changes for server `name` going from `old` to `new` (both valid).
/// `Err` when `new` cannot be applied at all: it no longer has the server.
pub(crate) fn compare(old: &Config, new: &Config, name: &str) -> Result<Changes, String> {
    let (Some(was), Some(now)) = (old.server(name), new.server(name)) else {
        return Err(format!(
            "{name} is not a server of the new config; the old config stays in force"
        ));
    };
    let mut changes = Changes::default();
    // A neighbour whose peer address moved is closed and opened anew.
    let peer = |c: &Config, n: &str| c.peer_addr(n);
    for n in &was.neighbours {
        if !now.neighbours.contains(n) || peer(old, n) != peer(new, n) {
            changes.removed.push(n.clone());
        }
    }
    for n in &now.neighbours {
        if !was.neighbours.contains(n) || peer(old, n) != peer(new, n) {
            if let Some(addr) = peer(new, n) {
                changes.added.push((n.clone(), addr));
            }
        }
    }
    let restart = &mut changes.restart_only;
    if old.listen_addr(name) != new.listen_addr(name) {
        restart.push("listen".to_owned());
    }
    if old.peer_addr(name) != new.peer_addr(name) {
        restart.push("peer_listen".to_owned());
    }
    if old.admin_addr(name) != new.admin_addr(name) {
        restart.push("admin_listen".to_owned());
    }
    if old.client_tls_addr(name) != new.client_tls_addr(name) {
        restart.push("client_tls_listen".to_owned());
    }
    if old.http_addr(name) != new.http_addr(name) {
        restart.push("http_listen".to_owned());
    }
    if old.https_addr(name) != new.https_addr(name) {
        restart.push("https_listen".to_owned());
    }
    if old.tls != new.tls {
        restart.push("tls".to_owned());
    }
    if old.client_tls != new.client_tls {
        restart.push("client_tls".to_owned());
    }
    if old.places != new.places {
        restart.push("places".to_owned());
    }
    if old.logging.format != new.logging.format {
        restart.push("logging.format".to_owned());
    }
    // The journal's files are opened and replayed at start only.
    if old.persistence != new.persistence {
        restart.push("persistence".to_owned());
    }
    if old.secret != new.secret {
        // Never the value: only that it changed.
        changes.live.push("secret".to_owned());
    }
    if old.logging.level != new.logging.level {
        changes.live.push("logging.level".to_owned());
    }
    // Never the keys: only what changed.
    if old.clients.auth != new.clients.auth {
        changes.live.push("clients.auth".to_owned());
    }
    if old.clients.token_key != new.clients.token_key {
        changes.live.push("clients.token_key".to_owned());
    }
    if old.clients.read != new.clients.read {
        changes.live.push("clients.read".to_owned());
    }
    if old.insecure_clients != new.insecure_clients {
        changes.live.push("insecure_clients".to_owned());
    }
    // Limits by name, through their JSON form: every field, no list to forget.
    let (a, b) = (
        serde_json::to_value(&old.limits).unwrap_or_default(),
        serde_json::to_value(&new.limits).unwrap_or_default(),
    );
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (field, value) in b {
            if a.get(field) != Some(value) {
                let label = format!("limits.{field}");
                if RESTART_ONLY_LIMITS.contains(&field.as_str()) {
                    changes.restart_only.push(label);
                } else {
                    changes.live.push(label);
                }
            }
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn herd() -> Config {
        Config::default_herd()
    }

    #[test]
    fn a_persistence_change_waits_for_a_restart() {
        let mut new = herd();
        new.persistence = Some(crate::pure::config::PersistenceConfig {
            dir: "data".into(),
            fsync: crate::pure::config::Fsync::Always,
        });
        let c = compare(&herd(), &new, "Goloman").expect("applies");
        assert_eq!(c.restart_only, vec!["persistence".to_owned()]);
        assert!(c.live.is_empty());
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let c = compare(&herd(), &herd(), "Goloman").expect("same herd");
        assert!(c.is_empty());
        assert_eq!(c.summary(), "no changes");
    }

    #[test]
    fn a_new_neighbour_is_added_and_a_dropped_one_removed() {
        let old = herd();
        let mut new = herd();
        // Welsh becomes Goloman's neighbour instead of Hands.
        new.servers[0].neighbours = vec!["Holiday".into(), "Wilkes".into(), "Welsh".into()];
        new.servers[1].neighbours = vec!["Wilkes".into()];
        new.servers[4].neighbours = vec!["Holiday".into(), "Goloman".into()];
        new.validate().expect("valid");
        let c = compare(&old, &new, "Goloman").expect("applies");
        assert_eq!(
            c.added,
            [("Welsh".to_owned(), "127.0.0.1:22142".parse().expect("addr"))]
        );
        assert_eq!(c.removed, ["Hands"]);
        assert!(c.restart_only.is_empty() && c.live.is_empty());
        assert_eq!(c.summary(), "links opened to Welsh; links closed to Hands");
    }

    #[test]
    fn a_neighbour_that_moved_is_closed_and_opened_at_its_new_address() {
        let old = herd();
        let mut new = herd();
        new.servers[1].peer_listen = Some("127.0.0.1:23000".into());
        let c = compare(&old, &new, "Goloman").expect("applies");
        assert_eq!(c.removed, ["Hands"]);
        assert_eq!(
            c.added,
            [("Hands".to_owned(), "127.0.0.1:23000".parse().expect("addr"))]
        );
        // Hands itself must restart to listen there.
        let c = compare(&old, &new, "Hands").expect("applies");
        assert_eq!(c.restart_only, ["peer_listen"]);
    }

    #[test]
    fn limits_are_live_except_those_built_at_start() {
        let old = herd();
        let mut new = herd();
        new.limits.max_line_bytes = 200;
        new.limits.max_connections_per_ip = Some(3);
        new.limits.channel_capacity = 7;
        new.secret = Some("hush".into());
        new.logging.level = Some("debug".into());
        let c = compare(&old, &new, "Welsh").expect("applies");
        assert_eq!(
            c.live,
            [
                "secret",
                "logging.level",
                "limits.max_connections_per_ip",
                "limits.max_line_bytes"
            ]
        );
        assert_eq!(c.restart_only, ["limits.channel_capacity"]);
        assert!(!c.summary().contains("hush"), "a secret is never shown");
    }

    #[test]
    fn a_config_without_this_server_is_refused() {
        let mut new = herd();
        new.servers
            .retain(|s| s.name == "Welsh" || s.name == "Holiday");
        new.servers[0].neighbours = vec!["Welsh".into()];
        let err = compare(&herd(), &new, "Goloman").expect_err("gone");
        assert!(
            err.contains("Goloman is not a server of the new config"),
            "{err}"
        );
    }
}
