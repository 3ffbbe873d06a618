//! What operators see: the counters each shard keeps (`metrics`), the
//! admin HTTP endpoint that serves them (`admin`), and `herd status`
//! ([`status`] fetches, [`status_view`] renders).

pub(crate) mod metrics;
