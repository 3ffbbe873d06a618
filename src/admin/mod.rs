//! What reads everything, for people: the admin endpoint (`/metrics`,
//! `/healthz`, `/readyz`) and the `herd status` client with its view. Above
//! the layers it reads; the counters themselves are in `ops`, the ground
//! floor every layer bumps.

pub(crate) mod endpoint;
pub mod status;
pub mod status_view;
