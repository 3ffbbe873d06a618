//! A shard's accept loops, one per listener: each connection is checked
//! against the shard's connection limit and the per-IP limit, registered
//! with the shard (for the idle sweep and the stop), and served by its own
//! task with the admission rules in force when it came.

use crate::net::admission::{Held, Port};
use crate::net::connection;
use crate::net::link::incoming;
use crate::net::per_ip::PerIp;
use crate::net::phones;
use crate::net::route::Router;
use crate::process::live::Live;
use glommio::net::TcpListener;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// What an accept loop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Door {
    /// Lines: the client protocol (plain or TLS), or links.
    Lines(Port),
    /// Phone apps over HTTP, or HTTPS.
    Phones {
        /// Inside TLS.
        https: bool,
    },
}

/// Failed accepts of one listener, told in at most one log line a second.
#[derive(Default)]
struct AcceptFailures {
    /// Failures not yet told.
    untold: u64,
    /// When the last line was written.
    told_at: Option<std::time::Instant>,
}

impl AcceptFailures {
    /// Counts a failure at `now`; returns how many to tell (this one
    /// included) when a line is due.
    fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        self.untold += 1;
        let due = self.told_at.map_or(true, |at| {
            now.saturating_duration_since(at) >= Duration::from_secs(1)
        });
        if !due {
            return None;
        }
        self.told_at = Some(now);
        Some(std::mem::take(&mut self.untold))
    }
}

/// What an accept loop turns away.
pub(super) struct Limit {
    /// Connections per source address, when limited (clients only).
    pub(super) per_ip: Option<Arc<PerIp>>,
    /// Connections refused by `per_ip`, for the once-a-second log line.
    pub(super) refused_per_ip: Rc<std::cell::Cell<u64>>,
}

/// Accepts connections on one port until the shard stops, each served by
/// its own task with the admission rules in force when it came.
pub(super) async fn accept(
    listener: TcpListener,
    door: Door,
    limit: Limit,
    router: Rc<Router>,
    live: Rc<Live>,
) {
    let shard = live.shard.clone();
    let id = shard.id;
    let mut failures = AcceptFailures::default();
    // Checked on every turn, not only by the race below: an accept that
    // fails at once (out of file descriptors, which the kernel reserves
    // before it waits) never lets the stop branch be polled.
    while !shard.stop.is_requested() {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stop.wait().await;
            None
        });
        let stream = match accepted.await {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of file descriptors or memory: back off, keep serving
                // those already here, and say so once a second, not on
                // every retry.
                if let Some(failed) = failures.note(std::time::Instant::now()) {
                    tracing::warn!(
                        shard = id,
                        ?door,
                        error = %e,
                        failed,
                        "accept failed; retrying every 50 ms (out of file descriptors? see tuning.md)"
                    );
                }
                futures_lite::future::or(
                    glommio::timer::sleep(Duration::from_millis(50)),
                    shard.stop.wait(),
                )
                .await;
                continue;
            }
        };
        let admission = live.admission.borrow().clone();
        let max_connections = admission.max_connections;
        // Links count too: the peer port is as open to strangers as the
        // client port until the handshake.
        if shard.connections.count() >= max_connections {
            shard.metrics.refused.connection_limit.inc();
            tracing::warn!(
                shard = id,
                ?door,
                max_connections,
                "connection refused: shard at its connection limit"
            );
            drop(stream);
            continue;
        }
        // A connection whose address cannot be read is already gone; it
        // is served (and ends at once) without a place.
        let admitted = match (&limit.per_ip, stream.peer_addr()) {
            (Some(per_ip), Ok(peer)) if per_ip.limit() != u32::MAX => {
                match per_ip.admit(peer.ip()) {
                    Some(admitted) => Some(admitted),
                    None => {
                        shard.metrics.refused.per_ip.inc();
                        limit.refused_per_ip.set(limit.refused_per_ip.get() + 1);
                        drop(stream);
                        continue;
                    }
                }
            }
            _ => None,
        };
        // Clients idle out by the shard's sweep; links are watched by
        // their sessions.
        let peer = door == Door::Lines(Port::Peer);
        let idle_after = (!peer).then_some(admission.idle_timeout);
        let registered = shard
            .connections
            .register(stream.as_raw_fd(), peer, idle_after);
        let held = Held::new(registered, admitted);
        let router = router.clone();
        // Each door spawns a task of its own type: one task type for all
        // would size every client connection's task for the largest
        // door's future (a phone app's HTTP connection, kilobytes).
        match door {
            Door::Lines(Port::Peer) => {
                glommio::spawn_local(incoming::serve(stream, router, admission, held)).detach();
            }
            Door::Lines(port) => {
                connection::spawn(stream, port, router, admission, held);
            }
            Door::Phones { https } => {
                glommio::spawn_local(phones::serve(stream, https, router, admission, held))
                    .detach();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn failed_accepts_are_told_at_once_then_at_most_once_a_second_with_a_count() {
        let mut failures = AcceptFailures::default();
        let t0 = Instant::now();
        assert_eq!(failures.note(t0), Some(1), "the first is told at once");
        let ms = |n| t0 + Duration::from_millis(n);
        // Retries every 50 ms: the next 19 wait for the second to pass.
        for n in 1..20 {
            assert_eq!(failures.note(ms(50 * n)), None, "retry {n}");
        }
        assert_eq!(failures.note(ms(1000)), Some(20));
        assert_eq!(failures.note(ms(1500)), None);
        assert_eq!(failures.note(ms(2000)), Some(2));
    }
}
