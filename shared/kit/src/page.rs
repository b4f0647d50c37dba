//! Opaque, tamper-evident page tokens for keyset pagination.
//!
//! A token is `base64url(json(cursor) || hmac_sha256(key, scope || json)[..16])`.
//! The scope binds a token to the tenant, the method and the filters it was
//! issued for: a token replayed with other filters, by another tenant, or with
//! a single bit changed is refused as INVALID_ARGUMENT on `page_token`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

const TAG_LEN: usize = 16;
/// Longest token accepted, to bound the work done on hostile input.
pub const MAX_TOKEN_LEN: usize = 2048;

/// Page size of every list method (the API conventions): 0 means the
/// default, 50; larger than 1,000 is treated as 1,000; negative is recorded as
/// a violation on `page_size` (and the default is returned meanwhile).
pub fn page_size(v: &mut crate::error::Violations, requested: i32) -> i64 {
    v.check(requested < 0, "page_size", "must not be negative");
    if requested <= 0 {
        50
    } else {
        i64::from(requested.min(1000))
    }
}

/// Encodes and verifies page tokens with a server-side secret.
#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(..)")
    }
}

impl PageTokens {
    /// A codec keyed with `secret` (at least 16 bytes recommended).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self {
            key: secret.as_ref().to_vec(),
        }
    }

    fn tag(&self, scope: &str, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(&(scope.len() as u64).to_be_bytes());
        mac.update(scope.as_bytes());
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// A codec with a random key: tokens work only within this process. Used
    /// when no shared secret is configured.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // No system randomness: fall back to a key unique to this process
            // run; tokens stay tamper-evident against clients that cannot
            // observe the process.
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            key.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes()));
        }
        Self { key: key.to_vec() }
    }

    /// Encodes `cursor` for `scope` (tenant, method and filters, in any stable form).
    pub fn encode<T: Serialize>(&self, scope: &str, cursor: &T) -> String {
        // Serialising plain cursor structs cannot fail.
        let body = serde_json::to_vec(cursor).unwrap_or_default();
        let mut raw = body.clone();
        raw.extend_from_slice(&self.tag(scope, &body));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Ends a page read with one row more than `size`: keeps the first
    /// `size` rows and, when there was one more, returns the token of the
    /// last kept row's cursor; otherwise "" (the last page).
    pub fn trim_page<R, T: Serialize>(
        &self,
        scope: &str,
        rows: &mut Vec<R>,
        size: i64,
        cursor: impl Fn(&R) -> T,
    ) -> String {
        let keep = usize::try_from(size).unwrap_or(0);
        if rows.len() <= keep {
            return String::new();
        }
        rows.truncate(keep);
        rows.last()
            .map(|r| self.encode(scope, &cursor(r)))
            .unwrap_or_default()
    }

    /// Decodes a token issued for `scope`. An empty token is `Ok(None)` (first
    /// page); anything forged, truncated, altered or issued for another scope is
    /// INVALID_ARGUMENT on `page_token`.
    pub fn decode<T: DeserializeOwned>(
        &self,
        scope: &str,
        token: &str,
    ) -> Result<Option<T>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let refuse = || {
            ApiError::invalid(
                "page_token",
                "not a page token issued for this request; pass the next_page_token of the previous response unchanged, with the same filters",
            )
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(refuse());
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| refuse())?;
        if raw.len() <= TAG_LEN {
            return Err(refuse());
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(&(scope.len() as u64).to_be_bytes());
        mac.update(scope.as_bytes());
        mac.update(body);
        mac.verify_truncated_left(tag).map_err(|_| refuse())?;
        serde_json::from_slice(body).map(Some).map_err(|_| refuse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Cursor {
        time: i64,
        id: String,
    }

    fn cursor() -> Cursor {
        Cursor {
            time: 1_700_000_000,
            id: "c-1".into(),
        }
    }

    #[test]
    fn a_page_with_one_row_more_is_trimmed_and_continues_after_its_last_row() {
        let tokens = PageTokens::new("k");
        let mut rows = vec![1, 2, 3];
        let next = tokens.trim_page("s", &mut rows, 2, |r| Cursor {
            time: *r,
            id: String::new(),
        });
        assert_eq!(rows, vec![1, 2]);
        let after: Option<Cursor> = tokens.decode("s", &next).unwrap();
        assert_eq!(after.map(|c| c.time), Some(2));
        let mut last = vec![1, 2];
        assert_eq!(tokens.trim_page("s", &mut last, 2, |r| *r), "");
        assert_eq!(last, vec![1, 2]);
    }

    #[test]
    fn page_sizes_follow_the_conventions() {
        let mut v = crate::error::Violations::new();
        assert_eq!(page_size(&mut v, 0), 50);
        assert_eq!(page_size(&mut v, 7), 7);
        assert_eq!(page_size(&mut v, 5000), 1000);
        assert!(v.is_empty());
        assert_eq!(page_size(&mut v, -1), 50);
        assert!(!v.is_empty());
    }

    #[test]
    fn round_trips() {
        let t = PageTokens::new("secret-secret-secret");
        let token = t.encode("tenant/list", &cursor());
        assert_eq!(
            t.decode::<Cursor>("tenant/list", &token).unwrap(),
            Some(cursor())
        );
        assert_eq!(t.decode::<Cursor>("tenant/list", "").unwrap(), None);
    }

    #[test]
    fn refuses_other_scope_key_and_tampering() {
        let t = PageTokens::new("secret-secret-secret");
        let token = t.encode("tenant-a/list", &cursor());
        assert!(t.decode::<Cursor>("tenant-b/list", &token).is_err());
        assert!(
            PageTokens::new("another")
                .decode::<Cursor>("tenant-a/list", &token)
                .is_err()
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[2] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(raw);
        assert!(t.decode::<Cursor>("tenant-a/list", &forged).is_err());
        assert!(t.decode::<Cursor>("tenant-a/list", "!!!").is_err());
        assert!(
            t.decode::<Cursor>("tenant-a/list", &"A".repeat(5000))
                .is_err()
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const SCOPE: &str = "tenant-a/customers/list?country=ES";

        fn codec() -> PageTokens {
            PageTokens::new("secret-secret-secret")
        }

        fn genuine() -> String {
            codec().encode(SCOPE, &cursor())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            // Whatever a client sends as a token, decoding answers (never
            // panics), and only a token this codec issued is accepted.
            #[test]
            fn arbitrary_tokens_are_refused(token in any::<String>()) {
                prop_assume!(!token.is_empty());
                prop_assert!(codec().decode::<Cursor>(SCOPE, &token).is_err());
            }

            #[test]
            fn arbitrary_base64_is_refused(raw in proptest::collection::vec(any::<u8>(), 1..600)) {
                let token = URL_SAFE_NO_PAD.encode(raw);
                prop_assert!(codec().decode::<Cursor>(SCOPE, &token).is_err());
            }

            // Any change to the bytes of a genuine token (flipped bits,
            // truncation, extension) is detected.
            #[test]
            fn altered_tokens_are_refused(
                flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
                cut in 0usize..8,
                extra in proptest::collection::vec(any::<u8>(), 0..8),
            ) {
                let mut raw = URL_SAFE_NO_PAD.decode(genuine()).unwrap();
                for (at, bits) in &flips {
                    let i = at.index(raw.len());
                    raw[i] ^= bits;
                }
                raw.truncate(raw.len() - cut.min(raw.len()));
                raw.extend_from_slice(&extra);
                let token = URL_SAFE_NO_PAD.encode(&raw);
                prop_assume!(token != genuine());
                prop_assert!(codec().decode::<Cursor>(SCOPE, &token).is_err());
            }

            #[test]
            fn altered_text_is_refused(at in any::<prop::sample::Index>(), c in any::<char>()) {
                let token = genuine();
                let i = at.index(token.len());
                let mut altered: String = token[..i].to_string();
                altered.push(c);
                altered.push_str(&token[i + 1..]);
                prop_assume!(altered != token);
                prop_assert!(codec().decode::<Cursor>(SCOPE, &altered).is_err());
            }

            // A token answers only the request (tenant, method, filters) it
            // was issued for, and only with the key that issued it.
            #[test]
            fn tokens_do_not_cross_scopes(other in any::<String>(), key in any::<Vec<u8>>()) {
                prop_assume!(other != SCOPE);
                prop_assert!(codec().decode::<Cursor>(&other, &genuine()).is_err());
                prop_assume!(key != b"secret-secret-secret".to_vec());
                prop_assert!(PageTokens::new(&key).decode::<Cursor>(SCOPE, &genuine()).is_err());
            }

            #[test]
            fn every_cursor_round_trips(time in any::<i64>(), id in any::<String>(), scope in any::<String>()) {
                let c = Cursor { time, id };
                let token = codec().encode(&scope, &c);
                prop_assert_eq!(codec().decode::<Cursor>(&scope, &token).unwrap(), Some(c));
            }
        }
    }
}
