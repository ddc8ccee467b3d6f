//! The circuit breaker over the mail server. After `OPEN_AFTER` deliveries
//! in a row found the server unreachable, the circuit opens: the worker
//! stops taking deliveries and the sweeper stops enqueuing them, so an
//! outage neither drains the queue into FAILED nor churns it. While open,
//! the worker probes the server (a session without a message) with
//! backoff, from the retry base up to the longest retry delay; the first
//! answer closes the circuit. Opening and closing are logged; `/readyz`
//! shows the state. Times come from the worker's clock.

use std::{sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};

use super::retry::to_chrono;

/// Unreachable results in a row that open the circuit.
pub const OPEN_AFTER: u32 = 3;

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    first_probe: Duration,
    max_probe: Duration,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        /// Unreachable results since the server last answered.
        failures: u32,
    },
    Open {
        since: DateTime<Utc>,
        next_probe: DateTime<Utc>,
        /// The wait before `next_probe`; the next wait doubles it.
        backoff: Duration,
    },
}

/// The circuit as `/readyz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Deliveries flow.
    Closed,
    /// Deliveries wait for the mail server.
    Open {
        since: DateTime<Utc>,
        next_probe: DateTime<Utc>,
    },
}

impl Breaker {
    /// Probes wait `first_probe`, doubling up to `max_probe`.
    pub fn new(first_probe: Duration, max_probe: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            first_probe,
            max_probe: max_probe.max(first_probe),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn circuit(&self) -> Circuit {
        match *self.lock() {
            State::Closed { .. } => Circuit::Closed,
            State::Open {
                since, next_probe, ..
            } => Circuit::Open { since, next_probe },
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { .. })
    }

    /// The server answered: a reply to a message (even a refusal), or a
    /// probe that got through; not a timeout or a broken connection, which
    /// say nothing either way. Closes the circuit.
    pub fn answered(&self, now: DateTime<Utc>) {
        let mut state = self.lock();
        if let State::Open { since, .. } = *state {
            tracing::info!(
                open_for_s = (now - since).num_seconds(),
                "the mail server answers: circuit closed, deliveries resume"
            );
        }
        *state = State::Closed { failures: 0 };
    }

    /// A delivery found the server unreachable. The `OPEN_AFTER`th in a row
    /// opens the circuit.
    pub fn unreachable(&self, error: &str, now: DateTime<Utc>) {
        let mut state = self.lock();
        let State::Closed { failures } = *state else {
            return;
        };
        let failures = failures + 1;
        if failures < OPEN_AFTER {
            *state = State::Closed { failures };
            return;
        }
        tracing::warn!(
            error,
            first_probe_in_s = self.first_probe.as_secs_f64(),
            "the mail server is unreachable: circuit open, deliveries paused until it answers"
        );
        *state = State::Open {
            since: now,
            next_probe: now + to_chrono(self.first_probe),
            backoff: self.first_probe,
        };
    }

    /// When the next probe is due; `None` while closed.
    pub fn next_probe(&self) -> Option<DateTime<Utc>> {
        match *self.lock() {
            State::Open { next_probe, .. } => Some(next_probe),
            State::Closed { .. } => None,
        }
    }

    /// A probe found the server still unreachable: wait twice as long
    /// before the next one, at most `max_probe`.
    pub fn probe_failed(&self, error: &str, now: DateTime<Utc>) {
        let mut state = self.lock();
        if let State::Open { since, backoff, .. } = *state {
            let backoff = backoff.saturating_mul(2).min(self.max_probe);
            tracing::info!(
                error,
                next_probe_in_s = backoff.as_secs_f64(),
                "the mail server is still unreachable"
            );
            *state = State::Open {
                since,
                next_probe: now + to_chrono(backoff),
                backoff,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(Duration::from_secs(5), Duration::from_secs(60))
    }

    #[test]
    fn it_opens_after_unreachable_results_in_a_row_only() {
        let b = breaker();
        let now = Utc::now();
        for _ in 1..OPEN_AFTER {
            b.unreachable("refused", now);
        }
        b.answered(now);
        for _ in 1..OPEN_AFTER {
            b.unreachable("refused", now);
        }
        assert_eq!(b.circuit(), Circuit::Closed, "an answer in between resets");
        b.unreachable("refused", now);
        assert_eq!(
            b.circuit(),
            Circuit::Open {
                since: now,
                next_probe: now + chrono::Duration::seconds(5)
            }
        );
    }

    #[test]
    fn probes_back_off_up_to_the_cap_and_an_answer_closes_it() {
        let b = breaker();
        let now = Utc::now();
        for _ in 0..OPEN_AFTER {
            b.unreachable("refused", now);
        }
        let mut waits = Vec::new();
        for _ in 0..6 {
            b.probe_failed("refused", now);
            let next = b.next_probe().expect("open");
            waits.push((next - now).num_seconds());
        }
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        // More failures while open change nothing.
        b.unreachable("refused", now);
        assert_eq!((b.next_probe().expect("open") - now).num_seconds(), 60);
        b.answered(now);
        assert_eq!(b.circuit(), Circuit::Closed);
        assert!(!b.is_open());
    }
}
