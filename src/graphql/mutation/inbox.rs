//! Marks on the caller's notifications: SEEN, READ, UNREAD, ARCHIVE,
//! UNARCHIVE, each with its NotificationsMarked event in the same
//! transaction (nothing changed, no event).

use async_graphql::{Context, ID, Object};

use crate::{
    error::{ApiResult, AppError},
    graphql::{
        context::ContextExt as _,
        inbox::{InboxAction, InboxUpdate, int},
    },
    storage::inbox::{Marked, Target},
};

/// At most this many ids per `markNotifications`.
pub const MAX_MARK_IDS: usize = 100;

#[derive(Default)]
pub struct InboxMutation;

#[Object]
impl InboxMutation {
    /// Applies `action` to 1..=100 of the caller's notifications (duplicates
    /// count once). Another user's id is FORBIDDEN and nothing changes.
    async fn mark_notifications(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
        action: InboxAction,
    ) -> ApiResult<InboxUpdate> {
        let caller = ctx.require_user()?;
        if ids.is_empty() || ids.len() > MAX_MARK_IDS {
            return Err(AppError::BadUserInput(format!(
                "ids must hold 1 to {MAX_MARK_IDS} notification ids (got {})",
                ids.len()
            )));
        }
        let mut numeric = Vec::with_capacity(ids.len());
        for id in &ids {
            // A client's arbitrary text never comes back in an error.
            let n = id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                AppError::BadUserInput("notification ids are positive integers".to_owned())
            })?;
            numeric.push(n);
        }
        numeric.sort_unstable();
        numeric.dedup();
        mark(ctx, caller.user_id, action, Target::Ids(numeric)).await
    }

    /// Applies `action` to every notification of the caller's with
    /// seq <= `upTo` (clamped to the last seq), as one change: a
    /// notification that arrives later is never touched.
    async fn mark_all_notifications(
        &self,
        ctx: &Context<'_>,
        action: InboxAction,
        up_to: i32,
    ) -> ApiResult<InboxUpdate> {
        let caller = ctx.require_user()?;
        if up_to < 0 {
            return Err(AppError::BadUserInput(format!(
                "upTo must not be negative (got {up_to})"
            )));
        }
        mark(ctx, caller.user_id, action, Target::UpTo(up_to.into())).await
    }
}

async fn mark(
    ctx: &Context<'_>,
    user_id: i64,
    action: InboxAction,
    target: Target,
) -> ApiResult<InboxUpdate> {
    let Marked {
        updated,
        snapshot,
        event,
    } = ctx
        .state()
        .notifications
        .mark(user_id, action.into(), target)
        .await?;
    Ok(InboxUpdate {
        updated: i32::try_from(updated).unwrap_or(i32::MAX),
        counts: snapshot.counts.into(),
        seq: event.map(|e| int(e.seq)),
    })
}
