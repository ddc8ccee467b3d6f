use async_graphql::{Context, Object};

use crate::{
    domain::{Content, Title},
    error::{ApiResult, AppError},
    graphql::{
        context::ContextExt as _,
        types::{Notification, SendNotificationInput},
    },
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
        // An application has no inbox of its own to send to.
        if ctx.app().is_some() {
            return Err(AppError::BadUserInput(
                "an application must name the recipient (to)".to_owned(),
            ));
        }
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
        let row = state
            .notifications
            .send(caller.user_id, title, content)
            .await?;
        Ok(row.into())
    }
}
