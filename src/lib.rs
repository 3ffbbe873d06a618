//! herd: a Linux-only, io_uring, thread-per-core server herd for real-time
//! mobile location updates.
//!
//! The pure core (no I/O, no executor): [`protocol`], [`framing`],
//! [`record`], [`store`], [`ring`], [`flood`], [`places`], [`config`].
//! The shell: [`connection`] (client sockets), [`route`] (to the owner
//! shard), [`shard`] (owner state), [`link`] (neighbours), [`server`]
//! (start-up), [`up`] and [`cli`]; for Places over HTTP(S), [`upstream`]
//! (the client, per shard) on [`http_rt`] (hyper on glommio), and
//! [`places_mock`] (a local upstream for tests, the bench and demos).

// The server has no unsafe code, and must keep it that way.
#![forbid(unsafe_code)]

pub mod catchup;
pub mod cli;
pub mod config;
pub mod connection;
pub mod flood;
pub mod framing;
pub mod http_rt;
pub mod link;
pub mod logging;
pub mod places;
pub mod places_mock;
pub mod protocol;
pub mod record;
pub mod ring;
pub mod route;
pub mod server;
pub mod shard;
pub mod store;
pub mod up;
pub mod upstream;
