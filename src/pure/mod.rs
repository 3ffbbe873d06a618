//! The pure core: the rules of the product as values, with no I/O, no
//! executor, no sockets, no files and no clock (callers pass the time in).
//! CI holds this folder to that with a source scan (`.ci/pure-core`).
//!
//! Not named `core`: that would shadow Rust's own `core` crate in paths.

pub mod auth_limit;
pub(crate) mod catchup;
pub mod cert_names;
pub mod clients;
pub mod config;
pub(crate) mod config_addresses;
pub(crate) mod config_check;
pub(crate) mod config_fields;
pub(crate) mod digest;
pub(crate) mod flood_lines;
mod flood_sim;
pub(crate) mod flood_tree;
pub mod framing;
pub(crate) mod index;
pub(crate) mod journal;
pub mod link_session;
pub mod phones;
pub mod places_fields;
pub mod protocol;
pub(crate) mod record;
pub(crate) mod reload;
pub(crate) mod repair;
pub mod ring;
pub(crate) mod server_ids;
pub(crate) mod store;
pub mod token;
pub(crate) mod tree_out;
