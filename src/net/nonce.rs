//! Fresh nonces for the link handshake, and a server's run number, from
//! the operating system's random source (the only randomness links need;
//! the session in `link_session.rs` takes them as values).

use crate::pure::link_session::{nonce_hex, NONCE_BYTES};

/// A new nonce, as the handshake writes it.
pub fn fresh() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut bytes)?;
    Ok(nonce_hex(&bytes))
}

/// A new run number (never 0, which means none): drawn once per start,
/// so that neighbours can tell one life of this server from the next.
pub fn fresh_run() -> Result<u64, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::link_session::valid_nonce;

    #[test]
    fn nonces_are_well_formed_and_not_repeated() {
        let a = fresh().expect("random source");
        let b = fresh().expect("random source");
        assert!(valid_nonce(&a) && valid_nonce(&b), "{a} {b}");
        assert_ne!(a, b);
    }
}
