//! The caller's inbox: keyset pages, counts and the change log read as pages
//! (the polling fallback of the `inboxEvents` subscription). Pages and
//! counts are served from the cache at the user's last seq (`inbox.rs`); a
//! poll with nothing new reads that seq alone, no SQL.

use async_graphql::{Context, Object};

use crate::{
    error::{ApiResult, AppError},
    graphql::{
        context::ContextExt as _,
        inbox::{
            InboxChangePage, InboxCounts, InboxEvent, InboxFilter, InboxResync,
            NotificationConnection, NotificationEdge, PageInfo, cursor, int, parse_cursor,
        },
        types::Notification,
    },
    storage::{
        self,
        inbox::{Changes, Snapshot},
    },
};

/// `first` when a client leaves it out or sends null.
const DEFAULT_INBOX_PAGE: i32 = 20;
const DEFAULT_CHANGES_PAGE: i32 = 100;
/// `first` of `inbox`: 1..=100.
pub const MAX_INBOX_PAGE: i32 = 100;
/// `first` of `inboxChanges`: 1..=500.
pub const MAX_CHANGES_PAGE: i32 = 500;

fn check_first(first: i32, max: i32) -> ApiResult<u64> {
    if !(1..=max).contains(&first) {
        return Err(AppError::BadUserInput(format!(
            "first must be between 1 and {max} (got {first})"
        )));
    }
    Ok(first.unsigned_abs().into())
}

#[derive(Default)]
pub struct InboxQuery;

#[Object]
impl InboxQuery {
    /// The caller's notifications, newest (highest seq) first, as a Relay
    /// connection. `first`: 1..=100. `after` is a cursor from an earlier
    /// page; it stays valid while new notifications arrive.
    #[graphql(
        complexity = "(first.unwrap_or(DEFAULT_INBOX_PAGE).clamp(1, MAX_INBOX_PAGE) as usize) + child_complexity"
    )]
    async fn inbox(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
        filter: Option<InboxFilter>,
    ) -> ApiResult<NotificationConnection> {
        let caller = ctx.require_user()?;
        let limit = check_first(first.unwrap_or(DEFAULT_INBOX_PAGE), MAX_INBOX_PAGE)?;
        let before = after
            .map(|c| parse_cursor(caller.user_id, &c))
            .transpose()?;
        let state = ctx.state();
        let page = state
            .inbox
            .inbox_page(
                &state.db,
                caller.user_id,
                before,
                limit,
                filter.unwrap_or_default().into(),
            )
            .await?;
        let edges: Vec<NotificationEdge> = page
            .items
            .into_iter()
            .map(|row| NotificationEdge {
                cursor: cursor(caller.user_id, row.seq),
                node: Notification::from(row),
            })
            .collect();
        Ok(NotificationConnection {
            page_info: PageInfo {
                has_next_page: page.has_next_page,
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
            counts: page.counts.into(),
            last_seq: int(page.last_seq),
        })
    }

    /// The caller's counts (not archived; unread; unseen).
    // From the cached snapshot (no SQL while it is there).
    async fn inbox_counts(&self, ctx: &Context<'_>) -> ApiResult<InboxCounts> {
        let caller = ctx.require_user()?;
        let state = ctx.state();
        let snapshot = state.inbox.last_snapshot(&state.db, caller.user_id).await?;
        Ok(snapshot.counts.into())
    }

    /// The caller's inbox events with seq > `after`, oldest first.
    /// `first`: 1..=500. An `after` older than the retained log, or greater
    /// than the last seq, gets one InboxResync instead.
    #[graphql(
        complexity = "(first.unwrap_or(DEFAULT_CHANGES_PAGE).clamp(1, MAX_CHANGES_PAGE) as usize) + child_complexity"
    )]
    async fn inbox_changes(
        &self,
        ctx: &Context<'_>,
        after: i32,
        #[graphql(default = 100)] first: Option<i32>,
    ) -> ApiResult<InboxChangePage> {
        let caller = ctx.require_user()?;
        if after < 0 {
            return Err(AppError::BadUserInput(format!(
                "after must not be negative (got {after})"
            )));
        }
        let limit = check_first(first.unwrap_or(DEFAULT_CHANGES_PAGE), MAX_CHANGES_PAGE)?;
        let state = ctx.state();
        let after = i64::from(after);
        // Nothing new costs one cache read and no SQL. Anything else reads
        // the log, which also confirms an `after` past the cached last seq
        // (the cache may lag a commit by a moment) before a resync.
        let cached = state.inbox.last_snapshot(&state.db, caller.user_id).await?;
        let changes = if after == cached.last_seq {
            Changes::Events {
                events: Vec::new(),
                snapshot: cached,
            }
        } else {
            storage::inbox::changes_after(&state.db, caller.user_id, after, limit).await?
        };
        let (events, snapshot, has_more): (Vec<InboxEvent>, Snapshot, bool) = match changes {
            Changes::Resync(snapshot) => (
                vec![InboxEvent::InboxResync(InboxResync::now(
                    snapshot,
                    storage::now(),
                ))],
                snapshot,
                false,
            ),
            Changes::Events { events, snapshot } => {
                let has_more = events.last().is_some_and(|e| e.seq < snapshot.last_seq);
                (
                    events.into_iter().map(InboxEvent::from).collect(),
                    snapshot,
                    has_more,
                )
            }
        };
        Ok(InboxChangePage {
            events,
            last_seq: int(snapshot.last_seq),
            has_more,
            poll_interval: i32::try_from(state.poll_interval.as_secs()).unwrap_or(i32::MAX),
        })
    }
}
