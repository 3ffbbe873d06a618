//! One shard's life, in the order it goes: bind its listeners, say where,
//! join the other shards, build its state (Places, store, journal), open its
//! links and its owner service, say it serves, run its chores, accept until
//! the stop, then drain.

use crate::admin::endpoint;
use crate::net::admission::Port;
use crate::net::client_auth::{ClientRules, Clients};
use crate::net::link::outgoing as link;
use crate::net::route::{self, Router, ToOwner};
use crate::places::answer::{AnswerSettings, CachedOfflinePlaces, Clock, Places};
use crate::places::key::Grid;
use crate::places::upstream::Upstream;
use crate::process::accept::{accept, Door, Limit};
use crate::process::chores::{close_idle_clients, drain, expire_records, publish, report_refusals};
use crate::process::live::{admission, link_settings, Live};
use crate::process::plan::{shard_max_records, Bound, Herald, ShardPlan, Started};
use crate::pure::config::Config;
use crate::pure::ring::Ring;
use crate::shard::flood;
use crate::shard::journal::{self, Durability};
use crate::shard::Shard;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The mesh of channels between a server's shards.
pub(super) type Mesh = MeshBuilder<ToOwner, Full>;

/// One shard: its listeners, its links, its owner service, then its
/// accept loops until the stop.
pub(super) async fn run_shard(
    plan: ShardPlan,
    mesh: Option<Mesh>,
    herald: &mut Herald,
) -> Result<(), String> {
    // Bound before anything else, so that the first shard can tell the
    // others which port a port 0 became.
    let mut listeners = Listeners::bind(&plan)?;
    plan.registry
        .set_addresses(listeners.bound.client, listeners.bound.peer);
    herald.say(Started::Bound(listeners.bound));
    if let Some(shard) = plan.fail_before_join {
        // The first shard's number on the mesh is not known yet; the fault
        // names shards by start order, which the herald knows.
        if herald.shard == shard {
            return Err(format!(
                "shard {shard}: failed before joining the mesh (test fault)"
            ));
        }
    }
    let (senders, receivers) = join(&plan, mesh).await?;
    // The mesh numbers shards in join order; that number is the shard's
    // place on the ring, so every shard agrees on who owns what.
    let id = senders.as_ref().map_or(0, |s| s.peer_id());
    // The config in force now: a reload may have come before this shard.
    let (generation, config) = plan.control.current();
    let shard = build_shard(&plan, id, &config)?;
    // The journal's records go in before the links open: the links' cursors
    // are at the start of the store, so neighbours are sent them too, and
    // catch-up fills in what this server missed while it was down.
    apply_journal(&plan, &shard).await?;
    let live = open_links(&plan, &shard, config.clone(), generation);
    if let Some(receivers) = receivers {
        route::serve_owner(shard.clone(), receivers);
    }
    let router = Rc::new(Router::new(shard.clone(), Ring::new(plan.shards), senders));
    if let Some(admin_listener) = listeners.admin.take() {
        let (registry, shard) = (plan.registry.clone(), shard.clone());
        glommio::spawn_local(async move {
            endpoint::serve(admin_listener, registry, shard.stop.wait()).await;
        })
        .detach();
    }
    herald.say(Started::Ready);
    let refused_per_ip = start_chores(&plan, &shard, &live, &config);
    serve(listeners, &plan, router, live, refused_per_ip).await;
    drain(&shard).await;
    Ok(())
}

/// A shard's listeners, bound, and where.
struct Listeners {
    client: TcpListener,
    peer: TcpListener,
    client_tls: Option<TcpListener>,
    http: Option<TcpListener>,
    https: Option<TcpListener>,
    /// The first shard's only.
    admin: Option<TcpListener>,
    bound: Bound,
}

impl Listeners {
    /// Binds every listener the plan names.
    fn bind(plan: &ShardPlan) -> Result<Listeners, String> {
        let at = &plan.bound;
        let bind = |addr: SocketAddr, what: &str| {
            TcpListener::bind(addr).map_err(|e| bind_error(what, addr, e))
        };
        let bind_some =
            |addr: Option<SocketAddr>, what: &str| addr.map(|a| bind(a, what)).transpose();
        let client = bind(at.client, "")?;
        let peer = bind(at.peer, " for links")?;
        let client_tls = bind_some(at.client_tls, " for clients over TLS")?;
        let http = bind_some(at.http, " for phone apps over HTTP")?;
        let https = bind_some(at.https, " for phone apps over HTTPS")?;
        // The admin endpoint is small: one shard serves it, the first
        // started (its number on the mesh is not known yet); the others are
        // not given an admin address.
        let admin = bind_some(at.admin, " for admin requests")?;
        let local = |l: &TcpListener| {
            l.local_addr()
                .map_err(|e| format!("reading a bound address: {e}"))
        };
        let local_some = |l: &Option<TcpListener>| l.as_ref().map(local).transpose();
        let bound = Bound {
            client: local(&client)?,
            peer: local(&peer)?,
            admin: local_some(&admin)?,
            client_tls: local_some(&client_tls)?,
            http: local_some(&http)?,
            https: local_some(&https)?,
        };
        Ok(Listeners {
            client,
            peer,
            client_tls,
            http,
            https,
            admin,
            bound,
        })
    }
}

/// The message of a listener that could not bind `addr`, with why when its
/// port is one the host gives outgoing connections.
fn bind_error(what: &str, addr: SocketAddr, e: glommio::GlommioError<()>) -> String {
    let hint = match &e {
        glommio::GlommioError::IoError(io) => crate::process::host::bind_hint(addr, io),
        _ => String::new(),
    };
    format!("cannot listen{what} on {addr}: {e}{hint}")
}

/// The channels to the other shards (none when this is the only one).
type Joined = (
    Option<glommio::channels::channel_mesh::Senders<ToOwner>>,
    Option<glommio::channels::channel_mesh::Receivers<ToOwner>>,
);

/// Joins the other shards' mesh, unless the server stops first.
async fn join(plan: &ShardPlan, mesh: Option<Mesh>) -> Result<Joined, String> {
    let Some(mesh) = mesh else {
        return Ok((None, None));
    };
    // The join waits for every shard; one that failed never comes, and
    // `start` then asks the rest to stop: this one listens.
    let joined = futures_lite::future::or(async { Some(mesh.join().await) }, async {
        plan.control.stopped().await;
        None
    });
    let (s, r) = joined
        .await
        .ok_or("stopped while waiting for the other shards")?
        .map_err(|e| format!("joining the shard mesh: {e}"))?;
    Ok((Some(s), Some(r)))
}

/// The shard's state: its neighbours, its Places, its store's bounds.
fn build_shard(plan: &ShardPlan, id: usize, config: &Config) -> Result<Rc<Shard>, String> {
    let ids = plan.ids_for(config);
    let neighbours: Vec<(Rc<str>, u8, SocketAddr)> = config
        .server(&plan.name)
        .map(|s| {
            s.neighbours
                .iter()
                .filter_map(|n| Some((Rc::from(n.as_str()), ids.id(n), config.peer_addr(n)?)))
                .collect()
        })
        .unwrap_or_default();
    let shard = Rc::new(Shard::new(
        id,
        neighbours,
        places(plan, id)?,
        // A backstop only: the upstream client times out first, with a
        // message that says where.
        Duration::from_millis(plan.config.limits.places_timeout_ms + 500),
        shard_max_records(config.limits.max_records, plan.shards),
        plan.journal
            .as_ref()
            .map(|j| Rc::new(Durability::new(j.fsync))),
        plan.flood.clone(),
    ));
    shard.set_trees(plan.trees_for(config));
    plan.registry.add_shard(shard.metrics.clone());
    Ok(shard)
}

/// The shard's Places: the upstream, or the offline sample data.
fn places(plan: &ShardPlan, id: usize) -> Result<Rc<dyn Places>, String> {
    let p = &plan.config.places;
    let answers = AnswerSettings {
        cache_bytes: p.cache_bytes,
        grid: Grid::new(p.snap_m),
    };
    let clock: Clock = Rc::new(std::time::Instant::now);
    Ok(match &plan.places {
        // Offline answers are computed once per query too, through the same cache.
        None => Rc::new(CachedOfflinePlaces::new(
            p.cache_entries,
            Duration::from_millis(p.cache_ttl_ms),
            answers,
            clock,
        )),
        Some(settings) => Rc::new(
            Upstream::with_answers(settings.clone(), answers, clock)
                .map_err(|e| format!("shard {id}: places upstream: {e}"))?,
        ),
    })
}

/// Puts the records the journal replayed for this shard into its store,
/// then starts the journal's writer.
async fn apply_journal(plan: &ShardPlan, shard: &Rc<Shard>) -> Result<(), String> {
    let (Some(j), Some(durability)) = (&plan.journal, shard.durability()) else {
        return Ok(());
    };
    let id = shard.id;
    let opened = journal::open(shard, j)
        .await
        .map_err(|e| format!("shard {id}: journal: {e}"))?;
    let records = j
        .replayed
        .records
        .get(id)
        .map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|p| p.into_inner())))
        .unwrap_or_default();
    let read = records.len();
    for record in records {
        shard.apply(record, 0);
        // A large journal: let the executor breathe between records.
        glommio::yield_if_needed().await;
    }
    durability.set_replayed(read);
    tracing::info!(
        shard = id,
        read,
        records = shard.records(),
        "journal applied"
    );
    glommio::spawn_local(journal::run(
        shard.clone(),
        durability.clone(),
        j.clone(),
        opened,
    ))
    .detach();
    Ok(())
}

/// Starts a link to each neighbour, and makes what a reload changes.
fn open_links(
    plan: &ShardPlan,
    shard: &Rc<Shard>,
    config: Arc<Config>,
    generation: u64,
) -> Rc<Live> {
    let neighbours: Rc<RefCell<Vec<Rc<str>>>> = Rc::new(RefCell::new(
        shard.links().iter().map(|l| l.neighbour.clone()).collect(),
    ));
    let link_settings = Rc::new(RefCell::new(link_settings(plan, &config)));
    for status in shard.links() {
        glommio::spawn_local(link::run(status, link_settings.clone(), shard.clone())).detach();
    }
    let clients = Clients {
        rules: Rc::new(RefCell::new(ClientRules::of(&config.clients))),
        failures: plan.auth_failures.clone(),
    };
    Rc::new(Live {
        admission: RefCell::new(Rc::new(admission(plan, &config, &neighbours, &clients))),
        clients,
        plan: plan.clone(),
        shard: shard.clone(),
        config: RefCell::new(config),
        generation: Cell::new(generation),
        link_settings,
        neighbours,
    })
}

/// Starts what a shard does besides serving: following reloads and the
/// stop, publishing its figures, its flood trees' clock, expiring records,
/// logging refusals, closing idle clients. Returns the count of
/// connections the per-IP limit refused, which the accept loops add to.
fn start_chores(
    plan: &ShardPlan,
    shard: &Rc<Shard>,
    live: &Rc<Live>,
    config: &Config,
) -> Rc<Cell<u64>> {
    {
        // Woken by the control's broadcast, never polled: a new config in
        // force, or the stop.
        let (shard, live, control) = (shard.clone(), live.clone(), plan.control.clone());
        glommio::spawn_local(async move {
            loop {
                let changed = control.changed.listen();
                if control.is_stopping() {
                    break;
                }
                live.follow();
                changed.await;
            }
            shard.stop.request();
            shard.connections.stop_reading();
        })
        .detach();
    }
    let limits = &config.limits;
    glommio::spawn_local(publish(shard.clone())).detach();
    glommio::spawn_local(flood::run(
        shard.clone(),
        Duration::from_millis(limits.link_announce_ms),
    ))
    .detach();
    if let Some(ttl) = limits.record_ttl_ms {
        glommio::spawn_local(expire_records(shard.clone(), Duration::from_millis(ttl))).detach();
    }
    // Connections refused by the per-IP limit, logged once a second.
    let refused_per_ip = Rc::new(Cell::new(0u64));
    glommio::spawn_local(report_refusals(
        shard.clone(),
        refused_per_ip.clone(),
        plan.per_ip.clone(),
    ))
    .detach();
    glommio::spawn_local(close_idle_clients(shard.clone(), live.clone())).detach();
    refused_per_ip
}

/// Accepts on every listener until the stop.
async fn serve(
    listeners: Listeners,
    plan: &ShardPlan,
    router: Rc<Router>,
    live: Rc<Live>,
    refused_per_ip: Rc<Cell<u64>>,
) {
    let links_in = glommio::spawn_local(accept(
        listeners.peer,
        Door::Lines(Port::Peer),
        Limit {
            per_ip: None,
            refused_per_ip: refused_per_ip.clone(),
        },
        router.clone(),
        live.clone(),
    ));
    // The per-IP limit is for clients: a neighbour's links are not.
    let client_limit = || Limit {
        per_ip: Some(plan.per_ip.clone()),
        refused_per_ip: refused_per_ip.clone(),
    };
    let others: Vec<_> = [
        (listeners.client_tls, Door::Lines(Port::ClientTls)),
        (listeners.http, Door::Phones { https: false }),
        (listeners.https, Door::Phones { https: true }),
    ]
    .into_iter()
    .filter_map(|(listener, door)| {
        let listener = listener?;
        Some(glommio::spawn_local(accept(
            listener,
            door,
            client_limit(),
            router.clone(),
            live.clone(),
        )))
    })
    .collect();
    accept(
        listeners.client,
        Door::Lines(Port::Client),
        client_limit(),
        router,
        live,
    )
    .await;
    links_in.await;
    for other in others {
        other.await;
    }
}
