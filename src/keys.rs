//! The one key builder: every Redis key, stream, group and channel name
//! Herald uses, under the configured prefix (DESIGN.md, invariant 7). The
//! in-process backends use the same names, so both behave alike.

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

    /// Status events, for every instance's subscriber.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// A user's inbox version, bumped on every change. A cached page holds
    /// the version it was read at and counts only while that is current, so
    /// one increment hides every cached page at once.
    pub fn inbox_version(&self, user_id: i64) -> String {
        format!("{}inbox:{user_id}:version", self.prefix)
    }

    pub fn inbox_page(&self, user_id: i64, page: u64, page_size: u64) -> String {
        format!(
            "{}inbox:{user_id}:page:{page}:size:{page_size}",
            self.prefix
        )
    }

    /// A user's public fields (id, email, createdAt), for `recipient`.
    pub fn user(&self, user_id: i64) -> String {
        format!("{}user:{user_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_starts_with_the_prefix() {
        let keys = Keys::new("t1:");
        for name in [
            keys.queue(),
            keys.queue_group(),
            keys.dead_letters(),
            keys.events(),
            keys.inbox_version(7),
            keys.inbox_page(7, 2, 10),
            keys.user(7),
        ] {
            assert!(name.starts_with("t1:"), "{name}");
        }
    }

    #[test]
    fn page_keys_differ_by_user_page_and_size() {
        let keys = Keys::new("h:");
        let a = keys.inbox_page(1, 1, 10);
        assert_ne!(a, keys.inbox_page(1, 2, 10));
        assert_ne!(a, keys.inbox_page(1, 1, 20));
        assert_ne!(a, keys.inbox_page(2, 1, 10));
    }
}
