use async_graphql::{Context, Object};

use crate::{
    domain::{Email, Password, password},
    error::{ApiResult, AppError},
    graphql::{
        ApiState, ClientIp,
        context::ContextExt as _,
        types::{AuthPayload, User},
    },
    ratelimit::Window,
    storage,
};

/// One message for every login failure, so it reveals nothing about which
/// emails are registered.
const BAD_CREDENTIALS: &str = "wrong email or password";

/// Login failures, counted per account (known or not: the same answer) and
/// per client address. A success does not count.
struct LoginGuard<'a> {
    state: &'a ApiState,
    keys: Vec<(String, Window)>,
}

impl<'a> LoginGuard<'a> {
    fn new(ctx: &'a Context<'_>, email: &str) -> Self {
        let state = ctx.state();
        let limits = &state.rate_limits;
        let account = email.trim().to_lowercase();
        let mut keys = vec![(
            state.inbox.keys.login_failures_account(&account),
            limits.login_failures_per_account,
        )];
        if let Some(ClientIp(ip)) = ctx.data_opt::<ClientIp>() {
            keys.push((
                state.inbox.keys.login_failures_ip(*ip),
                limits.login_failures_per_ip,
            ));
        }
        Self { state, keys }
    }

    /// `RATE_LIMITED` once a window holds its limit of failures.
    async fn check(&self) -> ApiResult<()> {
        for (key, rule) in &self.keys {
            match self.state.limiter.count(key).await {
                Ok((failures, ttl)) if failures >= rule.limit => {
                    return Err(AppError::RateLimited {
                        retry_after: ttl.max(1),
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "rate limiter unavailable; not limiting"),
            }
        }
        Ok(())
    }

    async fn failed(&self) {
        for (key, rule) in &self.keys {
            if let Err(e) = self.state.limiter.hit(key, rule.window).await {
                tracing::warn!(error = ?e, "rate limiter unavailable; failure not counted");
            }
        }
    }
}

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
        let state = ctx.state();
        if let Some(ClientIp(ip)) = ctx.data_opt::<ClientIp>() {
            let key = state.inbox.keys.registrations_ip(*ip);
            let rule = state.rate_limits.registrations_per_ip;
            match state.limiter.hit(&key, rule.window).await {
                Ok((count, ttl)) if count > rule.limit => {
                    return Err(AppError::RateLimited {
                        retry_after: ttl.max(1),
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "rate limiter unavailable; not limiting"),
            }
        }
        let email = Email::parse(&email)?;
        let password = Password::parse(&password)?;
        let hash = state.hasher.hash(&password).await?;
        let user = storage::users::insert(&state.db, &email, hash, storage::now()).await?;
        tracing::info!(user_id = user.id, "registered");
        let token = state.jwt.issue(user.id)?;
        Ok(AuthPayload {
            token,
            user: user.into(),
        })
    }

    /// Logs out the token this request carries: it stops working at once,
    /// on every instance, and websockets opened with it close (4403).
    async fn logout(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let caller = ctx.require_user()?;
        ctx.state().revocations.revoke(&caller.claims).await?;
        Ok(true)
    }

    /// Logs out every token of the caller issued until now, this one
    /// included. Log in again for a new one.
    async fn logout_everywhere(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let caller = ctx.require_user()?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        ctx.state()
            .revocations
            .revoke_all_before(caller.user_id, now_ms + 1)
            .await?;
        Ok(true)
    }

    /// Exchanges an email and password for a token.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> ApiResult<AuthPayload> {
        let state = ctx.state();
        let guard = LoginGuard::new(ctx, &email);
        guard.check().await?;
        // Input that can never match an account fails like a wrong password;
        // an oversized one is refused before it costs a hash.
        let Ok(email) = Email::parse(&email) else {
            guard.failed().await;
            return Err(AppError::Unauthenticated(BAD_CREDENTIALS));
        };
        if password.chars().count() > password::MAX_CHARS {
            guard.failed().await;
            return Err(AppError::Unauthenticated(BAD_CREDENTIALS));
        }
        let user = storage::users::find_by_email(&state.db, &email).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if !state.hasher.verify(&password, hash).await? {
            guard.failed().await;
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
