//! Inbox hints: every committed change, to every instance, and there to
//! the followers of that change's user only (DESIGN.md, invariant 9).
//!
//! Each instance holds one subscription (one Redis Pub/Sub channel, or
//! nothing in embedded mode) and hands what it brings to its [`Router`]:
//! one tokio broadcast per user that has followers on this instance, created
//! by the first `subscribe_inbox` of that user and removed when the last of
//! its receivers is dropped. A hint reaches only its user's receivers, its
//! payload shared (`Arc`) by all of them; a reconnect of the Redis
//! subscription reaches every receiver. One user's burst fills only that
//! user's buffer: a follower that falls behind reads the log instead
//! (`follow.rs`), and nobody else's receiver notices.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use redis::{Client, aio::ConnectionManager};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::wire::{self, InboxHintV1};

/// Hints buffered per user before that user's slowest follower lags (and
/// reads the log instead). Small: a buffer exists per user with followers
/// on this instance, and a lagging follower loses nothing.
pub const USER_CAPACITY: usize = 128;

/// What an instance's inbox feed brings.
#[derive(Debug, Clone)]
pub enum InboxFeed {
    /// A hint published after a commit (shared, not copied per receiver).
    Hint(Arc<InboxHintV1>),
    /// The feed was interrupted (the Redis subscription reconnected): hints
    /// may have been lost, so every follower re-reads the log.
    Resume,
}

#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes an inbox hint; call only after the commit that wrote it.
    async fn publish_inbox(&self, hint: &InboxHintV1) -> anyhow::Result<()>;
    /// This instance's fan-out, fed by whatever the bus receives.
    fn router(&self) -> &Router;
    /// Every hint of `user_id`'s published from now on, by any instance,
    /// and every `Resume`.
    fn subscribe_inbox(&self, user_id: i64) -> UserFeed {
        self.router().subscribe(user_id)
    }
}

/// Routes an instance's feed by user: user id → that user's broadcast.
#[derive(Clone, Default)]
pub struct Router {
    users: Arc<Mutex<HashMap<i64, broadcast::Sender<InboxFeed>>>>,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, broadcast::Sender<InboxFeed>>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver of `user_id`'s hints (and of every `Resume`), from now on.
    pub fn subscribe(&self, user_id: i64) -> UserFeed {
        // Receivers are only created under the lock, so an entry seen with
        // no receiver under it (see `Entry::drop`) can go: nobody can attach
        // to it any more.
        let receiver = self
            .lock()
            .entry(user_id)
            .or_insert_with(|| broadcast::channel(USER_CAPACITY).0)
            .subscribe();
        UserFeed {
            receiver,
            _entry: Entry {
                router: self.clone(),
                user_id,
            },
        }
    }

    /// Hands `feed` to the receivers it concerns: a hint to its user's, a
    /// resume to all. Never blocks; a full buffer lags its slowest receiver.
    pub fn route(&self, feed: InboxFeed) {
        let users = self.lock();
        match &feed {
            InboxFeed::Hint(hint) => {
                if let Some(sender) = users.get(&hint.user_id) {
                    // No receiver left is not an error: it is being removed.
                    let _ = sender.send(feed);
                }
            }
            InboxFeed::Resume => {
                for sender in users.values() {
                    let _ = sender.send(InboxFeed::Resume);
                }
            }
        }
    }

    /// How many users have receivers on this instance.
    pub fn users(&self) -> usize {
        self.lock().len()
    }
}

/// One follower's receiver of its user's hints. Dropping the last one of a
/// user removes that user's broadcast from the router.
pub struct UserFeed {
    // Dropped before `_entry` (fields drop in order): the entry then sees
    // this receiver gone.
    receiver: broadcast::Receiver<InboxFeed>,
    _entry: Entry,
}

impl UserFeed {
    /// The next hint or resume; `Lagged` when this receiver fell more than
    /// [`USER_CAPACITY`] behind (the follower reads the log).
    pub async fn recv(&mut self) -> Result<InboxFeed, RecvError> {
        self.receiver.recv().await
    }
}

/// Removes its user's broadcast once no receiver is left under it.
struct Entry {
    router: Router,
    user_id: i64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Every receiver's drop is followed by its entry's: the last one
        // finds the count at zero (a new subscriber meanwhile has an entry
        // of its own that will look again).
        let mut users = self.router.lock();
        if users
            .get(&self.user_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            users.remove(&self.user_id);
        }
    }
}

/// Embedded mode: this process is the only publisher.
#[derive(Default)]
pub struct InProcessEventBus {
    router: Router,
}

#[async_trait::async_trait]
impl EventBus for InProcessEventBus {
    async fn publish_inbox(&self, hint: &InboxHintV1) -> anyhow::Result<()> {
        self.router.route(InboxFeed::Hint(Arc::new(hint.clone())));
        Ok(())
    }

    fn router(&self) -> &Router {
        &self.router
    }
}

/// Services mode: `PUBLISH` to one channel; one background subscriber per
/// instance feeds the instance's router, reconnecting when Redis goes away.
pub struct RedisEventBus {
    manager: ConnectionManager,
    channel: String,
    router: Router,
}

impl RedisEventBus {
    /// `channel`: the Pub/Sub channel name (from the key builder).
    pub fn new(
        client: Client,
        manager: ConnectionManager,
        channel: String,
        shutdown: CancellationToken,
    ) -> Self {
        let router = Router::default();
        tokio::spawn(subscriber(
            client,
            channel.clone(),
            router.clone(),
            shutdown,
        ));
        Self {
            manager,
            channel,
            router,
        }
    }
}

#[async_trait::async_trait]
impl EventBus for RedisEventBus {
    async fn publish_inbox(&self, hint: &InboxHintV1) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(wire::encode(hint)?)
            .query_async(&mut conn)
            .await
            .context("PUBLISH")?;
        Ok(())
    }

    fn router(&self) -> &Router {
        &self.router
    }
}

/// Hands one received payload to the router.
fn dispatch(router: &Router, payload: &str) {
    match wire::decode::<InboxHintV1>(payload) {
        Ok(Some(hint)) => router.route(InboxFeed::Hint(Arc::new(hint))),
        // Of another format version: published by another release during a
        // rolling deploy, not ours to read (a follower repairs the gap).
        Ok(None) => tracing::debug!("inbox hint of another format version skipped"),
        Err(e) => tracing::warn!(error = %e, "malformed inbox hint"),
    }
}

/// How long connecting and subscribing may take, and how often a quiet
/// subscription is PINGed: a connection that went silent without closing
/// (a dropped NAT entry, a frozen peer) is noticed and replaced within
/// about twice this, instead of only by the followers' own checks.
const LIVENESS: Duration = Duration::from_secs(5);

async fn subscriber(client: Client, channel: String, router: Router, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let mut subscribed = false;
        let run = async {
            let (mut sink, mut messages) = tokio::time::timeout(LIVENESS, async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel.as_str()).await?;
                anyhow::Ok(pubsub.split())
            })
            .await
            .context("subscribing timed out")??;
            subscribed = true;
            tracing::debug!(channel, "subscribed to inbox hints");
            // Hints published while the subscription was down are lost:
            // every inbox follower re-reads its log now.
            router.route(InboxFeed::Resume);
            let mut ping =
                tokio::time::interval_at(tokio::time::Instant::now() + LIVENESS, LIVENESS);
            loop {
                tokio::select! {
                    msg = messages.next() => {
                        let Some(msg) = msg else { return anyhow::Ok(()) };
                        match msg.get_payload::<String>() {
                            Ok(payload) => dispatch(&router, &payload),
                            Err(e) => tracing::warn!(error = %e, "unreadable inbox hint"),
                        }
                        ping.reset();
                    }
                    _ = ping.tick() => {
                        tokio::time::timeout(LIVENESS, sink.ping::<redis::Value>())
                            .await
                            .context("PING timed out")?
                            .context("PING")?;
                    }
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = run => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "inbox hint subscription lost; reconnecting");
                }
            }
        }
        if subscribed {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::inbox::{Counts, InboxAction},
        wire::{InboxChangeV1, InboxEventV1},
    };
    use tokio::sync::broadcast::error::TryRecvError;

    fn hint(user_id: i64, seq: i64) -> InboxFeed {
        InboxFeed::Hint(Arc::new(InboxHintV1 {
            user_id,
            event: Some(InboxEventV1 {
                user_id,
                seq,
                at: chrono::Utc::now(),
                counts: Counts::default(),
                change: InboxChangeV1::NotificationsMarked {
                    action: InboxAction::Read,
                    ids: vec![seq],
                    up_to: None,
                },
            }),
        }))
    }

    fn try_recv(feed: &mut UserFeed) -> Result<InboxFeed, TryRecvError> {
        feed.receiver.try_recv()
    }

    fn seq_of(feed: Result<InboxFeed, TryRecvError>) -> Option<i64> {
        match feed {
            Ok(InboxFeed::Hint(hint)) => hint.event.as_ref().map(|e| e.seq),
            _ => None,
        }
    }

    #[test]
    fn a_users_hints_reach_only_that_users_receivers_and_shared() {
        let router = Router::default();
        let mut a1 = router.subscribe(1);
        let mut a2 = router.subscribe(1);
        let mut b = router.subscribe(2);
        // A burst of A's, far past a buffer's capacity.
        for seq in 1..=(USER_CAPACITY as i64 * 4) {
            router.route(hint(1, seq));
        }
        assert!(
            matches!(try_recv(&mut b), Err(TryRecvError::Empty)),
            "B got nothing of A's, and did not lag"
        );
        router.route(hint(2, 1));
        assert_eq!(seq_of(try_recv(&mut b)), Some(1), "B's own hint, at once");
        // A's receivers lagged (they read the log), never skipped silently.
        assert!(matches!(try_recv(&mut a1), Err(TryRecvError::Lagged(_))));
        assert!(matches!(try_recv(&mut a2), Err(TryRecvError::Lagged(_))));
        // One payload, shared by A's receivers.
        let (Ok(InboxFeed::Hint(x)), Ok(InboxFeed::Hint(y))) =
            (try_recv(&mut a1), try_recv(&mut a2))
        else {
            panic!("A's receivers hold hints");
        };
        assert!(Arc::ptr_eq(&x, &y), "the payload is shared, not cloned");
    }

    #[test]
    fn a_users_entry_goes_with_its_last_receiver() {
        let router = Router::default();
        let a1 = router.subscribe(1);
        let a2 = router.subscribe(1);
        let b = router.subscribe(2);
        assert_eq!(router.users(), 2);
        drop(a1);
        assert_eq!(router.users(), 2, "A still has a receiver");
        drop(a2);
        assert_eq!(router.users(), 1, "A's entry is gone");
        // Hints for a user without receivers go nowhere, and create nothing.
        router.route(hint(1, 1));
        assert_eq!(router.users(), 1);
        drop(b);
        assert_eq!(router.users(), 0);
        // A user who comes back gets a fresh entry that works.
        let mut again = router.subscribe(1);
        router.route(hint(1, 2));
        assert_eq!(seq_of(try_recv(&mut again)), Some(2));
    }

    #[test]
    fn a_resume_reaches_every_users_receivers() {
        let router = Router::default();
        let mut feeds: Vec<UserFeed> = (1..=3)
            .flat_map(|user| [router.subscribe(user), router.subscribe(user)])
            .collect();
        router.route(InboxFeed::Resume);
        for feed in &mut feeds {
            assert!(matches!(try_recv(feed), Ok(InboxFeed::Resume)));
        }
    }

    /// Subscribes and drops from many threads at once: no entry outlives
    /// its receivers, and every live receiver's entry is there.
    #[test]
    fn concurrent_subscribes_and_drops_leave_no_entry_behind() {
        let router = Router::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let router = &router;
                scope.spawn(move || {
                    for i in 0..2_000 {
                        let mut feed = router.subscribe(i % 3);
                        router.route(hint(i % 3, i));
                        assert!(
                            !matches!(try_recv(&mut feed), Err(TryRecvError::Empty)),
                            "a live receiver is routed to"
                        );
                    }
                });
            }
        });
        assert_eq!(router.users(), 0);
    }
}
