//! A real local HTTP(S) server speaking Google's Nearby Search, both the New API
//! (`POST /v1/places:searchNearby`) and the legacy one, for tests and demos.
//! It owns its listener, its request/connection counters, the last request it took
//! and its fault injection; answers come from `herd::places::answer::OfflinePlaces`,
//! so they are deterministic. It must never reach the internet, and must not be used
//! as a production Places source.
//!
//! The New endpoint checks a request as Google's reference says Google does: the key
//! in `X-Goog-Api-Key` (403 without it; 400 `API_KEY_INVALID` for another key than
//! `--key`, when one is set), a field mask in `X-Goog-FieldMask` (400 without it), a
//! JSON body with only known fields, a circle of radius in (0, 50000] and
//! `maxResultCount` in [1, 20]; it returns only the fields the mask asks for. One
//! rule is the mock's own: a key in the URL is refused, as herd must never put it
//! there.
//!
//! Faults and latency can be chosen per request, either as query parameters
//! (`fault=500|hang|notjson|empty|nolocation|none|STATUSNAME`, `latency_ms=N`) or as
//! path segments before the endpoint (`/fault/500/maps/api/place/nearbysearch/json`),
//! which lets a client whose base URL has a path prefix pick a fault without touching
//! its query.
//!
//! Not part of the herd library: the `herd-places-mock` binary (`main.rs`
//! here) runs it, and tests that want it in-process include this file by
//! path, so it names the library only as `herd::` and uses only its public
//! items.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, TcpStream};
use http_body_util::Full;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use rustls::ServerConfig;
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use herd::net::http::GlommioIo;
use herd::places::answer::{error_answer, NearbyQuery, OfflinePlaces};
use herd::places::upstream::new_api::SEARCH_NEARBY_PATH;
use herd::places::upstream::NEARBY_PATH;

/// Longest a "hang" lasts before the mock drops the connection unanswered; clients
/// time out long before, this only keeps every task bounded.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Largest per-request `latency_ms` honoured, so a typo cannot park a task for days.
const MAX_LATENCY_MS: u64 = 60_000;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Largest request body read; a nearby search is a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

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
    /// Answer that nothing was found (legacy ZERO_RESULTS, New `{}`).
    Empty,
    /// New API: every other place comes without its location.
    NoLocation,
}

impl Fault {
    /// Parses a `fault=` value: 500, hang, notjson, none, or a status name.
    pub fn parse(text: &str) -> Fault {
        match text {
            "" | "none" => Fault::None,
            "500" => Fault::Http500,
            "hang" => Fault::Hang,
            "notjson" => Fault::NotJson,
            "empty" => Fault::Empty,
            "nolocation" => Fault::NoLocation,
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
    /// The only API key the New endpoint takes; `None` takes any.
    pub key: Option<String>,
}

/// Counters and defaults shared by all connections of one mock.
struct MockState {
    /// Default latency.
    latency: Duration,
    /// Default fault.
    fault: Fault,
    /// Nearby Search requests received, either API.
    requests: Cell<u64>,
    /// Of those, Nearby Search (New) requests.
    new_requests: Cell<u64>,
    /// TCP connections accepted.
    connections: Cell<u64>,
    /// The New API's key, when only one is taken.
    key: Option<String>,
    /// The last Nearby Search request as received: method, path, query, headers, body.
    last: RefCell<Value>,
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
        new_requests: Cell::new(0),
        connections: Cell::new(0),
        key: settings.key,
        last: RefCell::new(Value::Null),
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
            "new_requests": state.new_requests.get(),
            "connections": state.connections.get(),
            "last_request": *state.last.borrow(),
        });
        if reset {
            state.requests.set(0);
            state.new_requests.set(0);
            state.connections.set(0);
        }
        return Ok(json_response(StatusCode::OK, &body));
    }
    if let Some(prefix) = path.strip_suffix(SEARCH_NEARBY_PATH) {
        let prefix = prefix.to_owned();
        return handle_new(state, req, &prefix, &params).await;
    }
    let Some(prefix) = path.strip_suffix(NEARBY_PATH) else {
        return Ok(text_response(StatusCode::NOT_FOUND, "not found"));
    };
    if req.method() != Method::GET {
        return Ok(text_response(StatusCode::METHOD_NOT_ALLOWED, "GET only"));
    }
    state.requests.set(state.requests.get() + 1);
    *state.last.borrow_mut() = seen(&req, "");

    let fault = chosen_fault(&state, prefix, &params).await;
    match fault.clone() {
        Fault::None | Fault::NoLocation => {
            Ok(json_response(StatusCode::OK, &nearby_answer(&params)))
        }
        Fault::Empty => Ok(json_response(
            StatusCode::OK,
            &json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"}),
        )),
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
        Fault::NotJson | Fault::Hang => not_json_or_hang(fault).await,
    }
}

/// The two faults both APIs answer alike: a body that is not JSON, and no
/// answer at all (until `HANG_LIMIT`, then the connection is dropped).
async fn not_json_or_hang(fault: Fault) -> Result<Response<Full<Bytes>>, io::Error> {
    if fault == Fault::NotJson {
        return Ok(Response::builder()
            .header(hyper::header::CONTENT_TYPE, "text/html")
            .body(Full::new(Bytes::from_static(
                b"<html><body>places mock fault: not json</body></html>",
            )))
            .unwrap_or_default());
    }
    glommio::timer::sleep(HANG_LIMIT).await;
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "places mock hang is over",
    ))
}

/// The fault a request chose (query, then path prefix, then the mock's
/// default), after the latency it chose has passed.
async fn chosen_fault(state: &MockState, prefix: &str, params: &[(String, String)]) -> Fault {
    let segments = prefix_params(prefix);
    let chosen = |name: &str| param(params, name).or_else(|| param(&segments, name));
    let fault = chosen("fault").map_or_else(|| state.fault.clone(), Fault::parse);
    let latency = match chosen("latency_ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Duration::from_millis(ms.min(MAX_LATENCY_MS)),
        _ => state.latency,
    };
    if !latency.is_zero() {
        glommio::timer::sleep(latency).await;
    }
    fault
}

/// A request as the mock received it, for `/stats`: tests check what herd sent.
fn seen<B>(req: &Request<B>, body: &str) -> Value {
    let headers: Map<String, Value> = req
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "headers": headers,
        "body": body,
    })
}

/// Nearby Search (New): Google's checks, then the offline places in the New
/// shape with only the fields the mask asks for, or the fault chosen.
async fn handle_new(
    state: Rc<MockState>,
    req: Request<Incoming>,
    prefix: &str,
    params: &[(String, String)],
) -> Result<Response<Full<Bytes>>, io::Error> {
    if req.method() != Method::POST {
        return Ok(google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Method not found.",
            None,
        ));
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Ok(google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Request payload size exceeds the limit.",
                None,
            ))
        }
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let request = Request::from_parts(parts, ());
    state.requests.set(state.requests.get() + 1);
    state.new_requests.set(state.new_requests.get() + 1);
    *state.last.borrow_mut() = seen(&request, &text);
    if let Err(refusal) = check_new(&state, request.headers(), params) {
        return Ok(refusal.response());
    }
    let mask = match field_mask(request.headers()) {
        Ok(mask) => mask,
        Err(refusal) => return Ok(refusal.response()),
    };
    let (query, count) = match search_body(&body) {
        Ok(asked) => asked,
        Err(message) => {
            return Ok(google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &message,
                None,
            ))
        }
    };
    let fault = chosen_fault(&state, prefix, params).await;
    match fault.clone() {
        Fault::None => Ok(json_response(
            StatusCode::OK,
            &new_answer(query, count, &mask, false),
        )),
        Fault::NoLocation => Ok(json_response(
            StatusCode::OK,
            &new_answer(query, count, &mask, true),
        )),
        Fault::Empty => Ok(json_response(StatusCode::OK, &json!({}))),
        Fault::Status(status) => Ok(new_fault(&status)),
        Fault::Http500 => Ok(google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "places mock fault: internal error",
            None,
        )),
        Fault::NotJson | Fault::Hang => not_json_or_hang(fault).await,
    }
}

/// A refusal of the New API, before it is a response.
struct Refusal {
    /// HTTP status.
    code: StatusCode,
    /// Google's status name.
    status: &'static str,
    /// Google's message.
    message: String,
    /// `details[].reason`, when Google gives one.
    reason: Option<&'static str>,
}

impl Refusal {
    fn new(code: StatusCode, status: &'static str, message: &str) -> Refusal {
        Refusal {
            code,
            status,
            message: message.to_owned(),
            reason: None,
        }
    }

    fn response(&self) -> Response<Full<Bytes>> {
        google_error(self.code, self.status, &self.message, self.reason)
    }
}

/// The key and content checks of the New API, in Google's order.
fn check_new(
    state: &MockState,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(), Refusal> {
    if param(params, "key").is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "places mock: the API key was sent in the URL; herd must send it only in X-Goog-Api-Key",
        ));
    }
    let key = headers
        .get("x-goog-api-key")
        .map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned())
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "The request is missing a valid API key.",
        ));
    };
    if state.key.as_ref().is_some_and(|wanted| *wanted != key) {
        return Err(Refusal {
            reason: Some("API_KEY_INVALID"),
            ..Refusal::new(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
            )
        });
    }
    let json = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload: Content-Type must be application/json.",
        ));
    }
    Ok(())
}

/// The fields a mask asks for: `None` for every field (`*`, `places`,
/// `places.*`), else paths below a place (`displayName`, `location.latitude`).
fn field_mask(headers: &HeaderMap) -> Result<Option<Vec<Vec<String>>>, Refusal> {
    let mask = headers
        .get("x-goog-fieldmask")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if mask.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "FieldMask is a required parameter. See https://cloud.google.com/apis/docs/system-parameters \
             on how to provide it. As an example, you can set the header 'X-Goog-FieldMask' to value \
             'places.displayName', 'places.id' to ask for the display name and the place ID of a place. \
             You can also set the value to '*' in field mask to get all the available fields, but this \
             is not recommended in production.",
        ));
    }
    let mut paths = Vec::new();
    for path in mask.split(',').map(str::trim) {
        match path {
            "*" | "places" | "places.*" => return Ok(None),
            _ => match path.strip_prefix("places.") {
                Some(rest) if !rest.is_empty() && rest.split('.').all(valid_name) => {
                    paths.push(rest.split('.').map(str::to_owned).collect());
                }
                _ => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_ARGUMENT",
                        &format!("Error expanding 'fields' parameter. Cannot find matching fields for path '{path}'."),
                    ))
                }
            },
        }
    }
    Ok(Some(paths))
}

/// A field name as Google writes them: lower camel case letters and digits.
fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The query and result count of a `searchNearby` body, or Google's reason
/// for refusing it.
fn search_body(body: &[u8]) -> Result<(NearbyQuery, usize), String> {
    const KNOWN: [&str; 10] = [
        "languageCode",
        "regionCode",
        "includedTypes",
        "excludedTypes",
        "includedPrimaryTypes",
        "excludedPrimaryTypes",
        "maxResultCount",
        "locationRestriction",
        "rankPreference",
        "routingParameters",
    ];
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON payload received. {e}"))?;
    let fields = value
        .as_object()
        .ok_or("Invalid JSON payload received. Expected an object.")?;
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
        ));
    }
    let count = match fields.get("maxResultCount") {
        None => 20,
        Some(n) => match n.as_u64() {
            Some(n @ 1..=20) => n as usize,
            _ => return Err("maxResultCount must be between 1 and 20.".to_owned()),
        },
    };
    let circle = fields
        .get("locationRestriction")
        .and_then(|r| r.get("circle"))
        .ok_or("locationRestriction.circle is required.")?;
    let number = |v: Option<&Value>| v.and_then(Value::as_f64);
    let center = circle.get("center");
    let (Some(lat), Some(lon)) = (
        number(center.and_then(|c| c.get("latitude"))),
        number(center.and_then(|c| c.get("longitude"))),
    ) else {
        return Err(
            "locationRestriction.circle.center must have a latitude and a longitude.".to_owned(),
        );
    };
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(
            "Invalid location: latitude must be in [-90, 90] and longitude in [-180, 180]."
                .to_owned(),
        );
    }
    let radius_m = number(circle.get("radius")).unwrap_or(0.0);
    if !(radius_m > 0.0 && radius_m <= 50_000.0) {
        return Err(
            "locationRestriction.circle.radius must be greater than 0 and at most 50000."
                .to_owned(),
        );
    }
    Ok((NearbyQuery { lat, lon, radius_m }, count))
}

/// The offline places around `query` in the New shape, cut to `count`, with
/// only the masked fields; `drop_locations` takes the location off every
/// other place.
fn new_answer(
    query: NearbyQuery,
    count: usize,
    mask: &Option<Vec<Vec<String>>>,
    drop_locations: bool,
) -> Value {
    let legacy = OfflinePlaces.answer(query);
    let results = legacy["results"].as_array().cloned().unwrap_or_default();
    let places: Vec<Value> = results
        .iter()
        .take(count)
        .enumerate()
        .map(|(i, result)| {
            let mut place = new_place(result, i);
            if drop_locations && i % 2 == 1 {
                if let Some(fields) = place.as_object_mut() {
                    fields.remove("location");
                }
            }
            masked(&place, mask)
        })
        .collect();
    if places.is_empty() {
        json!({})
    } else {
        json!({ "places": places })
    }
}

/// One offline legacy result as a Nearby Search (New) Place, with every
/// field the mock knows (more than herd asks for, so masks are tested).
fn new_place(result: &Value, i: usize) -> Value {
    const PRICES: [&str; 5] = [
        "PRICE_LEVEL_FREE",
        "PRICE_LEVEL_INEXPENSIVE",
        "PRICE_LEVEL_MODERATE",
        "PRICE_LEVEL_EXPENSIVE",
        "PRICE_LEVEL_VERY_EXPENSIVE",
    ];
    let point = |p: &Value| json!({"latitude": p["lat"], "longitude": p["lng"]});
    let geometry = &result["geometry"];
    let id = result["place_id"].as_str().unwrap_or("");
    let vicinity = result["vicinity"].as_str().unwrap_or("");
    json!({
        "name": format!("places/{id}"),
        "id": id,
        "displayName": {"text": result["name"], "languageCode": "en"},
        "location": point(&geometry["location"]),
        "viewport": {
            "low": point(&geometry["viewport"]["southwest"]),
            "high": point(&geometry["viewport"]["northeast"]),
        },
        "types": result["types"],
        "primaryType": result["types"][0],
        "formattedAddress": format!("{vicinity}, Sample City, Sample Land"),
        "shortFormattedAddress": format!("{vicinity}, Sample City"),
        "businessStatus": result["business_status"],
        "iconMaskBaseUri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/generic_pinlet",
        "iconBackgroundColor": "#7B9EB0",
        "plusCode": {
            "globalCode": format!("8553XXXX+{i:02}"),
            "compoundCode": format!("XXXX+{i:02} Sample City"),
        },
        "googleMapsUri": format!("https://maps.google.com/?cid={i}"),
        "rating": result["rating"],
        "userRatingCount": result["user_ratings_total"],
        "priceLevel": PRICES[i % PRICES.len()],
        "currentOpeningHours": {
            "openNow": i % 2 == 0,
            "weekdayDescriptions": ["Monday: 8:00 AM - 6:00 PM"],
        },
    })
}

/// `place` with only the paths of `mask` (all of it for `None`).
fn masked(place: &Value, mask: &Option<Vec<Vec<String>>>) -> Value {
    let Some(paths) = mask else {
        return place.clone();
    };
    let mut out = Value::Object(Map::new());
    for path in paths {
        copy_path(place, &mut out, path);
    }
    out
}

/// Copies the value at `path` in `from`, if there is one, to the same path in `to`.
fn copy_path(from: &Value, to: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        *to = from.clone();
        return;
    };
    let (Some(value), Some(fields)) = (from.get(first), to.as_object_mut()) else {
        return;
    };
    let slot = fields
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    copy_path(value, slot, rest);
}

/// A `--fault` status as the New API would answer it: legacy and Google names.
fn new_fault(status: &str) -> Response<Full<Bytes>> {
    let message = format!("places mock fault: {status}");
    let (code, google, reason) = match status {
        "REQUEST_DENIED" | "PERMISSION_DENIED" => {
            (StatusCode::FORBIDDEN, "PERMISSION_DENIED", None)
        }
        "API_KEY_INVALID" => (
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            Some("API_KEY_INVALID"),
        ),
        "OVER_QUERY_LIMIT" | "RESOURCE_EXHAUSTED" => {
            (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", None)
        }
        "INVALID_REQUEST" | "INVALID_ARGUMENT" => {
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", None)
        }
        "UNAVAILABLE" => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", None),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", None),
    };
    google_error(code, google, &message, reason)
}

/// Google's error answer: `{"error": {"code", "message", "status", "details"}}`.
fn google_error(
    code: StatusCode,
    status: &str,
    message: &str,
    reason: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut error = json!({"code": code.as_u16(), "message": message, "status": status});
    if let Some(reason) = reason {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "places.googleapis.com"},
        }]);
    }
    json_response(code, &json!({ "error": error }))
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

/// Decoded `name=value` pairs of a query string (herd's own reading of
/// forms and queries, the one phone apps' requests go through).
fn parse_query(query: &str) -> Vec<(String, String)> {
    herd::pure::phones::form_pairs(query)
}

/// `/name/value` pairs of a path prefix (e.g. `/fault/500/latency_ms/20`).
fn prefix_params(prefix: &str) -> Vec<(String, String)> {
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    segments
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((
                herd::pure::phones::percent_decode(k),
                herd::pure::phones::percent_decode(v),
            )),
            _ => None,
        })
        .collect()
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
