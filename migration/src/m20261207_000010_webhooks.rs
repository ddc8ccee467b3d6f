//! Signed status webhooks (issue 12): the endpoints an operator registers
//! (`herald webhook create`), and the outbox, one row per (endpoint, event),
//! written in the transaction of the change it reports and delivered by the
//! worker. `notifications.first_read_at`: when a notification was first
//! read, so `notification.read` goes out once, however often it is marked
//! unread and read again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(big_pk_auto(WebhookEndpoints::Id))
                    .col(text(WebhookEndpoints::Url))
                    // The event names it receives, comma-separated.
                    .col(text(WebhookEndpoints::Events))
                    // `whsec_` + base64 of the key: needed in clear to sign.
                    .col(text(WebhookEndpoints::Secret))
                    .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                    // Since when every delivery to it failed; `NULL` after a success.
                    .col(timestamp_with_time_zone_null(
                        WebhookEndpoints::FailingSince,
                    ))
                    .col(timestamp_with_time_zone_null(WebhookEndpoints::DisabledAt))
                    .col(text_null(WebhookEndpoints::LastError))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(big_pk_auto(WebhookDeliveries::Id))
                    .col(big_integer(WebhookDeliveries::EndpointId))
                    .col(string_len(WebhookDeliveries::EventType, 32))
                    // No foreign key: the event outlives a deleted notification.
                    .col(big_integer(WebhookDeliveries::NotificationId))
                    // The body, exactly as signed and sent on every attempt.
                    .col(text(WebhookDeliveries::Payload))
                    .col(string_len(WebhookDeliveries::Status, 16).check(
                        Expr::col(WebhookDeliveries::Status).is_in([
                            "PENDING",
                            "DELIVERED",
                            "FAILED",
                        ]),
                    ))
                    .col(integer(WebhookDeliveries::Attempts).default(0))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::NextAttemptAt,
                    ))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::EnqueuedAt))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::ClaimedAt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::FinishedAt))
                    .col(text_null(WebhookDeliveries::LastError))
                    .foreign_key(
                        ForeignKey::create()
                            .name("webhook_deliveries_endpoint_id_fkey")
                            .from(WebhookDeliveries::Table, WebhookDeliveries::EndpointId)
                            .to(WebhookEndpoints::Table, WebhookEndpoints::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            // The relay: PENDING rows by due time.
            (
                "webhook_deliveries_status_next_attempt_at_idx",
                vec![WebhookDeliveries::Status, WebhookDeliveries::NextAttemptAt],
            ),
            // The cascade from an endpoint, and its pending rows.
            (
                "webhook_deliveries_endpoint_id_idx",
                vec![WebhookDeliveries::EndpointId, WebhookDeliveries::Status],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(WebhookDeliveries::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Notifications::Table)
                    .add_column(timestamp_with_time_zone_null(Notifications::FirstReadAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Notifications::Table)
                    .drop_column(Notifications::FirstReadAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(WebhookEndpoints::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    Url,
    Events,
    Secret,
    CreatedAt,
    FailingSince,
    DisabledAt,
    LastError,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    EventType,
    NotificationId,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    EnqueuedAt,
    ClaimedAt,
    CreatedAt,
    FinishedAt,
    LastError,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    FirstReadAt,
}
