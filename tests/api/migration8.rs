//! Migration 8 (application sends) on a database at schema 7 with rows in
//! every old status: SQLite rebuilds `notifications` from its own CREATE
//! TABLE text with the wider status list, Postgres swaps the CHECK. Rows,
//! ids, indexes (the per-user seq stays unique) and the cascade from
//! `users` survive; the new statuses are accepted and unknown ones still
//! refused.

use migration::{Migrator, MigratorTrait as _};
use sea_orm::{ConnectionTrait as _, Database};

use crate::recipients::scalar;

async fn upgrade(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(7)).await.expect("schema 7");
    let ann = crate::inbox::old_user(&db, "ann@example.com").await;
    let now = chrono::Utc::now();
    let mut ids = Vec::new();
    for (seq, status) in ["PENDING", "PROCESSING", "SENT", "FAILED"]
        .iter()
        .enumerate()
    {
        let id = crate::inbox::old_notification(&db, ann, now).await;
        db.execute_unprepared(&format!(
            "UPDATE notifications SET status = '{status}', seq = {} WHERE id = {id}",
            seq + 1
        ))
        .await
        .expect("status");
        ids.push(id);
    }
    Migrator::up(&db, Some(1)).await.expect("migration 8");

    let statuses = format!(
        "SELECT COUNT(*) AS n FROM notifications WHERE user_id = {ann} \
         AND status IN ('PENDING', 'PROCESSING', 'SENT', 'FAILED') AND id IN ({})",
        ids.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(scalar(&db, &statuses).await, 4, "rows and ids kept");
    for status in ["SCHEDULED", "CANCELED", "EXPIRED"] {
        db.execute_unprepared(&format!(
            "UPDATE notifications SET status = '{status}' WHERE id = {}",
            ids[0]
        ))
        .await
        .unwrap_or_else(|e| panic!("{status} is allowed: {e}"));
    }
    assert!(
        db.execute_unprepared(&format!(
            "UPDATE notifications SET status = 'BOUNCED' WHERE id = {}",
            ids[0]
        ))
        .await
        .is_err(),
        "an unknown status is still refused"
    );
    assert!(
        db.execute_unprepared(&format!(
            "UPDATE notifications SET seq = 2 WHERE id = {}",
            ids[0]
        ))
        .await
        .is_err(),
        "one seq per user is still unique"
    );
    // New columns are there and empty.
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) AS n FROM notifications WHERE sender_app_id IS NULL \
             AND category IS NULL AND data IS NULL AND send_at IS NULL AND expires_at IS NULL"
        )
        .await,
        4
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) AS n FROM idempotency_records").await,
        0
    );
    // The cascade from users still holds after the rebuild.
    db.execute_unprepared(&format!("DELETE FROM users WHERE id = {ann}"))
        .await
        .expect("delete");
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) AS n FROM notifications").await,
        0
    );
    db.close().await.expect("close");
}

crate::upgrade_tests!(migration_8_upgrades_schema_7, upgrade);
