//! Automatic persisted queries, as Apollo's protocol has them: a request's
//! `extensions.persistedQuery {version: 1, sha256Hash}` names its query by
//! the SHA-256 of the text (lowercase hex). Sent without the text, the hash
//! is looked up; unknown, the answer is `PersistedQueryNotFound` (code
//! `PERSISTED_QUERY_NOT_FOUND`) and the client sends the text with the hash,
//! which registers it once it has run without a request error.
//!
//! The store is a [`Cache`] that `app.rs` chooses (Redis in services mode,
//! shared by every instance; an in-process LRU bounded in bytes in embedded
//! mode), each text under [`Keys::persisted_query`] with a TTL. A store that
//! fails is a miss: the client then sends the text.
//!
//! This is not async-graphql's `ApolloPersistedQueries` extension: it would
//! be the schema's first extension (which slows every field's resolution,
//! see `schema.rs`), it resolves a hash only during execution (after the
//! HTTP layer has let a GET through as a query, so a hashed mutation would
//! run over GET), it stores whatever parses, unchecked and uncoded, and its
//! errors carry no `extensions.code`.

use std::{sync::Arc, time::Duration};

use async_graphql::{Request, Value};
use sha2::{Digest as _, Sha256};

use crate::{
    cache::Cache,
    keys::Keys,
    metrics::{CacheName, Metrics},
};

/// The request extension that carries the hash.
pub const EXTENSION: &str = "persistedQuery";

/// Why a persisted query could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistedQueryError {
    /// The hash names no stored text: the client sends it with the hash.
    NotFound,
    /// A malformed extension, another version, or a hash that is not the
    /// text's: BAD_USER_INPUT.
    BadInput(String),
}

impl PersistedQueryError {
    /// The message Apollo Client and urql look for, or what to fix.
    pub fn message(&self) -> &str {
        match self {
            Self::NotFound => "PersistedQueryNotFound",
            Self::BadInput(message) => message,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::BadInput(_) => "BAD_USER_INPUT",
        }
    }
}

/// A text to store under its hash once it ran without a request error.
#[derive(Debug)]
pub struct Registration {
    hash: String,
    query: String,
}

/// The persisted-query store and how long an entry lives.
pub struct PersistedQueries {
    store: Arc<dyn Cache>,
    keys: Keys,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl PersistedQueries {
    pub fn new(store: Arc<dyn Cache>, keys: Keys, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            keys,
            ttl,
            metrics,
        }
    }

    /// Applies `request`'s `persistedQuery` extension (and removes it):
    /// without text, fills the text in from the store; with text, checks
    /// the hash and returns the registration to make after it ran. A request
    /// without the extension is left as it is.
    pub async fn resolve(
        &self,
        request: &mut Request,
    ) -> Result<Option<Registration>, PersistedQueryError> {
        let Some(extension) = request.extensions.remove(EXTENSION) else {
            return Ok(None);
        };
        let hash = parse_extension(extension)?;
        if request.query.is_empty() {
            let found = self.store.get(&self.keys.persisted_query(&hash)).await;
            self.metrics
                .cache(CacheName::PersistedQueries, matches!(found, Ok(Some(_))));
            return match found {
                Ok(Some(query)) => {
                    request.query = query;
                    Ok(None)
                }
                Ok(None) => Err(PersistedQueryError::NotFound),
                Err(e) => {
                    tracing::warn!(error = ?e, "reading a persisted query; answered as unknown");
                    Err(PersistedQueryError::NotFound)
                }
            };
        }
        let actual = sha256_hex(&request.query);
        if actual != hash {
            return Err(PersistedQueryError::BadInput(format!(
                "extensions.persistedQuery.sha256Hash: {hash} is not the SHA-256 of the query text (that is {actual})"
            )));
        }
        Ok(Some(Registration {
            hash,
            query: request.query.clone(),
        }))
    }

    /// Stores a registered text; a failure is logged (the client will send
    /// the text again).
    pub async fn register(&self, registration: Registration) {
        let key = self.keys.persisted_query(&registration.hash);
        if let Err(e) = self.store.set(&key, &registration.query, self.ttl).await {
            tracing::warn!(error = ?e, "storing a persisted query");
        }
    }
}

/// The text's SHA-256, in lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether a request carries the extension (it then may leave out the text).
pub fn requested(extensions: &serde_json::Map<String, serde_json::Value>) -> bool {
    extensions.get(EXTENSION).is_some_and(|v| !v.is_null())
}

/// The extension's hash, lowercased, once its version is 1 and the hash is
/// 64 hex digits. Other fields (urql's `miss`) are ignored.
fn parse_extension(extension: Value) -> Result<String, PersistedQueryError> {
    let bad = |m: &str| PersistedQueryError::BadInput(format!("extensions.persistedQuery{m}"));
    let Value::Object(fields) = extension else {
        return Err(bad(": must be an object {version: 1, sha256Hash}"));
    };
    match fields.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(other) => return Err(bad(&format!(".version: must be 1, got {other}"))),
        None => return Err(bad(".version: missing (must be 1)")),
    }
    match fields.get("sha256Hash") {
        Some(Value::String(hash))
            if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(hash.to_ascii_lowercase())
        }
        Some(_) => Err(bad(
            ".sha256Hash: must be 64 hexadecimal digits, the SHA-256 of the query text",
        )),
        None => Err(bad(".sha256Hash: missing")),
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::value;

    use super::*;
    use crate::cache::InProcessCache;

    fn store() -> PersistedQueries {
        PersistedQueries::new(
            Arc::new(InProcessCache::new(10)),
            Keys::new("t:"),
            Duration::from_secs(60),
            Arc::default(),
        )
    }

    fn request(query: &str, extension: Value) -> Request {
        let mut request = Request::new(query);
        request.extensions.insert(EXTENSION.to_owned(), extension);
        request
    }

    const QUERY: &str = "{ __typename }";

    #[test]
    fn the_hash_is_lowercase_hex_sha256() {
        // `printf '{ __typename }' | sha256sum`
        assert_eq!(
            sha256_hex(QUERY),
            "7f56e67dd21ab3f30d1ff8b7bed08893f0a0db86449836189b361dd1e56ddb4b"
        );
    }

    #[tokio::test]
    async fn a_text_registers_and_its_hash_alone_then_finds_it() {
        let apq = store();
        let hash = sha256_hex(QUERY);
        let mut miss = request("", value!({ "version": 1, "sha256Hash": hash.clone() }));
        assert_eq!(
            apq.resolve(&mut miss).await.expect_err("unknown"),
            PersistedQueryError::NotFound
        );
        // urql's retry marks itself with `miss: true`; an upper-case hash
        // is the same hash.
        let mut full = request(
            QUERY,
            value!({ "version": 1, "sha256Hash": hash.to_uppercase(), "miss": true }),
        );
        let registration = apq.resolve(&mut full).await.expect("matches");
        assert!(full.extensions.get(EXTENSION).is_none());
        apq.register(registration.expect("to register")).await;
        let mut hit = request("", value!({ "version": 1, "sha256Hash": hash }));
        assert!(apq.resolve(&mut hit).await.expect("known").is_none());
        assert_eq!(hit.query, QUERY);
    }

    #[tokio::test]
    async fn bad_extensions_are_bad_input_naming_the_field() {
        let apq = store();
        let hash = sha256_hex(QUERY);
        for (extension, field) in [
            (value!("x"), "extensions.persistedQuery:"),
            (
                value!({ "version": 2, "sha256Hash": hash.clone() }),
                ".version:",
            ),
            (
                value!({ "version": "1", "sha256Hash": hash.clone() }),
                ".version:",
            ),
            (value!({ "sha256Hash": hash.clone() }), ".version:"),
            (value!({ "version": 1 }), ".sha256Hash:"),
            (
                value!({ "version": 1, "sha256Hash": "abc" }),
                ".sha256Hash:",
            ),
            (
                value!({ "version": 1, "sha256Hash": "g".repeat(64) }),
                ".sha256Hash:",
            ),
            (
                value!({ "version": 1, "sha256Hash": format!("{hash}0") }),
                ".sha256Hash:",
            ),
            (
                value!({ "version": 1, "sha256Hash": "0".repeat(64) }),
                "is not the SHA-256",
            ),
        ] {
            let mut r = request(QUERY, extension.clone());
            let e = apq.resolve(&mut r).await.expect_err("bad input");
            assert_eq!(e.code(), "BAD_USER_INPUT", "{extension}");
            assert!(e.message().contains(field), "{extension}: {}", e.message());
        }
    }

    #[tokio::test]
    async fn a_request_without_the_extension_is_left_alone() {
        let apq = store();
        let mut r = Request::new(QUERY);
        assert!(apq.resolve(&mut r).await.expect("no extension").is_none());
        assert_eq!(r.query, QUERY);
    }
}
