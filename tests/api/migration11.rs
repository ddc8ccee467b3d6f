//! Migration 11 (partial status indexes, Postgres): the sweeper's,
//! scheduler's and expiry pass's own statements still read the status
//! indexes, which now hold the waiting rows only.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use herald::storage::notifications;
use sea_orm::{ConnectionTrait as _, Database, Statement};

use crate::helpers::PgDatabase;

/// Runs each scan as Herald does, records its SQL, and asks the planner how
/// it would run it on a table of mostly delivered rows.
#[tokio::test]
async fn the_status_scans_use_the_partial_status_indexes() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let mut db = Database::connect(&pg.url).await.expect("connect");
    let user = crate::inbox::old_user(&db, "scan@example.com").await;
    // 20,000 delivered rows and a few in each waiting state; the waiting
    // ones are all a partial index holds.
    db.execute_unprepared(&format!(
        "INSERT INTO notifications (user_id, title, content, status, attempts, created_at, updated_at, seq, send_at, expires_at, claimed_at) \
         SELECT {user}, 't', 'c', \
           CASE WHEN g <= 20000 THEN 'SENT' ELSE (ARRAY['PENDING', 'PROCESSING', 'SCHEDULED'])[g % 3 + 1] END, \
           1, now(), now(), g, now() + interval '1 day', now() + interval '1 day', now() \
         FROM generate_series(1, 20030) AS g; \
         ANALYZE notifications"
    ))
    .await
    .expect("seed");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    db.set_metric_callback(move |info| {
        record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(info.statement.to_string());
    });
    let now = Utc::now();
    let minute = std::time::Duration::from_secs(60);
    let mut scans = Vec::new();
    for (scan, index) in [
        ("expired claims", "notifications_status_due_idx"),
        ("re-enqueue", "notifications_status_due_idx"),
        ("due scheduled", "notifications_status_send_at_idx"),
        ("expiry", "notifications_status_expires_at_idx"),
    ] {
        seen.lock().unwrap_or_else(PoisonError::into_inner).clear();
        match scan {
            "expired claims" => {
                notifications::expired_claims(&db, now, minute, 100)
                    .await
                    .expect(scan);
            }
            "re-enqueue" => {
                notifications::take_for_enqueue(&db, now, now, 100)
                    .await
                    .expect(scan);
            }
            "due scheduled" => {
                notifications::due_scheduled(&db, now, 100)
                    .await
                    .expect(scan);
            }
            _ => {
                notifications::expired(&db, now, 100).await.expect(scan);
            }
        }
        let sql = seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .expect("the scan ran a statement");
        scans.push((scan, index, sql));
    }
    let indexes = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT string_agg(indexdef, '; ') AS defs FROM pg_indexes WHERE tablename = 'notifications' AND indexname LIKE 'notifications_status_%'",
        ))
        .await
        .expect("pg_indexes")
        .and_then(|row| row.try_get::<String>("", "defs").ok())
        .unwrap_or_default();
    assert_eq!(
        indexes.matches(" WHERE ").count(),
        3,
        "three partial indexes: {indexes}"
    );
    for (scan, index, sql) in scans {
        let plan = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("EXPLAIN {sql}"),
            ))
            .await
            .expect("explain")
            .iter()
            .filter_map(|row| row.try_get_by_index::<String>(0).ok())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            plan.contains(index),
            "{scan} should read {index}:\n{sql}\n{plan}"
        );
    }
}
