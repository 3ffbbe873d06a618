//! What a shard runs with that a reload changes: the admission rules of
//! new connections, its links' settings, its neighbours and client rules;
//! and how a shard follows a new config in force ([`Live::follow`]).

use crate::net::admission::Admission;
use crate::net::client_auth::{lock_failures, ClientRules, Clients};
use crate::net::link::outgoing::{self as link, LinkSettings};
use crate::process::plan::{shard_max_records, ShardPlan};
use crate::pure::config::Config;
use crate::pure::link_session::Liveness;
use crate::shard::Shard;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How a shard's links dial and pace themselves, from a config.
pub(super) fn link_settings(plan: &ShardPlan, config: &Config) -> LinkSettings {
    let limits = &config.limits;
    let liveness = liveness(config);
    let trees = plan.trees_for(config);
    LinkSettings {
        me: plan.name.as_str().into(),
        secret: config.secret.as_deref().map(Rc::from),
        // Taken at start only (a reload that changes it says so).
        tls: plan.tls.clone(),
        backoff_initial: Duration::from_millis(limits.link_backoff_initial_ms),
        backoff_max: Duration::from_millis(limits.link_backoff_max_ms),
        records_per_sec: limits.link_records_per_sec,
        linger: Duration::from_micros(limits.flood_linger_us),
        liveness,
        write_timeout: liveness.dead_after,
        run: plan.run_for(config),
        topology: plan.run_for(config).map(|_| trees.topology()),
        trees,
        ids: plan.ids_for(config),
        announce: Duration::from_millis(limits.link_announce_ms),
    }
}

pub(super) fn liveness(config: &Config) -> Liveness {
    Liveness::from_heartbeat(
        Duration::from_millis(config.limits.link_heartbeat_ms),
        Duration::from_millis(config.limits.link_timeout_ms),
    )
}

/// Who may connect and with what limits, from a config. `live` is the
/// shard's list of neighbours now, shared by every version of it.
pub(super) fn admission(
    plan: &ShardPlan,
    config: &Config,
    live: &Rc<RefCell<Vec<Rc<str>>>>,
    clients: &Clients,
) -> Admission {
    let limits = &config.limits;
    let ids = plan.ids_for(config);
    Admission {
        me: plan.name.as_str().into(),
        my_id: ids.id(&plan.name),
        neighbours: live.borrow().clone(),
        live_neighbours: live.clone(),
        secret: config.secret.clone(),
        tls: plan.tls.clone(),
        client_tls: plan.client_tls.clone(),
        clients: clients.clone(),
        http_request_timeout: Duration::from_millis(limits.http_request_timeout_ms),
        max_line: limits.max_line_bytes,
        link_max_line: crate::pure::record::max_at_line(limits.max_line_bytes),
        liveness: liveness(config),
        max_future_skew: Duration::from_millis(limits.max_future_skew_ms),
        idle_timeout: Duration::from_millis(limits.client_idle_timeout_ms),
        write_timeout: Duration::from_millis(limits.write_timeout_ms),
        max_connections: limits.max_connections_per_shard,
        marks: plan.marks.clone(),
        inbound: plan.registry.inbound.clone(),
        ids,
        run: plan.run_for(config),
        topology: plan
            .run_for(config)
            .map(|_| plan.trees_for(config).topology()),
        flood: plan.flood.clone(),
        announce: Duration::from_millis(limits.link_announce_ms),
    }
}

/// What a shard changes when a reload puts a new config in force.
pub(super) struct Live {
    pub(super) plan: ShardPlan,
    pub(super) shard: Rc<Shard>,
    /// The config this shard runs with.
    pub(super) config: RefCell<Arc<Config>>,
    pub(super) generation: std::cell::Cell<u64>,
    pub(super) admission: RefCell<Rc<Admission>>,
    pub(super) link_settings: Rc<RefCell<LinkSettings>>,
    pub(super) neighbours: Rc<RefCell<Vec<Rc<str>>>>,
    /// The client rules every connection of the shard reads.
    pub(super) clients: Clients,
}

impl Live {
    /// Applies the config in force if it is newer than this shard's.
    pub(super) fn follow(&self) {
        let (generation, config) = self.plan.control.current();
        if generation == self.generation.get() {
            return;
        }
        self.generation.set(generation);
        let old = self.config.replace(config.clone());
        let changes = match crate::pure::reload::compare(&old, &config, &self.plan.name) {
            Ok(changes) => changes,
            // The reload checked this already; a shard never runs half a config.
            Err(_) => return,
        };
        for name in &changes.removed {
            self.shard.remove_link(name);
        }
        let me = config.server(&self.plan.name);
        *self.neighbours.borrow_mut() = me
            .map(|s| s.neighbours.iter().map(|n| Rc::from(n.as_str())).collect())
            .unwrap_or_default();
        self.shard.set_trees(self.plan.trees_for(&config));
        *self.link_settings.borrow_mut() = link_settings(&self.plan, &config);
        *self.admission.borrow_mut() = Rc::new(admission(
            &self.plan,
            &config,
            &self.neighbours,
            &self.clients,
        ));
        self.follow_clients(&old, &config);
        let ids = self.plan.ids_for(&config);
        for (name, addr) in &changes.added {
            let status = self
                .shard
                .add_link(name.as_str().into(), ids.id(name), *addr);
            glommio::spawn_local(link::run(
                status,
                self.link_settings.clone(),
                self.shard.clone(),
            ))
            .detach();
        }
        self.shard.set_max_records(shard_max_records(
            config.limits.max_records,
            self.plan.shards,
        ));
        self.plan
            .per_ip
            .set_limit(config.limits.max_connections_per_ip.unwrap_or(u32::MAX));
        // Shared by the shards: each sets the same value.
        lock_failures(&self.plan.auth_failures)
            .set_limit(config.limits.client_auth_failures_per_min);
        tracing::info!(shard = self.shard.id, changes = %changes.summary(), "shard follows the reloaded config");
    }

    /// Puts the new client rules in force for every connection, and closes
    /// the client connections whose token's key is gone.
    fn follow_clients(&self, old: &Config, new: &Config) {
        if old.clients == new.clients {
            return;
        }
        let rules = ClientRules::of(&new.clients);
        let kept: Vec<u32> = rules.keys.iter().map(|k| k.id()).collect();
        *self.clients.rules.borrow_mut() = rules;
        let closed = self
            .shard
            .connections
            .revoke_clients(|key| key.is_some_and(|id| !kept.contains(&id)));
        if closed > 0 {
            tracing::info!(
                shard = self.shard.id,
                closed,
                "client connections closed: the key of their token was removed"
            );
        }
    }
}
