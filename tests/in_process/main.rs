//! Servers started in this test process with `herd::start` (no process
//! spawned, every port chosen by the kernel), spoken to over TCP. Tests
//! about processes (signals, kill -9, `herd up`, log files) spawn them in
//! the other test binaries.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

mod bounds;
mod eviction;
mod protocol;
mod start;
