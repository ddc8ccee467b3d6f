//! What resolvers read from the context: the shared `ApiState` (schema data)
//! and the caller's `RequestAuth` (request data, set by the HTTP layer).

use std::sync::Arc;

use async_graphql::{Context, dataloader::DataLoader};
use sea_orm::DatabaseConnection;

use super::loaders::UserLoader;
use crate::{
    auth::{ApiKeys, AppCaller, AuthUser, JwtKeys, PasswordHasher, Revocations, TokenError},
    error::{ApiResult, AppError},
    inbox::Inbox,
    notify::Notifications,
    ratelimit::{RateLimiter, RateLimits},
};

/// Shared by every request; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub db: DatabaseConnection,
    pub jwt: Arc<JwtKeys>,
    pub hasher: PasswordHasher,
    /// Sends: insert, announce, enqueue.
    pub notifications: Notifications,
    pub inbox: Inbox,
    pub users: Arc<DataLoader<UserLoader>>,
    pub limiter: Arc<dyn RateLimiter>,
    pub rate_limits: RateLimits,
    pub revocations: Arc<dyn Revocations>,
    /// Application keys known to this instance.
    pub api_keys: Arc<ApiKeys>,
    /// `inboxChanges`' `pollInterval`.
    pub poll_interval: std::time::Duration,
    /// Email preferences: the mutation drops the cached copy it changed.
    pub preferences: Arc<crate::preferences::Preferences>,
    /// This application's metrics (requests, errors, rate limits, sockets).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The client's address (the peer, or what a trusted proxy says), set by
/// the HTTP layer as request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

/// The caller as the `Authorization` header described it.
#[derive(Debug, Clone, Default)]
pub enum RequestAuth {
    #[default]
    Anonymous,
    User(AuthUser),
    /// An application's API key (`hk_...`).
    App(AppCaller),
    Rejected(TokenError),
    /// An API key that could not be looked up (the database is down).
    Unverified,
}

impl RequestAuth {
    /// Reads `Bearer <token>` (the scheme matched case-insensitively).
    pub fn from_authorization(header: Option<&str>, jwt: &JwtKeys) -> Self {
        let Some(value) = header.map(str::trim).filter(|v| !v.is_empty()) else {
            return Self::Anonymous;
        };
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Self::Rejected(TokenError::Invalid),
        };
        match jwt.verify(token) {
            Ok(user) => Self::User(user),
            Err(e) => Self::Rejected(e),
        }
    }

    /// The caller named by an `Authorization` header: a user's token (not
    /// logged out) or an application's key. An unknown or revoked key is
    /// rejected as a bad token is.
    pub async fn authenticate(header: Option<&str>, api: &ApiState) -> Self {
        let key = header
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| token.starts_with(crate::auth::api_key::PREFIX));
        let Some(key) = key else {
            return Self::from_authorization(header, &api.jwt)
                .unless_revoked(&*api.revocations)
                .await;
        };
        match api.api_keys.authenticate(key).await {
            Ok(Some(app)) => Self::App(app),
            Ok(None) => Self::Rejected(TokenError::Invalid),
            Err(e) => {
                tracing::error!(error = ?e, "looking up an API key failed");
                Self::Unverified
            }
        }
    }

    /// A signed, unexpired token may still have been logged out. If the
    /// store cannot answer, the token is let through (and that is logged):
    /// an outage of Redis should not log everyone out.
    pub async fn unless_revoked(self, revocations: &dyn Revocations) -> Self {
        let Self::User(user) = self else {
            return self;
        };
        match revocations.is_revoked(&user).await {
            Ok(true) => Self::Rejected(TokenError::Revoked),
            Ok(false) => Self::User(user),
            Err(e) => {
                tracing::warn!(error = ?e, "revocations unavailable; token accepted");
                Self::User(user)
            }
        }
    }
}

pub trait ContextExt {
    fn state(&self) -> &ApiState;
    /// The authenticated user, `FORBIDDEN` for an application (it has no
    /// inbox), or `UNAUTHENTICATED`.
    fn require_user(&self) -> ApiResult<&AuthUser>;
    /// The application making the request, `FORBIDDEN` for a user's token,
    /// or `UNAUTHENTICATED`.
    fn require_app(&self) -> ApiResult<&AppCaller>;
    /// The application making the request, if a valid API key made it.
    fn app(&self) -> Option<&AppCaller>;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> &ApiState {
        // Registered in `build_schema`: a missing state is a programming error
        // that every test would hit at once.
        #[allow(clippy::expect_used)]
        self.data::<ApiState>().expect("ApiState is schema data")
    }

    fn require_user(&self) -> ApiResult<&AuthUser> {
        match self.data_opt::<RequestAuth>() {
            Some(RequestAuth::User(user)) => Ok(user),
            Some(RequestAuth::App(_)) => Err(AppError::Forbidden),
            other => Err(refused(other)),
        }
    }

    fn require_app(&self) -> ApiResult<&AppCaller> {
        match self.data_opt::<RequestAuth>() {
            Some(RequestAuth::App(app)) => Ok(app),
            Some(RequestAuth::User(_)) => Err(AppError::Forbidden),
            other => Err(refused(other)),
        }
    }

    fn app(&self) -> Option<&AppCaller> {
        match self.data_opt::<RequestAuth>() {
            Some(RequestAuth::App(app)) => Some(app),
            _ => None,
        }
    }
}

/// Why a caller that is neither a user nor an application is turned away.
fn refused(auth: Option<&RequestAuth>) -> AppError {
    match auth {
        Some(RequestAuth::Unverified) => AppError::Internal(Arc::new(anyhow::anyhow!(
            "the API key could not be looked up"
        ))),
        Some(RequestAuth::Rejected(TokenError::Expired)) => {
            AppError::Unauthenticated("token expired")
        }
        Some(RequestAuth::Rejected(TokenError::Invalid)) => {
            AppError::Unauthenticated("invalid token")
        }
        Some(RequestAuth::Rejected(TokenError::Revoked)) => {
            AppError::Unauthenticated("token revoked")
        }
        Some(RequestAuth::Anonymous | RequestAuth::User(_) | RequestAuth::App(_)) | None => {
            AppError::Unauthenticated("authentication required")
        }
    }
}
