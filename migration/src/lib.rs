//! Herald's schema migrations, for SQLite and Postgres alike.
//!
//! A migration that has shipped is never edited: add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_users;
mod m20261127_000002_create_notifications;
mod m20261127_000003_delivery_columns;
mod m20261130_000004_inbox;
mod m20261130_000005_counter_notifications;
mod m20261130_000006_api_keys;
mod m20261130_000007_external_ids;
mod m20261206_000008_app_sends;
mod m20261207_000009_preferences;
mod m20261207_000010_webhooks;
mod m20261207_000011_partial_status_indexes;
mod sqlite;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_users::Migration),
            Box::new(m20261127_000002_create_notifications::Migration),
            Box::new(m20261127_000003_delivery_columns::Migration),
            Box::new(m20261130_000004_inbox::Migration),
            Box::new(m20261130_000005_counter_notifications::Migration),
            Box::new(m20261130_000006_api_keys::Migration),
            Box::new(m20261130_000007_external_ids::Migration),
            Box::new(m20261206_000008_app_sends::Migration),
            Box::new(m20261207_000009_preferences::Migration),
            Box::new(m20261207_000010_webhooks::Migration),
            Box::new(m20261207_000011_partial_status_indexes::Migration),
        ]
    }
}
