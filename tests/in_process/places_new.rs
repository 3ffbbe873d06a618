//! The upstream client over Nearby Search (New) against the places mock (its
//! source included, checking requests as Google does): the request as the
//! mock received it, answers translated to the legacy JSON with the fields
//! the mask asked for, each Google error as its legacy status, and what is
//! cached, retried and counted.

use crate::mock;
use crate::support;

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::mock::{Fault, MockSettings};
use herd::places::answer::{distance_m, NearbyQuery, Places, PlacesAnswer};
use herd::places::upstream::{Upstream, UpstreamSettings};
use herd::pure::config::PlacesApi;
use herd::pure::places_fields::FieldMask;
use serde_json::{json, Value};

const KEY: &str = "AIza-test-key-0123456789";

const UCLA: NearbyQuery = NearbyQuery {
    lat: 34.068930,
    lon: -118.445127,
    radius_m: 10_000.0,
};

fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    support::run_glommio(f)
}

/// A mock that takes only `KEY` on the New endpoint.
async fn start_mock() -> SocketAddr {
    let settings = MockSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        latency: Duration::ZERO,
        tls: None,
        fault: Fault::None,
        key: Some(KEY.to_owned()),
    };
    support::start_mock_with(|ready| mock::serve(settings, ready)).await
}

/// The mock's `/stats`.
async fn mock_stats(addr: SocketAddr) -> Value {
    support::mock_stats_json(addr).await
}

async fn requests(addr: SocketAddr) -> u64 {
    mock_stats(addr).await["new_requests"].as_u64().unwrap()
}

fn settings(base_url: String, fields: FieldMask) -> UpstreamSettings {
    UpstreamSettings {
        base_url,
        api: PlacesApi::New,
        field_mask: fields.header(),
        key: Some(KEY.to_owned()),
        timeout: Duration::from_secs(5),
        pool_connections: 4,
        max_in_flight: 16,
        cache_entries: 64,
        cache_ttl: Duration::from_secs(30),
        retries: 1,
        extra_ca_pem: None,
    }
}

fn upstream(base_url: String) -> Upstream {
    Upstream::new(settings(base_url, FieldMask::pro())).unwrap()
}

fn status(answer: &PlacesAnswer) -> &str {
    answer["status"].as_str().unwrap_or("<none>")
}

fn message(answer: &PlacesAnswer) -> &str {
    answer["error_message"].as_str().unwrap_or("<none>")
}

#[test]
fn the_request_is_a_post_with_the_key_and_field_mask_in_headers_and_the_circle_in_the_body() {
    run(|| async {
        let addr = start_mock().await;
        let up = upstream(format!("http://{addr}"));
        assert_eq!(status(&up.nearby(UCLA).await), "OK");
        let seen = mock_stats(addr).await["last_request"].clone();
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["path"], "/v1/places:searchNearby");
        assert_eq!(
            seen["query"], "",
            "nothing in the URL, the key least of all"
        );
        let headers = &seen["headers"];
        assert_eq!(headers["x-goog-api-key"], KEY);
        assert_eq!(headers["x-goog-fieldmask"], FieldMask::pro().header());
        assert!(!headers["x-goog-fieldmask"].as_str().unwrap().contains('*'));
        assert_eq!(headers["content-type"], "application/json");
        let body: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
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
    });
}

#[test]
fn an_answer_comes_back_in_the_legacy_json_with_the_pro_fields_only() {
    run(|| async {
        let addr = start_mock().await;
        let up = upstream(format!("http://{addr}"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "OK", "{answer}");
        assert_eq!(answer["html_attributions"], json!([]));
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), 20);
        for r in results {
            let location = &r["geometry"]["location"];
            let (lat, lng) = (
                location["lat"].as_f64().unwrap(),
                location["lng"].as_f64().unwrap(),
            );
            assert!(distance_m(UCLA.lat, UCLA.lon, lat, lng) <= UCLA.radius_m);
            for field in [
                "name",
                "place_id",
                "types",
                "vicinity",
                "business_status",
                "icon_mask_base_uri",
                "icon_background_color",
                "plus_code",
            ] {
                assert!(r.get(field).is_some(), "{field} missing in {r}");
            }
            let viewport = &r["geometry"]["viewport"];
            assert!(viewport["northeast"]["lat"].as_f64().unwrap() > lat);
            assert!(viewport["southwest"]["lng"].as_f64().unwrap() < lng);
            // Enterprise fields were not asked for, so not billed, so absent.
            for field in [
                "rating",
                "user_ratings_total",
                "price_level",
                "opening_hours",
            ] {
                assert!(r.get(field).is_none(), "{field} in {r}");
            }
        }
        assert!(results[0]["vicinity"]
            .as_str()
            .unwrap()
            .ends_with("Sample City"));
    });
}

#[test]
fn the_enterprise_fields_come_back_when_asked_for() {
    run(|| async {
        let addr = start_mock().await;
        let up =
            Upstream::new(settings(format!("http://{addr}"), FieldMask::enterprise())).unwrap();
        let answer = up.nearby(UCLA).await;
        let first = &answer["results"][0];
        assert!(first["rating"].is_number(), "{first}");
        assert!(first["user_ratings_total"].is_u64(), "{first}");
        assert_eq!(first["price_level"], 0, "PRICE_LEVEL_FREE");
        assert_eq!(answer["results"][1]["price_level"], 1);
        assert_eq!(first["opening_hours"], json!({"open_now": true}));
    });
}

#[test]
fn each_google_error_becomes_its_legacy_status_uncached_and_not_retried() {
    run(|| async {
        let addr = start_mock().await;
        // (fault, legacy status, Google's message as the mock words it)
        let rows = [
            (
                "REQUEST_DENIED",
                "REQUEST_DENIED",
                "places mock fault: REQUEST_DENIED",
            ),
            (
                "API_KEY_INVALID",
                "REQUEST_DENIED",
                "places mock fault: API_KEY_INVALID",
            ),
            (
                "OVER_QUERY_LIMIT",
                "OVER_QUERY_LIMIT",
                "places mock fault: OVER_QUERY_LIMIT",
            ),
            (
                "INVALID_ARGUMENT",
                "INVALID_REQUEST",
                "places mock fault: INVALID_ARGUMENT",
            ),
            (
                "UNAVAILABLE",
                "UNKNOWN_ERROR",
                "places mock fault: UNAVAILABLE",
            ),
            ("500", "UNKNOWN_ERROR", "places mock fault: internal error"),
        ];
        for (fault, legacy, text) in rows {
            let up = upstream(format!("http://{addr}/fault/{fault}"));
            let before = requests(addr).await;
            let answer = up.nearby(UCLA).await;
            assert_eq!(status(&answer), legacy, "{fault}: {answer}");
            assert_eq!(message(&answer), text, "{fault}");
            assert_eq!(answer["results"], json!([]));
            // Asked again: not cached, so upstream again; never retried.
            up.nearby(UCLA).await;
            assert_eq!(requests(addr).await - before, 2, "{fault}");
            assert_eq!(up.stats().errors, 2, "{fault}");
        }
    });
}

#[test]
fn a_wrong_key_and_no_key_are_request_denied_with_googles_message() {
    run(|| async {
        let addr = start_mock().await;
        let wrong = Upstream::new(UpstreamSettings {
            key: Some("AIza-not-this-one".to_owned()),
            ..settings(format!("http://{addr}"), FieldMask::pro())
        })
        .unwrap();
        let answer = wrong.nearby(UCLA).await;
        assert_eq!(status(&answer), "REQUEST_DENIED");
        assert_eq!(
            message(&answer),
            "API key not valid. Please pass a valid API key."
        );
        let keyless = Upstream::new(UpstreamSettings {
            key: None,
            ..settings(format!("http://{addr}"), FieldMask::pro())
        })
        .unwrap();
        let answer = keyless.nearby(UCLA).await;
        assert_eq!(status(&answer), "REQUEST_DENIED");
        assert_eq!(message(&answer), "The request is missing a valid API key.");
    });
}

#[test]
fn a_missing_field_mask_is_refused_by_the_stand_in_as_google_does() {
    run(|| async {
        let addr = start_mock().await;
        let up = Upstream::new(UpstreamSettings {
            field_mask: String::new(),
            ..settings(format!("http://{addr}"), FieldMask::pro())
        })
        .unwrap();
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "INVALID_REQUEST");
        assert!(
            message(&answer).starts_with("FieldMask is a required parameter"),
            "{answer}"
        );
    });
}

#[test]
fn nothing_found_is_zero_results_and_cached() {
    run(|| async {
        let addr = start_mock().await;
        let up = upstream(format!("http://{addr}/fault/empty"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(
            answer,
            json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
        );
        assert_eq!(up.nearby(UCLA).await, answer);
        assert_eq!(requests(addr).await, 1, "the second came from the cache");
        assert_eq!(up.stats().errors, 0);
    });
}

#[test]
fn places_without_a_location_are_left_out() {
    run(|| async {
        let addr = start_mock().await;
        let up = upstream(format!("http://{addr}/fault/nolocation"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "OK");
        assert_eq!(answer["results"].as_array().unwrap().len(), 10);
    });
}

#[test]
fn a_body_that_is_not_json_is_unknown_error_and_not_cached() {
    run(|| async {
        let addr = start_mock().await;
        let up = upstream(format!("http://{addr}/fault/notjson"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        assert_eq!(
            message(&answer),
            "places upstream sent a body that is not JSON"
        );
        up.nearby(UCLA).await;
        assert_eq!(requests(addr).await, 2);
    });
}

#[test]
fn identical_lookups_coalesce_and_then_come_from_the_cache() {
    run(|| async {
        let addr = start_mock().await;
        let up = upstream(format!("http://{addr}/latency_ms/100"));
        let tasks: Vec<_> = (0..5)
            .map(|_| glommio::spawn_local(up.nearby(UCLA)))
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await);
        }
        assert!(answers
            .iter()
            .all(|a| a == &answers[0] && status(a) == "OK"));
        assert_eq!(up.nearby(UCLA).await, answers[0]);
        assert_eq!(requests(addr).await, 1);
        let stats = up.stats();
        assert_eq!((stats.coalesced, stats.cache_hits), (4, 1));
    });
}

#[test]
fn a_timeout_is_not_retried() {
    run(|| async {
        let addr = start_mock().await;
        let up = Upstream::new(UpstreamSettings {
            timeout: Duration::from_millis(300),
            ..settings(format!("http://{addr}/fault/hang"), FieldMask::pro())
        })
        .unwrap();
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        assert_eq!(message(&answer), "places upstream timed out after 300 ms");
        assert_eq!(requests(addr).await, 1);
    });
}

#[test]
fn the_snapped_and_unsnapped_paths_share_the_new_translation() {
    run(|| async {
        let addr = start_mock().await;
        let up = Upstream::with_answers(
            settings(format!("http://{addr}"), FieldMask::pro()),
            herd::places::answer::AnswerSettings {
                grid: herd::places::key::Grid::new(1000),
                ..Default::default()
            },
            Rc::new(Instant::now),
        )
        .unwrap();
        let near = NearbyQuery {
            radius_m: 2_000.0,
            ..UCLA
        };
        let answer = up.nearby(near).await;
        assert_eq!(status(&answer), "OK");
        for r in answer["results"].as_array().unwrap() {
            let l = &r["geometry"]["location"];
            let d = distance_m(
                near.lat,
                near.lon,
                l["lat"].as_f64().unwrap(),
                l["lng"].as_f64().unwrap(),
            );
            assert!(d <= near.radius_m, "{d}");
        }
    });
}

#[test]
fn an_answer_or_error_body_over_the_size_bound_is_unknown_error() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    for code in ["200 OK", "400 Bad Request"] {
        let answer = run(move || async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            glommio::spawn_local(async move {
                let Ok(mut stream) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let size = 2 * herd::places::upstream::MAX_BODY_BYTES;
                let head = format!("HTTP/1.1 {code}\r\ncontent-length: {size}\r\n\r\n");
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&vec![b' '; size]).await;
            })
            .detach();
            upstream(format!("http://{addr}")).nearby(UCLA).await
        });
        assert_eq!(status(&answer), "UNKNOWN_ERROR", "{code}");
        assert_eq!(
            message(&answer),
            "places upstream sent a body larger than 1048576 bytes",
            "{code}"
        );
    }
}
