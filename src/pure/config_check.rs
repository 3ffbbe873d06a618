//! The herd's rules for a whole config, checked once its fields have been
//! read (`config_fields.rs` checks them one by one before): server names,
//! listen addresses and the peer and admin ports derived from them,
//! neighbours listed on both sides, links protected off loopback, client
//! addresses, limits in range, and the `places`, `tls` and `persistence`
//! sections. Every problem is reported at once, so one edit fixes a
//! config. Also the warnings about ports a host may lend to outgoing
//! connections. Pure: a config in, messages out; the schema (`config.rs`)
//! does not name this file.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::pure::clients::{self, ClientPort};
use crate::pure::config::{
    fields_problem, shown, AdminListen, Config, ConfigError, Limits, PlacesConfig, Provider,
    ServerConfig, TlsConfig, ADMIN_PORT_OFFSET, MAX_NAME_BYTES, MAX_RECORDS, MAX_SNAP_M,
    MIN_CACHE_BYTES, NAME_PLACEHOLDER, PEER_PORT_OFFSET,
};
use crate::pure::config_addresses::{
    admin_addr_of, default_admin_addr, default_peer_addr, peer_addr_of, resolve_listen,
};

/// Smallest `max_line_bytes`: below this not even a PEER greeting fits in a line.
const MIN_LINE_BYTES: usize = 64;
/// Largest `max_line_bytes` (1 MiB): beyond this one client could pin too much memory.
const MAX_LINE_BYTES: usize = 1 << 20;

impl Config {
    /// Warnings for every listen port of the herd inside `ephemeral`, a
    /// host's range of ports for outgoing connections (Linux's
    /// `net.ipv4.ip_local_port_range`): an outgoing connection may hold such
    /// a port when the server starts, and the start then fails.
    pub fn ephemeral_warnings(&self, ephemeral: (u16, u16)) -> Vec<String> {
        let (low, high) = ephemeral;
        let mut warnings = Vec::new();
        for server in &self.servers {
            for (what, addr) in self.addresses_of(&server.name) {
                let port = addr.port();
                if port != 0 && (low..=high).contains(&port) {
                    warnings.push(format!(
                        "{}: {what} {addr} lies in this host's ephemeral port range {low}-{high} \
                         (net.ipv4.ip_local_port_range), where an outgoing connection may hold \
                         it when the server starts; choose a port below {low}, or reserve it \
                         with net.ipv4.ip_local_reserved_ports",
                        shown(&server.name)
                    ));
                }
            }
        }
        warnings
    }

    /// Checks the whole herd and returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.secret.as_deref() == Some("") {
            problems.push("secret is empty; omit it (or use null) for no secret".to_owned());
        }
        if self.servers.is_empty() {
            problems.push("no servers: \"servers\" must list at least one server".to_owned());
        }
        let (by_name, by_addr) = self.server_problems(&mut problems);
        self.neighbour_problems(&by_name, &mut problems);
        self.peer_problems(&by_addr, &mut problems);
        self.admin_problems(&mut problems);
        self.client_problems(&mut problems);
        if let Some(level) = &self.logging.level {
            if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                problems.push(format!(
                    "logging.level {level:?} is not a level or tracing filter; e.g. info, \
                     debug or herd=debug,warn"
                ));
            }
        }
        limit_problems(&self.limits, &mut problems);
        places_problems(&self.places, &mut problems);
        if let Some(tls) = &self.tls {
            tls_problems(tls, &self.servers, &mut problems);
        }
        if let Some(p) = &self.persistence {
            if p.dir.trim().is_empty() {
                problems.push(
                    "persistence.dir is empty; name a folder for the journals (each server \
                     writes in dir/<its name>/), or leave persistence out to write nothing"
                        .to_owned(),
                );
            } else if p.dir.contains('\0') {
                problems.push("persistence.dir contains a NUL byte".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Names and listen addresses, server by server. Returns the servers
    /// by name (the first of each name) and by client address, which the
    /// neighbour and peer checks go on with.
    fn server_problems(
        &self,
        problems: &mut Vec<String>,
    ) -> (HashMap<&str, &ServerConfig>, HashMap<SocketAddr, &str>) {
        let mut by_name: HashMap<&str, &ServerConfig> = HashMap::new();
        let mut duplicates = HashSet::new();
        let mut by_addr: HashMap<SocketAddr, &str> = HashMap::new();
        for (i, server) in self.servers.iter().enumerate() {
            let who = shown(&server.name);
            name_problems(i, &server.name, problems);
            // Neighbour checks use the first server of a name; an empty name is reported above.
            if !by_name.contains_key(server.name.as_str()) {
                by_name.insert(&server.name, server);
            } else if !server.name.is_empty() && duplicates.insert(&server.name) {
                problems.push(format!("server name {who} is used by more than one server"));
            }
            let listen = &server.listen;
            match resolve_listen(listen) {
                None => problems.push(format!(
                    "{who}: listen address {listen:?} is not valid; expected host:port, \
                     e.g. 127.0.0.1:12138 (host an IP address or localhost)"
                )),
                // Port 0: the server takes a free port and reports it. Its
                // peer and admin addresses cannot be derived from it then.
                Some(addr) if addr.port() == 0 => {
                    if server.peer_listen.is_none() {
                        problems.push(format!(
                            "{who}: listen address {listen:?} has port 0, so the default peer \
                             address (client port + {PEER_PORT_OFFSET}) has none; set \
                             \"peer_listen\""
                        ));
                    }
                    if server.admin_listen == AdminListen::Default {
                        problems.push(format!(
                            "{who}: listen address {listen:?} has port 0, so the default admin \
                             address (client port + {ADMIN_PORT_OFFSET}) has none; set \
                             \"admin_listen\", or null for none"
                        ));
                    }
                }
                Some(addr) => {
                    if let Some(earlier) = by_addr.insert(addr, &server.name) {
                        problems.push(format!(
                            "{who}: listen address {listen:?} ({addr}) is already used by {earlier}"
                        ));
                    }
                }
            }
        }
        (by_name, by_addr)
    }

    /// Neighbours: each listed once, never the server itself, a server of
    /// this herd, and listing the server back.
    fn neighbour_problems(
        &self,
        by_name: &HashMap<&str, &ServerConfig>,
        problems: &mut Vec<String>,
    ) {
        for server in &self.servers {
            let (who, mut seen) = (shown(&server.name), HashSet::new());
            for neighbour in &server.neighbours {
                let shown = shown(neighbour);
                if !seen.insert(neighbour.as_str()) {
                    problems.push(format!("{who} lists neighbour {shown} more than once"));
                } else if *neighbour == server.name {
                    problems.push(format!("{who} lists itself as a neighbour"));
                } else {
                    match by_name.get(neighbour.as_str()) {
                        None => problems.push(format!(
                            "{who} lists neighbour {shown}, which is not a server of this herd"
                        )),
                        Some(other) if !other.neighbours.contains(&server.name) => {
                            problems.push(format!(
                                "{who} lists {shown} as a neighbour but {shown} does not list {who}"
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// Peer addresses: valid, distinct from every other address of the
    /// herd, and protected (a secret) unless on loopback or explicitly
    /// `insecure_links`.
    fn peer_problems(&self, clients: &HashMap<SocketAddr, &str>, problems: &mut Vec<String>) {
        let mut peers: HashMap<SocketAddr, &str> = HashMap::new();
        for server in &self.servers {
            let who = shown(&server.name);
            let Some(client) = resolve_listen(&server.listen) else {
                continue; // reported with the listen address
            };
            let addr = match &server.peer_listen {
                Some(text) => match resolve_listen(text) {
                    // Port 0 (a free port, reported at start) only where no
                    // neighbour needs to dial it.
                    Some(addr) if addr.port() == 0 => {
                        let dialled_by = self
                            .servers
                            .iter()
                            .find(|s| s.neighbours.contains(&server.name));
                        if let Some(by) = dialled_by {
                            problems.push(format!(
                                "{who}: peer_listen {text:?} has port 0, but {} links to it \
                                  and needs a fixed port",
                                shown(&by.name)
                            ));
                        }
                        continue;
                    }
                    Some(addr) => addr,
                    _ => {
                        problems.push(format!(
                            "{who}: peer_listen {text:?} is not valid; expected host:port, \
                              e.g. 127.0.0.1:22138"
                        ));
                        continue;
                    }
                },
                None => match default_peer_addr(client) {
                    Some(addr) => addr,
                    None => {
                        problems.push(format!(
                            "{who}: the default peer port (client port {} + {PEER_PORT_OFFSET}) \
                              is past 65535; set \"peer_listen\" for this server",
                            client.port()
                        ));
                        continue;
                    }
                },
            };
            if let Some(owner) = clients.get(&addr) {
                problems.push(format!(
                    "{who}: peer address {addr} is the client address of {owner}; set a \
                      \"peer_listen\" of its own"
                ));
            }
            if let Some(earlier) = peers.insert(addr, &server.name) {
                problems.push(format!(
                    "{who}: peer address {addr} is already the peer address of {earlier}"
                ));
            }
            let protected = self.secret.is_some() || self.tls.is_some();
            if !addr.ip().is_loopback() && !protected && !self.insecure_links {
                problems.push(format!(
                    "{who}: peer address {addr} is not loopback and the herd has neither a \
                      secret nor TLS, so anyone who reaches it could write records; set \
                      \"secret\" (the same on every server) or a \"tls\" section (herd certs \
                      makes one), or \"insecure_links\": true to accept the risk"
                ));
            }
        }
    }

    /// The `clients` section, TLS for clients, and client addresses open
    /// to other hosts.
    fn client_problems(&self, problems: &mut Vec<String>) {
        let mut taken: HashMap<SocketAddr, String> = HashMap::new();
        for server in &self.servers {
            let who = shown(&server.name);
            if let Some(addr) = resolve_listen(&server.listen) {
                taken.insert(addr, format!("the client address of {who}"));
            }
            if let Some(addr) = peer_addr_of(server) {
                taken.insert(addr, format!("the peer address of {who}"));
            }
            if let Some(addr) = admin_addr_of(server) {
                taken.insert(addr, format!("the admin address of {who}"));
            }
        }
        let mut ports = Vec::new();
        let names: Vec<String> = self.servers.iter().map(|s| shown(&s.name)).collect();
        for (server, who) in self.servers.iter().zip(&names) {
            if let Some(addr) = resolve_listen(&server.listen) {
                ports.push(ClientPort {
                    who,
                    what: "client address",
                    addr,
                });
            }
            let extra = [
                ("client_tls_listen", &server.client_tls_listen, true),
                ("http_listen", &server.http_listen, false),
                ("https_listen", &server.https_listen, true),
            ];
            for (what, text, needs_cert) in extra {
                let Some(text) = text else {
                    continue;
                };
                let Some(addr) = resolve_listen(text) else {
                    problems.push(format!(
                        "{who}: {what} {text:?} is not valid; expected host:port, \
                         e.g. 127.0.0.1:12638"
                    ));
                    continue;
                };
                if addr.port() != 0 {
                    if let Some(owner) = taken.insert(addr, format!("the {what} of {who}")) {
                        problems.push(format!("{who}: {what} {addr} is {owner}"));
                    }
                }
                if needs_cert && self.client_tls.is_none() && self.tls.is_none() {
                    problems.push(format!(
                        "{who}: {what} needs a certificate: add a \"client_tls\" section \
                         ({{\"cert\": ..., \"key\": ...}}), or a \"tls\" section (herd certs \
                         makes one)"
                    ));
                }
                ports.push(ClientPort { who, what, addr });
            }
        }
        clients::problems(&self.clients, self.insecure_clients, &ports, problems);
        if let Some(tls) = &self.client_tls {
            clients::tls_problems(tls, problems);
        }
    }

    /// Admin addresses: valid and not any other address of the herd.
    fn admin_problems(&self, problems: &mut Vec<String>) {
        let mut taken: HashMap<SocketAddr, String> = HashMap::new();
        for server in &self.servers {
            if let Some(addr) = resolve_listen(&server.listen) {
                taken.insert(
                    addr,
                    format!("the client address of {}", shown(&server.name)),
                );
            }
            if let Some(addr) = peer_addr_of(server) {
                taken.insert(addr, format!("the peer address of {}", shown(&server.name)));
            }
        }
        // Servers on other hosts may each keep their admin endpoint on
        // their own loopback: the same loopback address clashes only for
        // servers on one host (the same client address host).
        let mut admins: HashMap<SocketAddr, (&str, std::net::IpAddr)> = HashMap::new();
        for server in &self.servers {
            let who = shown(&server.name);
            let Some(client) = resolve_listen(&server.listen) else {
                continue; // reported with the listen address
            };
            let addr = match &server.admin_listen {
                AdminListen::Off => continue,
                AdminListen::At(text) => match resolve_listen(text) {
                    // A free port, reported at start: nothing to clash with.
                    Some(addr) if addr.port() == 0 => continue,
                    Some(addr) => addr,
                    _ => {
                        problems.push(format!(
                            "{who}: admin_listen {text:?} is not valid; expected host:port, \
                              e.g. 127.0.0.1:32138, or null for no admin endpoint"
                        ));
                        continue;
                    }
                },
                AdminListen::Default => match default_admin_addr(client) {
                    Some(addr) => addr,
                    None => {
                        problems.push(format!(
                            "{who}: the default admin port (client port {} + \
                              {ADMIN_PORT_OFFSET}) is past 65535; set \"admin_listen\" for \
                              this server, or null for none",
                            client.port()
                        ));
                        continue;
                    }
                },
            };
            if let Some(owner) = taken.get(&addr) {
                problems.push(format!(
                    "{who}: admin address {addr} is {owner}; set an \"admin_listen\" of its own"
                ));
            }
            let host = client.ip();
            match admins.get(&addr) {
                Some((earlier, earlier_host))
                    if !addr.ip().is_loopback() || *earlier_host == host =>
                {
                    problems.push(format!(
                        "{who}: admin address {addr} is already the admin address of {earlier}"
                    ));
                }
                Some(_) => {}
                None => {
                    admins.insert(addr, (&server.name, host));
                }
            }
        }
    }
}

/// Reports everything wrong with the name of the server at `index`.
fn name_problems(index: usize, name: &str, problems: &mut Vec<String>) {
    let who = format!("server #{}", index + 1);
    if name.is_empty() {
        problems.push(format!("{who} has an empty name"));
        return;
    }
    if name.chars().any(char::is_whitespace) {
        problems.push(format!("{who}: name {name:?} contains white space"));
    }
    if name.len() > MAX_NAME_BYTES {
        problems.push(format!(
            "{who}: name {name:?} is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    // White space was reported above; this catches control and non-ASCII characters.
    if !name
        .chars()
        .all(|c| c.is_whitespace() || c.is_ascii_graphic())
    {
        problems.push(format!(
            "{who}: name {name:?} has characters that are not printable ASCII"
        ));
    }
}

/// Reports every limit outside the range the servers can work with.
fn places_problems(p: &PlacesConfig, problems: &mut Vec<String>) {
    if let Some(url) = &p.base_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(format!(
                "places.base_url {url:?} must start with http:// or https://"
            ));
        }
    }
    if p.provider == Provider::Mock && p.base_url.is_none() {
        problems.push("places.provider is mock but places.base_url is missing".to_owned());
    }
    if p.pool_connections == 0 {
        problems.push("places.pool_connections is 0; it must be at least 1".to_owned());
    }
    if p.max_in_flight == 0 {
        problems.push("places.max_in_flight is 0; it must be at least 1".to_owned());
    }
    if p.cache_entries > 0 && p.cache_bytes < MIN_CACHE_BYTES {
        problems.push(format!(
            "places.cache_bytes is {}; at least {MIN_CACHE_BYTES} (one answer of 20 results \
             is about 20 KiB), or set places.cache_entries to 0 to turn the cache off",
            p.cache_bytes
        ));
    }
    if p.snap_m > MAX_SNAP_M {
        problems.push(format!(
            "places.snap_m is {}; at most {MAX_SNAP_M} (a coarser grid fetches areas so \
             much larger than asked that few results are left), or 0 for no snapping",
            p.snap_m
        ));
    }
    if p.key.as_deref() == Some("") {
        problems.push("places.key is empty; omit it (or use null) for no key".to_owned());
    }
    if let Err(reasons) = p.fields.mask() {
        problems.extend(reasons.iter().map(|r| fields_problem(r)));
    }
}

/// Reports what makes the `tls` section unusable: empty paths, placeholders
/// other than `{name}`, one certificate shared by several servers (a
/// certificate names one server, so all but one would be refused), and names
/// that cannot be part of a file name.
fn tls_problems(tls: &TlsConfig, servers: &[ServerConfig], problems: &mut Vec<String>) {
    let fields = [
        ("ca", &tls.ca, "certs/ca.pem"),
        ("cert", &tls.cert, "certs/{name}.pem"),
        ("key", &tls.key, "certs/{name}-key.pem"),
    ];
    for (field, path, example) in fields {
        if path.is_empty() {
            problems.push(format!(
                "tls.{field} is empty; give a PEM file, e.g. {example:?} (`herd certs` makes them)"
            ));
            continue;
        }
        if path.replace(NAME_PLACEHOLDER, "").contains(['{', '}']) {
            problems.push(format!(
                "tls.{field} {path:?} has a brace that is not part of {NAME_PLACEHOLDER}, the only \
                 placeholder; e.g. {example:?}"
            ));
        }
    }
    if tls.ca.contains(NAME_PLACEHOLDER) {
        problems.push(format!(
            "tls.ca {:?} contains {NAME_PLACEHOLDER}; the herd has one CA for every server, \
             e.g. \"certs/ca.pem\"",
            tls.ca
        ));
    }
    let named = [("cert", &tls.cert), ("key", &tls.key)];
    for (field, path) in named {
        if path.is_empty() {
            continue; // reported above
        }
        if !path.contains(NAME_PLACEHOLDER) && servers.len() > 1 {
            problems.push(format!(
                "tls.{field} {path:?} has no {NAME_PLACEHOLDER}, but the herd has {} servers and \
                 each needs its own certificate and key; e.g. \"certs/{NAME_PLACEHOLDER}.pem\"",
                servers.len()
            ));
        }
    }
    if tls.cert.contains(NAME_PLACEHOLDER) || tls.key.contains(NAME_PLACEHOLDER) {
        for server in servers.iter().filter(|s| s.name.contains('/')) {
            problems.push(format!(
                "{}: a name with '/' cannot stand for {NAME_PLACEHOLDER} in a file name; \
                 rename the server",
                shown(&server.name)
            ));
        }
    }
}

fn limit_problems(l: &Limits, problems: &mut Vec<String>) {
    if !(MIN_LINE_BYTES..=MAX_LINE_BYTES).contains(&l.max_line_bytes) {
        problems.push(format!(
            "limits.max_line_bytes is {}; it must be between {MIN_LINE_BYTES} and \
             {MAX_LINE_BYTES} (1 MiB)",
            l.max_line_bytes
        ));
    }
    let zeros = [
        (
            "max_connections_per_shard",
            l.max_connections_per_shard == 0,
        ),
        ("channel_capacity", l.channel_capacity == 0),
        ("link_backoff_initial_ms", l.link_backoff_initial_ms == 0),
        ("places_timeout_ms", l.places_timeout_ms == 0),
        ("client_idle_timeout_ms", l.client_idle_timeout_ms == 0),
        ("write_timeout_ms", l.write_timeout_ms == 0),
        ("http_request_timeout_ms", l.http_request_timeout_ms == 0),
        ("link_records_per_sec", l.link_records_per_sec == 0),
        ("link_heartbeat_ms", l.link_heartbeat_ms == 0),
        ("link_announce_ms", l.link_announce_ms == 0),
        ("record_ttl_ms", l.record_ttl_ms == Some(0)),
        ("max_future_skew_ms", l.max_future_skew_ms == 0),
    ];
    for (field, _) in zeros.iter().filter(|(_, zero)| *zero) {
        problems.push(format!("limits.{field} is 0; it must be at least 1"));
    }
    match l.max_records {
        Some(0) => problems.push(
            "limits.max_records is 0; it must be at least 1, or null for no limit".to_owned(),
        ),
        Some(n) if n > MAX_RECORDS => problems.push(format!(
            "limits.max_records is {n}; at most {MAX_RECORDS}, or null for no limit"
        )),
        _ => {}
    }
    if l.client_auth_failures_per_min == 0 {
        problems.push(
            "limits.client_auth_failures_per_min is 0; it must be at least 1 (a phone may \
             mistype once)"
                .to_owned(),
        );
    }
    if l.max_connections_per_ip == Some(0) {
        problems.push(
            "limits.max_connections_per_ip is 0; it must be at least 1, or null for no limit"
                .to_owned(),
        );
    }
    if l.flood_linger_us > 100_000 {
        problems.push(format!(
            "limits.flood_linger_us is {}; at most 100000 (0.1 s), or floods would crawl",
            l.flood_linger_us
        ));
    }
    if l.link_timeout_ms <= l.link_heartbeat_ms || l.link_timeout_ms > 3 * l.link_heartbeat_ms {
        problems.push(format!(
            "limits.link_timeout_ms ({}) must be more than limits.link_heartbeat_ms ({}) and at \
             most three times it: a live link would look dead, or a dead one be found late",
            l.link_timeout_ms, l.link_heartbeat_ms
        ));
    }
    if l.link_announce_ms > 10_000 {
        problems.push(format!(
            "limits.link_announce_ms is {}; at most 10000 (10 s), or a record lost on a \
             tree would be found missing that much later",
            l.link_announce_ms
        ));
    }
    if l.link_backoff_initial_ms > l.link_backoff_max_ms {
        problems.push(format!(
            "limits.link_backoff_initial_ms ({}) is greater than limits.link_backoff_max_ms ({})",
            l.link_backoff_initial_ms, l.link_backoff_max_ms
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Problems reported after `edit` changes the default herd's JSON.
    fn problems_after(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut value: Value = serde_json::from_str(&Config::default_herd().to_json_pretty())
            .expect("default herd JSON parses");
        edit(&mut value);
        match Config::from_json(&value.to_string()) {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// Asserts that some problem after `edit` contains every one of `needles`.
    fn assert_reported(edit: impl FnOnce(&mut Value), needles: &[&str]) {
        let problems = problems_after(edit);
        let hit = problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n)));
        assert!(
            hit,
            "no problem mentions all of {needles:?}; got {problems:#?}"
        );
    }

    /// One test per problem: edit the default herd's JSON, then expect a problem that
    /// contains every listed word (which always names the server or field at fault).
    macro_rules! reports {
        ($($test:ident: |$v:ident| $edit:expr => [$($word:expr),+];)+) => {$(
            #[test]
            fn $test() {
                assert_reported(|$v: &mut Value| $edit, &[$($word),+]);
            }
        )+};
    }

    reports! {
        an_empty_server_list_is_reported: |v| v["servers"] = json!([]) => ["no servers"];
        an_empty_name_is_reported_with_the_server_position:
            |v| v["servers"][1]["name"] = json!("") => ["server #2", "empty name"];
        a_name_with_white_space_is_reported: |v| v["servers"][0]["name"] = json!("Golo man")
            => ["server #1", "\"Golo man\"", "white space"];
        a_name_longer_than_64_bytes_is_reported:
            |v| v["servers"][2]["name"] = json!("x".repeat(65)) => ["server #3", "65 bytes"];
        a_name_that_is_not_printable_ascii_is_reported:
            |v| v["servers"][0]["name"] = json!("Gölöman") => ["server #1", "printable ASCII"];
        a_duplicate_server_name_is_reported: |v| v["servers"][4]["name"] = json!("Hands")
            => ["server name Hands is used by more than one server"];
        a_duplicate_listen_address_is_reported:
            |v| v["servers"][1]["listen"] = json!("127.0.0.1:12138")
            => ["Hands: listen address", "12138", "already used by Goloman"];
        a_bad_listen_address_is_reported_with_what_is_expected:
            |v| v["servers"][3]["listen"] = json!("example.com:80")
            => ["Wilkes: listen address", "expected host:port, e.g. 127.0.0.1:12138"];
        a_listen_port_of_zero_without_a_peer_address_is_reported:
            |v| v["servers"][3]["listen"] = json!("127.0.0.1:0")
            => ["Wilkes", "port 0", "default peer address", "set \"peer_listen\""];
        a_peer_port_of_zero_that_a_neighbour_dials_is_reported:
            |v| v["servers"][3]["peer_listen"] = json!("127.0.0.1:0")
            => ["Wilkes: peer_listen", "port 0", "links to it"];
        an_unknown_neighbour_is_reported:
            |v| v["servers"][1]["neighbours"] = json!(["Goloman", "Wilkes", "Foo"])
            => ["Hands lists neighbour Foo, which is not a server of this herd"];
        a_server_listing_itself_is_reported:
            |v| v["servers"][4]["neighbours"] = json!(["Holiday", "Welsh"])
            => ["Welsh lists itself as a neighbour"];
        a_duplicate_neighbour_entry_is_reported:
            |v| v["servers"][4]["neighbours"] = json!(["Holiday", "Holiday"])
            => ["Welsh lists neighbour Holiday more than once"];
        asymmetric_neighbours_are_reported_from_the_listing_side:
            |v| v["servers"][1]["neighbours"] = json!(["Goloman"])
            => ["Wilkes lists Hands as a neighbour but Hands does not list Wilkes"];
        a_bad_peer_listen_is_reported:
            |v| v["servers"][0]["peer_listen"] = json!("nowhere") => ["Goloman: peer_listen", "not valid"];
        a_default_peer_port_past_65535_is_reported:
            |v| v["servers"][0]["listen"] = json!("127.0.0.1:60000")
            => ["Goloman", "past 65535", "set \"peer_listen\""];
        a_peer_address_on_a_client_port_is_reported:
            |v| v["servers"][0]["peer_listen"] = json!("127.0.0.1:12139")
            => ["Goloman: peer address 127.0.0.1:12139 is the client address of Hands"];
        a_shared_peer_address_is_reported:
            |v| v["servers"][1]["peer_listen"] = json!("127.0.0.1:22138")
            => ["Hands: peer address 127.0.0.1:22138 is already the peer address of Goloman"];
        an_open_peer_address_without_a_secret_is_reported:
            |v| v["servers"][2]["peer_listen"] = json!("0.0.0.0:22140")
            => ["Holiday: peer address 0.0.0.0:22140 is not loopback", "set \"secret\"", "insecure_links"];
        a_bad_admin_listen_is_reported:
            |v| v["servers"][0]["admin_listen"] = json!("nowhere") => ["Goloman: admin_listen", "not valid", "null"];
        an_admin_address_on_a_peer_port_is_reported:
            |v| v["servers"][0]["admin_listen"] = json!("127.0.0.1:22139")
            => ["Goloman: admin address 127.0.0.1:22139 is the peer address of Hands"];
        a_shared_admin_address_is_reported:
            |v| v["servers"][1]["admin_listen"] = json!("127.0.0.1:32138")
            => ["Hands: admin address 127.0.0.1:32138 is already the admin address of Goloman"];
        a_shared_loopback_admin_address_on_one_host_is_reported:
            |v| { v["servers"][0]["admin_listen"] = json!("127.0.0.1:40000"); v["servers"][1]["admin_listen"] = json!("127.0.0.1:40000"); }
            => ["Hands: admin address 127.0.0.1:40000 is already the admin address of Goloman"];
        a_default_admin_port_past_65535_is_reported:
            |v| { v["servers"][0]["listen"] = json!("127.0.0.1:50000"); v["servers"][0]["peer_listen"] = json!("127.0.0.1:50001"); }
            => ["Goloman", "default admin port", "past 65535"];
        a_log_level_that_is_no_filter_is_reported: |v| v["logging"]["level"] = json!("info,=[")
            => ["logging.level", "not a level"];
        a_max_line_bytes_below_64_is_reported: |v| v["limits"]["max_line_bytes"] = json!(63)
            => ["limits.max_line_bytes is 63", "between 64 and 1048576"];
        a_max_line_bytes_above_1_mib_is_reported:
            |v| v["limits"]["max_line_bytes"] = json!(1_048_577)
            => ["limits.max_line_bytes is 1048577", "between 64 and 1048576"];
        zero_connections_per_shard_is_reported:
            |v| v["limits"]["max_connections_per_shard"] = json!(0)
            => ["limits.max_connections_per_shard is 0"];
        a_zero_future_skew_is_reported: |v| v["limits"]["max_future_skew_ms"] = json!(0)
            => ["limits.max_future_skew_ms is 0"];
        a_zero_heartbeat_is_reported: |v| v["limits"]["link_heartbeat_ms"] = json!(0)
            => ["limits.link_heartbeat_ms is 0"];
        a_link_timeout_of_more_than_three_heartbeats_is_reported:
            |v| v["limits"]["link_timeout_ms"] = json!(3001)
            => ["limits.link_timeout_ms (3001) must be more than limits.link_heartbeat_ms (1000)"];
        a_link_timeout_not_above_the_heartbeat_is_reported:
            |v| v["limits"]["link_timeout_ms"] = json!(1000)
            => ["limits.link_timeout_ms (1000)"];
        a_zero_channel_capacity_is_reported: |v| v["limits"]["channel_capacity"] = json!(0)
            => ["limits.channel_capacity is 0"];
        a_zero_initial_backoff_is_reported: |v| v["limits"]["link_backoff_initial_ms"] = json!(0)
            => ["limits.link_backoff_initial_ms is 0"];
        an_initial_backoff_above_the_maximum_is_reported:
            |v| v["limits"]["link_backoff_initial_ms"] = json!(2001)
            => ["link_backoff_initial_ms (2001) is greater than limits.link_backoff_max_ms"];
        a_zero_places_timeout_is_reported: |v| v["limits"]["places_timeout_ms"] = json!(0)
            => ["limits.places_timeout_ms is 0"];
        a_zero_idle_timeout_is_reported: |v| v["limits"]["client_idle_timeout_ms"] = json!(0)
            => ["limits.client_idle_timeout_ms is 0"];
        a_zero_write_timeout_is_reported: |v| v["limits"]["write_timeout_ms"] = json!(0)
            => ["limits.write_timeout_ms is 0"];
        a_zero_record_ttl_is_reported: |v| v["limits"]["record_ttl_ms"] = json!(0)
            => ["limits.record_ttl_ms is 0"];
        zero_max_records_is_reported: |v| v["limits"]["max_records"] = json!(0)
            => ["limits.max_records is 0", "null for no limit"];
        too_many_max_records_are_reported: |v| v["limits"]["max_records"] = json!(1u64 << 33)
            => ["limits.max_records is 8589934592", "at most 4294967294"];
        zero_connections_per_ip_is_reported:
            |v| v["limits"]["max_connections_per_ip"] = json!(0)
            => ["limits.max_connections_per_ip is 0", "null for no limit"];
        a_places_url_without_scheme_is_reported: |v| v["places"] = json!({"base_url": "maps.example"})
            => ["places.base_url \"maps.example\" must start with http:// or https://"];
        a_mock_provider_without_url_is_reported: |v| v["places"] = json!({"provider": "mock"})
            => ["places.provider is mock but places.base_url is missing"];
        a_zero_places_pool_is_reported: |v| v["places"] = json!({"pool_connections": 0})
            => ["places.pool_connections is 0"];
        a_tiny_places_cache_is_reported: |v| v["places"] = json!({"cache_bytes": 1000})
            => ["places.cache_bytes is 1000; at least 65536"];
        a_coarse_snapping_grid_is_reported: |v| v["places"] = json!({"snap_m": 5001})
            => ["places.snap_m is 5001; at most 5000"];
        an_open_client_address_without_tokens_is_reported:
            |v| v["servers"][0]["listen"] = json!("0.0.0.0:12138")
            => ["Goloman: client address 0.0.0.0:12138 is not loopback", "clients", "insecure_clients"];
        tokens_without_a_key_are_reported: |v| v["clients"] = json!({"auth": "token"})
            => ["clients.auth is \"token\" but clients.token_key is missing"];
        a_short_token_key_is_reported: |v| v["clients"] = json!({"auth": "token", "token_key": "short"})
            => ["clients.token_key is 5 bytes; at least 16"];
        client_tls_without_a_certificate_is_reported:
            |v| v["servers"][1]["client_tls_listen"] = json!("127.0.0.1:12639")
            => ["Hands: client_tls_listen needs a certificate", "client_tls", "tls"];
        an_open_client_tls_address_without_tokens_is_reported: |v| {
            v["servers"][1]["client_tls_listen"] = json!("0.0.0.0:12639");
            v["client_tls"] = json!({"cert": "c.pem", "key": "k.pem"});
        } => ["Hands: client_tls_listen 0.0.0.0:12639 is not loopback", "insecure_clients"];
        a_client_tls_address_on_another_port_of_the_herd_is_reported: |v| {
            v["servers"][1]["client_tls_listen"] = json!("127.0.0.1:22138");
            v["client_tls"] = json!({"cert": "c.pem", "key": "k.pem"});
        } => ["Hands: client_tls_listen 127.0.0.1:22138 is the peer address of Goloman"];
        an_open_http_address_without_tokens_is_reported:
            |v| v["servers"][2]["http_listen"] = json!("0.0.0.0:8080")
            => ["Holiday: http_listen 0.0.0.0:8080 is not loopback", "clients.auth", "insecure_clients"];
        https_without_a_certificate_is_reported:
            |v| v["servers"][2]["https_listen"] = json!("127.0.0.1:8443")
            => ["Holiday: https_listen needs a certificate"];
        a_bad_http_address_is_reported: |v| v["servers"][0]["http_listen"] = json!("port 80")
            => ["Goloman: http_listen \"port 80\" is not valid"];
        a_zero_http_request_timeout_is_reported:
            |v| v["limits"]["http_request_timeout_ms"] = json!(0)
            => ["limits.http_request_timeout_ms is 0"];
        a_zero_auth_failure_limit_is_reported:
            |v| v["limits"]["client_auth_failures_per_min"] = json!(0)
            => ["limits.client_auth_failures_per_min is 0"];
        every_places_field_is_refused: |v| v["places"] = json!({"fields": "*"})
            => ["places.fields \"*\" asks Google for every field", "highest SKU"];
        an_unknown_places_field_is_reported_at_its_place:
            |v| v["places"] = json!({"fields": ["location", "reviews"]})
            => ["places.fields[1] \"reviews\" is not a field herd translates"];
        a_places_field_list_without_location_is_reported:
            |v| v["places"] = json!({"fields": ["displayName"]})
            => ["places.fields does not list \"location\""];
        an_empty_secret_is_reported: |v| v["secret"] = json!("") => ["secret is empty"];
        an_empty_tls_path_is_reported:
            |v| v["tls"] = json!({"ca": "", "cert": "{name}.pem", "key": "{name}-key.pem"})
            => ["tls.ca is empty", "herd certs"];
        a_shared_tls_cert_in_a_herd_is_reported:
            |v| v["tls"] = json!({"ca": "ca.pem", "cert": "server.pem", "key": "{name}-key.pem"})
            => ["tls.cert \"server.pem\" has no {name}", "5 servers"];
        a_misspelt_tls_placeholder_is_reported:
            |v| v["tls"] = json!({"ca": "ca.pem", "cert": "{nmae}.pem", "key": "{name}-key.pem"})
            => ["tls.cert \"{nmae}.pem\"", "brace"];
        a_name_placeholder_in_the_ca_is_reported:
            |v| v["tls"] = json!({"ca": "{name}-ca.pem", "cert": "{name}.pem", "key": "{name}.key"})
            => ["tls.ca", "one CA"];
        a_server_name_with_a_slash_under_tls_is_reported: |v| {
            v["servers"] = json!([{"name": "a/b", "listen": "127.0.0.1:9000"}]);
            v["tls"] = json!({"ca": "ca.pem", "cert": "{name}.pem", "key": "{name}-key.pem"});
        } => ["a/b: a name with '/'", "file name"];
    }

    #[test]
    fn an_open_peer_address_is_allowed_with_a_secret_tls_or_insecure_links() {
        let mut herd = Config::default_herd();
        herd.servers[0].peer_listen = Some("0.0.0.0:22138".to_owned());
        assert!(herd.validate().is_err());
        herd.secret = Some("s3cret".to_owned());
        herd.validate().expect("a secret protects the links");
        herd.secret = None;
        herd.tls = Some(TlsConfig {
            ca: "ca.pem".into(),
            cert: "{name}.pem".into(),
            key: "{name}-key.pem".into(),
        });
        herd.validate().expect("TLS protects the links");
        herd.tls = None;
        herd.insecure_links = true;
        herd.validate().expect("the operator accepted the risk");
        let back = Config::from_json(&herd.to_json_pretty()).expect("round trip");
        assert!(back.insecure_links);
    }

    #[test]
    fn servers_on_different_hosts_may_share_a_loopback_admin_address() {
        let text = r#"{"secret": "s", "insecure_clients": true, "servers": [
            {"name": "A", "listen": "10.0.0.1:12138", "admin_listen": "127.0.0.1:32138", "neighbours": ["B"]},
            {"name": "B", "listen": "10.0.0.2:12138", "admin_listen": "127.0.0.1:32138", "neighbours": ["A"]}
        ]}"#;
        let herd = Config::from_json(text).expect("one admin port per host");
        assert_eq!(herd.admin_addr("B"), "127.0.0.1:32138".parse().ok());
    }

    #[test]
    fn several_problems_are_all_reported_one_per_line() {
        let problems = problems_after(|v| {
            v["secret"] = json!("");
            v["servers"][0]["listen"] = json!("nowhere");
            v["servers"][4]["neighbours"] = json!(["Holiday", "Foo"]);
            v["limits"]["channel_capacity"] = json!(0);
        });
        assert_eq!(problems.len(), 4, "{problems:#?}");
        let shown = ConfigError::Invalid(problems.clone()).to_string();
        assert_eq!(shown.lines().collect::<Vec<_>>(), problems);
    }

    #[test]
    fn open_client_addresses_are_valid_with_tokens_or_the_risk_accepted() {
        let open = json!({"servers": [{"name": "A", "listen": "0.0.0.0:12138", "peer_listen": "127.0.0.1:22138"}]});
        assert!(Config::from_json(&open.to_string()).is_err());
        let mut accepted = open.clone();
        accepted["insecure_clients"] = json!(true);
        let config = Config::from_json(&accepted.to_string()).unwrap();
        assert!(config.insecure_clients);
        let mut tokens = open;
        tokens["clients"] = json!({"auth": "token", "token_key": ["0123456789abcdef", "fedcba9876543210"], "read": "any"});
        let config = Config::from_json(&tokens.to_string()).unwrap();
        assert_eq!(config.clients.auth, crate::pure::clients::ClientAuth::Token);
        assert_eq!(config.clients.read, crate::pure::clients::ReadRule::Any);
        assert_eq!(config.clients.keys().len(), 2);
        let back = Config::from_json(&config.to_json_pretty()).unwrap();
        assert_eq!(back, config, "clients survive a round trip");
    }

    #[test]
    fn listen_ports_in_the_ephemeral_range_are_warned_about_with_the_remedy() {
        let text = r#"{"servers": [
            {"name": "A", "listen": "127.0.0.1:15001", "neighbours": []},
            {"name": "B", "listen": "127.0.0.1:12001", "peer_listen": "127.0.0.1:40000", "http_listen": "127.0.0.1:50000", "neighbours": []}
        ]}"#;
        let herd = Config::from_json(text).expect("valid");
        let warnings = herd.ephemeral_warnings((32768, 60999));
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(warnings[0].starts_with(
            "A: admin address (client port + 20000) 127.0.0.1:35001 lies in this host's ephemeral port range 32768-60999"
        ));
        assert!(warnings[0].contains("ip_local_reserved_ports"));
        assert!(warnings[1].starts_with("B: peer address 127.0.0.1:40000"));
        assert!(warnings[2].starts_with("B: http_listen 127.0.0.1:50000"));
        assert!(Config::default_herd()
            .ephemeral_warnings((32768, 60999))
            .is_empty());
    }

    #[test]
    fn port_zero_is_accepted_where_nothing_needs_the_port_in_advance() {
        // A server on its own, every port free: start() reports them.
        let mut lone = Config::default_herd();
        lone.servers.truncate(1);
        lone.servers[0].neighbours.clear();
        lone.servers[0].listen = "127.0.0.1:0".to_owned();
        lone.servers[0].peer_listen = Some("127.0.0.1:0".to_owned());
        lone.servers[0].admin_listen = AdminListen::At("127.0.0.1:0".to_owned());
        lone.validate().expect("port 0 everywhere, no neighbours");
        // Client and admin ports may be 0 in a herd too: only links need
        // to know a port before the server starts.
        let mut herd = Config::default_herd();
        herd.servers[1].listen = "127.0.0.1:0".to_owned();
        herd.servers[1].peer_listen = Some("127.0.0.1:22139".to_owned());
        herd.servers[1].admin_listen = AdminListen::At("127.0.0.1:0".to_owned());
        herd.validate().expect("client and admin port 0");
    }
}
