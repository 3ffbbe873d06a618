//! What one `Upstream` is told: its settings (with a `Debug` that never
//! shows the API key), why settings can be refused, and the base URL parsed
//! into the target every request goes to, with the request path built from
//! a query key (the key percent-encoded, or redacted for logs).
//!
//! Separate because it is the part operators set and tests check value by
//! value: no connection, no task and no clock here, only parsing and text.

use std::fmt;
use std::time::Duration;

use super::new_api::SEARCH_NEARBY_PATH;
use super::NEARBY_PATH;
use crate::places::key::QueryKey;
use crate::pure::config::PlacesApi;
use crate::pure::places_fields::FieldMask;

/// Settings for one `Upstream` (one per shard).
#[derive(Clone)]
pub struct UpstreamSettings {
    /// Scheme, host, optional port and optional path prefix, e.g.
    /// `https://places.googleapis.com` or `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Which Google API the upstream speaks.
    pub api: PlacesApi,
    /// `X-Goog-FieldMask` of New API requests (never `*`).
    pub field_mask: String,
    /// API key, sent in `X-Goog-Api-Key` (New) or as `key=` (legacy);
    /// omitted when `None`. Never logged.
    pub key: Option<String>,
    /// Bound on one whole call: waiting for a slot, connect, TLS, request, body.
    pub timeout: Duration,
    /// Keep-alive connections kept idle for reuse; 0 closes each after use.
    pub pool_connections: usize,
    /// Upstream requests (and so connections) in flight at once; more callers wait.
    pub max_in_flight: usize,
    /// Answers kept in the cache; 0 turns the cache off.
    pub cache_entries: usize,
    /// How long a cached answer is served.
    pub cache_ttl: Duration,
    /// Extra attempts after a failure that is known safe to retry.
    pub retries: u32,
    /// PEM certificates trusted in addition to the built-in web roots.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            base_url: PlacesApi::New.google_base_url().to_owned(),
            api: PlacesApi::New,
            field_mask: FieldMask::pro().header(),
            key: None,
            timeout: Duration::from_secs(5),
            pool_connections: 8,
            max_in_flight: 64,
            cache_entries: 4096,
            cache_ttl: Duration::from_secs(60),
            retries: 1,
            extra_ca_pem: None,
        }
    }
}

// Hand-written so that `{:?}` on settings can never print the key.
impl fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("base_url", &self.base_url)
            .field("api", &self.api)
            .field("field_mask", &self.field_mask)
            .field("key", &self.key.as_ref().map(|_| "REDACTED"))
            .field("timeout", &self.timeout)
            .field("pool_connections", &self.pool_connections)
            .field("max_in_flight", &self.max_in_flight)
            .field("cache_entries", &self.cache_entries)
            .field("cache_ttl", &self.cache_ttl)
            .field("retries", &self.retries)
            .field("extra_ca_pem", &self.extra_ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// Why an `Upstream` could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// `base_url` is not a usable http/https URL.
    #[error("bad places upstream URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS setup (extra CA PEM, host name) is unusable.
    #[error("bad places upstream TLS setup: {0}")]
    Tls(String),
    /// Some other setting is out of range.
    #[error("bad places upstream settings: {0}")]
    Settings(String),
}

/// The parsed `base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// https (true) or http (false).
    pub(super) tls: bool,
    /// Host name or IP, without IPv6 brackets: for DNS, connect and SNI.
    pub(super) host: String,
    /// TCP port (explicit, or the scheme's default).
    pub(super) port: u16,
    /// The Host header: the URL's authority as written.
    pub(super) host_header: String,
    /// Path prefix without a trailing slash ("" for none).
    pub(super) prefix: String,
}

impl Target {
    /// Parses an http/https base URL with optional port and path prefix.
    pub(super) fn parse(url: &str) -> Result<Target, UpstreamError> {
        let bad = |reason: &str| UpstreamError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not supported"));
        }
        if uri.query().is_some() {
            return Err(bad("a query is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            tls,
            host,
            port,
            host_header: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// scheme://authority, for messages.
    pub(super) fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host_header)
    }

    /// The origin-form request target (path and query) for one lookup.
    pub(super) fn request_path(&self, key: QueryKey, api_key: Option<&str>) -> String {
        let mut path = format!(
            "{}{NEARBY_PATH}?location={},{}&radius={}",
            self.prefix,
            format_e6(key.lat_e6),
            format_e6(key.lng_e6),
            key.radius_m
        );
        if let Some(api_key) = api_key {
            path.push_str("&key=");
            path.push_str(&percent_encode(api_key));
        }
        path
    }

    /// The request target of Nearby Search (New): the same for every lookup,
    /// which is in the body.
    pub(super) fn new_request_path(&self) -> String {
        format!("{}{SEARCH_NEARBY_PATH}", self.prefix)
    }

    /// The full URL for logs, with the key (if any) replaced by REDACTED.
    pub(super) fn redacted_url(&self, key: QueryKey, has_key: bool) -> String {
        let path = self.request_path(key, has_key.then_some("REDACTED"));
        format!("{}{path}", self.origin())
    }

    /// What a log line says the lookup was: for the New API, the endpoint
    /// and the circle (the key is in a header and never written).
    pub(super) fn describe(&self, api: PlacesApi, key: QueryKey, has_key: bool) -> String {
        match api {
            PlacesApi::Legacy => self.redacted_url(key, has_key),
            PlacesApi::New => {
                let q = key.query();
                format!(
                    "{}{} circle {},{} radius {}",
                    self.origin(),
                    self.new_request_path(),
                    format_e6(key.lat_e6),
                    format_e6(key.lng_e6),
                    q.radius_m
                )
            }
        }
    }
}

/// Formats millionths of a degree as a decimal with at most 6 fraction digits.
fn format_e6(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    let (whole, fraction) = (abs / 1_000_000, abs % 1_000_000);
    if fraction == 0 {
        format!("{sign}{whole}")
    } else {
        let digits = format!("{fraction:06}");
        format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::answer::NearbyQuery;

    fn key(lat: f64, lon: f64, radius_m: f64) -> QueryKey {
        QueryKey::from_query(NearbyQuery { lat, lon, radius_m }).unwrap()
    }

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn base_urls_parse_into_scheme_host_port_and_prefix() {
        let google = target("https://maps.googleapis.com");
        assert!(google.tls);
        assert_eq!(google.host, "maps.googleapis.com");
        assert_eq!(google.port, 443);
        assert_eq!(google.host_header, "maps.googleapis.com");
        assert_eq!(google.prefix, "");

        let local = target("http://127.0.0.1:8080/");
        assert!(!local.tls);
        assert_eq!((local.host.as_str(), local.port), ("127.0.0.1", 8080));
        assert_eq!(local.host_header, "127.0.0.1:8080");
        assert_eq!(local.prefix, "");

        let prefixed = target("http://[::1]:9/fault/500/");
        assert_eq!(prefixed.host, "::1");
        assert_eq!(prefixed.host_header, "[::1]:9");
        assert_eq!(prefixed.prefix, "/fault/500");
        assert_eq!(target("http://h").port, 80);

        for bad in [
            "ftp://h",
            "h:80",
            "http://u:p@h",
            "http://h/?a=1",
            "",
            "not a url",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_path_has_location_radius_and_encoded_key() {
        let t = target("https://maps.googleapis.com");
        let k = key(34.068930, -118.445127, 10_000.0);
        assert_eq!(
            t.request_path(k, Some("AIza+b/c d&e")),
            "/maps/api/place/nearbysearch/json?location=34.06893,-118.445127&radius=10000&key=AIza%2Bb%2Fc%20d%26e"
        );
        assert_eq!(
            t.request_path(k, None),
            "/maps/api/place/nearbysearch/json?location=34.06893,-118.445127&radius=10000"
        );
        let p = target("http://127.0.0.1:1/x/");
        assert!(p.request_path(k, None).starts_with("/x/maps/api/place/"));
    }

    #[test]
    fn redacted_url_never_contains_the_key() {
        let t = target("https://maps.googleapis.com");
        let k = key(1.0, 2.0, 3.0);
        let url = t.redacted_url(k, true);
        assert_eq!(
            url,
            "https://maps.googleapis.com/maps/api/place/nearbysearch/json?location=1,2&radius=3&key=REDACTED"
        );
        assert!(!t.redacted_url(k, false).contains("key="));
        let settings = UpstreamSettings {
            key: Some("SECRET-KEY".to_owned()),
            ..UpstreamSettings::default()
        };
        assert!(!format!("{settings:?}").contains("SECRET"));
    }

    #[test]
    fn coordinates_are_written_with_at_most_six_decimals() {
        assert_eq!(format_e6(key(-0.0000004, 0.0, 1.0).lat_e6), "0");
        assert_eq!(format_e6(-1_500_000), "-1.5");
        assert_eq!(format_e6(-500_000), "-0.5");
        assert_eq!(format_e6(123_000_001), "123.000001");
        assert_eq!(format_e6(90_000_000), "90");
    }
}
