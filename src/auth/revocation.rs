//! Logged-out tokens, across instances: one token by its `jti` until it
//! expires (`logout`), or every token of a user issued before a moment
//! (`logoutEverywhere`). Redis in services mode, a map in embedded mode.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{AuthUser, Claims};
use crate::keys::Keys;

#[async_trait::async_trait]
pub trait Revocations: Send + Sync + 'static {
    /// `claims` stops working now, for good.
    async fn revoke(&self, claims: &Claims) -> anyhow::Result<()>;
    /// Every token of `user_id` issued before `at_ms` stops working.
    async fn revoke_all_before(&self, user_id: i64, at_ms: i64) -> anyhow::Result<()>;
    async fn is_revoked(&self, user: &AuthUser) -> anyhow::Result<bool>;
    /// [`Revocations::is_revoked`] for many tokens at once, in order.
    async fn revoked_among(&self, users: &[Arc<AuthUser>]) -> anyhow::Result<Vec<bool>> {
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            out.push(self.is_revoked(user).await?);
        }
        Ok(out)
    }
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

    async fn revoked_among(&self, users: &[Arc<AuthUser>]) -> anyhow::Result<Vec<bool>> {
        let mut out = Vec::with_capacity(users.len());
        let mut conn = self.manager.clone();
        // Bounded commands: a thousand tokens (two keys each) per MGET.
        for chunk in users.chunks(1000) {
            let mut cmd = redis::cmd("MGET");
            for user in chunk {
                cmd.arg(self.keys.revoked_token(&user.claims.jti))
                    .arg(self.keys.tokens_valid_after(user.user_id));
            }
            let values: Vec<Option<String>> = cmd
                .query_async(&mut conn)
                .await
                .context("checking revocations")?;
            for (user, pair) in chunk.iter().zip(values.chunks(2)) {
                let revoked = pair.first().is_some_and(Option::is_some);
                let valid_after = pair
                    .get(1)
                    .and_then(Option::as_deref)
                    .and_then(|at| at.parse::<i64>().ok());
                out.push(revoked || valid_after.is_some_and(|at| user.claims.iat_ms < at));
            }
        }
        Ok(out)
    }
}

/// Watched tokens by watch id, with what to notify on revocation.
type WatchedTokens = HashMap<u64, (Arc<AuthUser>, Arc<Notify>)>;

/// The tokens of this instance's open websockets, checked against the
/// revocations every `interval` in one batch (one `MGET` per thousand
/// sockets, rather than a round trip per socket).
pub struct RevocationWatch {
    revocations: Arc<dyn Revocations>,
    interval: Duration,
    watched: Mutex<WatchedTokens>,
    next_id: AtomicU64,
    running: AtomicBool,
    /// Ends the checks at shutdown.
    stop: CancellationToken,
    /// Where the checks run, so shutdown can wait for them to end.
    tasks: TaskTracker,
}

/// One watched token; dropping it stops the watch. `revoked` is notified
/// once the token is found revoked.
pub struct Watched {
    watch: Arc<RevocationWatch>,
    id: u64,
    pub revoked: Arc<Notify>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.watch.lock().remove(&self.id);
    }
}

impl RevocationWatch {
    pub fn new(
        revocations: Arc<dyn Revocations>,
        interval: Duration,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            revocations,
            interval,
            watched: Mutex::default(),
            next_id: AtomicU64::new(0),
            running: AtomicBool::new(false),
            stop,
            tasks,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchedTokens> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches `user`'s token until the returned guard drops. The checks
    /// start with the first watch (on the caller's runtime) and stop at
    /// shutdown or once the watch itself is gone.
    pub fn watch(self: &Arc<Self>, user: AuthUser) -> Watched {
        if !self.running.swap(true, Ordering::AcqRel) {
            crate::shutdown::every(
                &self.tasks,
                self.interval,
                self.stop.clone(),
                Arc::downgrade(self),
                |watch| async move { watch.check().await },
            );
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = Arc::new(Notify::new());
        self.lock().insert(id, (Arc::new(user), revoked.clone()));
        Watched {
            watch: self.clone(),
            id,
            revoked,
        }
    }

    /// One round: every watched token at once. An unreachable store leaves
    /// the sockets open (logged), as HTTP requests fail open too.
    async fn check(&self) {
        // Arcs: the snapshot copies pointers, not tokens.
        let (ids, users): (Vec<u64>, Vec<Arc<AuthUser>>) = self
            .lock()
            .iter()
            .map(|(id, (user, _))| (*id, user.clone()))
            .unzip();
        if ids.is_empty() {
            return;
        }
        match self.revocations.revoked_among(&users).await {
            Ok(flags) => {
                let watched = self.lock();
                for (id, revoked) in ids.iter().zip(flags) {
                    if revoked && let Some((_, notify)) = watched.get(id) {
                        notify.notify_one();
                    }
                }
            }
            Err(e) => tracing::warn!(error = ?e, "checking open websockets' tokens failed"),
        }
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
#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> AuthUser {
        AuthUser {
            user_id: 1,
            claims: Claims {
                sub: "1".into(),
                iat: 0,
                exp: i64::MAX,
                jti: "j".into(),
                iss: "herald".into(),
                iat_ms: 0,
            },
        }
    }

    /// Says every token is revoked, or fails while `down`; counts the
    /// questions.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        asked: AtomicU64,
    }

    #[async_trait::async_trait]
    impl Revocations for Flaky {
        async fn revoke(&self, _: &Claims) -> anyhow::Result<()> {
            Ok(())
        }

        async fn revoke_all_before(&self, _: i64, _: i64) -> anyhow::Result<()> {
            Ok(())
        }

        async fn is_revoked(&self, _: &AuthUser) -> anyhow::Result<bool> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            anyhow::ensure!(!self.down.load(Ordering::SeqCst), "store unreachable");
            Ok(true)
        }
    }

    /// The check fails open: while the store cannot answer, a watched token
    /// is not reported revoked (its socket stays open); once it answers
    /// again, the revocation lands.
    #[tokio::test]
    async fn an_unreachable_store_reports_no_revocation_until_it_answers() {
        use futures_util::FutureExt as _;
        let store = Arc::new(Flaky::default());
        store.down.store(true, Ordering::SeqCst);
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let watch = RevocationWatch::new(
            store.clone(),
            Duration::from_millis(10),
            stop.clone(),
            tasks.clone(),
        );
        let watched = watch.watch(user());
        // Three rounds asked, and failed.
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.asked.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the watch keeps asking");
        assert!(
            watched.revoked.notified().now_or_never().is_none(),
            "no revocation reported while the store is down"
        );
        store.down.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), watched.revoked.notified())
            .await
            .expect("the revocation lands once the store answers");
        crate::test_support::shut_down(&stop, &tasks, "the checks").await;
    }

    #[tokio::test]
    async fn the_watch_stops_checking_at_shutdown_while_sockets_are_open() {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let watch = RevocationWatch::new(
            Arc::new(InProcessRevocations::default()),
            Duration::from_millis(10),
            stop.clone(),
            tasks.clone(),
        );
        let open = watch.watch(user());
        assert_eq!(tasks.len(), 1, "the checks run");
        // Though a socket still holds its watch.
        crate::test_support::shut_down(&stop, &tasks, "the checks").await;
        drop(open);
    }
}
