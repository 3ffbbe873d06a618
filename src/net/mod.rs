//! The network edge of a shard: client connections (lines in
//! `connection`, phone apps' HTTP in `phones`), the identity of clients and
//! TLS for them, the route from a connection to the owner shard, links to
//! and from neighbours (`link/`), the per-IP limit and handshake nonces.

pub(crate) mod admission;
pub mod certs;
pub(crate) mod client_auth;
pub mod client_tls;
pub(crate) mod connection;
pub(crate) mod lines;
pub mod link;
pub mod nonce;
pub(crate) mod per_ip;
pub mod phones;
pub(crate) mod route;
