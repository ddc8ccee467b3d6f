//! Email preferences (issue 12): a user turns email off for everything or
//! per category; the inbox always receives. Turned off, a notification
//! moves PENDING -> SKIPPED (one DeliveryStatusChanged event) with no mail.
//! Which setting holds: the category's own, else the default, else on; a
//! critical category is always mailed. The worker decides when it takes
//! the notification, from a cache the change invalidates on every instance.

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::delivery::delivery_test;
use crate::helpers::{Backend, TestApp, assert_bad_input_naming, error_code};
use crate::recipients::{app_key, inbox_ids};
use crate::scheduling::{at, mails_to, moves, sent_ok, status, user, wait_for};
use crate::smtp_sink::SmtpSink;

const PREFS: &str = "email categories { category email }";

async fn set(app: &TestApp, token: &str, category: Option<&str>, email: Option<bool>) -> Value {
    app.gql(
        &format!(
            "mutation($c: String, $e: Boolean) {{ setNotificationPreference(category: $c, email: $e) {{ {PREFS} }} }}"
        ),
        json!({ "c": category, "e": email }),
        Some(token),
    )
    .await
}

async fn set_ok(app: &TestApp, token: &str, category: Option<&str>, email: Option<bool>) -> Value {
    let body = set(app, token, category, email).await;
    let prefs = body["data"]["setNotificationPreference"].clone();
    assert!(prefs.is_object(), "the change failed: {body}");
    prefs
}

async fn prefs(app: &TestApp, token: &str) -> Value {
    app.gql(
        &format!("{{ notificationPreferences {{ {PREFS} }} }}"),
        json!({}),
        Some(token),
    )
    .await
}

/// An application's send of `category` (none: no category) to `to`; its id.
async fn send(app: &TestApp, key: &str, to: &str, category: Option<&str>, extra: Value) -> String {
    let mut input = json!({});
    if let Some(category) = category {
        input["category"] = json!(category);
    }
    if let (Some(input), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
        input.extend(extra.clone());
    }
    sent_ok(app, key, Some(to), input).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// `security` is a critical category on every test server here.
fn critical(c: &mut herald::config::Config) {
    if let Some(w) = c.worker.as_mut() {
        w.critical_categories = vec!["security".to_owned()];
    }
}

delivery_test!(
    email_off_is_skipped_kept_in_the_inbox_and_not_mailed,
    default_off,
    critical
);
async fn default_off(app: &TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, user_id) = user(app, "quiet").await;
    assert_eq!(
        prefs(app, &token).await["data"]["notificationPreferences"],
        json!({ "email": true, "categories": [] }),
        "on until turned off"
    );
    // Mailed while on (the worker has the preferences cached now).
    let first = send(app, &key, &user_id, Some("news"), json!({})).await;
    wait_for(app, &token, &first, "SENT").await;
    assert_eq!(
        set_ok(app, &token, None, Some(false)).await,
        json!({ "email": false, "categories": [] })
    );
    let skipped = send(app, &key, &user_id, Some("news"), json!({})).await;
    let uncategorised = send(app, &key, &user_id, None, json!({})).await;
    wait_for(app, &token, &skipped, "SKIPPED").await;
    wait_for(app, &token, &uncategorised, "SKIPPED").await;
    assert_eq!(
        moves(app, &token, &skipped).await,
        ["Created(PENDING)", "PENDING->SKIPPED"]
    );
    let inbox = inbox_ids(app, &token).await;
    assert!(
        inbox.contains(&skipped) && inbox.contains(&uncategorised),
        "{inbox:?}"
    );
    // A critical category is mailed all the same; once it is, nothing else
    // was (the worker takes them in order).
    set_ok(app, &token, Some("security"), Some(false)).await;
    let critical = send(app, &key, &user_id, Some("security"), json!({})).await;
    wait_for(app, &token, &critical, "SENT").await;
    assert_eq!(mails_to(sink, &email), 2, "the first and the critical one");
    assert_eq!(status(app, &token, &skipped).await, "SKIPPED", "final");
}

delivery_test!(
    a_category_setting_holds_over_the_default,
    category_over_default,
    critical
);
async fn category_over_default(app: &TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, user_id) = user(app, "picky").await;
    // Default on, news off.
    set_ok(app, &token, Some("news"), Some(false)).await;
    let news = send(app, &key, &user_id, Some("news"), json!({})).await;
    let alerts = send(app, &key, &user_id, Some("alerts"), json!({})).await;
    wait_for(app, &token, &news, "SKIPPED").await;
    wait_for(app, &token, &alerts, "SENT").await;
    assert_eq!(mails_to(sink, &email), 1);
    // Default off, news on.
    assert_eq!(
        set_ok(app, &token, None, Some(false)).await,
        json!({ "email": false, "categories": [{ "category": "news", "email": false }] })
    );
    set_ok(app, &token, Some("news"), Some(true)).await;
    let news = send(app, &key, &user_id, Some("news"), json!({})).await;
    let alerts = send(app, &key, &user_id, Some("alerts"), json!({})).await;
    wait_for(app, &token, &news, "SENT").await;
    wait_for(app, &token, &alerts, "SKIPPED").await;
    assert_eq!(mails_to(sink, &email), 2);
    // Dropping news's own setting: the default holds again; dropping one
    // that is not there changes nothing.
    assert_eq!(
        set_ok(app, &token, Some("news"), None).await,
        json!({ "email": false, "categories": [] })
    );
    assert_eq!(
        set_ok(app, &token, Some("never-set"), None).await,
        json!({ "email": false, "categories": [] })
    );
    let news = send(app, &key, &user_id, Some("news"), json!({})).await;
    wait_for(app, &token, &news, "SKIPPED").await;
    assert_eq!(
        prefs(app, &token).await["data"]["notificationPreferences"],
        json!({ "email": false, "categories": [] })
    );
}

delivery_test!(
    a_change_applies_to_what_is_queued_and_not_yet_taken,
    change_while_queued,
    critical
);
async fn change_while_queued(app: &TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, user_id) = user(app, "changed").await;
    // Sent with email on, due in two seconds; turned off meanwhile.
    let later = send(
        app,
        &key,
        &user_id,
        Some("news"),
        json!({ "sendAt": at(2.0) }),
    )
    .await;
    assert_eq!(status(app, &token, &later).await, "SCHEDULED");
    set_ok(app, &token, Some("news"), Some(false)).await;
    wait_for(app, &token, &later, "SKIPPED").await;
    assert_eq!(
        moves(app, &token, &later).await,
        [
            "Created(SCHEDULED)",
            "SCHEDULED->PENDING",
            "PENDING->SKIPPED"
        ]
    );
    assert_eq!(mails_to(sink, &email), 0);
}

/// Services mode: instance A (no worker) takes the change, instance B's
/// worker (which cached the old setting) skips the next delivery.
async fn across_instances(backend: Backend) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let Some(a) = TestApp::spawn_with(backend, |c| c.worker = None).await else {
        return;
    };
    let b = a
        .spawn_sibling(|c| c.mail.smtp_url = Some(SecretString::from(url)))
        .await;
    let key = app_key(&a).await;
    let (email, token, user_id) = user(&a, "sibling").await;
    let first = send(&a, &key, &user_id, None, json!({})).await;
    wait_for(&a, &token, &first, "SENT").await;
    set_ok(&a, &token, None, Some(false)).await;
    let second = send(&a, &key, &user_id, None, json!({})).await;
    wait_for(&a, &token, &second, "SKIPPED").await;
    assert_eq!(mails_to(&sink, &email), 1);
    drop(b);
}
crate::on_backends!(across_instances; a_change_on_one_instance_reaches_another_instances_worker => Postgres);

async fn refused(app: &TestApp) {
    let key = app_key(app).await;
    let (_, token, _) = user(app, "input").await;
    let body = app
        .gql(
            "{ notificationPreferences { email } }",
            json!({}),
            Some(&key),
        )
        .await;
    assert_eq!(error_code(&body), Some("FORBIDDEN"), "{body}");
    let body = set(app, &key, None, Some(false)).await;
    assert_eq!(error_code(&body), Some("FORBIDDEN"), "{body}");
    for bad in ["News", "", "a b", &"x".repeat(65), "-news"] {
        let body = set(app, &token, Some(bad), Some(false)).await;
        assert_bad_input_naming(&body, "category", &bad);
        let body = set(app, &token, Some(bad), None).await;
        assert_bad_input_naming(&body, "category", &bad);
    }
    let body = set(app, &token, None, None).await;
    assert_bad_input_naming(&body, "email", &"null/null");
    assert_eq!(
        prefs(app, &token).await["data"]["notificationPreferences"],
        json!({ "email": true, "categories": [] }),
        "nothing changed"
    );
}
crate::both_backends!(an_api_key_and_bad_input_are_refused, refused);
