//! SeaORM entities: the storage shape of Herald's tables.
//!
//! Storage types only: no GraphQL derives here, so the API can change without
//! touching storage and the other way round.

pub mod api_key;
pub mod idempotency_record;
pub mod inbox_counter;
pub mod inbox_event;
pub mod notification;
pub mod notification_preference;
pub mod user;
pub mod webhook_delivery;
pub mod webhook_endpoint;

pub mod prelude {
    pub use super::api_key::Entity as ApiKey;
    pub use super::idempotency_record::Entity as IdempotencyRecord;
    pub use super::inbox_counter::Entity as InboxCounter;
    pub use super::inbox_event::Entity as InboxEvent;
    pub use super::notification::{Entity as Notification, Status as NotificationStatus};
    pub use super::user::Entity as User;
}
