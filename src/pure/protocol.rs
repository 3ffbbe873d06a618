//! The wire protocol as values: parses one framed line into a [`Parsed`]
//! command and writes replies (`AT`, `?`, skew) into buffers.
//!
//! Pure: no I/O and no clock. The caller passes the receive time in. Field
//! texts are borrowed from the line so that echoes are exact.

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID: usize = 255;
/// Longest server name, in bytes.
pub const MAX_SERVER_NAME: usize = 64;
/// Largest WHATSAT radius, in kilometres.
pub const MAX_RADIUS_KM: f64 = 50.0;
/// Largest WHATSAT max-results.
pub const MAX_RESULTS: usize = 20;

/// Field separators: ASCII white space, vertical tab included.
pub fn is_field_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x0b | 0x0c | b'\r' | b'\n')
}

/// A POSIX time as whole seconds and nanoseconds, ordered as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PosixTime {
    /// Seconds since the epoch.
    pub secs: u64,
    /// Nanoseconds, below one second.
    pub nanos: u32,
}

impl PosixTime {
    /// Parses `digits[.digits]`; fraction digits past the ninth are ignored.
    /// Seconds beyond `u64` are no time.
    ///
    /// Eight bytes at a time: every IAMAT and every flooded AT line has
    /// one, and reading it a byte at a time (a check, a multiply and an
    /// overflow test per digit) was 3.4 % of a shard's core at 64 x 16.
    pub fn parse(text: &str) -> Option<PosixTime> {
        let bytes = text.as_bytes();
        let mut secs = 0u64;
        let mut at = 0;
        loop {
            let word = word_at(bytes, at);
            let k = leading_digits(word);
            secs = secs
                .checked_mul(POW10[k])?
                .checked_add(digits_value(word, k))?;
            at += k;
            if k < 8 {
                break;
            }
        }
        if at == 0 {
            return None;
        }
        let nanos = match bytes.get(at) {
            None => 0,
            Some(b'.') => {
                let frac = at + 1;
                let first = word_at(bytes, frac);
                let (mut word, mut end) = (first, frac);
                loop {
                    let k = leading_digits(word);
                    end += k;
                    if k < 8 {
                        break;
                    }
                    word = word_at(bytes, end);
                }
                if end == frac || end != bytes.len() {
                    return None;
                }
                // The first eight digits, scaled to eight places, then the
                // ninth; digits past it are ignored.
                let eight = (end - frac).min(8);
                let ninth = bytes.get(frac + 8).filter(|_| end > frac + 8);
                let scaled = digits_value(first, eight) * POW10[8 - eight];
                // Below 10^9: eight digits then one.
                (scaled * 10 + ninth.map_or(0, |&b| u64::from(b - b'0'))) as u32
            }
            Some(_) => return None,
        };
        Some(PosixTime { secs, nanos })
    }

    /// This time minus `d`, or the epoch itself if that would be before it.
    pub fn saturating_sub(self, d: std::time::Duration) -> PosixTime {
        let total = self.total_nanos() - i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
        if total <= 0 {
            return PosixTime::default();
        }
        PosixTime {
            // Below self, so within u64 seconds; the remainder is below 1e9.
            secs: u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX),
            nanos: (total % 1_000_000_000) as u32,
        }
    }

    /// Whether this time is more than `bound` after `now`: a client clock
    /// that far ahead would make every later real update look older.
    pub fn is_ahead_of(self, now: PosixTime, bound: std::time::Duration) -> bool {
        let bound = i128::try_from(bound.as_nanos()).unwrap_or(i128::MAX);
        self.total_nanos() > now.total_nanos().saturating_add(bound)
    }

    /// Whole nanoseconds since the epoch, wide enough for any u64 seconds.
    fn total_nanos(self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }
}

/// A location in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// Latitude, in [-90, 90].
    pub lat: f64,
    /// Longitude, in [-180, 180].
    pub lon: f64,
}

/// Parses ISO 6709 `+DD.DDDD-DDD.DDDD` (explicit signs, latitude first).
pub fn parse_location(text: &str) -> Option<Location> {
    let (lat, lon) = split_location(text)?;
    Some(Location {
        lat: lat.parse().ok()?,
        lon: lon.parse().ok()?,
    })
}

/// Whether `text` is a valid location, without converting it to numbers
/// (an IAMAT only needs the check; WHATSAT converts the stored text).
pub fn valid_location(text: &str) -> bool {
    split_location(text).is_some()
}

/// Splits a valid location into its latitude and longitude texts.
fn split_location(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    if !matches!(bytes.first(), Some(b'+' | b'-')) {
        return None;
    }
    // The longitude starts at the second sign.
    let split = 1 + bytes[1..].iter().position(|&b| b == b'+' || b == b'-')?;
    let (lat, lon) = text.split_at(split);
    (valid_degrees(lat, 90) && valid_degrees(lon, 180)).then_some((lat, lon))
}

/// Checks `[+-]digits[.digits]` with |value| <= `limit`, compared exactly:
/// one to three whole digits, and a dot only with digits after it.
fn valid_degrees(text: &str, limit: u32) -> bool {
    plain_degrees(text.as_bytes(), limit) == Some(text.len())
}

/// Powers of ten up to the eighth, by exponent.
const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// A byte repeated in each of a word's eight bytes.
const fn each_byte(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The eight bytes of `bytes` from `at` as one little-endian word (its
/// first byte lowest); bytes past the end read as 0, which is no digit.
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let rest = bytes.get(at..).unwrap_or_default();
    if let Some(eight) = rest.first_chunk::<8>() {
        return u64::from_le_bytes(*eight);
    }
    // Fewer than eight left: the text's last eight bytes, shifted down so
    // that the rest comes first. (Copying the rest into a zeroed word and
    // loading that stalled on the small stores: 15 % of this function.)
    match bytes.last_chunk::<8>() {
        Some(last) if !rest.is_empty() => u64::from_le_bytes(*last) >> (8 * (8 - rest.len())),
        _ => rest
            .iter()
            .rev()
            .fold(0, |word, &b| word << 8 | u64::from(b)),
    }
}

/// How many of a word's bytes, from its first, are ASCII digits (0 to 8).
fn leading_digits(word: u64) -> usize {
    // A digit becomes 0..=9; any other byte becomes 10 or more, and then
    // has its top bit set either already or once 118 is added. An addition
    // only carries out of a byte that was no digit, so no carry reaches
    // the bytes before the first non-digit.
    let x = word ^ each_byte(b'0');
    let high = (x | x.wrapping_add(each_byte(118))) & each_byte(0x80);
    (high.trailing_zeros() / 8) as usize
}

/// The number the first `k` bytes of a word spell (digits, `k` <= 8).
fn digits_value(word: u64, k: usize) -> u64 {
    if k == 0 {
        return 0;
    }
    // The k digits as values 0..=9, moved to the word's last bytes with
    // zeros before them, then summed in pairs, fours and eights (the first
    // byte is the most significant digit); no lane overflows its width.
    let x = (word ^ each_byte(b'0')) << (8 * (8 - k));
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
    (x.wrapping_mul(10_000) + (x >> 32)) & 0xFFFF_FFFF
}

/// Splits `digits[.digits]` into its whole and fraction digits (no
/// fraction: empty), in one pass; `None` for anything else, a dot with no
/// digit after it included. The whole part may be empty: callers bound it.
fn decimal_parts(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let digits = |b: &[u8]| b.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, rest) = bytes.split_at(digits(bytes));
    match rest {
        [] => Some((int, rest)),
        [b'.', frac @ ..] if !frac.is_empty() && digits(frac) == frac.len() => Some((int, frac)),
        _ => None,
    }
}

/// An `IAMAT` command; texts are exactly as the client sent them.
#[derive(Debug, Clone, PartialEq)]
pub struct IAmAt<'a> {
    /// Client id.
    pub client_id: &'a str,
    /// ISO 6709 location text.
    pub location: &'a str,
    /// Client time text.
    pub client_time: &'a str,
    /// Client time as integers.
    pub time: PosixTime,
}

/// A `WHATSAT` command.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatsAt<'a> {
    /// Client id whose record is asked about.
    pub client_id: &'a str,
    /// Search radius in kilometres, in (0, 50].
    pub radius_km: f64,
    /// Results to keep, 0 to 20.
    pub max_results: usize,
}

/// An `AUTH` command: the connection proves it speaks for one client.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth<'a> {
    /// The client id the connection speaks for.
    pub client_id: &'a str,
    /// Its token (see `token.rs`); never logged.
    pub token: &'a str,
}

/// An `AT` line: a record as a neighbour floods it.
#[derive(Debug, Clone, PartialEq)]
pub struct At<'a> {
    /// Name of the server that received the IAMAT.
    pub server: &'a str,
    /// Skew text, as that server wrote it.
    pub skew: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// ISO 6709 location text.
    pub location: &'a str,
    /// Client time text.
    pub client_time: &'a str,
    /// Client time as integers.
    pub time: PosixTime,
}

/// The `PEER` line that opens a link between servers.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer<'a> {
    /// The connecting server's name.
    pub name: &'a str,
    /// Its fresh nonce for this link's handshake (its form is checked by
    /// the link session).
    pub nonce: &'a str,
}

/// A well-formed command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    /// `IAMAT`.
    IAmAt(IAmAt<'a>),
    /// `WHATSAT`.
    WhatsAt(WhatsAt<'a>),
    /// `AUTH` (valid only with `clients.auth: "token"`).
    Auth(Auth<'a>),
    /// `AT` (valid only on a link).
    At(At<'a>),
    /// `PEER` (valid only as the first line on the peer port).
    Peer(Peer<'a>),
    /// `PROOF <proof>`: the dialler's answer to the receiver's `CHALLENGE`
    /// (valid only as the second line on the peer port).
    Proof(&'a str),
    /// `STREAM <shard> <epoch> [<head>]`: on a link, right after `PROOF`,
    /// names the sending shard's record stream so the receiver can say what
    /// it has; `head` is the stream's last sequence number when the link
    /// opened, so the receiver knows when catch-up is done.
    Stream {
        /// The sending shard.
        shard: u32,
        /// The sending shard's epoch (new on every start).
        epoch: u64,
        /// The last sequence number at the opening; `None` from senders
        /// that do not say.
        head: Option<u64>,
    },
    /// `SEQ <n>`: on a link, every record of the stream numbered up to `n`
    /// has been sent.
    Seq(u64),
}

/// What one line is.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<'a> {
    /// Nothing but white space: no reply.
    Empty,
    /// A well-formed command.
    Command(Command<'a>),
    /// Anything else: answered with `? <line>`.
    Invalid,
}

/// The client id of an IAMAT or AT line, read without checking the rest of
/// the line. A connection uses it to load the records of a whole read into
/// cache before it parses and applies the lines one by one; it is only a
/// hint: [`parse_line`] decides what a line is, and a wrong guess costs one
/// wasted load. Bytes, not text: the hint is hashed as bytes, and checking
/// it as UTF-8 cost as much as its hash (1.4 % of a shard's core at 64 x 16).
pub fn peek_client_id(line: &[u8]) -> Option<&[u8]> {
    // The common line first, without the general field splitter.
    if let Some(rest @ [first, ..]) = line.strip_prefix(IAMAT_SPACE) {
        if !is_field_space(*first) {
            let end = rest
                .iter()
                .position(|&b| is_field_space(b))
                .unwrap_or(rest.len());
            return Some(&rest[..end]);
        }
    }
    let mut fields = line.split(|&b| is_field_space(b)).filter(|f| !f.is_empty());
    match fields.next()? {
        b"IAMAT" => fields.next(),
        b"AT" => fields.nth(2),
        _ => None,
    }
}

/// Parses one framed line (without its line ending).
pub fn parse_line(line: &[u8]) -> Parsed<'_> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Parsed::Invalid;
    };
    match plain_iamat(text) {
        Some(iamat) => Parsed::Command(Command::IAmAt(iamat)),
        None => parse_fields(text),
    }
}

/// Parses one line of text, any command, field by field.
fn parse_fields(text: &str) -> Parsed<'_> {
    let mut fields = fields(text);
    let Some(word) = fields.next() else {
        return Parsed::Empty;
    };
    let mut args: [&str; 5] = [""; 5];
    let mut count = 0;
    for field in fields {
        if count == args.len() {
            return Parsed::Invalid;
        }
        args[count] = field;
        count += 1;
    }
    let command = match (word, count) {
        ("IAMAT", 3) => parse_iamat(args[0], args[1], args[2]).map(Command::IAmAt),
        ("WHATSAT", 3) => parse_whatsat(args[0], args[1], args[2]).map(Command::WhatsAt),
        ("AUTH", 2) if valid_client_id(args[0]) => Some(Command::Auth(Auth {
            client_id: args[0],
            token: args[1],
        })),
        ("AT", 5) => parse_at(&args).map(Command::At),
        ("PEER", 2) => parse_peer(args[0], args[1]).map(Command::Peer),
        ("STREAM", 2 | 3) => {
            let head = match count {
                3 => Some(parse_count(args[2])),
                _ => None,
            };
            match (parse_count(args[0]), parse_count(args[1]), head) {
                (_, _, Some(None)) => None,
                (Some(shard), Some(epoch), head) => {
                    u32::try_from(shard).ok().map(|shard| Command::Stream {
                        shard,
                        epoch,
                        head: head.flatten(),
                    })
                }
                _ => None,
            }
        }
        ("SEQ", 1) => parse_count(args[0]).map(Command::Seq),
        ("PROOF", 1) if args[0].len() <= 128 => Some(Command::Proof(args[0])),
        _ => None,
    };
    command.map_or(Parsed::Invalid, Parsed::Command)
}

/// How the common IAMAT line starts (see [`plain_iamat`]).
const IAMAT_SPACE: &[u8] = b"IAMAT ";

/// The line nearly every client sends, `IAMAT <id> <location> <time>` with
/// one space between fields and nothing after, read and checked in one
/// pass over its bytes; `None` for anything else, which the general reading
/// decides (so this only has to agree with it where it answers, which a
/// property test holds). Splitting into fields first and then checking each
/// field walked every byte three or four times, the largest share of a
/// shard's own work on a pipelined connection.
fn plain_iamat(text: &str) -> Option<IAmAt<'_>> {
    const ID: usize = IAMAT_SPACE.len();
    let bytes = text.as_bytes();
    let rest = bytes.strip_prefix(IAMAT_SPACE)?;
    let id_len = rest.iter().position(|&b| is_field_space(b))?;
    if id_len == 0 || id_len > MAX_CLIENT_ID || rest[id_len] != b' ' {
        return None;
    }
    let location = ID + id_len + 1;
    let lat = plain_degrees(&bytes[location..], 90)?;
    if !matches!(bytes.get(location + lat), Some(b'+' | b'-')) {
        return None;
    }
    let lon = plain_degrees(&bytes[location + lat..], 180)?;
    let time_at = location + lat + lon + 1;
    if bytes.get(time_at - 1) != Some(&b' ') {
        return None;
    }
    let client_time = text.get(time_at..)?;
    Some(IAmAt {
        client_id: text.get(ID..ID + id_len)?,
        location: text.get(location..time_at - 1)?,
        client_time,
        time: PosixTime::parse(client_time)?,
    })
}

/// `[+-]`, one to three whole digits and an optional dot with digits, at
/// most `limit` in magnitude, at the start of `bytes`: how many bytes it
/// takes, read in one pass.
fn plain_degrees(bytes: &[u8], limit: u32) -> Option<usize> {
    let [b'+' | b'-', ..] = bytes else {
        return None;
    };
    let mut at = 1;
    let mut whole = 0u32;
    while let Some(&b @ b'0'..=b'9') = bytes.get(at) {
        if at > 3 {
            return None;
        }
        whole = whole * 10 + u32::from(b - b'0');
        at += 1;
    }
    if at == 1 {
        return None;
    }
    let mut zero_fraction = true;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let digits = at;
        while let Some(&b @ b'0'..=b'9') = bytes.get(at) {
            zero_fraction &= b == b'0';
            at += 1;
        }
        if at == digits {
            return None;
        }
    }
    (whole < limit || (whole == limit && zero_fraction)).then_some(at)
}

/// The fields of a line: runs of anything but ASCII white space.
///
/// Split on bytes, not chars: a separator is ASCII, and an ASCII byte is
/// never part of a longer UTF-8 sequence, so every cut is a char boundary
/// of the already checked text. (Splitting with a char predicate decoded
/// every char of every line.)
fn fields(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() && is_field_space(bytes[at]) {
            at += 1;
        }
        if at == bytes.len() {
            return None;
        }
        let start = at;
        while at < bytes.len() && !is_field_space(bytes[at]) {
            at += 1;
        }
        text.get(start..at)
    })
}

/// Plain decimal digits as a u64.
fn parse_count(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses the `SINCE <n>` line a neighbour answers a link's `STREAM` with.
pub fn parse_since(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let mut fields = text.split_ascii_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some("SINCE"), Some(n), None) => parse_count(n),
        _ => None,
    }
}

fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID
}

/// A server name: 1 to 64 printable ASCII bytes.
pub fn valid_server_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_SERVER_NAME && name.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_iamat<'a>(
    client_id: &'a str,
    location: &'a str,
    client_time: &'a str,
) -> Option<IAmAt<'a>> {
    if !valid_client_id(client_id) {
        return None;
    }
    if !valid_location(location) {
        return None;
    }
    let time = PosixTime::parse(client_time)?;
    Some(IAmAt {
        client_id,
        location,
        client_time,
        time,
    })
}

fn parse_whatsat<'a>(client_id: &'a str, radius: &str, max: &str) -> Option<WhatsAt<'a>> {
    if !valid_client_id(client_id) {
        return None;
    }
    let radius_km = parse_decimal(radius)?;
    if !(radius_km > 0.0 && radius_km <= MAX_RADIUS_KM) {
        return None;
    }
    if max.is_empty() || max.len() > 3 || !max.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let max_results: usize = max.parse().ok()?;
    if max_results > MAX_RESULTS {
        return None;
    }
    Some(WhatsAt {
        client_id,
        radius_km,
        max_results,
    })
}

/// A plain decimal: digits with at most one dot, at least one digit, no sign.
fn parse_decimal(text: &str) -> Option<f64> {
    let mut digits = 0;
    let mut dots = 0;
    for b in text.bytes() {
        match b {
            b'0'..=b'9' => digits += 1,
            b'.' => dots += 1,
            _ => return None,
        }
    }
    if digits == 0 || dots > 1 || text.len() > 32 {
        return None;
    }
    text.parse().ok()
}

/// A skew: explicit sign, digits, a dot and exactly nine digits.
/// At most 40 whole digits. In one pass over the bytes, as a time is.
fn valid_skew(skew: &str) -> bool {
    let [b'+' | b'-', rest @ ..] = skew.as_bytes() else {
        return false;
    };
    // A dot is required: nine fraction digits cannot be none.
    decimal_parts(rest).is_some_and(|(int, frac)| (1..=40).contains(&int.len()) && frac.len() == 9)
}

fn parse_at<'a>(args: &[&'a str; 5]) -> Option<At<'a>> {
    let [server, skew, client_id, location, client_time] = *args;
    if !valid_server_name(server) || !valid_skew(skew) {
        return None;
    }
    let iamat = parse_iamat(client_id, location, client_time)?;
    Some(At {
        server,
        skew,
        client_id,
        location,
        client_time,
        time: iamat.time,
    })
}

fn parse_peer<'a>(name: &'a str, nonce: &'a str) -> Option<Peer<'a>> {
    if !valid_server_name(name) || nonce.len() > 128 {
        return None;
    }
    Some(Peer { name, nonce })
}

/// Appends `skew = now - client`, signed, with exactly nine fraction digits.
///
/// Subtracted as seconds and nanoseconds with a borrow, in `u64`: the
/// difference as one 128-bit count of nanoseconds needed 128-bit divisions
/// (calls into the runtime) for every digit of every IAMAT's reply.
pub fn write_skew(out: &mut String, now: PosixTime, client: PosixTime) {
    let (sign, secs, nanos) = skew(now, client);
    out.push(sign);
    push_digits(out, secs, 1);
    out.push('.');
    push_digits(out, u64::from(nanos), 9);
}

/// `now` minus a client time: its sign, whole seconds and nanoseconds.
fn skew(now: PosixTime, client: PosixTime) -> (char, u64, u32) {
    let (sign, later, earlier) = if now >= client {
        ('+', now, client)
    } else {
        ('-', client, now)
    };
    // `later >= earlier`, so the seconds cannot underflow, even borrowing.
    if later.nanos >= earlier.nanos {
        (sign, later.secs - earlier.secs, later.nanos - earlier.nanos)
    } else {
        (
            sign,
            later.secs - earlier.secs - 1,
            later.nanos + 1_000_000_000 - earlier.nanos,
        )
    }
}

/// "00" to "99", for writing decimals two digits at a time.
const PAIRS: &str = "\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Appends `n` in decimal, zero-padded to at least `width` digits; by hand,
/// as this runs for every IAMAT and the formatting machinery costs more.
/// Two digits a step from a table of pairs: half the divisions of one
/// digit a step, and no UTF-8 check of a buffer of digits (which cost as
/// much as making them: 12 against 6.6 ns a call in a micro-benchmark of
/// the skew's two calls).
pub(crate) fn push_digits(out: &mut String, mut n: u64, width: usize) {
    // The pairs from the last one, written out from the first.
    let mut pairs = [0u8; 10];
    let mut k = 0;
    while n >= 100 {
        pairs[k] = (n % 100) as u8;
        n /= 100;
        k += 1;
    }
    // What is left, below 100, leads with two digits, one, or none (n = 0).
    let lead = match n {
        10.. => 2,
        1.. => 1,
        0 => 0,
    };
    let digits = lead + 2 * k;
    out.reserve(digits.max(width));
    for _ in digits..width {
        out.push('0');
    }
    let pair = |p: u64| {
        let at = 2 * p as usize;
        &PAIRS[at..at + 2]
    };
    match lead {
        2 => out.push_str(pair(n)),
        1 => out.push_str(&pair(n)[1..]),
        _ => {}
    }
    for &p in pairs[..k].iter().rev() {
        out.push_str(pair(u64::from(p)));
    }
}

/// The length of the AT line [`write_at`] writes, so that a record can
/// allocate its line once at its size and keep it without a copy.
pub fn at_len(server: &str, now: PosixTime, iamat: &IAmAt<'_>) -> usize {
    let (_, secs, _) = skew(now, iamat.time);
    let secs_digits = secs.checked_ilog10().map_or(1, |d| d as usize + 1);
    // "AT", then five fields with a space before each; the skew is a sign,
    // its seconds, a dot and nine digits.
    let skew = 1 + secs_digits + 1 + 9;
    let fields = server.len() + skew + iamat.client_id.len() + iamat.location.len();
    2 + 5 + fields + iamat.client_time.len()
}

/// Appends the AT line (no line ending) for an IAMAT received at `now` by `server`.
pub fn write_at(out: &mut String, server: &str, now: PosixTime, iamat: &IAmAt<'_>) {
    out.push_str("AT ");
    out.push_str(server);
    out.push(' ');
    write_skew(out, now, iamat.time);
    out.push(' ');
    out.push_str(iamat.client_id);
    out.push(' ');
    out.push_str(iamat.location);
    out.push(' ');
    out.push_str(iamat.client_time);
}

/// The fields of a received AT line after its command word, in order: the
/// one list that both its length and its canonical form are made from.
fn at_fields<'a>(at: &At<'a>) -> [&'a str; 5] {
    [
        at.server,
        at.skew,
        at.client_id,
        at.location,
        at.client_time,
    ]
}

/// The length of the line [`write_at_line`] writes.
pub fn at_line_len(at: &At<'_>) -> usize {
    // "AT", then each field with a space before it.
    "AT".len() + at_fields(at).iter().map(|f| 1 + f.len()).sum::<usize>()
}

/// Appends the canonical form (single spaces) of a received AT line.
pub fn write_at_line(out: &mut String, at: &At<'_>) {
    out.push_str("AT");
    for field in at_fields(at) {
        out.push(' ');
        out.push_str(field);
    }
}

/// Appends the reply to an invalid line: `? `, the line as received, `\n`.
pub fn write_invalid(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(b"? ");
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// Appends the answer to a good `AUTH`: `AUTH <client> <expiry>` and `\n`.
pub fn write_auth(out: &mut Vec<u8>, client_id: &str, expiry: u64) {
    out.extend_from_slice(b"AUTH ");
    out.extend_from_slice(client_id.as_bytes());
    out.push(b' ');
    out.extend_from_slice(expiry.to_string().as_bytes());
    out.push(b'\n');
}

/// Appends the refusal of an `AUTH` for `client`: `? AUTH <client>` and
/// `\n`; the token is never sent back.
pub fn write_auth_refusal(out: &mut Vec<u8>, client: &str) {
    out.extend_from_slice(b"? AUTH ");
    out.extend_from_slice(client.as_bytes());
    out.push(b'\n');
}

/// Whether a line's first field is `AUTH`: a line that may hold a token.
pub fn is_auth_line(line: &[u8]) -> bool {
    line.split(|b| is_field_space(*b))
        .find(|w| !w.is_empty())
        .is_some_and(|w| w == b"AUTH")
}

/// Appends the refusal of an `AUTH` line: `? AUTH <client>` and `\n`,
/// without the token, which must not travel back or reach a log.
pub fn write_auth_refused(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(b"? ");
    let mut words = line
        .split(|b| is_field_space(*b))
        .filter(|w| !w.is_empty())
        .take(2);
    if let Some(word) = words.next() {
        out.extend_from_slice(word);
    }
    if let Some(client) = words.next() {
        out.push(b' ');
        out.extend_from_slice(client);
    }
    out.push(b'\n');
}

/// Appends a link's opening: the `PEER` line, then `STREAM`, each with `\n`.
/// Appends the `PEER` line that opens a link (without its newline).
pub fn write_peer(out: &mut String, name: &str, nonce: &str) {
    out.push_str("PEER ");
    out.push_str(name);
    out.push(' ');
    out.push_str(nonce);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(secs: u64, nanos: u32) -> PosixTime {
        PosixTime { secs, nanos }
    }

    fn command(line: &str) -> Command<'_> {
        match parse_line(line.as_bytes()) {
            Parsed::Command(c) => c,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn invalid(line: &[u8]) -> bool {
        parse_line(line) == Parsed::Invalid
    }

    #[test]
    fn a_time_is_ahead_only_past_the_bound() {
        let day = std::time::Duration::from_secs(86_400);
        let now = t(1_700_000_000, 500);
        assert!(
            !t(1_700_086_400, 500).is_ahead_of(now, day),
            "exactly a day"
        );
        assert!(t(1_700_086_400, 501).is_ahead_of(now, day));
        assert!(!t(0, 0).is_ahead_of(now, day), "the past is never ahead");
        assert!(!t(u64::MAX, 999_999_999).is_ahead_of(now, std::time::Duration::MAX));
        assert!(t(9_999_999_999, 0).is_ahead_of(now, day), "year 2286");
    }

    #[test]
    fn iamat_fields_are_borrowed_exactly_as_sent() {
        let line = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        let Command::IAmAt(i) = command(line) else {
            panic!("not IAMAT")
        };
        assert_eq!(i.client_id, "kiwi.cs.ucla.edu");
        assert_eq!(i.location, "+34.068930-118.445127");
        assert_eq!(i.client_time, "1621464827.959498503");
        assert_eq!(i.time, t(1621464827, 959498503));
    }

    #[test]
    fn fields_may_be_separated_by_any_ascii_white_space_run() {
        let line = " \tIAMAT\x0b a \x0c +1-2\r\r 3 \t";
        let Command::IAmAt(i) = command(line) else {
            panic!("not IAMAT")
        };
        assert_eq!((i.client_id, i.location, i.client_time), ("a", "+1-2", "3"));
    }

    #[test]
    fn auth_names_one_client_and_its_token() {
        assert_eq!(
            parse_line(b"AUTH alice.phone herd1.1796500000.0a1b2c3d.tag"),
            Parsed::Command(Command::Auth(Auth {
                client_id: "alice.phone",
                token: "herd1.1796500000.0a1b2c3d.tag"
            }))
        );
        let long = format!("AUTH {} t", "x".repeat(256));
        for line in [
            "AUTH",
            "AUTH alice",
            "AUTH alice t extra",
            "auth alice t",
            long.as_str(),
        ] {
            assert!(invalid(line.as_bytes()), "{line}");
        }
    }

    #[test]
    fn auth_is_answered_with_its_expiry_and_refused_without_its_token() {
        assert!(!is_auth_line(b"AUTHX a b") && !is_auth_line(b"IAMAT AUTH b c"));
        let mut out = Vec::new();
        write_auth(&mut out, "alice.phone", 1796500000);
        assert_eq!(out, b"AUTH alice.phone 1796500000\n");
        for (line, refusal) in [
            (
                &b"AUTH alice.phone herd1.secret"[..],
                &b"? AUTH alice.phone\n"[..],
            ),
            (
                b"  AUTH\talice.phone   herd1.secret  ",
                b"? AUTH alice.phone\n",
            ),
            (b"AUTH", b"? AUTH\n"),
            (b"AUTH a b c", b"? AUTH a\n"),
        ] {
            assert!(is_auth_line(line));
            let mut out = Vec::new();
            write_auth_refused(&mut out, line);
            assert_eq!(out, refusal, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn blank_lines_are_empty_not_invalid() {
        assert_eq!(parse_line(b""), Parsed::Empty);
        assert_eq!(parse_line(b" \t\x0b\x0c\r "), Parsed::Empty);
    }

    #[test]
    fn non_ascii_white_space_does_not_separate_fields() {
        // U+00A0 is white space to Unicode but not to the protocol.
        assert!(invalid("IAMAT\u{a0}a +1-2 3".as_bytes()));
    }

    #[test]
    fn wrong_field_counts_and_unknown_words_are_invalid() {
        for line in [
            "IAMAT a +1-2",
            "IAMAT a +1-2 3 4",
            "iamat a +1-2 3",
            "WHATSAT a 1",
            "WHATSAT a 1 2 3",
            "HELLO",
            "AT S +0.000000000 a +1-2",
            "PEER a",
            "PEER a b c",
        ] {
            assert!(invalid(line.as_bytes()), "{line}");
        }
    }

    #[test]
    fn invalid_utf8_is_invalid_not_a_panic() {
        assert!(invalid(b"IAMAT \xff\xfe +1-2 3"));
        assert!(invalid(b"\xc3"));
    }

    #[test]
    fn client_id_is_one_to_255_bytes() {
        let ok = format!("IAMAT {} +1-2 3", "x".repeat(255));
        let long = format!("IAMAT {} +1-2 3", "x".repeat(256));
        assert!(matches!(parse_line(ok.as_bytes()), Parsed::Command(_)));
        assert!(invalid(long.as_bytes()));
    }

    #[test]
    fn locations_need_explicit_signs_and_ranges() {
        for good in [
            "+34.068930-118.445127",
            "-90+180",
            "+90.000-180.0",
            "+0.5+0",
            "-0-0",
        ] {
            assert!(parse_location(good).is_some(), "{good}");
        }
        for bad in [
            "34.0-118.0",
            "+34.0118.0",
            "+90.0001+0",
            "+0+180.1",
            "+91+0",
            "+1.-2",
            "+.5-2",
            "+1e1-2",
            "++1-2",
            "+1-2-3",
            "+1-",
            "+",
            "",
            "+1000-2",
            "+0090+000",
        ] {
            assert!(parse_location(bad).is_none(), "{bad}");
        }
        let loc = parse_location("+34.068930-118.445127").unwrap();
        assert_eq!((loc.lat, loc.lon), (34.068930, -118.445127));
    }

    #[test]
    fn client_times_are_digits_with_optional_fraction() {
        assert_eq!(PosixTime::parse("1700000000"), Some(t(1700000000, 0)));
        assert_eq!(
            PosixTime::parse("1700000000.1234567"),
            Some(t(1700000000, 123456700))
        );
        assert_eq!(
            PosixTime::parse("1.1234567899999"),
            Some(t(1, 123456789)),
            "digits past the ninth are ignored"
        );
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "1e9",
            "1.2.3",
            "1,5",
            "99999999999999999999999",
        ] {
            assert_eq!(PosixTime::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn client_times_compare_as_integers_not_floats() {
        // As f64 these two are the same number.
        let a = PosixTime::parse("1621464827.959498503").unwrap();
        let b = PosixTime::parse("1621464827.959498504").unwrap();
        assert!(a < b);
        assert_eq!(
            PosixTime::parse("5.10").unwrap(),
            PosixTime::parse("5.1").unwrap()
        );
        assert!(PosixTime::parse("10").unwrap() > PosixTime::parse("9.999999999").unwrap());
    }

    #[test]
    fn subtracting_a_duration_borrows_from_seconds_and_stops_at_the_epoch() {
        use std::time::Duration;
        assert_eq!(
            t(10, 100).saturating_sub(Duration::from_nanos(200)),
            t(9, 999_999_900)
        );
        assert_eq!(t(10, 0).saturating_sub(Duration::from_secs(3)), t(7, 0));
        assert_eq!(t(1, 0).saturating_sub(Duration::from_secs(5)), t(0, 0));
    }

    #[test]
    fn whatsat_radius_and_max_results_are_bounded() {
        let Command::WhatsAt(w) = command("WHATSAT kiwi 10 5") else {
            panic!("not WHATSAT")
        };
        assert_eq!((w.client_id, w.radius_km, w.max_results), ("kiwi", 10.0, 5));
        for good in ["WHATSAT a 50 20", "WHATSAT a 0.001 0", "WHATSAT a 49.5 007"] {
            assert!(
                matches!(parse_line(good.as_bytes()), Parsed::Command(_)),
                "{good}"
            );
        }
        for bad in [
            "WHATSAT a 0 5",
            "WHATSAT a 50.01 5",
            "WHATSAT a -1 5",
            "WHATSAT a +1 5",
            "WHATSAT a 1e1 5",
            "WHATSAT a . 5",
            "WHATSAT a 1..2 5",
            "WHATSAT a 10 21",
            "WHATSAT a 10 -1",
            "WHATSAT a 10 1.0",
            "WHATSAT a nan 5",
            "WHATSAT a inf 5",
        ] {
            assert!(invalid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn at_lines_are_checked_field_by_field() {
        let line = "AT Goloman +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";
        let Command::At(at) = command(line) else {
            panic!("not AT")
        };
        assert_eq!(at.server, "Goloman");
        assert_eq!(at.skew, "+0.263873386");
        assert_eq!(at.time, t(1621464827, 959498503));
        let mut canon = String::new();
        write_at_line(&mut canon, &at);
        assert_eq!(canon, line);
        for bad in [
            "AT Goloman 0.263873386 kiwi +34-118 1",
            "AT Goloman +0.26387338 kiwi +34-118 1",
            "AT Goloman +0.2638733860 kiwi +34-118 1",
            "AT Goloman +.263873386 kiwi +34-118 1",
            "AT Goloman +0.263873386 kiwi 34-118 1",
            "AT Goloman +0.263873386 kiwi +34-118 x",
        ] {
            assert!(invalid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn peer_lines_name_a_server_and_a_nonce() {
        assert_eq!(
            command("PEER Hands 00ff"),
            Command::Peer(Peer {
                name: "Hands",
                nonce: "00ff"
            })
        );
        assert!(invalid(format!("PEER {} -", "n".repeat(65)).as_bytes()));
        assert_eq!(command("PROOF -"), Command::Proof("-"));
        assert!(invalid(b"PROOF"));
        assert!(invalid(b"PROOF a b"));
        assert!(invalid(format!("PROOF {}", "a".repeat(129)).as_bytes()));
    }

    #[test]
    fn link_control_lines_parse() {
        assert_eq!(
            command("STREAM 3 18446744073709551615"),
            Command::Stream {
                shard: 3,
                epoch: u64::MAX,
                head: None
            }
        );
        assert_eq!(
            command("STREAM 3 7 1200"),
            Command::Stream {
                shard: 3,
                epoch: 7,
                head: Some(1200)
            }
        );
        assert_eq!(command("SEQ 42"), Command::Seq(42));
        for bad in [
            "STREAM 1",
            "STREAM 1 2 x",
            "STREAM 1 2 3 4",
            "STREAM -1 2",
            "STREAM 4294967296 1",
            "SEQ",
            "SEQ x",
            "SEQ 1 2",
            "SEQ +1",
        ] {
            assert!(invalid(bad.as_bytes()), "{bad}");
        }
        assert_eq!(parse_since(b"SINCE 17"), Some(17));
        assert_eq!(parse_since(b"SINCE 17\r"), Some(17));
        assert_eq!(parse_since(b"? PEER A -"), None);
        assert_eq!(parse_since(b"SINCE"), None);
        let mut opening = String::new();
        write_peer(&mut opening, "A", "00ff");
        assert_eq!(opening, "PEER A 00ff");
    }

    #[test]
    fn skew_has_a_sign_and_exactly_nine_fraction_digits() {
        let mut s = String::new();
        write_skew(&mut s, t(1621464828, 223372889), t(1621464827, 959498503));
        assert_eq!(s, "+0.263874386");
        s.clear();
        write_skew(&mut s, t(10, 0), t(12, 0));
        assert_eq!(s, "-2.000000000");
        s.clear();
        write_skew(&mut s, t(5, 5), t(5, 5));
        assert_eq!(s, "+0.000000000");
        s.clear();
        write_skew(&mut s, t(0, 0), t(u64::MAX, 999_999_999));
        assert_eq!(s, format!("-{}.999999999", u64::MAX));
    }

    #[test]
    fn at_line_echoes_client_fields_exactly() {
        let Command::IAmAt(i) = command("IAMAT kiwi +34.068930-118.445127 1700000000.1234567")
        else {
            panic!("not IAMAT")
        };
        let mut s = String::new();
        write_at(&mut s, "Goloman", t(1700000001, 123456700), &i);
        assert_eq!(
            s,
            "AT Goloman +1.000000000 kiwi +34.068930-118.445127 1700000000.1234567"
        );
    }

    #[test]
    fn only_iamat_and_at_lines_have_a_client_id_to_peek() {
        let kiwi = Some(&b"kiwi"[..]);
        assert_eq!(peek_client_id(b"IAMAT kiwi +1+2 3"), kiwi);
        assert_eq!(peek_client_id(b"AT Hill +0.5 kiwi +1+2 3"), kiwi);
        // Only a hint: the rest of the line is not checked, nor is the id
        // checked as text.
        assert_eq!(peek_client_id(b"IAMAT kiwi"), kiwi);
        assert_eq!(peek_client_id(b"IAMAT \xff +1+2 3"), Some(&b"\xff"[..]));
        assert_eq!(peek_client_id(b"WHATSAT kiwi 10 5"), None);
        assert_eq!(peek_client_id(b"IAMATkiwi +1+2 3"), None);
        assert_eq!(peek_client_id(b"AT Hill +0.5"), None);
        assert_eq!(peek_client_id(b""), None);
    }

    #[test]
    fn invalid_reply_copies_the_line() {
        let mut out = Vec::new();
        write_invalid(&mut out, b"HELLO  there\xff");
        assert_eq!(out, b"? HELLO  there\xff\n");
    }

    fn arb_time() -> impl Strategy<Value = (String, PosixTime)> {
        (any::<u64>(), proptest::option::of("[0-9]{1,15}")).prop_map(|(secs, frac)| {
            let text = match &frac {
                Some(f) => format!("{secs}.{f}"),
                None => secs.to_string(),
            };
            let nanos = frac.map_or(0, |f| {
                let nine: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
                nine.parse().unwrap()
            });
            (text, PosixTime { secs, nanos })
        })
    }

    fn arb_location() -> impl Strategy<Value = String> {
        (-90i32..=90, 0u32..1_000_000, -180i32..=180, 0u32..1_000_000).prop_map(
            |(la, lf, lo, of)| {
                let lf = if la.abs() == 90 { 0 } else { lf };
                let of = if lo.abs() == 180 { 0 } else { of };
                format!(
                    "{}{}.{lf:06}{}{}.{of:06}",
                    if la < 0 { '-' } else { '+' },
                    la.abs(),
                    if lo < 0 { '-' } else { '+' },
                    lo.abs()
                )
            },
        )
    }

    /// The obvious readings the one-pass ones must agree with: split on the
    /// dot, check each side's digits, parse each side; split on chars.
    fn reference_time(text: &str) -> Option<PosixTime> {
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs = int.parse::<u64>().ok()?;
        let nanos = match frac {
            None => 0,
            Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => return None,
            Some(f) => format!("{:0<9}", &f[..f.len().min(9)]).parse().ok()?,
        };
        Some(PosixTime { secs, nanos })
    }

    fn reference_degrees(text: &str, limit: u32) -> bool {
        let unsigned = &text[1..];
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty()
            || int.len() > 3
            || !digits(int)
            || !digits(frac)
            || unsigned.ends_with('.')
        {
            return false;
        }
        let whole: u32 = int.parse().unwrap();
        whole < limit || (whole == limit && frac.bytes().all(|b| b == b'0'))
    }

    fn reference_skew(skew: &str) -> bool {
        let Some(rest) = skew.strip_prefix(['+', '-']) else {
            return false;
        };
        let Some((int, frac)) = rest.split_once('.') else {
            return false;
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        !int.is_empty() && int.len() <= 40 && digits(int) && frac.len() == 9 && digits(frac)
    }

    fn reference_fields(text: &str) -> Vec<&str> {
        text.split(|c: char| c.is_ascii() && is_field_space(c as u8))
            .filter(|f| !f.is_empty())
            .collect()
    }

    proptest! {
        // Cheap cases, and the edges (four whole digits, a lone dot) are
        // a small share of the texts: more cases than the default.
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn one_pass_readings_agree_with_the_obvious_ones(
            text in "[+-]?0?[0-9]{0,3}(\\.[0-9]{0,8})?[.a]?|[+-][0-9]{0,2}\\.[0-9]{8,10}|[+-][0-9]{39,41}\\.[0-9]{9}|[0-9]{18,22}(\\.[0-9]{0,3})?|[0-9. +\\-a\u{e9}\u{a0}\t\x0b]{0,24}|[0-9]{1,20}(\\.[0-9]{1,20})?[0-9/:.\u{e9}]?[0-9]{0,10}",
        ) {
            prop_assert_eq!(PosixTime::parse(&text), reference_time(&text), "{:?}", text);
            if text.starts_with(['+', '-']) {
                for limit in [90, 180] {
                    prop_assert_eq!(valid_degrees(&text, limit), reference_degrees(&text, limit), "{:?}", text);
                }
            }
            prop_assert_eq!(fields(&text).collect::<Vec<_>>(), reference_fields(&text), "{:?}", text);
            prop_assert_eq!(valid_skew(&text), reference_skew(&text), "{:?}", text);
        }

        #[test]
        fn a_word_of_bytes_reads_as_its_bytes_one_by_one(
            // Mostly digits, so that every count of leading digits comes up.
            bytes in proptest::array::uniform8(prop_oneof![6 => b'0'..=b'9', 1 => any::<u8>()]),
        ) {
            let word = u64::from_le_bytes(bytes);
            let k = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            prop_assert_eq!(leading_digits(word), k, "{:?}", bytes);
            let value = bytes[..k].iter().fold(0, |n, &b| n * 10 + u64::from(b - b'0'));
            prop_assert_eq!(digits_value(word, k), value, "{:?}", bytes);
            // From every place of a short and of a long text: the bytes
            // there, then zeros past the end.
            let long = [&bytes[..], &bytes[3..]].concat();
            for text in [&bytes[..5], &long[..]] {
                for at in 0..=text.len() + 1 {
                    let mut padded = [0u8; 8];
                    let rest = text.get(at..).unwrap_or_default();
                    let n = rest.len().min(8);
                    padded[..n].copy_from_slice(&rest[..n]);
                    prop_assert_eq!(word_at(text, at), u64::from_le_bytes(padded), "{:?} at {}", text, at);
                }
            }
        }

        #[test]
        fn digits_are_written_as_the_formatter_writes_them(
            n in prop_oneof![any::<u64>(), 0u64..1000, Just(u64::MAX)],
            width in 0usize..22,
        ) {
            let mut out = String::from("x");
            push_digits(&mut out, n, width);
            // The formatter writes a 0 with no width as "0"; push_digits
            // writes as many digits as asked for, none.
            let expected = match (n, width) {
                (0, 0) => String::new(),
                _ => format!("{n:0width$}"),
            };
            prop_assert_eq!(&out[1..], expected);
        }

        #[test]
        fn any_bytes_parse_without_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_line(&line);
        }

        /// The one-pass reading of the common IAMAT agrees with the field
        /// by field one wherever it answers, on plain lines, lines spaced
        /// otherwise, cut short or with one byte changed; it answers for
        /// every plain valid IAMAT; and the peeked id is the parsed one.
        #[test]
        fn the_plain_iamat_reading_agrees_with_the_general_one(
            id in "[!-~]{1,40}|[a-z\u{e9}]{120,130}",
            loc in arb_location(),
            (time_text, _) in arb_time(),
            gaps in proptest::collection::vec(" | |[ \t\x0b\r]{1,2}", 3),
            tail in "|||[ \t]|x",
            cut in any::<proptest::sample::Index>(),
            poke in any::<proptest::sample::Index>(),
            with in proptest::sample::select(b"0123456789+-. x\t".to_vec()),
        ) {
            let line = format!("IAMAT{}{id}{}{loc}{}{time_text}{tail}", gaps[0], gaps[1], gaps[2]);
            let plain = gaps.iter().all(|g| g == " ") && tail.is_empty() && id.len() <= MAX_CLIENT_ID;
            if plain {
                prop_assert!(plain_iamat(&line).is_some(), "{:?}", line);
            }
            let mut poked = line.clone().into_bytes();
            poked[poke.index(line.len())] = with;
            let variants = [line.as_bytes(), &line.as_bytes()[..cut.index(line.len() + 1)], &poked];
            for bytes in variants {
                let Ok(text) = std::str::from_utf8(bytes) else { continue };
                if let Some(iamat) = plain_iamat(text) {
                    prop_assert_eq!(
                        &parse_fields(text),
                        &Parsed::Command(Command::IAmAt(iamat)),
                        "{:?}", text
                    );
                }
                if let Parsed::Command(Command::IAmAt(iamat)) = parse_line(bytes) {
                    prop_assert_eq!(peek_client_id(bytes), Some(iamat.client_id.as_bytes()), "{:?}", text);
                }
            }
        }

        /// The peeked id is the parsed one for every valid IAMAT and AT
        /// line, whatever white space separates the fields.
        #[test]
        fn the_peeked_client_id_is_the_parsed_one(
            id in "[!-~]{1,40}",
            loc in arb_location(),
            (time_text, _) in arb_time(),
            gaps in proptest::collection::vec("[ \t\x0b\x0c\r]{1,3}", 7),
            at in any::<bool>(),
        ) {
            let fields: Vec<&str> = if at {
                vec!["AT", "Goloman", "+0.000000001", &id, &loc, &time_text]
            } else {
                vec!["IAMAT", &id, &loc, &time_text]
            };
            let mut line = gaps[0].clone();
            for (field, gap) in fields.iter().zip(&gaps[1..]) {
                line.push_str(field);
                line.push_str(gap);
            }
            let parsed = match parse_line(line.as_bytes()) {
                Parsed::Command(Command::IAmAt(i)) => i.client_id,
                Parsed::Command(Command::At(a)) => a.client_id,
                other => return Err(TestCaseError::fail(format!("{line:?} parsed as {other:?}"))),
            };
            prop_assert_eq!(peek_client_id(line.as_bytes()), Some(parsed.as_bytes()));
        }

        #[test]
        fn iamat_format_then_parse_round_trips(
            id in "[!-~]{1,40}",
            loc in arb_location(),
            (time_text, time) in arb_time(),
            now_secs in any::<u64>(),
            now_nanos in 0u32..1_000_000_000,
        ) {
            let line = format!("IAMAT {id} {loc} {time_text}");
            let parsed = parse_line(line.as_bytes());
            let Parsed::Command(Command::IAmAt(i)) = parsed else {
                return Err(TestCaseError::fail(format!("{line} did not parse")));
            };
            prop_assert_eq!(i.time, time);
            let now = PosixTime { secs: now_secs, nanos: now_nanos };
            let mut at_line = String::new();
            write_at(&mut at_line, "Goloman", now, &i);
            prop_assert_eq!(at_len("Goloman", now, &i), at_line.len(), "{}", at_line);
            let Parsed::Command(Command::At(at)) = parse_line(at_line.as_bytes()) else {
                return Err(TestCaseError::fail(format!("{at_line} did not parse")));
            };
            prop_assert_eq!(at.client_id, id.as_str());
            prop_assert_eq!(at.location, loc.as_str());
            prop_assert_eq!(at.client_time, time_text.as_str());
            prop_assert_eq!(at.time, time);
            let mut canon = String::new();
            write_at_line(&mut canon, &at);
            prop_assert_eq!(&canon, &at_line);
            prop_assert_eq!(at_line_len(&at), canon.len());
            // The skew says now - client time exactly.
            let (int, frac) = at.skew[1..].split_once('.').unwrap();
            let magnitude: i128 = int.parse::<i128>().unwrap() * 1_000_000_000
                + frac.parse::<i128>().unwrap();
            let signed = if at.skew.starts_with('-') { -magnitude } else { magnitude };
            prop_assert_eq!(signed, now.total_nanos() - time.total_nanos());
        }
    }
}
