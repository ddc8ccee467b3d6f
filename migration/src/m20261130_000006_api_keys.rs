//! `api_keys`: the secrets applications authenticate with, made on the
//! command line (`herald api-key create`). Only the secret's SHA-256 (hex)
//! and its first characters are stored; a request's key is looked up by
//! its hash, through the unique index.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ApiKeys::Id))
                    .col(string_len(ApiKeys::Name, 255))
                    .col(string_len(ApiKeys::Prefix, 16))
                    .col(string_len(ApiKeys::SecretHash, 64))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_secret_hash_key")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::SecretHash)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    /// `hk_` and the secret's next 8 characters, for `api-key list`.
    Prefix,
    /// SHA-256 of the whole secret, in hex.
    SecretHash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}
