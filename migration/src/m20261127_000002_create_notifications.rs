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
                    .table(Notifications::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Notifications::Id))
                    .col(big_integer(Notifications::UserId))
                    .col(string_len(Notifications::Title, 1024))
                    .col(text(Notifications::Content))
                    .col(
                        string_len(Notifications::Status, 16)
                            .default("PENDING")
                            .check(Expr::col(Notifications::Status).is_in([
                                "PENDING",
                                "PROCESSING",
                                "SENT",
                                "FAILED",
                            ])),
                    )
                    .col(integer(Notifications::Attempts).default(0))
                    .col(text_null(Notifications::LastError))
                    .col(timestamp_with_time_zone_null(Notifications::NextAttemptAt))
                    .col(timestamp_with_time_zone(Notifications::CreatedAt))
                    .col(timestamp_with_time_zone(Notifications::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("notifications_user_id_fkey")
                            .from(Notifications::Table, Notifications::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The inbox order: newest first, id as the tie-breaker.
        manager
            .create_index(
                Index::create()
                    .name("notifications_user_created_idx")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col((Notifications::CreatedAt, IndexOrder::Desc))
                    .col((Notifications::Id, IndexOrder::Desc))
                    .to_owned(),
            )
            .await?;
        // The sweeper's scan: rows still waiting for delivery, by due time.
        manager
            .create_index(
                Index::create()
                    .name("notifications_status_due_idx")
                    .table(Notifications::Table)
                    .col(Notifications::Status)
                    .col(Notifications::NextAttemptAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Notifications::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    UserId,
    Title,
    Content,
    Status,
    Attempts,
    LastError,
    NextAttemptAt,
    CreatedAt,
    UpdatedAt,
}
