//! Bounds on what one request may ask for. async-graphql enforces
//! complexity, recursive depth and directives (none by default); this module
//! measures depth (introspection-aware), aliases, introspection fan-out and
//! "one login or register per request", and names every limit and its value
//! in the error a client reads.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
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
            max_depth: crate::config::defaults::MAX_DEPTH.default,
            max_complexity: crate::config::defaults::MAX_COMPLEXITY.default,
            max_aliases: crate::config::defaults::MAX_ALIASES.default,
            max_directives: crate::config::defaults::MAX_DIRECTIVES.default,
            max_recursive_depth: crate::config::defaults::MAX_RECURSIVE_DEPTH.default,
            max_query_bytes: crate::config::defaults::MAX_QUERY_BYTES.default,
            max_batch: crate::config::defaults::MAX_BATCH.default,
            timeout: crate::config::defaults::REQUEST_TIMEOUT.default,
        }
    }
}

impl QueryLimits {
    /// async-graphql's own limit messages, with the value of the limit.
    pub fn explain(&self, message: &str) -> Option<String> {
        match message {
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
    /// `login` and `register` fields in mutations, each time it is reached:
    /// directly, through inline fragments, or through every spread of a
    /// named fragment.
    pub credential_fields: usize,
    /// The deepest field nesting of any operation, fragments followed. A
    /// `__schema` selection counts as nothing, as in graphql-armor: the
    /// standard introspection query nests `ofType` deeper than any limit a
    /// schema of this size needs, and [`Census::introspection_lists`]
    /// bounds what introspection can fan out to instead.
    pub depth: usize,
    /// The most `fields` / `interfaces` / `possibleTypes` / `inputFields`
    /// nested inside one `__schema` or `__type` selection. graphql-js
    /// refuses 3 (`MaxIntrospectionDepthRule`): each such level multiplies
    /// the response by the size of the schema.
    pub introspection_lists: usize,
}

/// Introspection's list fields, whose nesting multiplies a response.
const INTROSPECTION_LISTS: [&str; 4] = ["fields", "interfaces", "possibleTypes", "inputFields"];

/// Beyond this many nested selection sets or fragment spreads, the walk
/// stops and reports the document as too deep (the parser already bounds
/// plain nesting; chains of fragments are bounded only by the query size).
const WALK_LIMIT: usize = 256;

/// A fragment's contribution, computed once however often it is spread.
#[derive(Clone, Copy)]
struct FragmentMeasure {
    depth: usize,
    lists: usize,
}

struct Walker<'a> {
    doc: &'a ExecutableDocument,
    measured: HashMap<&'a str, FragmentMeasure>,
    /// Credential fields per named fragment, counted once however often
    /// it is spread.
    credentials: HashMap<&'a str, usize>,
    /// Fragments being measured: a cycle is left to validation, which
    /// refuses it.
    open: HashSet<&'a str>,
}

impl<'a> Walker<'a> {
    /// Field depth of a selection set and, when `lists` is set, the
    /// nesting of introspection list fields in it.
    fn measure(&mut self, set: &'a SelectionSet, level: usize) -> FragmentMeasure {
        let mut out = FragmentMeasure { depth: 0, lists: 0 };
        if level > WALK_LIMIT {
            return FragmentMeasure {
                depth: WALK_LIMIT,
                lists: WALK_LIMIT,
            };
        }
        for item in &set.items {
            let inner = match &item.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let below = self.measure(&field.node.selection_set.node, level + 1);
                    FragmentMeasure {
                        depth: if name == "__schema" {
                            0
                        } else {
                            1 + below.depth
                        },
                        lists: below.lists + usize::from(INTROSPECTION_LISTS.contains(&name)),
                    }
                }
                Selection::InlineFragment(fragment) => {
                    self.measure(&fragment.node.selection_set.node, level + 1)
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str(), level + 1)
                }
            };
            out.depth = out.depth.max(inner.depth);
            out.lists = out.lists.max(inner.lists);
        }
        out
    }

    fn fragment(&mut self, name: &'a str, level: usize) -> FragmentMeasure {
        self.memoized(
            name,
            |w| &mut w.measured,
            FragmentMeasure { depth: 0, lists: 0 },
            |w, set| w.measure(set, level),
        )
    }

    /// What `compute` finds in fragment `name`, computed once however often
    /// it is spread; `unknown` for a missing fragment or one that spreads
    /// itself (a cycle is left to validation, which refuses it).
    fn memoized<T: Copy>(
        &mut self,
        name: &'a str,
        memo: fn(&mut Self) -> &mut HashMap<&'a str, T>,
        unknown: T,
        compute: impl FnOnce(&mut Self, &'a SelectionSet) -> T,
    ) -> T {
        if let Some(known) = memo(self).get(name) {
            return *known;
        }
        let doc = self.doc;
        let Some((key, fragment)) = doc.fragments.get_key_value(name) else {
            return unknown;
        };
        let key = key.as_str();
        if !self.open.insert(key) {
            return unknown;
        }
        let found = compute(self, &fragment.node.selection_set.node);
        self.open.remove(key);
        memo(self).insert(key, found);
        found
    }

    /// Aliases, and the list nesting under every introspection root field.
    fn count(&mut self, census: &mut Census, set: &'a SelectionSet, level: usize) {
        if level > WALK_LIMIT {
            return;
        }
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    if field.node.alias.is_some() {
                        census.aliases += 1;
                    }
                    let name = field.node.name.node.as_str();
                    if name == "__schema" || name == "__type" {
                        let lists = self
                            .measure(&field.node.selection_set.node, level + 1)
                            .lists;
                        census.introspection_lists = census.introspection_lists.max(lists);
                    }
                    self.count(census, &field.node.selection_set.node, level + 1);
                }
                Selection::InlineFragment(fragment) => {
                    self.count(census, &fragment.node.selection_set.node, level + 1);
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }

    /// `login` and `register` fields at a mutation's root level, following
    /// inline fragments and every spread of a named fragment (the root's
    /// fields are the only ones of the `Mutation` type).
    fn credentials(&mut self, set: &'a SelectionSet, level: usize) -> usize {
        if level > WALK_LIMIT {
            // Too deep to tell: as many as it takes to refuse it.
            return usize::MAX;
        }
        let mut found = 0usize;
        for item in &set.items {
            let here = match &item.node {
                Selection::Field(field) => usize::from(matches!(
                    field.node.name.node.as_str(),
                    "login" | "register"
                )),
                Selection::InlineFragment(fragment) => {
                    self.credentials(&fragment.node.selection_set.node, level + 1)
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment_credentials(spread.node.fragment_name.node.as_str(), level + 1)
                }
            };
            found = found.saturating_add(here);
        }
        found
    }

    fn fragment_credentials(&mut self, name: &'a str, level: usize) -> usize {
        self.memoized(
            name,
            |w| &mut w.credentials,
            0,
            |w, set| w.credentials(set, level),
        )
    }
}

impl Census {
    pub fn of(doc: &ExecutableDocument) -> Self {
        let mut census = Self::default();
        let mut walker = Walker {
            doc,
            measured: HashMap::new(),
            credentials: HashMap::new(),
            open: HashSet::new(),
        };
        let ops: Vec<_> = match &doc.operations {
            DocumentOperations::Single(op) => vec![op],
            DocumentOperations::Multiple(ops) => ops.values().collect(),
        };
        for op in ops {
            let set = &op.node.selection_set.node;
            census.depth = census.depth.max(walker.measure(set, 0).depth);
            walker.count(&mut census, set, 0);
            if op.node.ty == OperationType::Mutation {
                census.credential_fields = census
                    .credential_fields
                    .saturating_add(walker.credentials(set, 0));
            }
        }
        for fragment in doc.fragments.values() {
            walker.count(&mut census, &fragment.node.selection_set.node, 0);
        }
        census
    }
}

/// Refuses documents nested too deep, with too many aliases, with
/// introspection that fans out, or with more than one `login` or
/// `register` (aliases would otherwise multiply password guesses).
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    pub max_depth: usize,
    pub max_aliases: usize,
}

/// graphql-js's `MaxIntrospectionDepthRule` refuses a third nested list.
pub const MAX_INTROSPECTION_LISTS: usize = 2;

impl DocumentLimits {
    /// Why `doc` may not run, if it may not.
    pub fn check(&self, doc: &ExecutableDocument) -> Result<Census, String> {
        let census = Census::of(doc);
        if census.depth > self.max_depth {
            return Err(format!(
                "query depth exceeds the limit of {}",
                self.max_depth
            ));
        }
        if census.aliases > self.max_aliases {
            return Err(format!(
                "the query has {} aliases; the limit is {}",
                census.aliases, self.max_aliases
            ));
        }
        if census.introspection_lists > MAX_INTROSPECTION_LISTS {
            return Err(format!(
                "introspection nests fields, interfaces, possibleTypes or inputFields {} deep; the limit is {}",
                census.introspection_lists, MAX_INTROSPECTION_LISTS
            ));
        }
        if census.credential_fields > 1 {
            return Err("login and register may appear once per request".to_owned());
        }
        Ok(census)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(query: &str) -> Census {
        Census::of(&async_graphql::parser::parse_query(query).expect("parses"))
    }

    /// An operation whose fragments each spread the next twice, `links`
    /// deep, down to `leaf`: 2^links copies of it once expanded.
    fn doubling(operation: &str, on: &str, links: usize, leaf: &str) -> String {
        let mut q = format!("{operation} {{ ...F0 }}");
        for i in 0..links {
            q.push_str(&format!(
                " fragment F{i} on {on} {{ ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        q.push_str(&format!(" fragment F{links} on {on} {{ {leaf} }}"));
        q
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
    fn depth_counts_fields_through_fragments_but_not_under_schema() {
        assert_eq!(census("{ __typename }").depth, 1);
        assert_eq!(census("{ me { id } }").depth, 2);
        assert_eq!(
            census("{ ...F } fragment F on Query { notifications { ... on NotificationPage { items { id } } } }")
                .depth,
            3
        );
        assert_eq!(
            census("{ __type(name: \"Query\") { fields { type { ofType { name } } } } }").depth,
            5
        );
        assert_eq!(
            census("{ me { id } __schema { types { fields { type { ofType { ofType { name } } } } } } }")
                .depth,
            2
        );
    }

    #[test]
    fn fragment_cycles_and_unknown_fragments_do_not_hang() {
        assert_eq!(
            census("{ ...A } fragment A on Query { ...A me { id } }").depth,
            2
        );
        assert_eq!(census("{ ...Missing }").depth, 0);
        // A doubling chain of 40 fragments is measured once per fragment.
        assert_eq!(
            census(&doubling("query", "Query", 40, "me { id }")).depth,
            2
        );
    }

    #[test]
    fn introspection_list_nesting_is_counted_under_schema_and_type() {
        let lists = |q: &str| census(q).introspection_lists;
        assert_eq!(
            lists("{ __schema { types { fields { name } inputFields { name } } } }"),
            1
        );
        assert_eq!(
            lists("{ __schema { types { fields { type { fields { name } } } } } }"),
            2
        );
        assert_eq!(
            lists(
                "{ __type(name: \"Query\") { fields { type { fields { type { interfaces { name } } } } } } }"
            ),
            3
        );
        assert_eq!(
            lists(
                "{ __schema { ...T } } fragment T on __Schema { types { possibleTypes { fields { name } } } }"
            ),
            2
        );
        assert_eq!(lists("{ me { id } }"), 0);
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

    #[test]
    fn credential_fields_are_counted_through_fragments() {
        let credentials = |q: &str| census(q).credential_fields;
        assert_eq!(
            credentials(
                "mutation { ...F } fragment F on Mutation { a: login { token } b: login { token } }"
            ),
            2
        );
        assert_eq!(
            credentials("mutation { ...F ...F } fragment F on Mutation { login { token } }"),
            2
        );
        assert_eq!(
            credentials(
                "mutation { ...A } fragment A on Mutation { ...B register { token } } fragment B on Mutation { login { token } }"
            ),
            2
        );
        assert_eq!(
            credentials(
                "mutation { ... on Mutation { a: login { token } } ... { b: login { token } } }"
            ),
            2
        );
        assert_eq!(
            credentials(
                "mutation { ... on Mutation { ...F } } fragment F on Mutation { login { token } }"
            ),
            1
        );
        // A fragment only a query spreads does not count.
        assert_eq!(
            credentials("query { ...F } fragment F on Query { login }"),
            0
        );
        // Cycles and missing fragments end the walk.
        assert_eq!(
            credentials("mutation { ...A } fragment A on Mutation { ...A login { token } }"),
            1
        );
        assert_eq!(credentials("mutation { ...Missing }"), 0);
    }

    #[test]
    fn a_doubling_chain_of_fragments_counts_without_overflow() {
        let q = doubling("mutation", "Mutation", 80, "login { token }");
        assert_eq!(census(&q).credential_fields, usize::MAX);
    }
}
