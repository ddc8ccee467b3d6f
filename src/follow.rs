//! Following one user's inbox live (the `inboxEvents` subscription):
//! replay from the log, then live hints from the EventBus, with no gap and
//! no repeat (DESIGN.md, invariant 4).
//!
//! The log is the truth; hints only say "something was committed". The
//! follower subscribes to its user's hints (the instance's router brings it
//! that user's only, see `pubsub.rs`) before it reads the log, delivers
//! events in seq order, drops what it already delivered, and reads the log
//! whenever it may have missed something: a hint past the next expected seq
//! (a lost publish), a hint without its event (published by an older
//! release), a lagged receiver (its user's burst overflowed the buffer), a
//! reconnected Redis subscription, or a cached last seq past its own after
//! a few seconds of silence (a hint lost with a crashed publisher). Hints
//! carry their event and the silence check reads the cache, so a follower
//! that keeps up, or has nothing to follow, runs no SQL.

use std::{collections::VecDeque, time::Duration};

use sea_orm::DatabaseConnection;
use tokio::{sync::broadcast::error::RecvError, time::Instant};

use crate::{
    inbox::Inbox,
    pubsub::{InboxFeed, UserFeed},
    storage::{
        StorageError,
        inbox::{self, Changes, Snapshot},
    },
    wire::InboxEventV1,
};

/// Events read from the log at once.
const LOG_PAGE: u64 = 500;
/// Silence after which a follower compares its position with the user's
/// cached last seq (and reads the log if that is ahead), in case a hint was
/// lost and no later one came.
pub const RECHECK: Duration = Duration::from_secs(5);

/// What a follower delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The next event: its seq is the previous one's + 1.
    Event(Box<InboxEventV1>),
    /// The log cannot continue from where the follower is (`after` past the
    /// last seq, or older than the retained log): the client refetches and
    /// the follower continues after `snapshot.last_seq`.
    Resync(Snapshot),
}

pub struct Follower {
    db: DatabaseConnection,
    inbox: Inbox,
    user_id: i64,
    feed: UserFeed,
    /// The seq the next delivered event must have.
    next: i64,
    /// The log may hold events from `next` on that the feed did not bring.
    behind: bool,
    /// Events from `next` on, consecutive, ready to deliver.
    ready: VecDeque<InboxEventV1>,
    /// When to re-read the log if nothing of this user's arrives.
    recheck_at: Instant,
}

impl Follower {
    /// Starts following `user_id`'s inbox after seq `after` (`None`: from
    /// now on). Subscribes to the hints first, so nothing committed after
    /// the log read can be missed.
    pub async fn start(
        db: DatabaseConnection,
        inbox: &Inbox,
        user_id: i64,
        after: Option<i64>,
    ) -> Result<Self, StorageError> {
        let feed = inbox.events.subscribe_inbox(user_id);
        let (next, behind) = match after {
            Some(after) => (after.saturating_add(1), true),
            None => (inbox::snapshot(&db, user_id).await?.last_seq + 1, false),
        };
        Ok(Self {
            db,
            inbox: inbox.clone(),
            user_id,
            feed,
            next,
            behind,
            ready: VecDeque::new(),
            recheck_at: Instant::now() + RECHECK,
        })
    }

    /// The seq of the last event delivered (or skipped by a resync).
    pub fn last_seq(&self) -> i64 {
        self.next - 1
    }

    /// The next thing to deliver; `None` once the feed is closed (shutdown).
    /// An error (the database failed) ends the follow: the client resumes
    /// with the last seq it saw.
    pub async fn next(&mut self) -> Option<Result<Followed, StorageError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.next = event.seq + 1;
                // Commit to hand-over; a clock step back counts as none.
                let lag = (chrono::Utc::now() - event.at).to_std().unwrap_or_default();
                self.inbox.metrics.event_delivered(lag);
                return Some(Ok(Followed::Event(Box::new(event))));
            }
            if self.behind {
                match self.read_log().await {
                    Err(e) => return Some(Err(e)),
                    Ok(Some(resync)) => return Some(Ok(resync)),
                    Ok(None) => continue,
                }
            }
            match tokio::time::timeout_at(self.recheck_at, self.feed.recv()).await {
                Err(_silence) => match self.inbox.last_snapshot(&self.db, self.user_id).await {
                    Err(e) => return Some(Err(e)),
                    Ok(snapshot) if snapshot.last_seq >= self.next => self.behind = true,
                    Ok(_) => self.recheck_at = Instant::now() + RECHECK,
                },
                Ok(Ok(InboxFeed::Hint(hint))) => {
                    self.recheck_at = Instant::now() + RECHECK;
                    match &hint.event {
                        Some(event) if event.seq < self.next => {}
                        Some(event) if event.seq == self.next => {
                            self.ready.push_back(event.clone());
                        }
                        // Past the next expected seq (a hint was lost), or
                        // no event at hand: the log has it.
                        _ => self.behind = true,
                    }
                }
                // Hints may have been lost: never skip, read the log.
                Ok(Ok(InboxFeed::Resume) | Err(RecvError::Lagged(_))) => self.behind = true,
                Ok(Err(RecvError::Closed)) => return None,
            }
        }
    }

    /// Reads the log after the last delivered seq (one page) into `ready`,
    /// or answers the resync when the log cannot continue from there.
    async fn read_log(&mut self) -> Result<Option<Followed>, StorageError> {
        self.recheck_at = Instant::now() + RECHECK;
        match inbox::changes_after(&self.db, self.user_id, self.next - 1, LOG_PAGE).await? {
            Changes::Resync(snapshot) => {
                self.inbox.metrics.resync();
                self.next = snapshot.last_seq + 1;
                self.behind = false;
                Ok(Some(Followed::Resync(snapshot)))
            }
            Changes::Events { events, snapshot } => {
                self.behind = events.last().is_some_and(|e| e.seq < snapshot.last_seq);
                self.ready.extend(events);
                Ok(None)
            }
        }
    }
}
