//! GraphQL output types, converted at the edge from storage models and
//! from the payloads the cache and the event bus carry.

use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Json, SimpleObject};
use chrono::{DateTime, Utc};
use entity::notification;

use super::context::ContextExt as _;
use crate::{
    error::{ApiResult, AppError},
    wire::{self, InboxChangeV1, InboxEventV1},
};

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct User {
    pub id: ID,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// The application's own id for this user, when an application named
    /// them by one.
    pub external_id: Option<String>,
}

impl From<crate::directory::Profile> for User {
    fn from(p: crate::directory::Profile) -> Self {
        Self {
            id: ID(p.id.to_string()),
            email: p.email,
            created_at: p.created_at,
            external_id: p.external_id,
        }
    }
}

impl From<entity::user::Model> for User {
    fn from(m: entity::user::Model) -> Self {
        Self {
            id: ID(m.id.to_string()),
            email: m.email,
            created_at: m.created_at,
            external_id: m.external_id,
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct AuthPayload {
    /// A bearer token for the `Authorization` header or the websocket's
    /// `connection_init` payload.
    pub token: String,
    pub user: User,
}

/// Where a notification is on its way to the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum NotificationStatus {
    /// Stored and waiting for a worker (also between retries).
    Pending,
    /// A worker is sending it.
    Processing,
    /// The mail server accepted it.
    Sent,
    /// It will not be sent: a permanent error, or every attempt used.
    Failed,
    /// Waiting for its `sendAt`; in the recipient's inbox already.
    Scheduled,
    /// Its sender canceled it before a worker took it; never sent.
    Canceled,
    /// Not delivered by its `expiresAt`; never sent.
    Expired,
    /// Its recipient turned email off for it: in the inbox, never mailed.
    Skipped,
}

impl From<wire::Status> for NotificationStatus {
    fn from(s: wire::Status) -> Self {
        match s {
            wire::Status::Pending => Self::Pending,
            wire::Status::Processing => Self::Processing,
            wire::Status::Sent => Self::Sent,
            wire::Status::Failed => Self::Failed,
            wire::Status::Scheduled => Self::Scheduled,
            wire::Status::Canceled => Self::Canceled,
            wire::Status::Expired => Self::Expired,
            wire::Status::Skipped => Self::Skipped,
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Notification {
    pub id: ID,
    pub title: String,
    pub content: String,
    pub status: NotificationStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Delivery attempts made so far.
    pub attempts: i32,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the next attempt is due, while a retry is pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the mail server accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// The seq of its NotificationCreated inbox event; lists are newest
    /// (highest seq) first.
    pub seq: i32,
    pub seen_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    /// The sender's category, if it gave one.
    pub category: Option<String>,
    /// The sender's JSON object, if it gave one.
    pub data: Option<Json<serde_json::Value>>,
    /// When it is (or was) due, if the sender scheduled it.
    pub send_at: Option<DateTime<Utc>>,
    /// Not delivered after this, if the sender set it.
    pub expires_at: Option<DateTime<Utc>>,
    #[graphql(skip)]
    pub user_id: i64,
    /// The application key that sent it (`None`: the recipient did).
    #[graphql(skip)]
    pub sender_app_id: Option<i64>,
    /// The recipient, when the resolver that made this value loaded it
    /// already (a page loads all of its recipients in one batch).
    #[graphql(skip)]
    pub preloaded_recipient: Option<User>,
}

impl From<notification::Model> for Notification {
    fn from(m: notification::Model) -> Self {
        wire::NotificationV1::from(m).into()
    }
}

impl From<wire::NotificationV1> for Notification {
    fn from(m: wire::NotificationV1) -> Self {
        Self {
            id: ID(m.id.to_string()),
            title: m.title,
            content: m.content,
            status: m.status.into(),
            created_at: m.created_at,
            updated_at: m.updated_at,
            attempts: m.attempts,
            last_error: m.last_error,
            next_attempt_at: m.next_attempt_at,
            sent_at: m.sent_at,
            seq: super::inbox::int(m.seq),
            seen_at: m.seen_at,
            read_at: m.read_at,
            archived_at: m.archived_at,
            category: m.category,
            data: m.data.map(Json),
            send_at: m.send_at,
            expires_at: m.expires_at,
            user_id: m.user_id,
            sender_app_id: m.sender_app_id,
            preloaded_recipient: None,
        }
    }
}

#[ComplexObject]
impl Notification {
    /// The user it is addressed to (batched: one query per page).
    async fn recipient(&self, ctx: &Context<'_>) -> ApiResult<User> {
        if let Some(user) = &self.preloaded_recipient {
            return Ok(user.clone());
        }
        ctx.state()
            .users
            .load_one(self.user_id)
            .await
            .map_err(AppError::Internal)?
            .ok_or_else(|| AppError::from(anyhow::anyhow!("recipient {} missing", self.user_id)))
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationPage {
    /// Newest first.
    pub items: Vec<Notification>,
    pub page: i32,
    pub page_size: i32,
    pub total_count: i32,
    pub has_next_page: bool,
}

/// One status change of one notification.
#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationStatusEvent {
    /// The notification as it is after the change.
    pub notification: Notification,
    /// `null` when the notification was just created.
    pub previous_status: Option<NotificationStatus>,
    pub status: NotificationStatus,
    pub at: DateTime<Utc>,
}

impl NotificationStatusEvent {
    /// The status change an inbox event records, if it records one: a
    /// creation (no previous status) or a delivery status change.
    pub fn of(event: InboxEventV1) -> Option<Self> {
        let (notification, previous) = match event.change {
            InboxChangeV1::NotificationCreated { notification } => (notification, None),
            InboxChangeV1::DeliveryStatusChanged {
                notification,
                previous,
            } => (notification, Some(previous)),
            InboxChangeV1::NotificationsMarked { .. } => return None,
        };
        Some(Self {
            previous_status: previous.map(Into::into),
            status: notification.status.into(),
            at: event.at,
            notification: notification.into(),
        })
    }
}

#[derive(Debug, Clone, InputObject)]
pub struct SendNotificationInput {
    /// 1..=255 characters after trimming.
    pub title: String,
    /// 1..=65536 bytes.
    pub content: String,
    /// Who it is for. A user token may name only its own user (the default);
    /// an application must name one.
    pub to: Option<super::recipient::RecipientInput>,
    /// 1..=255 characters. A repeat with the same key and the same input
    /// returns the first send's notification; a different input is
    /// CONFLICT. Kept at least `HERALD_IDEMPOTENCY_TTL` (24 h).
    pub idempotency_key: Option<String>,
    /// Deliver then (SCHEDULED until): at most 5 s in the past, at most 90
    /// days ahead.
    pub send_at: Option<DateTime<Utc>>,
    /// Not delivered after this (EXPIRED): after `sendAt` and after now.
    pub expires_at: Option<DateTime<Utc>>,
    /// `[a-z0-9][a-z0-9._-]{0,63}`.
    pub category: Option<String>,
    /// A JSON object of at most 8 KiB.
    pub data: Option<Json<serde_json::Value>>,
}

/// A user's token minted by an application (`issueUserToken`): the same
/// token `login` returns, logged out the same way.
#[derive(Debug, Clone, SimpleObject)]
pub struct UserToken {
    pub token: String,
    pub user: User,
    pub expires_at: DateTime<Utc>,
}
