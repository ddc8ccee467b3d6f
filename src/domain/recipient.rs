//! Who a send or a user token is for, as a client named them: exactly one
//! of a user id, an email, or an application's external id (which may
//! bring the email to create its user with).

use super::{Email, ValidationError};

pub const EXTERNAL_ID_MAX_CHARS: usize = 255;

/// An application's own id for one of its users: 1..=255 characters, kept
/// as sent (it is the application's key, not ours to normalise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let chars = raw.chars().count();
        if raw.trim().is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if chars > EXTERNAL_ID_MAX_CHARS {
            return Err(ValidationError::new(
                field,
                format!("must be at most {EXTERNAL_ID_MAX_CHARS} characters (got {chars})"),
            ));
        }
        // Postgres text cannot hold NUL.
        if raw.contains('\0') {
            return Err(ValidationError::new(field, "must not contain NUL"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ExternalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The names a client used for the identifiers, for error messages:
/// `to.userId` in a send, `userId` for `issueUserToken`.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// What "exactly one" errors name.
    pub whole: &'static str,
    pub user_id: &'static str,
    pub email: &'static str,
    pub external_id: &'static str,
    /// Whether an email alone names a user (a send's `to`), or only comes
    /// with an external id (`issueUserToken`).
    pub email_alone: bool,
}

/// `sendNotification`'s `to`.
pub const TO: Fields = Fields {
    whole: "to",
    user_id: "to.userId",
    email: "to.email",
    external_id: "to.externalId",
    email_alone: true,
};

/// `issueUserToken`'s arguments.
pub const TOKEN_ARGS: Fields = Fields {
    whole: "userId, externalId",
    user_id: "userId",
    email: "email",
    external_id: "externalId",
    email_alone: false,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Id(i64),
    Email(Email),
    /// Created with `email` (and no password) when unknown, if it has one.
    External {
        id: ExternalId,
        email: Option<Email>,
    },
}

impl Recipient {
    pub fn parse(
        fields: &Fields,
        user_id: Option<&str>,
        email_arg: Option<&str>,
        external_id: Option<&str>,
    ) -> Result<Self, ValidationError> {
        let email =
            |raw: &str| Email::parse(raw).map_err(|e| ValidationError::new(fields.email, e.reason));
        let exactly_one = || {
            let email = if fields.email_alone { ", email" } else { "" };
            ValidationError::new(
                fields.whole,
                format!(
                    "give exactly one of {}{email}, {}",
                    fields.user_id, fields.external_id
                ),
            )
        };
        match (user_id, email_arg, external_id) {
            (Some(id), None, None) => {
                let id = id
                    .parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| ValidationError::new(fields.user_id, "is not a user id"))?;
                Ok(Self::Id(id))
            }
            (None, Some(address), None) if fields.email_alone => Ok(Self::Email(email(address)?)),
            (None, address, Some(id)) => Ok(Self::External {
                id: ExternalId::parse(fields.external_id, id)?,
                email: address.map(email).transpose()?,
            }),
            _ => Err(exactly_one()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_identifier_and_email_only_with_an_external_id() {
        assert_eq!(
            Recipient::parse(&TO, Some("7"), None, None),
            Ok(Recipient::Id(7))
        );
        assert!(matches!(
            Recipient::parse(&TO, None, Some("A@example.com"), None),
            Ok(Recipient::Email(e)) if e.as_str() == "a@example.com"
        ));
        assert!(matches!(
            Recipient::parse(&TO, None, Some("a@example.com"), Some("u-1")),
            Ok(Recipient::External { email: Some(_), .. })
        ));
        for (id, email, ext) in [
            (None, None, None),
            (Some("7"), Some("a@example.com"), None),
            (Some("7"), None, Some("u-1")),
        ] {
            let e = Recipient::parse(&TO, id, email, ext).expect_err("not exactly one");
            assert_eq!(e.field, "to");
        }
        let e = Recipient::parse(&TOKEN_ARGS, None, Some("a@example.com"), None)
            .expect_err("an email alone names nobody for a token");
        assert_eq!(e.field, "userId, externalId");
    }

    #[test]
    fn each_identifier_is_checked_under_its_own_name() {
        let field = |r: Result<Recipient, ValidationError>| r.expect_err("bad").field;
        assert_eq!(
            field(Recipient::parse(&TO, Some("x"), None, None)),
            "to.userId"
        );
        assert_eq!(
            field(Recipient::parse(&TO, Some("-1"), None, None)),
            "to.userId"
        );
        assert_eq!(
            field(Recipient::parse(&TO, None, Some("nope"), None)),
            "to.email"
        );
        assert_eq!(
            field(Recipient::parse(&TO, None, None, Some(""))),
            "to.externalId"
        );
        assert_eq!(
            field(Recipient::parse(&TO, None, None, Some("a\0b"))),
            "to.externalId"
        );
        let long = "x".repeat(256);
        assert_eq!(
            field(Recipient::parse(&TO, None, None, Some(&long))),
            "to.externalId"
        );
        assert!(Recipient::parse(&TO, None, None, Some(&"x".repeat(255))).is_ok());
    }
}
