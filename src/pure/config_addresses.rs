//! Where each server of a herd listens: its client address, its peer and
//! admin addresses as given or derived from the client address (the
//! client port + [`PEER_PORT_OFFSET`] and + [`ADMIN_PORT_OFFSET`]), and its
//! TLS and phone addresses. `localhost` is read as 127.0.0.1, never asked
//! of a resolver, so that the checks (`config_check.rs`) need no network.
//! Pure; the schema (`config.rs`) does not name this file.

use std::net::{Ipv4Addr, SocketAddr};

use crate::pure::config::{AdminListen, Config, ServerConfig, ADMIN_PORT_OFFSET, PEER_PORT_OFFSET};

impl Config {
    /// The resolved listen address of the server called `name`, if it exists and is valid.
    pub fn listen_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(&self.server(name)?.listen)
    }

    /// The resolved peer address of the server called `name`: where its
    /// neighbours' links dial it.
    pub fn peer_addr(&self, name: &str) -> Option<SocketAddr> {
        peer_addr_of(self.server(name)?)
    }

    /// The resolved admin address of the server called `name`, or `None`
    /// when it has none (`admin_listen: null`, or no such server).
    pub fn admin_addr(&self, name: &str) -> Option<SocketAddr> {
        admin_addr_of(self.server(name)?)
    }

    /// Every address server `name` listens on, named, as (what, address).
    pub fn addresses_of(&self, name: &str) -> Vec<(&'static str, SocketAddr)> {
        let server = self.server(name);
        let mut out = Vec::new();
        if let Some(a) = self.listen_addr(name) {
            out.push(("client address", a));
        }
        if let Some(a) = self.peer_addr(name) {
            let derived = server.is_some_and(|s| s.peer_listen.is_none());
            out.push((
                if derived {
                    "peer address (client port + 10000)"
                } else {
                    "peer address"
                },
                a,
            ));
        }
        if let Some(a) = self.admin_addr(name) {
            let derived = server.is_some_and(|s| s.admin_listen == AdminListen::Default);
            out.push((
                if derived {
                    "admin address (client port + 20000)"
                } else {
                    "admin address"
                },
                a,
            ));
        }
        for (what, a) in [
            ("client_tls_listen", self.client_tls_addr(name)),
            ("http_listen", self.http_addr(name)),
            ("https_listen", self.https_addr(name)),
        ] {
            if let Some(a) = a {
                out.push((what, a));
            }
        }
        out
    }

    /// Where server `name` takes phone apps over HTTP, if it does.
    pub fn http_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(self.server(name)?.http_listen.as_deref()?)
    }

    /// Where server `name` takes phone apps over HTTPS, if it does.
    pub fn https_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(self.server(name)?.https_listen.as_deref()?)
    }

    /// Where server `name` takes clients over TLS, if it does.
    pub fn client_tls_addr(&self, name: &str) -> Option<SocketAddr> {
        resolve_listen(self.server(name)?.client_tls_listen.as_deref()?)
    }
}

/// The admin address a server without `admin_listen` gets.
pub(crate) fn default_admin_addr(client: SocketAddr) -> Option<SocketAddr> {
    let port = client.port().checked_add(ADMIN_PORT_OFFSET)?;
    Some(SocketAddr::new(client.ip(), port))
}

/// The admin address of `server`, as given or derived; `None` when it
/// has none or it is not valid.
pub(crate) fn admin_addr_of(server: &ServerConfig) -> Option<SocketAddr> {
    match &server.admin_listen {
        AdminListen::Off => None,
        AdminListen::At(text) => resolve_listen(text),
        AdminListen::Default => default_admin_addr(resolve_listen(&server.listen)?),
    }
}

/// The peer address a server without `peer_listen` gets: its client host
/// at the client port + [`PEER_PORT_OFFSET`].
pub(crate) fn default_peer_addr(client: SocketAddr) -> Option<SocketAddr> {
    let port = client.port().checked_add(PEER_PORT_OFFSET)?;
    Some(SocketAddr::new(client.ip(), port))
}

/// The peer address of `server`, as given or derived; `None` when it is
/// not valid.
pub(crate) fn peer_addr_of(server: &ServerConfig) -> Option<SocketAddr> {
    match &server.peer_listen {
        Some(text) => resolve_listen(text),
        None => default_peer_addr(resolve_listen(&server.listen)?),
    }
}

/// Reads a listen string: an IP literal with port, or `localhost:port`.
///
/// `localhost` is 127.0.0.1 here, never a resolver's answer: validation
/// needs no network, and `localhost:p` and `127.0.0.1:p` are the same
/// address to the duplicate checks.
pub(crate) fn resolve_listen(listen: &str) -> Option<SocketAddr> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Some(addr);
    }
    let port: u16 = listen.strip_prefix("localhost:")?.parse().ok()?;
    Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_default_to_the_client_port_plus_10000_and_can_be_set() {
        let mut herd = Config::default_herd();
        assert_eq!(herd.peer_addr("Goloman"), "127.0.0.1:22138".parse().ok());
        herd.servers[0].peer_listen = Some("127.0.0.1:4000".to_owned());
        herd.validate().expect("valid");
        assert_eq!(herd.peer_addr("Goloman"), "127.0.0.1:4000".parse().ok());
        assert_eq!(herd.peer_addr("Nobody"), None);
    }

    #[test]
    fn the_admin_address_is_client_port_plus_20000_an_address_or_none() {
        let text = r#"{"servers": [
            {"name": "A", "listen": "127.0.0.1:12138"},
            {"name": "B", "listen": "127.0.0.1:12139", "admin_listen": null},
            {"name": "C", "listen": "127.0.0.1:12140", "admin_listen": "127.0.0.1:9000"}
        ]}"#;
        let herd = Config::from_json(text).expect("valid");
        assert_eq!(herd.admin_addr("A"), "127.0.0.1:32138".parse().ok());
        assert_eq!(herd.admin_addr("B"), None, "null turns it off");
        assert_eq!(herd.admin_addr("C"), "127.0.0.1:9000".parse().ok());
        let back = Config::from_json(&herd.to_json_pretty()).expect("round trip");
        assert_eq!(back, herd, "null and absent survive a round trip");
        assert_eq!(back.servers[1].admin_listen, AdminListen::Off);
        assert_eq!(back.servers[0].admin_listen, AdminListen::Default);
    }

    #[test]
    fn localhost_is_accepted_and_resolves_to_loopback() {
        let mut herd = Config::default_herd();
        herd.servers[4].listen = "localhost:12142".to_owned();
        herd.validate().expect("localhost is allowed");
        let addr = herd.listen_addr("Welsh").expect("resolves");
        assert!(addr.ip().is_loopback() && addr.port() == 12142);
    }
}
