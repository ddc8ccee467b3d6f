//! Query root: one `MergedObject` part per domain.

mod account;

use async_graphql::MergedObject;

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(account::AccountQuery);
