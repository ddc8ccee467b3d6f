//! The one key builder: every Redis key, stream, group and channel name
//! Herald uses, under the configured prefix (DESIGN.md, invariant 7). The
//! in-process backends use the same names, so both behave alike.
//!
//! No client-supplied text reaches a name as it is: an email becomes its
//! digest, other text is kept only when it is short and plain. A name is
//! thus bounded and never holds whitespace or control characters.

use std::net::IpAddr;

use sha2::{Digest as _, Sha256};

/// The first 128 bits of `text`'s SHA-256, in hex: a fixed-size, plain
/// stand-in for text a client chose.
fn digest(text: &str) -> String {
    let hash = Sha256::digest(text.as_bytes());
    hex::encode(&hash[..16])
}

/// `text` itself when it is plain (at most 64 ASCII letters, digits or
/// `-`), as the token ids Herald issues are; else `h:` and its digest (a
/// plain part has no `:`, so the two never meet).
fn plain_or_digest(text: &str) -> String {
    let plain = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if plain {
        text.to_owned()
    } else {
        format!("h:{}", digest(text))
    }
}

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The delivery queue (a stream of `{id}` entries).
    pub fn queue(&self) -> String {
        format!("{}queue", self.prefix)
    }

    /// The workers' consumer group on `queue`.
    pub fn queue_group(&self) -> String {
        format!("{}workers", self.prefix)
    }

    /// Queue entries delivered too often without an outcome.
    pub fn dead_letters(&self) -> String {
        format!("{}queue:dead", self.prefix)
    }

    /// The webhook queue: the worker's second kind of job, on a stream of
    /// its own so a slow receiver never holds up email.
    pub fn webhook_queue(&self) -> String {
        format!("{}webhooks", self.prefix)
    }

    /// The workers' consumer group on `webhook_queue`.
    pub fn webhook_queue_group(&self) -> String {
        format!("{}webhook-workers", self.prefix)
    }

    /// Webhook queue entries delivered too often without an outcome.
    pub fn webhook_dead_letters(&self) -> String {
        format!("{}webhooks:dead", self.prefix)
    }

    /// Inbox event hints, for every instance's subscriber.
    pub fn inbox_events(&self) -> String {
        format!("{}inbox-events", self.prefix)
    }

    /// A user's inbox keys: `inbox:{<user>}:`, the user id as the hash tag
    /// (DESIGN.md, invariant 12), so the keys one read uses together (the
    /// last seq and a cached page) land on one Redis Cluster slot.
    fn inbox(&self, user_id: i64) -> String {
        format!("{}inbox:{{{user_id}}}:", self.prefix)
    }

    /// A user's newest inbox snapshot (last seq and counts), written after
    /// each commit only if newer than what it holds. A cached page holds the
    /// seq it was read at and counts only while that is the snapshot's.
    pub fn inbox_snapshot(&self, user_id: i64) -> String {
        format!("{}snapshot", self.inbox(user_id))
    }

    /// A cached page of `notifications(page, pageSize)`.
    pub fn inbox_page(&self, user_id: i64, page: u64, page_size: u64) -> String {
        format!("{}page:{page}:size:{page_size}", self.inbox(user_id))
    }

    /// A cached page of `inbox(first, after, filter)`: `before` is the
    /// cursor's seq (`-` for the first page), `filter` a short plain tag
    /// of the filter (see `storage::inbox::Filter::tag`).
    pub fn inbox_cursor_page(
        &self,
        user_id: i64,
        first: u64,
        before: Option<i64>,
        filter: &str,
    ) -> String {
        let before = before.map_or_else(|| "-".to_owned(), |seq| seq.to_string());
        format!(
            "{}cursor:{first}:{before}:{}",
            self.inbox(user_id),
            plain_or_digest(filter)
        )
    }

    /// A cached GraphQL response of the user's (`responses.rs`): `digest`
    /// is the hex digest of the request as it came, so a client's text
    /// never reaches the name.
    pub fn response(&self, user_id: i64, digest: &str) -> String {
        format!("{}response:{digest}", self.inbox(user_id))
    }

    /// A user's public fields (id, email, createdAt), for `recipient`.
    pub fn user(&self, user_id: i64) -> String {
        format!("{}user:{user_id}", self.prefix)
    }

    /// A user's cached email preferences, with the user id as the hash tag
    /// like the inbox keys.
    pub fn preferences(&self, user_id: i64) -> String {
        format!("{}prefs:{{{user_id}}}", self.prefix)
    }

    /// Login failures for one account, by the digest of the normalised
    /// email the client sent (registered or not).
    pub fn login_failures_account(&self, email: &str) -> String {
        format!("{}rl:login:account:{}", self.prefix, digest(email))
    }

    pub fn login_failures_ip(&self, ip: IpAddr) -> String {
        format!("{}rl:login:ip:{ip}", self.prefix)
    }

    pub fn registrations_ip(&self, ip: IpAddr) -> String {
        format!("{}rl:register:ip:{ip}", self.prefix)
    }

    /// A user's send bucket. `send-us`: its time is in microseconds (the
    /// earlier `send` held milliseconds; the two versions of a rolling
    /// deploy must not read each other's).
    pub fn sends_user(&self, user_id: i64) -> String {
        format!("{}rl:send-us:user:{user_id}", self.prefix)
    }

    /// An application's send bucket, by its API key's id.
    pub fn sends_app(&self, key_id: i64) -> String {
        format!("{}rl:send-us:app:{key_id}", self.prefix)
    }

    /// A logged-out token, by its `jti` (a UUID Herald issued, kept as is so
    /// that marks written before this rule still match).
    pub fn revoked_token(&self, jti: &str) -> String {
        format!("{}revoked:{}", self.prefix, plain_or_digest(jti))
    }

    pub fn tokens_valid_after(&self, user_id: i64) -> String {
        format!("{}tokens-valid-after:{user_id}", self.prefix)
    }

    /// A persisted query's text, by its SHA-256 (64 lowercase hex digits,
    /// checked before a name is built; kept as it is).
    pub fn persisted_query(&self, sha256: &str) -> String {
        format!("{}apq:{}", self.prefix, plain_or_digest(sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile text a client can put where a name takes text.
    fn hostile() -> Vec<String> {
        vec![
            String::new(),
            "a@example.com".to_owned(),
            "evil\r\nDEL *\n@example.com".to_owned(),
            "tab\tspace @x\u{0}\u{7f}\u{85}\u{2028}é".to_owned(),
            "*?[]{}:".to_owned(),
            "x".repeat(1 << 20),
        ]
    }

    /// Every name, each method called with every hostile input; keyed by
    /// the method's name.
    fn every_name(keys: &Keys) -> Vec<(&'static str, String)> {
        let ips: [IpAddr; 3] = [
            "203.0.113.7".parse().expect("ip"),
            "2001:db8::1".parse().expect("ip"),
            "::ffff:192.0.2.1".parse().expect("ip"),
        ];
        let ids = [0, 7, -1, i64::MIN, i64::MAX];
        let mut names = vec![
            ("queue", keys.queue()),
            ("queue_group", keys.queue_group()),
            ("dead_letters", keys.dead_letters()),
            ("webhook_queue", keys.webhook_queue()),
            ("webhook_queue_group", keys.webhook_queue_group()),
            ("webhook_dead_letters", keys.webhook_dead_letters()),
            ("inbox_events", keys.inbox_events()),
        ];
        for id in ids {
            names.push(("inbox_snapshot", keys.inbox_snapshot(id)));
            names.push(("inbox_page", keys.inbox_page(id, u64::MAX, 0)));
            names.push((
                "inbox_cursor_page",
                keys.inbox_cursor_page(id, u64::MAX, Some(i64::MIN), "o1"),
            ));
            names.push(("inbox_cursor_page", keys.inbox_cursor_page(id, 0, None, "")));
            names.push(("response", keys.response(id, &"f0".repeat(16))));
            names.push(("user", keys.user(id)));
            names.push(("preferences", keys.preferences(id)));
            names.push(("sends_user", keys.sends_user(id)));
            names.push(("sends_app", keys.sends_app(id)));
            names.push(("tokens_valid_after", keys.tokens_valid_after(id)));
        }
        for ip in ips {
            names.push(("login_failures_ip", keys.login_failures_ip(ip)));
            names.push(("registrations_ip", keys.registrations_ip(ip)));
        }
        for text in hostile() {
            names.push(("login_failures_account", keys.login_failures_account(&text)));
            names.push(("revoked_token", keys.revoked_token(&text)));
            names.push(("persisted_query", keys.persisted_query(&text)));
        }
        names
    }

    #[test]
    fn every_name_is_prefixed_short_and_plain_even_for_hostile_input() {
        let keys = Keys::new("t1:");
        for (method, name) in every_name(&keys) {
            assert!(name.starts_with("t1:"), "{method}: {name}");
            assert!(name.len() <= 100, "{method}: {} bytes", name.len());
            assert!(
                !name.chars().any(|c| c.is_control() || c.is_whitespace()),
                "{method}: {name:?}"
            );
        }
    }

    #[test]
    fn the_test_covers_every_method() {
        let source = include_str!("keys.rs");
        let methods: std::collections::BTreeSet<&str> = source
            .split("pub fn ")
            .skip(1)
            .filter_map(|rest| rest.split_once('('))
            .filter(|(name, args)| args.trim_start().starts_with("&self") && *name != "prefix")
            .map(|(name, _)| name)
            .collect();
        let covered: std::collections::BTreeSet<&str> = every_name(&Keys::new("p:"))
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(methods, covered);
    }

    #[test]
    fn client_text_is_told_apart_and_issued_ids_stay_as_they_are() {
        let keys = Keys::new("h:");
        let a = keys.login_failures_account("a@example.com");
        assert_ne!(a, keys.login_failures_account("b@example.com"));
        assert_eq!(a, keys.login_failures_account("a@example.com"));
        assert!(!a.contains("example"), "no email in a key: {a}");
        let jti = uuid::Uuid::new_v4().to_string();
        assert_eq!(keys.revoked_token(&jti), format!("h:revoked:{jti}"));
        assert_ne!(keys.revoked_token("a\nb"), keys.revoked_token("a\rb"));
        let hash = "ab".repeat(32);
        assert_eq!(keys.persisted_query(&hash), format!("h:apq:{hash}"));
    }

    #[test]
    fn page_keys_differ_by_user_page_and_size() {
        let keys = Keys::new("h:");
        let a = keys.inbox_page(1, 1, 10);
        assert_ne!(a, keys.inbox_page(1, 2, 10));
        assert_ne!(a, keys.inbox_page(1, 1, 20));
        assert_ne!(a, keys.inbox_page(2, 1, 10));
    }

    /// Redis Cluster's hash tag of `key`: the text between the first `{`
    /// and the next `}`, when not empty.
    fn hash_tag(key: &str) -> Option<&str> {
        let (_, rest) = key.split_once('{')?;
        let (tag, _) = rest.split_once('}')?;
        (!tag.is_empty()).then_some(tag)
    }

    #[test]
    fn a_users_inbox_keys_share_the_user_id_as_hash_tag() {
        let keys = Keys::new("h:");
        for id in [0, 7, -1, i64::MAX] {
            let tag = id.to_string();
            for key in [
                keys.inbox_snapshot(id),
                keys.inbox_page(id, 3, 10),
                keys.inbox_cursor_page(id, 20, Some(99), "i0"),
                keys.inbox_cursor_page(id, 20, None, "x{y}"),
            ] {
                assert_eq!(hash_tag(&key), Some(tag.as_str()), "{key}");
            }
        }
    }

    #[test]
    fn cursor_page_keys_differ_by_user_size_cursor_and_filter() {
        let keys = Keys::new("h:");
        let a = keys.inbox_cursor_page(1, 20, None, "f");
        assert_ne!(a, keys.inbox_cursor_page(2, 20, None, "f"));
        assert_ne!(a, keys.inbox_cursor_page(1, 21, None, "f"));
        assert_ne!(a, keys.inbox_cursor_page(1, 20, Some(5), "f"));
        assert_ne!(a, keys.inbox_cursor_page(1, 20, None, "g"));
        assert_ne!(
            keys.inbox_cursor_page(1, 20, Some(5), "f"),
            keys.inbox_cursor_page(1, 20, Some(6), "f")
        );
    }
}
