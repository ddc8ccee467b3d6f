use entity::user;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, QueryFilter, SqlErr};
use sea_orm::{ColumnTrait as _, prelude::DateTimeUtc};

use super::StorageError;
use crate::domain::Email;

/// Inserts a user. A concurrent or earlier registration of the same email
/// loses on the unique index and comes back as `EmailTaken`.
pub async fn insert(
    db: &impl ConnectionTrait,
    email: &Email,
    password_hash: String,
    now: DateTimeUtc,
) -> Result<user::Model, StorageError> {
    let row = user::ActiveModel {
        email: Set(email.as_str().to_owned()),
        password_hash: Set(password_hash),
        created_at: Set(now),
        ..Default::default()
    };
    user::Entity::insert(row)
        .exec_with_returning(db)
        .await
        .map_err(|e| match e.sql_err() {
            // `users_email_key` is the only unique index a new row can hit:
            // the id comes from the database.
            Some(SqlErr::UniqueConstraintViolation(_)) => StorageError::EmailTaken,
            _ => StorageError::Db(e),
        })
}

pub async fn find_by_email(
    db: &impl ConnectionTrait,
    email: &Email,
) -> Result<Option<user::Model>, StorageError> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(db)
        .await?)
}

pub async fn find_by_id(
    db: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<user::Model>, StorageError> {
    Ok(user::Entity::find_by_id(id).one(db).await?)
}
