//! Migration 9 (preferences) on a database at schema 8 with a user: the
//! table takes one row per (user, category), `''` for the default, and the
//! user's rows go with the user.

use migration::{Migrator, MigratorTrait as _};
use sea_orm::{ConnectionTrait as _, Database};

use crate::recipients::scalar;

async fn upgrade(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(8)).await.expect("schema 8");
    let ann = crate::inbox::old_user(&db, "ann@example.com").await;
    Migrator::up(&db, Some(1)).await.expect("migration 9");
    let insert = |category: &str, email: bool| {
        format!(
            "INSERT INTO notification_preferences (user_id, category, email, updated_at) \
             VALUES ({ann}, '{category}', {email}, CURRENT_TIMESTAMP)"
        )
    };
    for (category, email) in [("", false), ("news", true)] {
        db.execute_unprepared(&insert(category, email))
            .await
            .unwrap_or_else(|e| panic!("{category:?}: {e}"));
    }
    assert!(
        db.execute_unprepared(&insert("news", false)).await.is_err(),
        "one row per (user, category)"
    );
    assert!(
        db.execute_unprepared(
            "INSERT INTO notification_preferences (user_id, category, email, updated_at) \
             VALUES (999999, '', true, CURRENT_TIMESTAMP)"
        )
        .await
        .is_err(),
        "only for a user"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) AS n FROM notification_preferences").await,
        2
    );
    db.execute_unprepared(&format!("DELETE FROM users WHERE id = {ann}"))
        .await
        .expect("delete");
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) AS n FROM notification_preferences").await,
        0,
        "the rows go with the user"
    );
    db.close().await.expect("close");
}

crate::upgrade_tests!(migration_9_upgrades_schema_8, upgrade);
