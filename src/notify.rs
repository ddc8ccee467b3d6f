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
//! Group commit: sends without an idempotency key go through a [`Writer`],
//! whose tasks store whatever sends are waiting (up to `HERALD_SEND_BATCH`)
//! in one transaction (`storage::notifications::insert_batch`): one commit,
//! one counter statement, one multi-row INSERT and one events INSERT for
//! many sends. Nothing waits for company: a writer takes what is there when
//! it is free, so a lone send is stored at once and a busy server makes
//! bigger batches. Sends are validated before they reach it; a batch that
//! fails anyway is stored send by send, so one bad row fails only itself.

use std::sync::Arc;

use entity::notification;
use sea_orm::DatabaseConnection;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::{
    domain::{Content, Title, idempotency::Idempotency, inbox::InboxAction, send::SendOptions},
    group_commit::{GroupCommit, Writers},
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
    writer: Option<Writer>,
}

impl Notifications {
    /// `writers`: where group commits run (`send_batch` over 1).
    pub fn new(
        db: DatabaseConnection,
        inbox: Inbox,
        queue: Arc<dyn Queue>,
        tasks: TaskTracker,
        (writers, send_batch): (&Writers, usize),
    ) -> Self {
        Self {
            writer: (send_batch > 1).then(|| Writer::start(writers, send_batch, inbox.clone())),
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
                    if let (None, Some(writer)) = (&options.idempotency, &this.writer) {
                        let (row, event) = writer
                            .insert(NewNotification {
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

type Stored = Result<(notification::Model, crate::wire::InboxEventV1), StorageError>;

/// Group commit of sends (see the module doc), each user's in one lane;
/// a send is answered once its batch committed and its user's cached
/// snapshot moved past it.
#[derive(Clone)]
struct Writer(GroupCommit<NewNotification, Stored>);

impl Writer {
    fn start(writers: &Writers, batch: usize, inbox: Inbox) -> Self {
        Self(crate::group_commit::of_inbox_changes(
            "send",
            writers,
            batch,
            inbox,
            async |db, sends| write(&db, sends).await,
            |stored| stored.as_ref().ok().map(|(_, event)| event),
        ))
    }

    /// Stores `send` in the next batch; answers once it committed and its
    /// user's cached snapshot moved past it.
    async fn insert(&self, send: NewNotification) -> Stored {
        self.0
            .submit(send.user_id.cast_unsigned(), send, "send")
            .await
            .map_err(|e| StorageError::Db(sea_orm::DbErr::Custom(e.to_string())))?
    }
}

/// Stores `sends` in one transaction; if that fails, each alone, so only a
/// bad one fails.
async fn write(db: &DatabaseConnection, sends: Vec<NewNotification>) -> Vec<Stored> {
    crate::group_commit::or_each_alone(
        "send",
        sends,
        async |sends| storage::notifications::insert_batch(db, &sends, storage::now()).await,
        async move |send| {
            storage::notifications::insert(
                db,
                send.user_id,
                &send.title,
                &send.content,
                &send.options,
                storage::now(),
            )
            .await
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use entity::inbox_event;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};

    use super::*;
    use crate::domain::{Email, inbox::Counts};

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
            .map(|i| send(if i == 2 { alice + 1000 } else { alice }, &format!("n{i}")))
            .collect();
        let mut stored = Vec::new();
        for (i, answer) in write(&db, batch).await.into_iter().enumerate() {
            if i == 2 {
                assert!(answer.is_err(), "the bad send was stored: {answer:?}");
            } else {
                stored.push(answer.expect("a good send failed with the bad one").0);
            }
        }
        let seqs: Vec<i64> = stored.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "alice's log stays gapless");
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
            let log: Vec<(i64, i64)> = inbox_event::Entity::find()
                .filter(inbox_event::Column::UserId.eq(user_id))
                .order_by_asc(inbox_event::Column::Seq)
                .all(&db)
                .await
                .expect("log")
                .into_iter()
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
