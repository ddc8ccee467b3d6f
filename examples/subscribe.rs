//! Logs in (registering first if needed), subscribes to
//! `notificationStatusChanged` over graphql-transport-ws, and prints every
//! status change of your notifications as it happens.
//!
//! ```sh
//! cargo run --example subscribe -- [http://127.0.0.1:8000] [email] [password] [--send] [--count N]
//! ```
//! `--send` sends one notification after subscribing; `--count N` exits after
//! N events.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

async fn gql(
    base: &str,
    query: &str,
    variables: Value,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    Ok(req.send().await?.json().await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let send = args.iter().any(|a| a == "--send");
    let count: Option<usize> = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let positional: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .collect();
    let base = positional
        .first()
        .map_or("http://127.0.0.1:8000", |s| s.as_str());
    let email = positional
        .get(1)
        .map_or("subscriber@example.com", |s| s.as_str());
    let password = positional
        .get(2)
        .map_or("correct horse battery", |s| s.as_str());

    let vars = json!({ "e": email, "p": password });
    let login = gql(
        base,
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        vars.clone(),
        None,
    )
    .await?;
    let token = match login["data"]["login"]["token"].as_str() {
        Some(t) => t.to_owned(),
        None => {
            let reg = gql(base, "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { token } }", vars, None).await?;
            reg["data"]["register"]["token"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("could not log in or register: {reg}"))?
                .to_owned()
        }
    };

    let mut request =
        format!("{}/graphql/ws", base.replacen("http", "ws", 1)).into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket.send(Message::Text(init.to_string().into())).await?;
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query":
        "subscription { notificationStatusChanged { previousStatus status at notification { id title attempts lastError } } }" } });
    let mut seen = 0;
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let msg: Value = serde_json::from_str(&text)?;
        match msg["type"].as_str() {
            Some("connection_ack") => {
                socket
                    .send(Message::Text(subscribe.to_string().into()))
                    .await?;
                eprintln!("subscribed as {email}; waiting for status changes (Ctrl-C to stop)");
                if send {
                    gql(base, "mutation { sendNotification(input: {title: \"Hello from examples/subscribe.rs\", content: \"Watch me go.\"}) { id } }", json!({}), Some(&token)).await?;
                }
            }
            Some("next") => {
                let e = &msg["payload"]["data"]["notificationStatusChanged"];
                println!(
                    "{}  #{} {:?}: {} -> {}",
                    e["at"].as_str().unwrap_or_default(),
                    e["notification"]["id"].as_str().unwrap_or_default(),
                    e["notification"]["title"].as_str().unwrap_or_default(),
                    e["previousStatus"].as_str().unwrap_or("(new)"),
                    e["status"].as_str().unwrap_or_default(),
                );
                seen += 1;
                if count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            Some("complete") => {
                eprintln!("the server completed the subscription (token expired?)");
                break;
            }
            _ => eprintln!("{msg}"),
        }
    }
    Ok(())
}
