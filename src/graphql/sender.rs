//! Who may see or cancel one notification: its recipient reads it; the
//! application whose key sent it reads and cancels it; a user cancels only
//! what they sent to themselves. Anyone else is FORBIDDEN.

use async_graphql::{Context, ID};
use entity::notification;

use crate::{
    error::{ApiResult, AppError},
    graphql::context::ContextExt as _,
    storage,
};

/// The caller, as far as one notification is concerned.
enum Caller {
    User(i64),
    App(i64),
}

fn caller(ctx: &Context<'_>) -> ApiResult<Caller> {
    match ctx.app() {
        Some(app) => Ok(Caller::App(app.key_id)),
        None => Ok(Caller::User(ctx.require_user()?.user_id)),
    }
}

/// The notification `id` names, once the caller is known to be someone:
/// an id that is not a positive integer, or unknown, is BAD_USER_INPUT.
async fn load(ctx: &Context<'_>, id: &ID) -> ApiResult<notification::Model> {
    // The id is echoed only once it parsed: a client's arbitrary text
    // never comes back in an error.
    let numeric = id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        AppError::BadUserInput("notification ids are positive integers".to_owned())
    })?;
    storage::notifications::find(&ctx.state().db, numeric)
        .await?
        .ok_or_else(|| AppError::BadUserInput(format!("notification {numeric} not found")))
}

/// Notification `id`, for its recipient or the application that sent it.
pub async fn readable(ctx: &Context<'_>, id: &ID) -> ApiResult<notification::Model> {
    let caller = caller(ctx)?;
    let row = load(ctx, id).await?;
    let allowed = match caller {
        Caller::User(user_id) => row.user_id == user_id,
        Caller::App(key_id) => row.sender_app_id == Some(key_id),
    };
    if allowed {
        Ok(row)
    } else {
        Err(AppError::Forbidden)
    }
}

/// Notification `id`, for its sender: the application whose key sent it,
/// or the user who sent it to themselves.
pub async fn cancelable(ctx: &Context<'_>, id: &ID) -> ApiResult<notification::Model> {
    let caller = caller(ctx)?;
    let row = load(ctx, id).await?;
    let allowed = match caller {
        Caller::User(user_id) => row.sender_app_id.is_none() && row.user_id == user_id,
        Caller::App(key_id) => row.sender_app_id == Some(key_id),
    };
    if allowed {
        Ok(row)
    } else {
        Err(AppError::Forbidden)
    }
}
