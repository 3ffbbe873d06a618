//! A Places answer rendered once into the exact bytes of a WHATSAT reply, with the
//! offsets where each result starts and ends, so that a reply for any max-results is
//! a few copies: no JSON tree, no printing, no allocation per result.
//! It owns the reply format (see PROTOCOL.md, WHATSAT); `places` owns the answers.
//! It must stay pure: no I/O, no clock, no runtime types.

use serde_json::{json, Map, Value};

use crate::places::geo::Disc;

/// How the results array opens in serde_json's pretty print of an answer object:
/// a key at depth 1 is the only line that starts with exactly two spaces and a quote.
const EMPTY_RESULTS: &[u8] = b"\n  \"results\": []";

/// What separates and closes results at depth 2 in the pretty print.
const RESULT_INDENT: &[u8] = b"\n    ";

/// Closes a non-empty results array; its last byte alone closes an empty one.
const CLOSE_RESULTS: &[u8] = b"\n  ]";

/// A Google-shaped Nearby Search answer (legacy JSON), success or failure.
pub type PlacesAnswer = serde_json::Value;

/// Builds the Google-shaped error answer: empty results, the status, an error_message.
pub fn error_answer(status: &str, message: &str) -> PlacesAnswer {
    json!({
        "error_message": message,
        "html_attributions": [],
        "results": [],
        "status": status,
    })
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
            error_answer(
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

/// The original WHATSAT rendering, kept as the test oracle of the rendered replies.
/// Appends a whole WHATSAT reply to `out`: the AT line, '\n', the answer with results cut to
/// `max_results`, pretty-printed, newline runs collapsed, trailing newlines removed, then "\n\n".
#[cfg(test)]
pub(crate) fn write_nearby_reply(
    out: &mut Vec<u8>,
    at_line: &str,
    answer: &PlacesAnswer,
    max_results: usize,
) {
    // A stray line end on the stored AT line would put an empty line inside the reply.
    out.extend_from_slice(at_line.trim_end_matches(['\r', '\n']).as_bytes());
    out.push(b'\n');
    let pretty = match cut_results(answer, max_results) {
        Some(cut) => pretty_json(&cut),
        None => pretty_json(answer),
    };
    out.extend_from_slice(collapse_newlines(&pretty).as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A shallow copy of `answer` with only the first `max` results, or `None` if no cut is needed.
/// Only the kept results are cloned, so the cached answer stays cheap to reuse and untouched.
#[cfg(test)]
fn cut_results(answer: &PlacesAnswer, max: usize) -> Option<Value> {
    let fields = answer.as_object()?;
    let results = fields.get("results")?.as_array()?;
    if results.len() <= max {
        return None;
    }
    let cut: Map<String, Value> = fields
        .iter()
        .map(|(key, value)| match key.as_str() {
            "results" => (key.clone(), Value::Array(results[..max].to_vec())),
            _ => (key.clone(), value.clone()),
        })
        .collect();
    Some(Value::Object(cut))
}

/// Pretty JSON with serde_json's printer (2-space indent).
#[cfg(test)]
fn pretty_json(value: &Value) -> String {
    // Serializing a `Value` cannot fail (keys are strings); fall back to compact just in case.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Collapses every run of two or more '\n' into one and removes trailing newlines.
#[cfg(test)]
pub(crate) fn collapse_newlines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == '\n' && out.ends_with('\n')) {
            out.push(c);
        }
    }
    let kept = out.trim_end_matches('\n').len();
    out.truncate(kept);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    pub(crate) const AT: &str =
        "AT Goloman +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";

    /// A reply as the oracle writes it; also used by `answer`'s tests.
    pub(crate) fn oracle(answer: &Value, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_nearby_reply(&mut out, AT, answer, max);
        out
    }

    /// A reply as servers write it; also used by `answer`'s tests.
    pub(crate) fn rendered(answer: &RenderedAnswer, max: usize, within: Option<&Disc>) -> Vec<u8> {
        let mut out = Vec::new();
        write_reply(&mut out, AT, answer, max, within);
        out
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

    }
}
