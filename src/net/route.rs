//! Routing: sends each command to the shard that owns its client id, or runs
//! it right here when this shard is the owner.
//!
//! Hides the channel mesh from connection code, Seastar-style: callers ask
//! the [`Router`] and never learn which shard answered. Channels are bounded,
//! so a busy owner slows its senders down instead of letting queues grow.

use crate::pure::protocol;
use crate::pure::record::Record;
use crate::pure::ring::Ring;
use crate::shard::Shard;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};
use std::rc::Rc;

/// Work sent to an owner shard.
pub(crate) enum ToOwner {
    /// Apply (and so flood) a record that arrived in the given run of the
    /// neighbour its source tag names (0: an IAMAT, or no run known).
    Record(Record, u64),
    /// Apply a record, and answer once the journal holds it on disk
    /// (`persistence.fsync: always`).
    Durable(Record, oneshot::Sender<()>),
    /// Answer a WHATSAT.
    Nearby {
        /// Client id.
        client_id: Box<str>,
        /// Radius in kilometres.
        radius_km: f64,
        /// Results to keep.
        max_results: usize,
        /// Where the reply goes; `None` when the client has no record.
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
}

/// A client's record that [`Router::try_record`] could not apply at once:
/// owned by another shard (`owner`), or to be acknowledged from the disk.
pub(crate) struct Pending<'r> {
    record: Record,
    owner: Option<(&'r Senders<ToOwner>, usize)>,
}

/// A record from a link that [`Router::try_route`] found owned by another
/// shard (`owner`); `run` is its neighbour's run.
pub(crate) struct Forward<'r> {
    record: Record,
    run: u64,
    senders: &'r Senders<ToOwner>,
    owner: usize,
}

/// Routes commands to their owner shard.
pub(crate) struct Router {
    shard: Rc<Shard>,
    ring: Ring,
    senders: Option<Senders<ToOwner>>,
}

impl Router {
    /// A router for `shard`; `senders` is `None` when there is one shard.
    pub(crate) fn new(shard: Rc<Shard>, ring: Ring, senders: Option<Senders<ToOwner>>) -> Router {
        Router {
            shard,
            ring,
            senders,
        }
    }

    /// This router's own shard.
    pub(crate) fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// Applies a record right here when this shard owns it and no disk
    /// acknowledgement is awaited: the common case, done without a future.
    /// Otherwise hands the record back with its owner, for
    /// [`Router::record_acked`], so the ring is asked once.
    pub(crate) fn try_record(&self, record: Record) -> Option<Pending<'_>> {
        let owner = self.owner_elsewhere(record.client_id());
        if owner.is_none() && !self.shard.acks_wait() {
            self.shard.apply(record, 0);
            return None;
        }
        Some(Pending { record, owner })
    }

    /// Applies a record [`Router::try_record`] handed back, on its owner
    /// shard. With `fsync: always` it also returns what answers once the
    /// record is on disk, which the reply must wait for.
    pub(crate) async fn record_acked(&self, pending: Pending<'_>) -> Option<oneshot::Receiver<()>> {
        let Pending { record, owner } = pending;
        if !self.shard.acks_wait() {
            match owner {
                Some((senders, owner)) => {
                    send(senders, owner, ToOwner::Record(record, 0)).await;
                }
                None => self.shard.apply(record, 0),
            }
            return None;
        }
        let (done, on_disk) = oneshot::channel();
        match owner {
            // A failed send drops `done`, which says "not on disk".
            Some((senders, owner)) => {
                send(senders, owner, ToOwner::Durable(record, done)).await;
            }
            None => self.shard.apply_durable(record, done),
        }
        Some(on_disk)
    }

    /// Applies a record from a link right here when this shard owns it,
    /// without a future; `run` is the run of the neighbour it came from
    /// (see [`Shard::apply`]). Otherwise hands it back with its owner, for
    /// [`Router::forward`].
    pub(crate) fn try_route(&self, record: Record, run: u64) -> Option<Forward<'_>> {
        match self.owner_elsewhere(record.client_id()) {
            Some((senders, owner)) => Some(Forward {
                record,
                run,
                senders,
                owner,
            }),
            None => {
                self.shard.apply(record, run);
                None
            }
        }
    }

    /// Sends a record from a link that [`Router::try_route`] handed back
    /// to its owner shard.
    pub(crate) async fn forward(&self, forward: Forward<'_>) {
        let Forward {
            record,
            run,
            senders,
            owner,
        } = forward;
        send(senders, owner, ToOwner::Record(record, run)).await;
    }

    /// Loads into cache where this shard will look up the records of the
    /// IAMAT and AT lines among `lines` (a read not framed yet): one pass
    /// that has every lookup's first load in flight at once. Records owned
    /// elsewhere are left to their shard.
    pub(crate) fn prefetch<'a>(&self, lines: impl Iterator<Item = &'a [u8]>) {
        let ids = lines
            .filter_map(protocol::peek_client_id)
            .filter(|id| self.owner_elsewhere(id).is_none());
        self.shard.prefetch(ids);
    }

    /// The shard that owns `client_id` and the way to it, unless it is
    /// this one.
    fn owner_elsewhere(&self, client_id: impl AsRef<[u8]>) -> Option<(&Senders<ToOwner>, usize)> {
        let senders = self.senders.as_ref()?;
        let owner = self.ring.owner(client_id);
        (owner != self.shard.id).then_some((senders, owner))
    }

    /// The WHATSAT reply from the owner shard, `None` if the client is unknown.
    pub(crate) async fn nearby(
        &self,
        client_id: &str,
        radius_km: f64,
        max_results: usize,
    ) -> Option<Vec<u8>> {
        let Some((senders, owner)) = self.owner_elsewhere(client_id) else {
            return self.shard.nearby(client_id, radius_km, max_results).await;
        };
        let (reply, answer) = oneshot::channel();
        let msg = ToOwner::Nearby {
            client_id: client_id.into(),
            radius_km,
            max_results,
            reply,
        };
        if !send(senders, owner, msg).await {
            return None;
        }
        answer.await.ok().flatten()
    }
}

/// Sends work to `owner` (waits while that shard's channel is full); false
/// when the owner has stopped receiving, which happens only at shutdown.
async fn send(senders: &Senders<ToOwner>, owner: usize, msg: ToOwner) -> bool {
    let what = match msg {
        ToOwner::Record(..) | ToOwner::Durable(..) => "record not applied",
        ToOwner::Nearby { .. } => "WHATSAT not answered",
    };
    if senders.send_to(owner, msg).await.is_err() {
        tracing::warn!(owner, "owner shard gone; {what}");
        return false;
    }
    true
}

/// Serves the work other shards send to this one, until they all close.
pub(crate) fn serve_owner(shard: Rc<Shard>, mut receivers: Receivers<ToOwner>) {
    for (peer, receiver) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = receiver.recv().await {
                match msg {
                    ToOwner::Record(record, run) => shard.apply(record, run),
                    ToOwner::Durable(record, done) => shard.apply_durable(record, done),
                    ToOwner::Nearby {
                        client_id,
                        radius_km,
                        max_results,
                        reply,
                    } => {
                        // Places may be slow: answer in a task of its own so
                        // records behind it in this channel are not held up.
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let answer = shard.nearby(&client_id, radius_km, max_results).await;
                            // The asking connection may have gone; nothing to do then.
                            let _ = reply.send(answer);
                        })
                        .detach();
                    }
                }
            }
            tracing::debug!(peer, "channel from shard closed");
        })
        .detach();
    }
}
