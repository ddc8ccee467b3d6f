//! Subscription root: live status changes of the caller's notifications.

use async_graphql::{Context, Subscription};
use futures_util::{Stream, StreamExt as _, stream};
use tokio::sync::broadcast::error::RecvError;

use super::{context::ContextExt as _, types::NotificationStatusEvent};
use crate::error::{ApiResult, AppError};

#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every status change of the caller's own notifications, from any
    /// server instance. Completes when the caller's token expires.
    async fn notification_status_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = ApiResult<NotificationStatusEvent>> + use<>> {
        let caller = ctx.require_user()?;
        let user_id = caller.user_id;
        let expires_in =
            u64::try_from(caller.claims.exp - chrono::Utc::now().timestamp()).unwrap_or(0);
        let events = ctx.state().inbox.events.subscribe();
        let own = stream::unfold(Some(events), move |events| async move {
            let mut events = events?;
            loop {
                match events.recv().await {
                    Ok(event) if event.user_id() == user_id => {
                        return Some((Ok(NotificationStatusEvent::from(event)), Some(events)));
                    }
                    Ok(_) => {}
                    // Too slow to keep up: say so once, and end, so the client
                    // refetches and subscribes again rather than miss changes.
                    Err(RecvError::Lagged(missed)) => {
                        return Some((Err(AppError::Lagged { missed }), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        let expiry = tokio::time::sleep(std::time::Duration::from_secs(expires_in));
        Ok(own.take_until(expiry))
    }
}
