//! `issueUserToken`: an application signs one of its users in, so its
//! front end can show their inbox without a Herald password.

use async_graphql::{Context, ID, Object};

use crate::{
    domain::recipient::{self, Recipient},
    error::ApiResult,
    graphql::{context::ContextExt as _, recipient::find_or_create, types::UserToken},
};

#[derive(Default)]
pub struct UserTokenMutation;

#[Object]
impl UserTokenMutation {
    /// Applications only: a token for the user `userId` or `externalId`
    /// names (exactly one); `email` creates the user of an unknown
    /// `externalId`. The same token `login` returns: `logout` and
    /// `logoutEverywhere` end it.
    async fn issue_user_token(
        &self,
        ctx: &Context<'_>,
        user_id: Option<ID>,
        external_id: Option<String>,
        email: Option<String>,
    ) -> ApiResult<UserToken> {
        let app = ctx.require_app()?;
        let state = ctx.state();
        let who = Recipient::parse(
            &recipient::TOKEN_ARGS,
            user_id.as_ref().map(|id| id.as_str()),
            email.as_deref(),
            external_id.as_deref(),
        )?;
        let user = find_or_create(state, &who, &recipient::TOKEN_ARGS).await?;
        let (token, expires_at) = state.jwt.issue_until(user.id)?;
        tracing::info!(
            user_id = user.id,
            api_key_id = app.key_id,
            "user token issued"
        );
        Ok(UserToken {
            token,
            user: user.into(),
            expires_at,
        })
    }
}
