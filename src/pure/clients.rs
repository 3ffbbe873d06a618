//! The config of clients: who a connection may speak for (`clients`), TLS
//! for clients (`client_tls`), and the rule that keeps a herd from serving
//! strangers by accident (`insecure_clients`).
//!
//! Owns the JSON of those sections and their checks; `config.rs` holds them
//! in the herd's config, and `config_check.rs` hands these checks the
//! addresses each server takes clients on. Pure, and below `config.rs` (it
//! imports nothing of it).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::pure::token::{TokenKey, MIN_KEY_BYTES};

/// How a client connection proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// It does not: any connection may write and read any client.
    #[default]
    None,
    /// With `AUTH <client> <token>`: it may write only that client.
    Token,
}

/// Which clients an authenticated connection may read with WHATSAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadRule {
    /// Only its own.
    #[default]
    Own,
    /// Any (for trusted apps).
    Any,
}

/// `clients.token_key`: one key, or a list whose first signs and all verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenKeys {
    /// One key.
    One(String),
    /// Keys in rotation: the first signs new tokens, every one verifies.
    Many(Vec<String>),
}

impl Default for TokenKeys {
    fn default() -> Self {
        TokenKeys::Many(Vec::new())
    }
}

impl TokenKeys {
    /// The keys as written, the signing one first.
    pub fn texts(&self) -> &[String] {
        match self {
            TokenKeys::One(key) => std::slice::from_ref(key),
            TokenKeys::Many(keys) => keys,
        }
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.texts().is_empty()
    }
}

/// The `clients` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClientsConfig {
    /// How a connection proves who it is.
    pub auth: ClientAuth,
    /// The keys tokens are signed with (secret: never logged).
    #[serde(skip_serializing_if = "TokenKeys::is_empty")]
    pub token_key: TokenKeys,
    /// What an authenticated connection may read (with `auth: "token"`).
    pub read: ReadRule,
}

impl ClientsConfig {
    /// Whether this is the default (nothing to write in a config file).
    pub fn is_default(&self) -> bool {
        *self == ClientsConfig::default()
    }

    /// The keys that verify tokens, the signing one first.
    pub fn keys(&self) -> Vec<TokenKey> {
        self.token_key
            .texts()
            .iter()
            .map(|k| TokenKey::new(k))
            .collect()
    }

    /// The key new tokens are signed with, if there is one.
    pub fn signing_key(&self) -> Option<TokenKey> {
        self.token_key.texts().first().map(|k| TokenKey::new(k))
    }
}

/// The `client_tls` section: a certificate for clients, e.g. from a public
/// CA, instead of the herd's own (`tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// The certificate chain (`{name}` stands for the server's name).
    pub cert: String,
    /// Its private key.
    pub key: String,
}

/// One address a server takes clients on, for the checks.
#[derive(Debug, Clone, Copy)]
pub struct ClientPort<'a> {
    /// The server's name, as messages show it.
    pub who: &'a str,
    /// What the address is (`client address`, `client_tls_listen`, ...).
    pub what: &'a str,
    /// The address.
    pub addr: SocketAddr,
}

/// Every problem of the `clients` section, and every client address that
/// is open to other hosts while any connection may write any client.
pub fn problems(
    clients: &ClientsConfig,
    insecure_clients: bool,
    ports: &[ClientPort<'_>],
    problems: &mut Vec<String>,
) {
    let keys = clients.token_key.texts();
    if clients.auth == ClientAuth::Token && keys.is_empty() {
        problems.push(
            "clients.auth is \"token\" but clients.token_key is missing; make a key with \
             `openssl rand -hex 32`, and tokens with `herd token CLIENT --config FILE`"
                .to_owned(),
        );
    }
    let mut ids = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let place = match &clients.token_key {
            TokenKeys::One(_) => "clients.token_key".to_owned(),
            TokenKeys::Many(_) => format!("clients.token_key[{i}]"),
        };
        // Never the key itself: only where it is and what is wrong.
        if key.len() < MIN_KEY_BYTES {
            problems.push(format!(
                "{place} is {} bytes; at least {MIN_KEY_BYTES} (`openssl rand -hex 32` makes a \
                 good one)",
                key.len()
            ));
        }
        let id = TokenKey::new(key).id();
        if ids.contains(&id) {
            problems.push(format!("{place} is listed twice"));
        }
        ids.push(id);
    }
    if clients.auth == ClientAuth::None && !insecure_clients {
        for port in ports.iter().filter(|p| !p.addr.ip().is_loopback()) {
            problems.push(format!(
                "{}: {} {} is not loopback and clients.auth is \"none\", so anyone who reaches \
                 it could move or read any client; set \"clients\": {{\"auth\": \"token\", \
                 \"token_key\": ...}} (herd token makes each phone its token), or \
                 \"insecure_clients\": true to accept the risk",
                port.who, port.what, port.addr
            ));
        }
    }
}

/// Problems of the `client_tls` section: empty paths, placeholders other
/// than `{name}`.
pub fn tls_problems(tls: &ClientTlsConfig, problems: &mut Vec<String>) {
    for (field, value) in [("cert", &tls.cert), ("key", &tls.key)] {
        if value.trim().is_empty() {
            problems.push(format!(
                "client_tls.{field} is empty; name a PEM file (e.g. certs/{{name}}.pem)"
            ));
        } else if value.replace("{name}", "").contains(['{', '}']) {
            problems.push(format!(
                "client_tls.{field} {value:?} has a placeholder other than {{name}}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(who: &'static str, addr: &str) -> ClientPort<'static> {
        ClientPort {
            who,
            what: "client address",
            addr: addr.parse().unwrap(),
        }
    }

    fn found(clients: &ClientsConfig, insecure: bool, ports: &[ClientPort<'_>]) -> Vec<String> {
        let mut out = Vec::new();
        problems(clients, insecure, ports, &mut out);
        out
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn an_open_client_address_without_tokens_is_refused_unless_the_risk_is_accepted() {
        let open = [port("Goloman", "10.0.0.11:12138")];
        let none = ClientsConfig::default();
        let said = found(&none, false, &open);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("Goloman: client address 10.0.0.11:12138 is not loopback"));
        assert!(said[0].contains("clients") && said[0].contains("insecure_clients"));
        assert!(found(&none, true, &open).is_empty());
        let tokens = ClientsConfig {
            auth: ClientAuth::Token,
            token_key: TokenKeys::One(KEY.into()),
            read: ReadRule::Own,
        };
        assert!(found(&tokens, false, &open).is_empty());
        assert!(found(&none, false, &[port("Hands", "127.0.0.1:12139")]).is_empty());
        assert!(found(&none, false, &[port("Hands", "[::1]:12139")]).is_empty());
    }

    #[test]
    fn tokens_need_a_key_of_some_length_and_no_key_twice() {
        let keyless = ClientsConfig {
            auth: ClientAuth::Token,
            ..ClientsConfig::default()
        };
        assert!(found(&keyless, false, &[])[0].contains("token_key is missing"));
        let short = ClientsConfig {
            token_key: TokenKeys::Many(vec![KEY.into(), "short".into(), KEY.into()]),
            ..keyless
        };
        let said = found(&short, false, &[]);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with("clients.token_key[1] is 5 bytes; at least 16"));
        assert!(said[1].starts_with("clients.token_key[2] is listed twice"));
        assert!(!said.iter().any(|p| p.contains(KEY)), "a key was printed");
    }

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let clients = ClientsConfig {
            auth: ClientAuth::Token,
            token_key: TokenKeys::Many(vec![KEY.into(), "another key of 16+ bytes".into()]),
            read: ReadRule::Any,
        };
        let keys = clients.keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(clients.signing_key(), Some(keys[0].clone()));
        let one = ClientsConfig {
            token_key: TokenKeys::One(KEY.into()),
            ..clients
        };
        assert_eq!(one.keys(), vec![TokenKey::new(KEY)]);
    }

    #[test]
    fn client_tls_paths_are_checked() {
        let mut said = Vec::new();
        tls_problems(
            &ClientTlsConfig {
                cert: "".into(),
                key: "certs/{host}.key".into(),
            },
            &mut said,
        );
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with("client_tls.cert is empty"));
        assert!(said[1].contains("placeholder other than {name}"));
    }
}
