//! Schema extensions.

use std::sync::Arc;

use async_graphql::{
    Response, Value,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest},
};

use super::limits::QueryLimits;

/// Gives every error a contract `extensions.code`. Resolver errors carry one
/// already (through `AppError`); what is left are parse, validation, limit
/// and input coercion errors, which are the client's to fix:
/// `BAD_USER_INPUT`. Limit errors also get the limit's value in the message.
pub struct ErrorCodes {
    pub limits: QueryLimits,
}

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension {
            limits: self.limits.clone(),
        })
    }
}

struct ErrorCodesExtension {
    limits: QueryLimits,
}

#[async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        for error in &mut response.errors {
            if let Some(explained) = self.limits.explain(&error.message) {
                error.message = explained;
            }
            let ext = error.extensions.get_or_insert_with(Default::default);
            if ext.get("code").is_none() {
                ext.set("code", Value::from("BAD_USER_INPUT"));
            }
        }
        response
    }
}
