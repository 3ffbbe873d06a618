//! `herd status`: fetches `GET /status` from every server's admin endpoint
//! once a second and shows the herd as a table ([`crate::admin::status_view`]).
//!
//! Holds the small blocking HTTP/1.1 client it needs (one request per
//! connection, `Connection: close`, every step under one deadline) and the
//! refresh loop. The response parser is pure and tested on its own; a
//! server that is down, slow or answers nonsense becomes a `down` row with
//! a reason, never an error of the command.

use crate::admin::status_view::{render, Fetched, Sample, ServerView, Status};
use crate::pure::config::Config;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one fetch (connect, request, whole answer) may take: short, so
/// one dead or stuck server never holds up the view of the others.
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(500);
/// Time between two samples of the herd.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The largest answer read: a status document is a few kilobytes, and a
/// wrong endpoint streaming forever must not eat memory.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Why an HTTP answer is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The connection closed before the end of the headers.
    #[error("truncated response (no end of headers)")]
    NoEndOfHead,
    /// The first line is not `HTTP/1.x CODE ...`.
    #[error("not an HTTP response")]
    BadStatusLine,
    /// A header line without a colon, or a Content-Length that is no number.
    #[error("bad header")]
    BadHeader,
    /// Fewer body bytes than announced, or an unfinished chunked body.
    #[error("truncated response")]
    Truncated,
    /// A chunk size that is not hexadecimal.
    #[error("bad chunked body")]
    BadChunk,
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase after the code (may be empty).
    pub reason: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked and cut to its Content-Length.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole HTTP/1.x response as read up to the server's close.
/// Never panics: anything short or malformed is an [`HttpError`].
pub fn parse_response(bytes: &[u8]) -> Result<Response, HttpError> {
    let (head, body) = split_head(bytes).ok_or(HttpError::NoEndOfHead)?;
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().ok_or(HttpError::BadStatusLine)?;
    let (version, rest) = status_line
        .split_once(' ')
        .ok_or(HttpError::BadStatusLine)?;
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::BadStatusLine);
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadStatusLine);
    }
    let status = code.parse().map_err(|_| HttpError::BadStatusLine)?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HttpError::BadHeader)?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        reason: reason.trim().to_owned(),
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    response.body = if chunked {
        dechunk(body)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().map_err(|_| HttpError::BadHeader)?;
        body.get(..length).ok_or(HttpError::Truncated)?.to_vec()
    } else {
        // No length: the body ends where the server closed.
        body.to_vec()
    };
    Ok(response)
}

/// The head (without the blank line) and the rest.
fn split_head(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    // Servers end lines with CRLF; a bare LF is taken too, as most clients do.
    let crlf = find(bytes, b"\r\n\r\n").map(|i| (i, 4));
    let lf = find(bytes, b"\n\n").map(|i| (i, 2));
    let (at, skip) = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((&bytes[..at], &bytes[at + skip..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `Transfer-Encoding: chunked` body, joined.
fn dechunk(mut bytes: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let eol = find(bytes, b"\r\n").ok_or(HttpError::Truncated)?;
        let size_text = String::from_utf8_lossy(&bytes[..eol]);
        // Chunk extensions (`;name=value`) are allowed and mean nothing here.
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::BadChunk)?;
        bytes = &bytes[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = bytes.get(..size).ok_or(HttpError::Truncated)?;
        body.extend_from_slice(chunk);
        bytes = bytes
            .get(size..)
            .and_then(|rest| rest.strip_prefix(b"\r\n"))
            .ok_or(HttpError::Truncated)?;
    }
}

/// Why a server's status could not be had; shown in its row, so each reads
/// in a few words.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, writing or reading failed.
    #[error("{}", io_reason(.0))]
    Io(#[from] std::io::Error),
    /// The whole fetch took longer than its budget.
    #[error("timed out")]
    TimedOut,
    /// The answer grew past any sane status document.
    #[error("response too large")]
    TooLarge,
    /// Not a usable HTTP answer.
    #[error("{0}")]
    Http(#[from] HttpError),
    /// An HTTP answer other than 200.
    #[error("HTTP {0}")]
    Status(String),
    /// A 200 whose body is not a status document.
    #[error("bad status JSON: {0}")]
    Json(String),
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".to_owned(),
        ErrorKind::ConnectionReset => "connection reset".to_owned(),
        ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        _ => e.to_string(),
    }
}

/// `GET path` from `addr` over a fresh connection, everything (connect,
/// write, read to the server's close) within `timeout`. Returns the raw
/// response bytes.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    request(addr, "GET", path, timeout)
}

/// `method path` (no body) to `addr`, like [`get`].
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<Vec<u8>, FetchError> {
    let deadline = Instant::now() + timeout;
    // What is left of the budget; `None` once spent (a zero timeout would
    // mean "block forever" to the socket).
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(FetchError::TimedOut)
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(left()?))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
         User-Agent: herd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(response),
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() > MAX_RESPONSE_BYTES {
                    return Err(FetchError::TooLarge);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fetches and parses one server's `/status`.
pub fn fetch_status(addr: SocketAddr, timeout: Duration) -> Result<Status, FetchError> {
    let response = parse_response(&get(addr, "/status", timeout)?)?;
    if response.status != 200 {
        return Err(FetchError::Status(
            format!("{} {}", response.status, response.reason)
                .trim_end()
                .to_owned(),
        ));
    }
    Status::parse(&response.body).map_err(|e| FetchError::Json(e.to_string()))
}

/// Fetches every server of the herd at once (one thread each, so the round
/// takes as long as the slowest fetch, at most `timeout`), in config order.
fn fetch_all(config: &Config, timeout: Duration) -> Vec<(String, Fetched)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .servers
            .iter()
            .map(|server| {
                let name = server.name.clone();
                let addr = config.admin_addr(&server.name);
                let handle = scope.spawn(move || match addr {
                    None => Fetched::NoAdmin,
                    Some(addr) => match fetch_status(addr, timeout) {
                        Ok(status) => Fetched::Up(Box::new(Sample {
                            status,
                            taken: Instant::now(),
                        })),
                        Err(e) => Fetched::Down(e.to_string()),
                    },
                });
                (name, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, handle)| {
                let fetched = handle
                    .join()
                    .unwrap_or_else(|_| Fetched::Down("fetch failed".to_owned()));
                (name, fetched)
            })
            .collect()
    })
}

/// The rates' memory: each server's last good sample.
#[derive(Debug, Default)]
pub struct Sampler {
    last: HashMap<String, Sample>,
}

impl Sampler {
    /// One round: fetches every server and pairs each answer with that
    /// server's previous good sample, which it then replaces. A server that
    /// is down keeps its old sample, so its rates resume (over the longer
    /// gap) when it answers again.
    pub fn round(&mut self, config: &Config, timeout: Duration) -> Vec<ServerView> {
        fetch_all(config, timeout)
            .into_iter()
            .map(|(name, now)| {
                let prev = match &now {
                    Fetched::Up(sample) => self.last.insert(name.clone(), (**sample).clone()),
                    Fetched::NoAdmin | Fetched::Down(_) => None,
                };
                ServerView { name, now, prev }
            })
            .collect()
    }
}

/// Two rounds at least `interval` apart, so the rates are real, and the
/// table of the second.
pub fn once(config: &Config, interval: Duration, timeout: Duration) -> String {
    let mut sampler = Sampler::default();
    sampler.round(config, timeout);
    // Counted from the end of the first round: each sample is taken when
    // its answer arrives, so a slow first answer counted from the start
    // would leave its next sample less than `interval` later.
    std::thread::sleep(interval);
    render(&sampler.round(config, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::config::AdminListen;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use crate::admin::status_view::EXAMPLE_STATUS as EXAMPLE;

    fn ok_response(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn a_response_splits_into_status_headers_and_body() {
        let r = parse_response(ok_response("{\"a\":1}").as_bytes()).expect("parses");
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("CONTENT-LENGTH"), Some("7"));
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn the_body_is_cut_to_its_length_or_runs_to_the_close() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcd").expect("ok");
        assert_eq!(r.body, b"ab");
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it").expect("ok");
        assert_eq!(r.body, b"all of it");
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").expect("ok");
        assert_eq!((r.status, r.body.len()), (204, 0));
        let r = parse_response(b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx").expect("bare LF");
        assert_eq!(r.body, b"x");
    }

    #[test]
    fn a_chunked_body_is_joined() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(r.body, b"{\"a\":1}");
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a";
        assert_eq!(parse_response(cut), Err(HttpError::Truncated));
        let no_end = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n";
        assert_eq!(parse_response(no_end), Err(HttpError::Truncated));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n";
        assert_eq!(parse_response(bad), Err(HttpError::BadChunk));
    }

    #[test]
    fn short_or_malformed_responses_are_errors() {
        let cases: [(&[u8], HttpError); 9] = [
            (b"", HttpError::NoEndOfHead),
            (b"HTTP/1.1 200 OK\r\nContent-Le", HttpError::NoEndOfHead),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                HttpError::Truncated,
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/2 200 OK\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 2000 OK\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 abc OK\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", HttpError::BadHeader),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                HttpError::BadHeader,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse_response(bytes),
                Err(want),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        // Not UTF-8 in the head: still an answer, not a panic.
        let r = parse_response(b"HTTP/1.1 200 \xff\r\n\r\n").expect("lossy head");
        assert_eq!(r.status, 200);
    }

    #[test]
    fn every_prefix_of_a_response_parses_or_fails_without_panicking() {
        let whole = ok_response(EXAMPLE);
        for end in 0..whole.len() {
            let result = parse_response(&whole.as_bytes()[..end]);
            assert!(result.is_err(), "a prefix of {end} bytes is never whole");
        }
        assert!(parse_response(whole.as_bytes()).is_ok());
    }

    /// A stand-in admin endpoint: answers each connection with what `answer`
    /// makes of the request, then closes. Returns its address and how many
    /// requests it took.
    fn stub(answer: impl Fn(&str, u64) -> String + Send + 'static) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&served);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while find(&request, b"\r\n\r\n").is_none() {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let n = count.fetch_add(1, Ordering::SeqCst);
                let reply = answer(&String::from_utf8_lossy(&request), n);
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (addr, served)
    }

    /// A port nothing listens on (bound, then let go).
    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }

    #[test]
    fn fetching_from_a_stub_sends_a_plain_get_and_reads_the_document() {
        let (addr, _) = stub(|request, _| {
            // The request as the endpoint sees it.
            assert!(request.starts_with("GET /status HTTP/1.1\r\n"), "{request}");
            assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
            assert!(request.contains("\r\nHost: 127.0.0.1:"), "{request}");
            ok_response(EXAMPLE)
        });
        let status = fetch_status(addr, FETCH_TIMEOUT).expect("fetched");
        assert_eq!(status.server.as_deref(), Some("Goloman"));
        assert_eq!(status.records, Some(1234));
        assert_eq!(status.links.len(), 1);
    }

    #[test]
    fn fetch_failures_read_as_short_reasons() {
        let refused = fetch_status(closed_port(), FETCH_TIMEOUT).expect_err("refused");
        assert_eq!(refused.to_string(), "connection refused");
        let (not_found, _) =
            stub(|_, _| "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned());
        let e = fetch_status(not_found, FETCH_TIMEOUT).expect_err("404");
        assert_eq!(e.to_string(), "HTTP 404 Not Found");
        let (html, _) = stub(|_, _| ok_response("<html>"));
        let e = fetch_status(html, FETCH_TIMEOUT).expect_err("not JSON");
        assert!(e.to_string().starts_with("bad status JSON"), "{e}");
        let (cut, _) =
            stub(|_, _| "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"records\":".to_owned());
        let e = fetch_status(cut, FETCH_TIMEOUT).expect_err("truncated");
        assert_eq!(e.to_string(), "truncated response");
    }

    #[test]
    fn a_server_that_never_answers_costs_only_the_timeout() {
        // Accepts (the kernel's backlog does) but never reads or writes.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let started = Instant::now();
        let e = fetch_status(addr, Duration::from_millis(200)).expect_err("silent");
        assert_eq!(e.to_string(), "timed out");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn once_samples_twice_and_renders_every_kind_of_server() {
        // Goloman's stub counts 10 more IAMATs per request.
        let (goloman, served) = stub(|_, n| {
            let mut doc: serde_json::Value = serde_json::from_str(EXAMPLE).expect("example");
            doc["commands"]["IAMAT"]["ok"] = serde_json::json!(5 + 10 * n);
            doc["uptime_seconds"] = serde_json::json!(12.5 + n as f64);
            ok_response(&doc.to_string())
        });
        let mut config = Config::default_herd();
        config.servers.truncate(3);
        config.servers[0].admin_listen = AdminListen::At(goloman.to_string());
        config.servers[1].admin_listen = AdminListen::At(closed_port().to_string());
        config.servers[2].admin_listen = AdminListen::Off;
        let table = once(&config, Duration::from_millis(250), FETCH_TIMEOUT);
        assert_eq!(served.load(Ordering::SeqCst), 2, "two samples");
        assert!(!table.contains('\x1b'), "no escape codes: {table}");
        let row = |name: &str| -> Vec<&str> {
            table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{name} in\n{table}"))
                .split_whitespace()
                .collect()
        };
        let goloman_row = row("Goloman");
        assert_eq!(goloman_row[..4], ["Goloman", "up", "no", "1234"], "{table}");
        // 10 IAMATs in a bit more than 0.25 s.
        let iamat_rate: f64 = goloman_row[4].parse().expect("a rate");
        assert!((20.0..=40.0).contains(&iamat_rate), "{table}");
        assert_eq!(goloman_row[5..], ["0.0", "100µs"], "{table}");
        assert!(
            table.contains("  not ready: link to Hands is down\n"),
            "{table}"
        );
        assert!(
            table.contains("  link Hands  up  lag 0 records  0s\n"),
            "{table}"
        );
        assert_eq!(row("Hands"), ["Hands", "down", "connection", "refused"]);
        assert_eq!(row("Holiday"), ["Holiday", "-", "no", "admin", "endpoint"]);
    }
}
