//! `notification_preferences`: a user's email settings (migration 9).

use chrono::{DateTime, Utc};
use entity::notification_preference::{self, Column};
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, sea_query::OnConflict,
};

type Result<T> = std::result::Result<T, super::StorageError>;

/// Every setting of `user_id`'s (the default's category is `''`), by category.
pub async fn of_user(
    db: &impl ConnectionTrait,
    user_id: i64,
) -> Result<Vec<notification_preference::Model>> {
    Ok(notification_preference::Entity::find()
        .filter(Column::UserId.eq(user_id))
        .order_by_asc(Column::Category)
        .all(db)
        .await?)
}

/// Sets `user_id`'s `category` (`''`: the default) to `email`.
pub async fn set(
    db: &impl ConnectionTrait,
    user_id: i64,
    category: &str,
    email: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    notification_preference::Entity::insert(notification_preference::ActiveModel {
        user_id: Set(user_id),
        category: Set(category.to_owned()),
        email: Set(email),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([Column::UserId, Column::Category])
            .update_columns([Column::Email, Column::UpdatedAt])
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Drops `user_id`'s own setting for `category` (none: nothing happens).
pub async fn drop_category(db: &impl ConnectionTrait, user_id: i64, category: &str) -> Result<()> {
    notification_preference::Entity::delete_many()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Category.eq(category))
        .exec(db)
        .await?;
    Ok(())
}
