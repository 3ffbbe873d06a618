//! The per-IP connection limit: how many client connections each source
//! address holds on this server, across all shards.
//!
//! Shared by every shard (a mutex), but touched only when a connection is
//! accepted and when it closes, never per line. No I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open connections per source address, up to a limit.
#[derive(Debug)]
pub(crate) struct PerIp {
    /// Changed in place by a reload; `u32::MAX` is no limit.
    limit: std::sync::atomic::AtomicU32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; dropping it (when the connection ends) frees
/// its place.
#[derive(Debug)]
pub(crate) struct Admitted {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// At most `limit` connections per address.
    pub(crate) fn new(limit: u32) -> PerIp {
        PerIp {
            limit: std::sync::atomic::AtomicU32::new(limit),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn open(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        // The map is a plain count: a panic elsewhere while it was held
        // cannot leave it half-updated, so a poisoned lock is still good.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection from `ip` in, or `None` when that address
    /// already holds the limit.
    pub(crate) fn admit(self: &Arc<PerIp>, ip: IpAddr) -> Option<Admitted> {
        let mut open = self.open();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit() {
            return None;
        }
        *count += 1;
        Some(Admitted {
            per_ip: self.clone(),
            ip,
        })
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes the limit (a reload); connections over a lowered limit stay,
    /// new ones wait until the address is under it.
    pub(crate) fn set_limit(&self, limit: u32) {
        self.limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections open from `ip` now.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> u32 {
        self.open().get(&ip).copied().unwrap_or(0)
    }

    /// Addresses with a connection open (entries at zero are removed).
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        self.open().len()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.per_ip.open();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_the_limit_and_a_closed_connection_frees_a_place() {
        let per_ip = Arc::new(PerIp::new(2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = per_ip.admit(a);
        let second = per_ip.admit(a);
        assert!(first.is_some() && second.is_some());
        assert!(per_ip.admit(a).is_none(), "a third from the same address");
        assert!(per_ip.admit(b).is_some(), "another address is not affected");
        drop(first);
        assert_eq!(per_ip.count(a), 1);
        let third = per_ip.admit(a);
        assert!(third.is_some());
        drop((second, third));
        assert_eq!(per_ip.addresses(), 0, "no entry left for closed addresses");
    }
}
