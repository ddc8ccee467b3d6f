//! Building the schema, for serving and for `herald schema`, and the
//! executor in front of it.

use std::sync::Arc;

use async_graphql::{
    Data, Executor, Request, Response, SDLExportOptions, Schema, SchemaBuilder, ServerError, Value,
    futures_util::{
        StreamExt as _,
        stream::{self, BoxStream},
    },
};

use super::{
    ApiState,
    limits::{DocumentLimits, QueryLimits},
    mutation::MutationRoot,
    query::QueryRoot,
    subscription::SubscriptionRoot,
};

type Inner = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The served API: the schema behind Herald's admission checks
/// ([`DocumentLimits`]) and error codes, over HTTP and websockets alike.
///
/// These are not async-graphql extensions on purpose: with any extension
/// registered, async-graphql wraps every field's resolution in a chain of
/// boxed futures, which cost a cached page of ten notifications 13 % of its
/// CPU. The query is parsed once here and the schema reuses the document.
#[derive(Clone)]
pub struct HeraldSchema {
    inner: Inner,
    document_limits: DocumentLimits,
    limits: Arc<QueryLimits>,
}

impl HeraldSchema {
    /// Parses the query (kept in `request` for execution) and applies the
    /// document limits.
    fn admit(&self, request: &mut Request) -> Result<(), ServerError> {
        let doc = request.parsed_query()?;
        self.document_limits
            .check(doc)
            .map(drop)
            .map_err(|message| ServerError::new(message, None))
    }
}

/// Gives every error a contract `extensions.code`. Resolver errors carry one
/// already (through `AppError`); what is left are parse, validation, limit
/// and input coercion errors, which are the client's to fix:
/// `BAD_USER_INPUT`. Limit errors also get the limit's value in the message.
fn with_codes(mut response: Response, limits: &QueryLimits) -> Response {
    for error in &mut response.errors {
        if let Some(explained) = limits.explain(&error.message) {
            error.message = explained;
        }
        let ext = error.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_none() {
            ext.set("code", Value::from("BAD_USER_INPUT"));
        }
    }
    response
}

impl Executor for HeraldSchema {
    async fn execute(&self, mut request: Request) -> Response {
        let response = match self.admit(&mut request) {
            Ok(()) => self.inner.execute(request).await,
            Err(error) => Response::from_errors(vec![error]),
        };
        with_codes(response, &self.limits)
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let responses = match self.admit(&mut request) {
            Ok(()) => self
                .inner
                .execute_stream_with_session_data(request, session_data.unwrap_or_default()),
            Err(error) => stream::once(async move { Response::from_errors(vec![error]) }).boxed(),
        };
        let limits = self.limits.clone();
        responses
            .map(move |response| with_codes(response, &limits))
            .boxed()
    }
}

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
        .limit_directives(limits.max_directives);
    if !options.introspection {
        builder = builder.disable_introspection();
    }
    if !options.suggestions {
        builder = builder.disable_suggestions();
    }
    HeraldSchema {
        inner: builder.finish(),
        document_limits: DocumentLimits {
            max_depth: limits.max_depth,
            max_aliases: limits.max_aliases,
        },
        limits: Arc::new(limits.clone()),
    }
}

/// The SDL that `schema.graphql` holds, in a stable order.
pub fn sdl() -> String {
    builder()
        .finish()
        .sdl_with_options(SDLExportOptions::new().use_space_ident().sorted_fields())
}
