use async_graphql::{Context, ID, Object, dataloader::Loader as _};

use crate::{
    error::{ApiResult, AppError},
    graphql::{
        context::ContextExt as _,
        sender,
        types::{Notification, NotificationPage},
    },
};

pub const MAX_PAGE_SIZE: i32 = 100;
/// Pages past this are refused: an offset that deep is a scan, not a read.
pub const MAX_PAGE: i32 = 1_000_000;

#[derive(Default)]
pub struct NotificationQuery;

#[Object]
impl NotificationQuery {
    /// The caller's notifications, newest first. `pageSize`: 1..=100.
    /// Costs its `pageSize` on top of what it selects (see the query limits).
    #[graphql(complexity = "(page_size.clamp(1, MAX_PAGE_SIZE) as usize) + child_complexity")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1)] page: i32,
        #[graphql(default = 10)] page_size: i32,
    ) -> ApiResult<NotificationPage> {
        let caller = ctx.require_user()?;
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(AppError::BadUserInput(format!(
                "pageSize must be between 1 and {MAX_PAGE_SIZE} (got {page_size})"
            )));
        }
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(AppError::BadUserInput(format!(
                "page must be between 1 and {MAX_PAGE} (got {page})"
            )));
        }
        let state = ctx.state();
        let (page_u, size_u) = (page as u64, page_size as u64);
        let found = state
            .inbox
            .page(&state.db, caller.user_id, page_u, size_u)
            .await?;
        let mut items: Vec<Notification> =
            found.items.into_iter().map(Notification::from).collect();
        // Every recipient of the page in one batch, before the items resolve
        // (left to the DataLoader alone, items that resolve a little later
        // would land in a second batch).
        if ctx.look_ahead().field("items").field("recipient").exists() {
            let mut ids: Vec<i64> = items.iter().map(|n| n.user_id).collect();
            ids.sort_unstable();
            ids.dedup();
            // Straight to the loader: one batch already, no need to wait
            // for the DataLoader's batching window.
            let users = state
                .users
                .loader()
                .load(&ids)
                .await
                .map_err(AppError::Internal)?;
            for item in &mut items {
                item.preloaded_recipient = users.get(&item.user_id).cloned();
            }
        }
        Ok(NotificationPage {
            has_next_page: page_u * size_u < found.total,
            total_count: i32::try_from(found.total).unwrap_or(i32::MAX),
            items,
            page,
            page_size,
        })
    }

    /// One of the caller's notifications, or (for an application) one it
    /// sent.
    async fn notification(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Notification> {
        Ok(sender::readable(ctx, &id).await?.into())
    }
}
