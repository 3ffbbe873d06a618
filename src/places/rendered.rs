//! A Places answer rendered once into the exact bytes of a WHATSAT reply, with the
//! offsets where each result starts and ends, so that a reply for any max-results is
//! a few copies: no JSON tree, no printing, no allocation per result.
//! It owns the reply format (see PROTOCOL.md, WHATSAT); `places` owns the answers.
//! It must stay pure: no I/O, no clock, no runtime types.

use serde_json::{Map, Value};

use crate::places::answer::distance_m;

/// How the results array opens in serde_json's pretty print of an answer object:
/// a key at depth 1 is the only line that starts with exactly two spaces and a quote.
const EMPTY_RESULTS: &[u8] = b"\n  \"results\": []";

/// What separates and closes results at depth 2 in the pretty print.
const RESULT_INDENT: &[u8] = b"\n    ";

/// Closes a non-empty results array; its last byte alone closes an empty one.
const CLOSE_RESULTS: &[u8] = b"\n  ]";

/// A disc on the earth: the client's own search area, used to keep only the results
/// inside it when the upstream was asked about a larger, snapped area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disc {
    /// Latitude of the centre, degrees.
    pub lat: f64,
    /// Longitude of the centre, degrees.
    pub lon: f64,
    /// Radius, metres.
    pub radius_m: f64,
}

impl Disc {
    /// Whether the point (degrees) lies in the disc, edge included.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        distance_m(self.lat, self.lon, lat, lon) <= self.radius_m
    }
}

/// An answer printed as a WHATSAT reply prints it, ready to be cut.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedAnswer {
    /// The answer with every result, pretty-printed: the bytes every reply copies from.
    bytes: Box<[u8]>,
    /// Where the results sit in `bytes`; `None` when there is no results array to cut
    /// (the answer is then always sent whole, as before).
    results: Option<ResultsLayout>,
}

/// Offsets into `RenderedAnswer::bytes` around and between the results.
#[derive(Debug, Clone, PartialEq)]
struct ResultsLayout {
    /// End of `"results": [`: everything before is copied as is.
    open_end: usize,
    /// Each result as `\n    {...}` (start, end); consecutive ones are one ',' apart.
    spans: Box<[(usize, usize)]>,
    /// Each result's `geometry.location`, for replies filtered by a disc.
    places: Box<[Option<(f64, f64)>]>,
    /// Start of `\n  ]` and the rest of the answer after the results.
    close_start: usize,
}

impl RenderedAnswer {
    /// Renders `answer` once. Any JSON value is accepted; only an object with a
    /// `results` array can be cut, anything else is always printed whole.
    pub fn render(answer: &Value) -> RenderedAnswer {
        match answer
            .as_object()
            .and_then(|fields| Some((fields, fields.get("results")?.as_array()?)))
            .and_then(|(fields, results)| layout(fields, results))
        {
            Some((bytes, results)) => RenderedAnswer {
                bytes: bytes.into_boxed_slice(),
                results: Some(results),
            },
            None => RenderedAnswer {
                bytes: pretty(answer).into_boxed_slice(),
                results: None,
            },
        }
    }

    /// Number of results in the answer.
    pub fn result_count(&self) -> usize {
        self.results.as_ref().map_or(0, |r| r.spans.len())
    }

    /// Bytes held, for the cache's byte bound: the text plus the offsets per result.
    pub fn weight(&self) -> usize {
        let per_result =
            std::mem::size_of::<(usize, usize)>() + std::mem::size_of::<Option<(f64, f64)>>();
        std::mem::size_of::<Self>() + self.bytes.len() + self.result_count() * per_result
    }

    /// Appends the JSON of a reply: the answer with only the first `max_results`
    /// results (of those inside `within`, when given), exactly as PROTOCOL.md prints it.
    pub fn write_json(&self, out: &mut Vec<u8>, max_results: usize, within: Option<&Disc>) {
        let Some(r) = &self.results else {
            out.extend_from_slice(&self.bytes);
            return;
        };
        let bytes = &self.bytes[..];
        // The closing "]" alone (an empty array) is the last byte of CLOSE_RESULTS.
        let empty_close = r.close_start + CLOSE_RESULTS.len() - 1;
        let Some(disc) = within else {
            // The common case: a prefix of the results, one copy up to the cut.
            match max_results.min(r.spans.len()) {
                0 => {
                    out.extend_from_slice(&bytes[..r.open_end]);
                    out.extend_from_slice(&bytes[empty_close..]);
                }
                k => {
                    out.extend_from_slice(&bytes[..r.spans[k - 1].1]);
                    out.extend_from_slice(&bytes[r.close_start..]);
                }
            }
            return;
        };
        out.extend_from_slice(&bytes[..r.open_end]);
        let inside = r
            .spans
            .iter()
            .zip(r.places.iter())
            // A result that cannot be placed cannot be shown to be inside: left out.
            .filter(|(_, place)| place.is_some_and(|(lat, lng)| disc.contains(lat, lng)))
            .take(max_results);
        let mut kept = 0usize;
        for (&(start, end), _) in inside {
            if kept > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&bytes[start..end]);
            kept += 1;
        }
        let close = if kept == 0 {
            empty_close
        } else {
            r.close_start
        };
        out.extend_from_slice(&bytes[close..]);
    }

    /// An upper bound on what `write_json` appends (exact when `within` is `None`).
    pub fn json_len_bound(&self, max_results: usize, within: Option<&Disc>) -> usize {
        match (&self.results, within) {
            (Some(r), None) => match max_results.min(r.spans.len()) {
                0 => self.bytes.len() - (r.close_start + CLOSE_RESULTS.len() - 1 - r.open_end),
                k => self.bytes.len() - (r.close_start - r.spans[k - 1].1),
            },
            _ => self.bytes.len(),
        }
    }

    /// The answer as a JSON value, cut and filtered like `write_json` (for callers that
    /// want a tree, not the reply path: it parses the bytes again).
    pub fn to_value(&self, max_results: usize, within: Option<&Disc>) -> Value {
        let mut json = Vec::with_capacity(self.bytes.len());
        self.write_json(&mut json, max_results, within);
        serde_json::from_slice(&json).unwrap_or_else(|e| {
            crate::places::answer::error_answer(
                "UNKNOWN_ERROR",
                &format!("rendered places answer is not JSON: {e}"),
            )
        })
    }
}

/// Appends a whole WHATSAT reply to `out`: the AT line, '\n', the answer cut to
/// `max_results` (of the results inside `within`, if given), then "\n\n".
#[cfg(test)]
pub(crate) fn write_reply(
    out: &mut Vec<u8>,
    at_line: &str,
    answer: &RenderedAnswer,
    max_results: usize,
    within: Option<&Disc>,
) {
    // A stray line end on the stored AT line would put an empty line inside the reply.
    out.extend_from_slice(at_line.trim_end_matches(['\r', '\n']).as_bytes());
    out.push(b'\n');
    write_reply_json(out, answer, max_results, within);
}

/// Appends the part of a WHATSAT reply after the AT line and its '\n': the cut
/// answer, then the empty line that ends the reply.
pub(crate) fn write_reply_json(
    out: &mut Vec<u8>,
    answer: &RenderedAnswer,
    max_results: usize,
    within: Option<&Disc>,
) {
    out.reserve(answer.json_len_bound(max_results, within) + 2);
    answer.write_json(out, max_results, within);
    out.extend_from_slice(b"\n\n");
}

/// serde_json's pretty print (2-space indent). It never has an empty line or a trailing
/// newline: every '\n' it writes is followed by indentation or a closing bracket, and a
/// line end inside a string is escaped. So PROTOCOL.md's newline rules hold as printed.
fn pretty(value: &Value) -> Vec<u8> {
    // Printing a `Value` cannot fail (its keys are strings); compact is the fallback.
    serde_json::to_vec_pretty(value).unwrap_or_else(|_| value.to_string().into_bytes())
}

/// The answer printed with its results spliced in one by one, and where they are;
/// `None` if the printed skeleton does not have the expected shape.
fn layout(fields: &Map<String, Value>, results: &[Value]) -> Option<(Vec<u8>, ResultsLayout)> {
    // The answer with an empty results array, in the answer's own key order: exactly
    // what the reply for max-results 0 has always been.
    let skeleton: Map<String, Value> = fields
        .iter()
        .map(|(key, value)| match key.as_str() {
            "results" => (key.clone(), Value::Array(Vec::new())),
            _ => (key.clone(), value.clone()),
        })
        .collect();
    let skeleton = pretty(&Value::Object(skeleton));
    let at = skeleton
        .windows(EMPTY_RESULTS.len())
        .position(|w| w == EMPTY_RESULTS)?;
    // Up to and including "[", then "]" and what follows.
    let open_end = at + EMPTY_RESULTS.len() - 1;
    let (head, tail) = (&skeleton[..open_end], &skeleton[open_end + 1..]);

    let mut bytes = Vec::with_capacity(skeleton.len() + results.len() * 1024);
    bytes.extend_from_slice(head);
    let mut spans = Vec::with_capacity(results.len());
    for (i, result) in results.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        let start = bytes.len();
        // A result is printed at depth 2: serde_json's own print of it with every line
        // indented four more spaces (strings hold no raw '\n', so this is exact).
        for line in pretty(result).split(|&b| b == b'\n') {
            bytes.extend_from_slice(RESULT_INDENT);
            bytes.extend_from_slice(line);
        }
        spans.push((start, bytes.len()));
    }
    let close_start = bytes.len();
    bytes.extend_from_slice(CLOSE_RESULTS);
    bytes.extend_from_slice(tail);
    let places = results.iter().map(place).collect();
    Some((
        bytes,
        ResultsLayout {
            open_end,
            spans: spans.into_boxed_slice(),
            places,
            close_start,
        },
    ))
}

/// A result's `geometry.location` as (lat, lng), when it has one.
fn place(result: &Value) -> Option<(f64, f64)> {
    let location = result.get("geometry")?.get("location")?;
    Some((
        location.get("lat")?.as_f64()?,
        location.get("lng")?.as_f64()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::answer::{error_answer, write_nearby_reply, NearbyQuery, OfflinePlaces};
    use proptest::prelude::*;
    use serde_json::json;

    const AT: &str = "AT Goloman +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";

    fn oracle(answer: &Value, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_nearby_reply(&mut out, AT, answer, max);
        out
    }

    fn rendered(answer: &RenderedAnswer, max: usize, within: Option<&Disc>) -> Vec<u8> {
        let mut out = Vec::new();
        write_reply(&mut out, AT, answer, max, within);
        out
    }

    fn ucla(radius_m: f64) -> Value {
        OfflinePlaces.answer(NearbyQuery {
            lat: 34.068930,
            lon: -118.445127,
            radius_m,
        })
    }

    #[test]
    fn rendered_reply_is_the_old_reply_for_every_max_results() {
        let answer = ucla(10_000.0);
        let once = RenderedAnswer::render(&answer);
        assert_eq!(once.result_count(), 20);
        for max in 0..=25 {
            let (got, want) = (rendered(&once, max, None), oracle(&answer, max));
            assert_eq!(String::from_utf8(got), String::from_utf8(want), "max {max}");
        }
        assert_eq!(
            rendered(&once, usize::MAX, None),
            oracle(&answer, usize::MAX)
        );
    }

    #[test]
    fn error_and_empty_answers_render_as_before() {
        let answers = [
            error_answer("OVER_QUERY_LIMIT", "You have exceeded your quota."),
            json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"}),
            json!({"results": [1, "two", {"three": [3]}, [], {}]}),
            json!({"a": {"results": [1, 2]}, "results": [{"x": "\n\n"}], "z": "  \"results\": []"}),
            json!("plain"),
            json!({"status": "OK"}),
            json!({"results": 3}),
            json!([1, [2]]),
            json!(null),
        ];
        for answer in answers {
            let once = RenderedAnswer::render(&answer);
            for max in [0, 1, 2, 5, 20] {
                assert_eq!(
                    String::from_utf8(rendered(&once, max, None)).unwrap(),
                    String::from_utf8(oracle(&answer, max)).unwrap(),
                    "{answer} max {max}"
                );
            }
        }
    }

    #[test]
    fn results_outside_the_disc_are_left_out_in_upstream_order() {
        // The offline results lie at growing fractions of the radius: in a disc of
        // half the radius around the same centre, only the first ones are.
        let answer = ucla(10_000.0);
        let disc = Disc {
            lat: 34.068930,
            lon: -118.445127,
            radius_m: 5_000.0,
        };
        let all = answer["results"].as_array().unwrap();
        let inside: Vec<Value> = all
            .iter()
            .filter(|r| {
                let loc = &r["geometry"]["location"];
                disc.contains(loc["lat"].as_f64().unwrap(), loc["lng"].as_f64().unwrap())
            })
            .cloned()
            .collect();
        assert!(!inside.is_empty() && inside.len() < all.len());
        let once = RenderedAnswer::render(&answer);
        for max in [0, 1, 3, 20] {
            let mut expected = answer.clone();
            let kept: Vec<Value> = inside.iter().take(max).cloned().collect();
            expected["results"] = Value::Array(kept);
            assert_eq!(
                String::from_utf8(rendered(&once, max, Some(&disc))).unwrap(),
                String::from_utf8(oracle(&expected, usize::MAX)).unwrap(),
                "max {max}"
            );
        }
        // Nothing inside: the empty array, printed as "[]".
        let far = Disc { lat: 0.0, ..disc };
        let mut empty = answer.clone();
        empty["results"] = json!([]);
        assert_eq!(rendered(&once, 20, Some(&far)), oracle(&empty, 20));
        // Results without coordinates cannot be shown inside: left out.
        let odd = json!({"results": [{"name": "nowhere"}], "status": "OK"});
        let once = RenderedAnswer::render(&odd);
        assert_eq!(once.to_value(20, Some(&disc))["results"], json!([]));
        assert_eq!(once.to_value(20, None), odd);
    }

    #[test]
    fn weight_counts_the_bytes_kept() {
        let once = RenderedAnswer::render(&ucla(10_000.0));
        assert!(once.weight() > oracle(&ucla(10_000.0), 20).len() - AT.len());
    }

    /// Any JSON value, with strings that hold newlines, quotes and the marker text.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e9..1e9f64).prop_map(|f| json!(f)),
            "[a-z\n\" \\\\{}\\[\\]é]{0,12}".prop_map(Value::String),
            Just(json!("\n  \"results\": []")),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{0,8}|results", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An answer object: a results array of any values among other fields.
    fn answer_object() -> impl Strategy<Value = Value> {
        (
            proptest::collection::btree_map("[a-z_]{1,10}", json_value(), 0..4),
            proptest::collection::vec(json_value(), 0..8),
        )
            .prop_map(|(fields, results)| {
                let mut map: Map<String, Value> = fields.into_iter().collect();
                map.insert("results".to_owned(), Value::Array(results));
                Value::Object(map)
            })
    }

    proptest! {
        #[test]
        fn rendered_reply_is_byte_identical_to_the_oracle(
            answer in prop_oneof![answer_object(), json_value()],
            max in 0usize..12,
        ) {
            let once = RenderedAnswer::render(&answer);
            let reply = rendered(&once, max, None);
            prop_assert_eq!(reply.len(), AT.len() + 1 + once.json_len_bound(max, None) + 2);
            prop_assert_eq!(reply, oracle(&answer, max));
        }

        #[test]
        fn rendered_offline_reply_is_byte_identical_to_the_oracle(
            lat in -90.0..=90.0f64,
            lon in -180.0..=180.0f64,
            radius in prop_oneof![Just(0.0), 1e-6..=50_000.0f64],
            max in 0usize..=21,
        ) {
            let answer = OfflinePlaces.answer(NearbyQuery { lat, lon, radius_m: radius });
            let once = RenderedAnswer::render(&answer);
            prop_assert_eq!(rendered(&once, max, None), oracle(&answer, max));
        }
    }
}
