//! `api_keys`: one row per application key (migration 6). The secret itself
//! is never stored: only its SHA-256 and its first characters.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The application's name, as given to `herald api-key create`.
    pub name: String,
    /// `hk_` and the secret's next 8 characters, for `api-key list`.
    pub prefix: String,
    /// SHA-256 of the secret, in hex; unique (`api_keys_secret_hash_key`).
    #[sea_orm(unique)]
    pub secret_hash: String,
    pub created_at: DateTimeUtc,
    /// Updated at most once a minute per key, off the request's path.
    pub last_used_at: Option<DateTimeUtc>,
    /// Set once by `herald api-key revoke`; the key stops working.
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
