//! Herd configuration: which servers exist, where each listens, who its neighbours are,
//! the shared secret and the resource limits.
//!
//! Owns the JSON config format, the built-in default herd, validation (every problem is
//! reported at once, so one edit fixes a config) and the PEER credential derived from the
//! secret. It must not open sockets or do other I/O: the only exceptions are
//! `Config::load` reading its file and resolving the literal host name `localhost`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Longest server name accepted, in bytes, so names always fit easily in a protocol line.
pub const MAX_NAME_BYTES: usize = 64;
/// Smallest `max_line_bytes`: below this not even a PEER greeting fits in a line.
const MIN_LINE_BYTES: usize = 64;
/// Largest `max_line_bytes` (1 MiB): beyond this one client could pin too much memory.
const MAX_LINE_BYTES: usize = 1 << 20;

/// The herd used when no config file is given: (name, port on 127.0.0.1, neighbours).
const DEFAULT_HERD: [(&str, u16, &[&str]); 5] = [
    ("Goloman", 12138, &["Hands", "Holiday", "Wilkes"]),
    ("Hands", 12139, &["Goloman", "Wilkes"]),
    ("Holiday", 12140, &["Goloman", "Welsh", "Wilkes"]),
    ("Wilkes", 12141, &["Goloman", "Hands", "Holiday"]),
    ("Welsh", 12142, &["Holiday"]),
];

/// A whole herd: its servers, the optional shared secret and the limits every server obeys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shared secret for PEER credentials; `None` means links are not authenticated.
    pub secret: Option<String>,
    /// The servers of the herd, in file order.
    // Defaulted so a missing list is reported by `validate` in plain words.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    /// Resource limits; any field left out of the file takes its default.
    #[serde(default)]
    pub limits: Limits,
    /// Where WHATSAT answers come from.
    #[serde(default)]
    pub places: PlacesConfig,
}

/// Which Places provider answers WHATSAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Google when a key is set (environment or file), else offline.
    #[default]
    Auto,
    /// Google Places over HTTPS; needs a key.
    Google,
    /// Any server of the legacy Nearby Search API at `base_url`, such as
    /// `herd places-mock`.
    Mock,
    /// Built-in deterministic sample data; no network.
    Offline,
}

/// Settings of the Places client (one per shard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacesConfig {
    /// The provider.
    pub provider: Provider,
    /// Base URL (`http://` or `https://`); Google's when absent.
    pub base_url: Option<String>,
    /// API key; `HERD_PLACES_KEY` in the environment takes precedence.
    pub key: Option<String>,
    /// Idle keep-alive connections kept per shard.
    pub pool_connections: usize,
    /// Upstream requests in flight per shard; more wait (within the timeout).
    pub max_in_flight: usize,
    /// Answers cached per shard.
    pub cache_entries: usize,
    /// Bytes of rendered answers cached per shard (the cache holds answers as reply
    /// bytes); whichever of this and `cache_entries` is reached first evicts.
    pub cache_bytes: usize,
    /// Grid cell, in metres, that WHATSAT locations snap to so near lookups share one
    /// upstream query (fetched with a larger radius, filtered per client); 0: off.
    pub snap_m: u32,
    /// How long a cached answer is served, in milliseconds.
    pub cache_ttl_ms: u64,
    /// Retries of a request that failed before any answer (never after a timeout).
    pub retries: u32,
    /// PEM file of extra CA certificates to trust (e.g. a test CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for PlacesConfig {
    fn default() -> Self {
        PlacesConfig {
            provider: Provider::Auto,
            base_url: None,
            key: None,
            pool_connections: 8,
            max_in_flight: 64,
            cache_entries: 4096,
            cache_bytes: crate::places::DEFAULT_CACHE_BYTES,
            snap_m: 0,
            cache_ttl_ms: 60_000,
            retries: 1,
            ca_file: None,
        }
    }
}

/// Default `limits.max_records`: about 1.4 GB of records.
pub const DEFAULT_MAX_RECORDS: u64 = 10_000_000;

/// Largest `limits.max_records`: a shard numbers its slots with 32 bits.
pub const MAX_RECORDS: u64 = u32::MAX as u64 - 1;

/// Smallest useful `places.cache_bytes`: a few rendered answers.
pub const MIN_CACHE_BYTES: usize = 64 * 1024;

/// Coarsest `places.snap_m` accepted, metres.
pub const MAX_SNAP_M: u32 = 5_000;

/// Google's base URL for the legacy Places API.
pub const GOOGLE_BASE_URL: &str = "https://maps.googleapis.com";

/// The provider a server will use, settled from the config and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacesSource {
    /// Built-in sample data.
    Offline,
    /// An HTTP(S) upstream.
    Http {
        /// Base URL.
        base_url: String,
        /// API key, if any.
        key: Option<String>,
    },
}

impl PlacesConfig {
    /// Settles the provider; `env_key` is `HERD_PLACES_KEY` if set.
    pub fn resolve(&self, env_key: Option<String>) -> Result<PlacesSource, String> {
        let key = env_key
            .filter(|k| !k.is_empty())
            .or_else(|| self.key.clone());
        let base = || {
            self.base_url
                .clone()
                .unwrap_or_else(|| GOOGLE_BASE_URL.to_owned())
        };
        match self.provider {
            Provider::Offline => Ok(PlacesSource::Offline),
            Provider::Auto if key.is_none() => Ok(PlacesSource::Offline),
            Provider::Auto => Ok(PlacesSource::Http {
                base_url: base(),
                key,
            }),
            Provider::Google if key.is_none() => Err(
                "places provider google needs an API key: set HERD_PLACES_KEY or places.key"
                    .to_owned(),
            ),
            Provider::Google => Ok(PlacesSource::Http {
                base_url: base(),
                key,
            }),
            Provider::Mock => match &self.base_url {
                Some(url) => Ok(PlacesSource::Http {
                    base_url: url.clone(),
                    key,
                }),
                None => Err("places provider mock needs places.base_url".to_owned()),
            },
        }
    }
}

/// One server of the herd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unique name: 1 to 64 bytes of printable ASCII, no white space.
    pub name: String,
    /// TCP address to listen on, exactly as written in the file (`host:port`).
    pub listen: String,
    /// Names of the servers this one floods to; must be symmetric across the herd.
    #[serde(default)]
    pub neighbours: Vec<String>,
}

/// Resource limits shared by every server of the herd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest accepted input line in bytes, its line ending not counted.
    pub max_line_bytes: usize,
    /// Most client connections one shard holds at once.
    pub max_connections_per_shard: usize,
    /// Capacity of each channel between two shards (senders wait when full).
    pub channel_capacity: usize,
    /// First delay before reconnecting a broken neighbour link, in milliseconds.
    pub link_backoff_initial_ms: u64,
    /// Ceiling of the doubling reconnect delay, in milliseconds.
    pub link_backoff_max_ms: u64,
    /// How long a WHATSAT may wait on the places service, in milliseconds.
    pub places_timeout_ms: u64,
    /// A client connection that sends nothing for this long is closed, in
    /// milliseconds (neighbour links are exempt).
    pub client_idle_timeout_ms: u64,
    /// A client that does not take its replies within this long is dropped,
    /// in milliseconds.
    pub write_timeout_ms: u64,
    /// Records per second one link sends at most, so a returning neighbour
    /// is not buried in its catch-up, nor this shard.
    pub link_records_per_sec: u64,
    /// A link that has written nothing for this long writes a keepalive,
    /// in milliseconds.
    pub link_heartbeat_ms: u64,
    /// A link that has heard nothing for this long is closed and redialled,
    /// and a link write that takes this long ends the link, in
    /// milliseconds. At most three heartbeats, so that a neighbour gone
    /// without a FIN is found within three heartbeat periods.
    pub link_timeout_ms: u64,
    /// An IAMAT whose client time is more than this ahead of the server's
    /// clock is invalid, and such a record from a link is dropped, in
    /// milliseconds: one wrong clock must not pin a client's record forever.
    pub max_future_skew_ms: u64,
    /// Records whose client time is older than this are dropped, in
    /// milliseconds; `None` keeps records forever.
    pub record_ttl_ms: Option<u64>,
    /// Most records one server holds, split over its shards (each holds at
    /// most `ceil(max_records / shards)`); `None` (`null`) for no limit.
    /// A full shard makes room for a new client by evicting the record with
    /// the oldest client time (ties: the smallest client id), and does not
    /// store a new client's record older than all it holds. Records cost
    /// about 136 bytes of RSS each, so the default of 10,000,000 bounds the
    /// store near 1.4 GB (plus up to 30 bytes per record for the eviction
    /// order once full; see tuning.md).
    pub max_records: Option<u64>,
    /// Most client connections from one IP address to this server, all
    /// shards together; more are closed at once. `None` (`null`, the
    /// default) for no limit: phones behind a carrier's NAT share few
    /// addresses, and `max_connections_per_shard` already bounds the total.
    pub max_connections_per_ip: Option<u32>,
    /// A link that wrote less than this ago lets floods gather until then
    /// before its next write, in microseconds (0: write at once); an idle
    /// link writes at once. Bounds the added delay per hop.
    pub flood_linger_us: u64,
    /// How long an idle shard keeps polling before it sleeps, in
    /// microseconds (0: sleep at once). Polling spares the peers the cost of
    /// waking a sleeping core; see tuning.md.
    pub spin_before_park_us: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 4096,
            max_connections_per_shard: 10_000,
            channel_capacity: 1024,
            link_backoff_initial_ms: 50,
            link_backoff_max_ms: 2000,
            places_timeout_ms: 5000,
            client_idle_timeout_ms: 600_000,
            write_timeout_ms: 10_000,
            link_records_per_sec: 1_000_000,
            link_heartbeat_ms: 1000,
            link_timeout_ms: 2500,
            max_future_skew_ms: 86_400_000,
            record_ttl_ms: None,
            max_records: Some(DEFAULT_MAX_RECORDS),
            max_connections_per_ip: None,
            flood_linger_us: 1000,
            spin_before_park_us: 0,
        }
    }
}

/// Why a config could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The text is not JSON of the config's shape (the message gives line and column).
    #[error("config is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// The config parsed but describes an unusable herd; one problem per entry.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// The built-in five-server herd on 127.0.0.1 ports 12138..=12142, without secret.
    pub fn default_herd() -> Config {
        let servers = DEFAULT_HERD
            .iter()
            .map(|&(name, port, neighbours)| ServerConfig {
                name: name.to_owned(),
                listen: format!("127.0.0.1:{port}"),
                neighbours: neighbours.iter().map(|&n| n.to_owned()).collect(),
            })
            .collect();
        Config {
            secret: None,
            servers,
            limits: Limits::default(),
            places: PlacesConfig::default(),
        }
    }

    /// Parses a config from JSON text and validates it.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_json::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the config file at `path`, then parses and validates it like `from_json`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_json(&text)
    }

    /// Pretty JSON of this config, which `from_json` reads back to an equal config.
    pub fn to_json_pretty(&self) -> String {
        // Only strings, numbers, lists and structs: serialisation cannot fail.
        serde_json::to_string_pretty(self).expect("a Config always serialises to JSON")
    }

    /// The server called `name`, if the herd has one.
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The resolved listen address of the server called `name`, if it exists and is valid.
    pub fn listen_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(&self.server(name)?.listen)
    }

    /// Checks the whole herd and returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.secret.as_deref() == Some("") {
            problems.push("secret is empty; omit it (or use null) for no secret".to_owned());
        }
        if self.servers.is_empty() {
            problems.push("no servers: \"servers\" must list at least one server".to_owned());
        }
        let mut by_name: HashMap<&str, &ServerConfig> = HashMap::new();
        let mut duplicates = HashSet::new();
        let mut by_addr: HashMap<SocketAddr, &str> = HashMap::new();
        for (i, server) in self.servers.iter().enumerate() {
            let who = shown(&server.name);
            name_problems(i, &server.name, &mut problems);
            // Neighbour checks use the first server of a name; an empty name is reported above.
            if !by_name.contains_key(server.name.as_str()) {
                by_name.insert(&server.name, server);
            } else if !server.name.is_empty() && duplicates.insert(&server.name) {
                problems.push(format!("server name {who} is used by more than one server"));
            }
            let listen = &server.listen;
            match resolve_listen(listen) {
                None => problems.push(format!(
                    "{who}: listen address {listen:?} is not valid; expected host:port, \
                     e.g. 127.0.0.1:12138 (host an IP address or localhost)"
                )),
                Some(addr) if addr.port() == 0 => problems.push(format!(
                    "{who}: listen address {listen:?} has port 0; neighbours need a fixed port"
                )),
                Some(addr) => {
                    if let Some(earlier) = by_addr.insert(addr, &server.name) {
                        problems.push(format!(
                            "{who}: listen address {listen:?} ({addr}) is already used by {earlier}"
                        ));
                    }
                }
            }
        }
        for server in &self.servers {
            let (who, mut seen) = (shown(&server.name), HashSet::new());
            for neighbour in &server.neighbours {
                let shown = shown(neighbour);
                if !seen.insert(neighbour.as_str()) {
                    problems.push(format!("{who} lists neighbour {shown} more than once"));
                } else if *neighbour == server.name {
                    problems.push(format!("{who} lists itself as a neighbour"));
                } else {
                    match by_name.get(neighbour.as_str()) {
                        None => problems.push(format!(
                            "{who} lists neighbour {shown}, which is not a server of this herd"
                        )),
                        Some(other) if !other.neighbours.contains(&server.name) => {
                            problems.push(format!(
                                "{who} lists {shown} as a neighbour but {shown} does not list {who}"
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        limit_problems(&self.limits, &mut problems);
        places_problems(&self.places, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Whether `name` is an acceptable server name.
fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.bytes().all(|b| b.is_ascii_graphic())
}

/// A name as shown in messages, quoted when bare text would be ambiguous (empty, spaces).
fn shown(name: &str) -> String {
    if name_ok(name) {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// Reports everything wrong with the name of the server at `index`.
fn name_problems(index: usize, name: &str, problems: &mut Vec<String>) {
    let who = format!("server #{}", index + 1);
    if name.is_empty() {
        problems.push(format!("{who} has an empty name"));
        return;
    }
    if name.chars().any(char::is_whitespace) {
        problems.push(format!("{who}: name {name:?} contains white space"));
    }
    if name.len() > MAX_NAME_BYTES {
        problems.push(format!(
            "{who}: name {name:?} is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    // White space was reported above; this catches control and non-ASCII characters.
    if !name
        .chars()
        .all(|c| c.is_whitespace() || c.is_ascii_graphic())
    {
        problems.push(format!(
            "{who}: name {name:?} has characters that are not printable ASCII"
        ));
    }
}

/// Reports every limit outside the range the servers can work with.
fn places_problems(p: &PlacesConfig, problems: &mut Vec<String>) {
    if let Some(url) = &p.base_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(format!(
                "places.base_url {url:?} must start with http:// or https://"
            ));
        }
    }
    if p.provider == Provider::Mock && p.base_url.is_none() {
        problems.push("places.provider is mock but places.base_url is missing".to_owned());
    }
    if p.pool_connections == 0 {
        problems.push("places.pool_connections is 0; it must be at least 1".to_owned());
    }
    if p.max_in_flight == 0 {
        problems.push("places.max_in_flight is 0; it must be at least 1".to_owned());
    }
    if p.cache_entries > 0 && p.cache_bytes < MIN_CACHE_BYTES {
        problems.push(format!(
            "places.cache_bytes is {}; at least {MIN_CACHE_BYTES} (one answer of 20 results \
             is about 20 KiB), or set places.cache_entries to 0 to turn the cache off",
            p.cache_bytes
        ));
    }
    if p.snap_m > MAX_SNAP_M {
        problems.push(format!(
            "places.snap_m is {}; at most {MAX_SNAP_M} (a coarser grid fetches areas so \
             much larger than asked that few results are left), or 0 for no snapping",
            p.snap_m
        ));
    }
    if p.key.as_deref() == Some("") {
        problems.push("places.key is empty; omit it (or use null) for no key".to_owned());
    }
}

fn limit_problems(l: &Limits, problems: &mut Vec<String>) {
    if !(MIN_LINE_BYTES..=MAX_LINE_BYTES).contains(&l.max_line_bytes) {
        problems.push(format!(
            "limits.max_line_bytes is {}; it must be between {MIN_LINE_BYTES} and \
             {MAX_LINE_BYTES} (1 MiB)",
            l.max_line_bytes
        ));
    }
    let zeros = [
        (
            "max_connections_per_shard",
            l.max_connections_per_shard == 0,
        ),
        ("channel_capacity", l.channel_capacity == 0),
        ("link_backoff_initial_ms", l.link_backoff_initial_ms == 0),
        ("places_timeout_ms", l.places_timeout_ms == 0),
        ("client_idle_timeout_ms", l.client_idle_timeout_ms == 0),
        ("write_timeout_ms", l.write_timeout_ms == 0),
        ("link_records_per_sec", l.link_records_per_sec == 0),
        ("link_heartbeat_ms", l.link_heartbeat_ms == 0),
        ("record_ttl_ms", l.record_ttl_ms == Some(0)),
        ("max_future_skew_ms", l.max_future_skew_ms == 0),
    ];
    for (field, _) in zeros.iter().filter(|(_, zero)| *zero) {
        problems.push(format!("limits.{field} is 0; it must be at least 1"));
    }
    match l.max_records {
        Some(0) => problems.push(
            "limits.max_records is 0; it must be at least 1, or null for no limit".to_owned(),
        ),
        Some(n) if n > MAX_RECORDS => problems.push(format!(
            "limits.max_records is {n}; at most {MAX_RECORDS}, or null for no limit"
        )),
        _ => {}
    }
    if l.max_connections_per_ip == Some(0) {
        problems.push(
            "limits.max_connections_per_ip is 0; it must be at least 1, or null for no limit"
                .to_owned(),
        );
    }
    if l.flood_linger_us > 100_000 {
        problems.push(format!(
            "limits.flood_linger_us is {}; at most 100000 (0.1 s), or floods would crawl",
            l.flood_linger_us
        ));
    }
    if l.link_timeout_ms <= l.link_heartbeat_ms || l.link_timeout_ms > 3 * l.link_heartbeat_ms {
        problems.push(format!(
            "limits.link_timeout_ms ({}) must be more than limits.link_heartbeat_ms ({}) and at \
             most three times it: a live link would look dead, or a dead one be found late",
            l.link_timeout_ms, l.link_heartbeat_ms
        ));
    }
    if l.link_backoff_initial_ms > l.link_backoff_max_ms {
        problems.push(format!(
            "limits.link_backoff_initial_ms ({}) is greater than limits.link_backoff_max_ms ({})",
            l.link_backoff_initial_ms, l.link_backoff_max_ms
        ));
    }
}

/// Resolves a listen string: an IP literal with port, or `localhost:port`.
///
/// Only `localhost` goes through the resolver, so validation never needs a network.
fn resolve_listen(listen: &str) -> Option<SocketAddr> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Some(addr);
    }
    let port: u16 = listen.strip_prefix("localhost:")?.parse().ok()?;
    let addrs: Vec<SocketAddr> = ("localhost", port).to_socket_addrs().ok()?.collect();
    // Prefer IPv4 so `localhost:p` and `127.0.0.1:p` are seen as the same address.
    let ipv4 = addrs.iter().find(|a| a.is_ipv4());
    ipv4.or(addrs.first()).copied()
}

type HmacSha256 = Hmac<Sha256>;

/// The keyed MAC over the message `"<from> <to>"`.
fn peer_mac(secret: &str, from: &str, to: &str) -> HmacSha256 {
    // HMAC hashes over-long keys and pads short ones, so no key length is rejected.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(from.as_bytes());
    mac.update(b" ");
    mac.update(to.as_bytes());
    mac
}

/// The PEER credential: lowercase hex HMAC-SHA256 under `secret` of the message
/// `"<from> <to>"` (sender's name, a space, receiver's name); `"-"` when secret is `None`.
pub fn credential(secret: Option<&str>, from: &str, to: &str) -> String {
    match secret {
        None => "-".to_owned(),
        Some(secret) => hex::encode(peer_mac(secret, from, to).finalize().into_bytes()),
    }
}

/// Constant-time check of a received credential; only the exact lowercase hex form counts,
/// and `"-"` is accepted only when there is no secret.
pub fn credential_ok(secret: Option<&str>, from: &str, to: &str, received: &str) -> bool {
    let Some(secret) = secret else {
        return received == "-";
    };
    // Rejecting uppercase keeps one canonical form on the wire; it reveals nothing secret.
    if received.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    match hex::decode(received) {
        Ok(tag) => peer_mac(secret, from, to).verify_slice(&tag).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Problems reported after `edit` changes the default herd's JSON.
    fn problems_after(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut value: Value = serde_json::from_str(&Config::default_herd().to_json_pretty())
            .expect("default herd JSON parses");
        edit(&mut value);
        match Config::from_json(&value.to_string()) {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// Asserts that some problem after `edit` contains every one of `needles`.
    fn assert_reported(edit: impl FnOnce(&mut Value), needles: &[&str]) {
        let problems = problems_after(edit);
        let hit = problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n)));
        assert!(
            hit,
            "no problem mentions all of {needles:?}; got {problems:#?}"
        );
    }

    #[test]
    fn the_default_herd_validates_and_matches_the_table() {
        let herd = Config::default_herd();
        herd.validate().expect("default herd is valid");
        assert_eq!(herd.secret, None);
        assert_eq!(herd.limits, Limits::default());
        let table: [(&str, u16, &[&str]); 5] = [
            ("Goloman", 12138, &["Hands", "Holiday", "Wilkes"]),
            ("Hands", 12139, &["Goloman", "Wilkes"]),
            ("Holiday", 12140, &["Goloman", "Welsh", "Wilkes"]),
            ("Wilkes", 12141, &["Goloman", "Hands", "Holiday"]),
            ("Welsh", 12142, &["Holiday"]),
        ];
        assert_eq!(herd.servers.len(), table.len());
        for (name, port, neighbours) in table {
            let server = herd.server(name).expect("server exists");
            assert_eq!(server.neighbours, neighbours);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("literal");
            assert_eq!(herd.listen_addr(name), Some(addr));
            for n in neighbours {
                let back = &herd.server(n).expect("neighbour exists").neighbours;
                assert!(back.iter().any(|m| m == name), "{n} does not list {name}");
            }
        }
        assert!(herd.server("Nobody").is_none() && herd.listen_addr("Nobody").is_none());
    }

    #[test]
    fn localhost_is_accepted_and_resolves_to_loopback() {
        let mut herd = Config::default_herd();
        herd.servers[4].listen = "localhost:12142".to_owned();
        herd.validate().expect("localhost is allowed");
        let addr = herd.listen_addr("Welsh").expect("resolves");
        assert!(addr.ip().is_loopback() && addr.port() == 12142);
    }

    /// One test per problem: edit the default herd's JSON, then expect a problem that
    /// contains every listed word (which always names the server or field at fault).
    macro_rules! reports {
        ($($test:ident: |$v:ident| $edit:expr => [$($word:expr),+];)+) => {$(
            #[test]
            fn $test() {
                assert_reported(|$v: &mut Value| $edit, &[$($word),+]);
            }
        )+};
    }

    reports! {
        an_empty_server_list_is_reported: |v| v["servers"] = json!([]) => ["no servers"];
        an_empty_name_is_reported_with_the_server_position:
            |v| v["servers"][1]["name"] = json!("") => ["server #2", "empty name"];
        a_name_with_white_space_is_reported: |v| v["servers"][0]["name"] = json!("Golo man")
            => ["server #1", "\"Golo man\"", "white space"];
        a_name_longer_than_64_bytes_is_reported:
            |v| v["servers"][2]["name"] = json!("x".repeat(65)) => ["server #3", "65 bytes"];
        a_name_that_is_not_printable_ascii_is_reported:
            |v| v["servers"][0]["name"] = json!("Gölöman") => ["server #1", "printable ASCII"];
        a_duplicate_server_name_is_reported: |v| v["servers"][4]["name"] = json!("Hands")
            => ["server name Hands is used by more than one server"];
        a_duplicate_listen_address_is_reported:
            |v| v["servers"][1]["listen"] = json!("127.0.0.1:12138")
            => ["Hands: listen address", "12138", "already used by Goloman"];
        a_bad_listen_address_is_reported_with_what_is_expected:
            |v| v["servers"][3]["listen"] = json!("example.com:80")
            => ["Wilkes: listen address", "expected host:port, e.g. 127.0.0.1:12138"];
        a_listen_port_of_zero_is_reported:
            |v| v["servers"][3]["listen"] = json!("127.0.0.1:0") => ["Wilkes", "port 0"];
        an_unknown_neighbour_is_reported:
            |v| v["servers"][1]["neighbours"] = json!(["Goloman", "Wilkes", "Foo"])
            => ["Hands lists neighbour Foo, which is not a server of this herd"];
        a_server_listing_itself_is_reported:
            |v| v["servers"][4]["neighbours"] = json!(["Holiday", "Welsh"])
            => ["Welsh lists itself as a neighbour"];
        a_duplicate_neighbour_entry_is_reported:
            |v| v["servers"][4]["neighbours"] = json!(["Holiday", "Holiday"])
            => ["Welsh lists neighbour Holiday more than once"];
        asymmetric_neighbours_are_reported_from_the_listing_side:
            |v| v["servers"][1]["neighbours"] = json!(["Goloman"])
            => ["Wilkes lists Hands as a neighbour but Hands does not list Wilkes"];
        a_max_line_bytes_below_64_is_reported: |v| v["limits"]["max_line_bytes"] = json!(63)
            => ["limits.max_line_bytes is 63", "between 64 and 1048576"];
        a_max_line_bytes_above_1_mib_is_reported:
            |v| v["limits"]["max_line_bytes"] = json!(1_048_577)
            => ["limits.max_line_bytes is 1048577", "between 64 and 1048576"];
        zero_connections_per_shard_is_reported:
            |v| v["limits"]["max_connections_per_shard"] = json!(0)
            => ["limits.max_connections_per_shard is 0"];
        a_zero_future_skew_is_reported: |v| v["limits"]["max_future_skew_ms"] = json!(0)
            => ["limits.max_future_skew_ms is 0"];
        a_zero_heartbeat_is_reported: |v| v["limits"]["link_heartbeat_ms"] = json!(0)
            => ["limits.link_heartbeat_ms is 0"];
        a_link_timeout_of_more_than_three_heartbeats_is_reported:
            |v| v["limits"]["link_timeout_ms"] = json!(3001)
            => ["limits.link_timeout_ms (3001) must be more than limits.link_heartbeat_ms (1000)"];
        a_link_timeout_not_above_the_heartbeat_is_reported:
            |v| v["limits"]["link_timeout_ms"] = json!(1000)
            => ["limits.link_timeout_ms (1000)"];
        a_zero_channel_capacity_is_reported: |v| v["limits"]["channel_capacity"] = json!(0)
            => ["limits.channel_capacity is 0"];
        a_zero_initial_backoff_is_reported: |v| v["limits"]["link_backoff_initial_ms"] = json!(0)
            => ["limits.link_backoff_initial_ms is 0"];
        an_initial_backoff_above_the_maximum_is_reported:
            |v| v["limits"]["link_backoff_initial_ms"] = json!(2001)
            => ["link_backoff_initial_ms (2001) is greater than limits.link_backoff_max_ms"];
        a_zero_places_timeout_is_reported: |v| v["limits"]["places_timeout_ms"] = json!(0)
            => ["limits.places_timeout_ms is 0"];
        a_zero_idle_timeout_is_reported: |v| v["limits"]["client_idle_timeout_ms"] = json!(0)
            => ["limits.client_idle_timeout_ms is 0"];
        a_zero_write_timeout_is_reported: |v| v["limits"]["write_timeout_ms"] = json!(0)
            => ["limits.write_timeout_ms is 0"];
        a_zero_record_ttl_is_reported: |v| v["limits"]["record_ttl_ms"] = json!(0)
            => ["limits.record_ttl_ms is 0"];
        zero_max_records_is_reported: |v| v["limits"]["max_records"] = json!(0)
            => ["limits.max_records is 0", "null for no limit"];
        too_many_max_records_are_reported: |v| v["limits"]["max_records"] = json!(1u64 << 33)
            => ["limits.max_records is 8589934592", "at most 4294967294"];
        zero_connections_per_ip_is_reported:
            |v| v["limits"]["max_connections_per_ip"] = json!(0)
            => ["limits.max_connections_per_ip is 0", "null for no limit"];
        a_places_url_without_scheme_is_reported: |v| v["places"] = json!({"base_url": "maps.example"})
            => ["places.base_url \"maps.example\" must start with http:// or https://"];
        a_mock_provider_without_url_is_reported: |v| v["places"] = json!({"provider": "mock"})
            => ["places.provider is mock but places.base_url is missing"];
        a_zero_places_pool_is_reported: |v| v["places"] = json!({"pool_connections": 0})
            => ["places.pool_connections is 0"];
        a_tiny_places_cache_is_reported: |v| v["places"] = json!({"cache_bytes": 1000})
            => ["places.cache_bytes is 1000; at least 65536"];
        a_coarse_snapping_grid_is_reported: |v| v["places"] = json!({"snap_m": 5001})
            => ["places.snap_m is 5001; at most 5000"];
        an_empty_secret_is_reported: |v| v["secret"] = json!("") => ["secret is empty"];
    }

    #[test]
    fn several_problems_are_all_reported_one_per_line() {
        let problems = problems_after(|v| {
            v["secret"] = json!("");
            v["servers"][0]["listen"] = json!("nowhere");
            v["servers"][4]["neighbours"] = json!(["Holiday", "Foo"]);
            v["limits"]["channel_capacity"] = json!(0);
        });
        assert_eq!(problems.len(), 4, "{problems:#?}");
        let shown = ConfigError::Invalid(problems.clone()).to_string();
        assert_eq!(shown.lines().collect::<Vec<_>>(), problems);
    }

    #[test]
    fn an_unknown_field_anywhere_is_an_error() {
        let mut top = serde_json::to_value(Config::default_herd()).expect("to value");
        top["secrets"] = json!("typo");
        let mut server = top.clone();
        server.as_object_mut().expect("object").remove("secrets");
        server["servers"][0]["neighbors"] = json!([]);
        let limits = json!({"servers": [], "limits": {"max_line_byte": 100}});
        for value in [top, server, limits] {
            let err = Config::from_json(&value.to_string()).expect_err("unknown field");
            assert!(matches!(err, ConfigError::Json(_)), "{err:?}");
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
    }

    #[test]
    fn places_provider_is_settled_from_config_and_environment() {
        let auto = PlacesConfig::default();
        assert_eq!(auto.resolve(None), Ok(PlacesSource::Offline));
        assert_eq!(
            auto.resolve(Some(String::new())),
            Ok(PlacesSource::Offline),
            "an empty key is no key"
        );
        assert_eq!(
            auto.resolve(Some("k".into())),
            Ok(PlacesSource::Http {
                base_url: GOOGLE_BASE_URL.into(),
                key: Some("k".into())
            })
        );
        let google = PlacesConfig {
            provider: Provider::Google,
            key: Some("file".into()),
            ..auto.clone()
        };
        assert_eq!(
            google.resolve(Some("env".into())),
            Ok(PlacesSource::Http {
                base_url: GOOGLE_BASE_URL.into(),
                key: Some("env".into())
            }),
            "the environment wins"
        );
        let keyless = PlacesConfig {
            provider: Provider::Google,
            ..auto.clone()
        };
        assert!(keyless
            .resolve(None)
            .unwrap_err()
            .contains("HERD_PLACES_KEY"));
        let mock = PlacesConfig {
            provider: Provider::Mock,
            base_url: Some("http://127.0.0.1:9".into()),
            ..auto.clone()
        };
        assert_eq!(
            mock.resolve(None),
            Ok(PlacesSource::Http {
                base_url: "http://127.0.0.1:9".into(),
                key: None
            })
        );
        let offline = PlacesConfig {
            provider: Provider::Offline,
            ..auto
        };
        assert_eq!(offline.resolve(Some("k".into())), Ok(PlacesSource::Offline));
    }

    #[test]
    fn a_json_error_message_gives_line_and_column() {
        let err = Config::from_json("{\n  \"servers\": [,]\n}").expect_err("bad JSON");
        assert!(err.to_string().contains("line 2 column"), "{err}");
    }

    #[test]
    fn record_and_per_ip_limits_read_from_the_file_and_null_means_none() {
        let text = r#"{"servers": [{"name": "Solo", "listen": "127.0.0.1:9000"}],
            "limits": {"max_records": null, "max_connections_per_ip": 8}}"#;
        let limits = Config::from_json(text).expect("valid").limits;
        assert_eq!(limits.max_records, None);
        assert_eq!(limits.max_connections_per_ip, Some(8));
        assert_eq!(Limits::default().max_records, Some(DEFAULT_MAX_RECORDS));
        assert_eq!(Limits::default().max_connections_per_ip, None);
    }

    #[test]
    fn missing_limits_take_the_defaults() {
        let text = r#"{"servers": [{"name": "Solo", "listen": "127.0.0.1:9000"}]}"#;
        let config = Config::from_json(text).expect("valid");
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.secret, None);
        assert!(config.servers[0].neighbours.is_empty());
    }

    #[test]
    fn partial_limits_are_merged_with_the_defaults() {
        let text = r#"{"secret": null, "servers": [{"name": "Solo", "listen": "[::1]:9000",
            "neighbours": []}], "limits": {"channel_capacity": 7, "places_timeout_ms": 9}}"#;
        let limits = Config::from_json(text).expect("valid").limits;
        let expected = Limits {
            channel_capacity: 7,
            places_timeout_ms: 9,
            ..Limits::default()
        };
        assert_eq!(limits, expected);
    }

    #[test]
    fn loading_a_missing_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no-such-herd.json");
        let err = Config::load(&path).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-herd.json"), "{err}");
    }

    #[test]
    fn loading_a_written_config_gives_it_back() {
        let mut herd = Config::default_herd();
        herd.secret = Some("s3cret".to_owned());
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), herd.to_json_pretty()).expect("write");
        assert_eq!(Config::load(file.path()).expect("loads"), herd);
    }

    #[test]
    fn to_json_pretty_round_trips_through_from_json() {
        let mut odd = Config::default_herd();
        odd.secret = Some("key".to_owned());
        odd.limits.max_line_bytes = 100;
        odd.servers[0].listen = "[::1]:4000".to_owned();
        for herd in [Config::default_herd(), odd] {
            let back = Config::from_json(&herd.to_json_pretty()).expect("parses");
            assert_eq!(back, herd);
        }
    }

    #[test]
    fn credential_is_deterministic_lowercase_hex_per_direction_and_secret_or_a_dash() {
        let ab = credential(Some("k"), "Goloman", "Hands");
        assert_eq!(ab, credential(Some("k"), "Goloman", "Hands"));
        assert_ne!(ab, credential(Some("k"), "Hands", "Goloman"));
        assert_ne!(ab, credential(Some("other"), "Goloman", "Hands"));
        assert_eq!(ab.len(), 64);
        assert!(ab.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(credential(None, "Goloman", "Hands"), "-");
        assert!(credential_ok(None, "Goloman", "Hands", "-"));
        assert!(!credential_ok(None, "Goloman", "Hands", "abc"));
    }

    #[test]
    fn credential_matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            credential(Some("Jefe"), "what", "do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn credential_ok_accepts_the_right_one_and_rejects_the_rest() {
        let s = Some("k");
        let good = credential(s, "Goloman", "Hands");
        assert!(credential_ok(s, "Goloman", "Hands", &good));
        let wrong = credential(s, "Hands", "Goloman");
        let mut flipped = good.clone();
        flipped.replace_range(..1, if good.starts_with('0') { "1" } else { "0" });
        let (upper, zeds) = (good.to_uppercase(), "Z".repeat(64));
        for bad in [
            wrong.as_str(),
            flipped.as_str(),
            upper.as_str(),
            zeds.as_str(),
            "not hex at all",
            &good[..62],
            "",
            "-",
        ] {
            assert!(
                !credential_ok(s, "Goloman", "Hands", bad),
                "accepted {bad:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn from_json_never_panics_on_arbitrary_text(text in "\\PC*") {
            let _ = Config::from_json(&text);
        }

        #[test]
        fn from_json_never_panics_on_a_mangled_default_herd(at in 0usize..700, junk in ".{0,6}") {
            let mut text = Config::default_herd().to_json_pretty();
            let at = (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i));
            text.insert_str(at.unwrap_or(0), &junk);
            let _ = Config::from_json(&text);
        }
    }
}
