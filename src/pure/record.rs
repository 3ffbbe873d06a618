//! A record: the AT line a server made for a client's IAMAT, kept as one
//! string with the position of the client id inside it, and two tags: which
//! neighbour it came from and which server made it.
//!
//! Owns the ordering rule of the protocol (client time, then the whole line as
//! bytes). Pure: building a record needs the receive time as a parameter.

use crate::pure::protocol::{self, At, IAmAt, PosixTime};
use std::cmp::Ordering;

/// The longest AT line an IAMAT of at most `max_line` bytes can produce: the
/// IAMAT's fields after the command word, plus `AT`, a server name of at
/// most [`MAX_NAME_BYTES`](crate::pure::config::MAX_NAME_BYTES) and a skew (sign,
/// up to 20 digits, a dot and 9 digits). A link must take every such line,
/// or a record stored by one server would never reach the others.
pub(crate) fn max_at_line(max_line: usize) -> usize {
    const SKEW: usize = 1 + 20 + 1 + 9;
    max_line + crate::pure::config::MAX_NAME_BYTES + SKEW
}

/// What a server knows of a record besides its line, as small server ids
/// (see `server_ids.rs`; 0 is none): the neighbour it arrived from, so that
/// a link never sends it back there, and the server that made it (the AT
/// line's server), whose flood tree it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tags {
    /// The neighbour the record arrived from; 0 for an IAMAT of this
    /// server, a journal's record, or a neighbour without an id.
    pub source: u8,
    /// The server that made the record; 0 when it has no id here.
    pub origin: u8,
}

/// The largest id a tag holds.
pub(crate) const MAX_TAG: u8 = 127;

/// One client's location record: an AT line, exactly as stored and flooded.
/// Two records are equal when their lines are.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    // The AT line, its own allocation of exactly its length.
    line: Box<str>,
    // The store's sequence number for this record (0 until stored): links use
    // it to tell a neighbour what it has been sent. 32 bits keep a record at
    // 24 bytes; the store renumbers before it would wrap.
    seq: u32,
    // The client id sits at line[id_start..id_start + id_len]; both fit a byte
    // because server names, skews and client ids are bounded by the parser.
    id_start: u8,
    id_len: u8,
    // In the record, not in the line's string: two bytes more there put
    // most lines of 79 and 80 bytes (a 13-15 byte id, a 20-byte time) in
    // jemalloc's 96-byte class, not its 80-byte one. Their room here was
    // where the client time starts, which is now found from the line's
    // end (the time is its last field, at most a few dozen bytes).
    tags: Tags,
}

impl Record {
    /// The record for an IAMAT received by `server` at `now`; `origin` is
    /// `server`'s id.
    pub(crate) fn from_iamat(
        server: &str,
        now: PosixTime,
        iamat: &IAmAt<'_>,
        origin: u8,
    ) -> Record {
        Record::build(
            protocol::at_len(server, now, iamat),
            |line| protocol::write_at(line, server, now, iamat),
            iamat.client_id,
            iamat.location,
            iamat.client_time,
            Tags { source: 0, origin },
        )
    }

    /// The record carried by an AT line from a neighbour, in canonical form.
    pub(crate) fn from_at(at: &At<'_>, tags: Tags) -> Record {
        Record::build(
            protocol::at_line_len(at),
            |line| protocol::write_at_line(line, at),
            at.client_id,
            at.location,
            at.client_time,
            tags,
        )
    }

    /// Writes the line, `len` bytes, and its tags into one allocation of
    /// exactly that size, which the record then keeps as it is: one
    /// allocation and no copy per record. (Writing into a reused buffer
    /// and copying it out cost a copy and a thread-local lookup for every
    /// IAMAT; a wrong `len` would cost a reallocation, never a wrong line.)
    fn build(
        len: usize,
        write: impl FnOnce(&mut String),
        client_id: &str,
        location: &str,
        client_time: &str,
        tags: Tags,
    ) -> Record {
        let mut line = String::with_capacity(len);
        write(&mut line);
        Record::with_id(line, client_id, location, client_time, tags)
    }

    /// `line` with its tags; the client id, location and time are its last
    /// three fields.
    fn with_id(
        line: String,
        client_id: &str,
        location: &str,
        client_time: &str,
        tags: Tags,
    ) -> Record {
        // The line ends with " <client-id> <location> <client-time>".
        let tail = client_id.len() + location.len() + client_time.len() + 2;
        let id_start = line.len() - tail;
        // An id out of range reads as none: never taken for another one.
        let tag = |id: u8| if id <= MAX_TAG { id } else { 0 };
        Record {
            // No copy when the capacity was exact (shrinking is then a no-op).
            line: line.into_boxed_str(),
            seq: 0,
            id_start: u8::try_from(id_start).unwrap_or(u8::MAX),
            id_len: u8::try_from(client_id.len()).unwrap_or(u8::MAX),
            tags: Tags {
                source: tag(tags.source),
                origin: tag(tags.origin),
            },
        }
    }

    /// The store's sequence number (0 until stored).
    pub(crate) fn seq(&self) -> u64 {
        u64::from(self.seq)
    }

    /// Sets the sequence number; only the store does this.
    pub(crate) fn set_seq(&mut self, seq: u32) {
        self.seq = seq;
    }

    /// The AT line.
    pub(crate) fn line(&self) -> &str {
        &self.line
    }

    /// Where the record came from and who made it.
    pub(crate) fn tags(&self) -> Tags {
        self.tags
    }

    /// The client id.
    pub(crate) fn client_id(&self) -> &str {
        let start = usize::from(self.id_start);
        &self.line[start..start + usize::from(self.id_len)]
    }

    /// The location text, as the client sent it.
    pub(crate) fn location(&self) -> &str {
        self.fields_after_id().0
    }

    /// The client time, as integers.
    pub(crate) fn time(&self) -> PosixTime {
        // Records are only built from parsed fields, so the text is valid.
        PosixTime::parse(self.fields_after_id().1).unwrap_or_default()
    }

    fn fields_after_id(&self) -> (&str, &str) {
        let start = usize::from(self.id_start) + usize::from(self.id_len) + 1;
        // The location has no spaces and the time none either: the last
        // space of the line is the one between them, and it is found from
        // the end over the time's few bytes, whatever the location's length.
        // (Against keeping the time's position in the record, the print
        // test of the hot path measured `rsplit_once` about 50 ns an IAMAT
        // slower and a byte loop 25-30 ns; `memrchr` is within its noise.)
        let rest = self.line.get(start..).unwrap_or_default();
        match memchr::memrchr(b' ', rest.as_bytes()) {
            // Splitting at an ASCII space keeps both halves valid UTF-8.
            Some(space) => (&rest[..space], &rest[space + 1..]),
            None => (rest, ""),
        }
    }

    /// Whether `self` should replace `stored` (PROTOCOL.md, Ordering).
    pub(crate) fn is_newer_than(&self, stored: &Record) -> bool {
        self.order(stored) == Ordering::Greater
    }

    /// Order by client time, ties broken by the whole line as bytes.
    pub(crate) fn order(&self, other: &Record) -> Ordering {
        let (mine, theirs) = (self.fields_after_id().1, other.fields_after_id().1);
        same_shape_order(mine, theirs)
            .unwrap_or_else(|| self.time().cmp(&other.time()))
            .then_with(|| self.line().as_bytes().cmp(other.line().as_bytes()))
    }
}

/// The order of two client times (valid `digits[.digits]` texts) written
/// in the same shape: as many digits before the dot, and as many after it,
/// at most nine (digits past the ninth are ignored by the time, not by the
/// text). Then the texts compare as the times do, with no parse. Every
/// update of a stored client compares its time with the stored one's, and
/// a client writes its time one way: parsing both was most of the cost of
/// the comparison (4.9 % of a shard's core at 64 x 16, three parses per
/// IAMAT). `None` for other shapes.
fn same_shape_order(a: &str, b: &str) -> Option<Ordering> {
    let dot = |t: &str| t.bytes().position(|c| c == b'.').unwrap_or(t.len());
    let at = dot(a);
    (a.len() == b.len() && at == dot(b) && a.len() - at <= 10).then(|| a.cmp(b))
}

impl PartialEq for Record {
    fn eq(&self, other: &Record) -> bool {
        self.line() == other.line()
    }
}

impl Eq for Record {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::protocol::{parse_line, Command, Parsed};

    pub(crate) fn iamat_record(server: &str, now: u64, line: &str) -> Record {
        let Parsed::Command(Command::IAmAt(i)) = parse_line(line.as_bytes()) else {
            panic!("bad test line {line}")
        };
        Record::from_iamat(
            server,
            PosixTime {
                secs: now,
                nanos: 0,
            },
            &i,
            0,
        )
    }

    #[test]
    fn the_longest_valid_iamat_makes_an_at_line_a_link_takes() {
        let max_line = 4096;
        let name = "N".repeat(crate::pure::config::MAX_NAME_BYTES);
        // Client time 0 makes the largest skew; the id fills the line.
        let head = "IAMAT ";
        let tail = " -90.000000-180.000000 0.000000001";
        let id = "c".repeat(255);
        let time_digits = max_line - head.len() - id.len() - tail.len();
        let line = format!("{head}{id}{tail}{}", "0".repeat(time_digits));
        assert_eq!(line.len(), max_line);
        let r = iamat_record(&name, u64::MAX / 2, &line);
        assert!(r.line().len() > max_line, "an AT line outgrows its IAMAT");
        assert!(
            r.line().len() <= max_at_line(max_line),
            "{}",
            r.line().len()
        );
    }

    #[test]
    fn record_knows_its_client_id_location_and_time() {
        let r = iamat_record(
            "Goloman",
            1621464828,
            "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
        );
        assert_eq!(r.client_id(), "kiwi.cs.ucla.edu");
        assert_eq!(r.location(), "+34.068930-118.445127");
        assert_eq!(
            r.time(),
            PosixTime {
                secs: 1621464827,
                nanos: 959498503
            }
        );
        assert_eq!(
            r.line(),
            "AT Goloman +0.040501497 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
        );
    }

    #[test]
    fn location_and_time_are_found_in_lines_of_any_length() {
        // The time is found from the line's end, so a long location (past
        // what 16 bits of position would hold) changes nothing.
        for digits in [1, 3000, 70_000] {
            let location = format!("+1.{}-2", "0".repeat(digits));
            let line = format!("AT N +0.000000001 kiwi {location} 5.25");
            let r = Record::with_id(line.clone(), "kiwi", &location, "5.25", Tags::default());
            assert_eq!(r.client_id(), "kiwi");
            assert_eq!(r.location(), location);
            assert_eq!(
                r.time(),
                PosixTime {
                    secs: 5,
                    nanos: 250_000_000
                }
            );
        }
    }

    #[test]
    fn record_from_at_line_is_canonical_and_equal_to_the_original() {
        let original = iamat_record("Hands", 100, "IAMAT c +1-2 99.5");
        let spaced = format!("  {}  ", original.line().replace(' ', " \t "));
        let Parsed::Command(Command::At(at)) = parse_line(spaced.as_bytes()) else {
            panic!("AT did not parse")
        };
        assert_eq!(Record::from_at(&at, Tags::default()), original);
    }

    #[test]
    fn tags_ride_with_the_line_and_change_neither_its_text_nor_its_order() {
        let plain = iamat_record("Hands", 100, "IAMAT c +1-2 99.5");
        let Parsed::Command(Command::At(at)) = parse_line(plain.line().as_bytes()) else {
            panic!("AT did not parse")
        };
        let tagged = Record::from_at(
            &at,
            Tags {
                source: 3,
                origin: MAX_TAG,
            },
        );
        assert_eq!(tagged.line(), plain.line());
        assert_eq!(
            tagged.tags(),
            Tags {
                source: 3,
                origin: MAX_TAG
            }
        );
        assert_eq!(plain.tags(), Tags::default());
        assert_eq!(tagged, plain, "equal lines are equal records");
        assert_eq!(tagged.order(&plain), Ordering::Equal);
        assert_eq!(
            (tagged.client_id(), tagged.location(), tagged.time()),
            (plain.client_id(), plain.location(), plain.time())
        );
        let over = Record::from_at(
            &at,
            Tags {
                source: 200,
                origin: 255,
            },
        );
        assert_eq!(
            over.tags(),
            Tags::default(),
            "ids above the tag's range read as none"
        );
        assert_eq!(std::mem::size_of::<Record>(), 24);
    }

    /// A client time text: 1 to 20 digits (leading zeros allowed), then
    /// maybe a dot and 1 to 12 digits, as the parser takes them.
    fn time_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        ("[0-9]{1,20}", proptest::option::of("[0-9]{1,12}")).prop_map(|(int, frac)| match frac {
            Some(frac) => format!("{int}.{frac}"),
            None => int,
        })
    }

    proptest::proptest! {
        /// Comparing times of one shape as text agrees with comparing the
        /// parsed times, for every pair the shortcut takes.
        #[test]
        fn times_of_one_shape_compare_as_text_exactly_as_parsed(
            a in time_text(),
            b in time_text(),
            same in proptest::bool::ANY,
        ) {
            // Half the pairs get b's digits in a's shape, so the shortcut
            // is taken often, ties included.
            let b = if same {
                let digits: String = b.chars().filter(char::is_ascii_digit).cycle().take(a.len()).collect();
                a.chars().zip(digits.chars()).map(|(x, d)| if x == '.' { '.' } else { d }).collect()
            } else {
                b
            };
            let (Some(ta), Some(tb)) = (PosixTime::parse(&a), PosixTime::parse(&b)) else {
                return Ok(());
            };
            if let Some(order) = same_shape_order(&a, &b) {
                proptest::prop_assert_eq!(order, ta.cmp(&tb), "{} vs {}", a, b);
            }
        }
    }

    #[test]
    fn times_of_other_shapes_are_parsed() {
        assert_eq!(same_shape_order("10.5", "9.50"), None);
        assert_eq!(
            same_shape_order("5.0000000001", "5.0000000002"),
            None,
            "ten fraction digits"
        );
        assert_eq!(same_shape_order("05.5", "5.50"), None, "dot elsewhere");
        assert_eq!(same_shape_order("09.5", "10.1"), Some(Ordering::Less));
        assert_eq!(same_shape_order("123", "122"), Some(Ordering::Greater));
        let a = iamat_record("A", 10, "IAMAT c +1-2 05.5");
        let b = iamat_record("A", 10, "IAMAT c +1-2 5.50");
        assert_eq!(a.time(), b.time());
        assert_eq!(
            a.order(&b),
            a.line().as_bytes().cmp(b.line().as_bytes()),
            "equal times: the lines decide"
        );
        let late = iamat_record("A", 10, "IAMAT c +1-2 5.0000000002");
        let early = iamat_record("Z", 10, "IAMAT c +1-2 5.0000000001");
        assert_eq!(
            late.time(),
            early.time(),
            "digits past the ninth are no time"
        );
        assert!(early.is_newer_than(&late), "so the lines decide: Z after A");
    }

    #[test]
    fn later_client_time_wins_whatever_the_line() {
        let old = iamat_record("Zeta", 10, "IAMAT c +1-2 5.000000001");
        let new = iamat_record("Alpha", 10, "IAMAT c +1-2 5.000000002");
        assert!(new.is_newer_than(&old));
        assert!(!old.is_newer_than(&new));
    }

    #[test]
    fn equal_client_times_are_ordered_by_line_bytes() {
        let a = iamat_record("Alpha", 10, "IAMAT c +1-2 5.5");
        let b = iamat_record("Beta", 10, "IAMAT c +1-2 5.50");
        assert_eq!(a.time(), b.time());
        assert!(b.is_newer_than(&a));
        assert!(!a.is_newer_than(&b));
        assert!(
            !a.is_newer_than(&a.clone()),
            "a record is not newer than itself"
        );
    }
}
