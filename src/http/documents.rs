//! Parsed GraphQL documents by their text, so that a client sending the
//! same operation again (what Apollo Client, urql and an application's
//! backend do: their documents are constants) skips the parser. Parsing a
//! small mutation was about 8 % of Herald's CPU samples in a
//! `sendNotification` profile (issue 13); a copy of a kept document costs
//! one allocation per node, done outside the lock. Everything after
//! parsing (async-graphql's depth and directive checks, Herald's admission
//! limits, validation, execution) still runs on every request.
//!
//! Bounded: texts up to `MAX_TEXT_BYTES` whose documents have at most
//! `MAX_SELECTIONS` selections, at most `MAX_DOCUMENTS` of them (a few MiB
//! at worst); a full cache starts over empty, so a client that never
//! repeats a text gains nothing and costs others only the parse they would
//! have paid anyway.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use async_graphql::{
    Request,
    parser::types::{DocumentOperations, ExecutableDocument, Selection, SelectionSet},
};

/// Texts longer than this are parsed every time.
pub const MAX_TEXT_BYTES: usize = 2 * 1024;
/// Documents with more selections than this (fields, fragment spreads and
/// inline fragments, at any depth) are parsed every time.
pub const MAX_SELECTIONS: usize = 128;
/// Documents kept at most.
pub const MAX_DOCUMENTS: usize = 256;

#[derive(Default)]
pub struct Documents {
    parsed: Mutex<HashMap<String, Arc<ExecutableDocument>>>,
}

impl Documents {
    /// Gives `request` its parsed document: a copy of the one kept for its
    /// text, or the parser's (kept when it parsed and is small). A text
    /// that does not parse is left for execution to report.
    pub fn parse(&self, request: &mut Request) {
        if request.query.len() > MAX_TEXT_BYTES {
            return;
        }
        let kept = self.lock().get(request.query.as_str()).cloned();
        if let Some(doc) = kept {
            request.set_parsed_query(ExecutableDocument::clone(&doc));
            return;
        }
        let Ok(doc) = request.parsed_query() else {
            return;
        };
        if selections(doc) > MAX_SELECTIONS {
            return;
        }
        let doc = Arc::new(doc.clone());
        let mut parsed = self.lock();
        if parsed.len() >= MAX_DOCUMENTS {
            parsed.clear();
        }
        parsed.insert(request.query.clone(), doc);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ExecutableDocument>>> {
        self.parsed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The selections of `doc`'s operations and fragments, at every depth.
fn selections(doc: &ExecutableDocument) -> usize {
    fn of(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| {
                1 + match &item.node {
                    Selection::Field(field) => of(&field.node.selection_set.node),
                    Selection::FragmentSpread(_) => 0,
                    Selection::InlineFragment(inline) => of(&inline.node.selection_set.node),
                }
            })
            .sum()
    }
    let operations: usize = match &doc.operations {
        DocumentOperations::Single(op) => of(&op.node.selection_set.node),
        DocumentOperations::Multiple(ops) => {
            ops.values().map(|op| of(&op.node.selection_set.node)).sum()
        }
    };
    let fragments: usize = doc
        .fragments
        .values()
        .map(|f| of(&f.node.selection_set.node))
        .sum();
    operations + fragments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(documents: &Documents, text: &str) -> ExecutableDocument {
        let mut request = Request::new(text);
        documents.parse(&mut request);
        request.parsed_query().expect("parses").clone()
    }

    fn kept(documents: &Documents) -> usize {
        documents.lock().len()
    }

    /// A repeated text gets the kept document, not a new parse: a document
    /// planted under a text comes back for it.
    #[test]
    fn a_repeated_text_gets_the_kept_document() {
        let documents = Documents::default();
        let text = "mutation Send($t: String!) { sendNotification(input: {title: $t}) { id } }";
        let first = parsed(&documents, text);
        let fresh = Request::new(text).parsed_query().expect("parses").clone();
        assert_eq!(format!("{first:?}"), format!("{fresh:?}"));
        assert_eq!(kept(&documents), 1);
        let planted = Request::new("{ planted }")
            .parsed_query()
            .expect("parses")
            .clone();
        documents
            .lock()
            .insert(text.to_owned(), Arc::new(planted.clone()));
        let again = parsed(&documents, text);
        assert_eq!(format!("{again:?}"), format!("{planted:?}"));
    }

    /// Two texts never share a document, and a text that does not parse,
    /// a long one or one with many selections is not kept.
    #[test]
    fn only_small_parsed_texts_are_kept_each_under_its_own_text() {
        let documents = Documents::default();
        let a = parsed(&documents, "{ a }");
        let b = parsed(&documents, "{ b }");
        assert_ne!(format!("{a:?}"), format!("{b:?}"));
        let mut broken = Request::new("{ a ");
        documents.parse(&mut broken);
        assert!(broken.parsed_query().is_err());
        let long = format!("{{ a {} }}", " ".repeat(MAX_TEXT_BYTES));
        parsed(&documents, &long);
        let wide = format!("{{ {} }}", "a ".repeat(MAX_SELECTIONS + 1));
        parsed(&documents, &wide);
        assert_eq!(kept(&documents), 2);
        let nested = "query { a { b { c } } ...F } fragment F on Q { d e { f } }";
        let doc = Request::new(nested).parsed_query().expect("parses").clone();
        assert_eq!(selections(&doc), 7);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let documents = Documents::default();
        for i in 0..MAX_DOCUMENTS {
            parsed(&documents, &format!("{{ f{i} }}"));
        }
        assert_eq!(kept(&documents), MAX_DOCUMENTS);
        parsed(&documents, "{ one_more }");
        assert_eq!(kept(&documents), 1);
    }
}
