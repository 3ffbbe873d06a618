//! Bounded guessing of client tokens: failed `AUTH`s counted per source
//! address and client id together, at most `limits.client_auth_failures_per_min`
//! in a minute; past that, refused without checking until the minute is out.
//!
//! Per pair, not per address, so that one phone's failures never lock out
//! the others behind the same carrier NAT, and not per client id alone, so
//! that a stranger cannot lock a phone out. The table is bounded: at its
//! size, pairs whose minute is out go first, then any. Pure: the time is a
//! parameter; the shell shares one table between a server's shards.

use std::collections::HashMap;
use std::net::IpAddr;

/// Pairs kept at most: about 100 bytes each.
pub const MAX_PAIRS: usize = 65_536;

/// The window failures are counted in, seconds.
const WINDOW_SECS: u64 = 60;

/// One pair's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the window started (its first failure), UNIX seconds.
    since: u64,
    /// Failures in it.
    failures: u32,
    /// Whether the once-a-window warning was given.
    warned: bool,
}

impl Window {
    fn open(&self, now: u64) -> bool {
        now.saturating_sub(self.since) < WINDOW_SECS
    }
}

/// What to do with an `AUTH` from a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Check the token.
    Check,
    /// Refuse it unchecked; `warn` once per window and pair.
    Limited {
        /// Whether to log a warning now.
        warn: bool,
    },
}

/// Failed `AUTH`s by (source address, client id).
#[derive(Debug)]
pub struct AuthFailures {
    max_per_window: u32,
    pairs: HashMap<(IpAddr, Box<str>), Window>,
    cap: usize,
}

impl AuthFailures {
    /// A table that refuses a pair after `max_per_min` failures in a minute.
    pub fn new(max_per_min: u32) -> AuthFailures {
        AuthFailures::with_cap(max_per_min, MAX_PAIRS)
    }

    /// Like `new`, holding at most `cap` pairs.
    pub fn with_cap(max_per_min: u32, cap: usize) -> AuthFailures {
        AuthFailures {
            max_per_window: max_per_min,
            pairs: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// A reload's new limit, for the pairs counted already too.
    pub fn set_limit(&mut self, max_per_min: u32) {
        self.max_per_window = max_per_min;
    }

    /// Whether an `AUTH` from `ip` for `client` at `now` is checked.
    pub fn admit(&mut self, ip: IpAddr, client: &str, now: u64) -> Admit {
        let max = self.max_per_window;
        let Some(window) = self.pairs.get_mut(&(ip, client.into())) else {
            return Admit::Check;
        };
        if !window.open(now) || window.failures < max {
            return Admit::Check;
        }
        let warn = !window.warned;
        window.warned = true;
        Admit::Limited { warn }
    }

    /// Counts a failed `AUTH`.
    pub fn failed(&mut self, ip: IpAddr, client: &str, now: u64) {
        let key = (ip, Box::<str>::from(client));
        if let Some(window) = self.pairs.get_mut(&key) {
            if window.open(now) {
                window.failures = window.failures.saturating_add(1);
            } else {
                *window = Window {
                    since: now,
                    failures: 1,
                    warned: false,
                };
            }
            return;
        }
        if self.pairs.len() >= self.cap {
            self.pairs.retain(|_, w| w.open(now));
        }
        if self.pairs.len() >= self.cap {
            // Full of open windows: one goes, so the table stays bounded.
            if let Some(victim) = self.pairs.keys().next().cloned() {
                self.pairs.remove(&victim);
            }
        }
        self.pairs.insert(
            key,
            Window {
                since: now,
                failures: 1,
                warned: false,
            },
        );
    }

    /// Pairs held now.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair is held.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PHONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 2));

    #[test]
    fn a_pair_is_checked_until_its_failures_reach_the_limit_then_refused_for_the_minute() {
        let mut table = AuthFailures::new(3);
        for i in 0..3 {
            assert_eq!(table.admit(PHONE, "alice", 1000 + i), Admit::Check);
            table.failed(PHONE, "alice", 1000 + i);
        }
        assert_eq!(
            table.admit(PHONE, "alice", 1010),
            Admit::Limited { warn: true }
        );
        assert_eq!(
            table.admit(PHONE, "alice", 1011),
            Admit::Limited { warn: false }
        );
        assert_eq!(
            table.admit(PHONE, "alice", 1059),
            Admit::Limited { warn: false }
        );
        // The minute from the first failure is out.
        assert_eq!(table.admit(PHONE, "alice", 1060), Admit::Check);
        table.failed(PHONE, "alice", 1060);
        assert_eq!(table.admit(PHONE, "alice", 1061), Admit::Check);
    }

    #[test]
    fn other_clients_behind_the_same_address_and_the_same_client_elsewhere_are_not_locked_out() {
        let mut table = AuthFailures::new(1);
        table.failed(PHONE, "alice", 1000);
        assert!(matches!(
            table.admit(PHONE, "alice", 1001),
            Admit::Limited { .. }
        ));
        assert_eq!(table.admit(PHONE, "bob", 1001), Admit::Check);
        assert_eq!(table.admit(OTHER, "alice", 1001), Admit::Check);
    }

    #[test]
    fn a_zero_limit_refuses_after_nothing_only_once_a_failure_is_known() {
        let mut table = AuthFailures::new(0);
        assert_eq!(table.admit(PHONE, "alice", 1000), Admit::Check);
        table.failed(PHONE, "alice", 1000);
        assert!(matches!(
            table.admit(PHONE, "alice", 1000),
            Admit::Limited { .. }
        ));
        table.set_limit(5);
        assert_eq!(table.admit(PHONE, "alice", 1000), Admit::Check);
    }

    proptest! {
        #[test]
        fn the_table_never_holds_more_than_its_cap(
            failures in prop::collection::vec((0u8..4, "[a-z]{1,3}", 0u64..300), 0..400),
            cap in 1usize..20,
        ) {
            let mut table = AuthFailures::with_cap(2, cap);
            for (ip, client, now) in failures {
                let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, ip));
                table.failed(ip, &client, now);
                prop_assert!(table.len() <= cap);
            }
        }
    }
}
