use async_graphql::{Context, Object};

use crate::{
    domain::{Email, Password, password},
    error::{ApiResult, AppError},
    graphql::{
        ApiState, ClientIp,
        context::ContextExt as _,
        types::{AuthPayload, User},
    },
    metrics::Limit,
    ratelimit::{Reserved, Ticket, Window},
    storage,
};

/// One message for every login failure, so it reveals nothing about which
/// emails are registered.
const BAD_CREDENTIALS: &str = "wrong email or password";

/// Login failures, counted per account (known or not: the same answer) and
/// per client address. Each attempt reserves its place in both windows
/// before the password is checked and gives it back if it succeeds, so
/// concurrent guesses are counted before any of them is hashed.
struct LoginGuard<'a> {
    state: &'a ApiState,
    /// The windows this attempt holds a place in.
    reserved: Vec<(String, Ticket)>,
}

impl<'a> LoginGuard<'a> {
    /// `RATE_LIMITED` when a window holds its limit already (failures and
    /// attempts still being checked). The address's window comes first: a
    /// client it refuses leaves no trace in the accounts it names.
    async fn reserve(ctx: &'a Context<'_>, email: &str) -> ApiResult<Self> {
        let state = ctx.state();
        let limits = &state.rate_limits;
        let mut windows = Vec::with_capacity(2);
        if let Some(ClientIp(ip)) = ctx.data_opt::<ClientIp>() {
            windows.push((
                state.inbox.keys.login_failures_ip(*ip),
                limits.login_failures_per_ip,
                Limit::LoginFailuresPerIp,
            ));
        }
        let account = email.trim().to_lowercase();
        windows.push((
            state.inbox.keys.login_failures_account(&account),
            limits.login_failures_per_account,
            Limit::LoginFailuresPerAccount,
        ));
        let mut guard = Self {
            state,
            reserved: Vec::with_capacity(windows.len()),
        };
        for (key, rule, limit) in windows {
            match reserve(state, &key, rule, limit).await {
                Ok(Some(ticket)) => guard.reserved.push((key, ticket)),
                Ok(None) => {}
                Err(limited) => {
                    guard.release().await;
                    return Err(limited);
                }
            }
        }
        Ok(guard)
    }

    /// Gives the places back: the attempt was no failure.
    async fn release(self) {
        for (key, ticket) in &self.reserved {
            if let Err(e) = self.state.limiter.release(key, *ticket).await {
                tracing::warn!(error = ?e, "rate limiter unavailable; attempt not given back");
            }
        }
    }
}

/// One place in `key`'s window: `Ok(Some(_))` when taken, `Ok(None)` when
/// the limiter is unreachable (not limiting), else `RATE_LIMITED`.
async fn reserve(
    state: &ApiState,
    key: &str,
    rule: Window,
    limit: Limit,
) -> ApiResult<Option<Ticket>> {
    match state.limiter.reserve(key, rule).await {
        Ok(Reserved::Taken(ticket)) => Ok(Some(ticket)),
        Ok(Reserved::Full { retry_after }) => {
            state.metrics.rate_limited(limit);
            Err(AppError::RateLimited { retry_after })
        }
        Err(e) => {
            tracing::warn!(error = ?e, "rate limiter unavailable; not limiting");
            Ok(None)
        }
    }
}

/// The account `email` and `password` name, or `UNAUTHENTICATED`.
async fn authenticate(
    state: &ApiState,
    email: &str,
    password: &str,
) -> ApiResult<entity::user::Model> {
    // Input that can never match an account fails like a wrong password;
    // an oversized one is refused before it costs a hash.
    let Ok(email) = Email::parse(email) else {
        return Err(AppError::Unauthenticated(BAD_CREDENTIALS));
    };
    if password.chars().count() > password::MAX_CHARS {
        return Err(AppError::Unauthenticated(BAD_CREDENTIALS));
    }
    let user = storage::users::find_by_email(&state.db, &email).await?;
    // A user an application created has no password: the dummy hash is
    // checked instead, as for an unknown email (same cost, same answer).
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    if !state.hasher.verify(password, hash).await? {
        return Err(AppError::Unauthenticated(BAD_CREDENTIALS));
    }
    // `verify` is only true for a real hash, so the user is there.
    user.ok_or(AppError::Unauthenticated(BAD_CREDENTIALS))
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
            reserve(
                state,
                &key,
                state.rate_limits.registrations_per_ip,
                Limit::RegistrationsPerIp,
            )
            .await?;
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
        let guard = LoginGuard::reserve(ctx, &email).await?;
        let user = match authenticate(state, &email, &password).await {
            // A failure keeps its place in the windows.
            Err(e @ AppError::Unauthenticated(_)) => return Err(e),
            outcome => {
                guard.release().await;
                outcome?
            }
        };
        let token = state.jwt.issue(user.id)?;
        Ok(AuthPayload {
            token,
            user: User::from(user),
        })
    }
}
