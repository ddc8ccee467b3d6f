//! The notification service: what storing a notification means, from the
//! INSERT to the hints that follow its commit (announce, enqueue, and the
//! sweeper flag when the enqueue fails). Resolvers validate and authorize,
//! then call it; it knows nothing of GraphQL.
//!
//! A send runs in a task of its own, tracked by the application's shutdown
//! `TaskTracker`: a client that hangs up drops its request, never the work
//! after a commit (before, a row stored just before the hang-up waited for
//! the sweeper's visibility timeout, with no event and no cache update).
//!
//! Group commit: sends without an idempotency key go through
//! [`InboxWrites`], whose lanes store whatever changes of their users are
//! waiting (sends, and the worker's status moves; up to `HERALD_SEND_BATCH`
//! or `HERALD_WORKER_BATCH`, the larger) in one transaction
//! (`storage::notifications::write_batch`): one commit, one counter
//! statement, one multi-row INSERT and one events INSERT for many sends.
//! Nothing waits for company: a lane takes what is there when it is free,
//! so a lone send is stored at once and a busy server makes bigger
//! batches. Sends are validated before they reach it; a batch that fails
//! anyway is stored change by change, so one bad row fails only itself.

use std::sync::Arc;

use entity::notification;
use sea_orm::DatabaseConnection;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::{
    domain::{Content, Title, idempotency::Idempotency, inbox::InboxAction, send::SendOptions},
    group_commit::InboxWrites,
    inbox::Inbox,
    queue::Queue,
    storage::{
        self, StorageError,
        inbox::{Marked, Target},
        notifications::NewNotification,
    },
    wire::InboxEventV1,
};

#[derive(Clone)]
pub struct Notifications {
    db: DatabaseConnection,
    inbox: Inbox,
    queue: Arc<dyn Queue>,
    /// Sends in progress; the application waits for them at shutdown.
    tasks: TaskTracker,
    /// Group commit; `None` (a batch of 1): each send alone.
    writes: Option<InboxWrites>,
}

impl Notifications {
    /// `writes`: the group commit sends go through (`None`: each alone).
    pub fn new(
        db: DatabaseConnection,
        inbox: Inbox,
        queue: Arc<dyn Queue>,
        tasks: TaskTracker,
        writes: Option<InboxWrites>,
    ) -> Self {
        Self {
            writes,
            db,
            inbox,
            queue,
            tasks,
        }
    }

    /// Stores a notification to `user_id` (PENDING, or SCHEDULED for a
    /// later `sendAt`), announces it and queues its delivery when it is due
    /// now. Answers once all of that is done (so a page read after it shows
    /// the notification), but the work completes even if the caller stops
    /// waiting.
    ///
    /// With an idempotency key that a concurrent send stored first: that
    /// send's notification, and nothing stored, announced or queued here
    /// (`IdempotencyConflict` if its input differs).
    pub async fn send(
        &self,
        user_id: i64,
        title: Title,
        content: Content,
        options: SendOptions,
    ) -> Result<notification::Model, StorageError> {
        let this = self.clone();
        self.tasks
            .spawn(
                async move {
                    if let (None, Some(writes)) = (&options.idempotency, &this.writes) {
                        let (row, event) = writes
                            .send(NewNotification {
                                user_id,
                                title,
                                content,
                                options,
                            })
                            .await?;
                        // The writer moved the cached snapshot.
                        this.inbox.announce(row.user_id, Some(event)).await;
                        this.queue_if_due(&row).await;
                        return Ok(row);
                    }
                    // A winner whose notification vanished before we read it
                    // frees the key: try again, a bounded number of times.
                    for _ in 0..3 {
                        let inserted = storage::notifications::insert(
                            &this.db,
                            user_id,
                            &title,
                            &content,
                            &options,
                            storage::now(),
                        )
                        .await;
                        let (row, event) = match (inserted, &options.idempotency) {
                            (Ok(created), _) => created,
                            (Err(StorageError::IdempotencyKeyTaken), Some(key)) => {
                                match storage::idempotency::replay(&this.db, key).await? {
                                    Some(row) => return Ok(row),
                                    None => continue,
                                }
                            }
                            (Err(e), _) => return Err(e),
                        };
                        this.created(&row, event).await;
                        return Ok(row);
                    }
                    Err(StorageError::IdempotencyKeyTaken)
                }
                .in_current_span(),
            )
            .await
            .map_err(|e| task_failed("send", &e))?
    }

    /// What an earlier send with this idempotency key stored, as it is now
    /// (`None`: the key is free); `IdempotencyConflict` if its input
    /// differs. Read before any work, so a repeat costs one or two reads.
    pub async fn replay(
        &self,
        idempotency: &Idempotency,
    ) -> Result<Option<notification::Model>, StorageError> {
        storage::idempotency::replay(&self.db, idempotency).await
    }

    /// Applies a mark to `user_id`'s notifications and, once it committed
    /// a change, moves their cached snapshot to it (pages cached before it
    /// stop counting). Like a send, it runs in
    /// a task of its own: a caller that hangs up never leaves the cache
    /// behind a committed mark.
    pub async fn mark(
        &self,
        user_id: i64,
        action: InboxAction,
        target: Target,
    ) -> Result<Marked, StorageError> {
        let this = self.clone();
        let wake = self.inbox.webhooks.clone();
        self.tasks
            .spawn(wake.scope(async move {
                let marked =
                    storage::inbox::mark(&this.db, user_id, action, target, storage::now()).await?;
                if let Some(event) = &marked.event {
                    this.inbox.touched(user_id, marked.snapshot).await;
                    this.inbox.announce(user_id, Some(event.clone())).await;
                }
                Ok(marked)
            }))
            .await
            .map_err(|e| task_failed("mark", &e))?
    }

    /// Cancels `row` (as its sender read it) unless a worker took it
    /// first, then announces the move. Like a send, in a task of its own.
    pub async fn cancel(
        &self,
        row: notification::Model,
    ) -> Result<storage::notifications::Canceled, StorageError> {
        let this = self.clone();
        let wake = self.inbox.webhooks.clone();
        self.tasks
            .spawn(wake.scope(async move {
                let canceled =
                    storage::notifications::cancel(&this.db, row, storage::now()).await?;
                if let storage::notifications::Canceled::Now(moved) = &canceled {
                    this.inbox.changed(&moved.row, moved.event.clone()).await;
                }
                Ok(canceled)
            }))
            .await
            .map_err(|e| task_failed("cancel", &e))?
    }

    /// After the INSERT's commit: nothing here may fail the send.
    async fn created(&self, row: &notification::Model, event: InboxEventV1) {
        self.inbox.changed(row, event).await;
        self.queue_if_due(row).await;
    }

    /// Queues a new notification's delivery (after its event is announced,
    /// so its PENDING event always comes before the worker's PROCESSING).
    async fn queue_if_due(&self, row: &notification::Model) {
        if row.status != notification::Status::Pending {
            // SCHEDULED: the scheduler queues it when due.
            return;
        }
        let traceparent = crate::telemetry::traceparent();
        if let Err(e) = self
            .queue
            .enqueue_traced(row.id, traceparent.as_deref())
            .await
        {
            tracing::warn!(error = ?e, notification_id = row.id, "enqueue failed; the sweeper will deliver it");
            if let Err(e) = storage::notifications::mark_unqueued(&self.db, row.id).await {
                tracing::warn!(error = ?e, notification_id = row.id, "could not flag for the sweeper");
            }
        }
    }
}

/// A send, mark or cancel task that panicked or was cancelled.
fn task_failed(what: &str, e: &tokio::task::JoinError) -> StorageError {
    StorageError::Db(sea_orm::DbErr::Custom(format!("the {what} task: {e}")))
}

#[cfg(test)]
mod tests {
    use entity::inbox_event;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};

    use super::*;
    use crate::{
        domain::{Email, inbox::Counts},
        group_commit::{Change, Stored, write},
    };

    async fn database() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
        let db = storage::connect(&url).await.expect("connect");
        storage::migrate(&db).await.expect("migrate");
        (dir, db)
    }

    async fn user(db: &DatabaseConnection, name: &str) -> i64 {
        let email = Email::parse(&format!("{name}@example.com")).expect("email");
        storage::users::insert(db, &email, "x".into(), storage::now())
            .await
            .expect("user")
            .id
    }

    /// `user_id`'s inbox log, oldest first.
    async fn log_of(db: &DatabaseConnection, user_id: i64) -> Vec<inbox_event::Model> {
        inbox_event::Entity::find()
            .filter(inbox_event::Column::UserId.eq(user_id))
            .order_by_asc(inbox_event::Column::Seq)
            .all(db)
            .await
            .expect("log")
    }

    fn send(user_id: i64, title: &str) -> NewNotification {
        NewNotification {
            user_id,
            title: Title::parse(title).expect("title"),
            content: Content::parse("body".into()).expect("content"),
            options: SendOptions::default(),
        }
    }

    /// Sends waiting together: one for a user who does not exist (the
    /// foreign key refuses it) among good ones. The good ones are stored,
    /// the bad one alone fails.
    #[tokio::test]
    async fn one_bad_send_never_fails_its_batch() {
        let (_dir, db) = database().await;
        let alice = user(&db, "alice").await;
        let batch = (0..5)
            .map(|i| {
                Change::Send(Box::new(send(
                    if i == 2 { alice + 1000 } else { alice },
                    &format!("n{i}"),
                )))
            })
            .collect();
        let mut stored = Vec::new();
        for (i, answer) in write(&db, batch).await.into_iter().enumerate() {
            if i == 2 {
                assert!(answer.is_err(), "the bad send was stored: {answer:?}");
            } else {
                match answer.expect("a good send failed with the bad one") {
                    Stored::Created(row, _) => stored.push(row),
                    other => panic!("a send answered {other:?}"),
                }
            }
        }
        let seqs: Vec<i64> = stored.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "alice's log stays gapless");
    }

    /// Sends and status moves of two users in one batch: each user's sends
    /// take their next seqs in the order given, then the moves that won; a
    /// move that lost hands its seq back; every event carries the counts
    /// at its seq, and the log and the counter row agree.
    #[tokio::test]
    async fn a_batch_of_sends_and_moves_keeps_each_log_gapless() {
        use crate::storage::notifications::claim_move;
        let (_dir, db) = database().await;
        let (a, b) = (user(&db, "a").await, user(&db, "b").await);
        let (first, _) =
            storage::notifications::insert_batch(&db, &[send(a, "a1")], storage::now())
                .await
                .expect("first")
                .remove(0);
        let now = storage::now();
        let changes = vec![
            Change::Move(Box::new(claim_move(first.id, a, true, now))),
            Change::Send(Box::new(send(a, "a2"))),
            Change::Send(Box::new(send(b, "b1"))),
            Change::Move(Box::new(claim_move(first.id + 1000, a, true, now))),
            Change::Send(Box::new(send(a, "a3"))),
        ];
        let answers: Vec<Stored> = write(&db, changes)
            .await
            .into_iter()
            .map(|a| a.expect("stored"))
            .collect();
        let seq_and_counts = |stored: &Stored| match stored {
            Stored::Created(row, event) => {
                assert_eq!(row.seq, event.seq);
                Some((event.user_id, event.seq, event.counts))
            }
            Stored::Moved(moved) => moved
                .as_ref()
                .map(|m| (m.event.user_id, m.event.seq, m.event.counts)),
        };
        let got: Vec<_> = answers.iter().map(seq_and_counts).collect();
        assert_eq!(
            got,
            [
                Some((a, 4, Counts::CREATED.times(3))),
                Some((a, 2, Counts::CREATED.times(2))),
                Some((b, 1, Counts::CREATED)),
                None,
                Some((a, 3, Counts::CREATED.times(3))),
            ]
        );
        match &answers[0] {
            Stored::Moved(Some(moved)) => {
                assert_eq!(moved.row.status, notification::Status::Processing);
            }
            other => panic!("the claim answered {other:?}"),
        }
        for (user_id, last) in [(a, 4), (b, 1)] {
            let log: Vec<i64> = log_of(&db, user_id).await.iter().map(|e| e.seq).collect();
            assert_eq!(log, (1..=last).collect::<Vec<_>>(), "user {user_id}'s log");
            let snapshot = storage::inbox::snapshot(&db, user_id)
                .await
                .expect("snapshot");
            assert_eq!(
                snapshot.last_seq, last,
                "the lost move's seq was handed back"
            );
        }
    }

    /// A batch of sends to three users, interleaved: each user's new
    /// notifications get the next seqs in the order sent, each event the
    /// counts after it, and the log holds exactly those events.
    #[tokio::test]
    async fn a_batch_keeps_each_users_seqs_and_counts() {
        let (_dir, db) = database().await;
        let users = [
            user(&db, "a").await,
            user(&db, "b").await,
            user(&db, "c").await,
        ];
        // One earlier send, alone: the batch continues after it.
        storage::notifications::insert_batch(&db, &[send(users[0], "first")], storage::now())
            .await
            .expect("first");
        let sends: Vec<_> = (0..12)
            .map(|i| send(users[i % 3], &format!("n{i}")))
            .collect();
        let stored = storage::notifications::insert_batch(&db, &sends, storage::now())
            .await
            .expect("batch");
        for (i, (row, event)) in stored.iter().enumerate() {
            let user_id = users[i % 3];
            let nth = i64::try_from(i / 3).expect("small") + 1 + i64::from(user_id == users[0]);
            assert_eq!(
                (row.user_id, row.title.as_str()),
                (user_id, sends[i].title.as_str())
            );
            assert_eq!((row.seq, event.seq), (nth, nth));
            assert_eq!(event.counts, Counts::CREATED.times(nth));
        }
        for (user_id, last) in [(users[0], 5), (users[1], 4), (users[2], 4)] {
            let log: Vec<(i64, i64)> = log_of(&db, user_id)
                .await
                .iter()
                .map(|e| (e.seq, e.unread))
                .collect();
            let expected: Vec<(i64, i64)> = (1..=last).map(|s| (s, s)).collect();
            assert_eq!(log, expected, "user {user_id}'s log");
            let snapshot = storage::inbox::snapshot(&db, user_id)
                .await
                .expect("snapshot");
            assert_eq!(snapshot.last_seq, last);
            assert_eq!(snapshot.counts, Counts::CREATED.times(last));
        }
    }
}
