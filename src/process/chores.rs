//! A shard's chores besides serving: publishing its figures, closing idle
//! clients, expiring old records, logging what it turned away, and
//! draining at the stop.

use crate::net::lines;
use crate::net::per_ip::PerIp;
use crate::process::live::Live;
use crate::shard::Shard;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stopping server may take to finish replies and flush floods.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Publishes the shard's figures for the admin endpoint four times a
/// second; the recent latency covers the last whole second.
pub(super) async fn publish(shard: Rc<Shard>) {
    let mut recent = crate::ops::metrics::latency_histogram();
    let mut tick = 0u64;
    while !shard.stop.is_requested() {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        tick += 1;
        shard.publish(&mut recent, tick % 4 == 0);
    }
}

/// Closes clients that sent nothing for `limits.client_idle_timeout_ms`
/// while the server waited for them, sweeping eight times per timeout (at
/// least every 100 ms and at most every 10 ms): a client is closed between
/// its timeout and three sweeps after it (see `Activity::idle_at`). The
/// same sweep has a client that waited since the sweep before give back
/// its buffers (`Connections::close_idle`): at 100 ms, ten thousand clients
/// that each send a line every few seconds hold few at any time, and a
/// sweep over ten thousand took 0.2 to 3 ms, half a millisecond in the
/// middle (0.5 % of the shard's core). A reload's timeout applies to the
/// clients that connect after it, and sets the sweep's pace.
pub(super) async fn close_idle_clients(shard: Rc<Shard>, live: Rc<Live>) {
    while !shard.stop.is_requested() {
        let idle_timeout = live.admission.borrow().idle_timeout;
        let pace = (idle_timeout / 8).clamp(Duration::from_millis(10), Duration::from_millis(100));
        glommio::timer::sleep(pace).await;
        let closed = shard.connections.close_idle(Instant::now());
        if closed > 0 {
            tracing::debug!(shard = shard.id, closed, "idle clients closed");
        }
    }
}

/// Logs, at most once a second, what the shard turned away since the last
/// line: records evicted from or refused by its full store, and
/// connections over the per-IP limit. Never a line per event: under a
/// flood of new clients or connections the log stays small.
pub(super) async fn report_refusals(
    shard: Rc<Shard>,
    refused_per_ip: Rc<std::cell::Cell<u64>>,
    per_ip: Arc<PerIp>,
) {
    let (mut evicted, mut refused) = (0, 0);
    let mut connections = 0;
    while !shard.stop.is_requested() {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let (e, r) = shard.evictions();
        if (e, r) != (evicted, refused) {
            tracing::info!(
                shard = shard.id,
                evicted = e - evicted,
                refused_older = r - refused,
                records = shard.records(),
                evicted_total = e,
                "store full: oldest records evicted, older new ones not stored"
            );
            (evicted, refused) = (e, r);
        }
        let c = refused_per_ip.get();
        if c != connections {
            tracing::warn!(
                shard = shard.id,
                refused = c - connections,
                max_connections_per_ip = per_ip.limit(),
                "connections refused: too many from one address"
            );
            connections = c;
        }
    }
}

/// Drops records older than `ttl` (by client time), a few thousand slots
/// every 10 ms, so a large store is swept without a pause.
pub(super) async fn expire_records(shard: Rc<Shard>, ttl: Duration) {
    const SLOTS_PER_STEP: usize = 4096;
    let mut cursor = 0;
    while !shard.stop.is_requested() {
        glommio::timer::sleep(Duration::from_millis(10)).await;
        let cutoff = lines::now().saturating_sub(ttl);
        let removed = shard.expire(&mut cursor, cutoff, SLOTS_PER_STEP);
        if removed > 0 {
            tracing::debug!(shard = shard.id, removed, "expired records");
        }
    }
}

/// Lets connections finish the replies they owe, then waits until every
/// link that is up has sent what the store holds, all within
/// [`DRAIN_DEADLINE`]; logs what was left.
pub(super) async fn drain(shard: &Shard) {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while shard.connections.count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Records other shards routed here just before they stopped reading.
    glommio::timer::sleep(Duration::from_millis(100)).await;
    let pending = || {
        shard
            .links()
            .iter()
            .any(|l| l.connected.get() && shard.has_unsent(l.cursor))
    };
    while pending() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // The journal writes and syncs what it has not yet (`everysec` too).
    while shard.durability().is_some_and(|d| !d.idle()) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    let behind: Vec<String> = shard
        .links()
        .iter()
        .map(|l| format!("{}={}", l.neighbour, shard.unsent(l.cursor)))
        .collect();
    tracing::info!(
        shard = shard.id,
        records = shard.records(),
        connections_left = shard.connections.count(),
        links_behind = %behind.join(","),
        "shard stopped"
    );
}
