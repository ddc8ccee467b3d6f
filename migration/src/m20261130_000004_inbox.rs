//! The inbox (issue 10): per-user sequence numbers, read state, a counter row
//! per user and the inbox event log.
//!
//! Existing notifications get seqs in creation order per user and count as
//! unseen and unread; each user's counter row is backfilled from them. The
//! log starts empty: a client asking for events before the first logged one
//! gets a resync.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261127_000001_create_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Sequence numbers in creation order per user (window functions and
/// `UPDATE … FROM` exist on Postgres and SQLite ≥ 3.33 alike).
const BACKFILL_SEQ: &str = "UPDATE notifications SET seq = numbered.n \
    FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at, id) AS n \
          FROM notifications) AS numbered \
    WHERE notifications.id = numbered.id";

/// Every existing notification is unarchived, unread and unseen.
const BACKFILL_COUNTERS: &str = "INSERT INTO inbox_counters (user_id, last_seq, total, unread, unseen) \
    SELECT user_id, MAX(seq), COUNT(*), COUNT(*), COUNT(*) FROM notifications GROUP BY user_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        alter_notifications(manager, |t| {
            t.add_column(big_integer(Notifications::Seq).default(0))
        })
        .await?;
        for column in [
            Notifications::SeenAt,
            Notifications::ReadAt,
            Notifications::ArchivedAt,
        ] {
            alter_notifications(manager, |t| {
                t.add_column(timestamp_with_time_zone_null(column))
            })
            .await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(BACKFILL_SEQ).await?;
        // Also the keyset order of `inbox` pages: newest (highest seq) first.
        manager
            .create_index(
                Index::create()
                    .name("notifications_user_seq_key")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InboxCounters::Table)
                    .if_not_exists()
                    .col(big_integer(InboxCounters::UserId).primary_key())
                    .col(big_integer(InboxCounters::LastSeq).default(0))
                    .col(big_integer(InboxCounters::Total).default(0))
                    .col(big_integer(InboxCounters::Unread).default(0))
                    .col(big_integer(InboxCounters::Unseen).default(0))
                    .foreign_key(&mut owned_by_user(
                        "inbox_counters_user_id_fkey",
                        InboxCounters::Table,
                        InboxCounters::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InboxEvents::Table)
                    .if_not_exists()
                    .col(big_integer(InboxEvents::UserId))
                    .col(big_integer(InboxEvents::Seq))
                    .col(string_len(InboxEvents::Kind, 32))
                    .col(timestamp_with_time_zone(InboxEvents::At))
                    .col(big_integer(InboxEvents::Total))
                    .col(big_integer(InboxEvents::Unread))
                    .col(big_integer(InboxEvents::Unseen))
                    .col(text(InboxEvents::Payload))
                    .primary_key(
                        Index::create()
                            .name("inbox_events_pkey")
                            .col(InboxEvents::UserId)
                            .col(InboxEvents::Seq),
                    )
                    .foreign_key(&mut owned_by_user(
                        "inbox_events_user_id_fkey",
                        InboxEvents::Table,
                        InboxEvents::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        // Retention prunes by age.
        manager
            .create_index(
                Index::create()
                    .name("inbox_events_at_idx")
                    .table(InboxEvents::Table)
                    .col(InboxEvents::At)
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(BACKFILL_COUNTERS).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(InboxEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(InboxCounters::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("notifications_user_seq_key")
                    .table(Notifications::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Notifications::Seq,
            Notifications::SeenAt,
            Notifications::ReadAt,
            Notifications::ArchivedAt,
        ] {
            alter_notifications(manager, |t| t.drop_column(column)).await?;
        }
        Ok(())
    }
}

/// One change to `notifications` (SQLite alters one thing per statement).
async fn alter_notifications(
    manager: &SchemaManager<'_>,
    change: impl FnOnce(&mut TableAlterStatement) -> &mut TableAlterStatement,
) -> Result<(), DbErr> {
    let mut alter = Table::alter();
    change(alter.table(Notifications::Table));
    manager.alter_table(alter).await
}

/// A foreign key to `users` that goes with the user.
fn owned_by_user(
    name: &str,
    table: impl IntoIden,
    column: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, column)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[derive(DeriveIden, Clone, Copy)]
enum Notifications {
    Table,
    UserId,
    /// The seq of the notification's NotificationCreated event; unique per user.
    Seq,
    SeenAt,
    ReadAt,
    ArchivedAt,
}

#[derive(DeriveIden)]
enum InboxCounters {
    Table,
    /// One row per user; its row lock orders that user's writes.
    UserId,
    LastSeq,
    Total,
    Unread,
    Unseen,
}

#[derive(DeriveIden)]
enum InboxEvents {
    Table,
    UserId,
    Seq,
    Kind,
    At,
    /// The counts right after this event.
    Total,
    Unread,
    Unseen,
    /// A versioned wire payload (JSON).
    Payload,
}
