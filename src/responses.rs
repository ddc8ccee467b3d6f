//! The response cache (issue 13): the serialized body of a query whose
//! every field depends on nothing but the caller's inbox, kept with the
//! user's last seq before it ran, and served again without parsing,
//! validating or executing while that is still the user's cached last seq.
//! That is the page cache's never-stale check (`inbox.rs`), made in the same
//! one round trip (the snapshot and the entry in one `MGET`), so every
//! commit that moves a user's snapshot hides every response of theirs
//! cached before it, on every instance.
//!
//! An entry is keyed by the caller's user id and the digest of the request
//! as it came (a POST's body, a GET's query string): two spellings of one
//! query are two entries, never one entry for two queries. Only users'
//! tokens are cached (an application's key has no inbox); only query
//! operations whose root fields are all in [`ROOT_FIELDS`]; never a
//! response with an error, nor an `inboxChanges` that lists events (see
//! [`Cacheable`]). Entries live in the cache `app.rs` chose (Redis,
//! shared by every instance; or the in-process LRU), under the user's inbox
//! keys, for `HERALD_CACHE_TTL`.
//!
//! Not here: the HTTP side (`ETag`, `If-None-Match`) is `http::routes`'.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use sha2::{Digest as _, Sha256};

use crate::{inbox::Inbox, metrics::CacheName};

/// The root fields a cached response may select: each reads only the
/// caller's notifications and counts, which every change moves the
/// caller's last seq for (`recipient` is the caller, and users never
/// change). `me`, `notification(id)` and `notificationPreferences` read
/// other rows and are not cached.
pub const ROOT_FIELDS: [&str; 5] = [
    "inbox",
    "inboxChanges",
    "inboxCounts",
    "notifications",
    "__typename",
];

/// The version tag of a stored entry (`r1 <seq> <etag>\n<body>`): the body
/// is stored as it is sent, not as a JSON string, so a hit copies no
/// escaped text. Another release's tag is a miss.
const FORMAT: &str = "r1 ";

/// How the request came: a GET's query string and a POST's body never
/// share an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A cached response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A strong validator of `body`, quoted, as the `ETag` header carries it.
    pub etag: String,
    pub body: String,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Probe {
    Hit(Entry),
    Miss(Miss),
}

/// A miss: where the response goes once it has run, if it may be stored.
#[derive(Debug)]
pub struct Miss {
    key: String,
    /// The user's cached last seq before the request ran: what it read is
    /// at least that new, so the entry counts while that is the last seq.
    /// `None`: no snapshot was cached to check it by, so it is not stored
    /// (running the request fills the snapshot for the next one).
    seq: Option<i64>,
}

pub struct Responses {
    inbox: Inbox,
}

impl Responses {
    pub fn new(inbox: Inbox) -> Self {
        Self { inbox }
    }

    /// The cached response to `raw` (the POST body or the GET query string)
    /// for `user_id`, if it was stored at the user's cached last seq.
    /// `None` when the cache may not be used now (unreachable, or a
    /// snapshot update owed): run the request and store nothing.
    pub async fn probe(&self, user_id: i64, method: Method, raw: &[u8]) -> Option<Probe> {
        let key = self
            .inbox
            .keys
            .response(user_id, &request_digest(method, raw));
        let (seq, value) = self.inbox.with_last_seq(user_id, &key).await?;
        let hit = match (seq, value.and_then(decode)) {
            (Some(seq), Some((at, entry))) if at == seq => Some(entry),
            _ => None,
        };
        self.inbox
            .metrics
            .cache(CacheName::Responses, hit.is_some());
        Some(match hit {
            Some(entry) => Probe::Hit(entry),
            None => Probe::Miss(Miss { key, seq }),
        })
    }

    /// Stores `body`, the answer to a cacheable request without errors,
    /// when `miss` allows it; returns its `ETag` either way. A failed write
    /// is logged (the next request misses).
    pub async fn store(&self, miss: Miss, body: &str) -> String {
        let etag = etag_of(body);
        if let Some(seq) = miss.seq {
            let value = format!("{FORMAT}{seq} {etag}\n{body}");
            if let Err(e) = self
                .inbox
                .cache
                .set(&miss.key, &value, self.inbox.ttl)
                .await
            {
                tracing::warn!(error = ?e, "cache write failed");
            }
        }
        etag
    }
}

/// Whether a POST body may be a cacheable query, judged without parsing:
/// a single operation (a batch is never cached) that does not spell
/// `mutation` or `subscription` anywhere. A wrong guess either way costs
/// only a lookup that misses or a response not cached.
pub fn candidate(body: &[u8]) -> bool {
    let single = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    let has = |word: &[u8]| body.windows(word.len()).any(|w| w == word);
    single && !has(b"mutation") && !has(b"subscription")
}

/// What an answer must show to be stored: every `inboxChanges` in it (by
/// its response key) has no events. A poll with nothing new depends on the
/// last seq alone; a list of events also on the log's retention, which
/// prunes old events without moving the seq (an `after` before the kept log
/// then gets InboxResync instead), so such an answer is not stored.
#[derive(Debug, Default)]
pub struct Cacheable {
    polls: Vec<String>,
}

impl Cacheable {
    /// Whether `body` (the whole answer, without errors) may be stored.
    pub fn allows(&self, body: &serde_json::Value) -> bool {
        self.polls.iter().all(|key| {
            body["data"][key.as_str()]["events"]
                .as_array()
                .is_some_and(Vec::is_empty)
        })
    }
}

/// Whether an operation's root selection reads only [`ROOT_FIELDS`] (through
/// fragments too; `inboxChanges` only directly, with its response key
/// known). The operation type is the caller's to check.
pub fn covered(selection: &SelectionSet, doc: &ExecutableDocument) -> Option<Cacheable> {
    let mut cacheable = Cacheable::default();
    covered_within(selection, doc, 0, &mut cacheable).then_some(cacheable)
}

/// Fragment cycles are invalid (validation refuses them after this), so a
/// depth bound ends them here: too deep is simply not cached.
fn covered_within(
    selection: &SelectionSet,
    doc: &ExecutableDocument,
    depth: usize,
    cacheable: &mut Cacheable,
) -> bool {
    if depth > 8 {
        return false;
    }
    selection.items.iter().all(|item| match &item.node {
        Selection::Field(field) => {
            let name = field.node.name.node.as_str();
            if name == "inboxChanges" {
                if depth > 0 {
                    return false;
                }
                let key = field.node.alias.as_ref().map_or(name, |a| a.node.as_str());
                cacheable.polls.push(key.to_owned());
            }
            ROOT_FIELDS.contains(&name)
        }
        Selection::InlineFragment(fragment) => {
            covered_within(&fragment.node.selection_set.node, doc, depth + 1, cacheable)
        }
        Selection::FragmentSpread(spread) => doc
            .fragments
            .get(&spread.node.fragment_name.node)
            .is_some_and(|f| covered_within(&f.node.selection_set.node, doc, depth + 1, cacheable)),
    })
}

/// The first 128 bits of the request's SHA-256, with how it came, in hex.
fn request_digest(method: Method, raw: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(match method {
        Method::Get => b"GET\n",
        Method::Post => b"POST",
    });
    hash.update(raw);
    hex::encode(&hash.finalize()[..16])
}

/// A strong `ETag`: the body's SHA-256 (its first 128 bits), quoted.
fn etag_of(body: &str) -> String {
    format!(
        "\"{}\"",
        hex::encode(&Sha256::digest(body.as_bytes())[..16])
    )
}

/// A stored entry: the seq it counts at and the response. Another format
/// (another release's), or what does not parse, is absent.
fn decode(mut value: String) -> Option<(i64, Entry)> {
    let rest = value.strip_prefix(FORMAT)?;
    let (header, _) = rest.split_once('\n')?;
    let (seq, etag) = header.split_once(' ')?;
    let seq = seq.parse().ok()?;
    let etag = etag.to_owned();
    let body_at = FORMAT.len() + header.len() + 1;
    // In place: the body is most of the value.
    value.drain(..body_at);
    Some((seq, Entry { etag, body: value }))
}

/// Whether an `If-None-Match` header names `etag` (or is `*`): then a GET
/// answers `304 Not Modified`. Weak comparison, as RFC 9110 asks for it.
pub fn not_modified(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_it_was_stored() {
        let body = r#"{"data":{"inboxCounts":{"total":1}}}"#;
        let etag = etag_of(body);
        let stored = format!("{FORMAT}42 {etag}\n{body}");
        let (seq, entry) = decode(stored).expect("decodes");
        assert_eq!(seq, 42);
        assert_eq!(entry.body, body);
        assert_eq!(entry.etag, etag);
        // Another release's format, or garbage: absent.
        assert!(decode(format!("r2 42 {etag}\n{body}")).is_none());
        assert!(decode("r1 x \"e\"\n{}".to_owned()).is_none());
        assert!(decode(r#"{"v":1}"#.to_owned()).is_none());
    }

    #[test]
    fn etags_differ_with_the_body_and_match_weakly_or_by_star() {
        let a = etag_of(r#"{"data":1}"#);
        let b = etag_of(r#"{"data":2}"#);
        assert_ne!(a, b);
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert!(not_modified(&a, &a));
        assert!(not_modified(&format!("W/{a}"), &a));
        assert!(not_modified(&format!("{b}, {a}"), &a));
        assert!(not_modified("*", &a));
        assert!(!not_modified(&b, &a));
        assert!(!not_modified("", &a));
    }

    #[test]
    fn a_get_and_a_post_of_the_same_bytes_are_keyed_apart() {
        let raw = b"query=%7B+inboxCounts+%7B+total+%7D+%7D";
        assert_ne!(
            request_digest(Method::Get, raw),
            request_digest(Method::Post, raw)
        );
        assert_eq!(request_digest(Method::Get, raw).len(), 32);
    }

    #[test]
    fn only_single_operations_that_spell_no_mutation_are_candidates() {
        assert!(candidate(br#" {"query":"{ inbox { lastSeq } }"}"#));
        assert!(!candidate(br#"[{"query":"{ inbox { lastSeq } }"}]"#));
        assert!(!candidate(br#"{"query":"mutation { logout }"}"#));
        assert!(!candidate(
            br#"{"query":"subscription { inboxEvents { seq } }"}"#
        ));
        assert!(!candidate(b""));
    }

    fn covers(query: &str) -> bool {
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        doc.operations
            .iter()
            .all(|(_, op)| covered(&op.node.selection_set.node, &doc).is_some())
    }

    #[test]
    fn a_poll_is_stored_only_when_nothing_is_new() {
        let query = "{ inboxCounts { total } p: inboxChanges(after: 1) { events { seq } } }";
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        let (_, op) = doc.operations.iter().next().expect("an operation");
        let cacheable = covered(&op.node.selection_set.node, &doc).expect("covered");
        let idle = serde_json::json!({ "data": { "inboxCounts": {}, "p": { "events": [] } } });
        let busy =
            serde_json::json!({ "data": { "inboxCounts": {}, "p": { "events": [{ "seq": 2 }] } } });
        assert!(cacheable.allows(&idle));
        assert!(!cacheable.allows(&busy));
        // Without its events selected, a poll cannot show it is idle.
        let bare = serde_json::json!({ "data": { "p": { "lastSeq": 1 } } });
        assert!(!cacheable.allows(&bare));
        // Only directly at the root, where its response key is known.
        assert!(!covers(
            "{ ...F } fragment F on Query { inboxChanges(after: 1) { lastSeq } }"
        ));
    }

    #[test]
    fn only_inbox_fields_at_the_root_are_covered() {
        assert!(covers(
            "{ inbox(first: 20) { lastSeq } inboxCounts { total } __typename }"
        ));
        assert!(covers(
            "query Q($a: Int!) { inboxChanges(after: $a) { lastSeq } ...F } fragment F on Query { notifications { totalCount } }"
        ));
        assert!(covers("{ ... on Query { inboxCounts { unread } } }"));
        assert!(!covers("{ inboxCounts { total } me { email } }"));
        assert!(!covers("{ notification(id: 1) { title } }"));
        assert!(!covers("{ notificationPreferences { emailEnabled } }"));
        assert!(!covers("{ ...F } fragment F on Query { me { id } }"));
        assert!(!covers("{ ...Missing }"));
        assert!(!covers("{ ...A } fragment A on Query { ...A }"));
        assert!(!covers("{ __schema { types { name } } }"));
    }
}
