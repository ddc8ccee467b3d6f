//! The notification service: what storing a notification means, from the
//! INSERT to the hints that follow its commit (announce, enqueue, and the
//! sweeper flag when the enqueue fails). Resolvers validate and authorize,
//! then call it; it knows nothing of GraphQL.
//!
//! A send runs in a task of its own, tracked by the application's shutdown
//! `TaskTracker`: a client that hangs up drops its request, never the work
//! after a commit (before, a row stored just before the hang-up waited for
//! the sweeper's visibility timeout, with no event and no cache update).

use std::sync::Arc;

use entity::notification;
use sea_orm::DatabaseConnection;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::{
    domain::{Content, Title, idempotency::Idempotency, inbox::InboxAction, send::SendOptions},
    inbox::Inbox,
    queue::Queue,
    storage::{
        self, StorageError,
        inbox::{Marked, Target},
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
}

impl Notifications {
    pub fn new(
        db: DatabaseConnection,
        inbox: Inbox,
        queue: Arc<dyn Queue>,
        tasks: TaskTracker,
    ) -> Self {
        Self {
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
        self.tasks
            .spawn(async move {
                let marked =
                    storage::inbox::mark(&this.db, user_id, action, target, storage::now()).await?;
                if let Some(event) = &marked.event {
                    this.inbox.touched(user_id, marked.snapshot).await;
                    this.inbox.announce(user_id, Some(event.clone())).await;
                }
                Ok(marked)
            })
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
        self.tasks
            .spawn(async move {
                let canceled =
                    storage::notifications::cancel(&this.db, row, storage::now()).await?;
                if let storage::notifications::Canceled::Now(moved) = &canceled {
                    this.inbox.changed(&moved.row, moved.event.clone()).await;
                }
                Ok(canceled)
            })
            .await
            .map_err(|e| task_failed("cancel", &e))?
    }

    /// After the INSERT's commit: nothing here may fail the send.
    async fn created(&self, row: &notification::Model, event: InboxEventV1) {
        // Announced before it is queued, so its PENDING event always comes
        // before the worker's PROCESSING.
        self.inbox.changed(row, event).await;
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
