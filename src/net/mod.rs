//! The network edge of a shard: client and incoming link connections, the
//! identity of clients and TLS for them, the route from a connection to the
//! owner shard, TLS on links, the per-IP limit, handshake nonces, an
//! incoming link's flood-tree lines, and hyper on glommio for the HTTP
//! parts.

pub mod certs;
pub(crate) mod client_auth;
pub mod client_tls;
pub(crate) mod connection;
pub mod link_tls;
pub mod nonce;
pub(crate) mod per_ip;
pub mod phones;
pub(crate) mod route;
pub(crate) mod tree_in;
