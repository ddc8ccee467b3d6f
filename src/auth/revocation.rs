//! Logged-out tokens, across instances: one token by its `jti` until it
//! expires (`logout`), or every token of a user issued before a moment
//! (`logoutEverywhere`). Redis in services mode, a map in embedded mode.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use anyhow::Context as _;
use redis::aio::ConnectionManager;

use super::{AuthUser, Claims};
use crate::keys::Keys;

#[async_trait::async_trait]
pub trait Revocations: Send + Sync + 'static {
    /// `claims` stops working now, for good.
    async fn revoke(&self, claims: &Claims) -> anyhow::Result<()>;
    /// Every token of `user_id` issued before `at_ms` stops working.
    async fn revoke_all_before(&self, user_id: i64, at_ms: i64) -> anyhow::Result<()>;
    async fn is_revoked(&self, user: &AuthUser) -> anyhow::Result<bool>;
}

/// How long a "valid after" mark is kept: longer than any token lives.
fn mark_ttl(token_ttl: Duration) -> u64 {
    token_ttl.as_secs().saturating_add(3600)
}

pub struct RedisRevocations {
    manager: ConnectionManager,
    keys: Keys,
    token_ttl: Duration,
}

impl RedisRevocations {
    pub fn new(manager: ConnectionManager, keys: Keys, token_ttl: Duration) -> Self {
        Self {
            manager,
            keys,
            token_ttl,
        }
    }
}

#[async_trait::async_trait]
impl Revocations for RedisRevocations {
    async fn revoke(&self, claims: &Claims) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let ttl = (claims.exp - chrono::Utc::now().timestamp()).max(1) + 5;
        let _: () = redis::cmd("SET")
            .arg(self.keys.revoked_token(&claims.jti))
            .arg(1)
            .arg("EX")
            .arg(ttl)
            .query_async(&mut conn)
            .await
            .context("revoking a token")?;
        Ok(())
    }

    async fn revoke_all_before(&self, user_id: i64, at_ms: i64) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let _: () = redis::cmd("SET")
            .arg(self.keys.tokens_valid_after(user_id))
            .arg(at_ms)
            .arg("EX")
            .arg(mark_ttl(self.token_ttl))
            .query_async(&mut conn)
            .await
            .context("revoking a user's tokens")?;
        Ok(())
    }

    async fn is_revoked(&self, user: &AuthUser) -> anyhow::Result<bool> {
        let mut conn = self.manager.clone();
        let (revoked, valid_after): (Option<String>, Option<i64>) = redis::cmd("MGET")
            .arg(self.keys.revoked_token(&user.claims.jti))
            .arg(self.keys.tokens_valid_after(user.user_id))
            .query_async(&mut conn)
            .await
            .context("checking revocations")?;
        Ok(revoked.is_some() || valid_after.is_some_and(|at| user.claims.iat_ms < at))
    }
}

#[derive(Default)]
pub struct InProcessRevocations {
    /// jti → expiry (unix seconds).
    tokens: Mutex<HashMap<String, i64>>,
    /// user → valid after (unix ms).
    users: Mutex<HashMap<i64, i64>>,
}

#[async_trait::async_trait]
impl Revocations for InProcessRevocations {
    async fn revoke(&self, claims: &Claims) -> anyhow::Result<()> {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = chrono::Utc::now().timestamp();
        tokens.retain(|_, exp| *exp > now);
        tokens.insert(claims.jti.clone(), claims.exp);
        Ok(())
    }

    async fn revoke_all_before(&self, user_id: i64, at_ms: i64) -> anyhow::Result<()> {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(user_id, at_ms);
        Ok(())
    }

    async fn is_revoked(&self, user: &AuthUser) -> anyhow::Result<bool> {
        let token = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&user.claims.jti);
        let before = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&user.user_id)
            .is_some_and(|at| user.claims.iat_ms < *at);
        Ok(token || before)
    }
}

impl Keys {
    pub fn revoked_token(&self, jti: &str) -> String {
        format!("{}revoked:{jti}", self.prefix())
    }

    pub fn tokens_valid_after(&self, user_id: i64) -> String {
        format!("{}tokens-valid-after:{user_id}", self.prefix())
    }
}
