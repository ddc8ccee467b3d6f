//! What goes into the cache and over Pub/Sub: payload types of their own
//! (DESIGN.md, invariant 10), so two versions of Herald can share one Redis
//! during a rolling deploy. A storage model may change with a migration; a
//! payload changes only with its format version.
//!
//! Every payload is JSON with its format version in `v`. A reader ignores
//! fields it does not know (a newer minor change adds fields), and treats a
//! payload of another version as absent: a cache miss, an event skipped.

use chrono::{DateTime, Utc};
use entity::notification;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::domain::inbox::{Counts, InboxAction};

/// A payload type and its format version.
pub trait Payload: Serialize + DeserializeOwned {
    /// The version this release writes.
    const VERSION: u32;
    /// The oldest version this release still reads (every field it lacks
    /// has a default): a payload kept in the database outlives a release.
    const READS_FROM: u32 = Self::VERSION;
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    v: u32,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Deserialize)]
struct Probe {
    v: u32,
}

/// `payload` as JSON, its version in `v`.
pub fn encode<T: Payload>(payload: &T) -> serde_json::Result<String> {
    serde_json::to_string(&Envelope {
        v: T::VERSION,
        body: payload,
    })
}

/// `Ok(None)`: the payload is of another format version (another release
/// wrote it). An error: it is not a payload at all.
pub fn decode<T: Payload>(json: &str) -> serde_json::Result<Option<T>> {
    if !(T::READS_FROM..=T::VERSION).contains(&serde_json::from_str::<Probe>(json)?.v) {
        return Ok(None);
    }
    serde_json::from_str(json).map(Some)
}

/// A notification's status as payloads spell it.
///
/// No catch-all: a status a reader does not know fails the payload's
/// decoding (a cache miss, a skipped event, logged), so a new status raises
/// the format version of every payload that carries one (and the release
/// that adds it reads and writes the new version). SCHEDULED, CANCELED and
/// EXPIRED raised them (a release before them reads such a payload as one
/// of another version: a miss, a resync); SKIPPED (preferences) raised
/// them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Processing,
    Sent,
    Failed,
    Scheduled,
    Canceled,
    Expired,
    Skipped,
}

impl From<notification::Status> for Status {
    fn from(s: notification::Status) -> Self {
        match s {
            notification::Status::Pending => Self::Pending,
            notification::Status::Processing => Self::Processing,
            notification::Status::Sent => Self::Sent,
            notification::Status::Failed => Self::Failed,
            notification::Status::Scheduled => Self::Scheduled,
            notification::Status::Canceled => Self::Canceled,
            notification::Status::Expired => Self::Expired,
            notification::Status::Skipped => Self::Skipped,
        }
    }
}

/// A notification as clients see it (no claim or queue bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationV1 {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub content: String,
    pub status: Status,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Added with the inbox (absent from payloads of older releases, which
    /// read as 0 / null).
    #[serde(default)]
    pub seq: i64,
    #[serde(default)]
    pub seen_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub read_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub archived_at: Option<DateTime<Utc>>,
    /// Added with applications' sends (absent from older payloads: null).
    #[serde(default)]
    pub category: Option<String>,
    /// The sender's JSON object.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The application key that sent it (`None`: the recipient did).
    #[serde(default)]
    pub sender_app_id: Option<i64>,
}

impl From<notification::Model> for NotificationV1 {
    fn from(m: notification::Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            title: m.title,
            content: m.content,
            status: m.status.into(),
            attempts: m.attempts,
            last_error: m.last_error,
            next_attempt_at: m.next_attempt_at,
            sent_at: m.sent_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
            seq: m.seq,
            seen_at: m.seen_at,
            read_at: m.read_at,
            archived_at: m.archived_at,
            category: m.category,
            // Stored only after it parsed as an object; text that does not
            // parse (never written by Herald) reads as null.
            data: m.data.and_then(|d| serde_json::from_str(&d).ok()),
            send_at: m.send_at,
            expires_at: m.expires_at,
            sender_app_id: m.sender_app_id,
        }
    }
}

/// A user's newest inbox snapshot, as cached: what decides which of their
/// cached pages count. Stored only if newer (`Cache::set_if_newer` orders
/// it by `last_seq`, which every format version keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxSnapshotV1 {
    pub last_seq: i64,
    pub counts: Counts,
}

impl Payload for InboxSnapshotV1 {
    const VERSION: u32 = 1;
}

/// A cached page of `notifications(page, pageSize)`, newest first, read
/// at the user's seq `last_seq`, with the number of notifications then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageV1 {
    pub last_seq: i64,
    pub items: Vec<NotificationV1>,
    pub total: u64,
}

/// Version 3: read at a seq, not at an inbox version (version 2: its
/// notifications carry their seq and read state).
impl Payload for PageV1 {
    const VERSION: u32 = 5;
}

/// A cached page of `inbox(first, after, filter)`, with the user's counts
/// from the same snapshot, read at seq `last_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxPageV1 {
    pub last_seq: i64,
    pub counts: Counts,
    pub items: Vec<NotificationV1>,
    pub has_next_page: bool,
}

impl Payload for InboxPageV1 {
    const VERSION: u32 = 3;
}

/// One entry of a user's inbox log (`inbox_events.payload`), with the
/// user's counts right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEventV1 {
    pub user_id: i64,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub counts: Counts,
    pub change: InboxChangeV1,
}

impl Payload for InboxEventV1 {
    const VERSION: u32 = 3;
    /// The log keeps events of versions 1 and 2 (before the new statuses).
    const READS_FROM: u32 = 1;
}

/// The live hint published after a commit that wrote an inbox event: the
/// user, and the event (this release always sends it). A hint without an
/// event (as older releases sent for delivery status changes) says "read
/// the log after your last seq". Hints can be lost; subscribers repair from
/// the log by seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxHintV1 {
    pub user_id: i64,
    pub event: Option<InboxEventV1>,
}

impl Payload for InboxHintV1 {
    const VERSION: u32 = 3;
    const READS_FROM: u32 = 1;
}

/// What changed, by kind (the contract's InboxEvent types).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum InboxChangeV1 {
    NotificationCreated {
        notification: NotificationV1,
    },
    DeliveryStatusChanged {
        notification: NotificationV1,
        previous: Status,
    },
    NotificationsMarked {
        action: InboxAction,
        /// The notifications whose state changed (markNotifications);
        /// empty for markAllNotifications.
        ids: Vec<i64>,
        /// markAllNotifications: every notification with seq <= up_to.
        up_to: Option<i64>,
    },
}

impl InboxChangeV1 {
    /// The `inbox_events.kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotificationCreated { .. } => "NotificationCreated",
            Self::DeliveryStatusChanged { .. } => "DeliveryStatusChanged",
            Self::NotificationsMarked { .. } => "NotificationsMarked",
        }
    }
}

/// A user's email settings, as cached (`preferences.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencesV1 {
    /// The default for categories without their own setting; `None`: never
    /// set (email on).
    pub email: Option<bool>,
    /// The categories with their own setting, by category.
    pub categories: Vec<CategoryPreferenceV1>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryPreferenceV1 {
    pub category: String,
    pub email: bool,
}

impl Payload for PreferencesV1 {
    const VERSION: u32 = 1;
}

/// A user's public profile, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserV1 {
    pub id: i64,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// An application's id for the user; absent from payloads written
    /// before external ids existed.
    #[serde(default)]
    pub external_id: Option<String>,
}

impl From<entity::user::Model> for UserV1 {
    fn from(m: entity::user::Model) -> Self {
        Self {
            id: m.id,
            email: m.email,
            created_at: m.created_at,
            external_id: m.external_id,
        }
    }
}

impl Payload for UserV1 {
    const VERSION: u32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserV1 {
        UserV1 {
            id: 7,
            email: "a@example.com".into(),
            created_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap_or_default(),
            external_id: None,
        }
    }

    #[test]
    fn a_payload_round_trips_with_its_version() {
        let json = encode(&user()).expect("encode");
        assert!(json.contains("\"v\":1"), "{json}");
        assert_eq!(decode::<UserV1>(&json).expect("decode"), Some(user()));
        let named = UserV1 {
            external_id: Some("crm-7".into()),
            ..user()
        };
        let json = encode(&named).expect("encode");
        assert_eq!(decode::<UserV1>(&json).expect("decode"), Some(named));
    }

    #[test]
    fn unknown_extra_fields_still_decode() {
        // As a newer release may write during a rolling deploy.
        let json = r#"{"v":1,"id":7,"email":"a@example.com","created_at":"2023-11-14T22:13:20.123Z","nickname":"new","flags":[1,2]}"#;
        assert_eq!(decode::<UserV1>(json).expect("decode"), Some(user()));
        let event = r#"{"v":1,"user_id":7,"seq":3,"at":"2023-11-14T22:13:20.123Z","counts":{"total":1,"unread":1,"unseen":1,"archived":0},"change":{"kind":"DeliveryStatusChanged","notification":{"id":1,"user_id":7,"title":"t","content":"c","status":"SENT","attempts":1,"last_error":null,"next_attempt_at":null,"sent_at":null,"created_at":"2023-11-14T22:13:20.123Z","updated_at":"2023-11-14T22:13:20.123Z","priority":"high"},"previous":"PROCESSING","trace":"x"}}"#;
        let event = decode::<InboxEventV1>(event)
            .expect("decode")
            .expect("version 1");
        let InboxChangeV1::DeliveryStatusChanged {
            notification,
            previous,
        } = event.change
        else {
            panic!("a status change: {event:?}");
        };
        assert_eq!(notification.status, Status::Sent);
        assert_eq!(previous, Status::Processing);
    }

    /// A status this release does not know is no valid payload (readers
    /// miss or skip it), never a guess: new statuses come with a new version.
    #[test]
    fn an_unknown_status_is_not_decoded() {
        let event = r#"{"v":1,"user_id":7,"seq":3,"at":"2023-11-14T22:13:20.123Z","counts":{"total":1,"unread":1,"unseen":1},"change":{"kind":"DeliveryStatusChanged","notification":{"id":1,"user_id":7,"title":"t","content":"c","status":"BOUNCED","attempts":1,"last_error":null,"next_attempt_at":null,"sent_at":null,"created_at":"2023-11-14T22:13:20.123Z","updated_at":"2023-11-14T22:13:20.123Z"},"previous":"SENT"}}"#;
        assert!(decode::<InboxEventV1>(event).is_err());
    }

    #[test]
    fn another_version_is_absent_not_an_error() {
        let json = r#"{"v":2,"id":"u-7","mail":"a@example.com"}"#;
        assert_eq!(decode::<UserV1>(json).expect("not an error"), None);
    }

    #[test]
    fn what_is_not_a_payload_is_an_error() {
        assert!(decode::<UserV1>("not json").is_err());
        assert!(decode::<UserV1>(r#"{"id":7}"#).is_err(), "no version");
    }
}
