use entity::user;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, QueryFilter, RuntimeErr};
use sea_orm::{ColumnTrait as _, prelude::DateTimeUtc, sea_query::OnConflict, sqlx};

use super::StorageError;
use crate::domain::{Email, ExternalId};

/// The unique index on `users.email` (see the migration).
const EMAIL_INDEX: &str = "users_email_key";

/// Inserts a user. A concurrent or earlier registration of the same email
/// loses on the email's unique index and comes back as `EmailTaken`; any
/// other violation stays a database error.
pub async fn insert(
    db: &impl ConnectionTrait,
    email: &Email,
    password_hash: String,
    now: DateTimeUtc,
) -> Result<user::Model, StorageError> {
    let row = user::ActiveModel {
        email: Set(email.as_str().to_owned()),
        password_hash: Set(Some(password_hash)),
        created_at: Set(now),
        ..Default::default()
    };
    user::Entity::insert(row)
        .exec_with_returning(db)
        .await
        .map_err(email_taken)
}

/// The user an application knows as `external_id`, created (without a
/// password) with `email` if there is none. Concurrent first calls race on
/// the unique index: every INSERT but one does nothing, and all of them
/// read the one row. An email another user has is `EmailTaken`.
///
/// Postgres checks only the conflict target (`external_id`) for DO NOTHING:
/// a racing twin that inserted the same email first makes the others fail on
/// the email's unique index instead. So `EmailTaken` is only the answer when
/// no user has this external id once the INSERT is over.
pub async fn upsert_external(
    db: &impl ConnectionTrait,
    external_id: &ExternalId,
    email: &Email,
    now: DateTimeUtc,
) -> Result<user::Model, StorageError> {
    let row = user::ActiveModel {
        email: Set(email.as_str().to_owned()),
        password_hash: Set(None),
        created_at: Set(now),
        external_id: Set(Some(external_id.as_str().to_owned())),
        ..Default::default()
    };
    let inserted = user::Entity::insert(row)
        .on_conflict(
            OnConflict::column(user::Column::ExternalId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await
        .map_err(email_taken);
    let email_clash = match inserted {
        Ok(_) => false,
        Err(StorageError::EmailTaken) => true,
        Err(e) => return Err(e),
    };
    match find_by_external_id(db, external_id).await? {
        Some(user) => Ok(user),
        None if email_clash => Err(StorageError::EmailTaken),
        None => Err(StorageError::Db(DbErr::RecordNotFound(format!(
            "user {external_id:?}"
        )))),
    }
}

pub async fn find_by_external_id(
    db: &impl ConnectionTrait,
    external_id: &ExternalId,
) -> Result<Option<user::Model>, StorageError> {
    Ok(user::Entity::find()
        .filter(user::Column::ExternalId.eq(external_id.as_str()))
        .one(db)
        .await?)
}

/// `EmailTaken` for a violation of the email's index, else `Db`.
fn email_taken(e: DbErr) -> StorageError {
    if violates_email_index(&e) {
        StorageError::EmailTaken
    } else {
        StorageError::Db(e)
    }
}

/// Whether `e` is a unique violation of the email's index. Postgres names
/// the index (`constraint`); SQLite names none and reports the columns
/// instead, as `UNIQUE constraint failed: users.email`.
fn violates_email_index(e: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = e else {
        return false;
    };
    let sqlx::Error::Database(e) = &**e else {
        return false;
    };
    if e.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return false;
    }
    match e.constraint() {
        Some(name) => name == EMAIL_INDEX,
        None => e.message() == "UNIQUE constraint failed: users.email",
    }
}

/// Users by id; those that do not exist are left out.
pub async fn find_many(
    db: &impl ConnectionTrait,
    ids: Vec<i64>,
) -> Result<Vec<user::Model>, StorageError> {
    Ok(user::Entity::find()
        .filter(user::Column::Id.is_in(ids))
        .all(db)
        .await?)
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
