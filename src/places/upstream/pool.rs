//! The keep-alive pool of one `Upstream`: idle connections handed out most
//! recently used first (a dead one is dropped, not used), a new connection
//! when none is idle, and a connection kept after use only if its response
//! was read completely and there is room.
//!
//! Separate because reuse has its own rules (what may be pooled, and that
//! a reused connection may turn out dead, which makes a failed send safe to
//! retry); how a new connection is made is the connector's.

use std::cell::RefCell;

use super::classify::CallError;
use super::connect::{Connector, Sender};

/// Idle keep-alive connections to one target, and the way to make new ones.
pub(super) struct Pool {
    /// Makes the connections.
    connector: Connector,
    /// Idle keep-alive connections, most recently used last.
    idle: RefCell<Vec<Sender>>,
    /// How many idle connections to keep.
    keep: usize,
}

impl Pool {
    /// An empty pool that keeps up to `keep` idle connections.
    pub(super) fn new(connector: Connector, keep: usize) -> Pool {
        Pool {
            connector,
            idle: RefCell::new(Vec::new()),
            keep,
        }
    }

    /// An idle connection that is still usable, or a new one, and whether it
    /// was reused. Bounded: each turn drops one.
    pub(super) async fn checkout(&self) -> Result<(Sender, bool), CallError> {
        loop {
            let popped = self.idle.borrow_mut().pop();
            let Some(mut sender) = popped else { break };
            if sender.is_closed() {
                continue;
            }
            // Just after a response the connection task may not have marked the
            // connection ready yet; waiting here is short and under the timeout.
            if sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connector.connect().await?, false))
    }

    /// Keeps a connection whose response was read completely, if there is room.
    pub(super) fn checkin(&self, sender: Sender) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.keep && !sender.is_closed() {
            idle.push(sender);
        }
    }
}
