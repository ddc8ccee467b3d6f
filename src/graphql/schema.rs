//! Building the schema, for serving and for `herald schema`.

use async_graphql::{EmptySubscription, SDLExportOptions, Schema, SchemaBuilder};

use super::{ApiState, extensions::ErrorCodes, mutation::MutationRoot, query::QueryRoot};

pub type HeraldSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, EmptySubscription> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
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
