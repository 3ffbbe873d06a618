//! OwnTracks posts for the load generator (`herd-bench load --post
//! owntracks`): the HTTP/1.1 requests one connection sends, each a
//! location as the OwnTracks app posts it in HTTP mode, and the framing and
//! validation of the responses. Pure and deterministic: no I/O, no clock,
//! and nothing here may panic on what came off the network.
//!
//! Connection `c` posts as user `bench-<c>` (`X-Limit-U`) for its devices
//! `<run>-<k>` (`X-Limit-D`, `<run>` the run's first second), so its client
//! ids are `bench-<c>/<run>-<k>`. A location's time, `tst`, is whole
//! seconds: so that every post is newer than the last of its client
//! (stored and flooded, as every IAMAT of a line run is), `tst` rises by one
//! second a post on each connection, starting `PAST_SECS` before the run
//! (room for that many posts a connection before the server's future-time
//! bound); and a rerun's devices are new clients, as each run has its own
//! `<run>`, so a rerun against the same herd is stored too.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::workload::{micro_degrees, splitmix};

/// Posts' client times start this many seconds before the run (about
/// three years): whole seconds rise by one a post, and must not run past
/// the server's bound on future times (a day by default).
pub const PAST_SECS: u64 = 100_000_000;

/// Most bytes of a response head (status line and headers) taken.
const MAX_HEAD: usize = 8192;

/// Most bytes of a response body taken: herd answers `[]`, or a line.
const MAX_BODY: usize = 64 * 1024;

/// What a location's body holds before its time, as the app writes it
/// (keys in the app's order, with the fields herd reads and some it skips).
const BODY_START: &[u8] =
    br#"{"_type":"location","acc":11,"alt":38,"batt":87,"bs":1,"conn":"w","created_at":"#;

/// The client id of device `k` of connection `conn` in the run that began
/// at `run_secs`: `<user>/<device>`, as herd makes it from the headers.
pub fn client_id(conn: usize, run_secs: u64, k: u32) -> String {
    format!("bench-{conn}/{run_secs}-{k}")
}

/// Generates the posts of one connection.
#[derive(Clone, Debug)]
pub struct Posts {
    /// Everything before the device's number: the request line, `Host`,
    /// `Content-Type`, `X-Limit-U` and `X-Limit-D: <run>-`.
    head: Vec<u8>,
    /// After the device's number, up to the body's length: the line's end,
    /// `Authorization` when there is a password, `Content-Length: `.
    mid: Vec<u8>,
    clients: u32,
    first_secs: u64,
    posts: u64,
    /// `splitmix(conn)`, the connection's share of every location's hash.
    conn_mix: u64,
    /// The body being written, reused from post to post.
    body: Vec<u8>,
}

impl Posts {
    /// The posts of connection `conn` for its `clients` devices, in the run
    /// that began at `run_secs`, to `host` (the `Host` header); with a
    /// `password` (the token of its one client), HTTP Basic authentication
    /// as `bench-<conn>`.
    pub fn new(
        conn: usize,
        clients: u32,
        run_secs: u64,
        host: &str,
        password: Option<&str>,
    ) -> Posts {
        let head = format!(
            "POST /owntracks HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             X-Limit-U: bench-{conn}\r\nX-Limit-D: {run_secs}-"
        );
        let auth = password.map_or(String::new(), |password| {
            let basic = STANDARD.encode(format!("bench-{conn}:{password}"));
            format!("Authorization: Basic {basic}\r\n")
        });
        Posts {
            head: head.into_bytes(),
            mid: format!("\r\n{auth}Content-Length: ").into_bytes(),
            clients: clients.max(1),
            first_secs: run_secs.saturating_sub(PAST_SECS),
            posts: 0,
            conn_mix: splitmix(conn as u64),
            body: Vec::with_capacity(256),
        }
    }

    /// Appends the next post to `out`: a location of the next device in
    /// turn, one second newer than the connection's post before it.
    ///
    /// Written by hand, not with `write!`, as every request of a run is:
    /// the generator must outrun the server.
    pub fn next_post(&mut self, out: &mut Vec<u8>) {
        let seq = self.posts;
        self.posts += 1;
        let device = seq % u64::from(self.clients);
        let tst = self.first_secs + seq;
        let [lat, lon] = micro_degrees(self.conn_mix, seq);
        let body = &mut self.body;
        body.clear();
        body.extend_from_slice(BODY_START);
        push_decimal(body, tst);
        body.extend_from_slice(br#","lat":"#);
        push_degrees(body, lat);
        body.extend_from_slice(br#","lon":"#);
        push_degrees(body, lon);
        body.extend_from_slice(br#","t":"u","tid":"BN","tst":"#);
        push_decimal(body, tst);
        body.extend_from_slice(br#","vac":3,"vel":0}"#);
        out.extend_from_slice(&self.head);
        push_decimal(out, device);
        out.extend_from_slice(&self.mid);
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    }
}

/// Appends `value` in decimal.
fn push_decimal(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = value;
    // At most 20 digits: the loop ends when `v` reaches 0.
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends millionths of a degree as a JSON number with six decimals.
fn push_degrees(out: &mut Vec<u8>, micro: i64) {
    if micro < 0 {
        out.push(b'-');
    }
    let abs = micro.unsigned_abs();
    push_decimal(out, abs / 1_000_000);
    let mut frac = abs % 1_000_000;
    let mut six = *b".000000";
    for digit in six[1..].iter_mut().rev() {
        *digit = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&six);
}

/// Why a whole response is not what herd answers a location: 200 and `[]`
/// on a connection that stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadResponse {
    /// A status other than 200.
    Status(u16),
    /// A body other than `[]`.
    Body,
    /// `Connection: close`: the server ends the keep-alive.
    Closes,
}

impl fmt::Display for BadResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadResponse::Status(code) => write!(f, "status {code}, not 200"),
            BadResponse::Body => f.write_str("body is not []"),
            BadResponse::Closes => f.write_str("Connection: close on a keep-alive connection"),
        }
    }
}

/// What the front of a read buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framed {
    /// Not a whole response yet.
    Partial,
    /// A whole response of `len` bytes, and whether it is right.
    Whole {
        /// Bytes of the response, head and body.
        len: usize,
        /// `Ok` for 200 with the body `[]`.
        verdict: Result<(), BadResponse>,
    },
}

/// Bytes that cannot be framed as an HTTP/1.1 response with a
/// Content-Length: what follows cannot be told apart, so the connection
/// cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unframable(pub &'static str);

impl fmt::Display for Unframable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response cannot be framed: {}", self.0)
    }
}

/// Frames the first response of `buf` by its Content-Length, and checks
/// it; `Partial` while more bytes are needed.
pub fn frame(buf: &[u8]) -> Result<Framed, Unframable> {
    // Told from its first bytes: a server that does not speak HTTP (a line
    // port) may never send the empty line that ends a head.
    let start = buf.len().min(STATUS_START.len());
    if buf[..start] != STATUS_START[..start] {
        return Err(Unframable("not an HTTP/1.1 status line"));
    }
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(head_end) = memchr::memmem::find(window, b"\r\n\r\n") else {
        if buf.len() >= MAX_HEAD {
            return Err(Unframable("no end of the head in 8 KiB"));
        }
        return Ok(Framed::Partial);
    };
    let head = &buf[..head_end];
    let (status_line, headers) = match memchr::memmem::find(head, b"\r\n") {
        Some(at) => (&head[..at], &head[at + 2..]),
        None => (head, &[][..]),
    };
    let status = status_code(status_line).ok_or(Unframable("not an HTTP/1.1 status line"))?;
    let mut length = None;
    let mut closes = false;
    // Bounded by the head's 8 KiB.
    for line in headers.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line).ok_or(Unframable("a header line without ':'"))?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = decimal(value).ok_or(Unframable("Content-Length is not a number"))?;
            if n > MAX_BODY {
                return Err(Unframable("Content-Length over 64 KiB"));
            }
            if length.is_some_and(|l| l != n) {
                return Err(Unframable("two Content-Lengths that differ"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Unframable(
                "Transfer-Encoding (herd answers with a Content-Length)",
            ));
        } else if name.eq_ignore_ascii_case(b"connection") {
            closes |= value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let length = length.ok_or(Unframable("no Content-Length"))?;
    let len = head_end + 4 + length;
    let Some(body) = buf.get(head_end + 4..len) else {
        return Ok(Framed::Partial);
    };
    let verdict = if status != 200 {
        Err(BadResponse::Status(status))
    } else if body != b"[]" {
        Err(BadResponse::Body)
    } else if closes {
        Err(BadResponse::Closes)
    } else {
        Ok(())
    };
    Ok(Framed::Whole { len, verdict })
}

/// What every response starts with.
const STATUS_START: &[u8] = b"HTTP/1.1 ";

/// The code of `HTTP/1.1 <3 digits>[ <reason>]`.
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(STATUS_START)?;
    let (code, after) = rest.split_at_checked(3)?;
    if !(after.is_empty() || after.starts_with(b" ")) {
        return None;
    }
    u16::try_from(decimal(code)?).ok()
}

/// A decimal number of 1 to 9 digits, nothing else.
fn decimal(text: &[u8]) -> Option<usize> {
    if text.is_empty() || text.len() > 9 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0, |n, &d| n * 10 + usize::from(d - b'0')))
}

/// A response, shortened and made printable for an error sample: its
/// status line and its body (which says why, for a 4xx).
pub fn shown(response: &[u8]) -> String {
    let cut = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(160)]).into_owned();
    let status = response.split(|&b| b == b'\r').next().unwrap_or_default();
    let body =
        memchr::memmem::find(response, b"\r\n\r\n").map_or(&[][..], |at| &response[at + 4..]);
    format!("{:?} with body {:?}", cut(status), cut(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd::pure::phones::{owntracks, owntracks_client_id, OwnTracks};

    /// A post split into its request line, headers (lower-case names) and
    /// body; panics unless its Content-Length is its body's length.
    fn split(post: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
        let at = memchr::memmem::find(post, b"\r\n\r\n").expect("a head");
        let head = std::str::from_utf8(&post[..at]).unwrap();
        let mut lines = head.split("\r\n");
        let request = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_ascii_lowercase(), v.to_owned())
            })
            .collect();
        let body = post[at + 4..].to_vec();
        let length: usize = header(&headers, "content-length").parse().unwrap();
        assert_eq!(length, body.len());
        (request, headers, body)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn posts_are_locations_herd_reads_for_each_device_in_turn_each_a_second_newer() {
        let run = 1_800_000_000;
        let mut posts = Posts::new(7, 3, run, "127.0.0.1:8080", None);
        for seq in 0..300u64 {
            let mut out = Vec::new();
            posts.next_post(&mut out);
            let (request, headers, body) = split(&out);
            assert_eq!(request, "POST /owntracks HTTP/1.1");
            assert_eq!(header(&headers, "host"), "127.0.0.1:8080");
            assert_eq!(header(&headers, "content-type"), "application/json");
            assert!(headers.iter().all(|(n, _)| n != "authorization"));
            // What herd makes of it: the server's own parse.
            let id = owntracks_client_id(
                Some(header(&headers, "x-limit-u")),
                Some(header(&headers, "x-limit-d")),
                None,
                None,
            )
            .unwrap();
            assert_eq!(id, client_id(7, run, (seq % 3) as u32));
            let Ok(OwnTracks::Location {
                lat,
                lon,
                secs,
                tid,
            }) = owntracks(&body)
            else {
                panic!("not a location: {}", String::from_utf8_lossy(&body));
            };
            assert_eq!(secs, run - PAST_SECS + seq);
            assert_eq!(tid.as_deref(), Some("BN"));
            let [want_lat, want_lon] = micro_degrees(splitmix(7), seq);
            assert_eq!(format!("{lat:.6}"), format!("{:.6}", want_lat as f64 / 1e6));
            assert_eq!(format!("{lon:.6}"), format!("{:.6}", want_lon as f64 / 1e6));
        }
    }

    #[test]
    fn degrees_and_numbers_are_written_as_json_numbers_at_every_width() {
        for micro in [
            0,
            1,
            -1,
            999_999,
            -1_000_000,
            9_999_999,
            90_000_000,
            -180_000_000,
        ] {
            let mut out = Vec::new();
            push_degrees(&mut out, micro);
            let text = String::from_utf8(out).unwrap();
            let value: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(format!("{value:.6}"), format!("{:.6}", micro as f64 / 1e6));
            assert_eq!(text.split_once('.').unwrap().1.len(), 6, "{text}");
        }
        for v in [0, 9, 10, 99, 100, 1_799_999_999, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    #[test]
    fn with_a_password_each_post_carries_basic_authentication_as_the_user() {
        let mut posts = Posts::new(2, 1, 1_800_000_000, "h:1", Some("tok.en"));
        let mut out = Vec::new();
        posts.next_post(&mut out);
        let (_, headers, _) = split(&out);
        let basic = header(&headers, "authorization")
            .strip_prefix("Basic ")
            .unwrap();
        let decoded = STANDARD.decode(basic).unwrap();
        assert_eq!(decoded, b"bench-2:tok.en");
        assert_eq!(header(&headers, "x-limit-u"), "bench-2");
        assert_eq!(header(&headers, "x-limit-d"), "1800000000-0");
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
                        date: Sun, 06 Dec 2026 20:00:00 GMT\r\n\r\n[]";

    #[test]
    fn a_response_is_framed_only_once_whole_at_every_cut_and_then_one_by_one() {
        let bad = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 22\r\n\r\nlatitude out of range\n";
        let mut stream = OK.to_vec();
        stream.extend_from_slice(bad);
        stream.extend_from_slice(OK);
        for cut in 0..OK.len() {
            assert_eq!(frame(&OK[..cut]), Ok(Framed::Partial), "{cut}");
        }
        let mut at = 0;
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            let Ok(Framed::Whole { len, verdict }) = frame(&stream[at..]) else {
                panic!("not whole at {at}");
            };
            verdicts.push(verdict);
            at += len;
        }
        assert_eq!(at, stream.len());
        assert_eq!(verdicts, [Ok(()), Err(BadResponse::Status(400)), Ok(())]);
        assert!(
            shown(bad).contains("latitude out of range"),
            "{}",
            shown(bad)
        );
    }

    #[test]
    fn another_body_or_a_closing_connection_is_wrong_but_framed() {
        let body = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n[1]";
        assert_eq!(
            frame(body),
            Ok(Framed::Whole {
                len: body.len(),
                verdict: Err(BadResponse::Body)
            })
        );
        let closes =
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(
            frame(closes),
            Ok(Framed::Whole {
                len: closes.len(),
                verdict: Err(BadResponse::Closes)
            })
        );
    }

    #[test]
    fn responses_without_a_content_length_cannot_be_framed() {
        for (bytes, why) in [
            (&b"HTTP/1.1 200 OK\r\n\r\n[]"[..], "no Content-Length"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\n[]",
                "not a number",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n[]",
                "differ",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
                "over 64 KiB",
            ),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "without ':'"),
            (b"AT Goloman +0.1 a +1+2 3\r\n\r\n", "status line"),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n[]",
                "status line",
            ),
            (
                b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n[]",
                "status line",
            ),
        ] {
            let Err(Unframable(said)) = frame(bytes) else {
                panic!("framed: {:?}", String::from_utf8_lossy(bytes));
            };
            assert!(said.contains(why), "{said}");
        }
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        endless.resize(MAX_HEAD, b'a');
        assert_eq!(frame(&endless[..MAX_HEAD - 1]), Ok(Framed::Partial));
        assert_eq!(
            frame(&endless),
            Err(Unframable("no end of the head in 8 KiB"))
        );
    }

    #[test]
    fn bytes_that_are_not_http_are_refused_from_the_first_one() {
        let line = b"? POST /owntracks HTTP/1.1\n";
        for cut in 1..line.len() {
            assert_eq!(
                frame(&line[..cut]),
                Err(Unframable("not an HTTP/1.1 status line")),
                "{cut}"
            );
        }
        assert_eq!(frame(b""), Ok(Framed::Partial));
        assert_eq!(frame(b"HTTP/1."), Ok(Framed::Partial));
    }

    #[test]
    fn a_status_line_without_a_reason_is_read() {
        let bare = b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(
            frame(bare),
            Ok(Framed::Whole {
                len: bare.len(),
                verdict: Ok(())
            })
        );
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// What making one post and framing and checking its response costs
    /// the generator, in user space alone. `cargo test --release --bin
    /// herd-bench posts::cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_the_cost_of_one_post() {
        let mut posts = Posts::new(17, 64, 1_800_000_000, "127.0.0.1:31145", None);
        let mut out = Vec::with_capacity(1 << 20);
        let response =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
                         date: Sun, 06 Dec 2026 20:00:00 GMT\r\n\r\n[]";
        let n = 1_000_000;
        let mut best = f64::MAX;
        for _ in 0..7 {
            let mut ok = 0;
            let start = std::time::Instant::now();
            for _ in 0..n {
                out.clear();
                posts.next_post(&mut out);
                let framed = frame(std::hint::black_box(response));
                ok += usize::from(matches!(
                    framed,
                    Ok(Framed::Whole {
                        verdict: Ok(()),
                        ..
                    })
                ));
            }
            best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
            assert_eq!(ok, n);
        }
        println!("{best:.1} ns a post (make, frame and check a response)");
    }
}
