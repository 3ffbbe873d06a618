//! What every executor of a load run shares (read-only), and the run's
//! clock.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// What every executor needs to know; shared read-only across threads.
pub(super) struct Plan {
    pub(super) addr: SocketAddr,
    /// `--addr` as given: the `Host` of posts.
    pub(super) host: String,
    /// Posts of this app instead of IAMAT lines.
    pub(super) post: Option<super::PostApp>,
    pub(super) server: Option<String>,
    pub(super) connections: usize,
    pub(super) depth: usize,
    pub(super) rate: Option<f64>,
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
    pub(super) clients: u64,
    /// Requests to send in all; `None`: until the end of the window.
    pub(super) requests: Option<u64>,
    pub(super) whatsat_pct: u32,
    pub(super) radius: String,
    pub(super) max_results: u32,
    pub(super) base_secs: u64,
    pub(super) intervals: usize,
    pub(super) max_lag_ns: u64,
    /// Set when any executor finds the generator cannot keep up.
    pub(super) abort: AtomicBool,
    /// Each connection AUTHs with a token of this key first.
    pub(super) token_key: Option<herd::pure::token::TokenKey>,
    /// The TLS client every connection speaks through, if any.
    pub(super) tls: Option<crate::tls::Client>,
}

/// `total` split evenly over `n` parts; part `i` of it (the first
/// `total % n` parts take one more).
pub(super) fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((i as u64) < total % n)
}

impl Plan {
    /// Clients owned by connection `c`.
    pub(super) fn clients_of(&self, c: usize) -> u32 {
        share(self.clients, self.connections, c).min(u64::from(u32::MAX)) as u32
    }

    /// Requests connection `c` may send in all.
    pub(super) fn quota_of(&self, c: usize) -> u64 {
        self.requests
            .map_or(u64::MAX, |n| share(n, self.connections, c))
    }
}

/// The run's instants, the same on every executor.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    pub(super) t0: Instant,
    pub(super) warm_end: Instant,
    pub(super) end: Instant,
    pub(super) drain_end: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(clients: u64, connections: usize) -> Plan {
        Plan {
            addr: "127.0.0.1:1".parse().unwrap(),
            host: "127.0.0.1:1".into(),
            post: None,
            server: None,
            connections,
            depth: 1,
            rate: None,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            clients,
            requests: Some(7),
            whatsat_pct: 0,
            radius: "10".into(),
            max_results: 5,
            base_secs: 1_700_000_000,
            intervals: 0,
            max_lag_ns: 1_000_000,
            abort: AtomicBool::new(false),
            token_key: None,
            tls: None,
        }
    }

    #[test]
    fn clients_are_partitioned_across_connections() {
        let p = plan(10, 4);
        let shares: Vec<u32> = (0..4).map(|c| p.clients_of(c)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        assert_eq!(shares.iter().map(|&s| u64::from(s)).sum::<u64>(), 10);
        let quotas: Vec<u64> = (0..4).map(|c| p.quota_of(c)).collect();
        assert_eq!(quotas, [2, 2, 2, 1]);
    }
}
