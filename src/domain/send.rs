//! What a send carries besides its title and content (contract-apps.graphql):
//! an idempotency key, a schedule (`sendAt`, `expiresAt`), a category and a
//! JSON `data` object. Parsing only, against the caller's clock.

use chrono::{DateTime, TimeDelta, Utc};

use super::ValidationError;

pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;
pub const CATEGORY_MAX_CHARS: usize = 64;
pub const DATA_MAX_BYTES: usize = 8 * 1024;
/// `sendAt` may lie this far in the past (a client's clock, a retry).
pub const SEND_AT_PAST_SLACK: TimeDelta = TimeDelta::seconds(5);
/// A `sendAt` further ahead than this is refused.
pub const SEND_AT_MAX_AHEAD: TimeDelta = TimeDelta::days(90);
/// A `sendAt` less than this ahead is sent now (stored PENDING, not
/// SCHEDULED).
pub const SCHEDULE_THRESHOLD: TimeDelta = TimeDelta::seconds(1);

/// `idempotencyKey`: 1..=255 characters, no NUL, kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let chars = raw.chars().count();
        if chars == 0 {
            return Err(ValidationError::new("idempotencyKey", "must not be empty"));
        }
        if chars > IDEMPOTENCY_KEY_MAX_CHARS {
            return Err(ValidationError::new(
                "idempotencyKey",
                format!("must be at most {IDEMPOTENCY_KEY_MAX_CHARS} characters (got {chars})"),
            ));
        }
        if raw.contains('\0') {
            // Postgres text cannot hold it.
            return Err(ValidationError::new(
                "idempotencyKey",
                "must not contain NUL",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `category`: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category(String);

impl Category {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let mut chars = raw.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if !first_ok || !rest_ok || raw.len() > CATEGORY_MAX_CHARS {
            return Err(ValidationError::new(
                "category",
                "must match [a-z0-9][a-z0-9._-]{0,63}",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `data`: a JSON object of at most 8 KiB (as compact JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    value: serde_json::Value,
    /// The compact JSON text, as stored.
    text: String,
}

impl Data {
    pub fn parse(value: serde_json::Value) -> Result<Self, ValidationError> {
        if !value.is_object() {
            return Err(ValidationError::new("data", "must be a JSON object"));
        }
        let text = serde_json::to_string(&value)
            .map_err(|_| ValidationError::new("data", "must be a JSON object"))?;
        if text.len() > DATA_MAX_BYTES {
            return Err(ValidationError::new(
                "data",
                format!(
                    "must be at most {DATA_MAX_BYTES} bytes as JSON (got {})",
                    text.len()
                ),
            ));
        }
        Ok(Self { value, text })
    }

    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// Compact JSON; object keys in sorted order (serde_json's map), so one
    /// object always has one text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// When to deliver: `send_at` set means SCHEDULED until then; `expires_at`
/// set means not after then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Timing {
    /// `sendAt` at most 5 s in the past and at most 90 days ahead of `now`;
    /// `expiresAt` after `sendAt` (when given) and after `now`. A `sendAt`
    /// less than a second ahead is kept (it is what the sender asked) but
    /// does not schedule: see `scheduled`.
    pub fn parse(
        send_at: Option<DateTime<Utc>>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        if let Some(at) = send_at {
            if at < now - SEND_AT_PAST_SLACK {
                return Err(ValidationError::new(
                    "sendAt",
                    "must not be more than 5 seconds in the past",
                ));
            }
            if at > now + SEND_AT_MAX_AHEAD {
                return Err(ValidationError::new(
                    "sendAt",
                    "must not be more than 90 days ahead",
                ));
            }
        }
        if let Some(expires) = expires_at {
            if expires <= now {
                return Err(ValidationError::new("expiresAt", "must be in the future"));
            }
            if send_at.is_some_and(|at| expires <= at) {
                return Err(ValidationError::new("expiresAt", "must be after sendAt"));
            }
        }
        Ok(Self {
            send_at,
            expires_at,
        })
    }

    /// Stored SCHEDULED (rather than PENDING) at `now`: `sendAt` more than
    /// a second ahead.
    pub fn scheduled(&self, now: DateTime<Utc>) -> bool {
        self.send_at.is_some_and(|at| at - now > SCHEDULE_THRESHOLD)
    }
}

/// Everything a send stores besides its title, content and recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendOptions {
    pub timing: Timing,
    pub category: Option<Category>,
    pub data: Option<Data>,
    /// The application key that sends it (`None`: a user, to themselves).
    pub sender_app_id: Option<i64>,
    /// Recorded in the notification's transaction when the send has a key.
    pub idempotency: Option<super::idempotency::Idempotency>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn idempotency_keys_are_bounded_in_characters() {
        assert!(IdempotencyKey::parse("k").is_ok());
        assert!(IdempotencyKey::parse(&"é".repeat(255)).is_ok());
        let e = IdempotencyKey::parse(&"é".repeat(256)).expect_err("too long");
        assert_eq!(e.field, "idempotencyKey");
        assert!(IdempotencyKey::parse("").is_err());
        assert_eq!(
            IdempotencyKey::parse("a\0b").expect_err("NUL").field,
            "idempotencyKey"
        );
    }

    #[test]
    fn categories_follow_their_pattern() {
        for ok in ["a", "0", "billing.invoice", "a-b_c.d", &"a".repeat(64)] {
            assert!(Category::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", ".a", "-a", "a b", "é", "a/b", &"a".repeat(65)] {
            assert_eq!(Category::parse(bad).expect_err(bad).field, "category");
        }
    }

    #[test]
    fn data_is_an_object_of_at_most_8_kib() {
        assert!(Data::parse(serde_json::json!({})).is_ok());
        for bad in [
            serde_json::json!([1]),
            serde_json::json!("x"),
            serde_json::json!(null),
        ] {
            assert_eq!(Data::parse(bad).expect_err("not an object").field, "data");
        }
        // {"k":"…"} is 8 bytes of framing.
        let fits = serde_json::json!({ "k": "x".repeat(DATA_MAX_BYTES - 8) });
        assert_eq!(
            Data::parse(fits).expect("fits").as_str().len(),
            DATA_MAX_BYTES
        );
        let over = serde_json::json!({ "k": "x".repeat(DATA_MAX_BYTES - 7) });
        assert!(Data::parse(over).is_err());
    }

    #[test]
    fn one_object_has_one_text() {
        let a = Data::parse(serde_json::json!({"b": 1, "a": [true, null]})).expect("a");
        let b = Data::parse(serde_json::from_str(r#"{ "a":[true,null],"b":1 }"#).expect("json"))
            .expect("b");
        assert_eq!(a.as_str(), b.as_str());
    }

    #[test]
    fn timing_bounds() {
        let now = at(0);
        assert!(Timing::parse(Some(at(-5)), None, now).is_ok());
        assert_eq!(
            Timing::parse(Some(at(-6)), None, now)
                .expect_err("past")
                .field,
            "sendAt"
        );
        assert!(Timing::parse(Some(now + SEND_AT_MAX_AHEAD), None, now).is_ok());
        assert!(
            Timing::parse(
                Some(now + SEND_AT_MAX_AHEAD + TimeDelta::seconds(1)),
                None,
                now
            )
            .is_err()
        );
        let e = Timing::parse(Some(at(60)), Some(at(60)), now).expect_err("not after");
        assert_eq!(e.field, "expiresAt");
        assert_eq!(
            Timing::parse(None, Some(at(0)), now)
                .expect_err("now")
                .field,
            "expiresAt"
        );
        assert!(Timing::parse(Some(at(60)), Some(at(61)), now).is_ok());
        assert!(Timing::parse(None, Some(at(1)), now).is_ok());
    }

    #[test]
    fn only_a_send_at_over_a_second_ahead_schedules() {
        let now = at(0);
        let timing = |s| Timing::parse(Some(at(s)), None, now).expect("ok");
        assert!(!timing(-3).scheduled(now));
        assert!(!timing(1).scheduled(now));
        assert!(timing(2).scheduled(now));
        assert!(!Timing::default().scheduled(now));
    }
}
