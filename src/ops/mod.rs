//! The ground floor every layer bumps: the counters each shard keeps
//! (`metrics`, with the JSON of `/status`), their Prometheus text
//! (`prometheus`) and the flood trees' per-link figures (`tree_metrics`). What reads them for people, the admin endpoint
//! and `herd status`, is in `admin`, above.

pub(crate) mod metrics;
pub(crate) mod prometheus;
pub(crate) mod tree_metrics;
