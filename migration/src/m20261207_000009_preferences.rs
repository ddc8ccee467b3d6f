//! Email preferences (issue 12): one row per (user, category), `''` being
//! the user's default for categories without their own row. A user's rows
//! go with the user.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261127_000001_create_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(NotificationPreferences::Table)
                    .col(big_integer(NotificationPreferences::UserId))
                    // '' : the default; else a category ([a-z0-9][a-z0-9._-]{0,63}).
                    .col(string_len(NotificationPreferences::Category, 64))
                    .col(boolean(NotificationPreferences::Email))
                    .col(timestamp_with_time_zone(NotificationPreferences::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .name("notification_preferences_pkey")
                            .col(NotificationPreferences::UserId)
                            .col(NotificationPreferences::Category),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("notification_preferences_user_id_fkey")
                            .from(
                                NotificationPreferences::Table,
                                NotificationPreferences::UserId,
                            )
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(NotificationPreferences::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum NotificationPreferences {
    Table,
    UserId,
    Category,
    Email,
    UpdatedAt,
}
