//! Migration 10 (webhooks) on a database at schema 9 with a read
//! notification: the notification keeps its rows (`first_read_at` null: it
//! was read before webhooks existed), the outbox takes one row per
//! endpoint and event with a known status only, and an endpoint's rows go
//! with the endpoint.

use chrono::Utc;
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{ConnectionTrait as _, Database};

use crate::recipients::scalar;

async fn upgrade(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(9)).await.expect("schema 9");
    let ann = crate::inbox::old_user(&db, "ann@example.com").await;
    let id = crate::inbox::old_notification(&db, ann, Utc::now()).await;
    Migrator::up(&db, Some(1)).await.expect("migration 10");
    assert_eq!(
        scalar(
            &db,
            &format!(
                "SELECT COUNT(*) AS n FROM notifications WHERE id = {id} AND first_read_at IS NULL"
            )
        )
        .await,
        1
    );
    db.execute_unprepared(
        "INSERT INTO webhook_endpoints (url, events, secret, created_at) \
         VALUES ('https://example.com/', 'notification.sent', 'whsec_AAAA', CURRENT_TIMESTAMP)",
    )
    .await
    .expect("an endpoint");
    let outbox = |status: &str| {
        format!(
            "INSERT INTO webhook_deliveries (endpoint_id, event_type, notification_id, payload, status, created_at) \
             VALUES (1, 'notification.sent', {id}, '{{}}', '{status}', CURRENT_TIMESTAMP)"
        )
    };
    db.execute_unprepared(&outbox("PENDING"))
        .await
        .expect("a pending row, attempts defaulting to 0");
    assert!(
        db.execute_unprepared(&outbox("LOST")).await.is_err(),
        "an unknown status"
    );
    assert_eq!(
        scalar(&db, "SELECT SUM(attempts) AS n FROM webhook_deliveries").await,
        0
    );
    db.execute_unprepared("DELETE FROM webhook_endpoints WHERE id = 1")
        .await
        .expect("delete");
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) AS n FROM webhook_deliveries").await,
        0,
        "the rows go with the endpoint"
    );
    db.close().await.expect("close");
}

crate::upgrade_tests!(migration_10_upgrades_schema_9, upgrade);
