use async_graphql::{Context, Object};

use crate::{
    domain::{Email, Password, password},
    error::{ApiResult, AppError},
    graphql::{
        context::ContextExt as _,
        types::{AuthPayload, User},
    },
    storage,
};

/// One message for every login failure, so it reveals nothing about which
/// emails are registered.
const BAD_CREDENTIALS: &str = "wrong email or password";

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Creates an account and signs it in. Password: 8..=128 characters.
    async fn register(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> ApiResult<AuthPayload> {
        let email = Email::parse(&email)?;
        let password = Password::parse(&password)?;
        let state = ctx.state();
        let hash = state.hasher.hash(&password).await?;
        let user = storage::users::insert(&state.db, &email, hash, storage::now()).await?;
        tracing::info!(user_id = user.id, "registered");
        let token = state.jwt.issue(user.id)?;
        Ok(AuthPayload {
            token,
            user: user.into(),
        })
    }

    /// Exchanges an email and password for a token.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> ApiResult<AuthPayload> {
        // Input that can never match an account fails like a wrong password;
        // an oversized one is refused before it costs a hash.
        let Ok(email) = Email::parse(&email) else {
            return Err(AppError::Unauthenticated(BAD_CREDENTIALS));
        };
        if password.chars().count() > password::MAX_CHARS {
            return Err(AppError::Unauthenticated(BAD_CREDENTIALS));
        }
        let state = ctx.state();
        let user = storage::users::find_by_email(&state.db, &email).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if !state.hasher.verify(&password, hash).await? {
            return Err(AppError::Unauthenticated(BAD_CREDENTIALS));
        }
        // `verify` is only true for a real hash, so the user is there.
        let user = user.ok_or(AppError::Unauthenticated(BAD_CREDENTIALS))?;
        let token = state.jwt.issue(user.id)?;
        Ok(AuthPayload {
            token,
            user: User::from(user),
        })
    }
}
