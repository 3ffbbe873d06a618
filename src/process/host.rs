//! What this host says about itself that a server's start depends on: the
//! range of ports its kernel gives outgoing connections.
//!
//! Reads `/proc`; the rules that use it are the config's
//! (`Config::ephemeral_warnings`).

use std::net::SocketAddr;

/// This host's ephemeral port range (`net.ipv4.ip_local_port_range`), if
/// it can be read.
pub fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    match (ports.next(), ports.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Some((low, high)),
        _ => None,
    }
}

/// Why binding `addr` may have failed, when its port is in the host's
/// ephemeral range: a sentence to add to the error, or nothing.
pub fn bind_hint(addr: SocketAddr, error: &std::io::Error) -> String {
    let in_use = error.kind() == std::io::ErrorKind::AddrInUse
        || error.to_string().contains("Address already in use");
    match ephemeral_range() {
        Some((low, high)) if in_use && (low..=high).contains(&addr.port()) => format!(
            " (port {} lies in this host's ephemeral port range {low}-{high}, where an outgoing \
             connection may hold it: choose a port below {low}, or reserve it with \
             net.ipv4.ip_local_reserved_ports)",
            addr.port()
        ),
        _ => String::new(),
    }
}
