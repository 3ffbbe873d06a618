//! Reply framing and validation for the load generator: pure functions over
//! bytes, no I/O and no clock, so every rule is unit-tested here.
//!
//! `reply_len` finds where one reply ends in a read buffer; `check_iamat` and
//! `check_whatsat` decide whether a whole reply is exactly what the protocol
//! promises for the request that was sent. Nothing here may panic on what
//! came off the network.

use std::fmt;

/// Which request a reply answers, so framing knows how the reply ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// One line: an AT line or a `?` line.
    Iamat,
    /// An AT line, indented JSON and an empty line; or one `?` line.
    Whatsat,
}

/// What a reply must echo: the fields of the record the request is about.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The server name the AT line must carry, when the caller knows it.
    pub server: Option<&'a [u8]>,
    /// Client id, location and client time, as sent, one space apart: the
    /// AT line after its skew. ASCII with exactly two spaces, as every
    /// workload makes it; the fast check relies on that.
    pub echo: &'a [u8],
}

/// Why a reply is wrong; one value per kind of fault, for error counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// The server answered `? ...`: it rejected the request.
    Question,
    /// The reply is not UTF-8.
    NotUtf8,
    /// The AT line does not have the six single-space-separated fields.
    NotAtLine,
    /// The AT line names another server than `--server`.
    WrongServer,
    /// The skew is not `[+-]digits.9digits`.
    BadSkew,
    /// Client id, location or client time differ from what was sent.
    WrongEcho,
    /// The WHATSAT reply does not end with `}\n\n`.
    BadEnding,
    /// The WHATSAT body is not JSON.
    NotJson,
    /// The JSON has no `results` array.
    NoResults,
    /// `results` has more entries than max-results.
    TooManyResults,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::Question => "server replied '?' (request rejected)",
            Invalid::NotUtf8 => "reply is not UTF-8",
            Invalid::NotAtLine => "reply is not an AT line with six fields",
            Invalid::WrongServer => "AT line names another server",
            Invalid::BadSkew => "skew is not [+-]digits.9digits",
            Invalid::WrongEcho => "client id, location or client time not echoed exactly",
            Invalid::BadEnding => "WHATSAT reply does not end with '}\\n\\n'",
            Invalid::NotJson => "WHATSAT body is not JSON",
            Invalid::NoResults => "WHATSAT JSON has no 'results' array",
            Invalid::TooManyResults => "WHATSAT JSON has more results than max-results",
        })
    }
}

/// Length of the first complete reply in `buf`, or `None` while more bytes
/// are needed.
///
/// A WHATSAT reply ends at its first empty line (the JSON is indented and
/// never holds one). If the line after its AT line does not open a JSON
/// object, the reply is taken to be that one line, so a wrong server cannot
/// swallow the replies that follow it.
pub fn reply_len(buf: &[u8], kind: ReplyKind) -> Option<usize> {
    let first = memchr::memchr(b'\n', buf)? + 1;
    if kind == ReplyKind::Iamat || buf.starts_with(b"?") {
        return Some(first);
    }
    match buf.get(first) {
        None => None,
        // SIMD search: a 20-result reply is about 18 KB, and this runs for
        // every one of them.
        Some(b'{') => memchr::memmem::find(&buf[first..], b"\n\n").map(|at| first + at + 2),
        Some(_) => Some(first),
    }
}

/// True when `skew` is an explicit sign, one or more digits, a dot and
/// exactly nine digits.
pub fn is_valid_skew(skew: &[u8]) -> bool {
    let Some((b'+' | b'-', rest)) = skew.split_first() else {
        return false;
    };
    let Some(dot) = rest.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (int, frac) = (&rest[..dot], &rest[dot + 1..]);
    !int.is_empty()
        && int.iter().all(u8::is_ascii_digit)
        && frac.len() == 9
        && frac.iter().all(u8::is_ascii_digit)
}

/// Checks one AT line (without its `\n`) against what was sent. Works on
/// bytes: this runs for every reply of a run, and the generator must stay
/// faster than the server it measures.
fn check_at_line(line: &[u8], expected: &Expected<'_>) -> Result<(), Invalid> {
    if is_expected_at_line(line, expected) {
        return Ok(());
    }
    // Wrong in some way: the field by field reading says how.
    read_at_line(line, expected)
}

/// `check_at_line` field by field: the reading that names what is wrong.
fn read_at_line(line: &[u8], expected: &Expected<'_>) -> Result<(), Invalid> {
    if line.starts_with(b"?") {
        return Err(Invalid::Question);
    }
    if !line.is_ascii() && std::str::from_utf8(line).is_err() {
        return Err(Invalid::NotUtf8);
    }
    let mut fields = line.splitn(4, |&b| b == b' ');
    let (Some(b"AT"), Some(server), Some(skew), Some(record)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Invalid::NotAtLine);
    };
    // The record part is client id, location and client time.
    if server.is_empty() || record.iter().filter(|&&b| b == b' ').count() != 2 {
        return Err(Invalid::NotAtLine);
    }
    if expected.server.is_some_and(|want| want != server) {
        return Err(Invalid::WrongServer);
    }
    if !is_valid_skew(skew) {
        return Err(Invalid::BadSkew);
    }
    if record != expected.echo {
        return Err(Invalid::WrongEcho);
    }
    Ok(())
}

/// The fast path of `check_at_line`, true only for a line that it accepts:
/// `AT <server> <skew> ` followed by exactly the echo. The echo is ours
/// (ASCII, two spaces), so comparing it whole stands for the field split
/// and the space count of the slow path; what is left before it is the
/// server and a skew, which must hold no space.
fn is_expected_at_line(line: &[u8], expected: &Expected<'_>) -> bool {
    let Some(head_len) = line.len().checked_sub(expected.echo.len() + 1) else {
        return false;
    };
    let (head, record) = line.split_at(head_len);
    if record[1..] != *expected.echo || record[0] != b' ' {
        return false;
    }
    let Some(rest) = head.strip_prefix(b"AT ") else {
        return false;
    };
    let Some(space) = memchr::memchr(b' ', rest) else {
        return false;
    };
    let (server, skew) = (&rest[..space], &rest[space + 1..]);
    let server_ok = !server.is_empty()
        && match expected.server {
            Some(want) => want == server,
            None => std::str::from_utf8(server).is_ok(),
        };
    // What the slow path asks of the record (ASCII, two spaces) holds for
    // the echo it equals: a workload makes echoes that way (see
    // `Expected::echo`). Asking again for every reply cost the generator a
    // byte loop per reply.
    debug_assert!(is_echo_shaped(expected.echo));
    server_ok && is_valid_skew(skew)
}

/// What a workload's echo is: ASCII, with the two spaces between client
/// id, location and client time.
pub fn is_echo_shaped(echo: &[u8]) -> bool {
    echo.is_ascii() && echo.iter().filter(|&&b| b == b' ').count() == 2
}

/// Validates a whole IAMAT reply (with its `\n`): exactly
/// `AT <server> <skew> <id> <location> <time>\n` echoing what was sent.
pub fn check_iamat(reply: &[u8], expected: &Expected<'_>) -> Result<(), Invalid> {
    let line = reply.strip_suffix(b"\n").ok_or(Invalid::NotAtLine)?;
    check_at_line(line, expected)
}

/// Validates a whole WHATSAT reply: the stored AT line of that client, JSON
/// whose `results` has at most `max_results` entries, then an empty line.
#[cfg(test)]
pub fn check_whatsat(
    reply: &[u8],
    expected: &Expected<'_>,
    max_results: usize,
) -> Result<(), Invalid> {
    check_whatsat_against(reply, expected, max_results, &mut Vec::new())
}

/// `check_whatsat`, except that a body byte-for-byte equal to `last_valid`
/// (a body that passed the same check before) is not parsed again: a cached
/// answer of 20 results costs the server a copy, and parsing it each time
/// would make the generator the bottleneck. A body that passes is kept in
/// `last_valid`.
pub fn check_whatsat_against(
    reply: &[u8],
    expected: &Expected<'_>,
    max_results: usize,
    last_valid: &mut Vec<u8>,
) -> Result<(), Invalid> {
    let nl = reply
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(Invalid::NotAtLine)?;
    check_at_line(&reply[..nl], expected)?;
    let body = &reply[nl + 1..];
    if !body.ends_with(b"}\n\n") {
        return Err(Invalid::BadEnding);
    }
    if !last_valid.is_empty() && body == last_valid.as_slice() {
        return Ok(());
    }
    let body = std::str::from_utf8(body).map_err(|_| Invalid::NotUtf8)?;
    // The JSON is everything up to and including the closing brace.
    let json = &body[..body.len() - 2];
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| Invalid::NotJson)?;
    let results = value
        .get("results")
        .and_then(|r| r.as_array())
        .ok_or(Invalid::NoResults)?;
    if results.len() > max_results {
        return Err(Invalid::TooManyResults);
    }
    last_valid.clear();
    last_valid.extend_from_slice(body.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "bench-0-7";
    const LOC: &str = "+34.068930-118.445127";
    const TIME: &str = "1700000000.000000001";

    const ECHO: &str = "bench-0-7 +34.068930-118.445127 1700000000.000000001";

    fn expected(server: Option<&'static str>) -> Expected<'static> {
        assert_eq!(ECHO, format!("{ID} {LOC} {TIME}"));
        Expected {
            server: server.map(str::as_bytes),
            echo: ECHO.as_bytes(),
        }
    }

    fn at(server: &str, skew: &str) -> String {
        format!("AT {server} {skew} {ID} {LOC} {TIME}\n")
    }

    fn whatsat(results: usize) -> String {
        let entries: Vec<String> = (0..results)
            .map(|i| format!("    {{\n      \"name\": \"Place {i}\"\n    }}"))
            .collect();
        format!(
            "{}{{\n  \"html_attributions\": [],\n  \"results\": [\n{}\n  ],\n  \"status\": \"OK\"\n}}\n\n",
            at("Goloman", "+0.263873386"),
            entries.join(",\n")
        )
    }

    #[test]
    fn exact_echo_with_good_skew_is_valid() {
        let reply = at("Goloman", "+0.263873386");
        assert_eq!(check_iamat(reply.as_bytes(), &expected(None)), Ok(()));
        assert_eq!(
            check_iamat(reply.as_bytes(), &expected(Some("Goloman"))),
            Ok(())
        );
        let negative = at("Goloman", "-12.000000000");
        assert_eq!(check_iamat(negative.as_bytes(), &expected(None)), Ok(()));
    }

    #[test]
    fn wrong_echo_is_invalid() {
        let reply = format!("AT Goloman +0.263873386 {ID} +0+0 {TIME}\n");
        assert_eq!(
            check_iamat(reply.as_bytes(), &expected(None)),
            Err(Invalid::WrongEcho)
        );
        let reply = "AT X +0.000000000 wrong +0+0 1\n";
        assert_eq!(
            check_iamat(reply.as_bytes(), &expected(None)),
            Err(Invalid::WrongEcho)
        );
        let reply = format!("AT Goloman +0.263873386 {ID} {LOC} 1700000000.0000000010\n");
        assert_eq!(
            check_iamat(reply.as_bytes(), &expected(None)),
            Err(Invalid::WrongEcho)
        );
    }

    #[test]
    fn malformed_skews_are_invalid() {
        for skew in [
            "0.263873386",
            "+0.26387338",
            "+0.2638733860",
            "+.263873386",
            "+0263873386",
            "+1e3.000000000",
            "+0.26387338x",
            "++0.263873386",
        ] {
            let reply = at("Goloman", skew);
            assert_eq!(
                check_iamat(reply.as_bytes(), &expected(None)),
                Err(Invalid::BadSkew),
                "{skew}"
            );
        }
    }

    #[test]
    fn another_server_name_is_invalid_only_when_one_is_expected() {
        let reply = at("Hands", "+0.000000001");
        assert_eq!(
            check_iamat(reply.as_bytes(), &expected(Some("Goloman"))),
            Err(Invalid::WrongServer)
        );
        assert_eq!(check_iamat(reply.as_bytes(), &expected(None)), Ok(()));
    }

    #[test]
    fn question_reply_is_invalid() {
        let reply = format!("? IAMAT {ID} {LOC} {TIME}\n");
        assert_eq!(
            check_iamat(reply.as_bytes(), &expected(None)),
            Err(Invalid::Question)
        );
        let reply = format!("? WHATSAT {ID} 10 5\n");
        assert_eq!(
            check_whatsat(reply.as_bytes(), &expected(None), 5),
            Err(Invalid::Question)
        );
    }

    #[test]
    fn lines_of_the_wrong_shape_are_invalid() {
        for reply in [
            "".to_owned(),
            "\n".to_owned(),
            format!("AT Goloman +0.263873386 {ID} {LOC}\n"),
            format!("AT Goloman +0.263873386 {ID} {LOC} {TIME} extra\n"),
            format!("AT  Goloman +0.263873386 {ID} {LOC} {TIME}\n"),
            format!("XY Goloman +0.263873386 {ID} {LOC} {TIME}\n"),
            format!("AT Goloman +0.263873386 {ID} {LOC} {TIME}"),
        ] {
            assert_eq!(
                check_iamat(reply.as_bytes(), &expected(None)),
                Err(Invalid::NotAtLine),
                "{reply:?}"
            );
        }
        assert_eq!(
            check_iamat(b"AT \xff\n", &expected(None)),
            Err(Invalid::NotUtf8)
        );
    }

    #[test]
    fn good_whatsat_reply_is_valid() {
        for n in 0..=5 {
            let reply = whatsat(n);
            assert_eq!(
                check_whatsat(reply.as_bytes(), &expected(Some("Goloman")), 5),
                Ok(()),
                "{reply}"
            );
        }
    }

    #[test]
    fn whatsat_reply_with_too_many_results_is_invalid() {
        let reply = whatsat(6);
        assert_eq!(
            check_whatsat(reply.as_bytes(), &expected(None), 5),
            Err(Invalid::TooManyResults)
        );
    }

    #[test]
    fn whatsat_reply_without_trailing_empty_line_is_invalid() {
        let reply = whatsat(1);
        let cut = &reply[..reply.len() - 1];
        assert_eq!(
            check_whatsat(cut.as_bytes(), &expected(None), 5),
            Err(Invalid::BadEnding)
        );
    }

    #[test]
    fn whatsat_reply_that_is_not_json_is_invalid() {
        let reply = format!("{}{{ not json\n}}\n\n", at("Goloman", "+0.263873386"));
        assert_eq!(
            check_whatsat(reply.as_bytes(), &expected(None), 5),
            Err(Invalid::NotJson)
        );
        let reply = format!(
            "{}{{\n  \"status\": \"OK\"\n}}\n\n",
            at("G", "+0.000000000")
        );
        assert_eq!(
            check_whatsat(reply.as_bytes(), &expected(None), 5),
            Err(Invalid::NoResults)
        );
    }

    #[test]
    fn a_body_seen_valid_before_is_not_parsed_again_but_the_at_line_is_checked() {
        let mut last = Vec::new();
        let good = whatsat(3);
        assert_eq!(
            check_whatsat_against(good.as_bytes(), &expected(None), 5, &mut last),
            Ok(())
        );
        assert!(!last.is_empty());
        assert_eq!(
            check_whatsat_against(good.as_bytes(), &expected(None), 5, &mut last),
            Ok(())
        );
        // Same body under another client's AT line: still wrong.
        let other = good.replace(ID, "bench-0-8");
        assert_eq!(
            check_whatsat_against(other.as_bytes(), &expected(None), 5, &mut last),
            Err(Invalid::WrongEcho)
        );
        // A different body is parsed: too many results is caught.
        assert_eq!(
            check_whatsat_against(whatsat(6).as_bytes(), &expected(None), 5, &mut last),
            Err(Invalid::TooManyResults)
        );
        // And a failed body is not remembered as valid.
        assert_eq!(last, good.split_once('\n').unwrap().1.as_bytes());
    }

    #[test]
    fn whatsat_reply_for_another_client_is_invalid() {
        let reply = whatsat(1).replace(ID, "bench-0-8");
        assert_eq!(
            check_whatsat(reply.as_bytes(), &expected(None), 5),
            Err(Invalid::WrongEcho)
        );
    }

    #[test]
    fn iamat_replies_are_framed_by_their_newline() {
        assert_eq!(reply_len(b"AT a", ReplyKind::Iamat), None);
        assert_eq!(reply_len(b"AT a\nAT b\n", ReplyKind::Iamat), Some(5));
    }

    #[test]
    fn whatsat_replies_are_framed_by_their_empty_line() {
        let reply = whatsat(2);
        let mut buf = reply.clone().into_bytes();
        buf.extend_from_slice(b"AT next\n");
        assert_eq!(reply_len(&buf, ReplyKind::Whatsat), Some(reply.len()));
        for cut in 0..reply.len() {
            assert_eq!(reply_len(&buf[..cut], ReplyKind::Whatsat), None, "{cut}");
        }
    }

    #[test]
    fn whatsat_question_or_bare_at_line_is_one_line() {
        assert_eq!(
            reply_len(b"? WHATSAT x 1 1\nAT", ReplyKind::Whatsat),
            Some(16)
        );
        assert_eq!(reply_len(b"AT x\nAT y\n", ReplyKind::Whatsat), Some(5));
    }

    proptest::proptest! {
        /// The fast path accepts only what the field-by-field reading
        /// accepts, and together they give that reading's verdict on any
        /// line: AT lines, near misses, and records with other spacing.
        #[test]
        fn the_fast_path_agrees_with_the_reading(
            head in proptest::sample::select(vec!["AT ", "AT", "at ", "? ", "AT  ", ""]),
            server in proptest::sample::select(vec!["Goloman", "", "Golo man", "Gol\u{e9}", "G"]),
            skew in proptest::sample::select(vec!["+0.263873386", "-12.000000001", "0.1", "+1.12345678", "+.123456789", "+1.123456789 "]),
            // What the sender expects is always shaped as a workload makes
            // it; what comes back can be anything.
            echo in proptest::sample::select(vec![ECHO, "a b c", "a  b"]),
            sent in proptest::sample::select(vec![ECHO, "a b c", "a  b", "a b c d", "", "\u{e9} b c", "x"]),
            want in proptest::option::of(proptest::sample::select(vec!["Goloman", "", "G"])),
        ) {
            let line = format!("{head}{server} {skew} {sent}");
            let expected = Expected { server: want.map(str::as_bytes), echo: echo.as_bytes() };
            let reading = read_at_line(line.as_bytes(), &expected);
            if is_expected_at_line(line.as_bytes(), &expected) {
                proptest::prop_assert_eq!(reading, Ok(()), "{:?}", line);
            }
            proptest::prop_assert_eq!(check_at_line(line.as_bytes(), &expected), reading);
        }
    }
}
