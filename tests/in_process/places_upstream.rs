//! The upstream client against a real places mock server (the source of
//! `herd-places-mock`, included) on 127.0.0.1, in one glommio executor per
//! test: answers, coalescing, caching, pooling, faults, timeouts and TLS,
//! over the legacy API (`places_new.rs` holds the New API's own tests).

use crate::mock;
use crate::support;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::mock::{Fault, MockSettings};
use herd::places::answer::{distance_m, NearbyQuery, Places, PlacesAnswer};
use herd::places::upstream::{Upstream, UpstreamSettings, UpstreamStats};
use herd::pure::config::PlacesApi;

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

/// Starts a mock on 127.0.0.1:0 in the current executor and returns its address.
async fn start_mock(tls: Option<(Vec<u8>, Vec<u8>)>) -> SocketAddr {
    let settings = MockSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        latency: Duration::ZERO,
        tls,
        fault: Fault::None,
        key: None,
    };
    support::start_mock_with(|ready| mock::serve(settings, ready)).await
}

/// The mock's `/stats` as (requests, connections), on a connection of its own
/// (which the mock counts too: callers subtract it).
async fn mock_stats(addr: SocketAddr) -> (u64, u64) {
    let stats = support::mock_stats_json(addr).await;
    (
        stats["requests"].as_u64().unwrap(),
        stats["connections"].as_u64().unwrap(),
    )
}

fn settings(base_url: String) -> UpstreamSettings {
    UpstreamSettings {
        base_url,
        api: PlacesApi::Legacy,
        field_mask: String::new(),
        key: Some("test-key".to_owned()),
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
    Upstream::new(settings(base_url)).unwrap()
}

fn status(answer: &PlacesAnswer) -> &str {
    answer["status"].as_str().unwrap_or("<none>")
}

fn message(answer: &PlacesAnswer) -> &str {
    answer["error_message"].as_str().unwrap_or("<none>")
}

fn assert_within_radius(answer: &PlacesAnswer, q: NearbyQuery) {
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    for r in results {
        let lat = r["geometry"]["location"]["lat"].as_f64().unwrap();
        let lng = r["geometry"]["location"]["lng"].as_f64().unwrap();
        assert!(distance_m(q.lat, q.lon, lat, lng) <= q.radius_m);
    }
}

#[test]
fn answer_has_twenty_results_within_the_radius() {
    run(|| async {
        let addr = start_mock(None).await;
        let up = upstream(format!("http://{addr}"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "OK", "{answer}");
        assert_within_radius(&answer, UCLA);
        let stats = up.stats();
        assert_eq!((stats.requests, stats.errors), (1, 0));
    });
}

#[test]
fn identical_calls_coalesce_then_hit_the_cache_until_the_ttl() {
    run(|| async {
        let addr = start_mock(None).await;
        let now = Rc::new(Cell::new(Instant::now()));
        let clock = Rc::clone(&now);
        let ttl = Duration::from_secs(30);
        let s = UpstreamSettings {
            cache_ttl: ttl,
            ..settings(format!("http://{addr}"))
        };
        let up = Upstream::with_clock(s, Rc::new(move || clock.get())).unwrap();

        // Ten at once: all ten tasks run before the one upstream exchange can finish.
        let slow = NearbyQuery {
            lat: 10.0,
            lon: 20.0,
            radius_m: 500.0,
        };
        let calls: Vec<_> = (0..10).map(|_| up.nearby(slow)).collect();
        let tasks: Vec<_> = calls.into_iter().map(glommio::spawn_local).collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await);
        }
        assert!(answers
            .iter()
            .all(|a| a == &answers[0] && status(a) == "OK"));
        assert_eq!(mock_stats(addr).await.0, 1);
        let s1 = up.stats();
        assert_eq!((s1.requests, s1.coalesced, s1.cache_hits), (1, 9, 0));

        // Same query, within 6 decimals and a rounded metre: cache hit.
        let near_same = NearbyQuery {
            lat: 10.0000001,
            lon: 20.0,
            radius_m: 500.3,
        };
        assert_eq!(up.nearby(near_same).await, answers[0]);
        assert_eq!(mock_stats(addr).await.0, 1);
        assert_eq!(up.stats().cache_hits, 1);

        // After the TTL on the fake clock, upstream is asked again.
        now.set(now.get() + ttl + Duration::from_millis(1));
        assert_eq!(up.nearby(slow).await, answers[0]);
        assert_eq!(mock_stats(addr).await.0, 2);
        assert_eq!(
            up.stats(),
            UpstreamStats {
                lookups: 12,
                requests: 2,
                coalesced: 9,
                cache_hits: 1,
                errors: 0
            }
        );
    });
}

#[test]
fn sequential_distinct_requests_reuse_one_pooled_connection() {
    run(|| async {
        let addr = start_mock(None).await;
        let up = upstream(format!("http://{addr}"));
        for i in 0..5 {
            let q = NearbyQuery {
                lat: 1.0 + f64::from(i),
                lon: 2.0,
                radius_m: 100.0,
            };
            assert_eq!(status(&up.nearby(q).await), "OK");
        }
        // One connection for the client, one for this stats request.
        assert_eq!(mock_stats(addr).await, (5, 2));
    });
}

#[test]
fn http_500_becomes_unknown_error() {
    run(|| async {
        let addr = start_mock(None).await;
        let up = upstream(format!("http://{addr}/fault/500"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        assert_eq!(message(&answer), "places upstream answered HTTP 500");
        assert_eq!(answer["results"], serde_json::json!([]));
        assert_eq!(up.stats().errors, 1);
        // Not retried (the server answered) and not cached.
        up.nearby(UCLA).await;
        assert_eq!(mock_stats(addr).await.0, 2);
    });
}

#[test]
fn google_error_status_passes_through_uncached() {
    run(|| async {
        let addr = start_mock(None).await;
        let up = upstream(format!("http://{addr}/fault/REQUEST_DENIED"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "REQUEST_DENIED");
        assert_eq!(message(&answer), "places mock fault: REQUEST_DENIED");
        up.nearby(UCLA).await;
        assert_eq!(mock_stats(addr).await.0, 2);
        assert_eq!(up.stats().errors, 2);
    });
}

#[test]
fn body_that_is_not_json_becomes_unknown_error() {
    run(|| async {
        let addr = start_mock(None).await;
        let up = upstream(format!("http://{addr}/fault/notjson"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        assert_eq!(
            message(&answer),
            "places upstream sent a body that is not JSON"
        );
    });
}

#[test]
fn hanging_upstream_times_out_without_retry() {
    run(|| async {
        let addr = start_mock(None).await;
        let s = UpstreamSettings {
            timeout: Duration::from_millis(300),
            ..settings(format!("http://{addr}/fault/hang"))
        };
        let up = Upstream::new(s).unwrap();
        let started = Instant::now();
        let answer = up.nearby(UCLA).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        assert_eq!(message(&answer), "places upstream timed out after 300 ms");
        assert_eq!(mock_stats(addr).await.0, 1);
    });
}

#[test]
fn refused_connection_is_retried_then_reported() {
    run(|| async {
        // A port that was free a moment ago: nothing listens there now.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let up = upstream(format!("http://{addr}"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        let text = message(&answer);
        assert!(
            text.starts_with(&format!("cannot connect to http://{addr}: ")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert_eq!(up.stats().requests, 0);
    });
}

#[test]
fn invalid_coordinates_are_answered_locally() {
    run(|| async {
        let up = upstream("http://127.0.0.1:9".to_owned());
        let bad = NearbyQuery {
            lat: f64::NAN,
            lon: 0.0,
            radius_m: 1.0,
        };
        assert_eq!(status(&up.nearby(bad).await), "INVALID_REQUEST");
        assert_eq!(up.stats(), UpstreamStats::default());
    });
}

/// A CA, and a server certificate it signed for localhost and 127.0.0.1.
fn test_pki() -> mock::LocalPki {
    mock::local_pki().unwrap()
}

#[test]
fn https_round_trip_with_an_extra_ca_and_failure_without_it() {
    let pki = test_pki();
    run(move || async move {
        let tls = Some((pki.cert_pem.into_bytes(), pki.key_pem.into_bytes()));
        let addr = start_mock(tls).await;
        for host in ["localhost", "127.0.0.1"] {
            let s = UpstreamSettings {
                extra_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
                ..settings(format!("https://{host}:{}", addr.port()))
            };
            let up = Upstream::new(s).unwrap();
            let answer = up.nearby(UCLA).await;
            assert_eq!(status(&answer), "OK", "{host}: {answer}");
            assert_within_radius(&answer, UCLA);
        }

        let untrusting = upstream(format!("https://localhost:{}", addr.port()));
        let answer = untrusting.nearby(UCLA).await;
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        let text = message(&answer);
        assert!(text.contains("certificate"), "{text}");
        assert!(
            text.starts_with("cannot connect to https://localhost:"),
            "{text}"
        );
    });
}

/// A bare HTTP/1.1 server that answers the first request on each connection (with
/// keep-alive) and silently closes the connection when a second request arrives there:
/// the classic race of a pooled connection the server has just dropped.
async fn start_one_shot_server() -> SocketAddr {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = serde_json::to_vec(&herd::places::answer::OfflinePlaces.answer(UCLA)).unwrap();
    glommio::spawn_local(async move {
        // Enough connections for any test here; the loop is bounded.
        for _ in 0..16 {
            let Ok(mut stream) = listener.accept().await else { return };
            let body = body.clone();
            glommio::spawn_local(async move {
                let mut buf = vec![0u8; 4096];
                for request in 0..2 {
                    // Read one request head (small, arrives whole or in a few pieces).
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 65536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    if request == 1 {
                        return; // drop the connection without answering
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).await.is_err()
                        || stream.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            })
            .detach();
        }
    })
    .detach();
    addr
}

#[test]
fn pooled_connection_closed_by_the_server_is_retried_on_a_new_one() {
    run(|| async {
        let addr = start_one_shot_server().await;
        let up = upstream(format!("http://{addr}"));
        let far = NearbyQuery { lat: 5.0, ..UCLA };
        assert_eq!(status(&up.nearby(UCLA).await), "OK");
        assert_eq!(status(&up.nearby(far).await), "OK");
        let stats = up.stats();
        assert_eq!((stats.requests, stats.errors), (3, 0), "{stats:?}");

        // Without retries the same race surfaces as an error answer.
        let s = UpstreamSettings {
            retries: 0,
            ..settings(format!("http://{addr}"))
        };
        let strict = Upstream::new(s).unwrap();
        assert_eq!(status(&strict.nearby(UCLA).await), "OK");
        let answer = strict.nearby(far).await;
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        assert!(
            message(&answer).contains("places upstream request to"),
            "{answer}"
        );
    });
}

#[test]
fn in_flight_limit_serialises_calls_over_one_connection() {
    run(|| async {
        let addr = start_mock(None).await;
        let s = UpstreamSettings {
            max_in_flight: 1,
            ..settings(format!("http://{addr}/latency_ms/20"))
        };
        let up = Upstream::new(s).unwrap();
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                let q = NearbyQuery {
                    lat: f64::from(i),
                    ..UCLA
                };
                glommio::spawn_local(up.nearby(q))
            })
            .collect();
        for task in tasks {
            assert_eq!(status(&task.await), "OK");
        }
        // Never two at once, so one keep-alive connection served all three.
        assert_eq!(mock_stats(addr).await, (3, 2));
    });
}

#[test]
fn body_over_the_size_cap_becomes_unknown_error() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    run(|| async {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        glommio::spawn_local(async move {
            let Ok(mut stream) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let size = 2 * herd::places::upstream::MAX_BODY_BYTES;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&vec![b' '; size]).await;
        })
        .detach();
        let up = upstream(format!("http://{addr}"));
        let answer = up.nearby(UCLA).await;
        assert_eq!(status(&answer), "UNKNOWN_ERROR");
        assert_eq!(
            message(&answer),
            "places upstream sent a body larger than 1048576 bytes"
        );
    });
}

#[test]
fn a_caller_giving_up_does_not_strand_the_others() {
    run(|| async {
        let addr = start_mock(None).await;
        let up = upstream(format!("http://{addr}/latency_ms/50"));
        let first = glommio::spawn_local(up.nearby(UCLA));
        let second = glommio::spawn_local(up.nearby(UCLA));
        // Let both join the one lookup, then cancel the one that started it.
        glommio::timer::sleep(Duration::from_millis(5)).await;
        drop(first);
        assert_eq!(status(&second.await), "OK");
        assert_eq!(up.stats().coalesced, 1);
        assert_eq!(mock_stats(addr).await.0, 1);
    });
}
