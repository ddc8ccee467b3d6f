//! Operator commands run against the database, without the API:
//! `herald api-key create | list | revoke`. They print for a terminal or a
//! script; the API never returns a secret.

use std::fmt::Write as _;

use anyhow::Context as _;
use entity::api_key;
use sea_orm::DatabaseConnection;

use crate::{
    auth::api_key::generate,
    config::ApiKeyAction,
    storage::{self, api_keys::Revoked},
};

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

/// The keys as aligned columns under a header.
fn table(keys: &[api_key::Model]) -> String {
    let when = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map_or_else(
            || "-".to_owned(),
            |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
    };
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
    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if keys.is_empty() {
        out.push_str("(no API keys yet: `herald api-key create NAME`)\n");
    }
    out
}
