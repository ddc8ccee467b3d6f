//! `notifications`: one row per notification; the row is the source of truth
//! for its delivery status (see DESIGN.md, invariant 1).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Delivery status, stored as a constrained string (`CHECK (status IN (...))`).
///
/// Transitions: PENDING → PROCESSING → SENT | FAILED, and PROCESSING → PENDING
/// (a retry or an expired claim). SENT and FAILED are final.
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
