//! `api_keys`: create, list, revoke, look up by hash, and the marker the
//! instances poll to notice a revocation (see `auth::api_key`).

use entity::api_key;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, Condition, ConnectionTrait, DbErr, EntityTrait,
    PaginatorTrait as _, QueryFilter, QueryOrder as _, prelude::DateTimeUtc, sea_query::Expr,
};

pub async fn insert(
    db: &impl ConnectionTrait,
    name: &str,
    prefix: &str,
    secret_hash: &str,
    now: DateTimeUtc,
) -> Result<api_key::Model, DbErr> {
    let row = api_key::ActiveModel {
        name: Set(name.to_owned()),
        prefix: Set(prefix.to_owned()),
        secret_hash: Set(secret_hash.to_owned()),
        created_at: Set(now),
        ..Default::default()
    };
    api_key::Entity::insert(row).exec_with_returning(db).await
}

/// Every key, oldest first.
pub async fn list(db: &impl ConnectionTrait) -> Result<Vec<api_key::Model>, DbErr> {
    api_key::Entity::find()
        .order_by_asc(api_key::Column::Id)
        .all(db)
        .await
}

/// What `revoke` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
    Unknown,
}

pub async fn revoke(
    db: &impl ConnectionTrait,
    id: i64,
    now: DateTimeUtc,
) -> Result<Revoked, DbErr> {
    let done = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    if done.rows_affected > 0 {
        return Ok(Revoked::Now);
    }
    Ok(match api_key::Entity::find_by_id(id).one(db).await? {
        Some(_) => Revoked::Already,
        None => Revoked::Unknown,
    })
}

/// The key with this hash, revoked or not.
pub async fn find_by_hash(
    db: &impl ConnectionTrait,
    secret_hash: &str,
) -> Result<Option<api_key::Model>, DbErr> {
    api_key::Entity::find()
        .filter(api_key::Column::SecretHash.eq(secret_hash))
        .one(db)
        .await
}

/// Sets `last_used_at` unless another instance did so in the last minute.
pub async fn touch(db: &impl ConnectionTrait, id: i64, now: DateTimeUtc) -> Result<(), DbErr> {
    let a_minute_ago = now - chrono::Duration::seconds(60);
    api_key::Entity::update_many()
        .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(id))
        .filter(
            Condition::any()
                .add(api_key::Column::LastUsedAt.is_null())
                .add(api_key::Column::LastUsedAt.lt(a_minute_ago)),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// How many keys are revoked: it only grows (a key is revoked once and
/// never deleted), so a change means "some key was revoked".
pub async fn revoked_count(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    api_key::Entity::find()
        .filter(api_key::Column::RevokedAt.is_not_null())
        .count(db)
        .await
}
