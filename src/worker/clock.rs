//! The time the worker, the sweeper and the circuit breaker decide by.
//! Production reads the system clock; a test injects a clock it moves
//! forward, to cover an outage of hours or a retry window of a day.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, to the millisecond (as stored).
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        crate::storage::now()
    }
}
