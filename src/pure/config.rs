//! Herd configuration: which servers exist, where each listens, who its neighbours are,
//! the shared secret and the resource limits.
//!
//! Owns the JSON config format and the built-in default herd. Beside it, and not named
//! by it: each server's addresses, given or derived, in `config_addresses.rs`; the
//! checks, field by field in `config_fields.rs` and the herd's rules (every problem
//! reported at once) in `config_check.rs`. Pure, like the rest of `pure/`: reading the
//! file is the shell's (`process/config_file.rs`).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pure::clients::{ClientTlsConfig, ClientsConfig};
use crate::pure::places_fields::FieldMask;

/// Longest server name accepted, in bytes, so names always fit easily in a protocol line.
pub const MAX_NAME_BYTES: usize = 64;

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

/// How far above the client port the default admin port is.
pub const ADMIN_PORT_OFFSET: u16 = 20_000;

/// How far above the client port the default peer port is.
pub const PEER_PORT_OFFSET: u16 = 10_000;

/// Whether `name` is an acceptable server name.
pub fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.bytes().all(|b| b.is_ascii_graphic())
}

/// A name as shown in messages, quoted when bare text would be ambiguous (empty, spaces).
pub(crate) fn shown(name: &str) -> String {
    if name_ok(name) {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// A problem of `places.fields`, named with its place in a list
/// (`places.fields[2] ...`) or as a whole (`places.fields ...`).
pub(crate) fn fields_problem(reason: &str) -> String {
    let separator = if reason.starts_with('[') { "" } else { " " };
    format!("places.fields{separator}{reason}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::net::SocketAddr;

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
        value["persistence"] = json!({ "dir": " ", "fsync": "always" });
        let err = Config::from_json(&value.to_string()).expect_err("an empty dir");
        assert!(
            err.to_string().contains("persistence.dir is empty"),
            "{err}"
        );
        let wrong = json!({ "dir": "data", "fsync": "sometimes" });
        let mut value: Value = serde_json::from_str(&Config::default_herd().to_json_pretty())
            .expect("default herd JSON parses");
        value["persistence"] = wrong;
        let err = Config::from_json(&value.to_string()).expect_err("unknown mode");
        assert!(err.to_string().contains("sometimes"), "{err}");
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
