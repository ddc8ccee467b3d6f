//! `cancelNotification`: a compare-and-set from SCHEDULED, or unclaimed
//! PENDING, to CANCELED; anything later is CONFLICT and nothing changes.

use async_graphql::{Context, ID, Object};

use crate::{
    error::{ApiResult, AppError},
    graphql::{context::ContextExt as _, sender, types::Notification},
    storage::notifications::Canceled,
};

#[derive(Default)]
pub struct CancelMutation;

#[Object]
impl CancelMutation {
    /// Cancels a notification that no worker has taken yet (SCHEDULED or
    /// PENDING): it is never sent. Its sender only (the application whose
    /// key sent it, or the user who sent it to themselves).
    async fn cancel_notification(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Notification> {
        let row = sender::cancelable(ctx, &id).await?;
        match ctx.state().notifications.cancel(row).await? {
            Canceled::Now(moved) => Ok(moved.row.into()),
            Canceled::TooLate => Err(AppError::Conflict(
                "the notification is already being delivered or done",
            )),
        }
    }
}
