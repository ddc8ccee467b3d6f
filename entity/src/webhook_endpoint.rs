//! `webhook_endpoints`: where status webhooks go (migration 10), registered
//! by an operator with `herald webhook create`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `http` or `https`; resolved at each delivery.
    #[sea_orm(column_type = "Text")]
    pub url: String,
    /// The event names it receives, comma-separated (`notification.sent,…`).
    #[sea_orm(column_type = "Text")]
    pub events: String,
    /// The signing secret, `whsec_` + base64 of the key.
    #[sea_orm(column_type = "Text")]
    pub secret: String,
    pub created_at: DateTimeUtc,
    /// Since when every delivery to it failed; `None` after a success.
    pub failing_since: Option<DateTimeUtc>,
    /// Set once it failed everything for a day: nothing more is sent to it.
    pub disabled_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
