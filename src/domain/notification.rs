use super::ValidationError;

pub const TITLE_MAX_CHARS: usize = 255;
pub const CONTENT_MAX_BYTES: usize = 65_536;

/// A notification title: 1..=255 characters after trimming; stored trimmed.
/// It becomes an email subject, so line breaks are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            return Err(ValidationError::new("title", "must not be empty"));
        }
        if chars > TITLE_MAX_CHARS {
            return Err(ValidationError::new(
                "title",
                format!("must be at most {TITLE_MAX_CHARS} characters (got {chars})"),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "title",
                "must not contain line breaks or control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A notification body: 1..=65536 bytes of UTF-8, kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    pub fn parse(raw: String) -> Result<Self, ValidationError> {
        if raw.trim().is_empty() {
            return Err(ValidationError::new("content", "must not be empty"));
        }
        if raw.len() > CONTENT_MAX_BYTES {
            return Err(ValidationError::new(
                "content",
                format!(
                    "must be at most {CONTENT_MAX_BYTES} bytes (got {})",
                    raw.len()
                ),
            ));
        }
        if raw.contains('\0') {
            return Err(ValidationError::new("content", "must not contain NUL"));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded_in_characters() {
        assert_eq!(Title::parse("  Hello ").expect("ok").as_str(), "Hello");
        assert!(Title::parse(&"é".repeat(255)).is_ok());
        assert!(Title::parse(&"é".repeat(256)).is_err());
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse("").is_err());
        assert!(Title::parse("two\nlines").is_err());
    }

    #[test]
    fn content_is_bounded_in_bytes_and_kept_as_sent() {
        assert!(Content::parse("x".repeat(CONTENT_MAX_BYTES)).is_ok());
        assert!(Content::parse("x".repeat(CONTENT_MAX_BYTES + 1)).is_err());
        // 2-byte characters: 32768 fit, 32769 do not.
        assert!(Content::parse("é".repeat(32_768)).is_ok());
        assert!(Content::parse("é".repeat(32_769)).is_err());
        assert!(Content::parse(" \n ".into()).is_err());
        assert_eq!(
            Content::parse(" line 1\nline 2 ".into())
                .expect("ok")
                .as_str(),
            " line 1\nline 2 "
        );
    }
}
