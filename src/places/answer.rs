//! Places for WHATSAT: the `Places` source trait, the offline sample-data provider
//! (plain, and cached as rendered answers) and Google-shaped error answers.
//! It owns the offline data; `rendered` owns the reply bytes. Under test it keeps the
//! original reply rendering (a JSON tree, pretty-printed, newlines collapsed) as the
//! oracle the rendered replies are checked against.
//! It must stay pure: no I/O, no randomness, no runtime types; the clock is injected.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::places::cache::LruTtl;
use crate::places::geo::{distance_m, wrap_lon, Disc, NearbyQuery, EARTH_RADIUS_M};
use crate::places::key::{Grid, QueryKey};
use crate::places::rendered::{error_answer, PlacesAnswer, RenderedAnswer};
use crate::pure::config::DEFAULT_CACHE_BYTES;

/// How many results the offline provider returns (Google's legacy page size).
const OFFLINE_RESULT_COUNT: usize = 20;

/// The future returned by `Places::nearby`; not `Send`, as servers run thread-per-core.
pub type NearbyFuture = Pin<Box<dyn Future<Output = PlacesAnswer>>>;

/// An answer ready for replies, shared by every reply that uses it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The answer as reply bytes with its result offsets.
    pub answer: Rc<RenderedAnswer>,
    /// The client's own disc when the answer is for a larger, snapped one: replies
    /// keep only the results inside it. `None`: every result is the client's.
    pub within: Option<Disc>,
}

impl Rendered {
    /// An answer rendered for this one use (errors, uncached sources).
    pub fn once(answer: &PlacesAnswer) -> Rendered {
        Rendered {
            answer: Rc::new(RenderedAnswer::render(answer)),
            within: None,
        }
    }

    /// The answer as a JSON tree, results filtered but not cut (a slow path: it parses).
    pub fn to_value(&self) -> PlacesAnswer {
        self.answer.to_value(usize::MAX, self.within.as_ref())
    }
}

/// The future returned by `Places::nearby_rendered`.
pub type RenderedFuture = Pin<Box<dyn Future<Output = Rendered>>>;

/// Where WHATSAT gets places from: nearby search around a point.
pub trait Places {
    /// Nearby search; never fails: failures come back as Google-shaped error JSON.
    fn nearby(&self, query: NearbyQuery) -> NearbyFuture;

    /// Nearby search answered as reply bytes, the WHATSAT path. This default renders
    /// `nearby`'s answer for each call; cached sources hand out one rendering.
    fn nearby_rendered(&self, query: NearbyQuery) -> RenderedFuture {
        let answer = self.nearby(query);
        Box::pin(async move { Rendered::once(&answer.await) })
    }

    /// Lookups, cache hits and upstream calls so far, for the metrics.
    fn figures(&self) -> crate::ops::metrics::PlacesFigures {
        crate::ops::metrics::PlacesFigures::default()
    }

    /// Adds the upstream call latencies (microseconds) gathered since the
    /// last call to `into`, and forgets them.
    fn take_upstream_latency(&self, _into: &mut hdrhistogram::Histogram<u64>) {}
}

/// Answer cache and snapping settings shared by every source that caches
/// (`places.cache_bytes`, `places.snap_m`; entries and TTL have older homes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerSettings {
    /// Total bytes of rendered answers one shard keeps.
    pub cache_bytes: usize,
    /// The grid near queries are snapped to; off by default.
    pub grid: Grid,
}

impl Default for AnswerSettings {
    fn default() -> Self {
        AnswerSettings {
            cache_bytes: DEFAULT_CACHE_BYTES,
            grid: Grid::default(),
        }
    }
}

/// Where "now" comes from for cache expiry; tests pass a clock they move by hand.
pub type Clock = Rc<dyn Fn() -> Instant>;

/// The offline provider behind a shard's answer cache: each distinct (snapped) query is
/// computed and rendered once, then served as bytes until it expires or is evicted.
pub struct CachedOfflinePlaces {
    /// Rendered answers by key.
    cache: RefCell<LruTtl<QueryKey, Rc<RenderedAnswer>>>,
    /// Snapping of queries onto keys.
    grid: Grid,
    /// Time source for expiry.
    clock: Clock,
    /// Lookups and cache hits so far.
    counts: Cell<(u64, u64)>,
}

impl CachedOfflinePlaces {
    /// A cache of at most `entries` answers and `answers.cache_bytes` bytes, each kept `ttl`.
    pub fn new(entries: usize, ttl: Duration, answers: AnswerSettings, clock: Clock) -> Self {
        CachedOfflinePlaces {
            cache: RefCell::new(LruTtl::new(entries, answers.cache_bytes, ttl)),
            grid: answers.grid,
            clock,
            counts: Cell::new((0, 0)),
        }
    }

    /// The rendered answer for `query`, from the cache or computed now.
    pub fn rendered(&self, query: NearbyQuery) -> Rendered {
        let (lookups, hits) = self.counts.get();
        self.counts.set((lookups + 1, hits));
        let Some((key, within)) = self.grid.key(query) else {
            // Let the provider word the refusal, as it does uncached.
            return Rendered::once(&OfflinePlaces.answer(query));
        };
        let now = (self.clock)();
        let cached = self.cache.borrow_mut().get(&key, now);
        if cached.is_some() {
            self.counts.set((lookups + 1, hits + 1));
        }
        let answer = cached.unwrap_or_else(|| {
            let answer = Rc::new(RenderedAnswer::render(&OfflinePlaces.answer(key.query())));
            self.cache
                .borrow_mut()
                .insert(key, Rc::clone(&answer), answer.weight(), now);
            answer
        });
        Rendered { answer, within }
    }
}

impl Places for CachedOfflinePlaces {
    fn nearby(&self, query: NearbyQuery) -> NearbyFuture {
        Box::pin(std::future::ready(self.rendered(query).to_value()))
    }

    fn nearby_rendered(&self, query: NearbyQuery) -> RenderedFuture {
        Box::pin(std::future::ready(self.rendered(query)))
    }

    fn figures(&self) -> crate::ops::metrics::PlacesFigures {
        let (lookups, cache_hits) = self.counts.get();
        crate::ops::metrics::PlacesFigures {
            lookups,
            cache_hits,
            ..Default::default()
        }
    }
}

/// Offline sample-data provider: deterministic results, clearly labelled as sample data.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflinePlaces;

/// Per-index variety for offline results: main type, optional second type, Google icon name.
const KINDS: [(&str, Option<&str>, &str); 5] = [
    ("cafe", Some("food"), "cafe"),
    ("restaurant", Some("food"), "restaurant"),
    ("lodging", None, "lodging"),
    ("park", Some("tourist_attraction"), "park"),
    ("store", None, "shopping"),
];

impl OfflinePlaces {
    /// Synchronous offline answer: 20 sample results within the radius, same query same answer.
    pub fn answer(&self, query: NearbyQuery) -> PlacesAnswer {
        let NearbyQuery { lat, lon, radius_m } = query;
        // Google rejects unusable locations instead of guessing; so do we.
        if !(lat.is_finite() && lon.is_finite() && radius_m.is_finite()) {
            return error_answer(
                "INVALID_REQUEST",
                "location and radius must be finite numbers",
            );
        }
        // Like Google, an empty search area is not an error, just nothing found.
        let (status, count) = if radius_m > 0.0 {
            ("OK", OFFLINE_RESULT_COUNT)
        } else {
            ("ZERO_RESULTS", 0)
        };
        let results: Vec<Value> = (0..count).map(|i| offline_result(query, i)).collect();
        json!({
            "html_attributions": [OFFLINE_ATTRIBUTION],
            "results": results,
            "status": status,
        })
    }
}

impl Places for OfflinePlaces {
    fn nearby(&self, query: NearbyQuery) -> NearbyFuture {
        Box::pin(std::future::ready(self.answer(query)))
    }
}

/// Attribution line that marks offline answers so nobody mistakes them for real places.
const OFFLINE_ATTRIBUTION: &str = "herd offline sample data, not real places";

/// Where Google's legacy icons live; offline results point at real icon names.
const ICON_BASE: &str = "https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/";

/// One offline result, Google legacy shape, placed at a fraction of the radius.
fn offline_result(query: NearbyQuery, i: usize) -> Value {
    // Golden-angle bearings and growing fractions spread points without clustering.
    let fraction = (i + 1) as f64 / (OFFLINE_RESULT_COUNT + 1) as f64;
    let bearing = i as f64 * 137.5;
    let (mut lat, mut lng) = destination(query.lat, query.lon, query.radius_m * fraction, bearing);
    // Float error can only matter for microscopic radii; the centre is then the honest answer.
    if distance_m(query.lat, query.lon, lat, lng) > query.radius_m {
        lat = query.lat.clamp(-90.0, 90.0);
        lng = wrap_lon(query.lon);
    }
    let hash = sample_hash(query, i);
    let place_id = format!("herd-sample-{hash:016x}");
    let (main, second, icon) = KINDS[i % KINDS.len()];
    let types: Vec<&str> = std::iter::once(main)
        .chain(second)
        .chain(["point_of_interest", "establishment"])
        .collect();
    let rating = (10 + hash % 41) as f64 / 10.0;
    let span = 0.0013;
    json!({
        "business_status": "OPERATIONAL",
        "geometry": {
            "location": {"lat": lat, "lng": lng},
            "viewport": {
                "northeast": {"lat": (lat + span).min(90.0), "lng": wrap_lon(lng + span)},
                "southwest": {"lat": (lat - span).max(-90.0), "lng": wrap_lon(lng - span)},
            },
        },
        "icon": format!("{ICON_BASE}{icon}-71.png"),
        "name": format!("Sample Place {}", i + 1),
        "place_id": place_id,
        "rating": rating,
        "reference": place_id,
        "scope": "GOOGLE",
        "types": types,
        "user_ratings_total": (hash >> 8) % 5000,
        "vicinity": format!("{} Sample Street", i + 1),
    })
}

/// FNV-1a over the rounded query and the index: stable ids without any hashing crate.
fn sample_hash(query: NearbyQuery, i: usize) -> u64 {
    let parts = [
        (query.lat * 1e6).round() as i64,
        (query.lon * 1e6).round() as i64,
        query.radius_m.round() as i64,
        i as i64,
    ];
    parts
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Point reached from (lat, lon) after `dist_m` metres on `bearing_deg`, clamped and wrapped.
fn destination(lat: f64, lon: f64, dist_m: f64, bearing_deg: f64) -> (f64, f64) {
    let (phi1, lambda1) = (lat.to_radians(), lon.to_radians());
    let delta = dist_m / EARTH_RADIUS_M;
    let theta = bearing_deg.to_radians();
    let sin_phi2 =
        (phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * theta.cos()).clamp(-1.0, 1.0);
    let phi2 = sin_phi2.asin();
    let lambda2 = lambda1
        + (theta.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * sin_phi2);
    (
        phi2.to_degrees().clamp(-90.0, 90.0),
        wrap_lon(lambda2.to_degrees()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::rendered::{collapse_newlines, write_nearby_reply};
    use proptest::prelude::*;

    const AT: &str = "AT kiwi +0.5 alpha +34.06-118.44 1.0";

    fn query(lat: f64, lon: f64, radius_m: f64) -> NearbyQuery {
        NearbyQuery { lat, lon, radius_m }
    }

    fn ucla() -> PlacesAnswer {
        OfflinePlaces.answer(query(34.068930, -118.445127, 10_000.0))
    }

    /// A reply as servers write it now: rendered once, then cut.
    fn reply(answer: &PlacesAnswer, max: usize) -> String {
        let mut out = Vec::new();
        let rendered = RenderedAnswer::render(answer);
        crate::places::rendered::write_reply(&mut out, AT, &rendered, max, None);
        String::from_utf8(out).unwrap()
    }

    fn manual_clock() -> (Rc<std::cell::Cell<Instant>>, Clock) {
        let now = Rc::new(std::cell::Cell::new(Instant::now()));
        let clock = Rc::clone(&now);
        (now, Rc::new(move || clock.get()))
    }

    /// The shape every reply must have: AT line, JSON, exactly one empty line at the end.
    fn assert_reply_shape(text: &str) {
        assert!(text.starts_with(&format!("{AT}\n")), "{text}");
        assert_eq!(text.find("\n\n"), Some(text.len() - 2), "{text}");
    }

    fn assert_within_radius(q: NearbyQuery) {
        let answer = OfflinePlaces.answer(q);
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), 20);
        for r in results {
            let lat = r["geometry"]["location"]["lat"].as_f64().unwrap();
            let lng = r["geometry"]["location"]["lng"].as_f64().unwrap();
            assert!((-90.0..=90.0).contains(&lat), "lat {lat} for {q:?}");
            assert!((-180.0..=180.0).contains(&lng), "lng {lng} for {q:?}");
            let d = distance_m(q.lat, q.lon, lat, lng);
            assert!(d <= q.radius_m, "{d} m > {} m for {q:?}", q.radius_m);
        }
    }

    #[test]
    fn results_are_cut_to_max_results() {
        let answer = ucla();
        for (max, kept) in [(0, 0), (1, 1), (5, 5), (20, 20), (21, 20), (1000, 20)] {
            // Compare bytes, not re-parsed JSON: serde_json's default float parsing is lossy.
            let mut expected = answer.clone();
            expected["results"].as_array_mut().unwrap().truncate(kept);
            let pretty = serde_json::to_string_pretty(&expected).unwrap();
            assert_eq!(reply(&answer, max), format!("{AT}\n{pretty}\n\n"));
            assert_eq!(expected["status"], "OK");
            assert_eq!(expected["html_attributions"], json!([OFFLINE_ATTRIBUTION]));
        }
    }

    #[test]
    fn reply_starts_with_at_line_and_ends_with_one_empty_line() {
        for max in [0, 3, 20] {
            let text = reply(&ucla(), max);
            assert!(text.starts_with(&format!("{AT}\n{{")) && text.ends_with("}\n\n"));
            assert_reply_shape(&text);
        }
        // A stray line end on the stored AT line must not add an empty line.
        let mut out = Vec::new();
        write_nearby_reply(&mut out, &format!("{AT}\r\n"), &ucla(), 1);
        assert_reply_shape(&String::from_utf8(out).unwrap());
        let mut out = Vec::new();
        let rendered = RenderedAnswer::render(&ucla());
        crate::places::rendered::write_reply(&mut out, &format!("{AT}\r\n"), &rendered, 1, None);
        assert_reply_shape(&String::from_utf8(out).unwrap());
    }

    #[test]
    fn offline_answers_are_computed_once_per_distinct_query_and_expire() {
        let (now, clock) = manual_clock();
        let ttl = Duration::from_secs(60);
        let places = CachedOfflinePlaces::new(16, ttl, AnswerSettings::default(), clock);
        let q = query(34.068930, -118.445127, 10_000.0);
        let first = places.rendered(q);
        let again = places.rendered(query(34.0689304, -118.445127, 10_000.2));
        assert!(
            Rc::ptr_eq(&first.answer, &again.answer),
            "same key, one rendering"
        );
        assert_eq!(first.within, None);
        assert_eq!(
            *first.answer,
            RenderedAnswer::render(&OfflinePlaces.answer(q))
        );
        let other = places.rendered(query(1.0, 2.0, 10_000.0));
        assert!(!Rc::ptr_eq(&first.answer, &other.answer));
        now.set(now.get() + ttl);
        let expired = places.rendered(q);
        assert!(!Rc::ptr_eq(&first.answer, &expired.answer), "rendered anew");
        assert_eq!(expired.answer, first.answer);
        let value = futures_lite::future::block_on(places.nearby(q));
        assert_eq!(value["results"].as_array().unwrap().len(), 20);
        let bad = futures_lite::future::block_on(places.nearby(query(f64::NAN, 0.0, 1.0)));
        assert_eq!(bad["status"], "INVALID_REQUEST");
    }

    #[test]
    fn offline_cache_is_bounded_by_bytes() {
        let (_, clock) = manual_clock();
        let one = RenderedAnswer::render(&ucla()).weight();
        let settings = AnswerSettings {
            cache_bytes: one * 3,
            ..AnswerSettings::default()
        };
        let places = CachedOfflinePlaces::new(100, Duration::from_secs(60), settings, clock);
        for i in 0..10 {
            places.rendered(query(f64::from(i), 0.0, 10_000.0));
        }
        let cache = places.cache.borrow();
        assert!(cache.bytes() <= one * 3, "{} > {}", cache.bytes(), one * 3);
        assert!((2..=3).contains(&cache.len()), "{}", cache.len());
    }

    #[test]
    fn snapped_offline_replies_hold_only_results_inside_the_clients_radius() {
        let (_, clock) = manual_clock();
        let settings = AnswerSettings {
            grid: Grid::new(1000),
            ..AnswerSettings::default()
        };
        let places = CachedOfflinePlaces::new(16, Duration::from_secs(60), settings, clock);
        let (a, b) = (
            query(34.0661, -118.4501, 3000.0),
            query(34.0664, -118.4489, 3000.0),
        );
        let (ra, rb) = (places.rendered(a), places.rendered(b));
        assert!(Rc::ptr_eq(&ra.answer, &rb.answer), "one upstream query");
        for (q, r) in [(a, ra), (b, rb)] {
            let value = r.to_value();
            let results = value["results"].as_array().unwrap();
            assert!(!results.is_empty());
            for result in results {
                let loc = &result["geometry"]["location"];
                let d = distance_m(
                    q.lat,
                    q.lon,
                    loc["lat"].as_f64().unwrap(),
                    loc["lng"].as_f64().unwrap(),
                );
                assert!(d <= q.radius_m, "{d} m");
            }
        }
    }

    #[test]
    fn callers_answer_is_unchanged_after_writing() {
        let answer = ucla();
        let before = answer.clone();
        for max in [0, 1, 5, 20, 50] {
            reply(&answer, max);
            assert_eq!(answer, before);
        }
    }

    #[test]
    fn error_answer_is_google_shaped_and_formatted_the_same_way() {
        let answer = error_answer("OVER_QUERY_LIMIT", "You have exceeded your quota.");
        assert_eq!(answer["results"], json!([]));
        assert_eq!(answer["status"], "OVER_QUERY_LIMIT");
        assert_eq!(answer["error_message"], "You have exceeded your quota.");
        let text = reply(&answer, 5);
        assert_reply_shape(&text);
        let pretty = serde_json::to_string_pretty(&answer).unwrap();
        assert_eq!(text, format!("{AT}\n{pretty}\n\n"));
    }

    #[test]
    fn answers_without_a_results_array_are_printed_as_is() {
        let odd = [
            json!("plain"),
            json!({"status": "OK"}),
            json!({"results": 3}),
            json!([1]),
        ];
        for answer in odd {
            let text = reply(&answer, 0);
            assert_reply_shape(&text);
            let (_, json) = text.split_once('\n').unwrap();
            assert_eq!(serde_json::from_str::<Value>(json).unwrap(), answer);
        }
    }

    #[test]
    fn offline_answer_is_deterministic_and_labelled() {
        let (a, b) = (ucla(), ucla());
        assert_eq!(a, b);
        assert_eq!(a["status"], "OK");
        let first = &a["results"][0];
        assert_eq!(first["place_id"], first["reference"]);
        let id = first["place_id"].as_str().unwrap();
        assert!(id.starts_with("herd-sample-"));
        assert_ne!(a["results"][0]["place_id"], a["results"][1]["place_id"]);
        assert!((1.0..=5.0).contains(&first["rating"].as_f64().unwrap()));
        assert_eq!(first["name"], "Sample Place 1");
        assert_eq!(first["vicinity"], "1 Sample Street");
        assert_eq!(first["business_status"], "OPERATIONAL");
    }

    #[test]
    fn offline_answer_has_zero_results_for_non_positive_radius() {
        for r in [0.0, -5.0] {
            let a = OfflinePlaces.answer(query(1.0, 2.0, r));
            assert_eq!(a["status"], "ZERO_RESULTS");
            assert_eq!(a["results"], json!([]));
        }
        let bad = OfflinePlaces.answer(query(f64::NAN, 2.0, 10.0));
        assert_eq!(bad["status"], "INVALID_REQUEST");
    }

    #[test]
    fn offline_results_stay_within_radius_at_poles_and_antimeridian() {
        let centres = [
            (90.0, 0.0),
            (-90.0, 9.0),
            (89.999, 180.0),
            (0.0, -180.0),
            (-45.0, 179.999),
        ];
        for (lat, lon) in centres {
            for r in [1e-9, 0.5, 1000.0, 50_000.0] {
                assert_within_radius(query(lat, lon, r));
            }
        }
    }

    #[test]
    fn nearby_future_resolves_to_the_sync_answer() {
        let q = query(-33.8, 151.2, 2000.0);
        let got = futures_lite::future::block_on(OfflinePlaces.nearby(q));
        assert_eq!(got, OfflinePlaces.answer(q));
    }

    #[test]
    fn collapse_newlines_merges_runs_and_drops_trailing_ones() {
        assert_eq!(collapse_newlines("a\n\n\nb\nc\n\n"), "a\nb\nc");
        assert_eq!(collapse_newlines("\n\nx"), "\nx");
        assert_eq!(collapse_newlines("\n\n\n"), "");
        assert_eq!(collapse_newlines("{\n  \"a\": 1\n}"), "{\n  \"a\": 1\n}");
    }

    fn lat_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![-90.0..=90.0f64, 89.0..=90.0f64, -90.0..=-89.0f64]
    }

    fn lon_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![-180.0..=180.0f64, 179.0..=180.0f64, -180.0..=-179.0f64]
    }

    fn radius_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![f64::MIN_POSITIVE..=1.0f64, 1.0..=50_000.0f64]
    }

    proptest! {
        #[test]
        fn offline_results_are_in_range_and_within_radius(
            lat in lat_strategy(), lon in lon_strategy(), radius in radius_strategy()
        ) {
            let q = query(lat, lon, radius);
            assert_within_radius(q);
            prop_assert_eq!(OfflinePlaces.answer(q), OfflinePlaces.answer(q));
        }

        #[test]
        fn collapse_newlines_leaves_no_runs_and_no_trailing_newline(text in "[ab\n{}]{0,40}") {
            let out = collapse_newlines(&text);
            prop_assert!(!out.contains("\n\n"));
            prop_assert!(!out.ends_with('\n'));
            prop_assert_eq!(out.replace('\n', ""), text.replace('\n', ""));
        }

        #[test]
        fn reply_never_has_an_empty_line_before_the_end(max in 0usize..30, lat in lat_strategy()) {
            assert_reply_shape(&reply(&OfflinePlaces.answer(query(lat, 0.0, 1234.0)), max));
        }
    }

    /// The rendered replies against the oracle, on offline answers.
    mod rendered_against_the_oracle {
        use super::super::*;
        use crate::places::rendered::tests::{oracle, rendered, AT};
        use proptest::prelude::*;

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

        proptest! {
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
}
