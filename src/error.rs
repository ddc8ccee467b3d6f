//! `AppError`: the one error type that reaches the GraphQL edge.
//!
//! Each variant is one of the contract's `extensions.code` values. Internal
//! causes are logged with their whole chain and never shown to a client.
//!
//! `AppError` deliberately does not implement `Display`: async-graphql turns
//! any `Display` type into a client-visible message, and the only way from an
//! `AppError` to a client is the `From` impl below.

use std::sync::Arc;

use async_graphql::ErrorExtensions as _;

use crate::domain::ValidationError;

#[derive(Debug, Clone)]
pub enum AppError {
    /// Missing, malformed, expired or tampered token; wrong email or password.
    Unauthenticated(&'static str),
    /// Authenticated, but the object belongs to someone else.
    Forbidden,
    /// Validation failed.
    BadUserInput(String),
    /// The email is already registered; an idempotency key was used with a
    /// different input.
    Conflict(&'static str),
    /// Too many attempts; retry after this many seconds.
    RateLimited { retry_after: u64 },
    /// A subscription fell behind and missed events (code INTERNAL, with
    /// `extensions.reason = "LAGGED"`): refetch, then subscribe again.
    Lagged { missed: u64 },
    /// Anything else: logged, shown as "internal error".
    Internal(Arc<anyhow::Error>),
}

pub type ApiResult<T> = Result<T, AppError>;

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::BadUserInput(_) => "BAD_USER_INPUT",
            Self::Conflict(_) => "CONFLICT",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Lagged { .. } | Self::Internal(_) => "INTERNAL",
        }
    }

    /// The message a client reads.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Conflict(m) => (*m).to_owned(),
            Self::Forbidden => "forbidden".to_owned(),
            Self::BadUserInput(m) => m.clone(),
            Self::RateLimited { retry_after } => {
                format!("too many attempts, retry in {retry_after} s")
            }
            Self::Lagged { missed } => format!(
                "this subscription fell behind and missed {missed} events: refetch notifications, then subscribe again"
            ),
            Self::Internal(_) => "internal error".to_owned(),
        }
    }
}

impl From<ValidationError> for AppError {
    fn from(e: ValidationError) -> Self {
        Self::BadUserInput(e.to_string())
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(Arc::new(e))
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        anyhow::Error::new(e).context("database").into()
    }
}

impl From<crate::storage::StorageError> for AppError {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            crate::storage::StorageError::EmailTaken => Self::Conflict("email already registered"),
            crate::storage::StorageError::Forbidden => Self::Forbidden,
            crate::storage::StorageError::UnknownNotifications(ids) => {
                let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
                Self::BadUserInput(format!("unknown notifications: {}", ids.join(", ")))
            }
            crate::storage::StorageError::IdempotencyConflict => Self::Conflict(
                "idempotencyKey: already used with a different input (a retry must repeat the first send exactly)",
            ),
            e @ crate::storage::StorageError::IdempotencyKeyTaken => anyhow::Error::new(e).into(),
            crate::storage::StorageError::Db(e) => e.into(),
        }
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> Self {
        if let AppError::Internal(cause) = &e {
            tracing::error!(error = ?cause, "internal error");
        }
        let code = e.code();
        let retry_after = match e {
            AppError::RateLimited { retry_after } => Some(retry_after),
            _ => None,
        };
        let lagged = matches!(e, AppError::Lagged { .. });
        async_graphql::Error::new(e.message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(secs) = retry_after {
                ext.set("retryAfter", secs);
            }
            if lagged {
                ext.set("reason", "LAGGED");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(err: &async_graphql::Error) -> Option<String> {
        let ext = err.extensions.as_ref()?;
        match ext.get("code")? {
            async_graphql::Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err: async_graphql::Error =
            AppError::from(anyhow::anyhow!("relation \"users\" does not exist")).into();
        assert_eq!(err.message, "internal error");
        assert_eq!(code_of(&err).as_deref(), Some("INTERNAL"));
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let err: async_graphql::Error = AppError::RateLimited { retry_after: 42 }.into();
        let ext = err.extensions.as_ref().expect("extensions");
        assert_eq!(
            ext.get("retryAfter"),
            Some(&async_graphql::Value::from(42u64))
        );
        assert_eq!(code_of(&err).as_deref(), Some("RATE_LIMITED"));
    }

    #[test]
    fn every_variant_maps_to_a_contract_code() {
        let all = [
            AppError::Unauthenticated("x"),
            AppError::Forbidden,
            AppError::BadUserInput("x".into()),
            AppError::Conflict("x"),
            AppError::RateLimited { retry_after: 1 },
            AppError::from(anyhow::anyhow!("x")),
        ];
        let codes: Vec<_> = all.iter().map(AppError::code).collect();
        assert_eq!(
            codes,
            [
                "UNAUTHENTICATED",
                "FORBIDDEN",
                "BAD_USER_INPUT",
                "CONFLICT",
                "RATE_LIMITED",
                "INTERNAL"
            ]
        );
    }
}
