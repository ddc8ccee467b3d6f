//! The inbox (issue 10): sequence numbers, read state, exact counts, cursor
//! pages and the change log, on SQLite and on Postgres.

use chrono::{DateTime, Duration, Utc};
use herald::domain::{Content, Title};
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{
    ConnectionTrait as _, Database, DatabaseConnection, EntityTrait as _, QueryOrder as _,
    sea_query::{Alias, Query},
};

use crate::helpers::PgDatabase;

// ---- Migration from the previous schema ----

/// The migrations before the inbox.
const BEFORE_INBOX: u32 = 3;

async fn insert_old(
    db: &DatabaseConnection,
    table: &str,
    columns: &[&str],
    values: Vec<sea_orm::Value>,
) -> i64 {
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new(table))
        .columns(columns.iter().map(|c| Alias::new(*c)))
        .values_panic(values.into_iter().map(Into::into))
        .returning_col(Alias::new("id"));
    let statement = db.get_database_backend().build(&insert);
    let row = db
        .query_one_raw(statement)
        .await
        .expect("insert")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("id")
}

async fn old_user(db: &DatabaseConnection, email: &str) -> i64 {
    insert_old(
        db,
        "users",
        &["email", "password_hash", "created_at"],
        vec![email.into(), "x".into(), Utc::now().into()],
    )
    .await
}

async fn old_notification(db: &DatabaseConnection, user_id: i64, created_at: DateTime<Utc>) -> i64 {
    insert_old(
        db,
        "notifications",
        &[
            "user_id",
            "title",
            "content",
            "status",
            "attempts",
            "created_at",
            "updated_at",
        ],
        vec![
            user_id.into(),
            "t".into(),
            "c".into(),
            "SENT".into(),
            1.into(),
            created_at.into(),
            created_at.into(),
        ],
    )
    .await
}

/// Upgrades a database populated by the previous schema in place.
async fn upgrade_in_place(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(BEFORE_INBOX))
        .await
        .expect("previous schema");
    let t0 = Utc::now() - Duration::hours(1);
    let ann = old_user(&db, "ann@example.com").await;
    let bob = old_user(&db, "bob@example.com").await;
    let cid = old_user(&db, "cid@example.com").await;
    // Inserted out of creation order: seqs follow creation.
    let ann_third = old_notification(&db, ann, t0 + Duration::seconds(2)).await;
    let ann_first = old_notification(&db, ann, t0).await;
    let bob_first = old_notification(&db, bob, t0).await;
    let ann_second = old_notification(&db, ann, t0 + Duration::seconds(1)).await;
    let bob_second = old_notification(&db, bob, t0 + Duration::seconds(5)).await;

    Migrator::up(&db, None).await.expect("upgrade");

    let rows = entity::notification::Entity::find()
        .order_by_asc(entity::notification::Column::Id)
        .all(&db)
        .await
        .expect("rows");
    let seq_of = |id: i64| rows.iter().find(|r| r.id == id).map(|r| r.seq);
    assert_eq!(seq_of(ann_first), Some(1));
    assert_eq!(seq_of(ann_second), Some(2));
    assert_eq!(seq_of(ann_third), Some(3));
    assert_eq!(seq_of(bob_first), Some(1));
    assert_eq!(seq_of(bob_second), Some(2));
    assert!(
        rows.iter()
            .all(|r| r.seen_at.is_none() && r.read_at.is_none() && r.archived_at.is_none()),
        "existing rows are unseen and unread"
    );
    let counters = entity::inbox_counter::Entity::find()
        .order_by_asc(entity::inbox_counter::Column::UserId)
        .all(&db)
        .await
        .expect("counters");
    let counter = |user: i64| {
        counters
            .iter()
            .find(|c| c.user_id == user)
            .map(|c| (c.last_seq, c.total, c.unread, c.unseen))
    };
    assert_eq!(counter(ann), Some((3, 3, 3, 3)));
    assert_eq!(counter(bob), Some((2, 2, 2, 2)));
    assert_eq!(counter(cid), None, "no notifications, no counter row yet");

    // The next notification continues each user's sequence.
    let title = Title::parse("after").expect("title");
    let content = Content::parse("the upgrade".to_owned()).expect("content");
    let (row, event) =
        herald::storage::notifications::insert(&db, ann, &title, &content, herald::storage::now())
            .await
            .expect("insert");
    assert_eq!((row.seq, event.seq), (4, 4));
    assert_eq!(
        (event.counts.total, event.counts.unread, event.counts.unseen),
        (4, 4, 4)
    );
    let (row, _) =
        herald::storage::notifications::insert(&db, cid, &title, &content, herald::storage::now())
            .await
            .expect("insert");
    assert_eq!(row.seq, 1);
    db.close().await.expect("close");
}

#[tokio::test]
async fn migration_upgrades_a_populated_sqlite_database_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    upgrade_in_place(&url).await;
}

#[tokio::test]
async fn migration_upgrades_a_populated_postgres_database_in_place() {
    if let Some(db) = PgDatabase::create_empty().await {
        upgrade_in_place(&db.url).await;
    }
}
