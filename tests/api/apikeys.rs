//! API keys (issue 11, first slice): made with `herald api-key`, a request
//! with one acts as an application, which has no inbox; a revoked key stops
//! working on every instance within 2 s, however many requests are in
//! flight; `last_used_at` is written once a minute, not per request.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection};
use serde_json::{Value, json};

use crate::helpers::{Backend, PgDatabase, TestApp, error_code, error_message};
use crate::ws_client::{close_code, init_modern, next_json, send};

/// The `herald` binary on `database_url`, with nothing else from the
/// environment.
fn herald(database_url: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for var in [
        "JWT_SECRET",
        "HERALD_BIND",
        "HERALD_DATA_DIR",
        "LOG_FORMAT",
        "HERALD_NO_MIGRATE",
        "REDIS_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DATABASE_URL", database_url);
    cmd
}

/// Runs `herald api-key <args>`: (success, stdout, stderr).
async fn api_key(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = herald(database_url)
        .arg("api-key")
        .args(args)
        .output()
        .await
        .expect("herald runs");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `herald api-key create NAME`: the secret it printed, and the key's id.
pub(crate) async fn create(database_url: &str, name: &str) -> (String, i64) {
    let (ok, stdout, stderr) = api_key(database_url, &["create", name]).await;
    assert!(ok, "create fails: {stderr}");
    let secret = stdout.trim_end_matches('\n').to_owned();
    assert!(
        !secret.contains('\n') && secret.starts_with("hk_") && secret.len() == 46,
        "create prints the secret alone: {stdout:?}"
    );
    let db = Database::connect(database_url).await.expect("connect");
    let row = stored(&db, &secret).await.expect("the key is stored");
    db.close().await.expect("close");
    (secret, row.id)
}

/// The row of `secret`'s key, found by its hash.
async fn stored(db: &DatabaseConnection, secret: &str) -> Option<entity::api_key::Model> {
    herald::storage::api_keys::find_by_hash(db, &herald::auth::api_key::hash(secret))
        .await
        .expect("lookup")
}

async fn revoke(database_url: &str, id: i64) {
    let (ok, _, stderr) = api_key(database_url, &["revoke", &id.to_string()]).await;
    assert!(ok, "revoke fails: {stderr}");
}

async fn me(app: &TestApp, key: &str) -> Value {
    app.gql("{ me { id } }", json!({}), Some(key)).await
}

// ---- The commands ----

async fn commands(database_url: &str) {
    let (secret, id) = create(database_url, "billing backend").await;
    let db = Database::connect(database_url).await.expect("connect");
    let row = stored(&db, &secret).await.expect("stored");
    assert_eq!(row.secret_hash, herald::auth::api_key::hash(&secret));
    assert_eq!(row.prefix, secret[..11]);
    assert_ne!(row.secret_hash, secret, "the secret itself is not stored");
    assert!(row.last_used_at.is_none() && row.revoked_at.is_none());

    let (ok, list, _) = api_key(database_url, &["list"]).await;
    assert!(ok);
    assert!(list.starts_with("ID"), "a header first: {list}");
    let line = list
        .lines()
        .find(|l| l.contains("billing backend"))
        .unwrap_or_else(|| panic!("the key is listed: {list}"));
    assert!(line.starts_with(&id.to_string()), "{line}");
    assert!(line.contains(&row.prefix), "{line}");
    assert!(!list.contains(&secret), "list never shows a secret: {list}");

    let (ok, _, stderr) = api_key(database_url, &["revoke", "424242"]).await;
    assert!(!ok, "an unknown id fails");
    assert!(
        stderr.contains("no API key with id 424242"),
        "a clear error: {stderr}"
    );
    revoke(database_url, id).await;
    let row = stored(&db, &secret).await.expect("stored");
    assert!(row.revoked_at.is_some());
    let (_, list, _) = api_key(database_url, &["list"]).await;
    let line = list
        .lines()
        .find(|l| l.contains("billing backend"))
        .expect("still listed");
    assert!(
        line.trim_end().ends_with("UTC"),
        "shows when it was revoked: {line}"
    );
    db.close().await.expect("close");
}

#[tokio::test]
async fn api_key_commands_create_list_and_revoke_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("herald.db").display()
    );
    commands(&url).await;
}

#[tokio::test]
async fn api_key_commands_create_list_and_revoke_on_postgres() {
    if let Some(db) = PgDatabase::create().await {
        commands(&db.url).await;
    }
}

// ---- An application has no inbox ----

/// Every operation that reads or changes the caller's own inbox or tokens.
const USER_ONLY: &[&str] = &[
    "{ me { id } }",
    "{ notifications { totalCount } }",
    "{ inbox { __typename } }",
    "{ inboxCounts { __typename } }",
    "{ inboxChanges(after: 0) { __typename } }",
    "mutation { markNotifications(ids: [\"1\"], action: READ) { __typename } }",
    "mutation { markAllNotifications(action: READ, upTo: 1) { __typename } }",
    "mutation { logout }",
    "mutation { logoutEverywhere }",
];

/// The first error code of subscription `id`'s answer (an `error`, or a
/// `next` carrying errors and then `complete`).
async fn subscription_error(
    socket: &mut crate::ws_client::Socket,
    id: &str,
    query: &str,
) -> String {
    send(
        socket,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
    let msg = next_json(socket).await;
    assert_eq!(msg["id"], id, "{msg}");
    let code = match msg["type"].as_str() {
        Some("error") => &msg["payload"][0]["extensions"]["code"],
        Some("next") => {
            // A `next` with the errors, then the subscription completes.
            let done = next_json(socket).await;
            assert_eq!(
                (done["id"].as_str(), done["type"].as_str()),
                (Some(id), Some("complete")),
                "{done}"
            );
            &msg["payload"]["errors"][0]["extensions"]["code"]
        }
        _ => panic!("an error: {msg}"),
    };
    code.as_str().unwrap_or_default().to_owned()
}

async fn no_inbox(app: &TestApp) {
    let (key, _) = create(&app.database_url, "web").await;
    for query in USER_ONLY {
        let body = app.gql(query, json!({}), Some(&key)).await;
        assert_eq!(error_code(&body), Some("FORBIDDEN"), "{query}: {body}");
    }
    let send = app
        .gql(
            "mutation { sendNotification(input: { title: \"t\", content: \"c\" }) { id } }",
            json!({}),
            Some(&key),
        )
        .await;
    assert_eq!(error_code(&send), Some("BAD_USER_INPUT"), "{send}");
    assert_eq!(
        error_message(&send),
        Some("an application must name the recipient (to)")
    );

    // Over the websocket: accepted, and each subscription refused.
    let mut socket = init_modern(app, "/graphql/ws", &key).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    for (id, query) in [
        ("1", "subscription { inboxEvents { __typename } }"),
        (
            "2",
            "subscription { notificationStatusChanged { __typename } }",
        ),
    ] {
        assert_eq!(
            subscription_error(&mut socket, id, query).await,
            "FORBIDDEN"
        );
    }

    // A key that is not one: the same answer as a bad token.
    let bad_token = me(app, "not-a-token").await;
    assert_eq!(error_code(&bad_token), Some("UNAUTHENTICATED"));
    for garbage in [
        "hk_",
        "hk_nope",
        &format!("{key}x"),
        &key.replace("hk_", "hk_A"),
    ] {
        let body = me(app, garbage).await;
        assert_eq!(
            error_code(&body),
            Some("UNAUTHENTICATED"),
            "{garbage}: {body}"
        );
        assert_eq!(error_message(&body), error_message(&bad_token), "{garbage}");
        let mut socket = init_modern(app, "/graphql/ws", garbage).await;
        assert_eq!(
            close_code(&mut socket, Duration::from_secs(5)).await,
            Some(4403)
        );
    }
}

crate::both_backends!(
    an_application_has_no_inbox_and_a_wrong_key_is_unauthenticated,
    no_inbox
);

// ---- Revocation ----

/// How long a revocation may take to reach every instance.
const WITHIN: Duration = Duration::from_secs(2);

/// `n` requests with `key` at once, spread over `apps`: each one's error code.
async fn burst(apps: &[&TestApp], key: &str, n: usize) -> Vec<Option<String>> {
    let requests = (0..n).map(|i| {
        let app = apps[i % apps.len()];
        async move { error_code(&me(app, key).await).map(str::to_owned) }
    });
    join_all(requests).await
}

/// Revokes a key with the CLI while 30 requests with it run on every
/// instance (two with Postgres and Redis, the embedded server's SQLite
/// file otherwise), and while a websocket with it is open: 2 s after the
/// command returns, no request with it succeeds, and the socket closed.
async fn revocation(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let sibling = match backend {
        Backend::Postgres => Some(app.spawn_sibling(|_| {}).await),
        _ => None,
    };
    let apps: Vec<&TestApp> = std::iter::once(&app).chain(sibling.as_ref()).collect();
    let (key, id) = create(&app.database_url, "web").await;
    let (other, _) = create(&app.database_url, "mobile").await;
    // Known to every instance: accepted (an application, hence FORBIDDEN).
    for code in burst(&apps, &key, 30).await {
        assert_eq!(code.as_deref(), Some("FORBIDDEN"));
    }
    let mut socket = init_modern(apps[apps.len() - 1], "/graphql/ws", &key).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");

    let (during, ()) = tokio::join!(burst(&apps, &key, 30), revoke(&app.database_url, id));
    let revoked = Instant::now();
    for code in during {
        let code = code.as_deref();
        assert!(
            matches!(code, Some("FORBIDDEN" | "UNAUTHENTICATED")),
            "{code:?}"
        );
    }
    // Wait for the first instance that notices, then give every one the
    // rest of the 2 s.
    loop {
        let codes = burst(&apps, &key, apps.len()).await;
        if codes
            .iter()
            .all(|c| c.as_deref() == Some("UNAUTHENTICATED"))
        {
            break;
        }
        assert!(
            revoked.elapsed() < WITHIN,
            "still accepted after 2 s: {codes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let noticed = revoked.elapsed();
    if let Some(rest) = WITHIN.checked_sub(revoked.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let after = burst(&apps, &key, 30).await;
    assert!(
        after
            .iter()
            .all(|c| c.as_deref() == Some("UNAUTHENTICATED")),
        "after 2 s none succeeds: {after:?}"
    );
    let body = me(&app, &key).await;
    assert_eq!(error_message(&body), Some("invalid token"), "{body}");
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(5)).await,
        Some(4403),
        "the key's websocket closes"
    );
    // Another key is untouched.
    for code in burst(&apps, &other, 4).await {
        assert_eq!(code.as_deref(), Some("FORBIDDEN"));
    }
    eprintln!("revocation noticed by every instance after {noticed:?}");
}

crate::on_backends!(revocation;
    a_key_revoked_by_the_cli_stops_working_on_the_embedded_server => Sqlite,
    a_revoked_key_stops_working_on_every_instance_within_2_s => Postgres,
);

// ---- last_used_at ----

async fn last_used(app: &TestApp) {
    let (key, _) = create(&app.database_url, "web").await;
    let db = Database::connect(&app.database_url).await.expect("connect");
    assert!(stored(&db, &key).await.expect("row").last_used_at.is_none());
    burst(&[app], &key, 10).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        if let Some(at) = stored(&db, &key).await.expect("row").last_used_at {
            break at;
        }
        assert!(Instant::now() < deadline, "last_used_at is set");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    burst(&[app], &key, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored(&db, &key).await.expect("row").last_used_at,
        Some(first),
        "not written again within the minute"
    );
    db.close().await.expect("close");
}

crate::both_backends!(last_used_at_is_set_once_not_per_request, last_used);

// ---- Migration 6 ----

/// A database of schema 5 with a user in it takes migration 6: the user is
/// kept, keys can be stored and found by hash, and a hash is unique.
async fn upgrade(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(5)).await.expect("schema 5");
    crate::inbox::old_user(&db, "ann@example.com").await;
    Migrator::up(&db, None).await.expect("upgrade");
    let key = herald::auth::api_key::generate();
    let now = herald::storage::now();
    herald::storage::api_keys::insert(&db, "web", &key.prefix, &key.hash, now)
        .await
        .expect("insert");
    assert_eq!(
        stored(&db, &key.secret).await.map(|k| k.name).as_deref(),
        Some("web")
    );
    assert!(
        herald::storage::api_keys::insert(&db, "again", &key.prefix, &key.hash, now)
            .await
            .is_err(),
        "a hash is unique"
    );
    let users = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM users",
        ))
        .await
        .expect("count")
        .expect("a row");
    assert_eq!(users.try_get::<i64>("", "n").expect("n"), 1);
    db.close().await.expect("close");
}

crate::upgrade_tests!(migration_6_upgrades_schema_5, upgrade);
