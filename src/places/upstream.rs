//! The real Places source: Google's legacy Nearby Search over HTTP/1.1 (plain or TLS).
//! One `Upstream` per shard owns that shard's keep-alive connection pool, in-flight limit,
//! single-flight table and cache of rendered answers (keyed by the query as sent, snapped
//! when `places.snap_m` asks for it); it is not `Send` (Rc/RefCell) by design.
//! It must never log the API key, never retry after a timeout or after response bytes
//! arrived, never block the shard (DNS goes to glommio's blocking pool) and never
//! return an error: every failure becomes a Google-shaped error answer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::rt::Executor;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tracing::{debug, warn};

use crate::net::http::{GlommioIo, LocalExec};
use crate::places::answer::{
    error_answer, AnswerSettings, NearbyFuture, NearbyQuery, Places, PlacesAnswer, Rendered,
    RenderedFuture,
};
use crate::places::cache::LruTtl;
use crate::places::key::{Grid, QueryKey};
use crate::places::rendered::RenderedAnswer;

/// Largest answer body accepted; Google's 20-result pages are far below this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Path of the legacy Nearby Search endpoint, after the base URL's own path prefix.
pub const NEARBY_PATH: &str = "/maps/api/place/nearbysearch/json";

/// How many resolved addresses one connect tries before giving up (bounds the loop).
const MAX_CONNECT_ADDRS: usize = 4;

/// Settings for one `Upstream` (one per shard).
#[derive(Clone)]
pub struct UpstreamSettings {
    /// Scheme, host, optional port and optional path prefix, e.g.
    /// `https://maps.googleapis.com` or `http://127.0.0.1:8080`.
    pub base_url: String,
    /// API key sent as `key=`; omitted when `None`. Never logged.
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
            base_url: "https://maps.googleapis.com".to_owned(),
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
        let tls = if target.tls {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| UpstreamError::Tls(format!("host {:?}: {e}", target.host)))?;
            Some((tls_connector(settings.extra_ca_pem.as_deref())?, name))
        } else {
            None
        };
        let in_flight = u64::try_from(settings.max_in_flight).unwrap_or(u64::MAX);
        Ok(Upstream {
            shared: Rc::new(Shared {
                target,
                key: settings.key,
                timeout: settings.timeout,
                retries: settings.retries,
                pool_connections: settings.pool_connections,
                tls,
                idle: RefCell::new(Vec::new()),
                in_flight: Semaphore::new(in_flight),
                flights: RefCell::new(HashMap::default()),
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

/// A sent request, ready for reuse once its response has been read.
type Sender = SendRequest<Empty<Bytes>>;

/// Shared state of one `Upstream`.
struct Shared {
    /// Where requests go.
    target: Target,
    /// API key; only ever put into request URLs, never into logs.
    key: Option<String>,
    /// Bound on one whole upstream call.
    timeout: Duration,
    /// Extra attempts allowed for failures that are safe to retry.
    retries: u32,
    /// How many idle connections to keep.
    pool_connections: usize,
    /// TLS connector and server name (SNI + verification) for https.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Idle keep-alive connections, most recently used last.
    idle: RefCell<Vec<Sender>>,
    /// Caps upstream calls in flight; waiting for it counts against the timeout.
    in_flight: Semaphore,
    /// Lookups in flight, by cache key, for single-flight coalescing.
    flights: RefCell<HashMap<QueryKey, Rc<Flight>, ahash::RandomState>>,
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
        let joined = self.flights.borrow().get(&key).cloned();
        let flight = match joined {
            Some(flight) => {
                self.count(|s| s.coalesced += 1);
                flight
            }
            None => self.start_flight(key),
        };
        let answer = flight.wait().await;
        Rendered { answer, within }
    }

    /// Starts the one upstream lookup for `key` in its own task, so that a caller
    /// dropping its future (e.g. a client hanging up) cannot strand the others.
    fn start_flight(self: &Rc<Self>, key: QueryKey) -> Rc<Flight> {
        let flight = Rc::new(Flight::default());
        self.flights.borrow_mut().insert(key, Rc::clone(&flight));
        let guard = FlightGuard {
            shared: Rc::clone(self),
            flight: Rc::clone(&flight),
            key,
            answer: None,
        };
        glommio::spawn_local(async move {
            let shared = Rc::clone(&guard.shared);
            guard.finish(shared.fetch(key).await);
        })
        .detach();
        flight
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
        let url = self.target.redacted_url(key, self.key.is_some());
        let answer = match result {
            Ok(answer) => match classify(&answer) {
                Verdict::Cacheable => {
                    // Rendered once here; every reply from now on only copies bytes.
                    let answer = Rc::new(RenderedAnswer::render(&answer));
                    let now = (self.clock)();
                    self.cache
                        .borrow_mut()
                        .insert(key, Rc::clone(&answer), answer.weight(), now);
                    return answer;
                }
                Verdict::PassThrough { status } => {
                    let message = answer
                        .get("error_message")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    warn!(%url, %status, error_message = %message, "places upstream refused the lookup");
                    answer
                }
                Verdict::Malformed(reason) => {
                    warn!(%url, %reason, "places upstream answer unusable");
                    error_answer("UNKNOWN_ERROR", reason)
                }
            },
            Err(err) => {
                let message = err.message(&self.target.origin());
                warn!(%url, error = %message, "places upstream call failed");
                error_answer("UNKNOWN_ERROR", &message)
            }
        };
        self.count(|s| s.errors += 1);
        Rc::new(RenderedAnswer::render(&answer))
    }

    /// Waits for an in-flight slot, then tries once plus up to `retries` safe retries.
    async fn call_with_retries(self: &Rc<Self>, key: QueryKey) -> Result<PlacesAnswer, CallError> {
        let _slot = self
            .in_flight
            .acquire_permit(1)
            .await
            .map_err(|e| CallError::Local(format!("in-flight limiter closed: {e}")))?;
        let path = self.target.request_path(key, self.key.as_deref());
        let mut attempt = 0u32;
        // Bounded: every turn either returns or uses up one of `retries` attempts.
        loop {
            match self.attempt(&path).await {
                Err(err) if err.retryable() && attempt < self.retries => {
                    attempt += 1;
                    debug!(error = %err.message(&self.target.origin()), attempt, "retrying places upstream call");
                }
                other => return other,
            }
        }
    }

    /// One HTTP exchange on a pooled or new connection.
    async fn attempt(self: &Rc<Self>, path: &str) -> Result<PlacesAnswer, CallError> {
        let (mut sender, reused) = self.checkout().await?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.target.host_header)
            .header(hyper::header::USER_AGENT, "herd")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| CallError::Local(format!("cannot build request: {e}")))?;
        self.count(|s| s.requests += 1);
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut err) => {
                // A request handed back was never written: always safe to send again.
                let unsent = err.take_message().is_some();
                let err = err.into_error();
                let retryable = unsent || (reused && err.is_incomplete_message()) || is_reset(&err);
                return Err(CallError::Send {
                    cause: error_chain(&err),
                    retryable,
                });
            }
        };
        let status = response.status();
        if !status.is_success() {
            // The unread body makes the connection unusable; it is dropped, not pooled.
            return Err(CallError::HttpStatus(status.as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    CallError::TooLarge
                } else {
                    CallError::Body(error_chain(e.as_ref()))
                }
            })?
            .to_bytes();
        self.checkin(sender);
        serde_json::from_slice(&body).map_err(|_| CallError::NotJson)
    }

    /// An idle connection that is still usable, or a new one. Bounded: each turn drops one.
    async fn checkout(&self) -> Result<(Sender, bool), CallError> {
        loop {
            let popped = self.idle.borrow_mut().pop();
            let Some(mut sender) = popped else { break };
            if sender.is_closed() {
                continue;
            }
            // Just after a response the connection task may not have marked the
            // connection ready yet; waiting here is short and under the timeout.
            if sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    /// Keeps a connection whose response was read completely, if there is room.
    fn checkin(&self, sender: Sender) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.pool_connections && !sender.is_closed() {
            idle.push(sender);
        }
    }

    /// Opens a new connection (TCP, then TLS for https) and starts its hyper task.
    async fn connect(&self) -> Result<Sender, CallError> {
        let origin = self.target.origin();
        let connect_err = |cause: String, kind: Option<io::ErrorKind>| CallError::Connect {
            origin: origin.clone(),
            cause,
            kind,
        };
        let addrs = self
            .resolve()
            .await
            .map_err(|e| connect_err(format!("cannot resolve host: {e}"), None))?;
        let mut last: Option<io::Error> = None;
        let mut stream = None;
        for addr in addrs.iter().take(MAX_CONNECT_ADDRS) {
            match TcpStream::connect(*addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(io::Error::from(e)),
            }
        }
        let stream = match (stream, last) {
            (Some(stream), _) => stream,
            (None, Some(e)) => return Err(connect_err(e.to_string(), Some(e.kind()))),
            (None, None) => return Err(connect_err("host has no address".to_owned(), None)),
        };
        // Requests are small and latency-bound: do not let Nagle hold them back.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let handshake_err = |e: hyper::Error| connect_err(error_chain(&e), None);
        match &self.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(GlommioIo::new(stream))
                    .await
                    .map_err(handshake_err)?;
                LocalExec.execute(drive(conn));
                Ok(sender)
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| connect_err(format!("TLS handshake failed: {e}"), None))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(GlommioIo::new(tls))
                    .await
                    .map_err(handshake_err)?;
                LocalExec.execute(drive(conn));
                Ok(sender)
            }
        }
    }

    /// Socket addresses of the target; names are looked up off the shard thread.
    async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let port = self.target.port;
        if let Ok(ip) = self.target.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let host = self.target.host.clone();
        glommio::executor()
            .spawn_blocking(move || {
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|addrs| addrs.collect())
            })
            .await
    }
}

/// Runs one client connection until it closes; errors only matter for debugging,
/// the request that hit them reports them itself.
async fn drive<T>(conn: hyper::client::conn::http1::Connection<T, Empty<Bytes>>)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    if let Err(e) = conn.await {
        debug!(error = %error_chain(&e), "places upstream connection ended");
    }
}

/// TLS client setup: built-in web roots plus the extra PEM CAs, ring crypto, HTTP/1.1 ALPN.
fn tls_connector(extra_ca_pem: Option<&[u8]>) -> Result<TlsConnector, UpstreamError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut added = 0usize;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| UpstreamError::Tls(format!("extra CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| UpstreamError::Tls(format!("extra CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(UpstreamError::Tls(
                "extra CA PEM holds no certificate".to_owned(),
            ));
        }
    }
    // An explicit provider: no dependence on a process-wide default being installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A lookup in flight: the answer once known, and the event that announces it.
#[derive(Default)]
struct Flight {
    /// Set exactly once, by the `FlightGuard`.
    answer: RefCell<Option<Rc<RenderedAnswer>>>,
    /// Notified once the answer is set.
    done: Event,
}

impl Flight {
    /// The answer, once the lookup ends.
    async fn wait(&self) -> Rc<RenderedAnswer> {
        // Two turns suffice: a listener made before the second check cannot miss the
        // notification, and the answer is set before anyone is notified.
        for _ in 0..2 {
            if let Some(answer) = self.answer.borrow().clone() {
                return answer;
            }
            let listener = self.done.listen();
            if let Some(answer) = self.answer.borrow().clone() {
                return answer;
            }
            listener.await;
        }
        let answer = self.answer.borrow().clone();
        answer.unwrap_or_else(|| {
            Rc::new(RenderedAnswer::render(&error_answer(
                "UNKNOWN_ERROR",
                "places lookup ended without an answer",
            )))
        })
    }
}

/// Publishes a flight's answer when dropped, even if its task was cancelled or panicked,
/// so waiters are never left hanging.
struct FlightGuard {
    /// The upstream whose flight table holds this flight.
    shared: Rc<Shared>,
    /// The flight to finish.
    flight: Rc<Flight>,
    /// Its key in the flight table.
    key: QueryKey,
    /// The answer, once the lookup produced one.
    answer: Option<Rc<RenderedAnswer>>,
}

impl FlightGuard {
    /// Records the answer; dropping the guard then publishes it to every waiter.
    fn finish(mut self, answer: Rc<RenderedAnswer>) {
        self.answer = Some(answer);
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Remove first: a caller arriving after this must use the cache or start anew.
        if let Ok(mut flights) = self.shared.flights.try_borrow_mut() {
            flights.remove(&self.key);
        }
        let answer = self.answer.take().unwrap_or_else(|| {
            Rc::new(RenderedAnswer::render(&error_answer(
                "UNKNOWN_ERROR",
                "places lookup was cancelled",
            )))
        });
        if let Ok(mut slot) = self.flight.answer.try_borrow_mut() {
            *slot = Some(answer);
        }
        self.flight.done.notify(usize::MAX);
    }
}

/// Why one upstream call failed.
#[derive(Debug)]
enum CallError {
    /// The whole call took longer than the timeout.
    Timeout(Duration),
    /// No connection could be made (resolve, TCP, TLS or HTTP handshake).
    Connect {
        /// scheme://host:port, for the message.
        origin: String,
        /// What went wrong.
        cause: String,
        /// The IO error kind, when there was one, to judge retrying.
        kind: Option<io::ErrorKind>,
    },
    /// The request failed before a response head arrived.
    Send {
        /// What went wrong.
        cause: String,
        /// Whether sending again is known to be safe.
        retryable: bool,
    },
    /// A non-2xx response.
    HttpStatus(u16),
    /// The body exceeded `MAX_BODY_BYTES`.
    TooLarge,
    /// Reading the body failed after the response head.
    Body(String),
    /// The body was not JSON.
    NotJson,
    /// Our own side failed (should not happen).
    Local(String),
}

impl CallError {
    /// Safe to try again: nothing reached the server, or a pooled connection was dead.
    /// Never after a timeout (the budget is spent) or once response bytes arrived.
    fn retryable(&self) -> bool {
        match self {
            CallError::Connect { kind, .. } => matches!(
                kind,
                Some(
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                )
            ),
            CallError::Send { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The error_message of the answer; names the cause, never the key.
    fn message(&self, origin: &str) -> String {
        match self {
            CallError::Timeout(d) => {
                format!("places upstream timed out after {} ms", d.as_millis())
            }
            CallError::Connect { origin, cause, .. } => {
                format!("cannot connect to {origin}: {cause}")
            }
            CallError::Send { cause, .. } => {
                format!("places upstream request to {origin} failed: {cause}")
            }
            CallError::HttpStatus(code) => format!("places upstream answered HTTP {code}"),
            CallError::TooLarge => {
                format!("places upstream sent a body larger than {MAX_BODY_BYTES} bytes")
            }
            CallError::Body(cause) => format!("places upstream body could not be read: {cause}"),
            CallError::NotJson => "places upstream sent a body that is not JSON".to_owned(),
            CallError::Local(cause) => format!("places upstream client error: {cause}"),
        }
    }
}

/// What to do with a JSON answer from upstream.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// OK or ZERO_RESULTS: serve and cache.
    Cacheable,
    /// A Google error status: serve as is, do not cache.
    PassThrough {
        /// The status string.
        status: String,
    },
    /// Not an answer at all: replace with an UNKNOWN_ERROR carrying this reason.
    Malformed(&'static str),
}

/// Sorts a JSON answer by its `status` field.
fn classify(answer: &Value) -> Verdict {
    match answer.get("status").and_then(Value::as_str) {
        Some("OK" | "ZERO_RESULTS") => Verdict::Cacheable,
        Some(status) => Verdict::PassThrough {
            status: status.to_owned(),
        },
        None => Verdict::Malformed("places upstream sent JSON without a status"),
    }
}

/// Whether a hyper error comes from a connection reset/abort/broken pipe, i.e. the
/// peer dropped the connection; hyper only reports these before a response completes.
fn is_reset(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    // Bounded: error chains are short; stop after a few links regardless.
    for _ in 0..8 {
        let Some(e) = source else { return false };
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            return matches!(
                io_err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            );
        }
        source = e.source();
    }
    false
}

/// An error and its sources, joined with ": " (hyper's Display shows only the top).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    for _ in 0..8 {
        let Some(e) = source else { break };
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
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

/// The parsed `base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// https (true) or http (false).
    tls: bool,
    /// Host name or IP, without IPv6 brackets: for DNS, connect and SNI.
    host: String,
    /// TCP port (explicit, or the scheme's default).
    port: u16,
    /// The Host header: the URL's authority as written.
    host_header: String,
    /// Path prefix without a trailing slash ("" for none).
    prefix: String,
}

impl Target {
    /// Parses an http/https base URL with optional port and path prefix.
    fn parse(url: &str) -> Result<Target, UpstreamError> {
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
    fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host_header)
    }

    /// The origin-form request target (path and query) for one lookup.
    fn request_path(&self, key: QueryKey, api_key: Option<&str>) -> String {
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

    /// The full URL for logs, with the key (if any) replaced by REDACTED.
    fn redacted_url(&self, key: QueryKey, has_key: bool) -> String {
        let path = self.request_path(key, has_key.then_some("REDACTED"));
        format!("{}{path}", self.origin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn answers_are_classified_by_status() {
        assert_eq!(classify(&json!({"status": "OK"})), Verdict::Cacheable);
        assert_eq!(
            classify(&json!({"status": "ZERO_RESULTS"})),
            Verdict::Cacheable
        );
        assert_eq!(
            classify(&json!({"status": "REQUEST_DENIED", "error_message": "bad key"})),
            Verdict::PassThrough {
                status: "REQUEST_DENIED".to_owned()
            }
        );
        assert!(matches!(classify(&json!([1])), Verdict::Malformed(_)));
        assert!(matches!(
            classify(&json!({"status": 3})),
            Verdict::Malformed(_)
        ));
    }

    #[test]
    fn error_messages_name_the_cause() {
        let o = "http://h:1";
        let cases = [
            (
                CallError::Timeout(Duration::from_millis(300)),
                "places upstream timed out after 300 ms",
            ),
            (
                CallError::HttpStatus(500),
                "places upstream answered HTTP 500",
            ),
            (
                CallError::NotJson,
                "places upstream sent a body that is not JSON",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.message(o), text);
            assert!(!err.retryable());
        }
        let refused = CallError::Connect {
            origin: o.to_owned(),
            cause: "Connection refused".to_owned(),
            kind: Some(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            refused.message(o),
            "cannot connect to http://h:1: Connection refused"
        );
        assert!(refused.retryable());
        let tls = CallError::Connect {
            origin: o.to_owned(),
            cause: "TLS".to_owned(),
            kind: None,
        };
        assert!(!tls.retryable());
        assert!(CallError::TooLarge.message(o).contains("1048576 bytes"));
        assert!(CallError::Send {
            cause: String::new(),
            retryable: true
        }
        .retryable());
        assert!(!CallError::Body(String::new()).retryable());
    }

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
