//! WHATSAT's Places: a pure half (the answers, their query keys, the
//! rendered reply bytes and the per-shard cache) and a runtime half (the
//! HTTP(S) client of the upstream, per shard, and a local mock upstream).
//!
//! Pure, and held to it by CI's source scan: [`answer`], [`key`],
//! [`cache`], [`rendered`]. Runtime: [`upstream`], [`mock`].

pub mod answer;
pub mod cache;
pub mod key;
pub mod mock;
pub mod rendered;
pub mod upstream;
