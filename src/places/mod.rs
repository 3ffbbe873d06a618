//! WHATSAT's Places: a pure half (the answers, their query keys, the
//! rendered reply bytes and the per-shard cache) and a runtime half (the
//! HTTP(S) client of the upstream, per shard).
//!
//! Pure, and held to it by CI's source scan: [`answer`], [`geo`], [`key`],
//! `cache`, `rendered`, and the upstream's answer classification
//! (`upstream/classify.rs`). Runtime: the rest of [`upstream`]. The local
//! mock upstream is not here: it is the `herd-places-mock` binary
//! (`places-mock/`).

pub mod answer;
pub(crate) mod cache;
pub mod geo;
pub mod key;
pub mod rendered;
pub mod upstream;
