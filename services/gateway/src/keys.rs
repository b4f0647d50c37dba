//! API keys and scopes: pure logic, no I/O.
//!
//! A key reads `rpk_<8 hex>_<secret>`: `rpk` marks a Rapport key (so secret
//! scanners can find leaked ones), its first 12 characters (`rpk_<8 hex>`) are
//! the visible prefix shown in lists and logs, and `<secret>` is 43 base64url
//! characters (256 random bits). Only the SHA-256 of the whole key is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Every scope a key can hold. `<area>:*` stands for both of an area's scopes.
pub const SCOPES: &[&str] = &[
    "profile:read",
    "profile:write",
    "interaction:read",
    "interaction:write",
    "segmentation:read",
    "segmentation:write",
    "valuation:read",
    "valuation:write",
    "engagement:read",
    "engagement:write",
    "admin",
];

/// A freshly generated key: `key` is shown once and never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The whole key, for the client.
    pub key: String,
    /// Its visible prefix: the first 12 characters, `rpk_<8 hex>`.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
}

/// Why a string is not a usable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The string is not shaped like a Rapport key.
    #[error(
        "not a Rapport API key: expected rpk_<8 hex characters>_<at least 32 base64url characters>"
    )]
    Malformed,
    /// The random source failed.
    #[error("the system random source failed")]
    Random,
}

/// Generates a new key from the system's secure random source.
pub fn generate() -> Result<NewKey, KeyError> {
    let mut bytes = [0u8; 36];
    getrandom::fill(&mut bytes).map_err(|_| KeyError::Random)?;
    let prefix = format!("rpk_{}", hex::encode(&bytes[..4]));
    let secret = URL_SAFE_NO_PAD.encode(&bytes[4..]);
    let key = format!("{prefix}_{secret}");
    Ok(NewKey {
        hash: hash(&key),
        prefix,
        key,
    })
}

/// Checks the shape of a client-supplied key (such as a fixed development key)
/// and returns it as a [`NewKey`].
pub fn parse(key: &str) -> Result<NewKey, KeyError> {
    let rest = key.strip_prefix("rpk_").ok_or(KeyError::Malformed)?;
    let (prefix, secret) = rest.split_once('_').ok_or(KeyError::Malformed)?;
    let prefix_ok = prefix.len() == 8
        && prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = (32..=128).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !(prefix_ok && secret_ok) {
        return Err(KeyError::Malformed);
    }
    Ok(NewKey {
        key: key.to_string(),
        prefix: format!("rpk_{prefix}"),
        hash: hash(key),
    })
}

/// SHA-256 of a whole key.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `held` (a key's scopes) grants `required`. `admin` grants only
/// `admin`; `area:*` grants `area:read` and `area:write`.
pub fn grants(held: &[String], required: &str) -> bool {
    held.iter().any(|h| {
        h == required
            || h.strip_suffix(":*")
                .is_some_and(|area| required.split_once(':').is_some_and(|(a, _)| a == area))
    })
}

/// Checks requested scopes: each must be a known scope or `area:*` of a known
/// area. Returns the unknown ones.
pub fn unknown_scopes(requested: &[String]) -> Vec<String> {
    requested
        .iter()
        .filter(|s| {
            let known = SCOPES.contains(&s.as_str());
            let wildcard = s.strip_suffix(":*").is_some_and(|area| {
                SCOPES
                    .iter()
                    .any(|k| k.split_once(':').is_some_and(|(a, _)| a == area))
            });
            !(known || wildcard)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.key, b.key);
        assert_eq!(parse(&a.key).unwrap(), a);
        assert_eq!(a.key.len(), 4 + 8 + 1 + 43);
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "rpk_",
            "rpk_zzzzzzzz_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "rpk_0123abcd_short",
            "xyz_0123abcd_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "rpk_0123abcd_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
        ] {
            assert_eq!(parse(bad), Err(KeyError::Malformed), "{bad:?}");
        }
        assert!(parse("rpk_0123abcd_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_ok());
    }

    #[test]
    fn scopes_and_wildcards() {
        let held = vec!["profile:read".to_string(), "segmentation:*".to_string()];
        assert!(grants(&held, "profile:read"));
        assert!(!grants(&held, "profile:write"));
        assert!(grants(&held, "segmentation:write"));
        assert!(!grants(&held, "admin"));
        assert_eq!(
            unknown_scopes(&[
                "profile:*".into(),
                "admin".into(),
                "root".into(),
                "nope:*".into()
            ]),
            vec!["root".to_string(), "nope:*".to_string()]
        );
    }
}
