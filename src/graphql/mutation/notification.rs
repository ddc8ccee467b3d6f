use async_graphql::{Context, Object};

use crate::{
    domain::{
        Content, Title,
        idempotency::{Idempotency, SendInput, Sender},
        recipient,
        send::{Category, Data, IdempotencyKey, SendOptions, Timing},
    },
    error::{ApiResult, AppError},
    graphql::{
        context::ContextExt as _,
        recipient::{find_or_create, require_self},
        types::{Notification, SendNotificationInput},
    },
    metrics::Limit,
    storage,
};

#[derive(Default)]
pub struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Stores a notification (PENDING) and queues its delivery: to the
    /// caller, or to the user `to` names (an application must name one; a
    /// user token may name only its own user). With an `idempotencyKey`
    /// used before by the same sender: that send's notification, or
    /// CONFLICT if the input differs.
    async fn send_notification(
        &self,
        ctx: &Context<'_>,
        input: SendNotificationInput,
    ) -> ApiResult<Notification> {
        let state = ctx.state();
        // `None` for an application, which has a bucket per key instead of
        // the per-user one.
        let (caller, bucket_key, bucket, limit) = match ctx.app() {
            Some(app) => (
                None,
                state.inbox.keys.sends_app(app.key_id),
                state.rate_limits.sends_per_app,
                Limit::SendsPerApp,
            ),
            None => {
                let caller = ctx.require_user()?;
                (
                    Some(caller.user_id),
                    state.inbox.keys.sends_user(caller.user_id),
                    state.rate_limits.sends_per_user,
                    Limit::SendsPerUser,
                )
            }
        };
        match state.limiter.take(&bucket_key, bucket).await {
            Ok(None) => {}
            Ok(Some(retry_after)) => {
                state.metrics.rate_limited(limit);
                return Err(AppError::RateLimited { retry_after });
            }
            Err(e) => tracing::warn!(error = ?e, "rate limiter unavailable; not limiting"),
        }
        let to = input
            .to
            .as_ref()
            .map(|to| to.parse(&recipient::TO))
            .transpose()?;
        // Checked before a first send creates its recipient.
        let title = Title::parse(&input.title)?;
        let content = Content::parse(input.content)?;
        let category = input.category.as_deref().map(Category::parse).transpose()?;
        let data = input.data.map(|d| Data::parse(d.0)).transpose()?;
        let idempotency = match input.idempotency_key.as_deref() {
            None => None,
            Some(key) => {
                let sender = match caller {
                    Some(user_id) => Sender::User(user_id),
                    None => Sender::App(ctx.require_app()?.key_id),
                };
                let given = SendInput {
                    to: to.as_ref(),
                    title: &title,
                    content: &content,
                    send_at: input.send_at,
                    expires_at: input.expires_at,
                    category: category.as_ref(),
                    data: data.as_ref(),
                };
                Some(Idempotency::new(
                    sender,
                    IdempotencyKey::parse(key)?,
                    &given,
                ))
            }
        };
        // A repeat: before the clock checks (a retried `sendAt` may have
        // passed since) and before anything is created.
        if let Some(key) = &idempotency
            && let Some(row) = state.notifications.replay(key).await?
        {
            return Ok(row.into());
        }
        let options = SendOptions {
            timing: Timing::parse(input.send_at, input.expires_at, storage::now())?,
            category,
            data,
            sender_app_id: ctx.app().map(|app| app.key_id),
            idempotency,
        };
        let user_id = match (caller, to) {
            (None, None) => {
                return Err(AppError::BadUserInput(
                    "an application must name the recipient (to)".to_owned(),
                ));
            }
            (None, Some(to)) => find_or_create(state, &to, &recipient::TO).await?.id,
            (Some(caller), None) => caller,
            (Some(caller), Some(to)) => {
                require_self(state, caller, &to).await?;
                caller
            }
        };
        let row = state
            .notifications
            .send(user_id, title, content, options)
            .await?;
        Ok(row.into())
    }
}
