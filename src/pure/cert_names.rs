//! The DNS name that stands for a herd name in certificates, both ways:
//! a herd name may hold characters a DNS name may not, and DNS names compare
//! without case while herd names do not, so a certificate carries
//! `<hex of the name's bytes>.herd.invalid` (see `net/link/tls.rs` for why).
//! Shared by the links' TLS, which checks names, and `herd certs`, which
//! writes them. Pure: no I/O.

use crate::pure::config::name_ok;

/// The parent domain of every name in a herd certificate.
pub const DNS_SUFFIX: &str = "herd.invalid";
/// Hex digits per DNS label (a label may have at most 63 bytes).
const HEX_PER_LABEL: usize = 32;
/// The DNS name that stands for herd name `name` in certificates:
/// `476f6c6f6d616e.herd.invalid` for `Goloman`.
pub fn dns_name_for(name: &str) -> String {
    let hex = hex::encode(name.as_bytes());
    let mut dns =
        String::with_capacity(hex.len() + hex.len() / HEX_PER_LABEL + 1 + DNS_SUFFIX.len());
    for label in hex.as_bytes().chunks(HEX_PER_LABEL) {
        // Hex digits are ASCII, so every chunk is a string.
        dns.push_str(&String::from_utf8_lossy(label));
        dns.push('.');
    }
    dns.push_str(DNS_SUFFIX);
    dns
}

/// The herd name a certificate DNS name stands for, if it is one made by
/// [`dns_name_for`] (compared without case, as webpki compares names) for a
/// valid herd name.
pub fn herd_name_of(dns: &str) -> Option<String> {
    let dns = dns.to_ascii_lowercase();
    let labels = dns.strip_suffix(DNS_SUFFIX)?.strip_suffix('.')?;
    let bytes = hex::decode(labels.replace('.', "")).ok()?;
    let name = String::from_utf8(bytes).ok()?;
    // Only the canonical form counts, so each name has exactly one spelling.
    (name_ok(&name) && dns_name_for(&name) == dns).then_some(name)
}
