//! What phone apps post over HTTP, as values: an OwnTracks message (HTTP
//! mode) or a Traccar Client report (the OsmAnd protocol, JSON or
//! parameters), turned into the IAMAT it stands for, or a one-line reason
//! to refuse it.
//!
//! It owns the apps' formats (field names, ranges, times) and the rule
//! that a phone's report stores exactly what `IAMAT <id> <position> <time>`
//! would: the position written `%+.6f%+.6f`, the time in seconds with nine
//! decimals. HTTP, authentication and routing are the shell's
//! (`net/phones.rs`). Pure: no I/O, no clock (far-future times are the
//! shell's check, with the server's clock, as for IAMAT).

use std::borrow::Cow;

use serde_json::Value;

use crate::pure::protocol::{is_field_space, push_digits, IAmAt, PosixTime, MAX_CLIENT_ID};

/// A phone's position at a time: what one IAMAT says.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The client id.
    pub client_id: String,
    /// Latitude, degrees, in [-90, 90].
    pub lat: f64,
    /// Longitude, degrees, in [-180, 180].
    pub lon: f64,
    /// Seconds since the UNIX epoch.
    pub secs: u64,
    /// Nanoseconds past `secs`.
    pub nanos: u32,
}

impl Report {
    /// The IAMAT line this report stands for, without a newline.
    pub fn iamat_line(&self) -> String {
        // Sized once: the position and time take at most 52 bytes.
        let mut line = String::with_capacity(self.client_id.len() + 64);
        line.push_str("IAMAT ");
        line.push_str(&self.client_id);
        line.push(' ');
        push_degrees(&mut line, self.lat);
        push_degrees(&mut line, self.lon);
        line.push(' ');
        push_digits(&mut line, self.secs, 1);
        line.push('.');
        push_digits(&mut line, u64::from(self.nanos), 9);
        line
    }

    /// The IAMAT of `line`, this report's [`Report::iamat_line`], as
    /// parsing it would give (property-tested), without parsing it: the
    /// fields lie where the line was written, and the time is the
    /// report's. `None` when the report is not a valid IAMAT (a client id
    /// IAMAT refuses, a position out of range, nanoseconds past a second),
    /// which the parsers here never make.
    pub fn iamat<'a>(&self, line: &'a str) -> Option<IAmAt<'a>> {
        let in_range = |v: f64, max: f64| (-max..=max).contains(&v);
        if client_id(&self.client_id).is_err()
            || !in_range(self.lat, 90.0)
            || !in_range(self.lon, 180.0)
            || self.nanos >= 1_000_000_000
        {
            return None;
        }
        let fields = line.strip_prefix("IAMAT ")?;
        let (client_id, rest) = fields.split_at_checked(self.client_id.len())?;
        let (location, client_time) = rest.strip_prefix(' ')?.split_once(' ')?;
        Some(IAmAt {
            client_id,
            location,
            client_time,
            time: PosixTime {
                secs: self.secs,
                nanos: self.nanos,
            },
        })
    }
}

/// Appends `degrees` as `{:+.6}` does. By integers: the formatter's exact
/// float path was a tenth of a whole OwnTracks post. The product with 1e6
/// is off the exact value by at most half a unit in its last place (about
/// 1.5e-8 at 180e6), so it rounds to the same micro-degree unless it lies
/// within a thousandth of a tie; those few go to the formatter, which
/// decides them exactly.
fn push_degrees(out: &mut String, degrees: f64) {
    use std::fmt::Write as _;
    let scaled = degrees * 1e6;
    let near_tie = ((scaled - scaled.trunc()).abs() - 0.5).abs() < 1e-3;
    if near_tie || !scaled.is_finite() || scaled.abs() >= 1e15 {
        // Writing to a String cannot fail.
        let _ = write!(out, "{degrees:+.6}");
        return;
    }
    // `{:+}` gives the sign of the value, so -0.0000001 is "-0.000000".
    out.push(if degrees.is_sign_negative() { '-' } else { '+' });
    // In range and rounded: the cast is exact.
    let micro = scaled.abs().round() as u64;
    push_digits(out, micro / 1_000_000, 1);
    out.push('.');
    push_digits(out, micro % 1_000_000, 6);
}

/// What an OwnTracks post holds; `'a` is the body's (a `tid` without
/// escapes is not copied).
#[derive(Debug, Clone, PartialEq)]
pub enum OwnTracks<'a> {
    /// A location: where and when, and the tracker id the app shows.
    Location {
        /// Latitude, degrees.
        lat: f64,
        /// Longitude, degrees.
        lon: f64,
        /// UNIX seconds (`tst`, else `created_at`).
        secs: u64,
        /// `tid`, two characters the app shows on a map.
        tid: Option<Cow<'a, str>>,
    },
    /// Another message type (`lwt`, `transition`, `waypoint`, ...) or an
    /// empty body: taken and not stored.
    Other(String),
}

/// The fields of an OwnTracks message herd reads; the others are skipped
/// unread (a typed parse, not a tree of every field: about a third of the
/// time of a post was the tree).
#[derive(serde::Deserialize)]
struct Message<'a> {
    #[serde(rename = "_type", borrow)]
    kind: Option<Scalar<'a>>,
    #[serde(borrow)]
    lat: Option<Scalar<'a>>,
    #[serde(borrow)]
    lon: Option<Scalar<'a>>,
    #[serde(borrow)]
    tst: Option<Scalar<'a>>,
    #[serde(borrow)]
    created_at: Option<Scalar<'a>>,
    #[serde(borrow)]
    tid: Option<Scalar<'a>>,
}

/// One field of a message as herd reads it: a number, a string (borrowed
/// from the body unless it has escapes), or anything else (skipped). What
/// `serde_json::Value` would say of it, without the tree: a `Value` copies
/// every string it holds, two allocations per post.
#[derive(Debug, Clone, PartialEq)]
enum Scalar<'a> {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(Cow<'a, str>),
    Other,
}

impl<'a> Scalar<'a> {
    /// As `Value::as_f64`: any number.
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Unsigned(v) => Some(v as f64),
            Scalar::Signed(v) => Some(v as f64),
            Scalar::Float(v) => Some(v),
            _ => None,
        }
    }

    /// As `Value::as_u64`: a whole number, not negative.
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Scalar::Unsigned(v) => Some(v),
            Scalar::Signed(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The string, if it is one.
    fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor(std::marker::PhantomData))
    }
}

/// Reads any JSON value as a [`Scalar`]; arrays and objects are read
/// through (so the parse goes on) and kept as `Other`.
struct ScalarVisitor<'a>(std::marker::PhantomData<Scalar<'a>>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Unsigned(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Signed(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E>(self) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Other)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'a>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'a>, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Scalar::Other)
    }
}

/// Parses an OwnTracks HTTP-mode body.
pub fn owntracks(body: &[u8]) -> Result<OwnTracks<'_>, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(OwnTracks::Other("empty".to_owned()));
    }
    let message: Message = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => "the body is not a JSON object".to_owned(),
        _ => format!("the body is not JSON: {e}"),
    })?;
    let kind = message
        .kind
        .and_then(Scalar::into_text)
        .ok_or("the message has no \"_type\"")?;
    if kind != "location" {
        return Ok(OwnTracks::Other(kind.into_owned()));
    }
    let (lat, lon) = position(
        message.lat.as_ref().and_then(Scalar::as_f64),
        message.lon.as_ref().and_then(Scalar::as_f64),
    )?;
    let secs = match message.tst.as_ref().or(message.created_at.as_ref()) {
        None => return Err("a location needs \"tst\" (UNIX seconds)".to_owned()),
        Some(t) => t
            .as_u64()
            .ok_or("\"tst\" is not a whole number of UNIX seconds")?,
    };
    Ok(OwnTracks::Location {
        lat,
        lon,
        secs,
        tid: message.tid.and_then(Scalar::into_text),
    })
}

/// The client id of an OwnTracks post: `<user>/<device>` from the app's
/// `X-Limit-U` and `X-Limit-D`, each else from the Basic user and the
/// message's `tid`.
pub fn owntracks_client_id(
    limit_u: Option<&str>,
    limit_d: Option<&str>,
    basic_user: Option<&str>,
    tid: Option<&str>,
) -> Result<String, String> {
    let user = limit_u
        .or(basic_user)
        .ok_or("no user: send X-Limit-U or HTTP Basic authentication")?;
    let device = limit_d
        .or(tid)
        .ok_or("no device: send X-Limit-D or a \"tid\"")?;
    // Joined by hand: `format!` took 3 % of a post (perf, 64 x 16).
    let mut id = String::with_capacity(user.len() + 1 + device.len());
    id.push_str(user);
    id.push('/');
    id.push_str(device);
    client_id(&id)?;
    Ok(id)
}

/// Checks a client id as IAMAT does: 1 to 255 bytes, no white space.
pub fn client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID {
        return Err(format!(
            "the client id is {} bytes; it must be 1 to {MAX_CLIENT_ID}",
            id.len()
        ));
    }
    if id.bytes().any(is_field_space) {
        return Err("the client id has white space".to_owned());
    }
    Ok(())
}

/// A Traccar Client (OsmAnd) JSON report:
/// `{"device_id", "location": {"timestamp", "coords": {"latitude", "longitude"}}}`.
pub fn osmand_json(body: &[u8]) -> Result<Report, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let id = match value.get("device_id") {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("the report has no \"device_id\"".to_owned()),
    };
    let location = value
        .get("location")
        .ok_or("the report has no \"location\"")?;
    let coords = location
        .get("coords")
        .ok_or("the location has no \"coords\"")?;
    let (lat, lon) = position(
        coords.get("latitude").and_then(Value::as_f64),
        coords.get("longitude").and_then(Value::as_f64),
    )?;
    let (secs, nanos) = match location.get("timestamp") {
        Some(Value::String(text)) => timestamp(text)?,
        Some(Value::Number(n)) => timestamp(&n.to_string())?,
        _ => return Err("the location has no \"timestamp\"".to_owned()),
    };
    client_id(&id)?;
    Ok(Report {
        client_id: id,
        lat,
        lon,
        secs,
        nanos,
    })
}

/// An OsmAnd report as query or form parameters: `id` (or `deviceid`),
/// `lat`, `lon`, `timestamp`; and the `token` among them, if any.
pub fn osmand_params(pairs: &[(String, String)]) -> Result<(Report, Option<String>), String> {
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let id = get("id")
        .or_else(|| get("deviceid"))
        .ok_or("no \"id\" parameter")?;
    client_id(id)?;
    let number = |name: &str| -> Result<f64, String> {
        let text = get(name).ok_or_else(|| format!("no \"{name}\" parameter"))?;
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("\"{name}\" is not a number"))
    };
    let (lat, lon) = position(Some(number("lat")?), Some(number("lon")?))?;
    let (secs, nanos) = timestamp(get("timestamp").ok_or("no \"timestamp\" parameter")?)?;
    Ok((
        Report {
            client_id: id.to_owned(),
            lat,
            lon,
            secs,
            nanos,
        },
        get("token").map(str::to_owned),
    ))
}

/// Latitude and longitude, numbers in range.
fn position(lat: Option<f64>, lon: Option<f64>) -> Result<(f64, f64), String> {
    let lat = lat.ok_or("no latitude (a number)")?;
    let lon = lon.ok_or("no longitude (a number)")?;
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("latitude {lat} is out of [-90, 90]"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("longitude {lon} is out of [-180, 180]"));
    }
    Ok((lat, lon))
}

/// A report's time: UNIX seconds (digits, an optional fraction), UNIX
/// milliseconds (a whole number of 12 digits or more, as some trackers
/// send), or an ISO-8601 / RFC 3339 date and time (`Z` or an offset; none
/// means UTC).
pub fn timestamp(text: &str) -> Result<(u64, u32), String> {
    let text = text.trim();
    let bad = || format!("timestamp {text:?} is neither UNIX seconds nor an ISO-8601 time");
    if text.bytes().next().is_some_and(|b| b.is_ascii_digit()) && !text.contains(['-', ':']) {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty()
            || whole.len() > 19
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let value: u64 = whole.parse().map_err(|_| bad())?;
        if fraction.is_empty() && whole.len() >= 12 {
            return Ok((value / 1000, (value % 1000) as u32 * 1_000_000));
        }
        return Ok((value, nanos_of(fraction)));
    }
    iso8601(text).ok_or_else(bad)
}

/// The nanoseconds of the digits after a decimal point (past nine ignored).
fn nanos_of(fraction: &str) -> u32 {
    let mut digits: String = fraction.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    digits.parse().unwrap_or(0)
}

/// `YYYY-MM-DD(T| )HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]` as UNIX time.
fn iso8601(text: &str) -> Option<(u64, u32)> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b.get(i) != Some(&c))
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut nanos = 0;
    if let Some(after) = rest.strip_prefix('.') {
        let end = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if end == 0 {
            return None;
        }
        nanos = nanos_of(&after[..end]);
        rest = &after[end..];
    }
    let offset_secs = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = rest[1..].replace(':', "");
            if zone.len() != 4 || !zone.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (h, m): (i64, i64) = (zone[..2].parse().ok()?, zone[2..].parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs).ok().map(|s| (s, nanos))
}

/// Days in `month` of `year` (Gregorian).
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Decoded `name=value` pairs of a query string or form body (`+` is a
/// space, `%XX` a byte; a malformed escape is kept as written).
pub fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// One decoded query or form component: `+` is a space, `%XX` a byte, a
/// malformed escape kept as written.
pub fn percent_decode(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::protocol::{parse_line, Command, Parsed};
    use proptest::prelude::*;

    /// The OwnTracks booklet's location, as the issue gives it.
    const LOCATION: &str = r#"{"_type":"location","acc":11,"alt":38,"batt":87,"bs":1,"conn":"w","created_at":1796500000,"lat":48.85833,"lon":2.29513,"t":"u","tid":"JJ","tst":1796500000,"vac":3,"vel":0}"#;

    #[test]
    fn an_owntracks_location_is_its_position_time_and_tid() {
        assert_eq!(
            owntracks(LOCATION.as_bytes()),
            Ok(OwnTracks::Location {
                lat: 48.85833,
                lon: 2.29513,
                secs: 1_796_500_000,
                tid: Some("JJ".into())
            })
        );
        let created = r#"{"_type":"location","lat":1,"lon":2,"created_at":5}"#;
        assert!(matches!(
            owntracks(created.as_bytes()),
            Ok(OwnTracks::Location { secs: 5, .. })
        ));
    }

    #[test]
    fn other_owntracks_messages_and_empty_bodies_are_taken_and_not_stored() {
        for (body, kind) in [
            (r#"{"_type":"lwt","tst":1796500000}"#, "lwt"),
            (
                r#"{"_type":"transition","event":"enter","desc":"Home","lat":48.85833,"lon":2.29513,"tst":1796500000,"wtst":1796400000,"acc":10,"t":"c","tid":"JJ"}"#,
                "transition",
            ),
            (r#"{"_type":"waypoints","waypoints":[]}"#, "waypoints"),
            ("", "empty"),
            (" \n", "empty"),
        ] {
            assert_eq!(
                owntracks(body.as_bytes()),
                Ok(OwnTracks::Other(kind.into()))
            );
        }
    }

    #[test]
    fn bad_owntracks_bodies_say_why_in_one_line() {
        for (body, says) in [
            ("{", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"lat":1}"#, "no \"_type\""),
            (r#"{"_type":"location","lon":2,"tst":1}"#, "no latitude"),
            (
                r#"{"_type":"location","lat":91,"lon":2,"tst":1}"#,
                "out of [-90, 90]",
            ),
            (
                r#"{"_type":"location","lat":1,"lon":-181,"tst":1}"#,
                "out of [-180, 180]",
            ),
            (r#"{"_type":"location","lat":1,"lon":2}"#, "needs \"tst\""),
            (
                r#"{"_type":"location","lat":1,"lon":2,"tst":-5}"#,
                "whole number",
            ),
            (
                r#"{"_type":"location","lat":"1","lon":2,"tst":1}"#,
                "no latitude",
            ),
        ] {
            let why = owntracks(body.as_bytes()).unwrap_err();
            assert!(why.contains(says), "{body}: {why}");
            assert!(!why.contains('\n'), "{why}");
        }
    }

    #[test]
    fn owntracks_fields_of_any_json_type_are_read_or_refused_as_a_tree_would() {
        // Escaped strings are read as their text (the copy the borrowed
        // form cannot be); arrays and objects anywhere are read through.
        let escaped = r#"{"_type":"loc\u0061tion","inregions":["a",{"b":[1,2]}],"lat":1,"lon":-2.5e0,"tst":7,"tid":"J\"J"}"#;
        assert_eq!(
            owntracks(escaped.as_bytes()),
            Ok(OwnTracks::Location {
                lat: 1.0,
                lon: -2.5,
                secs: 7,
                tid: Some("J\"J".into())
            })
        );
        // A `tid` that is not a string is no tid; `null` is no field.
        let odd_tid = r#"{"_type":"location","lat":1,"lon":2,"tst":7,"tid":5,"created_at":null}"#;
        assert!(matches!(
            owntracks(odd_tid.as_bytes()),
            Ok(OwnTracks::Location {
                tid: None,
                secs: 7,
                ..
            })
        ));
        for (body, says) in [
            (r#"{"_type":{"a":1},"lat":1}"#, "no \"_type\""),
            (r#"{"_type":null}"#, "no \"_type\""),
            (
                r#"{"_type":"location","lat":[1],"lon":2,"tst":1}"#,
                "no latitude",
            ),
            (
                r#"{"_type":"location","lat":true,"lon":2,"tst":1}"#,
                "no latitude",
            ),
            (
                r#"{"_type":"location","lat":1,"lon":2,"tst":1.5}"#,
                "whole number",
            ),
            (
                r#"{"_type":"location","lat":1,"lon":2,"tst":"1"}"#,
                "whole number",
            ),
            (
                r#"{"_type":"location","lat":1,"lat":1,"lon":2,"tst":1}"#,
                "not a JSON object",
            ),
            (r#"{"_type":"location","lat":1,"lon":2,"tst":1"#, "not JSON"),
        ] {
            let why = owntracks(body.as_bytes()).unwrap_err();
            assert!(why.contains(says), "{body}: {why}");
        }
    }

    #[test]
    fn the_owntracks_client_id_is_user_slash_device() {
        assert_eq!(
            owntracks_client_id(Some("jane"), Some("phone"), Some("basic"), Some("JJ")),
            Ok("jane/phone".to_owned())
        );
        assert_eq!(
            owntracks_client_id(None, None, Some("jane"), Some("JJ")),
            Ok("jane/JJ".to_owned())
        );
        assert!(owntracks_client_id(None, Some("d"), None, None)
            .unwrap_err()
            .contains("no user"));
        assert!(owntracks_client_id(Some("u"), None, None, None)
            .unwrap_err()
            .contains("no device"));
        assert!(owntracks_client_id(Some("ja ne"), Some("p"), None, None)
            .unwrap_err()
            .contains("white space"));
        let long = "x".repeat(250);
        assert!(owntracks_client_id(Some(&long), Some("device"), None, None)
            .unwrap_err()
            .contains("257 bytes"));
    }

    #[test]
    fn a_traccar_client_json_report_is_its_device_position_and_time() {
        let body = r#"{"device_id":"48241179","location":{"timestamp":"2026-12-06T20:00:00.000Z","coords":{"latitude":34.06893,"longitude":-118.445127,"accuracy":5,"speed":0,"heading":0,"altitude":80},"is_moving":false,"odometer":0,"event":"motionchange","battery":{"level":0.9,"is_charging":false},"activity":{"type":"still"},"extras":{}}}"#;
        let report = osmand_json(body.as_bytes()).unwrap();
        assert_eq!(
            report,
            Report {
                client_id: "48241179".into(),
                lat: 34.06893,
                lon: -118.445127,
                secs: 1_796_587_200,
                nanos: 0
            }
        );
        assert_eq!(
            report.iamat_line(),
            "IAMAT 48241179 +34.068930-118.445127 1796587200.000000000"
        );
    }

    #[test]
    fn osmand_parameters_give_the_same_report_and_the_token() {
        let pairs = form_pairs("id=777&lat=51.5007&lon=-0.1246&timestamp=1796500000&hdop=1.2&altitude=15&speed=0&token=t%2B1");
        let (report, token) = osmand_params(&pairs).unwrap();
        assert_eq!(
            report.iamat_line(),
            "IAMAT 777 +51.500700-0.124600 1796500000.000000000"
        );
        assert_eq!(token.as_deref(), Some("t+1"));
        for (query, says) in [
            ("lat=1&lon=2&timestamp=3", "no \"id\""),
            ("id=a&lon=2&timestamp=3", "no \"lat\""),
            ("id=a&lat=x&lon=2&timestamp=3", "not a number"),
            ("id=a&lat=1&lon=2", "no \"timestamp\""),
            ("id=a&lat=1&lon=2&timestamp=soon", "neither UNIX seconds"),
            ("id=a b&lat=1&lon=2&timestamp=3", "white space"),
        ] {
            let why = osmand_params(&form_pairs(query)).unwrap_err();
            assert!(why.contains(says), "{query}: {why}");
        }
    }

    #[test]
    fn timestamps_in_seconds_milliseconds_and_iso_8601() {
        let rows = [
            ("1796500000", (1_796_500_000, 0)),
            ("1796500000.25", (1_796_500_000, 250_000_000)),
            ("1796500000123", (1_796_500_000, 123_000_000)),
            ("1970-01-01T00:00:00Z", (0, 0)),
            ("2026-12-06T20:00:00.000Z", (1_796_587_200, 0)),
            ("2026-12-06 20:00:00", (1_796_587_200, 0)),
            ("2026-12-06T21:30:00+01:30", (1_796_587_200, 0)),
            ("2026-12-06T15:00:00-0500", (1_796_587_200, 0)),
            (
                "2024-02-29T12:00:00.123456789Z",
                (1_709_208_000, 123_456_789),
            ),
        ];
        for (text, expected) in rows {
            assert_eq!(timestamp(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "-5",
            "1e9",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T20:00Z",
            "2026-12-06T20:00:00.Z",
            "2026-12-06T20:00:00+25:00",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn degrees_at_the_edges_are_written_as_the_formatter_writes_them() {
        for x in [
            0.0,
            -0.0,
            1e-7,
            -1e-7,
            5e-7,
            -5e-7,
            90.0,
            -90.0,
            180.0,
            -180.0,
            34.068930,
            -118.445127,
            0.0000015,
            2.5e-6,
        ] {
            let mut ours = String::new();
            push_degrees(&mut ours, x);
            assert_eq!(ours, format!("{x:+.6}"), "{x:e}");
        }
    }

    #[test]
    fn a_report_that_is_no_valid_iamat_gives_none() {
        let good = Report {
            client_id: "jane/phone".to_owned(),
            lat: 48.85833,
            lon: 2.29513,
            secs: 1_796_500_000,
            nanos: 0,
        };
        let line = good.iamat_line();
        assert_eq!(
            line,
            "IAMAT jane/phone +48.858330+2.295130 1796500000.000000000"
        );
        let iamat = good.iamat(&line).expect("a valid report");
        assert_eq!(
            (iamat.client_id, iamat.location, iamat.client_time),
            ("jane/phone", "+48.858330+2.295130", "1796500000.000000000")
        );
        let bad = [
            Report {
                client_id: "jane phone".to_owned(),
                ..good.clone()
            },
            Report {
                client_id: String::new(),
                ..good.clone()
            },
            Report {
                client_id: "x".repeat(MAX_CLIENT_ID + 1),
                ..good.clone()
            },
            Report {
                lat: 90.5,
                ..good.clone()
            },
            Report {
                lon: -180.5,
                ..good.clone()
            },
            Report {
                lat: f64::NAN,
                ..good.clone()
            },
        ];
        for report in bad {
            let line = report.iamat_line();
            assert_eq!(report.iamat(&line), None, "{report:?}");
            assert!(
                !matches!(
                    parse_line(line.as_bytes()),
                    Parsed::Command(Command::IAmAt(_))
                ),
                "parsing agrees: {line}"
            );
        }
        // Parsing would read the first nine digits of its ten: another time.
        let past_a_second = Report {
            nanos: 1_000_000_000,
            ..good.clone()
        };
        assert_eq!(past_a_second.iamat(&past_a_second.iamat_line()), None);
    }

    /// Any JSON value: numbers of each kind, strings that need escapes,
    /// and arrays and objects of them.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |v| v.is_finite())
                .prop_map(Value::from),
            "[a-z\"\\\n\u{e9}\u{1F600}]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_report_is_a_valid_iamat_with_its_fields(
            id in "[!-~]{1,255}",
            lat in -90.0f64..=90.0,
            lon in -180.0f64..=180.0,
            secs in 0u64..10_000_000_000,
            nanos in 0u32..1_000_000_000,
        ) {
            let report = Report { client_id: id.clone(), lat, lon, secs, nanos };
            let line = report.iamat_line();
            let Parsed::Command(Command::IAmAt(iamat)) = parse_line(line.as_bytes()) else {
                panic!("not an IAMAT: {line}");
            };
            prop_assert_eq!(iamat.client_id, id.as_str());
            prop_assert_eq!(iamat.time.secs, secs);
            prop_assert_eq!(iamat.time.nanos, nanos);
            // What the shell stores, without parsing the line again.
            prop_assert_eq!(report.iamat(&line), Some(iamat));
        }

        #[test]
        fn a_scalar_reads_any_json_value_as_a_value_does(value in json_value()) {
            let text = value.to_string();
            let scalar: Scalar = serde_json::from_str(&text).unwrap();
            let tree: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(scalar.as_f64().map(f64::to_bits), tree.as_f64().map(f64::to_bits));
            prop_assert_eq!(scalar.as_u64(), tree.as_u64());
            let text = scalar.into_text();
            prop_assert_eq!(text.as_deref(), tree.as_str());
        }

        #[test]
        fn degrees_are_written_as_the_formatter_writes_them(
            degrees in -180.0f64..=180.0,
            micro in -180_000_000i64..=180_000_000,
        ) {
            // Any value, and the ties and near-ties of every micro-degree,
            // where a product's rounding could pick the other neighbour.
            let tie = (micro as f64 + 0.5) / 1e6;
            for x in [degrees, tie, f64::from_bits(tie.to_bits() + 1), f64::from_bits(tie.to_bits() - 1), micro as f64 / 1e6] {
                let mut ours = String::new();
                push_degrees(&mut ours, x);
                prop_assert_eq!(ours, format!("{x:+.6}"));
            }
        }

        #[test]
        fn iso_times_agree_with_seconds(secs in 0i64..8_000_000_000) {
            // The date by counting whole years then months from 1970: a
            // walk independent of `days_from_civil`.
            let mut days = secs.div_euclid(86_400);
            let mut y = 1970;
            loop {
                let len = if days_in_month(y, 2) == 29 { 366 } else { 365 };
                if days < len { break; }
                days -= len;
                y += 1;
            }
            let mut m = 1;
            while days >= days_in_month(y, m) {
                days -= days_in_month(y, m);
                m += 1;
            }
            let d = days + 1;
            let rem = secs.rem_euclid(86_400);
            let text = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60);
            prop_assert_eq!(timestamp(&text), Ok((secs as u64, 0)));
        }
    }
}
