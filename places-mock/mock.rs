//! A real local HTTP(S) server speaking Google's legacy Nearby Search, for tests and demos.
//! It owns its listener, its request/connection counters and its fault injection;
//! answers come from `herd::places::answer::OfflinePlaces`, so they are deterministic.
//! It must never reach the internet, and must not be used as a production Places source.
//!
//! Faults and latency can be chosen per request, either as query parameters
//! (`fault=500|hang|notjson|none|STATUSNAME`, `latency_ms=N`) or as path segments before
//! the endpoint (`/fault/500/maps/api/place/nearbysearch/json`), which lets a client
//! whose base URL has a path prefix pick a fault without touching its query.
//!
//! Not part of the herd library: the `herd-places-mock` binary (`main.rs`
//! here) runs it, and tests that want it in-process include this file by
//! path, so it names the library only as `herd::` and uses only its public
//! items.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, TcpStream};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rustls::ServerConfig;
use serde_json::{json, Value};
use tracing::{debug, warn};

use herd::net::http::GlommioIo;
use herd::places::answer::{error_answer, NearbyQuery, OfflinePlaces};
use herd::places::upstream::NEARBY_PATH;

/// Longest a "hang" lasts before the mock drops the connection unanswered; clients
/// time out long before, this only keeps every task bounded.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Largest per-request `latency_ms` honoured, so a typo cannot park a task for days.
const MAX_LATENCY_MS: u64 = 60_000;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How the mock misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Answer 200 with this Google error status, an error_message and no results.
    Status(String),
    /// Answer HTTP 500.
    Http500,
    /// Never answer; hold the connection open (up to `HANG_LIMIT`).
    Hang,
    /// Answer 200 with a body that is not JSON.
    NotJson,
}

impl Fault {
    /// Parses a `fault=` value: 500, hang, notjson, none, or a status name.
    pub fn parse(text: &str) -> Fault {
        match text {
            "" | "none" => Fault::None,
            "500" => Fault::Http500,
            "hang" => Fault::Hang,
            "notjson" => Fault::NotJson,
            status => Fault::Status(status.to_owned()),
        }
    }
}

/// How to run the mock.
#[derive(Debug, Clone)]
pub struct MockSettings {
    /// Where to listen; port 0 picks a free one (reported to `ready`).
    pub listen: SocketAddr,
    /// Delay before each nearbysearch answer (unless a request sets `latency_ms`).
    pub latency: Duration,
    /// Certificate chain PEM and private key PEM; `None` serves plain HTTP.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Fault for requests that do not choose their own.
    pub fault: Fault,
}

/// Counters and defaults shared by all connections of one mock.
struct MockState {
    /// Default latency.
    latency: Duration,
    /// Default fault.
    fault: Fault,
    /// nearbysearch requests received.
    requests: Cell<u64>,
    /// TCP connections accepted.
    connections: Cell<u64>,
}

/// A throwaway PKI for a TLS mock: a CA, and a certificate it signed for
/// `localhost` and `127.0.0.1`, all PEM.
pub struct LocalPki {
    /// The CA certificate: what clients must trust.
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

/// Makes a fresh [`LocalPki`].
pub fn local_pki() -> Result<LocalPki, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "herd places-mock CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok(LocalPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Serves until the process ends (or the executor drops the task). `ready` is called
/// once with the bound address, before the first connection is accepted.
pub async fn serve(settings: MockSettings, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let acceptor = match &settings.tls {
        Some((cert_pem, key_pem)) => Some(tls_acceptor(cert_pem, key_pem)?),
        None => None,
    };
    let listener = TcpListener::bind(settings.listen).map_err(io::Error::from)?;
    let addr = listener.local_addr().map_err(io::Error::from)?;
    let state = Rc::new(MockState {
        latency: settings.latency,
        fault: settings.fault,
        requests: Cell::new(0),
        connections: Cell::new(0),
    });
    ready(addr);
    // The serving loop: one turn per accepted connection, for the life of the process
    // (that is this function's job); a failed accept backs off instead of spinning.
    loop {
        match listener.accept().await {
            Ok(stream) => {
                state.connections.set(state.connections.get() + 1);
                glommio::spawn_local(serve_connection(
                    stream,
                    acceptor.clone(),
                    Rc::clone(&state),
                ))
                .detach();
            }
            Err(e) => {
                warn!(error = %e, "places mock accept failed");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Server TLS config from PEM: ring crypto, HTTP/1.1 ALPN.
fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no certificate in the TLS certificate PEM",
        ));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "no private key in the TLS key PEM",
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Runs HTTP/1.1 (keep-alive) on one accepted connection, after TLS if configured.
async fn serve_connection(stream: TcpStream, acceptor: Option<TlsAcceptor>, state: Rc<MockState>) {
    let service = hyper::service::service_fn(move |req| handle(Rc::clone(&state), req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No hyper timer is installed (glommio timers are not Send); without this the
    // default header timeout would only log a warning.
    builder.header_read_timeout(None).keep_alive(true);
    let result = match acceptor {
        None => {
            builder
                .serve_connection(GlommioIo::new(stream), service)
                .await
        }
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => builder.serve_connection(GlommioIo::new(tls), service).await,
            Err(e) => {
                debug!(error = %e, "places mock TLS handshake failed");
                return;
            }
        },
    };
    if let Err(e) = result {
        debug!(error = %e, "places mock connection ended");
    }
}

/// Routes one request. An `Err` makes hyper drop the connection unanswered (hang).
async fn handle(
    state: Rc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, io::Error> {
    let path = req.uri().path().to_owned();
    let params = parse_query(req.uri().query().unwrap_or(""));
    if path == "/stats" {
        let reset = req.method() == Method::POST || param(&params, "reset") == Some("1");
        let body = json!({
            "requests": state.requests.get(),
            "connections": state.connections.get(),
        });
        if reset {
            state.requests.set(0);
            state.connections.set(0);
        }
        return Ok(json_response(StatusCode::OK, &body));
    }
    let Some(prefix) = path.strip_suffix(NEARBY_PATH) else {
        return Ok(text_response(StatusCode::NOT_FOUND, "not found"));
    };
    if req.method() != Method::GET {
        return Ok(text_response(StatusCode::METHOD_NOT_ALLOWED, "GET only"));
    }
    state.requests.set(state.requests.get() + 1);

    let segments = prefix_params(prefix);
    let chosen = |name: &str| param(&params, name).or_else(|| param(&segments, name));
    let fault = chosen("fault").map_or_else(|| state.fault.clone(), Fault::parse);
    let latency = match chosen("latency_ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Duration::from_millis(ms.min(MAX_LATENCY_MS)),
        _ => state.latency,
    };
    if !latency.is_zero() {
        glommio::timer::sleep(latency).await;
    }
    match fault {
        Fault::None => Ok(json_response(StatusCode::OK, &nearby_answer(&params))),
        Fault::Status(status) => {
            let message = format!("places mock fault: {status}");
            Ok(json_response(
                StatusCode::OK,
                &error_answer(&status, &message),
            ))
        }
        Fault::Http500 => Ok(text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "places mock fault: internal error",
        )),
        Fault::NotJson => Ok(Response::builder()
            .header(hyper::header::CONTENT_TYPE, "text/html")
            .body(Full::new(Bytes::from_static(
                b"<html><body>places mock fault: not json</body></html>",
            )))
            .unwrap_or_default()),
        Fault::Hang => {
            glommio::timer::sleep(HANG_LIMIT).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "places mock hang is over",
            ))
        }
    }
}

/// The offline answer for a well-formed query, Google's INVALID_REQUEST otherwise.
fn nearby_answer(params: &[(String, String)]) -> Value {
    match nearby_query(params) {
        Some(query) => OfflinePlaces.answer(query),
        None => error_answer(
            "INVALID_REQUEST",
            "location must be LAT,LNG and radius a number of metres",
        ),
    }
}

/// `location=LAT,LNG` and `radius=R` as a query, if both are present and numeric.
fn nearby_query(params: &[(String, String)]) -> Option<NearbyQuery> {
    let (lat, lon) = param(params, "location")?.split_once(',')?;
    let query = NearbyQuery {
        lat: lat.trim().parse().ok()?,
        lon: lon.trim().parse().ok()?,
        radius_m: param(params, "radius")?.trim().parse().ok()?,
    };
    let in_range = (-90.0..=90.0).contains(&query.lat)
        && (-180.0..=180.0).contains(&query.lon)
        && query.radius_m.is_finite();
    in_range.then_some(query)
}

/// First value of a parameter.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Decoded `name=value` pairs of a query string.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `/name/value` pairs of a path prefix (e.g. `/fault/500/latency_ms/20`).
fn prefix_params(prefix: &str) -> Vec<(String, String)> {
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    segments
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((percent_decode(k), percent_decode(v))),
            _ => None,
        })
        .collect()
}

/// Decodes %XX escapes and '+' as space; malformed escapes are kept literally.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON response, as Google sends it.
fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(
            hyper::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        )
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_default()
}

/// A plain-text response.
fn text_response(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let p = parse_query("location=34.5%2C-118.25&radius=100&key=a+b%2F&flag&bad=%zz");
        assert_eq!(param(&p, "location"), Some("34.5,-118.25"));
        assert_eq!(param(&p, "key"), Some("a b/"));
        assert_eq!(param(&p, "flag"), Some(""));
        assert_eq!(param(&p, "bad"), Some("%zz"));
        let q = nearby_query(&p).unwrap();
        assert_eq!((q.lat, q.lon, q.radius_m), (34.5, -118.25, 100.0));
    }

    #[test]
    fn malformed_queries_are_invalid_requests() {
        for query in [
            "",
            "location=1&radius=2",
            "location=a,b&radius=1",
            "location=1,2",
            "location=91,0&radius=1",
        ] {
            assert_eq!(
                nearby_answer(&parse_query(query))["status"],
                "INVALID_REQUEST",
                "{query}"
            );
        }
        assert_eq!(
            nearby_answer(&parse_query("location=1,2&radius=30"))["status"],
            "OK"
        );
    }

    #[test]
    fn faults_parse_from_query_and_prefix() {
        assert_eq!(Fault::parse("500"), Fault::Http500);
        assert_eq!(Fault::parse("hang"), Fault::Hang);
        assert_eq!(Fault::parse("notjson"), Fault::NotJson);
        assert_eq!(Fault::parse("none"), Fault::None);
        assert_eq!(
            Fault::parse("OVER_QUERY_LIMIT"),
            Fault::Status("OVER_QUERY_LIMIT".to_owned())
        );
        let p = prefix_params("/fault/REQUEST_DENIED/latency_ms/5/odd");
        assert_eq!(param(&p, "fault"), Some("REQUEST_DENIED"));
        assert_eq!(param(&p, "latency_ms"), Some("5"));
        assert!(prefix_params("").is_empty());
    }
}
