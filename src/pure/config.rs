//! Herd configuration: which servers exist, where each listens, who its neighbours are,
//! the shared secret and the resource limits.
//!
//! Owns the JSON config format, the built-in default herd, validation (every problem is
//! reported at once, so one edit fixes a config) and where each server takes links.
//! Pure, like the rest of `pure/`: reading the file is the shell's
//! (`process/config_file.rs`), and the one host name taken, `localhost`, means
//! 127.0.0.1 without asking a resolver.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pure::clients::{self, ClientPort, ClientTlsConfig, ClientsConfig};
use crate::pure::places_fields::FieldMask;

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
    /// Shared secret that each end of a link proves in the handshake; `None`
    /// means links are not authenticated (allowed only on loopback peer
    /// addresses, or with `insecure_links`).
    pub secret: Option<String>,
    /// Allow links without a secret or TLS on peer addresses that are not
    /// loopback: anyone who reaches such a peer port can write records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_links: bool,
    /// Allow client addresses that are not loopback while `clients.auth` is
    /// `"none"`: anyone who reaches them can then move or read any client.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_clients: bool,
    /// Who a client connection may speak for, and read.
    #[serde(default, skip_serializing_if = "ClientsConfig::is_default")]
    pub clients: ClientsConfig,
    /// The certificate of `client_tls_listen`, when not the herd's `tls`
    /// one (e.g. from a public CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTlsConfig>,
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
    /// TLS on links (mutual, with certificates of a herd CA); `None`: links
    /// are plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Log format and level.
    #[serde(default, skip_serializing_if = "is_default_logging")]
    pub logging: LoggingConfig,
    /// Where and how each server keeps a journal of its records, so that a
    /// restart keeps what it acknowledged; `None`: nothing is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceConfig>,
}

/// The `persistence` section: each server appends every record it stores
/// to journal files under `dir/<server name>/` and replays them at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    /// The folder the servers' journal folders go in; relative to the
    /// config file's directory. Each server writes only in `dir/<name>/`,
    /// so servers of one host can share it.
    pub dir: String,
    /// When written records are forced to the disk.
    #[serde(default)]
    pub fsync: Fsync,
}

/// How often a journal is forced to the disk (`fdatasync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// After every write, and an IAMAT's AT reply goes out only once its
    /// record is on the disk.
    Always,
    /// At most once a second: a power cut loses about the last second.
    #[default]
    Everysec,
    /// Never: written with direct I/O, so a killed process loses nothing
    /// written, but a power cut may lose what the disk's cache held.
    Off,
}

impl Config {
    /// The journal folder of the server called `server_name`, or `None`
    /// when the herd keeps no journal. `config_dir` as for
    /// [`Config::tls_paths`].
    pub fn journal_dir(&self, server_name: &str, config_dir: &Path) -> Option<PathBuf> {
        let p = self.persistence.as_ref()?;
        Some(config_dir.join(&p.dir).join(server_name))
    }
}

fn is_default_logging(l: &LoggingConfig) -> bool {
    *l == LoggingConfig::default()
}

/// The `tls` section: where each server finds the herd CA, its certificate and
/// its key (PEM files, as `herd certs` writes them). One herd-wide file serves
/// every server: `{name}` in `cert` and `key` stands for the server's name.
/// Relative paths are relative to the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The herd CA certificate: the only issuer a link trusts, both ways
    /// (e.g. `certs/ca.pem`).
    pub ca: String,
    /// This server's certificate, signed by the CA and naming the server
    /// (e.g. `certs/{name}.pem`).
    pub cert: String,
    /// This server's private key (e.g. `certs/{name}-key.pem`).
    pub key: String,
}

/// The placeholder in `tls.cert` and `tls.key` for the server's name.
pub const NAME_PLACEHOLDER: &str = "{name}";

/// The TLS files of one server, with `{name}` filled in and relative paths
/// made relative to the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The herd CA certificate.
    pub ca: PathBuf,
    /// This server's certificate.
    pub cert: PathBuf,
    /// This server's private key.
    pub key: PathBuf,
}

impl Config {
    /// The TLS files of the server called `server_name`, or `None` when the
    /// herd has no `tls` section. `config_dir` is the directory of the config
    /// file ([`config_dir`]); absolute paths in the file are kept as they are.
    pub fn tls_paths(&self, server_name: &str, config_dir: &Path) -> Option<TlsPaths> {
        let tls = self.tls.as_ref()?;
        let path =
            |template: &str| config_dir.join(template.replace(NAME_PLACEHOLDER, server_name));
        Some(TlsPaths {
            ca: path(&tls.ca),
            cert: path(&tls.cert),
            key: path(&tls.key),
        })
    }
}

/// The directory that relative paths in the config file at `config_path` are
/// relative to: the file's own directory (`.` for a bare file name), so a
/// config means the same files whatever directory a server is started from.
pub fn config_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
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
    /// Any server of the API `places.api` names at `base_url`, such as
    /// `herd-places-mock`.
    Mock,
    /// Built-in deterministic sample data; no network.
    Offline,
}

/// Which Google Places API the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlacesApi {
    /// Nearby Search (New): `POST /v1/places:searchNearby`, the key and a
    /// field mask in headers; the only one a new Google Cloud project can
    /// enable.
    #[default]
    New,
    /// The legacy Nearby Search: `GET /maps/api/place/nearbysearch/json`,
    /// for projects that enabled it before it closed to new ones.
    Legacy,
}

impl PlacesApi {
    /// Google's base URL for this API.
    pub fn google_base_url(self) -> &'static str {
        match self {
            PlacesApi::New => GOOGLE_NEW_BASE_URL,
            PlacesApi::Legacy => GOOGLE_BASE_URL,
        }
    }

    /// How operators call it, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            PlacesApi::New => "Places API (New), Nearby Search (New)",
            PlacesApi::Legacy => "Places API (Legacy), Nearby Search",
        }
    }
}

/// `places.fields`: a preset name or a list of Place field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlacesFields {
    /// `"pro"` or `"enterprise"` (anything else is reported by `validate`).
    Preset(String),
    /// Field names, with or without `places.`.
    List(Vec<String>),
}

impl Default for PlacesFields {
    fn default() -> Self {
        PlacesFields::Preset("pro".to_owned())
    }
}

impl PlacesFields {
    /// The field mask these name, or every reason they cannot be one.
    pub fn mask(&self) -> Result<FieldMask, Vec<String>> {
        match self {
            PlacesFields::Preset(name) => FieldMask::preset(name).map_err(|e| vec![e]),
            PlacesFields::List(names) => FieldMask::list(names),
        }
    }
}

/// Settings of the Places client (one per shard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacesConfig {
    /// The provider.
    pub provider: Provider,
    /// Which Google API the provider speaks (`google`, `auto` with a key,
    /// and `mock`).
    pub api: PlacesApi,
    /// Which Place fields Nearby Search (New) is asked for; sets the SKU.
    pub fields: PlacesFields,
    /// Base URL (`http://` or `https://`); Google's for `api` when absent.
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

/// Default byte bound of one shard's answer cache (`places.cache_bytes`): room for about
/// 1,600 offline answers of 20 results, or fewer, larger Google ones.
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

impl Default for PlacesConfig {
    fn default() -> Self {
        PlacesConfig {
            provider: Provider::Auto,
            api: PlacesApi::New,
            fields: PlacesFields::default(),
            base_url: None,
            key: None,
            pool_connections: 8,
            max_in_flight: 64,
            cache_entries: 4096,
            cache_bytes: DEFAULT_CACHE_BYTES,
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

/// Google's base URL for Places API (New).
pub const GOOGLE_NEW_BASE_URL: &str = "https://places.googleapis.com";

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
        /// The API it speaks.
        api: PlacesApi,
        /// The `X-Goog-FieldMask` of Nearby Search (New) requests.
        field_mask: String,
    },
}

impl PlacesConfig {
    /// Settles the provider; `env_key` is `HERD_PLACES_KEY` if set.
    pub fn resolve(&self, env_key: Option<String>) -> Result<PlacesSource, String> {
        let key = env_key
            .filter(|k| !k.is_empty())
            .or_else(|| self.key.clone());
        let base_url =
            match (self.provider, &self.base_url) {
                (Provider::Offline, _) => return Ok(PlacesSource::Offline),
                (Provider::Auto, _) if key.is_none() => return Ok(PlacesSource::Offline),
                (Provider::Google, _) if key.is_none() => return Err(
                    "places provider google needs an API key: set HERD_PLACES_KEY or places.key"
                        .to_owned(),
                ),
                (Provider::Mock, None) => {
                    return Err("places provider mock needs places.base_url".to_owned())
                }
                (_, Some(url)) => url.clone(),
                (_, None) => self.api.google_base_url().to_owned(),
            };
        let field_mask = self
            .fields
            .mask()
            .map_err(|problems| {
                let named: Vec<String> = problems.iter().map(|r| fields_problem(r)).collect();
                named.join("; ")
            })?
            .header();
        Ok(PlacesSource::Http {
            base_url,
            key,
            api: self.api,
            field_mask,
        })
    }
}

/// One server of the herd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unique name: 1 to 64 bytes of printable ASCII, no white space.
    pub name: String,
    /// TCP address to listen on, exactly as written in the file (`host:port`).
    pub listen: String,
    /// Names of the servers this one floods to; must be symmetric across the herd.
    #[serde(default)]
    pub neighbours: Vec<String>,
    /// Address for links from neighbours (`host:port`); when absent, the
    /// listen host at the listen port + 10000. Kept off the client port so
    /// clients can never open a link, and so stopping a server by its client
    /// port (`lsof -ti:PORT | xargs kill`) never hits its neighbours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<String>,
    /// The admin HTTP address (`/metrics`, `/healthz`, `/readyz`,
    /// `/status`): absent means the listen host at the listen port + 20000,
    /// `null` turns it off.
    #[serde(default, skip_serializing_if = "AdminListen::is_default")]
    pub admin_listen: AdminListen,
    /// Where the server takes clients over TLS (`host:port`); none when
    /// absent. The same protocol as `listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tls_listen: Option<String>,
    /// Where the server takes phone apps' HTTP posts (OwnTracks, Traccar
    /// Client); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// The same over HTTPS, with the certificate of `client_tls_listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_listen: Option<String>,
}

/// A server's `admin_listen`: left out, `null`, or an address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdminListen {
    /// Left out of the file: the client host at the client port +
    /// [`ADMIN_PORT_OFFSET`].
    #[default]
    Default,
    /// `null`: no admin endpoint.
    Off,
    /// `"host:port"`, as written.
    At(String),
}

impl AdminListen {
    fn is_default(&self) -> bool {
        *self == AdminListen::Default
    }
}

impl Serialize for AdminListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Never written: `skip_serializing_if` leaves the field out.
            AdminListen::Default | AdminListen::Off => s.serialize_none(),
            AdminListen::At(text) => s.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for AdminListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only reached when the field is present: `null` is a choice.
        Ok(match Option::<String>::deserialize(d)? {
            None => AdminListen::Off,
            Some(text) => AdminListen::At(text),
        })
    }
}

/// How a server logs; the `logging` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// `text` (one readable line per event) or `json` (one JSON object per
    /// line, for log shippers).
    pub format: LogFormat,
    /// Level or tracing filter (`info`, `debug`, `herd=debug,warn`) when the
    /// command line gives none; a reload applies a change of it in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
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
    /// Failed `AUTH`s one source address may make for one client id in a
    /// minute; past it, `AUTH` is refused unchecked until the minute is out.
    pub client_auth_failures_per_min: u32,
    /// An HTTP request of a phone app must arrive whole (headers and body)
    /// within this many milliseconds of its first byte.
    pub http_request_timeout_ms: u64,
    /// A link that wrote less than this ago lets floods gather until then
    /// before its next write, in microseconds (0: write at once); an idle
    /// link writes at once. Bounds the added delay per hop.
    pub flood_linger_us: u64,
    /// How long an idle shard keeps polling before it sleeps, in
    /// microseconds (0: sleep at once). Polling spares the peers the cost of
    /// waking a sleeping core; see tuning.md.
    pub spin_before_park_us: u64,
    /// How often a link announces what changed in its server's digests to
    /// a neighbour, in milliseconds (PROTOCOL.md, "Flood trees"); a record
    /// lost on a tree is found missing about a second plus two of these
    /// after it was made.
    pub link_announce_ms: u64,
    /// Whether this server sends records along flood trees and speaks the
    /// lines for it (`TREE`, `IHAVE`, `GRAFT`, `PRUNE`); `false` keeps it to
    /// the earlier link rules: it floods every record on every link, and is
    /// flooded to.
    pub link_tree: bool,
}

/// Open files (descriptors) a server needs, from its shard count and
/// limits: see [`Limits::open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// Below this a server does not start: each shard's io_uring rings,
    /// wake-up descriptor and listeners, the log, the signal pipe, with
    /// room to spare (measured: two shards need about 20).
    pub to_start: u64,
    /// What every connection the limits allow needs on top.
    pub to_serve: u64,
}

impl Limits {
    /// Descriptors `shards` shards need to start, and to hold every client
    /// connection `max_connections_per_shard` allows (links, journal and
    /// Places connections fit in the margin of `to_start`).
    pub fn open_files(&self, shards: usize) -> OpenFiles {
        let shards = shards as u64;
        let to_start = 32 + 16 * shards;
        let connections = shards.saturating_mul(self.max_connections_per_shard as u64);
        OpenFiles {
            to_start,
            to_serve: to_start.saturating_add(connections),
        }
    }
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
            client_auth_failures_per_min: 10,
            http_request_timeout_ms: 10_000,
            flood_linger_us: 1000,
            spin_before_park_us: 0,
            link_announce_ms: 100,
            link_tree: true,
        }
    }
}

/// Why a config could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    // The cause is in the message, not a `source`: a chain of errors would
    // print it twice.
    #[error("cannot read config file {}: {cause}", .path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        cause: io::Error,
    },
    /// The text is not JSON (the message gives line and column).
    #[error("config is not valid JSON: {0}")]
    Json(serde_json::Error),
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
                ..ServerConfig::default()
            })
            .collect();
        Config {
            secret: None,
            insecure_links: false,
            insecure_clients: false,
            clients: ClientsConfig::default(),
            client_tls: None,
            servers,
            limits: Limits::default(),
            places: PlacesConfig::default(),
            tls: None,
            logging: LoggingConfig::default(),
            persistence: None,
        }
    }

    /// Pretty JSON of this config, which `from_json` reads back to an equal
    /// config. `places.ca_file` is the one field that may not be text (a
    /// path that is not UTF-8); it is written lossily then, so it names a
    /// different file when read back.
    pub fn to_json_pretty(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(text) => text,
            Err(_) => {
                let mut lossy = self.clone();
                lossy.places.ca_file = lossy
                    .places
                    .ca_file
                    .map(|p| p.to_string_lossy().into_owned().into());
                // Now only strings, numbers, lists and structs: this cannot fail.
                serde_json::to_string_pretty(&lossy).unwrap_or_default()
            }
        }
    }

    /// The server called `name`, if the herd has one.
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The resolved listen address of the server called `name`, if it exists and is valid.
    pub fn listen_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(&self.server(name)?.listen)
    }

    /// The resolved peer address of the server called `name`: where its
    /// neighbours' links dial it.
    pub fn peer_addr(&self, name: &str) -> Option<SocketAddr> {
        peer_addr_of(self.server(name)?)
    }

    /// The resolved admin address of the server called `name`, or `None`
    /// when it has none (`admin_listen: null`, or no such server).
    pub fn admin_addr(&self, name: &str) -> Option<SocketAddr> {
        admin_addr_of(self.server(name)?)
    }

    /// Every address server `name` listens on, named, as (what, address).
    pub fn addresses_of(&self, name: &str) -> Vec<(&'static str, SocketAddr)> {
        let server = self.server(name);
        let mut out = Vec::new();
        if let Some(a) = self.listen_addr(name) {
            out.push(("client address", a));
        }
        if let Some(a) = self.peer_addr(name) {
            let derived = server.is_some_and(|s| s.peer_listen.is_none());
            out.push((
                if derived {
                    "peer address (client port + 10000)"
                } else {
                    "peer address"
                },
                a,
            ));
        }
        if let Some(a) = self.admin_addr(name) {
            let derived = server.is_some_and(|s| s.admin_listen == AdminListen::Default);
            out.push((
                if derived {
                    "admin address (client port + 20000)"
                } else {
                    "admin address"
                },
                a,
            ));
        }
        for (what, a) in [
            ("client_tls_listen", self.client_tls_addr(name)),
            ("http_listen", self.http_addr(name)),
            ("https_listen", self.https_addr(name)),
        ] {
            if let Some(a) = a {
                out.push((what, a));
            }
        }
        out
    }

    /// Warnings for every listen port of the herd inside `ephemeral`, a
    /// host's range of ports for outgoing connections (Linux's
    /// `net.ipv4.ip_local_port_range`): an outgoing connection may hold such
    /// a port when the server starts, and the start then fails.
    pub fn ephemeral_warnings(&self, ephemeral: (u16, u16)) -> Vec<String> {
        let (low, high) = ephemeral;
        let mut warnings = Vec::new();
        for server in &self.servers {
            for (what, addr) in self.addresses_of(&server.name) {
                let port = addr.port();
                if port != 0 && (low..=high).contains(&port) {
                    warnings.push(format!(
                        "{}: {what} {addr} lies in this host's ephemeral port range {low}-{high} \
                         (net.ipv4.ip_local_port_range), where an outgoing connection may hold \
                         it when the server starts; choose a port below {low}, or reserve it \
                         with net.ipv4.ip_local_reserved_ports",
                        shown(&server.name)
                    ));
                }
            }
        }
        warnings
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
                // Port 0: the server takes a free port and reports it. Its
                // peer and admin addresses cannot be derived from it then.
                Some(addr) if addr.port() == 0 => {
                    if server.peer_listen.is_none() {
                        problems.push(format!(
                            "{who}: listen address {listen:?} has port 0, so the default peer \
                             address (client port + {PEER_PORT_OFFSET}) has none; set \
                             \"peer_listen\""
                        ));
                    }
                    if server.admin_listen == AdminListen::Default {
                        problems.push(format!(
                            "{who}: listen address {listen:?} has port 0, so the default admin \
                             address (client port + {ADMIN_PORT_OFFSET}) has none; set \
                             \"admin_listen\", or null for none"
                        ));
                    }
                }
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
        self.peer_problems(&by_addr, &mut problems);
        self.admin_problems(&mut problems);
        self.client_problems(&mut problems);
        if let Some(level) = &self.logging.level {
            if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                problems.push(format!(
                    "logging.level {level:?} is not a level or tracing filter; e.g. info, \
                     debug or herd=debug,warn"
                ));
            }
        }
        limit_problems(&self.limits, &mut problems);
        places_problems(&self.places, &mut problems);
        if let Some(tls) = &self.tls {
            tls_problems(tls, &self.servers, &mut problems);
        }
        if let Some(p) = &self.persistence {
            if p.dir.trim().is_empty() {
                problems.push(
                    "persistence.dir is empty; name a folder for the journals (each server \
                     writes in dir/<its name>/), or leave persistence out to write nothing"
                        .to_owned(),
                );
            } else if p.dir.contains('\0') {
                problems.push("persistence.dir contains a NUL byte".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

impl Config {
    /// Peer addresses: valid, distinct from every other address of the
    /// herd, and protected (a secret) unless on loopback or explicitly
    /// `insecure_links`.
    fn peer_problems(&self, clients: &HashMap<SocketAddr, &str>, problems: &mut Vec<String>) {
        let mut peers: HashMap<SocketAddr, &str> = HashMap::new();
        for server in &self.servers {
            let who = shown(&server.name);
            let Some(client) = resolve_listen(&server.listen) else {
                continue; // reported with the listen address
            };
            let addr = match &server.peer_listen {
                Some(text) => match resolve_listen(text) {
                    // Port 0 (a free port, reported at start) only where no
                    // neighbour needs to dial it.
                    Some(addr) if addr.port() == 0 => {
                        let dialled_by = self
                            .servers
                            .iter()
                            .find(|s| s.neighbours.contains(&server.name));
                        if let Some(by) = dialled_by {
                            problems.push(format!(
                                "{who}: peer_listen {text:?} has port 0, but {} links to it \
                                  and needs a fixed port",
                                shown(&by.name)
                            ));
                        }
                        continue;
                    }
                    Some(addr) => addr,
                    _ => {
                        problems.push(format!(
                            "{who}: peer_listen {text:?} is not valid; expected host:port, \
                              e.g. 127.0.0.1:22138"
                        ));
                        continue;
                    }
                },
                None => match default_peer_addr(client) {
                    Some(addr) => addr,
                    None => {
                        problems.push(format!(
                            "{who}: the default peer port (client port {} + {PEER_PORT_OFFSET}) \
                              is past 65535; set \"peer_listen\" for this server",
                            client.port()
                        ));
                        continue;
                    }
                },
            };
            if let Some(owner) = clients.get(&addr) {
                problems.push(format!(
                    "{who}: peer address {addr} is the client address of {owner}; set a \
                      \"peer_listen\" of its own"
                ));
            }
            if let Some(earlier) = peers.insert(addr, &server.name) {
                problems.push(format!(
                    "{who}: peer address {addr} is already the peer address of {earlier}"
                ));
            }
            let protected = self.secret.is_some() || self.tls.is_some();
            if !addr.ip().is_loopback() && !protected && !self.insecure_links {
                problems.push(format!(
                    "{who}: peer address {addr} is not loopback and the herd has neither a \
                      secret nor TLS, so anyone who reaches it could write records; set \
                      \"secret\" (the same on every server) or a \"tls\" section (herd certs \
                      makes one), or \"insecure_links\": true to accept the risk"
                ));
            }
        }
    }
}

impl Config {
    /// The `clients` section, TLS for clients, and client addresses open
    /// to other hosts.
    fn client_problems(&self, problems: &mut Vec<String>) {
        let mut taken: HashMap<SocketAddr, String> = HashMap::new();
        for server in &self.servers {
            let who = shown(&server.name);
            if let Some(addr) = resolve_listen(&server.listen) {
                taken.insert(addr, format!("the client address of {who}"));
            }
            if let Some(addr) = peer_addr_of(server) {
                taken.insert(addr, format!("the peer address of {who}"));
            }
            if let Some(addr) = admin_addr_of(server) {
                taken.insert(addr, format!("the admin address of {who}"));
            }
        }
        let mut ports = Vec::new();
        let names: Vec<String> = self.servers.iter().map(|s| shown(&s.name)).collect();
        for (server, who) in self.servers.iter().zip(&names) {
            if let Some(addr) = resolve_listen(&server.listen) {
                ports.push(ClientPort {
                    who,
                    what: "client address",
                    addr,
                });
            }
            let extra = [
                ("client_tls_listen", &server.client_tls_listen, true),
                ("http_listen", &server.http_listen, false),
                ("https_listen", &server.https_listen, true),
            ];
            for (what, text, needs_cert) in extra {
                let Some(text) = text else {
                    continue;
                };
                let Some(addr) = resolve_listen(text) else {
                    problems.push(format!(
                        "{who}: {what} {text:?} is not valid; expected host:port, \
                         e.g. 127.0.0.1:12638"
                    ));
                    continue;
                };
                if addr.port() != 0 {
                    if let Some(owner) = taken.insert(addr, format!("the {what} of {who}")) {
                        problems.push(format!("{who}: {what} {addr} is {owner}"));
                    }
                }
                if needs_cert && self.client_tls.is_none() && self.tls.is_none() {
                    problems.push(format!(
                        "{who}: {what} needs a certificate: add a \"client_tls\" section \
                         ({{\"cert\": ..., \"key\": ...}}), or a \"tls\" section (herd certs \
                         makes one)"
                    ));
                }
                ports.push(ClientPort { who, what, addr });
            }
        }
        clients::problems(&self.clients, self.insecure_clients, &ports, problems);
        if let Some(tls) = &self.client_tls {
            clients::tls_problems(tls, problems);
        }
    }

    /// Where server `name` takes phone apps over HTTP, if it does.
    pub fn http_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(self.server(name)?.http_listen.as_deref()?)
    }

    /// Where server `name` takes phone apps over HTTPS, if it does.
    pub fn https_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(self.server(name)?.https_listen.as_deref()?)
    }

    /// Where server `name` takes clients over TLS, if it does.
    pub fn client_tls_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(self.server(name)?.client_tls_listen.as_deref()?)
    }

    /// The certificate and key server `name` shows clients over TLS:
    /// `client_tls`'s, else the herd's `tls` ones; `{name}` filled in,
    /// relative to `config_dir`.
    pub fn client_tls_paths(&self, name: &str, config_dir: &Path) -> Option<(PathBuf, PathBuf)> {
        let path = |template: &str| config_dir.join(template.replace(NAME_PLACEHOLDER, name));
        match (&self.client_tls, &self.tls) {
            (Some(c), _) => Some((path(&c.cert), path(&c.key))),
            (None, Some(t)) => Some((path(&t.cert), path(&t.key))),
            (None, None) => None,
        }
    }
}

impl Config {
    /// Admin addresses: valid and not any other address of the herd.
    fn admin_problems(&self, problems: &mut Vec<String>) {
        let mut taken: HashMap<SocketAddr, String> = HashMap::new();
        for server in &self.servers {
            if let Some(addr) = resolve_listen(&server.listen) {
                taken.insert(
                    addr,
                    format!("the client address of {}", shown(&server.name)),
                );
            }
            if let Some(addr) = peer_addr_of(server) {
                taken.insert(addr, format!("the peer address of {}", shown(&server.name)));
            }
        }
        // Servers on other hosts may each keep their admin endpoint on
        // their own loopback: the same loopback address clashes only for
        // servers on one host (the same client address host).
        let mut admins: HashMap<SocketAddr, (&str, std::net::IpAddr)> = HashMap::new();
        for server in &self.servers {
            let who = shown(&server.name);
            let Some(client) = resolve_listen(&server.listen) else {
                continue; // reported with the listen address
            };
            let addr = match &server.admin_listen {
                AdminListen::Off => continue,
                AdminListen::At(text) => match resolve_listen(text) {
                    // A free port, reported at start: nothing to clash with.
                    Some(addr) if addr.port() == 0 => continue,
                    Some(addr) => addr,
                    _ => {
                        problems.push(format!(
                            "{who}: admin_listen {text:?} is not valid; expected host:port, \
                              e.g. 127.0.0.1:32138, or null for no admin endpoint"
                        ));
                        continue;
                    }
                },
                AdminListen::Default => match default_admin_addr(client) {
                    Some(addr) => addr,
                    None => {
                        problems.push(format!(
                            "{who}: the default admin port (client port {} + \
                              {ADMIN_PORT_OFFSET}) is past 65535; set \"admin_listen\" for \
                              this server, or null for none",
                            client.port()
                        ));
                        continue;
                    }
                },
            };
            if let Some(owner) = taken.get(&addr) {
                problems.push(format!(
                    "{who}: admin address {addr} is {owner}; set an \"admin_listen\" of its own"
                ));
            }
            let host = client.ip();
            match admins.get(&addr) {
                Some((earlier, earlier_host))
                    if !addr.ip().is_loopback() || *earlier_host == host =>
                {
                    problems.push(format!(
                        "{who}: admin address {addr} is already the admin address of {earlier}"
                    ));
                }
                Some(_) => {}
                None => {
                    admins.insert(addr, (&server.name, host));
                }
            }
        }
    }
}

/// How far above the client port the default admin port is.
pub const ADMIN_PORT_OFFSET: u16 = 20_000;

/// The admin address a server without `admin_listen` gets.
fn default_admin_addr(client: SocketAddr) -> Option<SocketAddr> {
    let port = client.port().checked_add(ADMIN_PORT_OFFSET)?;
    Some(SocketAddr::new(client.ip(), port))
}

fn admin_addr_of(server: &ServerConfig) -> Option<SocketAddr> {
    match &server.admin_listen {
        AdminListen::Off => None,
        AdminListen::At(text) => resolve_listen(text),
        AdminListen::Default => default_admin_addr(resolve_listen(&server.listen)?),
    }
}

/// How far above the client port the default peer port is.
pub const PEER_PORT_OFFSET: u16 = 10_000;

/// The peer address a server without `peer_listen` gets: its client host
/// at the client port + [`PEER_PORT_OFFSET`].
fn default_peer_addr(client: SocketAddr) -> Option<SocketAddr> {
    let port = client.port().checked_add(PEER_PORT_OFFSET)?;
    Some(SocketAddr::new(client.ip(), port))
}

fn peer_addr_of(server: &ServerConfig) -> Option<SocketAddr> {
    match &server.peer_listen {
        Some(text) => resolve_listen(text),
        None => default_peer_addr(resolve_listen(&server.listen)?),
    }
}

/// Whether `name` is an acceptable server name.
pub fn name_ok(name: &str) -> bool {
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
    if let Err(reasons) = p.fields.mask() {
        problems.extend(reasons.iter().map(|r| fields_problem(r)));
    }
}

/// A problem of `places.fields`, named with its place in a list
/// (`places.fields[2] ...`) or as a whole (`places.fields ...`).
fn fields_problem(reason: &str) -> String {
    let separator = if reason.starts_with('[') { "" } else { " " };
    format!("places.fields{separator}{reason}")
}

/// Reports what makes the `tls` section unusable: empty paths, placeholders
/// other than `{name}`, one certificate shared by several servers (a
/// certificate names one server, so all but one would be refused), and names
/// that cannot be part of a file name.
fn tls_problems(tls: &TlsConfig, servers: &[ServerConfig], problems: &mut Vec<String>) {
    let fields = [
        ("ca", &tls.ca, "certs/ca.pem"),
        ("cert", &tls.cert, "certs/{name}.pem"),
        ("key", &tls.key, "certs/{name}-key.pem"),
    ];
    for (field, path, example) in fields {
        if path.is_empty() {
            problems.push(format!(
                "tls.{field} is empty; give a PEM file, e.g. {example:?} (`herd certs` makes them)"
            ));
            continue;
        }
        if path.replace(NAME_PLACEHOLDER, "").contains(['{', '}']) {
            problems.push(format!(
                "tls.{field} {path:?} has a brace that is not part of {NAME_PLACEHOLDER}, the only \
                 placeholder; e.g. {example:?}"
            ));
        }
    }
    if tls.ca.contains(NAME_PLACEHOLDER) {
        problems.push(format!(
            "tls.ca {:?} contains {NAME_PLACEHOLDER}; the herd has one CA for every server, \
             e.g. \"certs/ca.pem\"",
            tls.ca
        ));
    }
    let named = [("cert", &tls.cert), ("key", &tls.key)];
    for (field, path) in named {
        if path.is_empty() {
            continue; // reported above
        }
        if !path.contains(NAME_PLACEHOLDER) && servers.len() > 1 {
            problems.push(format!(
                "tls.{field} {path:?} has no {NAME_PLACEHOLDER}, but the herd has {} servers and \
                 each needs its own certificate and key; e.g. \"certs/{NAME_PLACEHOLDER}.pem\"",
                servers.len()
            ));
        }
    }
    if tls.cert.contains(NAME_PLACEHOLDER) || tls.key.contains(NAME_PLACEHOLDER) {
        for server in servers.iter().filter(|s| s.name.contains('/')) {
            problems.push(format!(
                "{}: a name with '/' cannot stand for {NAME_PLACEHOLDER} in a file name; \
                 rename the server",
                shown(&server.name)
            ));
        }
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
        ("http_request_timeout_ms", l.http_request_timeout_ms == 0),
        ("link_records_per_sec", l.link_records_per_sec == 0),
        ("link_heartbeat_ms", l.link_heartbeat_ms == 0),
        ("link_announce_ms", l.link_announce_ms == 0),
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
    if l.client_auth_failures_per_min == 0 {
        problems.push(
            "limits.client_auth_failures_per_min is 0; it must be at least 1 (a phone may \
             mistype once)"
                .to_owned(),
        );
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
    if l.link_announce_ms > 10_000 {
        problems.push(format!(
            "limits.link_announce_ms is {}; at most 10000 (10 s), or a record lost on a \
             tree would be found missing that much later",
            l.link_announce_ms
        ));
    }
    if l.link_backoff_initial_ms > l.link_backoff_max_ms {
        problems.push(format!(
            "limits.link_backoff_initial_ms ({}) is greater than limits.link_backoff_max_ms ({})",
            l.link_backoff_initial_ms, l.link_backoff_max_ms
        ));
    }
}

/// Reads a listen string: an IP literal with port, or `localhost:port`.
///
/// `localhost` is 127.0.0.1 here, never a resolver's answer: validation
/// needs no network, and `localhost:p` and `127.0.0.1:p` are the same
/// address to the duplicate checks.
fn resolve_listen(listen: &str) -> Option<SocketAddr> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Some(addr);
    }
    let port: u16 = listen.strip_prefix("localhost:")?.parse().ok()?;
    Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn persistence_is_read_with_everysec_by_default_and_an_empty_dir_is_refused() {
        let mut value: Value = serde_json::from_str(&Config::default_herd().to_json_pretty())
            .expect("default herd JSON parses");
        value["persistence"] = json!({ "dir": "data" });
        let config = Config::from_json(&value.to_string()).expect("valid");
        let p = config.persistence.clone().expect("section read");
        assert_eq!(p.fsync, Fsync::Everysec);
        assert_eq!(
            config.journal_dir("Hands", Path::new("/etc/herd")),
            Some(PathBuf::from("/etc/herd/data/Hands"))
        );
        assert_eq!(
            Config::default_herd().journal_dir("Hands", Path::new(".")),
            None
        );
        let problems =
            problems_after(|v| v["persistence"] = json!({ "dir": " ", "fsync": "always" }));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("persistence.dir is empty")),
            "{problems:?}"
        );
        let wrong = json!({ "dir": "data", "fsync": "sometimes" });
        let mut value: Value = serde_json::from_str(&Config::default_herd().to_json_pretty())
            .expect("default herd JSON parses");
        value["persistence"] = wrong;
        let err = Config::from_json(&value.to_string()).expect_err("unknown mode");
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

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
    fn peer_addresses_default_to_the_client_port_plus_10000_and_can_be_set() {
        let mut herd = Config::default_herd();
        assert_eq!(herd.peer_addr("Goloman"), "127.0.0.1:22138".parse().ok());
        herd.servers[0].peer_listen = Some("127.0.0.1:4000".to_owned());
        herd.validate().expect("valid");
        assert_eq!(herd.peer_addr("Goloman"), "127.0.0.1:4000".parse().ok());
        assert_eq!(herd.peer_addr("Nobody"), None);
    }

    #[test]
    fn an_open_peer_address_is_allowed_with_a_secret_tls_or_insecure_links() {
        let mut herd = Config::default_herd();
        herd.servers[0].peer_listen = Some("0.0.0.0:22138".to_owned());
        assert!(herd.validate().is_err());
        herd.secret = Some("s3cret".to_owned());
        herd.validate().expect("a secret protects the links");
        herd.secret = None;
        herd.tls = Some(TlsConfig {
            ca: "ca.pem".into(),
            cert: "{name}.pem".into(),
            key: "{name}-key.pem".into(),
        });
        herd.validate().expect("TLS protects the links");
        herd.tls = None;
        herd.insecure_links = true;
        herd.validate().expect("the operator accepted the risk");
        let back = Config::from_json(&herd.to_json_pretty()).expect("round trip");
        assert!(back.insecure_links);
    }

    #[test]
    fn the_admin_address_is_client_port_plus_20000_an_address_or_none() {
        let text = r#"{"servers": [
            {"name": "A", "listen": "127.0.0.1:12138"},
            {"name": "B", "listen": "127.0.0.1:12139", "admin_listen": null},
            {"name": "C", "listen": "127.0.0.1:12140", "admin_listen": "127.0.0.1:9000"}
        ]}"#;
        let herd = Config::from_json(text).expect("valid");
        assert_eq!(herd.admin_addr("A"), "127.0.0.1:32138".parse().ok());
        assert_eq!(herd.admin_addr("B"), None, "null turns it off");
        assert_eq!(herd.admin_addr("C"), "127.0.0.1:9000".parse().ok());
        let back = Config::from_json(&herd.to_json_pretty()).expect("round trip");
        assert_eq!(back, herd, "null and absent survive a round trip");
        assert_eq!(back.servers[1].admin_listen, AdminListen::Off);
        assert_eq!(back.servers[0].admin_listen, AdminListen::Default);
    }

    #[test]
    fn servers_on_different_hosts_may_share_a_loopback_admin_address() {
        let text = r#"{"secret": "s", "insecure_clients": true, "servers": [
            {"name": "A", "listen": "10.0.0.1:12138", "admin_listen": "127.0.0.1:32138", "neighbours": ["B"]},
            {"name": "B", "listen": "10.0.0.2:12138", "admin_listen": "127.0.0.1:32138", "neighbours": ["A"]}
        ]}"#;
        let herd = Config::from_json(text).expect("one admin port per host");
        assert_eq!(herd.admin_addr("B"), "127.0.0.1:32138".parse().ok());
    }

    #[test]
    fn the_logging_section_takes_a_format_and_a_level() {
        let herd = Config::from_json(
            r#"{"servers": [{"name": "A", "listen": "127.0.0.1:12138"}],
                "logging": {"format": "json", "level": "debug"}}"#,
        )
        .expect("valid");
        assert_eq!(herd.logging.format, LogFormat::Json);
        assert_eq!(herd.logging.level.as_deref(), Some("debug"));
        let err = Config::from_json(
            r#"{"servers": [{"name": "A", "listen": "127.0.0.1:12138"}],
                "logging": {"format": "xml"}}"#,
        )
        .expect_err("unknown format");
        assert!(err.to_string().contains("xml"), "{err}");
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
        a_listen_port_of_zero_without_a_peer_address_is_reported:
            |v| v["servers"][3]["listen"] = json!("127.0.0.1:0")
            => ["Wilkes", "port 0", "default peer address", "set \"peer_listen\""];
        a_peer_port_of_zero_that_a_neighbour_dials_is_reported:
            |v| v["servers"][3]["peer_listen"] = json!("127.0.0.1:0")
            => ["Wilkes: peer_listen", "port 0", "links to it"];
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
        a_bad_peer_listen_is_reported:
            |v| v["servers"][0]["peer_listen"] = json!("nowhere") => ["Goloman: peer_listen", "not valid"];
        a_default_peer_port_past_65535_is_reported:
            |v| v["servers"][0]["listen"] = json!("127.0.0.1:60000")
            => ["Goloman", "past 65535", "set \"peer_listen\""];
        a_peer_address_on_a_client_port_is_reported:
            |v| v["servers"][0]["peer_listen"] = json!("127.0.0.1:12139")
            => ["Goloman: peer address 127.0.0.1:12139 is the client address of Hands"];
        a_shared_peer_address_is_reported:
            |v| v["servers"][1]["peer_listen"] = json!("127.0.0.1:22138")
            => ["Hands: peer address 127.0.0.1:22138 is already the peer address of Goloman"];
        an_open_peer_address_without_a_secret_is_reported:
            |v| v["servers"][2]["peer_listen"] = json!("0.0.0.0:22140")
            => ["Holiday: peer address 0.0.0.0:22140 is not loopback", "set \"secret\"", "insecure_links"];
        a_bad_admin_listen_is_reported:
            |v| v["servers"][0]["admin_listen"] = json!("nowhere") => ["Goloman: admin_listen", "not valid", "null"];
        an_admin_address_on_a_peer_port_is_reported:
            |v| v["servers"][0]["admin_listen"] = json!("127.0.0.1:22139")
            => ["Goloman: admin address 127.0.0.1:22139 is the peer address of Hands"];
        a_shared_admin_address_is_reported:
            |v| v["servers"][1]["admin_listen"] = json!("127.0.0.1:32138")
            => ["Hands: admin address 127.0.0.1:32138 is already the admin address of Goloman"];
        a_shared_loopback_admin_address_on_one_host_is_reported:
            |v| { v["servers"][0]["admin_listen"] = json!("127.0.0.1:40000"); v["servers"][1]["admin_listen"] = json!("127.0.0.1:40000"); }
            => ["Hands: admin address 127.0.0.1:40000 is already the admin address of Goloman"];
        a_default_admin_port_past_65535_is_reported:
            |v| { v["servers"][0]["listen"] = json!("127.0.0.1:50000"); v["servers"][0]["peer_listen"] = json!("127.0.0.1:50001"); }
            => ["Goloman", "default admin port", "past 65535"];
        a_log_level_that_is_no_filter_is_reported: |v| v["logging"]["level"] = json!("info,=[")
            => ["logging.level", "not a level"];
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
        an_open_client_address_without_tokens_is_reported:
            |v| v["servers"][0]["listen"] = json!("0.0.0.0:12138")
            => ["Goloman: client address 0.0.0.0:12138 is not loopback", "clients", "insecure_clients"];
        tokens_without_a_key_are_reported: |v| v["clients"] = json!({"auth": "token"})
            => ["clients.auth is \"token\" but clients.token_key is missing"];
        a_short_token_key_is_reported: |v| v["clients"] = json!({"auth": "token", "token_key": "short"})
            => ["clients.token_key is 5 bytes; at least 16"];
        client_tls_without_a_certificate_is_reported:
            |v| v["servers"][1]["client_tls_listen"] = json!("127.0.0.1:12639")
            => ["Hands: client_tls_listen needs a certificate", "client_tls", "tls"];
        an_open_client_tls_address_without_tokens_is_reported: |v| {
            v["servers"][1]["client_tls_listen"] = json!("0.0.0.0:12639");
            v["client_tls"] = json!({"cert": "c.pem", "key": "k.pem"});
        } => ["Hands: client_tls_listen 0.0.0.0:12639 is not loopback", "insecure_clients"];
        a_client_tls_address_on_another_port_of_the_herd_is_reported: |v| {
            v["servers"][1]["client_tls_listen"] = json!("127.0.0.1:22138");
            v["client_tls"] = json!({"cert": "c.pem", "key": "k.pem"});
        } => ["Hands: client_tls_listen 127.0.0.1:22138 is the peer address of Goloman"];
        an_open_http_address_without_tokens_is_reported:
            |v| v["servers"][2]["http_listen"] = json!("0.0.0.0:8080")
            => ["Holiday: http_listen 0.0.0.0:8080 is not loopback", "clients.auth", "insecure_clients"];
        https_without_a_certificate_is_reported:
            |v| v["servers"][2]["https_listen"] = json!("127.0.0.1:8443")
            => ["Holiday: https_listen needs a certificate"];
        a_bad_http_address_is_reported: |v| v["servers"][0]["http_listen"] = json!("port 80")
            => ["Goloman: http_listen \"port 80\" is not valid"];
        a_zero_http_request_timeout_is_reported:
            |v| v["limits"]["http_request_timeout_ms"] = json!(0)
            => ["limits.http_request_timeout_ms is 0"];
        a_zero_auth_failure_limit_is_reported:
            |v| v["limits"]["client_auth_failures_per_min"] = json!(0)
            => ["limits.client_auth_failures_per_min is 0"];
        every_places_field_is_refused: |v| v["places"] = json!({"fields": "*"})
            => ["places.fields \"*\" asks Google for every field", "highest SKU"];
        an_unknown_places_field_is_reported_at_its_place:
            |v| v["places"] = json!({"fields": ["location", "reviews"]})
            => ["places.fields[1] \"reviews\" is not a field herd translates"];
        a_places_field_list_without_location_is_reported:
            |v| v["places"] = json!({"fields": ["displayName"]})
            => ["places.fields does not list \"location\""];
        an_empty_secret_is_reported: |v| v["secret"] = json!("") => ["secret is empty"];
        an_empty_tls_path_is_reported:
            |v| v["tls"] = json!({"ca": "", "cert": "{name}.pem", "key": "{name}-key.pem"})
            => ["tls.ca is empty", "herd certs"];
        a_shared_tls_cert_in_a_herd_is_reported:
            |v| v["tls"] = json!({"ca": "ca.pem", "cert": "server.pem", "key": "{name}-key.pem"})
            => ["tls.cert \"server.pem\" has no {name}", "5 servers"];
        a_misspelt_tls_placeholder_is_reported:
            |v| v["tls"] = json!({"ca": "ca.pem", "cert": "{nmae}.pem", "key": "{name}-key.pem"})
            => ["tls.cert \"{nmae}.pem\"", "brace"];
        a_name_placeholder_in_the_ca_is_reported:
            |v| v["tls"] = json!({"ca": "{name}-ca.pem", "cert": "{name}.pem", "key": "{name}.key"})
            => ["tls.ca", "one CA"];
        a_server_name_with_a_slash_under_tls_is_reported: |v| {
            v["servers"] = json!([{"name": "a/b", "listen": "127.0.0.1:9000"}]);
            v["tls"] = json!({"ca": "ca.pem", "cert": "{name}.pem", "key": "{name}-key.pem"});
        } => ["a/b: a name with '/'", "file name"];
    }

    #[test]
    fn an_unknown_tls_field_is_an_error() {
        let text = r#"{"servers": [{"name": "Solo", "listen": "127.0.0.1:9000"}],
            "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem", "crt": "x"}}"#;
        let err = Config::from_json(text).expect_err("unknown field");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn tls_paths_fill_in_the_name_relative_to_the_config_directory() {
        let text = r#"{"servers": [{"name": "Solo", "listen": "127.0.0.1:9000"}],
            "tls": {"ca": "certs/ca.pem", "cert": "certs/{name}.pem",
                    "key": "/etc/herd/{name}-key.pem"}}"#;
        let config = Config::from_json(text).expect("valid");
        let dir = config_dir(Path::new("/srv/herd/herd.json"));
        assert_eq!(dir, Path::new("/srv/herd"));
        assert_eq!(config_dir(Path::new("herd.json")), Path::new("."));
        let paths = config.tls_paths("Solo", &dir).expect("tls is set");
        assert_eq!(paths.ca, Path::new("/srv/herd/certs/ca.pem"));
        assert_eq!(paths.cert, Path::new("/srv/herd/certs/Solo.pem"));
        assert_eq!(
            paths.key,
            Path::new("/etc/herd/Solo-key.pem"),
            "absolute stays"
        );
        assert_eq!(Config::default_herd().tls_paths("Goloman", &dir), None);
        let back = Config::from_json(&config.to_json_pretty()).expect("round trip");
        assert_eq!(back, config);
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
            assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
    }

    #[test]
    fn places_provider_is_settled_from_config_and_environment() {
        let pro = FieldMask::pro().header();
        let http = |base_url: &str, key: &str, api: PlacesApi| PlacesSource::Http {
            base_url: base_url.into(),
            key: (!key.is_empty()).then(|| key.to_owned()),
            api,
            field_mask: pro.clone(),
        };
        let auto = PlacesConfig::default();
        assert_eq!(auto.resolve(None), Ok(PlacesSource::Offline));
        assert_eq!(
            auto.resolve(Some(String::new())),
            Ok(PlacesSource::Offline),
            "an empty key is no key"
        );
        assert_eq!(
            auto.resolve(Some("k".into())),
            Ok(http(GOOGLE_NEW_BASE_URL, "k", PlacesApi::New)),
            "auto with a key picks Places API (New) at Google"
        );
        let legacy = PlacesConfig {
            api: PlacesApi::Legacy,
            ..auto.clone()
        };
        assert_eq!(
            legacy.resolve(Some("k".into())),
            Ok(http(GOOGLE_BASE_URL, "k", PlacesApi::Legacy)),
            "the legacy API keeps its own default URL"
        );
        let google = PlacesConfig {
            provider: Provider::Google,
            key: Some("file".into()),
            ..auto.clone()
        };
        assert_eq!(
            google.resolve(Some("env".into())),
            Ok(http(GOOGLE_NEW_BASE_URL, "env", PlacesApi::New)),
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
            Ok(http("http://127.0.0.1:9", "", PlacesApi::New))
        );
        let enterprise = PlacesConfig {
            fields: PlacesFields::Preset("enterprise".into()),
            ..mock.clone()
        };
        let Ok(PlacesSource::Http { field_mask, .. }) = enterprise.resolve(None) else {
            panic!("enterprise resolves")
        };
        assert!(field_mask.contains("places.rating"), "{field_mask}");
        let star = PlacesConfig {
            fields: PlacesFields::Preset("*".into()),
            ..mock
        };
        assert!(star.resolve(None).unwrap_err().contains("highest SKU"));
        let offline = PlacesConfig {
            provider: Provider::Offline,
            ..auto
        };
        assert_eq!(offline.resolve(Some("k".into())), Ok(PlacesSource::Offline));
    }

    #[test]
    fn open_client_addresses_are_valid_with_tokens_or_the_risk_accepted() {
        let open = json!({"servers": [{"name": "A", "listen": "0.0.0.0:12138", "peer_listen": "127.0.0.1:22138"}]});
        assert!(Config::from_json(&open.to_string()).is_err());
        let mut accepted = open.clone();
        accepted["insecure_clients"] = json!(true);
        let config = Config::from_json(&accepted.to_string()).unwrap();
        assert!(config.insecure_clients);
        let mut tokens = open;
        tokens["clients"] = json!({"auth": "token", "token_key": ["0123456789abcdef", "fedcba9876543210"], "read": "any"});
        let config = Config::from_json(&tokens.to_string()).unwrap();
        assert_eq!(config.clients.auth, crate::pure::clients::ClientAuth::Token);
        assert_eq!(config.clients.read, crate::pure::clients::ReadRule::Any);
        assert_eq!(config.clients.keys().len(), 2);
        let back = Config::from_json(&config.to_json_pretty()).unwrap();
        assert_eq!(back, config, "clients survive a round trip");
    }

    #[test]
    fn listen_ports_in_the_ephemeral_range_are_warned_about_with_the_remedy() {
        let text = r#"{"servers": [
            {"name": "A", "listen": "127.0.0.1:15001", "neighbours": []},
            {"name": "B", "listen": "127.0.0.1:12001", "peer_listen": "127.0.0.1:40000", "http_listen": "127.0.0.1:50000", "neighbours": []}
        ]}"#;
        let herd = Config::from_json(text).expect("valid");
        let warnings = herd.ephemeral_warnings((32768, 60999));
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(warnings[0].starts_with(
            "A: admin address (client port + 20000) 127.0.0.1:35001 lies in this host's ephemeral port range 32768-60999"
        ));
        assert!(warnings[0].contains("ip_local_reserved_ports"));
        assert!(warnings[1].starts_with("B: peer address 127.0.0.1:40000"));
        assert!(warnings[2].starts_with("B: http_listen 127.0.0.1:50000"));
        assert!(Config::default_herd()
            .ephemeral_warnings((32768, 60999))
            .is_empty());
    }

    #[test]
    fn places_api_and_fields_read_from_the_file() {
        let base = json!({"servers": [{"name": "A", "listen": "127.0.0.1:1", "neighbours": []}]});
        let mut legacy = base.clone();
        legacy["places"] = json!({"api": "legacy", "fields": ["location", "places.displayName"]});
        let config = Config::from_json(&legacy.to_string()).unwrap();
        assert_eq!(config.places.api, PlacesApi::Legacy);
        assert_eq!(
            config.places.fields,
            PlacesFields::List(vec!["location".into(), "places.displayName".into()])
        );
        let mut bad_api = base;
        bad_api["places"] = json!({"api": "v2"});
        let err = Config::from_json(&bad_api.to_string()).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn a_json_error_message_gives_line_and_column() {
        let err = Config::from_json("{\n  \"servers\": [,]\n}").expect_err("bad JSON");
        assert!(err.to_string().contains("line 2 column"), "{err}");
    }

    #[test]
    fn open_files_grow_with_shards_and_the_connection_limit() {
        let mut limits = Limits::default();
        let one = limits.open_files(1);
        let two = limits.open_files(2);
        assert_eq!(one.to_start, 48);
        assert_eq!(two.to_start, 64);
        // Every connection a shard may hold is a descriptor on top.
        assert_eq!(two.to_serve, 64 + 2 * 10_000);
        limits.max_connections_per_shard = usize::MAX;
        assert_eq!(limits.open_files(2).to_serve, u64::MAX);
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
    fn port_zero_is_accepted_where_nothing_needs_the_port_in_advance() {
        // A server on its own, every port free: start() reports them.
        let mut lone = Config::default_herd();
        lone.servers.truncate(1);
        lone.servers[0].neighbours.clear();
        lone.servers[0].listen = "127.0.0.1:0".to_owned();
        lone.servers[0].peer_listen = Some("127.0.0.1:0".to_owned());
        lone.servers[0].admin_listen = AdminListen::At("127.0.0.1:0".to_owned());
        lone.validate().expect("port 0 everywhere, no neighbours");
        // Client and admin ports may be 0 in a herd too: only links need
        // to know a port before the server starts.
        let mut herd = Config::default_herd();
        herd.servers[1].listen = "127.0.0.1:0".to_owned();
        herd.servers[1].peer_listen = Some("127.0.0.1:22139".to_owned());
        herd.servers[1].admin_listen = AdminListen::At("127.0.0.1:0".to_owned());
        herd.validate().expect("client and admin port 0");
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
