//! Snapping (`places.snap_m`) against a real places mock server (the source of
//! `herd-places-mock`, included) on 127.0.0.1, in one glommio executor: near
//! lookups in flight share one upstream request, and each caller still gets
//! only results within its own radius.

use crate::mock;
use crate::support;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::mock::{Fault, MockSettings};
use herd::places::answer::{distance_m, AnswerSettings, NearbyQuery, Places};
use herd::places::key::Grid;
use herd::places::upstream::{Upstream, UpstreamSettings};

/// Starts a mock on 127.0.0.1:0 in the current executor and returns its address.
async fn start_mock() -> SocketAddr {
    let settings = MockSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        // Slow enough that every caller joins before the answer comes back.
        latency: Duration::from_millis(100),
        tls: None,
        fault: Fault::None,
        key: None,
    };
    support::start_mock_with(|ready| mock::serve(settings, ready)).await
}

fn upstream(addr: SocketAddr, snap_m: u32) -> Upstream {
    let settings = UpstreamSettings {
        base_url: format!("http://{addr}"),
        key: Some("test-key".to_owned()),
        ..UpstreamSettings::default()
    };
    let answers = AnswerSettings {
        grid: Grid::new(snap_m),
        ..AnswerSettings::default()
    };
    Upstream::with_answers(settings, answers, Rc::new(Instant::now)).unwrap()
}

/// Clients a few hundred metres apart in one 1 km cell, asking 3 km around them.
fn near_queries() -> Vec<NearbyQuery> {
    [
        (34.0661, -118.4501),
        (34.0664, -118.4489),
        (34.0659, -118.4497),
    ]
    .into_iter()
    .map(|(lat, lon)| NearbyQuery {
        lat,
        lon,
        radius_m: 3_000.0,
    })
    .collect()
}

fn run_near_queries(snap_m: u32) -> (u64, u64) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let addr = start_mock().await;
            let up = upstream(addr, snap_m);
            let queries = near_queries();
            let tasks: Vec<_> = queries
                .iter()
                .map(|&q| glommio::spawn_local(up.nearby(q)))
                .collect();
            for (task, q) in tasks.into_iter().zip(&queries) {
                let answer = task.await;
                assert_eq!(answer["status"], "OK", "{answer}");
                let results = answer["results"].as_array().unwrap();
                assert!(!results.is_empty());
                for r in results {
                    let loc = &r["geometry"]["location"];
                    let d = distance_m(
                        q.lat,
                        q.lon,
                        loc["lat"].as_f64().unwrap(),
                        loc["lng"].as_f64().unwrap(),
                    );
                    assert!(d <= q.radius_m, "{d} m from {q:?}");
                }
            }
            let stats = up.stats();
            (stats.requests, stats.coalesced)
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn near_lookups_in_flight_share_one_snapped_request_and_keep_their_own_radius() {
    assert_eq!(run_near_queries(1_000), (1, 2));
}

#[test]
fn without_snapping_near_lookups_are_separate_requests() {
    assert_eq!(run_near_queries(0), (3, 0));
}
