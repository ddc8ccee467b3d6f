//! Parsed GraphQL documents by their text, so that a client sending the
//! same operation again (what Apollo Client, urql and an application's
//! backend do: their documents are constants) skips the parser. Parsing a
//! small mutation cost about 8 % of Herald's CPU per `sendNotification`
//! (issue 13's bench); a copy of the parsed document costs a few
//! allocations. Validation and execution still run on every request.
//!
//! Bounded: texts up to `MAX_TEXT_BYTES`, at most `MAX_DOCUMENTS` of them;
//! a full cache starts over empty (a client that never repeats a text
//! gains nothing and loses nothing but the copy).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use async_graphql::{Request, parser::types::ExecutableDocument};

/// Texts longer than this are parsed every time.
pub const MAX_TEXT_BYTES: usize = 4 * 1024;
/// Documents kept at most (their texts: at most 1 MiB in all).
pub const MAX_DOCUMENTS: usize = 256;

#[derive(Default)]
pub struct Documents {
    parsed: Mutex<HashMap<String, ExecutableDocument>>,
}

impl Documents {
    /// Gives `request` its parsed document: a copy of the one kept for its
    /// text, or the parser's (kept when it parsed). A text that does not
    /// parse is left for execution to report.
    pub fn parse(&self, request: &mut Request) {
        if request.query.len() > MAX_TEXT_BYTES {
            return;
        }
        let kept = self.lock().get(request.query.as_str()).cloned();
        if let Some(doc) = kept {
            request.set_parsed_query(doc);
            return;
        }
        let Ok(doc) = request.parsed_query() else {
            return;
        };
        let doc = doc.clone();
        let mut parsed = self.lock();
        if parsed.len() >= MAX_DOCUMENTS {
            parsed.clear();
        }
        parsed.insert(request.query.clone(), doc);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecutableDocument>> {
        self.parsed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(documents: &Documents, text: &str) -> ExecutableDocument {
        let mut request = Request::new(text);
        documents.parse(&mut request);
        request.parsed_query().expect("parses").clone()
    }

    /// The kept copy is the document the parser gives, and it is kept.
    #[test]
    fn a_repeated_text_gets_the_parsers_document() {
        let documents = Documents::default();
        let text = "mutation Send($t: String!) { sendNotification(input: {title: $t}) { id } }";
        let first = parsed(&documents, text);
        assert_eq!(documents.len(), 1);
        let again = parsed(&documents, text);
        let fresh = Request::new(text).parsed_query().expect("parses").clone();
        assert_eq!(format!("{again:?}"), format!("{fresh:?}"));
        assert_eq!(format!("{first:?}"), format!("{fresh:?}"));
        assert_eq!(documents.len(), 1);
    }

    /// Two texts never share a document, a text that does not parse is
    /// not kept (execution reports it), and neither is a long one.
    #[test]
    fn only_parsed_short_texts_are_kept_each_under_its_own_text() {
        let documents = Documents::default();
        let a = parsed(&documents, "{ a }");
        let b = parsed(&documents, "{ b }");
        assert_ne!(format!("{a:?}"), format!("{b:?}"));
        let mut broken = Request::new("{ a ");
        documents.parse(&mut broken);
        assert!(broken.parsed_query().is_err());
        let long = format!("{{ a {} }}", " ".repeat(MAX_TEXT_BYTES));
        parsed(&documents, &long);
        assert_eq!(documents.len(), 2);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let documents = Documents::default();
        for i in 0..MAX_DOCUMENTS {
            parsed(&documents, &format!("{{ f{i} }}"));
        }
        assert_eq!(documents.len(), MAX_DOCUMENTS);
        parsed(&documents, "{ one_more }");
        assert_eq!(documents.len(), 1);
    }
}
