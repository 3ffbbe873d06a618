//! Who a client connection speaks for: the `AUTH` line, and what a proven
//! identity allows (IAMAT for itself only; WHATSAT for itself, or for any
//! client with `clients.read: "any"`).
//!
//! Owns a connection's identity and the server's client rules as the
//! connection sees them (live: a reload changes them for every connection
//! at once). The token format and checks are `pure::token`, the failure
//! table `pure::auth_limit`. With `clients.auth: "none"` every check here is
//! one comparison, so the default path stays as fast as before. Tokens are
//! never logged, nor sent back.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::ops::metrics::ShardMetrics;
use crate::pure::auth_limit::{Admit, AuthFailures};
use crate::pure::clients::{ClientAuth, ClientsConfig, ReadRule};
use crate::pure::protocol::{self, Auth};
use crate::pure::token::{self, TokenError, TokenKey};

/// The server's rules for clients, as in force now.
#[derive(Debug, Clone)]
pub(crate) struct ClientRules {
    /// How a connection proves who it is.
    pub auth: ClientAuth,
    /// What a proven connection may read.
    pub read: ReadRule,
    /// The keys tokens are checked against.
    pub keys: Vec<TokenKey>,
}

impl ClientRules {
    /// The rules of a `clients` section.
    pub(crate) fn of(clients: &ClientsConfig) -> ClientRules {
        ClientRules {
            auth: clients.auth,
            read: clients.read,
            keys: clients.keys(),
        }
    }
}

/// The rules every connection of a shard reads, changed in place by a
/// reload, and the failure table every shard of the server shares.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    /// The rules in force.
    pub rules: Rc<RefCell<ClientRules>>,
    /// Failed `AUTH`s by source address and client id.
    pub failures: Arc<Mutex<AuthFailures>>,
}

/// What a connection has proved.
#[derive(Debug)]
struct Proven {
    /// The client id it speaks for.
    client: Box<str>,
    /// Until when, UNIX seconds.
    expiry: u64,
}

/// One client connection's side of the rules: its identity. Only that:
/// it is in every client connection's task, and its address (for the
/// failure table) is read off the peer as logged, at an `AUTH`.
#[derive(Default)]
pub(crate) struct ClientSide {
    proven: Option<Proven>,
}

impl ClientSide {
    /// A connection that has proved nothing yet.
    pub(crate) fn new() -> ClientSide {
        ClientSide::default()
    }

    /// The client id this connection has proved it speaks for at `now`
    /// (UNIX seconds), if any and not expired.
    fn proven(&self, now: u64) -> Option<&str> {
        self.proven
            .as_ref()
            .filter(|p| now < p.expiry)
            .map(|p| &*p.client)
    }

    /// Whether the connection may store a record of `client` at `now`;
    /// a refusal is counted.
    pub(crate) fn may_write(
        &self,
        clients: &Clients,
        client: &str,
        now: u64,
        metrics: &ShardMetrics,
    ) -> bool {
        if clients.rules.borrow().auth == ClientAuth::None {
            return true;
        }
        self.allowed(self.proven(now), client, metrics)
    }

    /// Whether the connection may read the record of `client` at `now`;
    /// a refusal is counted.
    pub(crate) fn may_read(
        &self,
        clients: &Clients,
        client: &str,
        now: u64,
        metrics: &ShardMetrics,
    ) -> bool {
        let (auth, read) = {
            let rules = clients.rules.borrow();
            (rules.auth, rules.read)
        };
        if auth == ClientAuth::None {
            return true;
        }
        let proven = self.proven(now);
        if read == ReadRule::Any && proven.is_some() {
            return true;
        }
        self.allowed(proven, client, metrics)
    }

    /// Whether `proven` is `client`, counting why not.
    fn allowed(&self, proven: Option<&str>, client: &str, metrics: &ShardMetrics) -> bool {
        match proven {
            Some(id) if id == client => true,
            Some(_) => {
                metrics.refused.other_client.inc();
                false
            }
            None => {
                metrics.refused.unauthenticated.inc();
                false
            }
        }
    }

    /// Answers an `AUTH` line at `now` from `peer` (an address as
    /// `SocketAddr` writes it, or empty) into `out`; the id of the token's
    /// key when it is good, for the connection's `Activity` (where a reload
    /// that removes the key finds it).
    pub(crate) fn on_auth(
        &mut self,
        clients: &Clients,
        auth: Auth<'_>,
        now: u64,
        metrics: &ShardMetrics,
        peer: &str,
        out: &mut Vec<u8>,
    ) -> Option<u32> {
        let client = auth.client_id;
        if clients.rules.borrow().auth == ClientAuth::None {
            metrics.auths.off.inc();
            tracing::debug!(%peer, client, "AUTH refused: clients do not authenticate here");
            protocol::write_auth_refusal(out, client);
            return None;
        }
        if let Some(proven) = &self.proven {
            if *proven.client != *client {
                // Not a guess: a good or bad token for a second id is refused
                // alike, and not counted against the address.
                metrics.auths.other_client.inc();
                tracing::info!(%peer, client, proven = %proven.client, "AUTH refused: the connection already speaks for another client");
                protocol::write_auth_refusal(out, client);
                return None;
            }
        }
        let ip = peer.parse::<SocketAddr>().ok().map(|a| a.ip());
        match check_token(clients, ip, client, auth.token, now, metrics, peer) {
            Ok(verified) => {
                self.proven = Some(Proven {
                    client: client.into(),
                    expiry: verified.expiry,
                });
                tracing::debug!(%peer, client, expiry = verified.expiry, "client authenticated");
                protocol::write_auth(out, client, verified.expiry);
                Some(verified.key_id)
            }
            Err(_) => {
                protocol::write_auth_refusal(out, client);
                None
            }
        }
    }
}

/// Why a presented token was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Unchecked: too many failures from the address for the client.
    Limited,
    /// Checked, and not good.
    Token(TokenError),
}

/// Checks a token presented from `ip` for `client` at `now` (UNIX seconds),
/// within the failure bound, counting the result; `AUTH` lines and phone
/// apps' HTTP credentials both come here. The token is never logged.
pub(crate) fn check_token(
    clients: &Clients,
    ip: Option<IpAddr>,
    client: &str,
    presented: &str,
    now: u64,
    metrics: &ShardMetrics,
    peer: &str,
) -> Result<token::Verified, Refused> {
    if let Some(ip) = ip {
        let admit = lock_failures(&clients.failures).admit(ip, client, now);
        if let Admit::Limited { warn } = admit {
            metrics.auths.limited.inc();
            if warn {
                tracing::warn!(%peer, client, "token refused unchecked for the rest of the minute: too many failures from this address for this client (limits.client_auth_failures_per_min)");
            }
            return Err(Refused::Limited);
        }
    }
    let verified = token::verify(&clients.rules.borrow().keys, client, presented, now);
    match verified {
        Ok(verified) => {
            metrics.auths.ok.inc();
            Ok(verified)
        }
        Err(why) => {
            if why == TokenError::Expired {
                metrics.auths.expired.inc();
            } else {
                metrics.auths.bad.inc();
            }
            if let Some(ip) = ip {
                lock_failures(&clients.failures).failed(ip, client, now);
            }
            tracing::debug!(%peer, client, %why, "token refused");
            Err(Refused::Token(why))
        }
    }
}

/// The failure table; a panic elsewhere while it was held leaves counts
/// that are still counts.
pub(crate) fn lock_failures(
    failures: &Mutex<AuthFailures>,
) -> std::sync::MutexGuard<'_, AuthFailures> {
    failures
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
