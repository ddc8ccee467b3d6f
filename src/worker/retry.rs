//! When to try again: exponential backoff with jitter, a bounded number of
//! attempts, and no retry for permanent failures.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;

use crate::{mailer::SendError, storage::notifications::Outcome};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: i32,
    /// The delay after the first failure; doubled after each further one.
    pub base: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based): between
    /// half and all of `base * 2^(attempt-1)`, capped at `max_delay`.
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let full = self.base.saturating_mul(1 << exp).min(self.max_delay);
        let half = full / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter)
    }

    /// What attempt number `attempt`, which ended in `result`, comes to.
    pub fn outcome(
        &self,
        result: Result<(), SendError>,
        attempt: i32,
        now: DateTime<Utc>,
    ) -> Outcome {
        match result {
            Ok(()) => Outcome::Sent,
            Err(SendError::Permanent(error)) => Outcome::Failed { error },
            Err(SendError::Transient(error)) if attempt >= self.max_attempts => Outcome::Failed {
                error: format!("{error} (gave up after {attempt} attempts)"),
            },
            Err(SendError::Transient(error)) => Outcome::Retry {
                error,
                retry_at: now
                    + chrono::Duration::from_std(self.delay(attempt))
                        .unwrap_or(chrono::Duration::MAX),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_within_their_jitter_and_stop_at_the_cap() {
        let p = policy();
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(
                d1 >= Duration::from_secs(1) && d1 <= Duration::from_secs(2),
                "{d1:?}"
            );
            let d3 = p.delay(3);
            assert!(
                d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs(8),
                "{d3:?}"
            );
            let d30 = p.delay(30);
            assert!(
                d30 >= Duration::from_secs(30) && d30 <= Duration::from_secs(60),
                "{d30:?}"
            );
        }
    }

    #[test]
    fn transient_failures_retry_until_the_last_attempt() {
        let p = policy();
        let now = Utc::now();
        let transient = || Err(SendError::Transient("451 try later".into()));
        assert!(
            matches!(p.outcome(transient(), 1, now), Outcome::Retry { retry_at, .. } if retry_at > now)
        );
        assert!(matches!(
            p.outcome(transient(), 4, now),
            Outcome::Retry { .. }
        ));
        assert!(
            matches!(p.outcome(transient(), 5, now), Outcome::Failed { error } if error.contains("5 attempts"))
        );
    }

    #[test]
    fn permanent_failures_never_retry_and_success_is_sent() {
        let p = policy();
        let now = Utc::now();
        let permanent = Err(SendError::Permanent("550 no such user".into()));
        assert_eq!(
            p.outcome(permanent, 1, now),
            Outcome::Failed {
                error: "550 no such user".into()
            }
        );
        assert_eq!(p.outcome(Ok(()), 3, now), Outcome::Sent);
    }
}
