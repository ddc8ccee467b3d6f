//! When to try again, and whether an attempt counts. Pure: it sees times,
//! attempt numbers and a kind of failure, never storage rows or mailer
//! errors (the worker translates both ways).
//!
//! - A mail server that cannot be reached is not the message's fault: the
//!   attempt is given back, and the circuit breaker paces the next ones,
//!   until `window` has passed since the notification was created.
//! - A temporary refusal (4xx) is retried with exponential backoff, capped
//!   at `max_delay`, until `window` has passed since the notification was
//!   created; `max_attempts` is only an upper bound.
//! - A permanent refusal (5xx) fails at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: an upper bound, set high enough
    /// for the window.
    pub max_attempts: i32,
    /// The delay after the first failure; doubled after each further one.
    pub base: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// How long after its creation a notification is still retried.
    pub window: Duration,
}

/// What went wrong with one attempt, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The mail server could not be reached, or would not talk (refused,
    /// timed out, TLS failed, `421`): not this message's fault.
    Unreachable,
    /// The server refused this message for now (4xx after MAIL, RCPT or
    /// DATA), or did not answer it in time.
    Temporary,
    /// The worker stopped without an outcome (its claim expired).
    Lost,
    /// The server will never take this message (5xx), or it cannot be built.
    Permanent,
}

/// What happens to the notification after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Due again at this time; the attempt counts.
    RetryAt(DateTime<Utc>),
    /// Due again at this time; the attempt does not count.
    GiveBack(DateTime<Utc>),
    /// The notification fails. `budget`: which budget ran out, if one did.
    GiveUp { budget: Option<String> },
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based): between
    /// half and all of `base * 2^(attempt-1)`, capped at `max_delay`.
    pub fn delay(&self, attempt: i32) -> Duration {
        let full = self.full_delay(attempt);
        let half = full / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter)
    }

    /// `base * 2^(attempt-1)`, capped at `max_delay`, without jitter.
    fn full_delay(&self, attempt: i32) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        self.base.saturating_mul(1 << exp).min(self.max_delay)
    }

    /// The least time `max_attempts` attempts can span (every delay at its
    /// shortest): when it is shorter than the window, the attempt bound,
    /// not the window, decides.
    pub fn shortest_span(&self) -> Duration {
        (1..self.max_attempts).map(|a| self.full_delay(a) / 2).sum()
    }

    /// The last moment a notification created at `created_at` is retried.
    pub fn deadline(&self, created_at: DateTime<Utc>) -> DateTime<Utc> {
        created_at + to_chrono(self.window)
    }

    /// What attempt number `attempt` of a notification created at
    /// `created_at`, which failed with `failure` at `now`, comes to.
    pub fn decide(
        &self,
        failure: Failure,
        attempt: i32,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Decision {
        let deadline = self.deadline(created_at);
        match failure {
            Failure::Permanent => Decision::GiveUp { budget: None },
            // The window bounds every kind of retry: a server that answers
            // `421` to this one message only, forever, while it takes the
            // others (so the circuit never opens), must not keep it alive.
            _ if now >= deadline => Decision::GiveUp {
                budget: Some(format!(
                    "gave up after retrying for {} since it was created",
                    human(self.window)
                )),
            },
            // Paced by the circuit breaker, not by the message's attempts.
            Failure::Unreachable => Decision::GiveBack(now + to_chrono(self.delay(1))),
            _ if attempt >= self.max_attempts => Decision::GiveUp {
                budget: Some(format!("gave up after {attempt} attempts")),
            },
            Failure::Lost => Decision::RetryAt(now),
            Failure::Temporary => {
                // The last try falls on the deadline rather than past it.
                Decision::RetryAt((now + to_chrono(self.delay(attempt))).min(deadline))
            }
        }
    }
}

/// A std duration as chrono's, saturating.
pub(super) fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `24h`, `90m`, `45s`: the largest whole unit.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 250,
            base: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(24 * 3600),
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
    fn temporary_failures_retry_until_the_window_has_passed() {
        let p = policy();
        let created = Utc::now();
        let hour = chrono::Duration::hours(1);
        let at = |hours: i64| created + hour * i32::try_from(hours).unwrap_or(0);
        for (attempt, now) in [(1, created), (40, at(12)), (120, at(23))] {
            match p.decide(Failure::Temporary, attempt, created, now) {
                Decision::RetryAt(t) => assert!(t > now && t <= at(24), "{t} after {now}"),
                other => panic!("attempt {attempt} at {now}: {other:?}"),
            }
        }
        // Close to the deadline, the retry falls on it, not past it.
        let close = at(24) - chrono::Duration::seconds(1);
        assert_eq!(
            p.decide(Failure::Temporary, 130, created, close),
            Decision::RetryAt(at(24))
        );
        match p.decide(Failure::Temporary, 131, created, at(24)) {
            Decision::GiveUp { budget: Some(why) } => assert!(why.contains("24h"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn max_attempts_is_an_upper_bound_within_the_window() {
        let p = RetryPolicy {
            max_attempts: 5,
            ..policy()
        };
        let now = Utc::now();
        assert!(matches!(
            p.decide(Failure::Temporary, 4, now, now),
            Decision::RetryAt(_)
        ));
        match p.decide(Failure::Temporary, 5, now, now) {
            Decision::GiveUp { budget: Some(why) } => assert!(why.contains("5 attempts"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreachable_server_uses_no_attempts_but_the_window_still_ends() {
        let p = policy();
        let created = Utc::now();
        // Past the attempt bound, within the window: given back.
        let within = created + chrono::Duration::hours(23);
        match p.decide(Failure::Unreachable, 10_000, created, within) {
            Decision::GiveBack(t) => assert!(t > within, "{t}"),
            other => panic!("{other:?}"),
        }
        // Once the window has passed: failed, whatever the attempts.
        let late = created + chrono::Duration::hours(24);
        match p.decide(Failure::Unreachable, 1, created, late) {
            Decision::GiveUp { budget: Some(why) } => assert!(why.contains("24h"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lost_claim_retries_at_once_until_the_budget_runs_out() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..policy()
        };
        let now = Utc::now();
        assert_eq!(p.decide(Failure::Lost, 2, now, now), Decision::RetryAt(now));
        assert!(matches!(
            p.decide(Failure::Lost, 3, now, now),
            Decision::GiveUp { budget: Some(_) }
        ));
    }

    #[test]
    fn permanent_failures_never_retry() {
        let p = policy();
        let now = Utc::now();
        assert_eq!(
            p.decide(Failure::Permanent, 1, now, now),
            Decision::GiveUp { budget: None }
        );
    }
}
