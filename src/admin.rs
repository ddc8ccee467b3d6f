//! Operator commands run against the database, without the API:
//! `herald api-key create | list | revoke` and `herald webhook create |
//! list | delete | enable`. They print for a terminal or a script; the API
//! never returns a secret.

use std::fmt::Write as _;

use anyhow::Context as _;
use entity::{api_key, webhook_endpoint};
use sea_orm::DatabaseConnection;

use crate::{
    auth::api_key::generate,
    config::{ApiKeyAction, WebhookAction},
    storage::{self, api_keys::Revoked},
    webhooks::{EventSet, signing},
};

/// One operator command.
#[derive(Debug)]
pub enum Command {
    ApiKey(ApiKeyAction),
    Webhook(WebhookAction),
}

/// Runs `command`; the text to print on stdout.
pub async fn run(db: &DatabaseConnection, command: Command) -> anyhow::Result<String> {
    match command {
        Command::ApiKey(action) => api_key(db, action).await,
        Command::Webhook(action) => webhook(db, action).await,
    }
}

/// Runs one `api-key` command; the text to print on stdout.
pub async fn api_key(db: &DatabaseConnection, action: ApiKeyAction) -> anyhow::Result<String> {
    match action {
        ApiKeyAction::Create { name } => {
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.chars().count() <= 255,
                "an API key's name must be 1 to 255 characters"
            );
            let key = generate();
            storage::api_keys::insert(db, name, &key.prefix, &key.hash, storage::now())
                .await
                .context("storing the API key")?;
            Ok(format!("{}\n", key.secret))
        }
        ApiKeyAction::List => {
            let keys = storage::api_keys::list(db)
                .await
                .context("listing API keys")?;
            Ok(table(&keys))
        }
        ApiKeyAction::Revoke { id } => {
            match storage::api_keys::revoke(db, id, storage::now())
                .await
                .context("revoking the API key")?
            {
                Revoked::Now => Ok(format!("API key {id} revoked\n")),
                Revoked::Already => Ok(format!("API key {id} was already revoked\n")),
                Revoked::Unknown => {
                    anyhow::bail!("no API key with id {id} (see `herald api-key list`)")
                }
            }
        }
    }
}

/// Runs one `webhook` command; the text to print on stdout.
pub async fn webhook(db: &DatabaseConnection, action: WebhookAction) -> anyhow::Result<String> {
    match action {
        WebhookAction::Create { url, events } => {
            let events = EventSet::union(events).unwrap_or_else(EventSet::all);
            let secret = signing::generate_secret();
            storage::webhooks::create_endpoint(db, &url, &events, &secret, storage::now())
                .await
                .context("storing the webhook endpoint")?;
            Ok(format!("{secret}\n"))
        }
        WebhookAction::List => {
            let endpoints = storage::webhooks::list_endpoints(db)
                .await
                .context("listing webhook endpoints")?;
            Ok(endpoint_table(&endpoints))
        }
        WebhookAction::Delete { id } => {
            if storage::webhooks::delete_endpoint(db, id)
                .await
                .context("deleting the webhook endpoint")?
            {
                Ok(format!("webhook endpoint {id} deleted\n"))
            } else {
                anyhow::bail!("no webhook endpoint with id {id} (see `herald webhook list`)")
            }
        }
        WebhookAction::Enable { id } => {
            if storage::webhooks::enable_endpoint(db, id)
                .await
                .context("enabling the webhook endpoint")?
            {
                Ok(format!("webhook endpoint {id} enabled\n"))
            } else {
                anyhow::bail!("no webhook endpoint with id {id} (see `herald webhook list`)")
            }
        }
    }
}

fn when(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The endpoints as aligned columns under a header.
fn endpoint_table(endpoints: &[webhook_endpoint::Model]) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "URL".to_owned(),
        "EVENTS".to_owned(),
        "CREATED".to_owned(),
        "STATE".to_owned(),
    ]];
    rows.extend(endpoints.iter().map(|e| {
        let state = match (e.disabled_at, e.failing_since) {
            (Some(at), _) => format!("disabled since {}", when(Some(at))),
            (None, Some(since)) => format!("failing since {}", when(Some(since))),
            (None, None) => "enabled".to_owned(),
        };
        [
            e.id.to_string(),
            e.url.clone(),
            e.events.clone(),
            when(Some(e.created_at)),
            state,
        ]
    }));
    let mut out = columns(&rows);
    if endpoints.is_empty() {
        out.push_str("(no webhook endpoints yet: `herald webhook create URL`)\n");
    }
    out
}

/// The keys as aligned columns under a header.
fn table(keys: &[api_key::Model]) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "NAME".to_owned(),
        "PREFIX".to_owned(),
        "CREATED".to_owned(),
        "LAST USED".to_owned(),
        "REVOKED".to_owned(),
    ]];
    rows.extend(keys.iter().map(|k| {
        [
            k.id.to_string(),
            k.name.clone(),
            format!("{}…", k.prefix),
            when(Some(k.created_at)),
            when(k.last_used_at),
            when(k.revoked_at),
        ]
    }));
    let mut out = columns(&rows);
    if keys.is_empty() {
        out.push_str("(no API keys yet: `herald api-key create NAME`)\n");
    }
    out
}

/// `rows` as aligned columns, the first row the header.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
