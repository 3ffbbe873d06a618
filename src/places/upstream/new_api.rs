//! Nearby Search (New) as values: the request body herd sends, and what an
//! answer comes to in the legacy JSON that WHATSAT replies carry (places
//! translated field by field, Google's errors turned into legacy statuses).
//!
//! Separate, and pure (in CI's source scan), so that the translation is one
//! function tested as a table: no socket, no runtime, no clock. The field
//! mask is `pure::places_fields`; the HTTP exchange is `call.rs`.
//!
//! Google's reference: `POST /v1/places:searchNearby` answers
//! `{"places": [Place, ...]}`, or `{}` when nothing is found; errors are
//! `{"error": {"code", "message", "status", "details": [...]}}` with a 4xx
//! or 5xx status.

use serde_json::{json, Map, Value};

use super::classify::Verdict;
use crate::places::answer::error_answer;
use crate::places::key::QueryKey;

/// Path of Nearby Search (New), after the base URL's own path prefix.
pub const SEARCH_NEARBY_PATH: &str = "/v1/places:searchNearby";

/// Results asked for: Google's most, so that one cached answer serves every
/// WHATSAT bound (0 to 20).
pub const MAX_RESULT_COUNT: u32 = 20;

/// The JSON body of a search around the key's centre and radius.
pub(super) fn request_body(key: QueryKey) -> Vec<u8> {
    let query = key.query();
    json!({
        "maxResultCount": MAX_RESULT_COUNT,
        "locationRestriction": {
            "circle": {
                "center": {"latitude": query.lat, "longitude": query.lon},
                "radius": query.radius_m,
            }
        }
    })
    .to_string()
    .into_bytes()
}

/// What one answer of Nearby Search (New) comes to: its HTTP status and body
/// (already bounded in size). `api_key` is scrubbed from any message.
pub(super) fn classify(http_status: u16, body: &[u8], api_key: Option<&str>) -> Verdict {
    if !(200..300).contains(&http_status) {
        let (status, message) = refusal(http_status, body);
        let message = scrub(message, api_key);
        return Verdict::Refused {
            answer: error_answer(status, &message),
            status: status.to_owned(),
        };
    }
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Malformed("places upstream sent a body that is not JSON".to_owned());
    };
    match translate(&answer) {
        Ok((answer, dropped)) => Verdict::Cacheable { answer, dropped },
        Err(reason) => Verdict::Malformed(reason.to_owned()),
    }
}

/// A Nearby Search (New) answer in the legacy JSON, and how many places were
/// left out for having no usable location; or why it is no answer.
pub fn translate(answer: &Value) -> Result<(Value, usize), &'static str> {
    let Some(fields) = answer.as_object() else {
        return Err("places upstream answer is not a JSON object");
    };
    let places: &[Value] = match fields.get("places") {
        None => &[],
        Some(Value::Array(places)) => places,
        Some(_) => return Err("places upstream answer has a \"places\" that is not a list"),
    };
    let results: Vec<Value> = places
        .iter()
        .filter_map(|place| legacy_place(place.as_object()?))
        .collect();
    let dropped = places.len() - results.len();
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    Ok((
        json!({"html_attributions": [], "results": results, "status": status}),
        dropped,
    ))
}

/// One Place as a legacy result, or `None` without a location (a result
/// nobody can place on a map, and replies filter results by distance).
fn legacy_place(place: &Map<String, Value>) -> Option<Value> {
    let location = lat_lng(place.get("location")?)?;
    let mut out = Map::new();
    let mut geometry = Map::new();
    geometry.insert("location".into(), location);
    if let Some(viewport) = place.get("viewport") {
        let corners = (
            viewport.get("high").and_then(lat_lng),
            viewport.get("low").and_then(lat_lng),
        );
        if let (Some(northeast), Some(southwest)) = corners {
            geometry.insert(
                "viewport".into(),
                json!({"northeast": northeast, "southwest": southwest}),
            );
        }
    }
    out.insert("geometry".into(), Value::Object(geometry));
    let text = |name: &str| place.get(name).and_then(Value::as_str);
    let mut put = |legacy: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(legacy.into(), value);
        }
    };
    put(
        "name",
        place
            .get("displayName")
            .and_then(|d| d.get("text"))
            .and_then(Value::as_str)
            .map(Value::from),
    );
    put("place_id", text("id").map(Value::from));
    put(
        "types",
        place
            .get("types")
            .filter(|t| t.as_array().is_some_and(|t| t.iter().all(Value::is_string)))
            .cloned(),
    );
    put(
        "vicinity",
        text("shortFormattedAddress")
            .or_else(|| text("formattedAddress"))
            .map(Value::from),
    );
    put("business_status", text("businessStatus").map(Value::from));
    put(
        "rating",
        place.get("rating").filter(|r| r.is_number()).cloned(),
    );
    put(
        "user_ratings_total",
        place.get("userRatingCount").filter(|n| n.is_u64()).cloned(),
    );
    put(
        "price_level",
        text("priceLevel").and_then(price_level).map(Value::from),
    );
    put(
        "opening_hours",
        place
            .get("currentOpeningHours")
            .and_then(|h| h.get("openNow"))
            .and_then(Value::as_bool)
            .map(|open| json!({"open_now": open})),
    );
    put(
        "icon_mask_base_uri",
        text("iconMaskBaseUri").map(Value::from),
    );
    put(
        "icon_background_color",
        text("iconBackgroundColor").map(Value::from),
    );
    put("plus_code", place.get("plusCode").and_then(plus_code));
    Some(Value::Object(out))
}

/// `{"latitude", "longitude"}` as `{"lat", "lng"}`, both numbers; the numbers
/// are kept as Google wrote them.
fn lat_lng(point: &Value) -> Option<Value> {
    let lat = point.get("latitude").filter(|v| v.is_number())?;
    let lng = point.get("longitude").filter(|v| v.is_number())?;
    Some(json!({"lat": lat, "lng": lng}))
}

/// The legacy `price_level` (0 to 4) of a `PriceLevel` enum value; the
/// unspecified level has none.
fn price_level(level: &str) -> Option<u8> {
    match level {
        "PRICE_LEVEL_FREE" => Some(0),
        "PRICE_LEVEL_INEXPENSIVE" => Some(1),
        "PRICE_LEVEL_MODERATE" => Some(2),
        "PRICE_LEVEL_EXPENSIVE" => Some(3),
        "PRICE_LEVEL_VERY_EXPENSIVE" => Some(4),
        _ => None,
    }
}

/// `plusCode` as the legacy `plus_code`, when it has either code.
fn plus_code(code: &Value) -> Option<Value> {
    let mut out = Map::new();
    for (new, legacy) in [
        ("globalCode", "global_code"),
        ("compoundCode", "compound_code"),
    ] {
        if let Some(text) = code.get(new).and_then(Value::as_str) {
            out.insert(legacy.into(), text.into());
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The legacy status and the message of a Google error answer.
fn refusal(http_status: u16, body: &[u8]) -> (&'static str, String) {
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let field = |name: &str| {
        error
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let reasons: Vec<String> = error
        .as_ref()
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .map(|details| {
            details
                .iter()
                .filter_map(|d| d.get("reason").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let google_status = field("status");
    let status = match (google_status.as_deref(), http_status) {
        // How Google answers a key it does not know: 400, not 403.
        _ if reasons.iter().any(|r| r == "API_KEY_INVALID") => "REQUEST_DENIED",
        (Some("PERMISSION_DENIED" | "UNAUTHENTICATED"), _) | (None, 401 | 403) => "REQUEST_DENIED",
        (Some("RESOURCE_EXHAUSTED"), _) | (None, 429) => "OVER_QUERY_LIMIT",
        (Some("INVALID_ARGUMENT"), _) | (None, 400) => "INVALID_REQUEST",
        _ => "UNKNOWN_ERROR",
    };
    let message = match (field("message"), error.is_some()) {
        (Some(message), _) if !message.is_empty() => message,
        (_, true) => format!("places upstream answered HTTP {http_status}"),
        (_, false) => format!("places upstream answered HTTP {http_status} without a Google error"),
    };
    (status, message)
}

/// `message` with every occurrence of the API key replaced, so a key echoed
/// by anyone upstream never reaches a reply or a log.
fn scrub(message: String, api_key: Option<&str>) -> String {
    match api_key {
        Some(key) if !key.is_empty() && message.contains(key) => message.replace(key, "REDACTED"),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::answer::NearbyQuery;

    fn full_place() -> Value {
        json!({
            "id": "ChIJ-abc",
            "name": "places/ChIJ-abc",
            "displayName": {"text": "Kerckhoff Coffee", "languageCode": "en"},
            "location": {"latitude": 34.0705, "longitude": -118.4433},
            "viewport": {
                "low": {"latitude": 34.0691, "longitude": -118.4446},
                "high": {"latitude": 34.0718, "longitude": -118.4419}
            },
            "types": ["cafe", "food", "point_of_interest", "establishment"],
            "formattedAddress": "308 Westwood Plaza, Los Angeles, CA 90095, USA",
            "shortFormattedAddress": "308 Westwood Plaza, Los Angeles",
            "businessStatus": "OPERATIONAL",
            "iconMaskBaseUri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/cafe_pinlet",
            "iconBackgroundColor": "#FF9E67",
            "plusCode": {"globalCode": "8553338V+6M", "compoundCode": "338V+6M Los Angeles"},
            "rating": 4.4,
            "userRatingCount": 321,
            "priceLevel": "PRICE_LEVEL_INEXPENSIVE",
            "currentOpeningHours": {"openNow": true, "weekdayDescriptions": ["Monday: 7 AM"]},
            "googleMapsUri": "https://maps.google.com/?cid=1"
        })
    }

    fn one(place: Value) -> Value {
        let (answer, dropped) = translate(&json!({"places": [place]})).unwrap();
        assert_eq!(dropped, 0);
        answer["results"][0].clone()
    }

    #[test]
    fn every_field_of_a_new_place_becomes_its_legacy_field() {
        let legacy = one(full_place());
        let expected = json!({
            "name": "Kerckhoff Coffee",
            "place_id": "ChIJ-abc",
            "geometry": {
                "location": {"lat": 34.0705, "lng": -118.4433},
                "viewport": {
                    "northeast": {"lat": 34.0718, "lng": -118.4419},
                    "southwest": {"lat": 34.0691, "lng": -118.4446}
                }
            },
            "types": ["cafe", "food", "point_of_interest", "establishment"],
            "vicinity": "308 Westwood Plaza, Los Angeles",
            "business_status": "OPERATIONAL",
            "icon_mask_base_uri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/cafe_pinlet",
            "icon_background_color": "#FF9E67",
            "plus_code": {"global_code": "8553338V+6M", "compound_code": "338V+6M Los Angeles"},
            "rating": 4.4,
            "user_ratings_total": 321,
            "price_level": 1,
            "opening_hours": {"open_now": true}
        });
        assert_eq!(legacy, expected);
    }

    #[test]
    fn a_place_keeps_only_the_fields_google_sent() {
        let legacy = one(json!({"location": {"latitude": 1.5, "longitude": -2}}));
        assert_eq!(
            legacy,
            json!({"geometry": {"location": {"lat": 1.5, "lng": -2}}})
        );
    }

    #[test]
    fn the_translation_table() {
        // (New field and value, legacy field and value), one row per mapping.
        let rows = [
            (json!({"displayName": {"text": "A"}}), "name", json!("A")),
            (json!({"id": "x1"}), "place_id", json!("x1")),
            (json!({"types": ["park"]}), "types", json!(["park"])),
            (
                json!({"shortFormattedAddress": "1 Short St"}),
                "vicinity",
                json!("1 Short St"),
            ),
            (
                json!({"formattedAddress": "1 Long St, Town, Land"}),
                "vicinity",
                json!("1 Long St, Town, Land"),
            ),
            (
                json!({"businessStatus": "CLOSED_TEMPORARILY"}),
                "business_status",
                json!("CLOSED_TEMPORARILY"),
            ),
            (json!({"rating": 3}), "rating", json!(3)),
            (
                json!({"userRatingCount": 12}),
                "user_ratings_total",
                json!(12),
            ),
            (
                json!({"priceLevel": "PRICE_LEVEL_FREE"}),
                "price_level",
                json!(0),
            ),
            (
                json!({"priceLevel": "PRICE_LEVEL_MODERATE"}),
                "price_level",
                json!(2),
            ),
            (
                json!({"priceLevel": "PRICE_LEVEL_EXPENSIVE"}),
                "price_level",
                json!(3),
            ),
            (
                json!({"priceLevel": "PRICE_LEVEL_VERY_EXPENSIVE"}),
                "price_level",
                json!(4),
            ),
            (
                json!({"currentOpeningHours": {"openNow": false}}),
                "opening_hours",
                json!({"open_now": false}),
            ),
            (
                json!({"iconMaskBaseUri": "https://i/x"}),
                "icon_mask_base_uri",
                json!("https://i/x"),
            ),
            (
                json!({"iconBackgroundColor": "#7B9EB0"}),
                "icon_background_color",
                json!("#7B9EB0"),
            ),
            (
                json!({"plusCode": {"globalCode": "G"}}),
                "plus_code",
                json!({"global_code": "G"}),
            ),
        ];
        for (new, field, expected) in rows {
            let mut place = new.clone();
            place["location"] = json!({"latitude": 0, "longitude": 0});
            assert_eq!(one(place)[field], expected, "{new}");
        }
    }

    #[test]
    fn what_cannot_be_translated_is_left_out() {
        let rows = [
            json!({"priceLevel": "PRICE_LEVEL_UNSPECIFIED"}),
            json!({"priceLevel": 2}),
            json!({"rating": "high"}),
            json!({"userRatingCount": -1}),
            json!({"types": "cafe"}),
            json!({"types": [1]}),
            json!({"currentOpeningHours": {}}),
            json!({"plusCode": {}}),
            json!({"displayName": "no text object"}),
            json!({"viewport": {"low": {"latitude": 1, "longitude": 1}}}),
        ];
        for new in rows {
            let mut place = new.clone();
            place["location"] = json!({"latitude": 0, "longitude": 0});
            let legacy = one(place);
            assert_eq!(
                legacy,
                json!({"geometry": {"location": {"lat": 0, "lng": 0}}}),
                "{new}"
            );
        }
    }

    #[test]
    fn places_without_a_location_are_dropped_and_counted() {
        let answer = json!({"places": [
            full_place(),
            {"id": "no-location", "displayName": {"text": "Nowhere"}},
            {"id": "bad", "location": {"latitude": "1", "longitude": 2}},
            "not a place",
        ]});
        let (legacy, dropped) = translate(&answer).unwrap();
        assert_eq!(dropped, 3);
        assert_eq!(legacy["status"], "OK");
        assert_eq!(legacy["results"].as_array().unwrap().len(), 1);
        let (none_left, dropped) = translate(&json!({"places": [{"id": "no-location"}]})).unwrap();
        assert_eq!(dropped, 1);
        assert_eq!(none_left["status"], "ZERO_RESULTS");
    }

    #[test]
    fn an_empty_answer_is_zero_results_with_the_legacy_keys() {
        let (legacy, dropped) = translate(&json!({})).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(
            legacy,
            json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
        );
        assert_eq!(translate(&json!({"places": []})).unwrap().0, legacy);
    }

    #[test]
    fn answers_that_are_no_answer_are_malformed() {
        assert!(translate(&json!([1])).is_err());
        assert!(translate(&json!({"places": {}})).is_err());
        for body in [&b"<html>"[..], b"", b"{\"places\": 3}", b"[]"] {
            assert!(
                matches!(classify(200, body, None), Verdict::Malformed(_)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_good_answer_is_cacheable() {
        let body = json!({"places": [full_place()]}).to_string();
        let Verdict::Cacheable { answer, dropped } = classify(200, body.as_bytes(), None) else {
            panic!("cacheable")
        };
        assert_eq!((answer["status"].as_str(), dropped), (Some("OK"), 0));
        assert!(matches!(
            classify(200, b"{}", None),
            Verdict::Cacheable { dropped: 0, .. }
        ));
    }

    fn google_error(code: u16, status: &str, message: &str, reason: Option<&str>) -> Vec<u8> {
        let mut error = json!({"error": {"code": code, "message": message, "status": status}});
        if let Some(reason) = reason {
            error["error"]["details"] = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "places.googleapis.com"}
            }]);
        }
        error.to_string().into_bytes()
    }

    fn refused(code: u16, body: &[u8]) -> (String, String) {
        match classify(code, body, Some("AIzaSECRET")) {
            Verdict::Refused { answer, status } => {
                assert_eq!(answer["status"], status.as_str());
                assert_eq!(answer["results"], json!([]));
                (status, answer["error_message"].as_str().unwrap().to_owned())
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn each_google_error_becomes_its_legacy_status_with_googles_message() {
        let rows: [(u16, &str, Option<&str>, &str); 9] = [
            (403, "PERMISSION_DENIED", None, "REQUEST_DENIED"),
            (401, "UNAUTHENTICATED", None, "REQUEST_DENIED"),
            (
                400,
                "INVALID_ARGUMENT",
                Some("API_KEY_INVALID"),
                "REQUEST_DENIED",
            ),
            (429, "RESOURCE_EXHAUSTED", None, "OVER_QUERY_LIMIT"),
            (400, "INVALID_ARGUMENT", None, "INVALID_REQUEST"),
            (400, "FAILED_PRECONDITION", None, "UNKNOWN_ERROR"),
            (500, "INTERNAL", None, "UNKNOWN_ERROR"),
            (503, "UNAVAILABLE", None, "UNKNOWN_ERROR"),
            (504, "DEADLINE_EXCEEDED", None, "UNKNOWN_ERROR"),
        ];
        for (code, google, reason, legacy) in rows {
            let message = format!("{google} from Google");
            let body = google_error(code, google, &message, reason);
            assert_eq!(
                refused(code, &body),
                (legacy.to_owned(), message),
                "{code} {google} {reason:?}"
            );
        }
    }

    #[test]
    fn an_error_without_googles_body_is_judged_by_its_http_status() {
        for (code, legacy) in [
            (403, "REQUEST_DENIED"),
            (429, "OVER_QUERY_LIMIT"),
            (400, "INVALID_REQUEST"),
            (502, "UNKNOWN_ERROR"),
            (404, "UNKNOWN_ERROR"),
        ] {
            let (status, message) = refused(code, b"<html>Bad Gateway</html>");
            assert_eq!(status, legacy, "{code}");
            assert_eq!(
                message,
                format!("places upstream answered HTTP {code} without a Google error")
            );
        }
        let (_, message) = refused(500, br#"{"error": {"code": 500}}"#);
        assert_eq!(message, "places upstream answered HTTP 500");
    }

    #[test]
    fn the_key_never_reaches_an_error_message() {
        let body = google_error(
            400,
            "INVALID_ARGUMENT",
            "API key AIzaSECRET not valid. Please pass a valid API key.",
            Some("API_KEY_INVALID"),
        );
        let (status, message) = refused(400, &body);
        assert_eq!(status, "REQUEST_DENIED");
        assert_eq!(
            message,
            "API key REDACTED not valid. Please pass a valid API key."
        );
    }

    #[test]
    fn the_request_asks_for_twenty_places_in_the_keys_circle() {
        let key = QueryKey::from_query(NearbyQuery {
            lat: 34.068930,
            lon: -118.445127,
            radius_m: 10_000.0,
        })
        .unwrap();
        let body: Value = serde_json::from_slice(&request_body(key)).unwrap();
        assert_eq!(
            body,
            json!({
                "maxResultCount": 20,
                "locationRestriction": {"circle": {
                    "center": {"latitude": 34.06893, "longitude": -118.445127},
                    "radius": 10000.0
                }}
            })
        );
    }
}
