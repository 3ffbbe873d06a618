//! What a shard's connections are admitted with: which port they came in
//! on, and the rules and limits in force when they came (a reload makes a
//! new [`Admission`] for the connections after it).

use crate::net::client_auth::Clients;
use crate::net::client_tls::ClientTls;
use crate::net::link::tls::LinkTls;
use crate::net::per_ip::Admitted;
use crate::ops::metrics::Inbound;
use crate::pure::catchup::Marks;
use crate::pure::link_session::Liveness;
use crate::pure::server_ids::ServerIds;
use crate::shard::flood::Flood;
use crate::shard::{Activity, Registered};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Which listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// The client port: IAMAT and WHATSAT.
    Client,
    /// The client TLS port: the client protocol inside TLS.
    ClientTls,
    /// The peer port: links from neighbours only.
    Peer,
}

/// Who may connect, with what limits, and how links prove who they are.
pub(crate) struct Admission {
    /// This server's name.
    pub me: Rc<str>,
    /// This server's number in `ids`, the origin tag of its clients'
    /// records: looked up once, not by name for every IAMAT.
    pub my_id: u8,
    /// Neighbour names when this admission was made, indexed by
    /// [`NeighbourId`].
    pub neighbours: Vec<Rc<str>>,
    /// The shard's neighbours now (a reload changes them): an incoming link
    /// from a server that is no longer a neighbour is closed.
    pub live_neighbours: Rc<std::cell::RefCell<Vec<Rc<str>>>>,
    /// Shared secret of the herd.
    pub secret: Option<String>,
    /// Mutual TLS on the peer port, when the herd has it.
    pub tls: Option<LinkTls>,
    /// TLS on the client TLS port, when the server has one.
    pub client_tls: Option<ClientTls>,
    /// Who client connections may speak for, and read (live).
    pub clients: Clients,
    /// A phone app's HTTP request must be whole within this of its start.
    pub http_request_timeout: Duration,
    /// Line-length limit of clients.
    pub max_line: usize,
    /// Line-length limit of links: any AT line a valid IAMAT can produce.
    pub link_max_line: usize,
    /// Heartbeats and silence detection of links.
    pub liveness: Liveness,
    /// How far ahead of this server's clock a client time may be.
    pub max_future_skew: Duration,
    /// A client silent for this long is closed.
    pub idle_timeout: Duration,
    /// A client that takes no replies for this long is dropped.
    pub write_timeout: Duration,
    /// Connections one shard holds at once.
    pub max_connections: usize,
    /// How far each neighbour stream was received (shared by all shards).
    pub marks: Arc<Marks>,
    /// The server's open incoming links (shared by all shards).
    pub inbound: Arc<Inbound>,
    /// Numbers for server names: records' tags.
    pub ids: Arc<ServerIds>,
    /// This server's run, said to neighbours (`TREE`); `None` to speak
    /// only the earlier link rules.
    pub run: Option<u64>,
    /// The fingerprint of this server's graph (`TREE`), or `None` when it
    /// does not send along trees.
    pub topology: Option<u64>,
    /// The server's flood-tree state.
    pub flood: Arc<Flood>,
    /// How often links announce digests.
    pub announce: Duration,
}

/// What a connection holds until it ends: its place among the shard's
/// connections (where the idle sweep and a stop find it) and, under a
/// per-address limit, its place there. Taken before the connection's task
/// is spawned, and moved into it.
pub(crate) struct Held {
    registered: Registered,
    // Boxed: there is one only under a per-address limit, and every
    // connection's task would otherwise carry its room.
    _admitted: Option<Box<Admitted>>,
}

impl Held {
    /// Holds `registered` and `admitted` until dropped.
    pub(crate) fn new(registered: Registered, admitted: Option<Admitted>) -> Held {
        Held {
            registered,
            _admitted: admitted.map(Box::new),
        }
    }

    /// What the connection reports its reads to.
    pub(crate) fn activity(&self) -> &Rc<Activity> {
        self.registered.activity()
    }
}
