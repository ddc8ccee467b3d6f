//! Durations as settings are written: `90`, `250ms`, `90s`, `15m`, `1h`,
//! `7d`; and duration settings with the range of values they accept.
//!
//! The parser is `const` so that every default is checked as Herald compiles.

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    NotANumber,
    UnknownUnit,
    Zero,
}

/// Parses `90` (seconds), `250ms`, `90s`, `15m`, `1h`, `7d`; zero is refused.
pub const fn parse(raw: &str) -> Result<Duration, DurationError> {
    let bytes = raw.trim_ascii().as_bytes();
    let mut n: u64 = 0;
    let mut digits = 0;
    while digits < bytes.len() && bytes[digits].is_ascii_digit() {
        let digit = (bytes[digits] - b'0') as u64;
        n = match n.checked_mul(10) {
            Some(tens) => match tens.checked_add(digit) {
                Some(sum) => sum,
                None => return Err(DurationError::NotANumber),
            },
            None => return Err(DurationError::NotANumber),
        };
        digits += 1;
    }
    if digits == 0 {
        return Err(DurationError::NotANumber);
    }
    let (_, unit) = bytes.split_at(digits);
    let duration = match unit {
        b"ms" => Duration::from_millis(n),
        b"" | b"s" => Duration::from_secs(n),
        b"m" => Duration::from_secs(n.saturating_mul(60)),
        b"h" => Duration::from_secs(n.saturating_mul(3600)),
        b"d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(DurationError::UnknownUnit),
    };
    if duration.is_zero() {
        return Err(DurationError::Zero);
    }
    Ok(duration)
}

/// `parse` with a message for people.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    parse(raw).map_err(|e| match e {
        DurationError::NotANumber => {
            format!("{raw:?} is not a duration (e.g. 3600, 90s, 15m, 1h, 7d)")
        }
        DurationError::UnknownUnit => {
            format!("{raw:?}: unknown unit (use ms, s, m, h or d)")
        }
        DurationError::Zero => "a duration must be positive".to_owned(),
    })
}

/// A duration setting: its default as written on the command line, and the
/// values it accepts.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub text: &'static str,
    pub default: Duration,
    min: (&'static str, Duration),
    max: (&'static str, Duration),
}

impl Span {
    /// Fails the build when a text does not parse or the default is out of range.
    pub const fn new(default: &'static str, min: &'static str, max: &'static str) -> Self {
        let (Ok(value), Ok(low), Ok(high)) = (parse(default), parse(min), parse(max)) else {
            panic!("a duration default or bound does not parse");
        };
        assert!(
            low.as_nanos() <= value.as_nanos() && value.as_nanos() <= high.as_nanos(),
            "a duration default is out of its range"
        );
        Self {
            text: default,
            default: value,
            min: (min, low),
            max: (max, high),
        }
    }

    /// A clap value parser: a duration within the range.
    pub fn parser(self) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
        move |raw| {
            let value = parse_duration(raw)?;
            if value < self.min.1 || value > self.max.1 {
                return Err(format!(
                    "{raw:?} is out of range: use {} to {}",
                    self.min.0, self.max.0
                ));
            }
            Ok(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("18446744073709551616").is_err());
    }

    #[test]
    fn a_span_refuses_values_outside_its_range() {
        let span = Span::new("1h", "1s", "1d");
        let parser = span.parser();
        assert_eq!(span.default, Duration::from_secs(3600));
        assert_eq!(parser("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parser("1d"), Ok(Duration::from_secs(86_400)));
        let err = parser("25h").expect_err("too long");
        assert!(err.contains("1s to 1d"), "{err}");
        assert!(parser("999ms").is_err());
        assert!(parser(&u64::MAX.to_string()).is_err());
    }
}
