use async_graphql::{Context, Object};

use crate::{
    domain::{Content, Title},
    error::{ApiResult, AppError},
    graphql::{
        context::ContextExt as _,
        types::{Notification, SendNotificationInput},
    },
    storage,
};

#[derive(Default)]
pub struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Stores a notification to the caller (PENDING) and queues its delivery.
    async fn send_notification(
        &self,
        ctx: &Context<'_>,
        input: SendNotificationInput,
    ) -> ApiResult<Notification> {
        let caller = ctx.require_user()?;
        let state = ctx.state();
        let key = state.inbox.keys.sends_user(caller.user_id);
        match state
            .limiter
            .take(&key, state.rate_limits.sends_per_user)
            .await
        {
            Ok(None) => {}
            Ok(Some(retry_after)) => return Err(AppError::RateLimited { retry_after }),
            Err(e) => tracing::warn!(error = ?e, "rate limiter unavailable; not limiting"),
        }
        let title = Title::parse(&input.title)?;
        let content = Content::parse(input.content)?;
        let row = storage::notifications::insert(
            &state.db,
            caller.user_id,
            &title,
            &content,
            storage::now(),
        )
        .await?;
        // The row is committed: from here on nothing may fail the request.
        // Announce it before it is queued, so its PENDING event always comes
        // before the worker's PROCESSING.
        state.inbox.changed(None, &row).await;
        if let Err(e) = state.queue.enqueue(row.id).await {
            tracing::warn!(error = ?e, notification_id = row.id, "enqueue failed; the sweeper will deliver it");
            if let Err(e) = storage::notifications::mark_unqueued(&state.db, row.id).await {
                tracing::warn!(error = ?e, notification_id = row.id, "could not flag for the sweeper");
            }
        }
        Ok(row.into())
    }
}
