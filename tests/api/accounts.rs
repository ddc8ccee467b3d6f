//! register, login and me, on SQLite and Postgres.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{PASSWORD, TestApp, error_code, error_message, unique_email};

both_backends!(register_returns_a_token_and_the_stored_user, register_ok);
async fn register_ok(app: &TestApp) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let body = app
        .register(&format!("  Ada+Herald-{tag}@Example.COM "), PASSWORD)
        .await;
    let payload = &body["data"]["register"];
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(
        payload["user"]["email"],
        format!("ada+herald-{tag}@example.com")
    );
    assert!(
        payload["user"]["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let created = payload["user"]["createdAt"].as_str().expect("createdAt");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
    // The token works at once.
    let token = payload["token"].as_str().expect("token");
    let me = app.me(Some(token)).await;
    assert_eq!(me["data"]["me"]["id"], payload["user"]["id"]);
}

both_backends!(register_rejects_a_duplicate_email_with_conflict, duplicate);
async fn duplicate(app: &TestApp) {
    let email = unique_email("dup");
    app.token_for(&email).await;
    let again = app
        .register(&email.to_uppercase(), "another password")
        .await;
    assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");
    assert!(again["data"].is_null());
    // The first account still logs in with its own password.
    let login = app.login(&email, PASSWORD).await;
    assert!(login["data"]["login"]["token"].is_string(), "{login}");
}

both_backends!(
    concurrent_registrations_of_one_email_have_one_winner,
    concurrent
);
async fn concurrent(app: &TestApp) {
    let email = unique_email("race");
    let attempts = (0..6).map(|i| {
        let email = email.clone();
        async move { app.register(&email, &format!("password number {i}")).await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let wins = results
        .iter()
        .filter(|b| b["data"]["register"].is_object())
        .count();
    let conflicts = results
        .iter()
        .filter(|b| error_code(b) == Some("CONFLICT"))
        .count();
    assert_eq!((wins, conflicts), (1, 5), "{results:?}");
}

both_backends!(
    register_rejects_invalid_input_with_bad_user_input,
    invalid_input
);
async fn invalid_input(app: &TestApp) {
    let cases = [
        ("not-an-email", PASSWORD, "email"),
        ("", PASSWORD, "email"),
        ("ada@localhost", PASSWORD, "email"),
        (&*unique_email("short"), "seven!!", "password"),
        (&*unique_email("long"), &*"x".repeat(129), "password"),
    ];
    for (email, password, field) in cases {
        let body = app.register(email, password).await;
        assert_eq!(
            error_code(&body),
            Some("BAD_USER_INPUT"),
            "{email:?}: {body}"
        );
        let message = error_message(&body).unwrap_or_default();
        assert!(message.contains(field), "{message:?} should name {field}");
    }
    // The bounds themselves are fine, and nothing is truncated: a 128-character
    // password works, and the same password minus its last character does not.
    let email = unique_email("bounds");
    let long = "y".repeat(127) + "z";
    assert!(app.register(&email, &long).await["data"]["register"].is_object());
    assert!(app.login(&email, &long).await["data"]["login"].is_object());
    let wrong = app.login(&email, &"y".repeat(127)).await;
    assert_eq!(error_code(&wrong), Some("UNAUTHENTICATED"));
    let eight = unique_email("eight");
    assert!(app.register(&eight, "12345678").await["data"]["register"].is_object());
}

both_backends!(login_returns_a_working_token, login_ok);
async fn login_ok(app: &TestApp) {
    let email = unique_email("login");
    app.token_for(&email).await;
    let body = app
        .login(&format!(" {} ", email.to_uppercase()), PASSWORD)
        .await;
    let token = body["data"]["login"]["token"].as_str().expect("token");
    assert_eq!(body["data"]["login"]["user"]["email"], email);
    let me = app.me(Some(token)).await;
    assert_eq!(me["data"]["me"]["email"], email);
}

both_backends!(
    login_fails_alike_for_a_wrong_password_and_an_unknown_email,
    login_failures
);
async fn login_failures(app: &TestApp) {
    let email = unique_email("known");
    app.token_for(&email).await;
    let wrong = app.login(&email, "not the password").await;
    let unknown = app.login(&unique_email("nobody"), "not the password").await;
    assert_eq!(error_code(&wrong), Some("UNAUTHENTICATED"), "{wrong}");
    assert_eq!(error_code(&unknown), Some("UNAUTHENTICATED"), "{unknown}");
    assert_eq!(
        wrong["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
    assert!(wrong["data"].is_null() && unknown["data"].is_null());

    // Unknown emails are checked against a dummy hash, so they cost the
    // same argon2 work as a wrong password: count the verifications.
    let hasher = app.hasher.as_ref().expect("the API runs here");
    let before = hasher.verifications();
    app.login(&unique_email("nobody"), "not the password").await;
    assert_eq!(
        hasher.verifications(),
        before + 1,
        "an unknown email skipped the hash"
    );
    app.login(&email, "not the password").await;
    assert_eq!(hasher.verifications(), before + 2);
}

both_backends!(me_requires_a_token, me_anonymous);
async fn me_anonymous(app: &TestApp) {
    let body = app.me(None).await;
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
    assert!(body["data"].is_null());
}

both_backends!(
    register_stays_public_with_a_bad_authorization_header,
    public
);
async fn public(app: &TestApp) {
    let body = app
        .gql(
            "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { token } }",
            json!({ "e": unique_email("public"), "p": PASSWORD }),
            Some("garbage"),
        )
        .await;
    assert!(body["data"]["register"]["token"].is_string(), "{body}");
}

both_backends!(
    only_the_email_index_makes_a_duplicate_email,
    other_unique_violations
);
/// A unique violation of another index (one a later migration might add,
/// here on `created_at`) is a database error, not "email taken".
async fn other_unique_violations(app: &TestApp) {
    use herald::{domain::Email, storage::StorageError, storage::users};
    use sea_orm::ConnectionTrait as _;
    let db = sea_orm::Database::connect(&app.database_url)
        .await
        .expect("connect");
    db.execute_unprepared("CREATE UNIQUE INDEX users_created_at_key ON users (created_at)")
        .await
        .expect("index");
    let now = herald::storage::now();
    let first = Email::parse(&unique_email("first")).expect("email");
    let second = Email::parse(&unique_email("second")).expect("email");
    users::insert(&db, &first, "hash".into(), now)
        .await
        .expect("the first insert");
    let same_email = users::insert(
        &db,
        &first,
        "hash".into(),
        now + chrono::Duration::seconds(1),
    )
    .await;
    assert!(
        matches!(same_email, Err(StorageError::EmailTaken)),
        "{same_email:?}"
    );
    let same_moment = users::insert(&db, &second, "hash".into(), now).await;
    assert!(
        matches!(&same_moment, Err(StorageError::Db(e)) if e.to_string().contains("created_at")),
        "{same_moment:?}"
    );
}
