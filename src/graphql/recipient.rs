//! The user a send or a user token is for: `RecipientInput` (and
//! `issueUserToken`'s arguments) parsed by `domain::recipient`, then found,
//! or created for an unknown external id that comes with an email. Who may
//! name whom is decided here; the notification service only ever gets a
//! user id.

use async_graphql::{ID, InputObject};

use super::ApiState;
use crate::{
    domain::recipient::{Fields, Recipient},
    error::{ApiResult, AppError},
    storage::{self, StorageError},
};

/// Exactly one of `userId`, `email` and `externalId`; `email` may come with
/// `externalId`, and creates that user (without a password) when the
/// application has not named them before.
#[derive(Debug, Clone, InputObject)]
pub struct RecipientInput {
    pub user_id: Option<ID>,
    pub email: Option<String>,
    /// The application's own id for the user, 1..=255 characters.
    pub external_id: Option<String>,
}

impl RecipientInput {
    pub fn parse(&self, fields: &Fields) -> ApiResult<Recipient> {
        Ok(Recipient::parse(
            fields,
            self.user_id.as_ref().map(|id| id.as_str()),
            self.email.as_deref(),
            self.external_id.as_deref(),
        )?)
    }
}

/// For an application: the user `recipient` names, created if it is an
/// unknown external id with an email; an unknown one is BAD_USER_INPUT
/// naming the field.
pub async fn find_or_create(
    state: &ApiState,
    recipient: &Recipient,
    fields: &Fields,
) -> ApiResult<entity::user::Model> {
    let unknown =
        |field: &str, hint: &str| AppError::BadUserInput(format!("{field}: no such user{hint}"));
    match recipient {
        Recipient::External {
            id,
            email: Some(email),
        } => storage::users::upsert_external(&state.db, id, email, storage::now())
            .await
            .map_err(|e| match e {
                StorageError::EmailTaken => AppError::BadUserInput(format!(
                    "{}: already belongs to another user",
                    fields.email
                )),
                e => e.into(),
            }),
        Recipient::External { email: None, .. } => find(state, recipient).await?.ok_or_else(|| {
            unknown(
                fields.external_id,
                &format!(" (add {} to create one)", fields.email),
            )
        }),
        Recipient::Id(_) => find(state, recipient)
            .await?
            .ok_or_else(|| unknown(fields.user_id, "")),
        Recipient::Email(_) => find(state, recipient)
            .await?
            .ok_or_else(|| unknown(fields.email, "")),
    }
}

/// For a user token: `recipient` must be the caller; anyone else, known or
/// not (so a token learns nothing about other users), is FORBIDDEN.
pub async fn require_self(state: &ApiState, caller: i64, recipient: &Recipient) -> ApiResult<()> {
    if let Recipient::Id(id) = recipient {
        return if *id == caller {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        };
    }
    match find(state, recipient).await? {
        Some(user) if user.id == caller => Ok(()),
        _ => Err(AppError::Forbidden),
    }
}

/// The user `recipient` names, if there is one; never creates.
async fn find(state: &ApiState, recipient: &Recipient) -> ApiResult<Option<entity::user::Model>> {
    let db = &state.db;
    Ok(match recipient {
        Recipient::Id(id) => storage::users::find_by_id(db, *id).await?,
        Recipient::Email(email) => storage::users::find_by_email(db, email).await?,
        Recipient::External { id, .. } => storage::users::find_by_external_id(db, id).await?,
    })
}
