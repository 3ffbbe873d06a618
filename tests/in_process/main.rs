//! Servers started in this test process with `herd::start` (no process
//! spawned, every port chosen by the kernel), spoken to over TCP. Tests
//! about processes (signals, kill -9, `herd up`, log files) spawn them in
//! the other test binaries.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

// The Places mock is not in the library (it is the `herd-places-mock`
// binary): its source is included here, and its own unit tests run once
// more in this binary. The tests use only part of it.
#[allow(dead_code)]
#[path = "../../places-mock/mock.rs"]
mod mock;

mod admin;
mod bounds;
mod clients;
mod eviction;
mod persistence;
mod phones;
mod places_new;
mod places_snap;
mod places_upstream;
mod protocol;
mod start;
