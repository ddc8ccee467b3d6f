use secrecy::{ExposeSecret, SecretString};

use super::ValidationError;

pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 128;

/// A password of 8..=128 characters (Unicode scalar values, not bytes),
/// kept whole: never trimmed, never truncated.
#[derive(Debug)]
pub struct Password(SecretString);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err(ValidationError::new(
                "password",
                format!("must be at least {MIN_CHARS} characters"),
            ));
        }
        if chars > MAX_CHARS {
            return Err(ValidationError::new(
                "password",
                format!("must be at most {MAX_CHARS} characters"),
            ));
        }
        Ok(Self(SecretString::from(raw)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_characters_not_bytes() {
        // 8 characters, 24 bytes.
        assert!(Password::parse("ééééééé€").is_ok());
        assert!(Password::parse("ééééééé").is_err());
    }

    #[test]
    fn accepts_the_bounds_and_rejects_past_them() {
        assert!(Password::parse(&"x".repeat(MIN_CHARS)).is_ok());
        assert!(Password::parse(&"x".repeat(MAX_CHARS)).is_ok());
        assert!(Password::parse(&"x".repeat(MIN_CHARS - 1)).is_err());
        assert!(Password::parse(&"x".repeat(MAX_CHARS + 1)).is_err());
    }

    #[test]
    fn keeps_surrounding_spaces() {
        let p = Password::parse("  spaced out  ").expect("valid");
        assert_eq!(p.expose(), "  spaced out  ");
    }
}
