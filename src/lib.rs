//! herd: a Linux-only, io_uring, thread-per-core server herd for real-time
//! mobile location updates.
//!
//! A command flows one way through the folders: a socket in [`net`]
//! (framing and parsing from [`pure`]) goes to its owner `shard`, whose
//! store (`pure::store`, also the replication log) the links to neighbours
//! read (`net::link`), and whose WHATSATs ask [`places`]; the reply goes
//! back as a value. [`ops`] counts what operators see, [`admin`] shows it;
//! [`process`] starts and stops it all ([`start`] is the entry point); the
//! `herd` binary (`src/bin/herd/`) is the command line around it.
//!
//! - [`pure`]: the rules as values, no I/O, no runtime, no clock.
//! - [`ops`]: the counters every layer bumps, and their rendering.
//! - `rt`: hyper on glommio, for every HTTP part.
//! - [`places`]: Places answers (pure) and the upstream client (runtime).
//! - `shard`: the owner side: a shard's state, its flood trees, its journal.
//! - [`net`]: connections (lines and phone apps' HTTP), routing to the
//!   owner, links in and out, TLS.
//! - [`admin`]: the admin endpoint and `herd status`.
//! - [`process`]: start-up, stop and reload ([`start`]), the config file.
//! - `src/bin/herd/`: the CLI, `herd serve` (logging, signals, systemd),
//!   `herd up`, `herd certs`.

// The server has no unsafe code, and must keep it that way.
#![forbid(unsafe_code)]
// Whatever no user of the library needs is pub(crate), so that the
// compiler finds what nothing uses.
#![warn(unreachable_pub)]

pub mod admin;
pub mod net;
pub mod ops;
pub mod places;
pub mod process;
pub mod pure;
pub mod rt;
pub(crate) mod shard;

pub use process::server::{start, Bound, Running, StartError, StartOptions};
pub use pure::config::Config;
