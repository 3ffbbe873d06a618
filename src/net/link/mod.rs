//! A link's I/O, both ends: the connection this server dials to each
//! neighbour to send its records (`outgoing`), the connection a neighbour
//! dials here to send its own (`incoming`, with its flood-tree lines in
//! `tree_in`), and mutual TLS around either (`tls`). What the lines mean
//! is decided by the sessions in `pure/link_session.rs`; what a link sends
//! is read from the owner's store (`pure/store/`), whose cursor per link
//! is the shard's state (`shard::LinkStatus`).

pub(crate) mod incoming;
pub(crate) mod outgoing;
pub mod tls;
pub(crate) mod tree_in;
