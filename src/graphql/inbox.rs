//! The inbox's GraphQL types (contract-inbox.graphql) and its opaque page
//! cursor, converted at the edge from storage snapshots and wire events.

use async_graphql::{Enum, ID, InputObject, Interface, SimpleObject};
use chrono::{DateTime, Utc};

use super::types::{Notification, NotificationStatus};
use crate::{
    domain::inbox::Counts,
    error::{ApiResult, AppError},
    storage::inbox::{Archived, Filter, Snapshot},
    wire::{InboxChangeV1, InboxEventV1},
};

/// A stored 64-bit number as a GraphQL `Int` (saturating; seqs and counts
/// of one user stay far below 2^31).
pub fn int(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX })
}

/// A mark: what it sets or clears, along the chain READ ⇒ SEEN, ARCHIVED ⇒ READ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::domain::inbox::InboxAction")]
pub enum InboxAction {
    /// Sets seenAt where null.
    Seen,
    /// Sets readAt (and seenAt) where null.
    Read,
    /// Clears readAt (seenAt stays); an archived notification is also
    /// unarchived, since ARCHIVED implies READ.
    Unread,
    /// Sets archivedAt (and readAt, seenAt) where null.
    Archive,
    /// Clears archivedAt.
    Unarchive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Default)]
pub enum ArchivedFilter {
    /// Archived notifications are left out (the default).
    #[default]
    Exclude,
    Include,
    Only,
}

#[derive(Debug, Clone, Copy, Default, InputObject)]
pub struct InboxFilter {
    /// Default EXCLUDE.
    pub archived: Option<ArchivedFilter>,
    /// Default false.
    pub unread_only: Option<bool>,
}

impl From<InboxFilter> for Filter {
    fn from(f: InboxFilter) -> Self {
        Self {
            archived: match f.archived.unwrap_or_default() {
                ArchivedFilter::Exclude => Archived::Exclude,
                ArchivedFilter::Include => Archived::Include,
                ArchivedFilter::Only => Archived::Only,
            },
            unread_only: f.unread_only.unwrap_or(false),
        }
    }
}

/// The caller's notifications that are not archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, SimpleObject)]
pub struct InboxCounts {
    pub total: i32,
    /// Not archived and not read.
    pub unread: i32,
    /// Not archived and not seen.
    pub unseen: i32,
}

impl From<Counts> for InboxCounts {
    fn from(c: Counts) -> Self {
        Self {
            total: int(c.total),
            unread: int(c.unread),
            unseen: int(c.unseen),
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationEdge {
    pub cursor: String,
    pub node: Notification,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationConnection {
    /// Newest first.
    pub edges: Vec<NotificationEdge>,
    pub page_info: PageInfo,
    /// The caller's counts, whatever the filter.
    pub counts: InboxCounts,
    /// The caller's last seq, in the same snapshot as this page.
    pub last_seq: i32,
}

/// One change to the caller's inbox, with the caller's next seq.
#[derive(Debug, Clone, Interface)]
#[graphql(
    field(name = "seq", ty = "&i32"),
    field(name = "at", ty = "&DateTime<Utc>"),
    field(name = "counts", ty = "&InboxCounts")
)]
pub enum InboxEvent {
    NotificationCreated(NotificationCreated),
    DeliveryStatusChanged(DeliveryStatusChanged),
    NotificationsMarked(NotificationsMarked),
    InboxResync(InboxResync),
}

#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationCreated {
    pub seq: i32,
    pub at: DateTime<Utc>,
    pub counts: InboxCounts,
    pub notification: Notification,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct DeliveryStatusChanged {
    pub seq: i32,
    pub at: DateTime<Utc>,
    pub counts: InboxCounts,
    pub notification: Notification,
    pub previous_status: NotificationStatus,
    pub status: NotificationStatus,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationsMarked {
    pub seq: i32,
    pub at: DateTime<Utc>,
    pub counts: InboxCounts,
    pub action: InboxAction,
    /// The notifications whose state changed (markNotifications); empty for
    /// markAllNotifications.
    pub ids: Vec<ID>,
    /// markAllNotifications: every notification with seq <= upTo.
    pub up_to: Option<i32>,
}

/// The events before this one are not available (older than the retained
/// log, or the client's `after` is past the last seq): refetch the inbox,
/// then continue after this event's seq.
#[derive(Debug, Clone, SimpleObject)]
pub struct InboxResync {
    pub seq: i32,
    pub at: DateTime<Utc>,
    pub counts: InboxCounts,
}

impl InboxResync {
    pub fn now(snapshot: Snapshot, at: DateTime<Utc>) -> Self {
        Self {
            seq: int(snapshot.last_seq),
            at,
            counts: snapshot.counts.into(),
        }
    }
}

impl From<InboxEventV1> for InboxEvent {
    fn from(e: InboxEventV1) -> Self {
        let (seq, at, counts) = (int(e.seq), e.at, e.counts.into());
        match e.change {
            InboxChangeV1::NotificationCreated { notification } => {
                Self::NotificationCreated(NotificationCreated {
                    seq,
                    at,
                    counts,
                    notification: notification.into(),
                })
            }
            InboxChangeV1::DeliveryStatusChanged {
                notification,
                previous,
            } => Self::DeliveryStatusChanged(DeliveryStatusChanged {
                seq,
                at,
                counts,
                previous_status: previous.into(),
                status: notification.status.into(),
                notification: notification.into(),
            }),
            InboxChangeV1::NotificationsMarked { action, ids, up_to } => {
                Self::NotificationsMarked(NotificationsMarked {
                    seq,
                    at,
                    counts,
                    action: action.into(),
                    ids: ids.iter().map(|id| ID(id.to_string())).collect(),
                    up_to: up_to.map(int),
                })
            }
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct InboxChangePage {
    /// seq > after, oldest first, at most `first`.
    pub events: Vec<InboxEvent>,
    /// The caller's last seq.
    pub last_seq: i32,
    /// More events after the last one returned.
    pub has_more: bool,
    /// Seconds to wait before the next poll (HERALD_POLL_INTERVAL).
    pub poll_interval: i32,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct InboxUpdate {
    /// Notifications whose state changed.
    pub updated: i32,
    /// Right after this change.
    pub counts: InboxCounts,
    /// The NotificationsMarked event it produced; null when nothing changed.
    pub seq: Option<i32>,
}

const CURSOR_TAG: &str = "inbox1";

/// The opaque cursor after `seq` in `user_id`'s inbox (a keyset position:
/// it stays valid while new notifications arrive).
pub fn cursor(user_id: i64, seq: i64) -> String {
    hex::encode(format!("{CURSOR_TAG}:{user_id}:{seq}"))
}

/// The seq a cursor of `user_id`'s points after. A malformed cursor, or
/// one of another user's, is bad input.
pub fn parse_cursor(user_id: i64, cursor: &str) -> ApiResult<i64> {
    let bad = || AppError::BadUserInput("malformed cursor".to_owned());
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.split(':');
    let (Some(CURSOR_TAG), Some(user), Some(seq), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if user.parse::<i64>().ok() != Some(user_id) {
        return Err(bad());
    }
    seq.parse::<i64>().ok().filter(|s| *s >= 1).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_for_its_user_only() {
        let c = cursor(7, 42);
        assert_eq!(parse_cursor(7, &c).ok(), Some(42));
        assert!(parse_cursor(8, &c).is_err(), "another user's cursor");
    }

    #[test]
    fn malformed_cursors_are_bad_input() {
        for bad in [
            "",
            "zz",
            "not hex at all",
            &hex::encode("inbox1:7"),
            &hex::encode("inbox1:7:x"),
            &hex::encode("inbox1:7:0"),
            &hex::encode("inbox1:7:5:9"),
            &hex::encode("other:7:5"),
            &hex::encode([0xff, 0xfe]),
        ] {
            assert!(
                matches!(parse_cursor(7, bad), Err(AppError::BadUserInput(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ints_saturate() {
        assert_eq!(int(5), 5);
        assert_eq!(int(i64::MAX), i32::MAX);
        assert_eq!(int(i64::MIN), i32::MIN);
    }
}
