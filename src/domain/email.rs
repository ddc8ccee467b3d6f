use std::str::FromStr;

use email_address::EmailAddress;

use super::ValidationError;

/// The longest address SMTP can carry (RFC 5321: 64 local + @ + 255 domain).
const MAX_LEN: usize = 320;

/// An email address: trimmed, syntactically valid (RFC 5322 addr-spec, so
/// `a+tag@example.com` is fine), and lowercased for storage and lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValidationError::new("email", "must not be empty"));
        }
        if trimmed.len() > MAX_LEN {
            return Err(ValidationError::new(
                "email",
                format!("must be at most {MAX_LEN} characters"),
            ));
        }
        // Display names (`Name <a@b>`) and comments are not addresses here.
        if trimmed.contains(['<', '>', '(', ')', ' ']) {
            return Err(ValidationError::new("email", "is not a valid address"));
        }
        let parsed = EmailAddress::from_str(trimmed)
            .map_err(|_| ValidationError::new("email", "is not a valid address"))?;
        // The domain must look like a mail domain: at least one dot, no IP literal.
        let domain = parsed.domain();
        if !domain.contains('.') || domain.starts_with('[') || domain.ends_with('.') {
            return Err(ValidationError::new("email", "is not a valid address"));
        }
        Ok(Self(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plus_addresses_and_lowercases_them() {
        let email = Email::parse("  Ada+Herald@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "ada+herald@example.com");
    }

    #[test]
    fn accepts_subdomains_and_dots_in_the_local_part() {
        assert!(Email::parse("first.last@mail.example.co.uk").is_ok());
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for raw in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "ada@",
            "ada@@example.com",
            "ada@example",
            "Ada <ada@example.com>",
            "ada @example.com",
            "ada@[127.0.0.1]",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} should be rejected");
        }
    }

    #[test]
    fn rejects_overlong_addresses() {
        let raw = format!("{}@example.com", "a".repeat(400));
        assert!(Email::parse(&raw).is_err());
    }
}
