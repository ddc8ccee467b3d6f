//! `webhook_deliveries`: the webhook outbox (migration 10), one row per
//! (endpoint, event), written in the transaction of the change it reports.

use sea_orm::entity::prelude::*;

/// PENDING until it is delivered (DELIVERED) or given up (FAILED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Status {
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "DELIVERED")]
    Delivered,
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// Also the `webhook-id` (`msg_<id>`), the same on every attempt.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `ON DELETE CASCADE`.
    pub endpoint_id: i64,
    /// `notification.sent`, `notification.read`, …
    pub event_type: String,
    pub notification_id: i64,
    /// The body, exactly as signed and sent on every attempt.
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub status: Status,
    /// Attempts made so far.
    pub attempts: i32,
    /// When a PENDING row is due (again); `None` means now.
    pub next_attempt_at: Option<DateTimeUtc>,
    /// When it was last put on the webhook queue; `None` asks the relay to.
    pub enqueued_at: Option<DateTimeUtc>,
    /// When a worker took it for an attempt; older than the visibility
    /// timeout, the worker died.
    pub claimed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::webhook_endpoint::Entity",
        from = "Column::EndpointId",
        to = "super::webhook_endpoint::Column::Id",
        on_delete = "Cascade"
    )]
    Endpoint,
}

impl Related<super::webhook_endpoint::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Endpoint.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
