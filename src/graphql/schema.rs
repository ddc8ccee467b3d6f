//! Building the schema, for serving and for `herald schema`.

use async_graphql::{SDLExportOptions, Schema, SchemaBuilder};

use super::{
    ApiState,
    extensions::ErrorCodes,
    limits::{DocumentLimits, QueryLimits},
    mutation::MutationRoot,
    query::QueryRoot,
    subscription::SubscriptionRoot,
};

pub type HeraldSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
}

/// How the served schema behaves beyond its types.
#[derive(Debug, Clone)]
pub struct SchemaOptions {
    pub limits: QueryLimits,
    /// `__schema` / `__type` queries (off in production unless asked for).
    pub introspection: bool,
    /// "Did you mean …" in validation errors (off in production).
    pub suggestions: bool,
}

impl Default for SchemaOptions {
    fn default() -> Self {
        Self {
            limits: QueryLimits::default(),
            introspection: true,
            suggestions: true,
        }
    }
}

pub fn build_schema(state: ApiState, options: &SchemaOptions) -> HeraldSchema {
    let limits = &options.limits;
    let mut builder = builder()
        .data(state)
        .limit_complexity(limits.max_complexity)
        .limit_recursive_depth(limits.max_recursive_depth)
        .limit_directives(limits.max_directives)
        .extension(DocumentLimits {
            max_depth: limits.max_depth,
            max_aliases: limits.max_aliases,
        })
        .extension(ErrorCodes {
            limits: limits.clone(),
        });
    if !options.introspection {
        builder = builder.disable_introspection();
    }
    if !options.suggestions {
        builder = builder.disable_suggestions();
    }
    builder.finish()
}

/// The SDL that `schema.graphql` holds, in a stable order.
pub fn sdl() -> String {
    builder()
        .finish()
        .sdl_with_options(SDLExportOptions::new().use_space_ident().sorted_fields())
}
