//! `notification_preferences`: a user's email setting for one category, or
//! (category `''`) their default for categories without one (migration 9).

use sea_orm::entity::prelude::*;

/// The category of a user's default setting.
pub const DEFAULT_CATEGORY: &str = "";

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_preferences")]
pub struct Model {
    /// `ON DELETE CASCADE`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub category: String,
    pub email: bool,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
