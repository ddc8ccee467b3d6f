//! Mutation root: one `MergedObject` part per domain.

mod account;

use async_graphql::MergedObject;

#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(account::AccountMutation);
