//! Query root: one `MergedObject` part per domain.

mod account;
mod inbox;
pub mod notification;

use async_graphql::MergedObject;

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    account::AccountQuery,
    notification::NotificationQuery,
    inbox::InboxQuery,
    crate::graphql::preferences::PreferencesQuery,
);
