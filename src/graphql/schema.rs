//! Building the schema, for serving and for `herald schema`.

use async_graphql::{SDLExportOptions, Schema, SchemaBuilder};

use super::{
    ApiState, extensions::ErrorCodes, mutation::MutationRoot, query::QueryRoot,
    subscription::SubscriptionRoot,
};

pub type HeraldSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .extension(ErrorCodes)
}

pub fn build_schema(state: ApiState) -> HeraldSchema {
    builder().data(state).finish()
}

/// The SDL that `schema.graphql` holds, in a stable order.
pub fn sdl() -> String {
    builder()
        .finish()
        .sdl_with_options(SDLExportOptions::new().use_space_ident().sorted_fields())
}
