//! Bounds on what one request may ask for. async-graphql enforces depth,
//! complexity, recursive depth and directives (none by default); this module
//! adds aliases and "one login or register per request", and names every
//! limit and its value in the error a client reads.

use std::{sync::Arc, time::Duration};

use async_graphql::{
    ServerError, ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery},
    parser::types::{
        DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
    },
};

/// Defaults near graphql-armor's.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub max_depth: usize,
    /// Every field costs 1; a list field costs its `pageSize` more.
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_directives: usize,
    pub max_recursive_depth: usize,
    /// Query text, in bytes.
    pub max_query_bytes: usize,
    /// Operations in one batched request.
    pub max_batch: usize,
    /// How long one operation may execute.
    pub timeout: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_depth: 10,
            max_complexity: 1000,
            max_aliases: 30,
            max_directives: 50,
            max_recursive_depth: 32,
            max_query_bytes: 16 * 1024,
            max_batch: 10,
            timeout: Duration::from_secs(10),
        }
    }
}

impl QueryLimits {
    /// async-graphql's own limit messages, with the value of the limit.
    pub fn explain(&self, message: &str) -> Option<String> {
        match message {
            "Query is nested too deep." => Some(format!(
                "query depth exceeds the limit of {}",
                self.max_depth
            )),
            "Query is too complex." => Some(format!(
                "query complexity exceeds the limit of {} (each field costs 1, a page its pageSize)",
                self.max_complexity
            )),
            _ => None,
        }
    }
}

/// Counts in a parsed document.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub aliases: usize,
    /// `login` and `register` fields in mutations.
    pub credential_fields: usize,
}

impl Census {
    pub fn of(doc: &ExecutableDocument) -> Self {
        let mut census = Self::default();
        let ops: Vec<_> = match &doc.operations {
            DocumentOperations::Single(op) => vec![op],
            DocumentOperations::Multiple(ops) => ops.values().collect(),
        };
        for op in ops {
            let mutation = op.node.ty == OperationType::Mutation;
            census.walk(&op.node.selection_set.node, mutation, 0);
        }
        for fragment in doc.fragments.values() {
            census.walk(&fragment.node.selection_set.node, false, 0);
        }
        census
    }

    fn walk(&mut self, set: &SelectionSet, mutation_root: bool, depth: usize) {
        // The parser bounds nesting already; this is only a backstop.
        if depth > 256 {
            return;
        }
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    if field.node.alias.is_some() {
                        self.aliases += 1;
                    }
                    let name = field.node.name.node.as_str();
                    if mutation_root && (name == "login" || name == "register") {
                        self.credential_fields += 1;
                    }
                    self.walk(&field.node.selection_set.node, false, depth + 1);
                }
                Selection::InlineFragment(fragment) => {
                    self.walk(&fragment.node.selection_set.node, mutation_root, depth + 1);
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }
}

/// Refuses documents with too many aliases, or with more than one `login`
/// or `register` (aliases would otherwise multiply password guesses).
pub struct DocumentLimits {
    pub max_aliases: usize,
}

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentLimitsExtension {
            max_aliases: self.max_aliases,
        })
    }
}

struct DocumentLimitsExtension {
    max_aliases: usize,
}

#[async_trait::async_trait]
impl Extension for DocumentLimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let census = Census::of(&doc);
        if census.aliases > self.max_aliases {
            return Err(ServerError::new(
                format!(
                    "the query has {} aliases; the limit is {}",
                    census.aliases, self.max_aliases
                ),
                None,
            ));
        }
        if census.credential_fields > 1 {
            return Err(ServerError::new(
                "login and register may appear once per request",
                None,
            ));
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(query: &str) -> Census {
        Census::of(&async_graphql::parser::parse_query(query).expect("parses"))
    }

    #[test]
    fn aliases_are_counted_everywhere() {
        assert_eq!(census("{ a: me { b: id } }").aliases, 2);
        assert_eq!(
            census("{ ...F } fragment F on Query { x: me { id } }").aliases,
            1
        );
        assert_eq!(census("{ me { id } }").aliases, 0);
    }

    #[test]
    fn credential_fields_are_counted_in_mutations_only() {
        assert_eq!(
            census("mutation { a: login(email: \"x\", password: \"y\") { token } b: login(email: \"x\", password: \"z\") { token } }")
                .credential_fields,
            2
        );
        assert_eq!(
            census("mutation { register(email: \"x\", password: \"y\") { token } }")
                .credential_fields,
            1
        );
        assert_eq!(census("{ login }").credential_fields, 0);
    }
}
