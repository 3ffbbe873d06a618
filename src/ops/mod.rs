//! The ground floor every layer bumps: the counters each shard keeps
//! (`metrics`, with their Prometheus text) and the flood trees' per-link
//! figures (`tree_metrics`). What reads them for people, the admin endpoint
//! and `herd status`, is in `admin`, above.

pub(crate) mod metrics;
pub(crate) mod tree_metrics;
