//! `users`: one row per account, registered or made by an application.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Trimmed and lowercased before it gets here; unique (`users_email_key`).
    #[sea_orm(unique)]
    pub email: String,
    /// argon2id PHC string; none for a user an application created, who
    /// can never log in with a password.
    pub password_hash: Option<String>,
    pub created_at: DateTimeUtc,
    /// The application's own id for the user (1..=255 characters); unique
    /// (`users_external_id_key`).
    #[sea_orm(unique)]
    pub external_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::notification::Entity")]
    Notification,
}

impl Related<super::notification::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Notification.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
