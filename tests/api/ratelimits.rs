//! Rate limits: login failures per account and per address, registrations
//! per address, sends per user; shared across instances through Redis.

use std::time::Duration;

use herald::ratelimit::{Bucket, RateLimits, Window};
use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, TestApp, error_code, unique_email, unlimited};

fn limits(tweak: impl FnOnce(&mut RateLimits)) -> impl FnOnce(&mut herald::config::Config) {
    move |c| {
        c.worker = None;
        let mut limits = unlimited();
        tweak(&mut limits);
        if let Some(http) = c.http.as_mut() {
            http.rate_limits = limits;
        }
    }
}

fn window(limit: u64) -> Window {
    Window {
        limit,
        window: Duration::from_secs(15 * 60),
    }
}

fn assert_limited(body: &Value) {
    assert_eq!(error_code(body), Some("RATE_LIMITED"), "{body}");
    let retry = body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or(0);
    assert!(retry > 0, "retryAfter must be positive: {body}");
}

async fn spawn(backend: Backend, tweak: impl FnOnce(&mut RateLimits)) -> Option<TestApp> {
    TestApp::spawn_with(backend, limits(tweak)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_11th_failed_login_is_limited_for_known_and_unknown_emails_alike() {
    let app = spawn(Backend::Sqlite, |l| {
        l.login_failures_per_account = window(10)
    })
    .await
    .expect("sqlite");
    let known = unique_email("known");
    app.token_for(&known).await;
    let unknown = unique_email("unknown");
    for email in [&known, &unknown] {
        for i in 0..10 {
            let body = app.login(email, "wrong password").await;
            assert_eq!(
                error_code(&body),
                Some("UNAUTHENTICATED"),
                "failure {i}: {body}"
            );
        }
        let limited = app.login(email, "wrong password").await;
        assert_limited(&limited);
    }
    // The same answer for both: nothing tells which email exists.
    let a = app.login(&known, "wrong password").await;
    let b = app.login(&unknown, "wrong password").await;
    assert_limited(&a);
    assert_limited(&b);
    let text = |v: &Value| {
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .split(" retry")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(text(&a), text(&b));
    // Even the right password waits out the window.
    assert_limited(&app.login(&known, PASSWORD).await);
    // Another account from the same address is unaffected.
    let other = unique_email("other");
    app.token_for(&other).await;
    assert!(app.login(&other, PASSWORD).await["data"]["login"]["token"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_login_does_not_count() {
    let app = spawn(Backend::Sqlite, |l| {
        l.login_failures_per_account = window(3)
    })
    .await
    .expect("sqlite");
    let email = unique_email("fine");
    app.token_for(&email).await;
    for _ in 0..6 {
        assert!(app.login(&email, PASSWORD).await["data"]["login"]["token"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_address_are_limited_across_accounts() {
    let app = spawn(Backend::Sqlite, |l| l.login_failures_per_ip = window(5))
        .await
        .expect("sqlite");
    for i in 0..5 {
        let body = app
            .login(&unique_email(&format!("spray{i}")), "wrong password")
            .await;
        assert_eq!(error_code(&body), Some("UNAUTHENTICATED"));
    }
    assert_limited(
        &app.login(&unique_email("spray-last"), "wrong password")
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_per_address_are_limited() {
    let app = spawn(Backend::Sqlite, |l| {
        l.registrations_per_ip = Window {
            limit: 3,
            window: Duration::from_secs(3600),
        };
    })
    .await
    .expect("sqlite");
    for i in 0..3 {
        assert!(
            app.register(&unique_email(&format!("r{i}")), PASSWORD)
                .await["data"]["register"]
                .is_object()
        );
    }
    assert_limited(&app.register(&unique_email("r-last"), PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_allow_a_burst_then_refuse_sqlite() {
    if let Some(app) = spawn(Backend::Sqlite, |l| {
        l.sends_per_user = Bucket {
            // One token every 5 s: the 20 sends of the burst finish well
            // within one, even on a busy machine (at 60 a minute a loaded
            // run took over a second and got a token back).
            per_minute: 12,
            burst: 20,
        }
    })
    .await
    {
        burst(&app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_allow_a_burst_then_refuse_postgres() {
    if let Some(app) = spawn(Backend::Postgres, |l| {
        l.sends_per_user = Bucket {
            // One token every 5 s: the 20 sends of the burst finish well
            // within one, even on a busy machine (at 60 a minute a loaded
            // run took over a second and got a token back).
            per_minute: 12,
            burst: 20,
        }
    })
    .await
    {
        burst(&app).await;
    }
}

async fn burst(app: &TestApp) {
    let token = app.token_for(&unique_email("burst")).await;
    for i in 0..20 {
        let body = app.send(&token, &format!("n{i}"), "body").await;
        assert!(
            body["data"]["sendNotification"]["id"].is_string(),
            "send {i}: {body}"
        );
    }
    assert_limited(&app.send(&token, "one too many", "body").await);
    // Five seconds later one token is back (12 per minute).
    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert!(
        app.send(&token, "after a pause", "body").await["data"]["sendNotification"]["id"]
            .is_string()
    );
    // Another user has a bucket of their own.
    let other = app.token_for(&unique_email("other-sender")).await;
    assert!(app.send(&other, "mine", "body").await["data"]["sendNotification"]["id"].is_string());
}

/// Two instances on one Redis count one account's failures together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_login_count_through_redis() {
    let Some(first) = spawn(Backend::Postgres, |l| {
        l.login_failures_per_account = window(4)
    })
    .await
    else {
        return;
    };
    let second = first
        .spawn_sibling(limits(|l| l.login_failures_per_account = window(4)))
        .await;
    let email = unique_email("shared");
    first.token_for(&email).await;
    for app in [&first, &second, &first, &second] {
        assert_eq!(
            error_code(&app.login(&email, "wrong password").await),
            Some("UNAUTHENTICATED")
        );
    }
    assert_limited(&first.login(&email, "wrong password").await);
    assert_limited(&second.login(&email, "wrong password").await);
}

/// A rate above one token per millisecond still works against Redis (the
/// token interval used to round down to zero, which Redis refuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_very_high_send_rate_is_accepted_by_redis() {
    let Some(app) = spawn(Backend::Postgres, |l| {
        l.sends_per_user = Bucket {
            per_minute: 100_000_000,
            burst: 10_000_000,
        };
    })
    .await
    else {
        return;
    };
    let token = app.token_for(&unique_email("fast")).await;
    for i in 0..5 {
        let body = app.send(&token, &format!("fast {i}"), "body").await;
        assert!(body["data"]["sendNotification"]["id"].is_string(), "{body}");
    }
    // The limiter answered (no fail-open): its key exists in Redis.
    let me = app.me(Some(&token)).await;
    let user_id: i64 = me["data"]["me"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{me}"));
    let keys = herald::keys::Keys::new(app.redis.as_ref().expect("redis").prefix.clone());
    let exists: bool = redis::cmd("EXISTS")
        .arg(keys.sends_user(user_id))
        .query_async(&mut redis_conn().await)
        .await
        .expect("exists");
    assert!(exists);
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(crate::helpers::redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// Emails with line breaks, or as long as the body allows, become a digest
/// in the key name: every name Herald writes is short and plain, so an
/// operator's tools (and `redis-cli --scan`) can handle them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_login_emails_leave_only_short_plain_key_names() {
    let Some(app) = spawn_default(Backend::Postgres).await else {
        return;
    };
    let emails = [
        "evil\r\nFLUSHALL\r\n@example.com".to_owned(),
        format!("{}@example.com", "x\n".repeat(200_000)),
    ];
    for email in &emails {
        let body = app.login(email, "wrong password").await;
        assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
    }
    let prefix = app.redis.as_ref().expect("redis").prefix.clone();
    let names: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis_conn().await)
        .await
        .expect("keys");
    let names: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    // Both account windows are there (whatever else Herald keeps).
    let keys = herald::keys::Keys::new(prefix);
    for email in &emails {
        let window = keys.login_failures_account(&email.to_lowercase());
        assert!(names.contains(&window), "{window} in {names:?}");
    }
    for name in names {
        assert!(name.len() <= 100, "{} bytes", name.len());
        assert!(
            !name.chars().any(|c| c.is_control() || c.is_whitespace()),
            "{name:?}"
        );
    }
}

/// The argon2 verifications every instance in `apps` has run.
fn verifications(apps: &[&TestApp]) -> u64 {
    apps.iter()
        .map(|app| {
            app.hasher
                .as_ref()
                .expect("the API runs here")
                .verifications()
        })
        .sum()
}

/// 40 wrong guesses at one fresh account, all at once and spread over
/// `apps`, on default settings (10 failures per account per 15 minutes):
/// 10 are checked, 30 are refused before they cost a hash.
async fn concurrent_guesses(apps: &[&TestApp]) {
    let email = unique_email("rush");
    apps[0].token_for(&email).await;
    let before = verifications(apps);
    let guesses = (0..40).map(|i| apps[i % apps.len()].login(&email, "wrong password"));
    let bodies = futures_util::future::join_all(guesses).await;
    let checked = verifications(apps) - before;
    let codes = |code: &str| {
        bodies
            .iter()
            .filter(|b| error_code(b) == Some(code))
            .count()
    };
    assert_eq!(
        (codes("UNAUTHENTICATED"), codes("RATE_LIMITED")),
        (10, 30),
        "{bodies:?}"
    );
    assert_eq!(checked, 10, "argon2 checked {checked} of 40 guesses");
    // The right password now waits out the window too.
    assert_limited(&apps[0].login(&email, PASSWORD).await);
}

async fn spawn_default(backend: Backend) -> Option<TestApp> {
    spawn(backend, |l| *l = RateLimits::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_are_limited_before_hashing_in_process() {
    let app = spawn_default(Backend::Sqlite).await.expect("sqlite");
    concurrent_guesses(&[&app]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_are_limited_before_hashing_in_redis() {
    if let Some(app) = spawn_default(Backend::Postgres).await {
        concurrent_guesses(&[&app]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_over_two_instances_are_limited_together() {
    let Some(first) = spawn_default(Backend::Postgres).await else {
        return;
    };
    let second = first
        .spawn_sibling(limits(|l| *l = RateLimits::default()))
        .await;
    concurrent_guesses(&[&first, &second]).await;
}

/// A success gives its reserved place back: after concurrent successes,
/// and after one that took the last place, the account still has its full
/// allowance of 10 failures.
async fn successes_give_back(app: &TestApp) {
    let email = unique_email("returns");
    app.token_for(&email).await;
    let logins = futures_util::future::join_all((0..5).map(|_| app.login(&email, PASSWORD))).await;
    for body in &logins {
        assert!(body["data"]["login"]["token"].is_string(), "{body}");
    }
    for _ in 0..9 {
        assert_eq!(
            error_code(&app.login(&email, "wrong password").await),
            Some("UNAUTHENTICATED")
        );
    }
    let last_place = app.login(&email, PASSWORD).await;
    assert!(
        last_place["data"]["login"]["token"].is_string(),
        "{last_place}"
    );
    assert_eq!(
        error_code(&app.login(&email, "wrong password").await),
        Some("UNAUTHENTICATED"),
        "the 10th failure is still allowed"
    );
    assert_limited(&app.login(&email, "wrong password").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_gives_its_reservation_back_in_process() {
    let app = spawn_default(Backend::Sqlite).await.expect("sqlite");
    successes_give_back(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_gives_its_reservation_back_in_redis() {
    if let Some(app) = spawn_default(Backend::Postgres).await {
        successes_give_back(&app).await;
    }
}

/// How many of the login windows of `emails` and of this test's client
/// address are held: in Redis, the keys of those names that exist; in
/// process, every window the limiter holds (any kind).
async fn windows_held(app: &TestApp, emails: &[String]) -> usize {
    if let Some(limiter) = &app.limiter {
        return limiter.windows_held();
    }
    let keys = herald::keys::Keys::new(app.redis.as_ref().expect("redis").prefix.clone());
    let ip: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    let mut names = vec![keys.login_failures_ip(ip)];
    names.extend(emails.iter().map(|e| keys.login_failures_account(e)));
    redis::cmd("EXISTS")
        .arg(names)
        .query_async(&mut redis_conn().await)
        .await
        .expect("exists")
}

/// A client refused by its address's window leaves nothing behind in the
/// accounts it names, and a window given back to zero is deleted: a flood
/// of logins with ever new emails from one blocked address holds no more
/// windows than its first three failures did.
async fn refused_logins_leave_no_windows(app: &TestApp) {
    let user = unique_email("regular");
    app.token_for(&user).await;
    let mut emails = vec![user.clone()];
    let before = windows_held(app, &emails).await;
    assert!(app.login(&user, PASSWORD).await["data"]["login"]["token"].is_string());
    assert_eq!(
        windows_held(app, &emails).await,
        before,
        "a success leaves no window at zero"
    );
    for i in 0..3 {
        emails.push(unique_email(&format!("fill{i}")));
        let body = app.login(&emails[emails.len() - 1], "wrong password").await;
        assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
    }
    let full = windows_held(app, &emails).await;
    assert_eq!(full, before + 4, "the address's window and three accounts'");
    for i in 0..50 {
        emails.push(unique_email(&format!("flood{i}")));
        assert_limited(&app.login(&emails[emails.len() - 1], "wrong password").await);
    }
    assert_eq!(windows_held(app, &emails).await, full);
}

async fn spawn_blocking_after_3(backend: Backend) -> Option<TestApp> {
    spawn(backend, |l| l.login_failures_per_ip = window(3)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_leave_no_windows_in_process() {
    let app = spawn_blocking_after_3(Backend::Sqlite)
        .await
        .expect("sqlite");
    refused_logins_leave_no_windows(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_leave_no_windows_in_redis() {
    if let Some(app) = spawn_blocking_after_3(Backend::Postgres).await {
        refused_logins_leave_no_windows(&app).await;
    }
}

/// In Redis as in process (a unit test there): a place given back after its
/// window has ended takes nothing from the key's next window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_from_an_ended_window_takes_nothing_from_the_next_in_redis() {
    use herald::ratelimit::{RateLimiter as _, RedisRateLimiter, Reserved};
    let Some(prefix) = crate::helpers::RedisPrefix::new().await else {
        return;
    };
    let client = redis::Client::open(crate::helpers::redis_url()).expect("client");
    let limiter = RedisRateLimiter::new(
        redis::aio::ConnectionManager::new(client)
            .await
            .expect("redis"),
    );
    let key = herald::keys::Keys::new(prefix.prefix.clone())
        .login_failures_ip("192.0.2.1".parse().expect("ip"));
    let reserve = |rule: Window| {
        let (limiter, key) = (&limiter, &key);
        async move { limiter.reserve(key, rule).await.expect("reserve") }
    };
    let Reserved::Taken(old) = reserve(Window {
        limit: 1,
        window: Duration::from_secs(1),
    })
    .await
    else {
        panic!("the first place");
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let Reserved::Taken(current) = reserve(window(1)).await else {
        panic!("a new window");
    };
    limiter.release(&key, old).await.expect("release");
    assert!(
        matches!(reserve(window(1)).await, Reserved::Full { retry_after } if retry_after > 800),
        "the old ticket freed a place"
    );
    // The current ticket still gives its place back, and the emptied window
    // is deleted.
    limiter.release(&key, current).await.expect("release");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis_conn().await)
        .await
        .expect("exists");
    assert!(!exists, "a window at zero is deleted");
}

// ---- Sends per application key ----

/// 60 concurrent sends with one API key, spread over `apps`; the bodies.
async fn app_sends(apps: &[&TestApp], key: &str, to: &str, n: usize) -> Vec<Value> {
    let sends = (0..n).map(|i| {
        let app = apps[i % apps.len()];
        async move {
            app.gql(
                "mutation($to: RecipientInput) { sendNotification(input: { title: \"Invoice\", content: \"Due\", to: $to }) { id } }",
                serde_json::json!({ "to": { "userId": to } }),
                Some(key),
            )
            .await
        }
    });
    futures_util::future::join_all(sends).await
}

/// How many of `bodies` sent; every other one must be RATE_LIMITED with a
/// positive retryAfter.
fn sent(bodies: &[Value]) -> usize {
    bodies
        .iter()
        .filter(|body| {
            if body["data"]["sendNotification"]["id"].is_string() {
                return true;
            }
            assert_limited(body);
            false
        })
        .count()
}

fn app_limits(l: &mut RateLimits) {
    // A burst of 20, then one a minute: the test never sees a refill.
    l.sends_per_app = Bucket {
        per_minute: 1,
        burst: 20,
    };
    l.sends_per_user = Bucket {
        per_minute: 1,
        burst: 3,
    };
}

/// An application's key has a bucket of its own, on every instance: 60
/// concurrent sends (over two instances sharing Redis in services mode)
/// get exactly the burst through; another key is unaffected; a user token
/// keeps the per-user limit, whatever the applications did.
async fn app_burst(apps: &[&TestApp]) {
    let first = apps[0];
    let key = crate::recipients::app_key(first).await;
    let (user_token, user_id) = first.account("app-burst").await;
    let bodies = app_sends(apps, &key, &user_id.to_string(), 60).await;
    assert_eq!(sent(&bodies), 20, "exactly the burst got through");
    for app in apps {
        assert_limited(&app_sends(&[app], &key, &user_id.to_string(), 1).await[0]);
    }
    // Another application's key has its own bucket.
    let other = crate::recipients::app_key(first).await;
    let bodies = app_sends(apps, &other, &user_id.to_string(), 20).await;
    assert_eq!(sent(&bodies), 20, "another key is unaffected");
    // The recipient's own token still has the per-user limit, untouched by
    // the 40 sends applications made to them: a burst of 3, then refused.
    for i in 0..3 {
        let body = apps[i % apps.len()]
            .send(&user_token, &format!("mine {i}"), "body")
            .await;
        assert!(body["data"]["sendNotification"]["id"].is_string(), "{body}");
    }
    for app in apps {
        assert_limited(&app.send(&user_token, "one too many", "body").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_key_gets_its_burst_then_rate_limited_in_process() {
    if let Some(app) = spawn(Backend::Sqlite, app_limits).await {
        app_burst(&[&app]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_key_gets_its_burst_then_rate_limited_across_two_instances() {
    let Some(first) = spawn(Backend::Postgres, app_limits).await else {
        return;
    };
    let second = first.spawn_sibling(limits(app_limits)).await;
    app_burst(&[&first, &second]).await;
}

/// The default application rate (1,000 a second, bursts of 2,000) in
/// microseconds against Redis: 200 quick sends all pass (the token
/// interval is 1 ms, the burst covers them), and the bucket is in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_application_rate_lets_hundreds_of_sends_through_redis() {
    let Some(app) = spawn(Backend::Postgres, |l| {
        l.sends_per_app = RateLimits::default().sends_per_app;
    })
    .await
    else {
        return;
    };
    let key = crate::recipients::app_key(&app).await;
    let (_, user_id) = app.account("thousand").await;
    let to = user_id.to_string();
    let mut bodies = Vec::new();
    for _ in 0..10 {
        bodies.extend(app_sends(&[&app], &key, &to, 20).await);
    }
    assert_eq!(sent(&bodies), 200);
    let keys = herald::keys::Keys::new(app.redis.as_ref().expect("redis").prefix.clone());
    let buckets: i64 = redis::cmd("KEYS")
        .arg(format!("{}rl:send-us:app:*", keys.prefix()))
        .query_async::<Vec<String>>(&mut redis_conn().await)
        .await
        .expect("keys")
        .len()
        .try_into()
        .expect("a count");
    assert_eq!(buckets, 1, "the application's bucket is in Redis");
}
