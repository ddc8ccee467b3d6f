//! An application's backend talking to Herald with its API key. It sends one
//! of its users (named by the application's own id for them, `externalId`,
//! with their email) a notification scheduled a few seconds ahead, under an
//! idempotency key; sends it again, as a retry would (the same notification
//! comes back), and once more with a changed input (CONFLICT); schedules a
//! second one and cancels it; then issues the user a token and follows their
//! `inboxEvents` over a websocket, as the application's front end would,
//! until the first notification is SENT.
//!
//! ```sh
//! KEY=$(herald api-key create my-app)   # or: cargo run -- api-key create my-app
//! HERALD_URL=http://127.0.0.1:8000 HERALD_API_KEY=$KEY cargo run --example app_backend
//! ```
//! Exits 0 once the first notification went SCHEDULED → PENDING → PROCESSING
//! → SENT and the second was CANCELED; 1, saying why, on any other answer or
//! when that takes longer than a minute.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

/// The whole run, waiting for the delivery included.
const DEADLINE: Duration = Duration::from_secs(60);
/// How far ahead the first notification is scheduled.
const DELAY: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

const SEND: &str = "mutation($input: SendNotificationInput!) {
  sendNotification(input: $input) { id status sendAt category data recipient { id externalId email } }
}";
const CANCEL: &str = "mutation($id: ID!) { cancelNotification(id: $id) { id status } }";
const ISSUE: &str = "mutation($x: String!) {
  issueUserToken(externalId: $x) { token expiresAt user { id externalId email } }
}";
const EVENTS: &str = "subscription($after: Int) {
  inboxEvents(after: $after) {
    __typename seq at
    ... on NotificationCreated { notification { id title status sendAt } }
    ... on DeliveryStatusChanged { previousStatus status notification { id } }
  }
}";

/// An error as Herald answers it: `extensions.code` and the message.
#[derive(Debug)]
struct GraphqlError {
    code: String,
    message: String,
    /// Seconds to wait, with RATE_LIMITED.
    retry_after: Option<u64>,
}

struct Herald {
    http: reqwest::Client,
    url: String,
}

impl Herald {
    /// One GraphQL request. The outer error is the transport's (no answer,
    /// or not a GraphQL one); the inner one is Herald's answer.
    async fn request(
        &self,
        bearer: &str,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Result<Value, GraphqlError>> {
        let body: Value = self
            .http
            .post(format!("{}/graphql", self.url))
            .bearer_auth(bearer)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(error) = body["errors"].get(0) {
            return Ok(Err(GraphqlError {
                code: error["extensions"]["code"]
                    .as_str()
                    .unwrap_or("(no code)")
                    .to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
                retry_after: error["extensions"]["retryAfter"].as_u64(),
            }));
        }
        match body.get("data") {
            Some(data) if data.is_object() => Ok(Ok(data.clone())),
            _ => bail!("not a GraphQL answer: {body}"),
        }
    }
}

// -- send, retried with the same idempotency key
/// Sends `input` (which carries an `idempotencyKey`), retrying while no answer
/// comes (a timeout, a dropped connection: the first attempt may or may not
/// have reached Herald) and while RATE_LIMITED. Every attempt sends the same
/// input, `sendAt` included, so Herald makes one notification of them all.
async fn send(
    herald: &Herald,
    key: &str,
    input: &Value,
) -> anyhow::Result<Result<Value, GraphqlError>> {
    let mut attempt = 1;
    loop {
        let wait = match herald.request(key, SEND, json!({ "input": input })).await {
            Err(e) if attempt < 5 => {
                eprintln!("send: no answer ({e}), retrying with the same key");
                Duration::from_millis(200 << attempt)
            }
            Ok(Err(e)) if e.code == "RATE_LIMITED" && attempt < 5 => {
                Duration::from_secs(e.retry_after.unwrap_or(1))
            }
            Ok(Ok(data)) => return Ok(Ok(data["sendNotification"].clone())),
            answer => return answer,
        };
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}
// -- end

/// `answer`'s data, or why there is none.
fn expect_data(what: &str, answer: Result<Value, GraphqlError>) -> anyhow::Result<Value> {
    answer.map_err(|e| anyhow!("{what}: {} {}", e.code, e.message))
}

/// Checks that `answer` is the error `code`.
fn expect_error(what: &str, code: &str, answer: Result<Value, GraphqlError>) -> anyhow::Result<()> {
    match answer {
        Err(e) if e.code == code => {
            println!("{what}: {code} ({})", e.message);
            Ok(())
        }
        Err(e) => bail!("{what}: expected {code}, got {} {}", e.code, e.message),
        Ok(data) => bail!("{what}: expected {code}, got {data}"),
    }
}

fn text<'a>(value: &'a Value, field: &str) -> anyhow::Result<&'a str> {
    value[field]
        .as_str()
        .ok_or_else(|| anyhow!("no {field} in {value}"))
}

fn time(value: &Value, field: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text(value, field)?)
        .with_context(|| format!("{field} in {value}"))?
        .to_utc())
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::main]
async fn main() {
    match tokio::time::timeout(DEADLINE, run()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("app_backend: {e:#}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("app_backend: not done after {} s", DEADLINE.as_secs());
            std::process::exit(1);
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".to_owned());
    let url = url.trim_end_matches('/').to_owned();
    let key = std::env::var("HERALD_API_KEY").map_err(|_| {
        anyhow!("set HERALD_API_KEY to an application's key: KEY=$(herald api-key create my-app)")
    })?;
    let herald = Herald {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        url,
    };

    // The application's own id for its user; unique per run.
    let external_id = format!(
        "example-{}-{}",
        Utc::now().timestamp_millis(),
        std::process::id()
    );
    let email = format!("{external_id}@example.com");
    let to = json!({ "externalId": external_id, "email": email });

    // 1. A welcome, due in a few seconds, under an idempotency key. The input
    //    is built once: a retry must send it unchanged.
    let send_at = Utc::now() + DELAY;
    let welcome = json!({
        "to": to,
        "title": "Welcome to Acme",
        "content": "Your account is ready.",
        "category": "account.welcome",
        "data": { "url": "https://acme.example/start", "plan": "trial" },
        "idempotencyKey": format!("welcome-{external_id}"),
        "sendAt": rfc3339(send_at),
        "expiresAt": rfc3339(send_at + chrono::TimeDelta::hours(1)),
    });
    let first = expect_data("send", send(&herald, &key, &welcome).await?)?;
    let id = text(&first, "id")?.to_owned();
    let user = &first["recipient"];
    ensure!(
        first["status"] == "SCHEDULED",
        "send: expected SCHEDULED, got {first}"
    );
    ensure!(
        time(&first, "sendAt")? == time(&welcome, "sendAt")?,
        "send: sendAt {} is not the one sent, {}",
        first["sendAt"],
        welcome["sendAt"]
    );
    ensure!(
        user["externalId"] == external_id.as_str() && user["email"] == email.as_str(),
        "send: the recipient is {user}, not {external_id} <{email}>"
    );
    println!(
        "sent #{id} to {external_id} <{email}> (user {}): SCHEDULED for {}",
        text(user, "id")?,
        text(&first, "sendAt")?
    );

    // 2. The same send again, as after a timeout: the same notification.
    let again = expect_data("repeat", send(&herald, &key, &welcome).await?)?;
    let again = text(&again, "id")?;
    ensure!(
        again == id,
        "repeat: the same idempotency key made a second notification (#{again} after #{id})"
    );
    println!("repeated with the same idempotency key: #{again} again");

    // 3. The same key with another input is a mistake: CONFLICT.
    let mut changed = welcome.clone();
    changed["title"] = json!("Welcome to Acme!");
    expect_error(
        "the same key with another title",
        "CONFLICT",
        send(&herald, &key, &changed).await?,
    )?;

    // 4. A reminder for tomorrow, canceled: CANCELED, never sent. Once
    //    canceled, cancelling again is CONFLICT.
    let reminder = json!({
        "to": to,
        "title": "Finish setting up your account",
        "content": "Two steps left.",
        "category": "account.reminder",
        "idempotencyKey": format!("reminder-{external_id}"),
        "sendAt": rfc3339(Utc::now() + chrono::TimeDelta::days(1)),
    });
    let scheduled = expect_data("send the reminder", send(&herald, &key, &reminder).await?)?;
    let reminder_id = text(&scheduled, "id")?.to_owned();
    ensure!(
        scheduled["status"] == "SCHEDULED",
        "send the reminder: expected SCHEDULED, got {scheduled}"
    );
    let cancel = || herald.request(&key, CANCEL, json!({ "id": reminder_id }));
    let canceled = expect_data("cancel", cancel().await?)?;
    ensure!(
        canceled["cancelNotification"]["status"] == "CANCELED",
        "cancel: expected CANCELED, got {canceled}"
    );
    println!("scheduled #{reminder_id} for tomorrow and canceled it: CANCELED");
    expect_error("cancel it again", "CONFLICT", cancel().await?)?;

    // 5. A token for the user, for the application's front end (the API key
    //    never leaves the backend).
    let issued = expect_data(
        "issueUserToken",
        herald
            .request(&key, ISSUE, json!({ "x": external_id }))
            .await?,
    )?;
    let issued = &issued["issueUserToken"];
    ensure!(
        issued["user"]["id"] == user["id"],
        "issueUserToken: the token is for {}, not user {}",
        issued["user"],
        user["id"]
    );
    let user_token = text(issued, "token")?;
    println!(
        "issued a user token, valid until {}",
        text(issued, "expiresAt")?
    );

    // 6. The front end's part: that user's inbox events, from the first one.
    follow(&herald.url, user_token, &id, send_at, &reminder_id).await
}

/// Subscribes to the user's `inboxEvents(after: 0)` (every event of theirs,
/// replayed, then live) and prints them until notification `id` is SENT and
/// `canceled` is CANCELED.
async fn follow(
    url: &str,
    token: &str,
    id: &str,
    send_at: DateTime<Utc>,
    canceled: &str,
) -> anyhow::Result<()> {
    let mut request =
        format!("{}/graphql/ws", url.replacen("http", "ws", 1)).into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("open the websocket")?;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket.send(Message::Text(init.to_string().into())).await?;

    // Each notification's statuses, in the order the events gave them.
    let mut statuses: HashMap<String, Vec<String>> = HashMap::new();
    loop {
        let message = socket
            .next()
            .await
            .ok_or_else(|| anyhow!("the websocket closed"))??;
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => bail!("the websocket closed: {frame:?}"),
            _ => continue,
        };
        let msg: Value = serde_json::from_str(&text).context("a websocket message")?;
        match msg["type"].as_str() {
            Some("connection_ack") => {
                let subscribe = json!({ "id": "inbox", "type": "subscribe",
                    "payload": { "query": EVENTS, "variables": { "after": 0 } } });
                socket
                    .send(Message::Text(subscribe.to_string().into()))
                    .await?;
                println!("following the user's inboxEvents (after: 0)");
            }
            Some("next") => {
                let event = &msg["payload"]["data"]["inboxEvents"];
                ensure!(event.is_object(), "inboxEvents: {msg}");
                let (n, status) = print_event(event, id, send_at)?;
                let seen = statuses.entry(n).or_default();
                seen.push(status);
                if let Some(path) = statuses.get(id) {
                    check_path(path)?;
                }
                if let Some(path) = statuses.get(canceled) {
                    ensure!(
                        path.iter().all(|s| s == "SCHEDULED" || s == "CANCELED"),
                        "#{canceled} was canceled, yet went {}",
                        path.join(" → ")
                    );
                }
                let done = |n: &str, last: &str| {
                    statuses
                        .get(n)
                        .is_some_and(|p| p.last().is_some_and(|s| s == last))
                };
                if done(id, "SENT") && done(canceled, "CANCELED") {
                    println!(
                        "#{id}: {}; #{canceled}: {}",
                        statuses[id].join(" → "),
                        statuses[canceled].join(" → ")
                    );
                    return Ok(());
                }
            }
            Some("ping") => {
                socket
                    .send(Message::Text(json!({ "type": "pong" }).to_string().into()))
                    .await?;
            }
            _ => bail!("inboxEvents: {msg}"),
        }
    }
}

/// Prints one event; returns its notification's id and the status it gives.
fn print_event(
    event: &Value,
    id: &str,
    send_at: DateTime<Utc>,
) -> anyhow::Result<(String, String)> {
    let n = text(&event["notification"], "id")?.to_owned();
    let at = time(event, "at")?;
    let prefix = format!(
        "  seq {:>2}  {}  #{n}",
        event["seq"],
        at.format("%H:%M:%S%.3f")
    );
    match event["__typename"].as_str() {
        Some("NotificationCreated") => {
            let status = text(&event["notification"], "status")?.to_owned();
            println!(
                "{prefix} created, {status}: {}",
                event["notification"]["title"]
            );
            Ok((n, status))
        }
        Some("DeliveryStatusChanged") => {
            let (from, status) = (text(event, "previousStatus")?, text(event, "status")?);
            let mut note = String::new();
            if n == id && from == "SCHEDULED" {
                // Due at sendAt, not before it.
                let late = (at - send_at).as_seconds_f64();
                ensure!(
                    late > -1.0,
                    "#{n} left SCHEDULED {:.1} s before its sendAt",
                    -late
                );
                note = format!(" ({late:+.1} s from sendAt)");
            }
            println!("{prefix} {from} → {status}{note}");
            Ok((n, status.to_owned()))
        }
        _ => bail!("inboxEvents: an unexpected event {event}"),
    }
}

/// The welcome's way so far: created SCHEDULED, then PENDING when due, then
/// worked on (PROCESSING, back to PENDING for a retry) until SENT.
fn check_path(path: &[String]) -> anyhow::Result<()> {
    let steps: Vec<&str> = path.iter().map(String::as_str).collect();
    let fine = match steps.as_slice() {
        [] => true,
        ["SCHEDULED"] | ["SCHEDULED", "PENDING"] => true,
        ["SCHEDULED", "PENDING", rest @ ..] => {
            rest.iter()
                .all(|s| matches!(*s, "PROCESSING" | "PENDING" | "SENT"))
                && rest
                    .iter()
                    .position(|s| *s == "SENT")
                    .is_none_or(|i| i == rest.len() - 1)
        }
        _ => false,
    };
    ensure!(fine, "the welcome went {}", steps.join(" → "));
    Ok(())
}
