//! What operators see: the counters each shard keeps (`metrics`), the
//! admin HTTP endpoint that serves them (`admin`), and `herd status`
//! ([`status`] fetches, [`status_view`] renders).

pub(crate) mod admin;
pub(crate) mod metrics;
pub mod status;
pub mod status_view;
pub(crate) mod tree_metrics;
