//! What a shard is given to start with, and what it says while it starts.
//!
//! A [`ShardPlan`] is made once by `start` and copied into each shard's
//! executor (all `Send`); a [`Herald`] carries the shard's words back
//! (where it bound, that it serves, or why it failed) and guarantees a
//! last one.

use crate::admin::endpoint::Registry;
use crate::net::client_tls::ClientTls;
use crate::net::link::tls::LinkTls;
use crate::net::per_ip::PerIp;
use crate::places::upstream::UpstreamSettings;
use crate::process::control::Control;
use crate::pure::auth_limit::AuthFailures;
use crate::pure::catchup::Marks;
use crate::pure::config::Config;
use crate::pure::flood_tree::Trees;
use crate::pure::server_ids::ServerIds;
use crate::shard::flood::Flood;
use crate::shard::journal::JournalPlan;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};

/// The addresses a server listens on, with any port 0 resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Clients.
    pub client: SocketAddr,
    /// Links from neighbours.
    pub peer: SocketAddr,
    /// The admin endpoint, unless it is off.
    pub admin: Option<SocketAddr>,
    /// Clients over TLS, when the server takes them.
    pub client_tls: Option<SocketAddr>,
    /// Phone apps over HTTP, when the server takes them.
    pub http: Option<SocketAddr>,
    /// Phone apps over HTTPS, when the server takes them.
    pub https: Option<SocketAddr>,
}

/// What a starting shard tells [`start`].
pub(super) enum Started {
    /// Its listeners are bound, here (port 0 resolved).
    Bound(Bound),
    /// It serves.
    Ready,
    /// It could not start, for this reason.
    Failed(String),
    /// Its executor ended (or never ran) before it said it serves: it
    /// could not be built, or it panicked.
    Gone,
}

/// A shard's voice while it starts: what it says reaches `start`, tagged
/// with its number. Every shard ends its start-up with a last word, even
/// one whose executor never ran its future or unwound from a panic: the
/// drop says `Gone` unless `Ready` or `Failed` was said. So `start` waits
/// for exactly one last word per shard and never for a shard that died.
pub(super) struct Herald {
    /// The shard's number in start order.
    pub(super) shard: usize,
    to: mpsc::Sender<(usize, Started)>,
    done: bool,
}

impl Herald {
    /// A herald for shard `shard`, telling `to`.
    pub(super) fn new(shard: usize, to: mpsc::Sender<(usize, Started)>) -> Herald {
        Herald {
            shard,
            to,
            done: false,
        }
    }

    /// Says `word`; a last word (`Ready`, `Failed`, `Gone`) ends the
    /// herald's duty.
    pub(super) fn say(&mut self, word: Started) {
        self.done |= matches!(word, Started::Ready | Started::Failed(_) | Started::Gone);
        let _ = self.to.send((self.shard, word));
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if !self.done {
            self.say(Started::Gone);
        }
    }
}

/// What every shard needs to start; all `Send`, copied into each executor.
#[derive(Clone)]
pub(super) struct ShardPlan {
    pub(super) name: String,
    /// Where to listen; shard 0 may be given port 0 and find the port, the
    /// others then listen on the port it found.
    pub(super) bound: Bound,
    pub(super) config: Config,
    pub(super) shards: usize,
    pub(super) marks: Arc<Marks>,
    /// The Places upstream, or `None` for the offline sample data.
    pub(super) places: Option<UpstreamSettings>,
    /// Mutual TLS for links, when the herd has a `tls` section.
    pub(super) tls: Option<LinkTls>,
    /// The test fault of [`StartOptions::fail_shard_before_join`].
    pub(super) fail_before_join: Option<usize>,
    /// TLS for clients, when the server has a `client_tls_listen`.
    pub(super) client_tls: Option<ClientTls>,
    /// Failed `AUTH`s by address and client, shared by all shards.
    pub(super) auth_failures: Arc<Mutex<AuthFailures>>,
    /// Client connections per source address, shared by all shards (no
    /// limit: `u32::MAX`, so that a reload can set one).
    pub(super) per_ip: Arc<PerIp>,
    /// What the admin endpoint reads.
    pub(super) registry: Arc<Registry>,
    /// The config in force, changed by reloads, and the stop.
    pub(super) control: Arc<Control>,
    /// The journal, when the herd has a `persistence` section.
    pub(super) journal: Option<Arc<JournalPlan>>,
    /// Numbers for server names, shared by the shards; a reload only adds.
    pub(super) ids: Arc<Mutex<ServerIds>>,
    /// This server's run: drawn at start, said to neighbours.
    pub(super) run: u64,
    /// The flood-tree state the shards share.
    pub(super) flood: Arc<Flood>,
}

impl ShardPlan {
    /// The server ids with every server of `config` numbered: the same
    /// numbers in every shard, whichever config each saw first.
    pub(super) fn ids_for(&self, config: &Config) -> Arc<ServerIds> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let extended =
            std::mem::take(&mut *ids).with(config.servers.iter().map(|s| s.name.as_str()));
        *ids = extended;
        Arc::new(ids.clone())
    }

    /// The herd's flood trees, as `config` has them.
    pub(super) fn trees_for(&self, config: &Config) -> Arc<Trees> {
        let servers = config
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.neighbours.as_slice()));
        Arc::new(Trees::new(servers, &self.name, &self.ids_for(config)))
    }

    /// This server's run, when it speaks trees (`limits.link_tree`).
    pub(super) fn run_for(&self, config: &Config) -> Option<u64> {
        config.limits.link_tree.then_some(self.run)
    }
}

/// One shard's share of `limits.max_records`: `ceil(max / shards)`, or no
/// cap.
pub(super) fn shard_max_records(max_records: Option<u64>, shards: usize) -> usize {
    let shards = u64::try_from(shards.max(1)).unwrap_or(u64::MAX);
    max_records.map_or(usize::MAX, |max| {
        usize::try_from(max.div_ceil(shards)).unwrap_or(usize::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(heard: &mpsc::Receiver<(usize, Started)>) -> Vec<String> {
        heard
            .try_iter()
            .map(|(shard, word)| {
                let word = match word {
                    Started::Bound(_) => "bound".to_owned(),
                    Started::Ready => "ready".to_owned(),
                    Started::Failed(why) => format!("failed: {why}"),
                    Started::Gone => "gone".to_owned(),
                };
                format!("{shard} {word}")
            })
            .collect()
    }

    #[test]
    fn a_shard_that_ends_before_it_serves_says_gone_and_one_that_serves_says_no_more() {
        let (tell, heard) = mpsc::channel();
        let herald = |shard| Herald::new(shard, tell.clone());
        let bound = Bound {
            client: "127.0.0.1:1".parse().unwrap(),
            peer: "127.0.0.1:2".parse().unwrap(),
            admin: None,
            client_tls: None,
            http: None,
            https: None,
        };
        // Dropped unrun (an executor that could not be built), or unwound
        // after saying where it bound: `start` still hears a last word.
        drop(herald(1));
        let mut second = herald(2);
        second.say(Started::Bound(bound));
        drop(second);
        // A shard that serves, or failed and said so, says nothing more.
        let mut third = herald(3);
        third.say(Started::Ready);
        drop(third);
        let mut fourth = herald(4);
        fourth.say(Started::Failed("no port".to_owned()));
        drop(fourth);
        assert_eq!(
            words(&heard),
            [
                "1 gone",
                "2 bound",
                "2 gone",
                "3 ready",
                "4 failed: no port"
            ]
        );
    }
}
