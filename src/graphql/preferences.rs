//! Email preferences (contract-preferences.graphql): the caller's default
//! and per-category settings. The inbox always receives; the worker reads
//! the settings when it takes a notification (`crate::preferences`).

use async_graphql::{Context, Object, SimpleObject};
use entity::notification_preference::DEFAULT_CATEGORY;

use crate::{
    domain::send::Category,
    error::{ApiResult, AppError},
    graphql::context::ContextExt as _,
    storage,
    wire::PreferencesV1,
};

#[derive(Debug, Clone, SimpleObject)]
pub struct CategoryPreference {
    pub category: String,
    pub email: bool,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationPreferences {
    /// The default for categories without their own setting (on unless
    /// turned off).
    pub email: bool,
    /// The categories with their own setting, by category.
    pub categories: Vec<CategoryPreference>,
}

impl From<PreferencesV1> for NotificationPreferences {
    fn from(p: PreferencesV1) -> Self {
        Self {
            email: p.email.unwrap_or(true),
            categories: p
                .categories
                .into_iter()
                .map(|c| CategoryPreference {
                    category: c.category,
                    email: c.email,
                })
                .collect(),
        }
    }
}

#[derive(Default)]
pub struct PreferencesQuery;

#[Object]
impl PreferencesQuery {
    /// The caller's email settings (a user token; an API key is FORBIDDEN).
    async fn notification_preferences(
        &self,
        ctx: &Context<'_>,
    ) -> ApiResult<NotificationPreferences> {
        let caller = ctx.require_user()?;
        let preferences = ctx.state().preferences.read(caller.user_id).await?;
        Ok(preferences.into())
    }
}

#[derive(Default)]
pub struct PreferencesMutation;

#[Object]
impl PreferencesMutation {
    /// `category` null: sets the default (`email` required). `category`
    /// and `email`: sets that category's own setting. `category` with
    /// `email` null: drops that category's own setting (none: nothing
    /// changes). Applies to every notification not yet delivered.
    async fn set_notification_preference(
        &self,
        ctx: &Context<'_>,
        category: Option<String>,
        email: Option<bool>,
    ) -> ApiResult<NotificationPreferences> {
        let caller = ctx.require_user()?;
        let state = ctx.state();
        let now = storage::now();
        match (category, email) {
            (None, None) => {
                return Err(AppError::BadUserInput(
                    "email: required when category is null (setting the default)".to_owned(),
                ));
            }
            (None, Some(email)) => {
                storage::preferences::set(&state.db, caller.user_id, DEFAULT_CATEGORY, email, now)
                    .await?;
            }
            (Some(category), email) => {
                let category = Category::parse(&category)?;
                match email {
                    Some(email) => {
                        storage::preferences::set(
                            &state.db,
                            caller.user_id,
                            category.as_str(),
                            email,
                            now,
                        )
                        .await?;
                    }
                    None => {
                        storage::preferences::drop_category(
                            &state.db,
                            caller.user_id,
                            category.as_str(),
                        )
                        .await?;
                    }
                }
            }
        }
        // After the commit: every instance's worker reads the change at its
        // next delivery for this user.
        state.preferences.changed(caller.user_id).await;
        Ok(state.preferences.read(caller.user_id).await?.into())
    }
}
