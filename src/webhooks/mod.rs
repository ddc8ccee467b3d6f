//! Signed status webhooks (issue 12).
//!
//! - An operator registers endpoints with `herald webhook create URL
//!   [--events …]` (`storage::webhooks`); each has its own signing secret.
//! - A change an endpoint listens for writes one outbox row per (endpoint,
//!   event) in the transaction of the change itself (`storage::webhooks::
//!   record`, called where inbox events are written), so a crash cannot
//!   lose one.
//! - The worker delivers them as a second kind of job, through its own
//!   queue with its own concurrency, signed as Standard Webhooks defines,
//!   retried with backoff for about a day.

pub mod signing;

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::wire::{NotificationV1, Payload, Status};

/// The events an endpoint can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Sent,
    Failed,
    Skipped,
    Canceled,
    Expired,
    /// Once per notification, at its first READ.
    Read,
}

impl EventType {
    pub const ALL: [Self; 6] = [
        Self::Sent,
        Self::Failed,
        Self::Skipped,
        Self::Canceled,
        Self::Expired,
        Self::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "notification.sent",
            Self::Failed => "notification.failed",
            Self::Skipped => "notification.skipped",
            Self::Canceled => "notification.canceled",
            Self::Expired => "notification.expired",
            Self::Read => "notification.read",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The event a move to `status` reports, if any (final statuses only).
    pub fn for_status(status: Status) -> Option<Self> {
        match status {
            Status::Sent => Some(Self::Sent),
            Status::Failed => Some(Self::Failed),
            Status::Skipped => Some(Self::Skipped),
            Status::Canceled => Some(Self::Canceled),
            Status::Expired => Some(Self::Expired),
            Status::Pending | Status::Processing | Status::Scheduled => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of event names, stored comma-separated (`webhook_endpoints.events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSet(Vec<EventType>);

impl EventSet {
    pub fn all() -> Self {
        Self(EventType::ALL.to_vec())
    }

    /// Names separated by commas or whitespace; an unknown one is an error
    /// naming it and the known ones.
    pub fn parse(names: &str) -> Result<Self, String> {
        let mut events = Vec::new();
        for name in names
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|n| !n.is_empty())
        {
            let event = EventType::parse(name).ok_or_else(|| {
                format!(
                    "unknown event {name:?}; the events are {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                )
            })?;
            events.push(event);
        }
        if events.is_empty() {
            return Err("no event named".to_owned());
        }
        events.sort_unstable();
        events.dedup();
        Ok(Self(events))
    }

    /// The events of several sets (`--events a,b --events c`).
    pub fn union(sets: impl IntoIterator<Item = Self>) -> Option<Self> {
        let mut events: Vec<EventType> = sets.into_iter().flat_map(|s| s.0).collect();
        if events.is_empty() {
            return None;
        }
        events.sort_unstable();
        events.dedup();
        Some(Self(events))
    }

    pub fn contains(&self, event: EventType) -> bool {
        self.0.contains(&event)
    }

    /// The stored form: names joined by commas.
    pub fn to_stored(&self) -> String {
        self.0
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An endpoint URL: absolute `http` or `https` with a host, no credentials.
/// Where it points is checked at each delivery (the name may resolve
/// elsewhere by then).
pub fn parse_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("not a URL ({e}): {raw:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "a webhook URL must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("a webhook URL needs a host: {raw:?}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a webhook URL must not carry credentials".to_owned());
    }
    Ok(url)
}

/// One webhook body, as sent (Standard Webhooks' `type`, `timestamp`,
/// `data`). Public and versioned (`v`), not the table (DESIGN.md, 10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEventV1 {
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the change happened (RFC 3339, UTC, milliseconds).
    pub timestamp: String,
    pub data: WebhookNotificationV1,
}

impl Payload for WebhookEventV1 {
    const VERSION: u32 = 1;
}

/// The notification an event is about, named as the GraphQL API names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookNotificationV1 {
    /// The notification's GraphQL `id`.
    pub id: String,
    /// The recipient's Herald user id.
    pub user_id: String,
    /// The application key that sent it; `null`: the recipient did.
    pub sender_app_id: Option<String>,
    pub status: Status,
    pub title: String,
    pub category: Option<String>,
    pub data: Option<serde_json::Value>,
    pub attempts: i32,
    /// Why the last attempt failed (FAILED: why it gave up).
    pub error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub read_at: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl WebhookEventV1 {
    pub fn new(event_type: EventType, at: DateTime<Utc>, n: &NotificationV1) -> Self {
        Self {
            event_type: event_type.as_str().to_owned(),
            timestamp: rfc3339(at),
            data: WebhookNotificationV1 {
                id: n.id.to_string(),
                user_id: n.user_id.to_string(),
                sender_app_id: n.sender_app_id.map(|a| a.to_string()),
                status: n.status,
                title: n.title.clone(),
                category: n.category.clone(),
                data: n.data.clone(),
                attempts: n.attempts,
                error: n.last_error.clone(),
                created_at: rfc3339(n.created_at),
                sent_at: n.sent_at.map(rfc3339),
                read_at: n.read_at.map(rfc3339),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_sets_parse_and_refuse_unknown_names() {
        let set = EventSet::parse("notification.read, notification.sent").expect("parses");
        assert_eq!(set.to_stored(), "notification.sent,notification.read");
        assert!(set.contains(EventType::Read));
        assert!(!set.contains(EventType::Failed));
        let err = EventSet::parse("notification.sent,notification.opened").expect_err("unknown");
        assert!(err.contains("notification.opened"), "{err}");
        assert!(EventSet::parse(" , ").is_err());
        assert_eq!(EventSet::all().to_stored().split(',').count(), 6);
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(parse_url("https://example.com/hook").is_ok());
        assert!(parse_url("http://127.0.0.1:9000/x").is_ok());
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "",
            "http://",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
