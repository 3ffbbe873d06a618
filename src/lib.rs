//! herd: a Linux-only, io_uring, thread-per-core server herd for real-time
//! mobile location updates.
//!
//! The pure core (no I/O, no executor): [`protocol`], [`framing`],
//! [`record`], [`store`] (also the replication log), [`ring`],
//! [`link_session`] (the link protocol), [`places`], [`rendered`],
//! [`answer_cache`], [`nearby_key`], [`config`], [`reload`] (what a new
//! config changes), [`metrics`] (counters and their Prometheus and JSON
//! forms), [`status_view`].
//! The shell: [`connection`] (client sockets), [`route`] (to the owner
//! shard), [`shard`] (owner state), [`link`] (neighbours), [`link_tls`]
//! (optional mutual TLS on links), [`admin`] (the admin HTTP endpoint),
//! [`server`] (start-up, reloads, signals), [`logging`], [`up`],
//! [`status`] (`herd status`) and [`cli`]; for Places over HTTP(S), [`upstream`]
//! (the client, per shard) on [`http_rt`] (hyper on glommio), and
//! [`places_mock`] (a local upstream for tests, the bench and demos).

// The server has no unsafe code, and must keep it that way.
#![forbid(unsafe_code)]

pub mod admin;
pub mod answer_cache;
pub mod catchup;
pub mod cli;
pub mod config;
pub mod connection;
pub mod framing;
pub mod http_rt;
pub mod link;
pub mod link_session;
pub mod link_tls;
pub mod logging;
pub mod metrics;
pub mod nearby_key;
pub mod nonce;
pub mod per_ip;
pub mod places;
pub mod places_mock;
pub mod protocol;
pub mod record;
pub mod reload;
pub mod rendered;
pub mod ring;
pub mod route;
pub mod server;
pub mod shard;
pub mod status;
pub mod status_view;
pub mod store;
pub mod up;
pub mod upstream;
