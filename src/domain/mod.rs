//! Validated newtypes for what clients send. Parsing only: no I/O here.
//!
//! A value of one of these types has passed validation, so the layers below
//! never check again.

mod email;
pub mod idempotency;
pub mod inbox;
pub mod notification;
pub mod password;
pub mod recipient;
pub mod send;

pub use email::Email;
pub use notification::{Content, Title};
pub use password::Password;
pub use recipient::{ExternalId, Recipient};

/// Why a client-supplied value was rejected; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: &'static str,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
