//! Mutation root: one `MergedObject` part per domain.

mod account;
mod cancel;
mod inbox;
mod notification;
mod user_token;

use async_graphql::MergedObject;

#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    account::AccountMutation,
    notification::NotificationMutation,
    inbox::InboxMutation,
    user_token::UserTokenMutation,
    cancel::CancelMutation,
    crate::graphql::preferences::PreferencesMutation,
);
