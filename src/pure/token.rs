//! Client tokens: proof that a connection speaks for one client id, until an
//! expiry, checked by any server of the herd with no database.
//!
//! A token is `herd1.<expiry>.<key id>.<mac>`: the expiry in UNIX seconds,
//! the id of the key that signed it (8 hex digits, from the key itself), and
//! the HMAC-SHA256 under that key of the client id, the expiry and the key
//! id, in unpadded base64url (43 characters). The client id is not in the
//! token: the `AUTH` line names it, and the MAC binds the two. Every
//! character is one a URL, an HTTP Basic password and a protocol field can
//! carry as is.
//!
//! Pure: the time is a parameter. It owns the format and the checks; who
//! may do what with a verified id is the connection's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The first field of every token of this format.
pub const FORMAT: &str = "herd1";

/// Shortest `clients.token_key` accepted, in bytes: a key much shorter than
/// the MAC is the weak link (`openssl rand -hex 32` makes 64).
pub const MIN_KEY_BYTES: usize = 16;

/// Longest token looked at; a real one is about 70 bytes.
pub const MAX_TOKEN_BYTES: usize = 128;

/// One key of `clients.token_key`, with its id.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    id: u32,
    secret: Box<[u8]>,
}

// Never prints the secret.
impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({:08x})", self.id)
    }
}

impl TokenKey {
    /// The key of a `token_key` string; its id comes from its bytes, so the
    /// same key has the same id on every server and after any reordering.
    pub fn new(secret: &str) -> TokenKey {
        let digest = Sha256::new()
            .chain_update(b"herd client token key id\0")
            .chain_update(secret.as_bytes())
            .finalize();
        let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        TokenKey {
            id,
            secret: secret.as_bytes().into(),
        }
    }

    /// The key's id, as tokens carry it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The MAC of a token for `client_id` until `expiry`, under this key.
    fn mac(&self, client_id: &str, expiry: u64) -> Hmac<Sha256> {
        // An HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(format!("herd client token\0{expiry}\0{:08x}\0", self.id).as_bytes());
        mac.update(client_id.as_bytes());
        mac
    }
}

/// A token for `client_id` that expires at `expiry` (UNIX seconds).
pub fn issue(key: &TokenKey, client_id: &str, expiry: u64) -> String {
    let tag = key.mac(client_id, expiry).finalize().into_bytes();
    format!(
        "{FORMAT}.{expiry}.{:08x}.{}",
        key.id,
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// What a good token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// When it stops being good, UNIX seconds.
    pub expiry: u64,
    /// The id of the key that signed it.
    pub key_id: u32,
}

/// Why a token is not good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format.
    #[error("not a token")]
    Malformed,
    /// Signed by no key this server has (never issued here, or its key was
    /// removed).
    #[error("signed by a key this server does not have")]
    UnknownKey,
    /// Not the MAC of this client id and expiry: forged, tampered, or for
    /// another client.
    #[error("not valid for this client")]
    Forged,
    /// Good, but past its expiry.
    #[error("expired")]
    Expired,
}

/// Checks `token` for `client_id` at `now` (UNIX seconds) against `keys`.
/// The MAC is compared in constant time.
pub fn verify(
    keys: &[TokenKey],
    client_id: &str,
    token: &str,
    now: u64,
) -> Result<Verified, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(FORMAT), Some(expiry), Some(id), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    // Canonical spellings only, so one token has one text.
    let canonical_number = !expiry.is_empty()
        && expiry.len() <= 20
        && expiry.bytes().all(|b| b.is_ascii_digit())
        && (expiry == "0" || !expiry.starts_with('0'));
    let expiry: u64 = match expiry.parse() {
        Ok(expiry) if canonical_number => expiry,
        _ => return Err(TokenError::Malformed),
    };
    let lower_hex = id.len() == 8 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let id = match u32::from_str_radix(id, 16) {
        Ok(id) if lower_hex => id,
        _ => return Err(TokenError::Malformed),
    };
    let tag = match URL_SAFE_NO_PAD.decode(tag) {
        Ok(tag) if tag.len() == 32 => tag,
        _ => return Err(TokenError::Malformed),
    };
    let key = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or(TokenError::UnknownKey)?;
    key.mac(client_id, expiry)
        .verify_slice(&tag)
        .map_err(|_| TokenError::Forged)?;
    if now >= expiry {
        return Err(TokenError::Expired);
    }
    Ok(Verified { expiry, key_id: id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_796_500_000;

    fn key(text: &str) -> TokenKey {
        TokenKey::new(text)
    }

    #[test]
    fn a_token_verifies_for_its_client_until_its_expiry() {
        let k = key("0123456789abcdef0123456789abcdef");
        let token = issue(&k, "alice.phone", NOW + 60);
        assert!(token.starts_with(&format!("herd1.{}.{:08x}.", NOW + 60, k.id())));
        assert_eq!(token.len(), FORMAT.len() + 1 + 10 + 1 + 8 + 1 + 43);
        let keys = [k.clone()];
        assert_eq!(
            verify(&keys, "alice.phone", &token, NOW),
            Ok(Verified {
                expiry: NOW + 60,
                key_id: k.id()
            })
        );
        assert_eq!(
            verify(&keys, "alice.phone", &token, NOW + 59).map(|v| v.expiry),
            Ok(NOW + 60)
        );
        assert_eq!(
            verify(&keys, "alice.phone", &token, NOW + 60),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_is_good_for_its_own_client_only() {
        let keys = [key("0123456789abcdef0123456789abcdef")];
        let token = issue(&keys[0], "alice.phone", NOW + 60);
        for other in ["bob.phone", "alice.phone2", "alice.phon", ""] {
            assert_eq!(
                verify(&keys, other, &token, NOW),
                Err(TokenError::Forged),
                "{other}"
            );
        }
    }

    #[test]
    fn every_key_of_the_list_verifies_and_a_removed_one_does_not() {
        let (old, new) = (
            key("the old key, 32 bytes long......"),
            key("the new key, 32 bytes long......"),
        );
        assert_ne!(old.id(), new.id());
        let signed_before = issue(&old, "c", NOW + 60);
        let both = [new.clone(), old.clone()];
        assert_eq!(
            verify(&both, "c", &signed_before, NOW).map(|v| v.key_id),
            Ok(old.id())
        );
        assert_eq!(
            verify(&[new], "c", &signed_before, NOW),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_mac() {
        let k = key("0123456789abcdef0123456789abcdef");
        let good = issue(&k, "c", NOW + 60);
        let keys = [k];
        let tag = good.rsplit('.').next().unwrap();
        let id = format!("{:08x}", keys[0].id());
        for bad in [
            String::new(),
            "herd1".to_owned(),
            format!("herd2.{}.{id}.{tag}", NOW + 60),
            format!("herd1.+{}.{id}.{tag}", NOW + 60),
            format!("herd1.0{}.{id}.{tag}", NOW + 60),
            format!("herd1.{}.{}.{tag}", NOW + 60, id.to_uppercase()),
            format!("herd1.{}.{id}.{tag}=", NOW + 60),
            format!("herd1.{}.{id}.{tag}.x", NOW + 60),
            format!("herd1.{}.{id}.{}", NOW + 60, &tag[1..]),
            format!("herd1.99999999999999999999.{id}.{tag}"),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(
                verify(&keys, "c", &bad, NOW),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_debug_form_shows_the_id_not_the_secret() {
        let k = key("a secret that must not print!!");
        assert!(!format!("{k:?}").contains("secret"));
        assert!(format!("{k:?}").contains(&format!("{:08x}", k.id())));
    }

    proptest! {
        #[test]
        fn issued_tokens_round_trip(
            client in "[!-~]{1,255}",
            secret in "[ -~]{16,64}",
            ttl in 1u64..100_000_000,
        ) {
            let k = key(&secret);
            let token = issue(&k, &client, NOW + ttl);
            prop_assert!(token.len() <= MAX_TOKEN_BYTES);
            prop_assert!(!token.bytes().any(|b| b.is_ascii_whitespace()));
            prop_assert_eq!(
                verify(std::slice::from_ref(&k), &client, &token, NOW),
                Ok(Verified { expiry: NOW + ttl, key_id: k.id() })
            );
        }

        #[test]
        fn any_change_to_a_token_refuses_it(
            client in "[!-~]{1,64}",
            at in 0usize..70,
            to in prop::sample::select(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.".to_vec()),
        ) {
            let k = key("0123456789abcdef0123456789abcdef");
            let token = issue(&k, &client, NOW + 600);
            let mut bytes = token.clone().into_bytes();
            let at = at % bytes.len();
            prop_assume!(bytes[at] != to);
            bytes[at] = to;
            let tampered = String::from_utf8(bytes).unwrap();
            // A change in the last character's two low bits would decode to
            // the same tag in a lax base64; the strict decoder refuses it.
            prop_assert!(verify(&[k], &client, &tampered, NOW).is_err(), "{} accepted", tampered);
        }
    }
}
