//! Phone apps over HTTP (`http_listen`, `https_listen`): OwnTracks in HTTP
//! mode (`POST /owntracks`) and Traccar Client, the OsmAnd protocol
//! (`POST /osmand` with JSON or a form, `GET /osmand?...`), each report
//! stored as the IAMAT it stands for, through the same route to the owner
//! shard, so it is flooded, journaled and bounded as any record.
//!
//! Owns the HTTP side: hyper on glommio, keep-alive, bounds (body, headers,
//! one deadline for a whole request), HTTP Basic and Bearer credentials,
//! and the status codes. What a post means is `pure::phones`; who may
//! write which client is the token check of `client_auth`. Tokens and
//! passwords are never logged.

use std::cell::Cell;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::net::admission::{Admission, Held};
use crate::net::client_auth::{self, Refused};
use crate::net::lines::now;
use crate::net::route::Router;
use crate::ops::metrics::{HttpApp as App, HttpResult};
use crate::pure::clients::ClientAuth;
use crate::pure::phones::{self, OwnTracks, Report};
use crate::pure::record::Record;
use crate::rt::http::GlommioIo;
use crate::shard::Activity;

/// Largest request body taken: an OwnTracks message is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Most header lines taken in one request.
pub const MAX_HEADERS: usize = 64;

/// Most bytes of one request's head (request line and headers); hyper's
/// smallest read buffer.
const MAX_HEAD_BYTES: usize = 8192;

/// A reply, and what it counts as: a value until it is sent.
struct Answer {
    app: App,
    result: HttpResult,
    status: StatusCode,
    body: Bytes,
    /// One more header (`WWW-Authenticate`, `Allow`).
    header: Option<(hyper::header::HeaderName, &'static str)>,
}

impl Answer {
    /// `body` is a literal (taken as it is, no copy: most answers are
    /// `[]`) or a `String` made for this answer.
    fn new(app: App, result: HttpResult, status: StatusCode, body: impl Into<Bytes>) -> Answer {
        Answer {
            app,
            result,
            status,
            body: body.into(),
            header: None,
        }
    }

    /// The HTTP response.
    fn response(self) -> Response<Full<Bytes>> {
        let content_type = if self.body.starts_with(b"[") || self.body.starts_with(b"{") {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if let Some((name, value)) = self.header {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }

    /// 400 with a one-line reason.
    fn invalid(app: App, why: &str) -> Answer {
        Answer::new(
            app,
            HttpResult::Invalid,
            StatusCode::BAD_REQUEST,
            format!("{why}\n"),
        )
    }

    /// 401 asking for credentials of `scheme` (Basic or Bearer).
    fn unauthorized(app: App, scheme: &'static str, why: &str) -> Answer {
        let mut answer = Answer::new(
            app,
            HttpResult::Unauthorized,
            StatusCode::UNAUTHORIZED,
            format!("{why}\n"),
        );
        let challenge = match scheme {
            "Bearer" => "Bearer realm=\"herd\"",
            _ => "Basic realm=\"herd\", charset=\"UTF-8\"",
        };
        answer.header = Some((hyper::header::WWW_AUTHENTICATE, challenge));
        answer
    }
}

/// The deadline of one request: set when its first bytes arrive, cleared
/// when its body has been read. A connection past it is closed.
#[derive(Default)]
struct Deadline {
    since: Cell<Option<Instant>>,
}

impl Deadline {
    /// Ready once the request under way is `timeout` old. Polled in the
    /// connection's own task, after the HTTP side at every wake-up of it:
    /// whatever starts or ends a request has just run, so it needs no
    /// waker of its own.
    ///
    /// `armed` is a timer that wakes the task no later than the deadline,
    /// and when it was set for. Between requests there is none: an idle
    /// phone connection costs no timer at all (a timer ticking every
    /// second for each was 10,000 wake-ups a second for 10,000 phones). A
    /// request that starts while a timer is pending keeps it, since that
    /// timer fires first; then the next is set. glommio's timer looks at
    /// the clock and files itself again whenever polled, so it is polled
    /// only to start it.
    fn watch(
        &self,
        timeout: Duration,
        armed: &mut Option<(Instant, glommio::timer::Timer)>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let Some(since) = self.since.get() else {
            // A pending timer is left to fire once; it finds nothing due.
            return Poll::Pending;
        };
        // No overflow: the config's largest timeout, u64::MAX ms, is
        // 584 million years (a test holds it).
        let due = since + timeout;
        let now = Instant::now();
        if now >= due {
            return Poll::Ready(());
        }
        if armed.as_ref().is_some_and(|(at, _)| *at > now) {
            return Poll::Pending;
        }
        let mut timer = glommio::timer::Timer::new(due - now);
        // Pending (its time is ahead): now filed, it wakes this task.
        if Pin::new(&mut timer).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        *armed = Some((due, timer));
        Poll::Pending
    }
}

/// The connection's bytes, seen by the shard's idle sweep (`Activity`) and
/// by the request deadline.
struct Watched<S> {
    inner: S,
    activity: Rc<Activity>,
    deadline: Rc<Deadline>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &polled {
            Poll::Pending => this.activity.waiting(),
            Poll::Ready(result) => {
                this.activity.read();
                if matches!(result, Ok(n) if *n > 0) && this.deadline.since.get().is_none() {
                    this.deadline.since.set(Some(Instant::now()));
                }
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// Per connection, what every request of it needs.
struct Conn {
    router: Rc<Router>,
    admission: Rc<Admission>,
    ip: Option<IpAddr>,
    peer: String,
    deadline: Rc<Deadline>,
}

/// Serves one phone connection (HTTP, or HTTPS when `https`) until it
/// closes, idles out, breaks a bound or the shard stops.
pub(crate) async fn serve(
    stream: TcpStream,
    https: bool,
    router: Rc<Router>,
    admission: Rc<Admission>,
    held: Held,
) {
    // `held`, an argument, is dropped when this returns: the connection
    // keeps its places until it ends.
    let activity = held.activity().clone();
    let address = stream.peer_addr().ok();
    let peer = address.map(|a| a.to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(admission.write_timeout));
    let deadline = Rc::new(Deadline::default());
    let timeout = admission.http_request_timeout;
    let metrics = router.shard().metrics.clone();
    let conn = Rc::new(Conn {
        router,
        admission: admission.clone(),
        ip: address.map(|a| a.ip()),
        peer: peer.clone(),
        deadline: deadline.clone(),
    });
    let watched = Watched {
        inner: stream,
        activity,
        deadline: deadline.clone(),
    };
    let served = async move {
        if !https {
            return http1(watched, conn).await;
        }
        let Some(tls) = conn.admission.client_tls.clone() else {
            return;
        };
        // The handshake counts as the start of the first request.
        conn.deadline.since.set(Some(Instant::now()));
        // Boxed: only HTTPS connections carry a TLS session.
        Box::pin(async move {
            match tls.accept(watched).await {
                Ok(stream) => {
                    conn.deadline.since.set(None);
                    http1(stream, conn).await;
                }
                Err(e) => {
                    let metrics = &conn.router.shard().metrics;
                    metrics.refused.client_tls_handshake.inc();
                    tracing::debug!(peer = %conn.peer, error = %e, "HTTPS handshake failed; closed");
                }
            }
        })
        .await
    };
    let mut armed = None;
    let watchdog = futures_lite::future::poll_fn(|cx| deadline.watch(timeout, &mut armed, cx));
    let timed_out = futures_lite::future::or(
        async {
            served.await;
            false
        },
        async {
            watchdog.await;
            true
        },
    )
    .await;
    if timed_out {
        metrics.http.count(App::Unknown, HttpResult::TimedOut);
        tracing::debug!(%peer, "HTTP request not whole within limits.http_request_timeout_ms; closed");
    }
}

/// HTTP/1.1 with keep-alive (and pipelining) on one connection.
async fn http1<S: AsyncRead + AsyncWrite + Unpin + 'static>(stream: S, conn: Rc<Conn>) {
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move {
            let answer = answer(&conn, req).await;
            // The body is read: the next request's clock starts with its
            // first byte.
            conn.deadline.since.set(None);
            let metrics = &conn.router.shard().metrics;
            metrics.http.count(answer.app, answer.result);
            Ok::<_, std::convert::Infallible>(answer.response())
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No hyper timer (glommio timers are not Send): the connection's own
    // deadline bounds a request, the shard's idle sweep an idle connection.
    builder
        .header_read_timeout(None)
        .keep_alive(true)
        // Pipelined requests' answers go out in one write, not one each.
        .pipeline_flush(true)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    if let Err(e) = builder
        .serve_connection(GlommioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "phone HTTP connection ended");
    }
}

/// The answer to one request.
async fn answer(conn: &Conn, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let app =
        match parts.uri.path() {
            "/owntracks" => App::OwnTracks,
            "/osmand" => App::OsmAnd,
            _ => return Answer::new(
                App::Unknown,
                HttpResult::NotFound,
                StatusCode::NOT_FOUND,
                "not found: POST /owntracks (OwnTracks), POST or GET /osmand (Traccar Client)\n",
            ),
        };
    let allowed = match app {
        App::OwnTracks => parts.method == Method::POST,
        _ => parts.method == Method::POST || parts.method == Method::GET,
    };
    if !allowed {
        let mut answer = Answer::new(
            app,
            HttpResult::NotFound,
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
        );
        let allow = if app == App::OwnTracks {
            "POST"
        } else {
            "GET, POST"
        };
        answer.header = Some((hyper::header::ALLOW, allow));
        return answer;
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Answer::new(
                app,
                HttpResult::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY_BYTES} bytes\n"),
            )
        }
        Err(e) => return Answer::invalid(app, &format!("the body could not be read: {e}")),
    };
    match app {
        App::OwnTracks => owntracks(conn, &parts.headers, &body).await,
        _ => osmand(conn, &parts.headers, parts.uri.query().unwrap_or(""), &body).await,
    }
}

/// `POST /owntracks`: a location is stored; other messages are taken.
async fn owntracks(conn: &Conn, headers: &HeaderMap, body: &[u8]) -> Answer {
    const APP: App = App::OwnTracks;
    // Named once: a name given as text is parsed again at every lookup.
    static LIMIT_U: HeaderName = HeaderName::from_static("x-limit-u");
    static LIMIT_D: HeaderName = HeaderName::from_static("x-limit-d");
    let text = |name: &HeaderName| -> Result<Option<&str>, Answer> {
        match headers.get(name).map(HeaderValue::to_str) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value.trim())),
            Some(Err(_)) => Err(Answer::invalid(APP, &format!("{name} is not text"))),
        }
    };
    let (limit_u, limit_d) = match (text(&LIMIT_U), text(&LIMIT_D)) {
        (Ok(u), Ok(d)) => (u, d),
        (Err(answer), _) | (_, Err(answer)) => return answer,
    };
    let basic = match basic_credentials(headers) {
        Ok(basic) => basic,
        Err(why) => return Answer::unauthorized(APP, "Basic", why),
    };
    let message = match phones::owntracks(body) {
        Ok(message) => message,
        Err(why) => return Answer::invalid(APP, &why),
    };
    let tid = match &message {
        OwnTracks::Location { tid, .. } => tid.as_deref(),
        OwnTracks::Other(_) => None,
    };
    let tokens = conn.admission.clients.rules.borrow().auth == ClientAuth::Token;
    let basic_user = basic.as_ref().map(|(user, _)| user.as_str());
    let id = if tokens {
        let Some((user, password)) = &basic else {
            return Answer::unauthorized(
                APP,
                "Basic",
                "send the client token as the HTTP Basic password",
            );
        };
        if limit_u.is_some_and(|u| u != user) {
            return Answer::new(
                APP,
                HttpResult::Forbidden,
                StatusCode::FORBIDDEN,
                "X-Limit-U is not the Basic user\n",
            );
        }
        match phones::owntracks_client_id(Some(user), limit_d, None, tid) {
            Ok(id) => {
                if let Err(refused) = check_token(conn, APP, "Basic", &id, password) {
                    return refused;
                }
                Some(id)
            }
            // Nothing to store and no id to prove: taken, as the app expects.
            Err(_) if matches!(message, OwnTracks::Other(_)) => None,
            Err(why) => return Answer::invalid(APP, &why),
        }
    } else {
        match phones::owntracks_client_id(limit_u, limit_d, basic_user, tid) {
            Ok(id) => Some(id),
            Err(_) if matches!(message, OwnTracks::Other(_)) => None,
            Err(why) => return Answer::invalid(APP, &why),
        }
    };
    let OwnTracks::Location { lat, lon, secs, .. } = message else {
        let kind = match &message {
            OwnTracks::Other(kind) => kind.as_str(),
            OwnTracks::Location { .. } => "location",
        };
        tracing::debug!(peer = %conn.peer, client = id.as_deref().unwrap_or("-"), kind, "in: OwnTracks message taken, not stored");
        return Answer::new(APP, HttpResult::Ignored, StatusCode::OK, "[]");
    };
    let Some(client_id) = id else {
        return Answer::invalid(APP, "no client id");
    };
    let report = Report {
        client_id,
        lat,
        lon,
        secs,
        nanos: 0,
    };
    match store(conn, &report).await {
        Ok(()) => Answer::new(APP, HttpResult::Stored, StatusCode::OK, "[]"),
        Err(answer) => answer(APP),
    }
}

/// `POST /osmand` (JSON or a form) and `GET /osmand?...`: stored.
async fn osmand(conn: &Conn, headers: &HeaderMap, query: &str, body: &[u8]) -> Answer {
    const APP: App = App::OsmAnd;
    let json = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let parsed = if json {
        phones::osmand_json(body).map(|report| {
            let token = phones::form_pairs(query)
                .into_iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v);
            (report, token)
        })
    } else {
        let mut pairs = phones::form_pairs(query);
        pairs.extend(phones::form_pairs(&String::from_utf8_lossy(body)));
        phones::osmand_params(&pairs)
    };
    let (report, token) = match parsed {
        Ok(parsed) => parsed,
        Err(why) => return Answer::invalid(APP, &why),
    };
    if conn.admission.clients.rules.borrow().auth == ClientAuth::Token {
        let token = token.or_else(|| bearer(headers));
        let Some(token) = token else {
            return Answer::unauthorized(
                APP,
                "Bearer",
                "send the client token as token= or an Authorization: Bearer header",
            );
        };
        if let Err(refused) = check_token(conn, APP, "Bearer", &report.client_id, &token) {
            return refused;
        }
    }
    match store(conn, &report).await {
        Ok(()) => Answer::new(APP, HttpResult::Stored, StatusCode::OK, ""),
        Err(answer) => answer(APP),
    }
}

/// Checks a token for `client` as `AUTH` does (the same keys, the same
/// failure bound per address and client), or the 401 to answer.
fn check_token(
    conn: &Conn,
    app: App,
    scheme: &'static str,
    client: &str,
    presented: &str,
) -> Result<(), Answer> {
    let metrics = &conn.router.shard().metrics;
    let clients = &conn.admission.clients;
    match client_auth::check_token(
        clients,
        conn.ip,
        client,
        presented,
        now().secs,
        metrics,
        &conn.peer,
    ) {
        Ok(_) => Ok(()),
        Err(Refused::Limited) => Err(Answer::unauthorized(
            app,
            scheme,
            "too many failures from this address for this client; try again in a minute",
        )),
        Err(Refused::Token(_)) => Err(Answer::unauthorized(
            app,
            scheme,
            "the token is not valid for this client",
        )),
    }
}

/// Stores a report as the IAMAT it stands for, through the owner shard;
/// waits for the disk when the journal acknowledges (`fsync: always`).
async fn store(conn: &Conn, report: &Report) -> Result<(), fn(App) -> Answer> {
    let line = report.iamat_line();
    let Some(iamat) = report.iamat(&line) else {
        // The pure side makes only valid IAMATs (property-tested).
        return Err(|app| Answer::invalid(app, "not a valid report"));
    };
    let received = now();
    let admission = &conn.admission;
    if iamat.time.is_ahead_of(received, admission.max_future_skew) {
        let metrics = &conn.router.shard().metrics;
        metrics.refused.future_time.inc();
        return Err(|app| Answer::invalid(app, "the time is too far ahead of the server's clock"));
    }
    let origin = admission.my_id;
    let record = Record::from_iamat(&admission.me, received, &iamat, origin);
    tracing::debug!(peer = %conn.peer, line = %line, "in: phone report");
    if let Some(pending) = conn.router.try_record(record) {
        if let Some(on_disk) = Box::pin(conn.router.record_acked(pending)).await {
            if on_disk.await.is_err() {
                return Err(|app| {
                    Answer::new(
                        app,
                        HttpResult::Unavailable,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not stored: the journal stopped\n",
                    )
                });
            }
        }
    }
    Ok(())
}

/// The user and password of an `Authorization: Basic` header, if any;
/// `Err` when it is there but unusable.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, &'static str> {
    let Some(value) = headers.get(hyper::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let Some(encoded) = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
    else {
        return Ok(None);
    };
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the Basic credentials are not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("the Basic credentials have no ':'")?;
    Ok(Some((user.to_owned(), password.to_owned())))
}

/// The token of an `Authorization: Bearer` header, if any.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let text = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    text.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}
