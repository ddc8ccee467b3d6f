//! The sweep for internals in responses: every body, error message and close
//! reason these tests receive goes through [`assert_clean`] (from
//! [`json_body`] and the websocket client), against the patterns in
//! `tests/leaks.txt`, which the schema fuzzer uses too. `data` is skipped:
//! it holds what clients stored, which may be any text at all.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

const PATTERNS: &str = include_str!("../leaks.txt");

fn patterns() -> &'static [Regex] {
    static COMPILED: OnceLock<Vec<Regex>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        PATTERNS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| Regex::new(line).unwrap_or_else(|e| panic!("tests/leaks.txt: {e}")))
            .collect()
    })
}

/// The first pattern `text` matches, and what it matched.
fn leak_in(text: &str) -> Option<(&'static str, String)> {
    patterns()
        .iter()
        .find_map(|re| re.find(text).map(|m| (re.as_str(), m.as_str().to_owned())))
}

/// Fails the test when `text` carries SQL, a file path, a Rust type name
/// or a panic message.
pub fn assert_clean(what: &str, text: &str) {
    if let Some((pattern, found)) = leak_in(text) {
        panic!("{what} leaks internals: {found:?} (pattern {pattern:?}) in {text}");
    }
}

/// [`assert_clean`] on every string and key of a JSON response except
/// under `data`.
pub fn assert_value_clean(value: &Value) {
    match value {
        Value::String(text) => assert_clean("a response", text),
        Value::Array(items) => items.iter().for_each(assert_value_clean),
        Value::Object(fields) => {
            for (key, field) in fields {
                assert_clean("a response key", key);
                if key != "data" {
                    assert_value_clean(field);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Reads a JSON response body, after checking it leaks nothing.
pub async fn json_body(res: reqwest::Response) -> Value {
    let text = res.text().await.expect("response body");
    match serde_json::from_str(&text) {
        Ok(value) => {
            assert_value_clean(&value);
            value
        }
        Err(e) => {
            assert_clean("a non-JSON body", &text);
            panic!("expected a JSON body ({e}): {text}");
        }
    }
}

#[test]
fn the_patterns_catch_what_a_careless_server_would_say() {
    for leak in [
        r#"error returned from database: duplicate key value violates unique constraint "users_email_key""#,
        "Query Error: SELECT \"notifications\".\"id\" FROM \"notifications\"",
        "DbErr(Conn(RuntimeErr(SqlxError(PoolTimedOut))))",
        "Custom { kind: Other, error: \"boom\" }",
        "IoError { kind: ConnectionRefused }",
        "thread 'tokio-runtime-worker' panicked at src/worker/mod.rs:88:14",
        "called `Option::unwrap()` on a `None` value",
        "failed to open /root/.local/share/herald/herald.db",
        "herald::storage::notifications::find failed",
        "Some(\"x\")",
        "invalid digit found in string",
        "Redis error: WRONGTYPE Operation against a key",
        "no such table: users",
        "SMTP: connecting: Connection refused (os error 111)",
        "connecting to 10.0.0.7:587 failed",
    ] {
        assert!(leak_in(leak).is_some(), "not caught: {leak}");
    }
}

#[test]
fn the_patterns_let_herald_messages_through() {
    for fine in [
        "wrong email or password",
        "email: must not be empty",
        "pageSize must be between 1 and 100 (got 0)",
        "query depth exceeds the limit of 10",
        "the query has 31 aliases; the limit is 30",
        "Unknown field \"nope\" on type \"Query\".",
        "Invalid value for argument \"page\", expected type \"Int\"",
        "too many login attempts; retry in 900 s",
        "request body exceeds the limit of 1048576 bytes",
        "an internal error occurred",
        "the request body is not valid JSON: expected value at line 1 column 2",
        "the mail server could not be reached",
        "the mail server's TLS certificate was not trusted",
        "SMTP 451: transient error (451): 4.3.0 try again later",
    ] {
        assert!(
            leak_in(fine).is_none(),
            "flagged: {fine} ({:?})",
            leak_in(fine)
        );
    }
}
