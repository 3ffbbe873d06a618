//! The real Places source: Google's Nearby Search, New (the default) or legacy, over
//! HTTP/1.1 (plain or TLS), answered in the legacy JSON either way.
//! One `Upstream` per shard owns that shard's keep-alive connection pool, in-flight limit,
//! single-flight table and cache of rendered answers (keyed by the query as sent, snapped
//! when `places.snap_m` asks for it); it is not `Send` (Rc/RefCell) by design.
//! It must never log the API key, never retry after a timeout or after response bytes
//! arrived, never block the shard (DNS goes to glommio's blocking pool) and never
//! return an error: every failure becomes a Google-shaped error answer.
//!
//! This file holds the `Upstream` type, its public API and the lookup itself (cache,
//! single-flight, one call under the timeout, what the answer becomes). One file per
//! other job:
//! - `settings.rs`: the settings, their errors, the base URL and the request path;
//! - `flight.rs`: single-flight, identical lookups in flight sharing one call;
//! - `call.rs`: one call, its in-flight slot, the HTTP exchange and safe retries;
//! - `new_api.rs` (pure): the New API's request body, its answers translated to the
//!   legacy JSON and its errors to legacy statuses;
//! - `pool.rs`: the keep-alive connection pool;
//! - `connect.rs`: new connections: DNS, TCP, TLS, the HTTP handshake;
//! - `classify.rs` (pure): answers sorted by status, failures by cause.
//!
//! The cache itself is `crate::places::cache`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use serde_json::Value;
use tracing::warn;

use crate::places::answer::{
    error_answer, AnswerSettings, NearbyFuture, NearbyQuery, Places, Rendered, RenderedFuture,
};
use crate::places::cache::LruTtl;
use crate::places::key::{Grid, QueryKey};
use crate::places::rendered::RenderedAnswer;

mod call;
mod classify;
mod connect;
mod flight;
pub mod new_api;
mod pool;
mod settings;

use crate::pure::config::PlacesApi;
use classify::{classify_legacy, CallError, Verdict};
use connect::Connector;
use flight::Flights;
use pool::Pool;
use settings::Target;
pub use settings::{UpstreamError, UpstreamSettings};

/// Largest answer body accepted; Google's 20-result pages are far below this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Path of the legacy Nearby Search endpoint, after the base URL's own path prefix.
pub const NEARBY_PATH: &str = "/maps/api/place/nearbysearch/json";

/// Counters of one `Upstream`, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Lookups asked of this client.
    pub lookups: u64,
    /// HTTP requests sent upstream (retries included).
    pub requests: u64,
    /// Callers that joined an identical request already in flight.
    pub coalesced: u64,
    /// Callers answered from the cache.
    pub cache_hits: u64,
    /// Upstream lookups that ended in an error answer (ours or Google's).
    pub errors: u64,
}

/// Where "now" comes from for cache expiry; tests pass a clock they move by hand.
pub type Clock = crate::places::answer::Clock;

/// The Google Places client of one shard. Cheap to clone (shared state behind an `Rc`).
#[derive(Clone)]
pub struct Upstream {
    /// Everything, shared with in-flight lookups, which outlive any one caller.
    shared: Rc<Shared>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.shared.target.origin())
            .field("stats", &self.shared.stats.get())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client; no connection is made until the first lookup.
    pub fn new(settings: UpstreamSettings) -> Result<Upstream, UpstreamError> {
        Self::with_clock(settings, Rc::new(Instant::now))
    }

    /// Like `new`, with cache expiry measured on `clock` instead of the real clock.
    pub fn with_clock(settings: UpstreamSettings, clock: Clock) -> Result<Upstream, UpstreamError> {
        Self::with_answers(settings, AnswerSettings::default(), clock)
    }

    /// Like `with_clock`, with the cache's byte bound and the snapping grid given.
    pub fn with_answers(
        settings: UpstreamSettings,
        answers: AnswerSettings,
        clock: Clock,
    ) -> Result<Upstream, UpstreamError> {
        let target = Target::parse(&settings.base_url)?;
        if settings.max_in_flight == 0 {
            return Err(UpstreamError::Settings(
                "max_in_flight must be at least 1".to_owned(),
            ));
        }
        let connector = Connector::new(target.clone(), settings.extra_ca_pem.as_deref())?;
        let in_flight = u64::try_from(settings.max_in_flight).unwrap_or(u64::MAX);
        Ok(Upstream {
            shared: Rc::new(Shared {
                target,
                api: settings.api,
                field_mask: settings.field_mask,
                key: settings.key,
                timeout: settings.timeout,
                retries: settings.retries,
                pool: Pool::new(connector, settings.pool_connections),
                in_flight: Semaphore::new(in_flight),
                flights: Rc::new(Flights::default()),
                cache: RefCell::new(LruTtl::new(
                    settings.cache_entries,
                    answers.cache_bytes,
                    settings.cache_ttl,
                )),
                grid: answers.grid,
                stats: Cell::new(UpstreamStats::default()),
                latency: RefCell::new(crate::ops::metrics::latency_histogram()),
                clock,
            }),
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UpstreamStats {
        self.shared.stats.get()
    }
}

impl Places for Upstream {
    fn nearby(&self, query: NearbyQuery) -> NearbyFuture {
        // The future owns an Rc clone, so it is 'static as the trait requires.
        let shared = Rc::clone(&self.shared);
        Box::pin(async move { shared.lookup(query).await.to_value() })
    }

    fn nearby_rendered(&self, query: NearbyQuery) -> RenderedFuture {
        let shared = Rc::clone(&self.shared);
        Box::pin(shared.lookup(query))
    }

    fn figures(&self) -> crate::ops::metrics::PlacesFigures {
        let s = self.stats();
        crate::ops::metrics::PlacesFigures {
            lookups: s.lookups,
            cache_hits: s.cache_hits,
            coalesced: s.coalesced,
            upstream_requests: s.requests,
            upstream_errors: s.errors,
        }
    }

    fn take_upstream_latency(&self, into: &mut hdrhistogram::Histogram<u64>) {
        let mut latency = self.shared.latency.borrow_mut();
        // Same bounds: adding cannot fail.
        let _ = into.add(&*latency);
        latency.reset();
    }
}

/// Shared state of one `Upstream`.
struct Shared {
    /// Where requests go.
    target: Target,
    /// Which API they speak.
    api: PlacesApi,
    /// The New API's `X-Goog-FieldMask`.
    field_mask: String,
    /// API key; only ever put into a request (header or URL), never into logs.
    key: Option<String>,
    /// Bound on one whole upstream call.
    timeout: Duration,
    /// Extra attempts allowed for failures that are safe to retry.
    retries: u32,
    /// Idle keep-alive connections, and the connector for new ones.
    pool: Pool,
    /// Caps upstream calls in flight; waiting for it counts against the timeout.
    in_flight: Semaphore,
    /// Lookups in flight, by cache key, for single-flight coalescing.
    flights: Rc<Flights>,
    /// Successful answers by cache key, rendered.
    cache: RefCell<LruTtl<QueryKey, Rc<RenderedAnswer>>>,
    /// Snapping of queries onto upstream keys.
    grid: Grid,
    /// Counters.
    stats: Cell<UpstreamStats>,
    /// Upstream call latencies (microseconds) since the metrics last took them.
    latency: RefCell<hdrhistogram::Histogram<u64>>,
    /// Time source for cache expiry.
    clock: Clock,
}

impl Shared {
    /// Adds to one counter.
    fn count(&self, bump: impl FnOnce(&mut UpstreamStats)) {
        let mut stats = self.stats.get();
        bump(&mut stats);
        self.stats.set(stats);
    }

    /// The whole `nearby` path: local validation, cache, single-flight, upstream.
    async fn lookup(self: Rc<Self>, query: NearbyQuery) -> Rendered {
        let Some((key, within)) = self.grid.key(query) else {
            return Rendered::once(&error_answer(
                "INVALID_REQUEST",
                "location and radius must be finite numbers",
            ));
        };
        self.count(|s| s.lookups += 1);
        let now = (self.clock)();
        let cached = self.cache.borrow_mut().get(&key, now);
        if let Some(answer) = cached {
            self.count(|s| s.cache_hits += 1);
            return Rendered { answer, within };
        }
        let joined = self.flights.get(&key);
        let flight = match joined {
            Some(flight) => {
                self.count(|s| s.coalesced += 1);
                flight
            }
            None => {
                // The flight's task owns its own Rc, so it outlives this caller.
                let shared = Rc::clone(&self);
                self.flights
                    .start(key, async move { shared.fetch(key).await })
            }
        };
        let answer = flight.wait().await;
        Rendered { answer, within }
    }

    /// One upstream lookup, bounded by the timeout, turned into a rendered answer;
    /// caches successes.
    async fn fetch(self: &Rc<Self>, key: QueryKey) -> Rc<RenderedAnswer> {
        let timeout = self.timeout;
        let call = self.call_with_retries(key);
        // The timer wins by dropping the call: its connection is dropped, never pooled.
        let expired = async move {
            glommio::timer::sleep(timeout).await;
            Err(CallError::Timeout(timeout))
        };
        let started = Instant::now();
        let result = futures_lite::future::or(call, expired).await;
        self.latency
            .borrow_mut()
            .saturating_record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        let url = self.target.describe(self.api, key, self.key.is_some());
        let verdict = match result {
            Ok(reply) => match self.api {
                PlacesApi::Legacy => classify_legacy(&reply.body),
                PlacesApi::New => new_api::classify(reply.status, &reply.body, self.key.as_deref()),
            },
            Err(err) => {
                let message = err.message(&self.target.origin());
                warn!(%url, error = %message, "places upstream call failed");
                self.count(|s| s.errors += 1);
                return Rc::new(RenderedAnswer::render(&error_answer(
                    "UNKNOWN_ERROR",
                    &message,
                )));
            }
        };
        let answer = match verdict {
            Verdict::Cacheable { answer, dropped } => {
                if dropped > 0 {
                    warn!(%url, dropped, "places upstream sent places without a location; left out");
                }
                // Rendered once here; every reply from now on only copies bytes.
                let answer = Rc::new(RenderedAnswer::render(&answer));
                let now = (self.clock)();
                self.cache
                    .borrow_mut()
                    .insert(key, Rc::clone(&answer), answer.weight(), now);
                return answer;
            }
            Verdict::Refused { answer, status } => {
                let message = answer
                    .get("error_message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                warn!(%url, %status, error_message = %message, "places upstream refused the lookup");
                answer
            }
            Verdict::Malformed(reason) => {
                warn!(%url, %reason, "places upstream answer unusable");
                error_answer("UNKNOWN_ERROR", &reason)
            }
        };
        self.count(|s| s.errors += 1);
        Rc::new(RenderedAnswer::render(&answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_rejected() {
        let no_slots = UpstreamSettings {
            max_in_flight: 0,
            ..UpstreamSettings::default()
        };
        assert!(matches!(
            Upstream::new(no_slots),
            Err(UpstreamError::Settings(_))
        ));
        let bad_ca = UpstreamSettings {
            extra_ca_pem: Some(b"not pem".to_vec()),
            ..UpstreamSettings::default()
        };
        assert!(matches!(Upstream::new(bad_ca), Err(UpstreamError::Tls(_))));
        let bad_url = UpstreamSettings {
            base_url: "gopher://x".to_owned(),
            ..UpstreamSettings::default()
        };
        assert!(matches!(
            Upstream::new(bad_url),
            Err(UpstreamError::BadUrl { .. })
        ));
        assert!(Upstream::new(UpstreamSettings::default()).is_ok());
    }
}
