use async_graphql::{Context, Object};

use crate::{
    error::{ApiResult, AppError},
    graphql::{context::ContextExt as _, types::User},
    storage,
};

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The authenticated caller.
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<User> {
        let caller = ctx.require_user()?;
        // A valid token whose user is gone (deleted) is no longer a caller.
        storage::users::find_by_id(&ctx.state().db, caller.user_id)
            .await?
            .map(User::from)
            .ok_or(AppError::Unauthenticated("invalid token"))
    }
}
