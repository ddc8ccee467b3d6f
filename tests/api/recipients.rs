//! Recipients (issue 11, second slice): an application sends to any user by
//! id, email or its own external id (a new external id with an email
//! creates the user, once, however many first sends race), mints user
//! tokens for them, and those users can never log in with a password; a
//! user token still sends only to its own user.

use std::time::Duration;

use futures_util::future::join_all;
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, NOTIFICATION_FIELDS, TestApp, assert_bad_input_naming, error_code, error_message,
    unique_email,
};
use crate::smtp_sink::SmtpSink;

const WITHIN: Duration = Duration::from_secs(20);

/// A new application key, stored the way `herald api-key create` stores it.
pub(crate) async fn app_key(app: &TestApp) -> String {
    let key = herald::auth::api_key::generate();
    let db = Database::connect(&app.database_url).await.expect("connect");
    herald::storage::api_keys::insert(
        &db,
        "backend",
        &key.prefix,
        &key.hash,
        herald::storage::now(),
    )
    .await
    .expect("store the key");
    db.close().await.expect("close");
    key.secret
}

async fn send_to(app: &TestApp, token: &str, to: Value) -> Value {
    app.gql(
        &format!("mutation($to: RecipientInput) {{ sendNotification(input: {{ title: \"Invoice\", content: \"Due soon\", to: $to }}) {{ {NOTIFICATION_FIELDS} recipient {{ externalId }} }} }}"),
        json!({ "to": to }),
        Some(token),
    )
    .await
}

/// The recipient a successful send went to.
fn recipient(body: &Value) -> &Value {
    let r = &body["data"]["sendNotification"]["recipient"];
    assert!(r.is_object(), "the send failed: {body}");
    r
}

async fn issue(app: &TestApp, token: Option<&str>, args: Value) -> Value {
    app.gql(
        "mutation($u: ID, $x: String, $e: String) { issueUserToken(userId: $u, externalId: $x, email: $e) { token expiresAt user { id email externalId } } }",
        args,
        token,
    )
    .await
}

pub(crate) async fn count(db_url: &str, sql: &str) -> i64 {
    let db = Database::connect(db_url).await.expect("connect");
    let n = scalar(&db, sql).await;
    db.close().await.expect("close");
    n
}

pub(crate) async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .expect("a row")
        .try_get::<i64>("", "n")
        .expect("n")
}

/// Titles in the inbox `token` opens.
pub(crate) async fn inbox_ids(app: &TestApp, token: &str) -> Vec<String> {
    let body = app
        .gql(
            "{ inbox(first: 50) { edges { node { id } } } }",
            json!({}),
            Some(token),
        )
        .await;
    body["data"]["inbox"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no inbox: {body}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id").to_owned())
        .collect()
}

// ---- Sending by userId, email and externalId ----

async fn sends_to_each_kind(app: &TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let bob_email = unique_email("bob");
    let bob_token = app.token_for(&bob_email).await;
    let bob_id = app.me(Some(&bob_token)).await["data"]["me"]["id"]
        .as_str()
        .expect("bob's id")
        .to_owned();

    let by_id = send_to(app, &key, json!({ "userId": bob_id })).await;
    assert_eq!(recipient(&by_id)["id"], bob_id, "{by_id}");
    let by_email = send_to(app, &key, json!({ "email": bob_email.to_uppercase() })).await;
    assert_eq!(recipient(&by_email)["id"], bob_id, "{by_email}");

    let carol_email = unique_email("carol");
    let users_before = count(&app.database_url, "SELECT COUNT(*) AS n FROM users").await;
    let created = send_to(
        app,
        &key,
        json!({ "externalId": "crm-42", "email": carol_email }),
    )
    .await;
    let carol = recipient(&created).clone();
    assert_eq!(carol["externalId"], "crm-42");
    assert_eq!(carol["email"], carol_email);
    let again = send_to(app, &key, json!({ "externalId": "crm-42" })).await;
    assert_eq!(
        recipient(&again)["id"],
        carol["id"],
        "the same user again: {again}"
    );
    assert_eq!(
        count(&app.database_url, "SELECT COUNT(*) AS n FROM users").await,
        users_before + 1,
        "one user created"
    );

    // Each recipient sees theirs in the inbox, and gets them by email.
    let bobs = inbox_ids(app, &bob_token).await;
    for body in [&by_id, &by_email] {
        let id = body["data"]["sendNotification"]["id"].as_str().expect("id");
        assert!(bobs.iter().any(|b| b == id), "{id} in bob's inbox {bobs:?}");
        app.wait_for_status(&bob_token, id, "SENT", WITHIN).await;
    }
    let token =
        issue(app, Some(&key), json!({ "x": "crm-42" })).await["data"]["issueUserToken"]["token"]
            .as_str()
            .expect("carol's token")
            .to_owned();
    let carols = inbox_ids(app, &token).await;
    assert_eq!(carols.len(), 2, "{carols:?}");
    for id in &carols {
        app.wait_for_status(&token, id, "SENT", WITHIN).await;
    }
    let mail = sink.received();
    let to = |email: &str| {
        mail.iter()
            .filter(|m| m.rcpt_to == [email.to_owned()])
            .count()
    };
    assert_eq!(to(&bob_email), 2);
    assert_eq!(to(&carol_email), 2);
}

mod an_application_sends_by_user_id_email_and_external_id {
    use super::*;

    async fn run(backend: Backend) {
        if let Some((sink, app)) = SmtpSink::with_app(backend).await {
            sends_to_each_kind(&app, &sink).await;
        }
    }

    crate::on_backends!(run; sqlite => Sqlite, postgres => Postgres);
}

// ---- Bad recipients ----

async fn bad_recipients(app: &TestApp) {
    let key = app_key(app).await;
    let (_, bob) = app.account("bob").await;
    let users = count(&app.database_url, "SELECT COUNT(*) AS n FROM users").await;
    for (to, field) in [
        (json!({ "userId": "987654" }), "to.userId"),
        (json!({ "userId": "bob" }), "to.userId"),
        (json!({ "email": unique_email("nobody") }), "to.email"),
        (json!({ "externalId": "never-seen" }), "to.externalId"),
        (
            json!({ "externalId": "x".repeat(256), "email": unique_email("long") }),
            "to.externalId",
        ),
        (json!({}), "to"),
        (
            json!({ "userId": bob.to_string(), "email": unique_email("two") }),
            "to",
        ),
        (
            json!({ "userId": bob.to_string(), "externalId": "two" }),
            "to",
        ),
    ] {
        let body = send_to(app, &key, to.clone()).await;
        assert_bad_input_naming(&body, field, &to);
    }
    let body = app
        .gql(
            "mutation { sendNotification(input: { title: \"t\", content: \"c\" }) { id } }",
            json!({}),
            Some(&key),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "no to: {body}");
    assert_eq!(
        count(&app.database_url, "SELECT COUNT(*) AS n FROM users").await,
        users,
        "nobody was created"
    );
}

crate::both_backends!(
    unknown_or_ambiguous_recipients_are_bad_user_input_naming_the_field,
    bad_recipients
);

// ---- Concurrent first sends ----

async fn concurrent_first_sends(app: &TestApp) {
    let key = app_key(app).await;
    let email = unique_email("racer");
    let sends =
        (0..20).map(|_| send_to(app, &key, json!({ "externalId": "race-1", "email": email })));
    let bodies = join_all(sends).await;
    let ids: std::collections::HashSet<String> = bodies
        .iter()
        .map(|b| recipient(b)["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one recipient for all 20: {ids:?}");
    assert_eq!(
        count(
            &app.database_url,
            "SELECT COUNT(*) AS n FROM users WHERE external_id = 'race-1'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&app.database_url, "SELECT COUNT(*) AS n FROM notifications").await,
        20
    );
}

crate::both_backends!(
    twenty_concurrent_first_sends_to_a_new_external_id_create_one_user,
    concurrent_first_sends
);

// ---- A user token ----

async fn user_token_sends_to_itself_only(app: &TestApp) {
    let ann_email = unique_email("ann");
    let ann = app.token_for(&ann_email).await;
    let ann_id = app.me(Some(&ann)).await["data"]["me"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, bob) = app.account("bob").await;
    let bob_email = unique_email("bob-known");
    app.token_for(&bob_email).await;
    let users = count(&app.database_url, "SELECT COUNT(*) AS n FROM users").await;
    for to in [
        json!({ "userId": bob.to_string() }),
        json!({ "userId": "987654" }),
        json!({ "email": bob_email }),
        json!({ "externalId": "someone", "email": unique_email("someone") }),
    ] {
        let body = send_to(app, &ann, to.clone()).await;
        assert_eq!(error_code(&body), Some("FORBIDDEN"), "{to}: {body}");
    }
    assert_eq!(
        count(&app.database_url, "SELECT COUNT(*) AS n FROM users").await,
        users,
        "a user token creates nobody"
    );
    for to in [json!({ "userId": ann_id }), json!({ "email": ann_email })] {
        let body = send_to(app, &ann, to.clone()).await;
        assert_eq!(recipient(&body)["id"], ann_id, "{to}: {body}");
    }
    assert_eq!(inbox_ids(app, &ann).await.len(), 2);
    let body = issue(app, Some(&ann), json!({ "u": ann_id })).await;
    assert_eq!(
        error_code(&body),
        Some("FORBIDDEN"),
        "issueUserToken: {body}"
    );
    let body = issue(app, None, json!({ "u": ann_id })).await;
    assert_eq!(
        error_code(&body),
        Some("UNAUTHENTICATED"),
        "anonymous: {body}"
    );
}

crate::both_backends!(
    a_user_token_may_send_only_to_its_own_user,
    user_token_sends_to_itself_only
);

// ---- issueUserToken ----

async fn issued_tokens(app: &TestApp) {
    let key = app_key(app).await;
    let email = unique_email("dana");
    let body = issue(app, Some(&key), json!({ "x": "dana-1", "e": email })).await;
    let issued = &body["data"]["issueUserToken"];
    assert_eq!(issued["user"]["externalId"], "dana-1", "{body}");
    assert_eq!(issued["user"]["email"], email);
    let expires: chrono::DateTime<chrono::Utc> = issued["expiresAt"]
        .as_str()
        .expect("expiresAt")
        .parse()
        .expect("a time");
    assert!(expires > chrono::Utc::now() + chrono::Duration::minutes(5));
    let token = issued["token"].as_str().expect("token").to_owned();
    let dana = issued["user"]["id"].as_str().expect("id").to_owned();

    let me = app.me(Some(&token)).await;
    assert_eq!(me["data"]["me"]["id"], dana, "{me}");
    send_to(app, &key, json!({ "userId": dana })).await;
    assert_eq!(inbox_ids(app, &token).await.len(), 1);

    // By user id too, the same user.
    let body = issue(app, Some(&key), json!({ "u": dana })).await;
    assert_eq!(body["data"]["issueUserToken"]["user"]["id"], dana, "{body}");
    for (args, field) in [
        (json!({}), "userId, externalId"),
        (json!({ "u": dana, "x": "dana-1" }), "userId, externalId"),
        (json!({ "e": email }), "userId, externalId"),
        (json!({ "x": "unknown-1" }), "externalId"),
        (json!({ "u": "987654" }), "userId"),
    ] {
        let body = issue(app, Some(&key), args.clone()).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{args}: {body}");
        let message = error_message(&body).expect("message");
        assert!(
            message.starts_with(&format!("{field}:")),
            "{args}: {message}"
        );
    }

    let out = app
        .gql("mutation { logout }", json!({}), Some(&token))
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    let me = app.me(Some(&token)).await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "logged out: {me}");
}

crate::both_backends!(
    issue_user_token_signs_in_an_applications_user_until_logout,
    issued_tokens
);

// ---- No password, no login ----

async fn passwordless(app: &TestApp) {
    let key = app_key(app).await;
    let email = unique_email("nopass");
    send_to(app, &key, json!({ "externalId": "np-1", "email": email })).await;
    let unknown = app
        .login(&unique_email("nobody"), "whatever password")
        .await;
    let hasher = app.hasher.as_ref().expect("the API runs here");
    for password in ["whatever password", "", "x"] {
        let before = hasher.verifications();
        let body = app.login(&email, password).await;
        assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
        assert_eq!(
            body["errors"][0]["message"],
            unknown["errors"][0]["message"]
        );
        assert_eq!(
            hasher.verifications(),
            before + 1,
            "one argon2 check, as for an unknown email"
        );
    }
}

crate::both_backends!(
    a_user_an_application_created_can_never_log_in_with_a_password,
    passwordless
);

// ---- Migration 7 ----

/// Schema 6 with a user and a notification takes migration 7: both kept
/// (SQLite rebuilds `users` without cascading into notifications), the
/// user keeps their password, and external ids are unique.
async fn upgrade(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(6)).await.expect("schema 6");
    let ann = crate::inbox::old_user(&db, "ann@example.com").await;
    // As schema 6 stores it (today's insert writes later migrations' columns).
    crate::inbox::old_notification(&db, ann, chrono::Utc::now()).await;
    Migrator::up(&db, Some(1)).await.expect("migration 7");

    assert_eq!(
        scalar(&db, "SELECT COUNT(*) AS n FROM notifications").await,
        1
    );
    let user = herald::storage::users::find_by_id(&db, ann)
        .await
        .expect("find")
        .expect("ann is kept");
    assert_eq!(user.email, "ann@example.com");
    assert_eq!(user.password_hash.as_deref(), Some("x"));
    assert_eq!(user.external_id, None);

    let ext = herald::domain::ExternalId::parse("externalId", "e-1").expect("id");
    let email = herald::domain::Email::parse("e1@example.com").expect("email");
    let now = herald::storage::now();
    let first = herald::storage::users::upsert_external(&db, &ext, &email, now)
        .await
        .expect("created");
    let second = herald::storage::users::upsert_external(&db, &ext, &email, now)
        .await
        .expect("found");
    assert_eq!(first.id, second.id);
    assert!(first.password_hash.is_none());
    // Foreign keys still hold (and cascade) after the rebuild.
    db.execute_unprepared(&format!("DELETE FROM users WHERE id = {ann}"))
        .await
        .expect("delete");
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) AS n FROM notifications").await,
        0
    );
    db.close().await.expect("close");
}

crate::upgrade_tests!(migration_7_upgrades_schema_6, upgrade);
