//! `notifications`: one row per notification; the row is the source of truth
//! for its delivery status (see DESIGN.md, invariant 1).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Delivery status, stored as a constrained string (`CHECK (status IN (...))`).
///
/// Transitions (DESIGN.md, invariant 3): PENDING → PROCESSING → SENT | FAILED,
/// PENDING → SKIPPED (the recipient turned email off; decided at the claim),
/// PROCESSING → PENDING (a retry or an expired claim), SCHEDULED → PENDING
/// when due, and SCHEDULED | PENDING (unclaimed) → CANCELED | EXPIRED. SENT,
/// FAILED, CANCELED, EXPIRED and SKIPPED are final.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Status {
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "PROCESSING")]
    Processing,
    #[sea_orm(string_value = "SENT")]
    Sent,
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// Waiting for its `send_at` (migration 8).
    #[sea_orm(string_value = "SCHEDULED")]
    Scheduled,
    /// Canceled by its sender before a worker claimed it.
    #[sea_orm(string_value = "CANCELED")]
    Canceled,
    /// Not delivered by its `expires_at`.
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
    /// Its recipient turned email off for it: kept in the inbox, not mailed.
    #[sea_orm(string_value = "SKIPPED")]
    Skipped,
}

impl Status {
    /// No transition leaves it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Sent | Self::Failed | Self::Canceled | Self::Expired | Self::Skipped
        )
    }
}

/// Serializable so the read cache can hold pages of rows.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The recipient; `ON DELETE CASCADE`.
    pub user_id: i64,
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub content: String,
    pub status: Status,
    /// Delivery attempts made so far.
    pub attempts: i32,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// When a PENDING row becomes due for (re)delivery; `None` means now.
    pub next_attempt_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// When a worker claimed the row (PROCESSING); a claim older than the
    /// visibility timeout belongs to a dead worker.
    pub claimed_at: Option<DateTimeUtc>,
    /// When the row was last put on the queue; `None` asks the sweeper to
    /// enqueue it as soon as it is due.
    pub enqueued_at: Option<DateTimeUtc>,
    pub sent_at: Option<DateTimeUtc>,
    /// The seq of this notification's NotificationCreated inbox event;
    /// unique per user (`notifications_user_seq_key`).
    pub seq: i64,
    /// Read state, a chain: `read_at` set implies `seen_at` set,
    /// `archived_at` set implies `read_at` set.
    pub seen_at: Option<DateTimeUtc>,
    pub read_at: Option<DateTimeUtc>,
    pub archived_at: Option<DateTimeUtc>,
    /// The application key that sent it; `None`: the recipient sent it to
    /// themselves (migration 8).
    pub sender_app_id: Option<i64>,
    /// The sender's category, `[a-z0-9][a-z0-9._-]{0,63}`.
    pub category: Option<String>,
    /// The sender's JSON object, as text (at most 8 KiB).
    #[sea_orm(column_type = "Text", nullable)]
    pub data: Option<String>,
    /// When a SCHEDULED row becomes due.
    pub send_at: Option<DateTimeUtc>,
    /// Not delivered after this: EXPIRED.
    pub expires_at: Option<DateTimeUtc>,
    /// When it was first read (migration 10): `notification.read` goes out
    /// once, however often it is marked unread and read again.
    pub first_read_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
