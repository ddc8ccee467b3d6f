//! Subscription root: live changes of the caller's notifications.

use async_graphql::{Context, Subscription};
use futures_util::{Stream, StreamExt as _, stream};

use super::{
    context::ContextExt as _,
    inbox::{InboxEvent, InboxResync},
    types::NotificationStatusEvent,
};
use crate::{
    auth::AuthUser,
    error::{ApiResult, AppError},
    follow::{Followed, Follower},
    storage,
};

#[derive(Default)]
pub struct SubscriptionRoot;

/// Completes when `caller`'s token expires.
fn expiry(caller: &AuthUser) -> tokio::time::Sleep {
    let expires_in = u64::try_from(caller.claims.exp - chrono::Utc::now().timestamp()).unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_secs(expires_in))
}

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every status change of the caller's own notifications, from any
    /// server instance. Completes when the caller's token expires.
    //
    // Read from the caller's inbox log, like `inboxEvents` from now on (its
    // creations and delivery status changes; marks are not status changes).
    // A subscriber that falls behind catches up from the log; only if the
    // log can no longer continue (it was pruned past the subscriber) does it
    // get one final LAGGED error, so the client refetches and subscribes
    // again rather than miss changes.
    async fn notification_status_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = ApiResult<NotificationStatusEvent>> + use<>> {
        let caller = ctx.require_user()?;
        let state = ctx.state();
        let follower = Follower::start(state.db.clone(), &state.inbox, caller.user_id, None)
            .await
            .map_err(AppError::from)?;
        let statuses = stream::unfold(Some(follower), |follower| async move {
            let mut follower = follower?;
            loop {
                let before = follower.last_seq();
                match follower.next().await? {
                    Ok(Followed::Event(event)) => {
                        if let Some(status) = NotificationStatusEvent::of(*event) {
                            return Some((Ok(status), Some(follower)));
                        }
                    }
                    Ok(Followed::Resync(snapshot)) => {
                        let missed = u64::try_from(snapshot.last_seq - before).unwrap_or(0);
                        return Some((Err(AppError::Lagged { missed }), None));
                    }
                    Err(e) => return Some((Err(AppError::from(e)), None)),
                }
            }
        });
        Ok(statuses.take_until(expiry(caller)))
    }

    /// The caller's inbox events, from any server instance, in seq order:
    /// each one's seq is the previous one's + 1, except right after an
    /// InboxResync. `after`: null = from now on; N = the events with
    /// seq > N from the log first, then live, with no gap and no repeat.
    /// An `after` older than the retained log, or greater than the last
    /// seq, gets one InboxResync first. Completes when the caller's token
    /// expires.
    async fn inbox_events(
        &self,
        ctx: &Context<'_>,
        after: Option<i32>,
    ) -> async_graphql::Result<impl Stream<Item = ApiResult<InboxEvent>> + use<>> {
        let caller = ctx.require_user()?;
        if let Some(after) = after
            && after < 0
        {
            return Err(AppError::BadUserInput(format!(
                "after must not be negative (got {after})"
            ))
            .into());
        }
        let state = ctx.state();
        let follower = Follower::start(
            state.db.clone(),
            &state.inbox,
            caller.user_id,
            after.map(i64::from),
        )
        .await
        .map_err(AppError::from)?;
        let events = stream::unfold(Some(follower), |follower| async move {
            let mut follower = follower?;
            let item = match follower.next().await? {
                Ok(Followed::Event(event)) => Ok(InboxEvent::from(*event)),
                Ok(Followed::Resync(snapshot)) => Ok(InboxEvent::InboxResync(InboxResync::now(
                    snapshot,
                    storage::now(),
                ))),
                // The client resumes with the last seq it saw.
                Err(e) => return Some((Err(AppError::from(e)), None)),
            };
            Some((item, Some(follower)))
        });
        Ok(events.take_until(expiry(caller)))
    }
}
