//! The requests one connection sends: pure and deterministic, no I/O.
//!
//! Each connection owns its own clients (`bench-<c>-<k>`), so only it ever
//! updates them, and numbers its IAMATs with a sequence that sets both the
//! location and the client time. A client's time therefore grows with every
//! IAMAT, every IAMAT is newer than the stored record (stored and flooded),
//! and what a reply must echo can be rebuilt from the sequence number alone
//! instead of being kept per request.

use std::fmt::Write as _;

/// One request that was written, as the reader needs it to check the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `IAMAT` for `client` carrying IAMAT number `seq` of this connection.
    Iamat {
        /// Client index within the connection.
        client: u32,
        /// IAMAT sequence number, which fixes location and client time.
        seq: u64,
    },
    /// `WHATSAT` about `client`, whose newest IAMAT so far was number `seq`.
    Whatsat {
        /// Client index within the connection.
        client: u32,
        /// Sequence number of the record the reply must carry.
        seq: u64,
    },
}

/// Generates the request stream of one connection.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Only the tests' account of the echo needs it; requests use what is
    /// derived from it below.
    #[cfg(test)]
    conn: usize,
    clients: u32,
    base_secs: u64,
    whatsat_pct: u32,
    /// `" <radius> <max-results>\n"`, the fixed tail of every WHATSAT.
    whatsat_tail: Vec<u8>,
    /// `"bench-<conn>-"`, the fixed head of every client id.
    id_prefix: Vec<u8>,
    iamats: u64,
    rng: u64,
    /// `splitmix(conn)`, the connection's share of every location's hash.
    conn_mix: u64,
    /// The whole seconds of the last client time written and their digits:
    /// they change once every 10^9 IAMATs, so they are written once.
    secs: (u64, StackLine),
}

impl Workload {
    /// A workload for connection `conn` owning `clients` clients; client
    /// times start at `base_secs`; `whatsat_pct` percent of requests (once a
    /// client of this connection has a record) are WHATSATs.
    pub fn new(
        conn: usize,
        clients: u32,
        base_secs: u64,
        whatsat_pct: u32,
        radius: String,
        max_results: u32,
    ) -> Workload {
        Workload {
            #[cfg(test)]
            conn,
            clients: clients.max(1),
            base_secs,
            whatsat_pct: whatsat_pct.min(100),
            whatsat_tail: format!(" {radius} {max_results}\n").into_bytes(),
            id_prefix: format!("bench-{conn}-").into_bytes(),
            iamats: 0,
            // Per-connection seed so connections do not move in lockstep.
            rng: splitmix(conn as u64 ^ 0x9e37_79b9_7f4a_7c15),
            conn_mix: splitmix(conn as u64),
            secs: (base_secs, StackLine::digits(base_secs)),
        }
    }

    /// Appends the next request line to `out`, and to `echo` what the AT
    /// line of its reply must carry after the skew (client id, location and
    /// client time of the record, without a newline); says what it was.
    ///
    /// Bytes are written by hand, not with `write!`: this runs for every
    /// request, and the generator must outrun the server.
    pub fn next_request(&mut self, out: &mut Vec<u8>, echo: &mut Vec<u8>) -> Request {
        self.rng = splitmix(self.rng);
        let whatsat = self.iamats > 0 && (self.rng % 100) < u64::from(self.whatsat_pct);
        if whatsat {
            // Only clients that already have an IAMAT from this connection.
            let known = self.iamats.min(u64::from(self.clients));
            let client = (splitmix(self.rng) % known) as u32;
            let seq = last_seq(self.iamats, self.clients, client);
            out.extend_from_slice(b"WHATSAT ");
            let mut id = StackLine::new();
            self.push_id(&mut id, client);
            id.append_to(out, 0);
            out.extend_from_slice(&self.whatsat_tail);
            let mut record = StackLine::new();
            self.push_record(&mut record, client, seq);
            record.append_to(echo, 0);
            Request::Whatsat { client, seq }
        } else {
            let seq = self.iamats;
            self.iamats += 1;
            let client = (seq % u64::from(self.clients)) as u32;
            // The whole line is built on the stack: one copy into the send
            // buffer and one into the echoes, not a dozen small ones.
            let mut line = StackLine::new();
            line.push(IAMAT);
            self.push_record(&mut line, client, seq);
            line.append_to(echo, IAMAT.len());
            line.push(b"\n");
            line.append_to(out, 0);
            Request::Iamat { client, seq }
        }
    }

    /// Client id, location and client time of IAMAT `seq`, one space apart.
    fn push_record(&mut self, out: &mut StackLine, client: u32, seq: u64) {
        self.push_id(out, client);
        out.push(b" ");
        push_location(out, self.conn_mix, seq);
        out.push(b" ");
        let secs = self.base_secs + seq / 1_000_000_000;
        if secs != self.secs.0 {
            self.secs = (secs, StackLine::digits(secs));
        }
        out.push(self.secs.1.bytes());
        out.push(b".");
        out.push_nine(seq % 1_000_000_000);
    }

    fn push_id(&self, out: &mut StackLine, client: u32) {
        out.push(&self.id_prefix);
        out.push_digits(u64::from(client), 1);
    }

    /// Writes the fields a reply to `request` must echo into the three
    /// buffers (cleared first): the tests' independent account of the echo,
    /// written with `write!`.
    #[cfg(test)]
    pub fn expected(
        &self,
        request: Request,
        id: &mut String,
        location: &mut String,
        time: &mut String,
    ) {
        let (Request::Iamat { client, seq } | Request::Whatsat { client, seq }) = request;
        id.clear();
        location.clear();
        time.clear();
        let _ = write!(id, "bench-{}-{}", self.conn, client);
        write_location(location, self.conn, seq);
        let secs = self.base_secs + seq / 1_000_000_000;
        let _ = write!(time, "{secs}.{:09}", seq % 1_000_000_000);
    }
}

/// What an IAMAT line starts with.
const IAMAT: &[u8] = b"IAMAT ";

/// One request line, built in place on the stack. The longest line is
/// `IAMAT `, an id of at most 27 + 10 bytes, a 22-byte location and a
/// 30-byte time with their spaces and newline: well under the capacity.
#[derive(Clone, Debug)]
pub struct StackLine {
    buf: [u8; 160],
    len: usize,
}

impl StackLine {
    fn new() -> StackLine {
        StackLine {
            buf: [0; 160],
            len: 0,
        }
    }

    /// Appends the line from byte `from` on to `out`: one copy. (Copying
    /// the whole fixed-size buffer and cutting back was slower: libc's
    /// memcpy is called for 160 bytes all the same.)
    fn append_to(&self, out: &mut Vec<u8>, from: usize) {
        out.extend_from_slice(&self.buf[from..self.len]);
    }

    /// `value` in decimal.
    fn digits(value: u64) -> StackLine {
        let mut line = StackLine::new();
        line.push_digits(value, 1);
        line
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends `value` (below 10^9) as exactly nine digits: the client
    /// time's fraction, in every request, so without the general loop.
    fn push_nine(&mut self, value: u64) {
        debug_assert!(value < 1_000_000_000);
        let digits = &mut self.buf[self.len..self.len + 9];
        digits[0] = b'0' + (value / 100_000_000) as u8;
        let low = (value % 100_000_000) as usize;
        for (k, two) in [
            low / 1_000_000,
            low / 10_000 % 100,
            low / 100 % 100,
            low % 100,
        ]
        .into_iter()
        .enumerate()
        {
            digits[1 + 2 * k..3 + 2 * k].copy_from_slice(pair(two));
        }
        self.len += 9;
    }

    /// Appends `value` in decimal, zero-padded to at least `width` digits,
    /// written in place from the last digit back, two digits a step.
    fn push_digits(&mut self, value: u64, width: usize) {
        let n = digit_count(value).max(width);
        let digits = &mut self.buf[self.len..self.len + n];
        let mut v = value;
        let mut at = n;
        while at >= 2 {
            digits[at - 2..at].copy_from_slice(pair((v % 100) as usize));
            v /= 100;
            at -= 2;
        }
        if at == 1 {
            digits[0] = b'0' + (v % 10) as u8;
        }
        self.len += n;
    }
}

/// `n` (below 100) as two digits.
fn pair(n: usize) -> &'static [u8] {
    &PAIRS[n * 2..n * 2 + 2]
}

/// "00" to "99", back to back.
const PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// Decimal digits of `value` (1 for 0). `ilog10` is a few instructions;
/// a loop over powers of ten was a visible share of the generator.
fn digit_count(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// The newest IAMAT sequence number of `client` when `iamats` IAMATs have
/// been sent round-robin over `clients` clients (`client < iamats`).
fn last_seq(iamats: u64, clients: u32, client: u32) -> u64 {
    let (clients, client) = (u64::from(clients), u64::from(client));
    client + (iamats - 1 - client) / clients * clients
}

/// Latitude and longitude, in millionths of a degree, that vary with
/// `(conn, seq)` (`conn_mix` is `splitmix(conn)`): latitude in [-90, 90],
/// longitude in [-180, 180].
pub fn micro_degrees(conn_mix: u64, seq: u64) -> [i64; 2] {
    let h = splitmix(conn_mix ^ seq);
    let lat = (h % 180_000_001) as i64 - 90_000_000;
    let lon = ((h >> 32) % 360_000_001) as i64 - 180_000_000;
    [lat, lon]
}

/// Appends a valid ISO 6709 location that varies with `(conn, seq)`:
/// explicit signs, six decimals.
///
/// Written for the shape it has, `[+-]<1 to 3 digits>.<6 digits>` twice,
/// not with the general `push_digits`: this is the largest part of every
/// request, and the general loops were a third of the generator's own work.
fn push_location(out: &mut StackLine, conn_mix: u64, seq: u64) {
    for micro in micro_degrees(conn_mix, seq) {
        push_micro(out, micro);
    }
}

/// Appends millionths of a degree (at most 180 degrees either way) as
/// `[+-]<1 to 3 digits>.<6 digits>`.
fn push_micro(out: &mut StackLine, micro: i64) {
    let abs = micro.unsigned_abs();
    let (int, frac) = ((abs / 1_000_000) as usize, (abs % 1_000_000) as usize);
    debug_assert!(int < 200);
    let at = out.len;
    let b = &mut out.buf[at..at + 12];
    b[0] = if micro < 0 { b'-' } else { b'+' };
    let mut i = 1;
    if int >= 100 {
        b[1] = b'1';
        i = 2;
    }
    let low = int % 100;
    if int >= 10 {
        b[i..i + 2].copy_from_slice(pair(low));
        i += 2;
    } else {
        b[i] = b'0' + low as u8;
        i += 1;
    }
    b[i] = b'.';
    for (k, two) in [frac / 10_000, frac / 100 % 100, frac % 100]
        .into_iter()
        .enumerate()
    {
        let to = i + 1 + 2 * k;
        b[to..to + 2].copy_from_slice(pair(two));
    }
    out.len = at + i + 7;
}

/// `push_location` with `write!`, for the probe and as the tests' oracle.
pub fn write_location(out: &mut String, conn: usize, seq: u64) {
    for micro in micro_degrees(splitmix(conn as u64), seq) {
        let sign = if micro < 0 { '-' } else { '+' };
        let abs = micro.unsigned_abs();
        let _ = write!(out, "{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000);
    }
}

/// SplitMix64: a cheap, well-mixed deterministic step.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_degrees(text: &str) -> f64 {
        text.parse().unwrap()
    }

    #[test]
    fn locations_are_valid_iso_6709() {
        for seq in 0..10_000 {
            let mut loc = String::new();
            write_location(&mut loc, 3, seq);
            let split = 1 + loc[1..].find(['+', '-']).unwrap();
            let (lat, lon) = loc.split_at(split);
            assert!(lat.starts_with(['+', '-']) && lon.starts_with(['+', '-']));
            assert_eq!(lat.split_once('.').unwrap().1.len(), 6, "{loc}");
            assert_eq!(lon.split_once('.').unwrap().1.len(), 6, "{loc}");
            assert!(parse_degrees(lat).abs() <= 90.0, "{loc}");
            assert!(parse_degrees(lon).abs() <= 180.0, "{loc}");
        }
    }

    #[test]
    fn digits_by_hand_match_write() {
        let powers = (0..20).map(|k| 10u64.pow(k));
        let edges = powers.flat_map(|p| [p - 1, p, p + 1]);
        for v in edges.chain([7, 999_999, 1_000_000, 123_456_789, u64::MAX]) {
            for width in [1, 6, 9] {
                let mut out = StackLine::new();
                out.push(b"x");
                out.push_digits(v, width);
                assert_eq!(out.bytes(), format!("x{v:0width$}").as_bytes());
            }
            if v < 1_000_000_000 {
                let mut out = StackLine::new();
                out.push_nine(v);
                assert_eq!(out.bytes(), format!("{v:09}").as_bytes());
            }
        }
        for seq in 0..1000 {
            let (mut bytes, mut text) = (StackLine::new(), String::new());
            push_location(&mut bytes, splitmix(9), seq);
            write_location(&mut text, 9, seq);
            assert_eq!(bytes.bytes(), text.as_bytes());
        }
    }

    #[test]
    fn degrees_by_hand_match_write_at_every_width() {
        let edges = [0, 1, 999_999, 1_000_000, 9_999_999, 10_000_000, 99_999_999];
        let more = [
            100_000_000,
            100_000_001,
            109_000_000,
            179_999_999,
            180_000_000,
        ];
        for abs in edges.into_iter().chain(more) {
            for micro in [abs, -abs] {
                let mut bytes = StackLine::new();
                push_micro(&mut bytes, micro);
                let sign = if micro < 0 { '-' } else { '+' };
                let text = format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000);
                assert_eq!(bytes.bytes(), text.as_bytes());
            }
        }
    }

    #[test]
    fn iamat_echo_matches_the_line_sent() {
        let mut w = Workload::new(5, 3, 1_700_000_000, 0, "10".into(), 5);
        let (mut id, mut loc, mut time) = (String::new(), String::new(), String::new());
        for _ in 0..10 {
            let (mut out, mut echo) = (Vec::new(), Vec::new());
            let req = w.next_request(&mut out, &mut echo);
            w.expected(req, &mut id, &mut loc, &mut time);
            let line = String::from_utf8(out).unwrap();
            assert_eq!(line, format!("IAMAT {id} {loc} {time}\n"));
            assert_eq!(
                String::from_utf8(echo).unwrap(),
                format!("{id} {loc} {time}")
            );
        }
        assert_eq!(id, "bench-5-0");
        assert_eq!(time, "1700000000.000000009");
    }

    #[test]
    fn every_echo_has_the_shape_the_fast_check_relies_on() {
        for (conn, clients, whatsat_pct) in [(0, 1, 0), (7, 1000, 30), (usize::MAX, u32::MAX, 50)] {
            let mut w = Workload::new(conn, clients, 1_700_000_000, whatsat_pct, "10".into(), 5);
            for _ in 0..2000 {
                let mut echo = Vec::new();
                w.next_request(&mut Vec::new(), &mut echo);
                assert!(crate::check::is_echo_shaped(&echo), "{echo:?}");
            }
        }
    }

    #[test]
    fn the_longest_line_fits_on_the_stack() {
        let mut w = Workload::new(usize::MAX, u32::MAX, u64::MAX / 2, 0, "10".into(), 5);
        let (mut out, mut echo) = (Vec::new(), Vec::new());
        w.next_request(&mut out, &mut echo);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with(&format!("IAMAT bench-{}-0 ", usize::MAX)),
            "{line}"
        );
        assert!(
            line.ends_with(&format!(" {}.000000000\n", u64::MAX / 2)),
            "{line}"
        );
        assert_eq!(line.len(), "IAMAT ".len() + echo.len() + 1);
    }

    #[test]
    fn client_times_strictly_increase_per_client() {
        let mut w = Workload::new(0, 7, 1_700_000_000, 30, "10".into(), 5);
        let mut last: Vec<Option<u64>> = vec![None; 7];
        for _ in 0..1000 {
            if let Request::Iamat { client, seq } = w.next_request(&mut Vec::new(), &mut Vec::new())
            {
                let prev = last[client as usize].replace(seq);
                assert!(prev < Some(seq));
            }
        }
    }

    #[test]
    fn whatsat_asks_only_about_the_newest_record_of_a_known_client() {
        let mut w = Workload::new(1, 50, 1_700_000_000, 50, "10".into(), 5);
        let mut newest: Vec<Option<u64>> = vec![None; 50];
        let mut whatsats = 0;
        let (mut id, mut loc, mut time) = (String::new(), String::new(), String::new());
        for _ in 0..5000 {
            let (mut out, mut echo) = (Vec::new(), Vec::new());
            let request = w.next_request(&mut out, &mut echo);
            match request {
                Request::Iamat { client, seq } => newest[client as usize] = Some(seq),
                Request::Whatsat { client, seq } => {
                    whatsats += 1;
                    assert_eq!(newest[client as usize], Some(seq));
                    let line = String::from_utf8(out).unwrap();
                    assert_eq!(line, format!("WHATSAT bench-1-{client} 10 5\n"));
                    w.expected(request, &mut id, &mut loc, &mut time);
                    let echo = String::from_utf8(echo).unwrap();
                    assert_eq!(echo, format!("{id} {loc} {time}"));
                }
            }
        }
        assert!((2000..3000).contains(&whatsats), "{whatsats}");
    }

    #[test]
    fn first_request_is_never_a_whatsat() {
        let mut w = Workload::new(0, 1, 1_700_000_000, 100, "10".into(), 5);
        assert!(matches!(
            w.next_request(&mut Vec::new(), &mut Vec::new()),
            Request::Iamat { .. }
        ));
        assert!(matches!(
            w.next_request(&mut Vec::new(), &mut Vec::new()),
            Request::Whatsat { client: 0, seq: 0 }
        ));
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use crate::check::{check_iamat, Expected};

    /// What making one IAMAT and checking its reply costs the generator, in
    /// user space alone. `cargo test --release --bin herd-bench cost --
    /// --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_the_cost_of_one_request() {
        let mut w = Workload::new(17, 1000, 1_700_000_000, 0, "10".into(), 5);
        let (mut out, mut echo) = (Vec::with_capacity(1 << 20), Vec::with_capacity(1 << 20));
        let mut reply = Vec::with_capacity(256);
        let n = 1_000_000;
        let mut best = f64::MAX;
        for _ in 0..7 {
            let mut ok = 0;
            let start = std::time::Instant::now();
            for _ in 0..n {
                out.clear();
                echo.clear();
                w.next_request(&mut out, &mut echo);
                reply.clear();
                reply.extend_from_slice(b"AT Bare +0.000012345 ");
                reply.extend_from_slice(&out[6..]);
                let expected = Expected {
                    server: Some(b"Bare"),
                    echo: &echo,
                };
                ok += usize::from(check_iamat(std::hint::black_box(&reply), &expected).is_ok());
            }
            best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
            assert_eq!(ok, n);
        }
        println!("{best:.1} ns a request (make, copy a reply, check)");
    }
}
