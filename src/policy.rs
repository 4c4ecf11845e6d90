//! The error policy: how often a failed message is redelivered, and how long to wait in between.
//!
//! The engine owns this decision for every transport; transports only carry it out.

use crate::transport::support::backoff::Backoff;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::message::HandlerError;

/// Redelivery settings shared by every transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries in total before a message is dead-lettered (1 = never redeliver).
    pub max_attempts: u32,
    /// Delay before the first redelivery.
    pub retry_delay: Duration,
    /// Upper bound of the exponential back-off.
    pub max_retry_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            retry_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(30),
        }
    }
}

/// What to do with a message whose handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deliver it again after this delay.
    Retry(Duration),
    /// Stop trying; move it to the dead-letter place.
    DeadLetter,
}

impl RetryPolicy {
    /// Checks the values; `max_attempts` must be at least 1.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::config(
                "maxAttempts must be at least 1 (1 means: no redelivery)",
            ));
        }
        if self.max_retry_delay < self.retry_delay {
            return Err(Error::config(
                "maxRetryDelay must not be smaller than retryDelay",
            ));
        }
        Ok(())
    }

    /// Decides about a delivery that failed on its `attempt`-th try (1-based).
    pub fn decide(&self, attempt: u32, error: &HandlerError) -> Decision {
        if error.unrecoverable || attempt >= self.max_attempts {
            Decision::DeadLetter
        } else {
            Decision::Retry(self.backoff(attempt))
        }
    }

    /// The back-off before redelivery `attempt + 1`: `retry_delay · 2^(attempt-1)`, capped at
    /// `max_retry_delay`, with the one jitter law of [`Backoff`].
    pub fn backoff(&self, attempt: u32) -> Duration {
        Backoff {
            min: self.retry_delay,
            max: self.max_retry_delay,
        }
        .delay(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max,
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_millis(1000),
        }
    }

    #[test]
    fn retries_until_max_attempts_then_dead_letters() {
        let p = policy(3);
        let e = HandlerError::new("boom");
        assert!(matches!(p.decide(1, &e), Decision::Retry(_)));
        assert!(matches!(p.decide(2, &e), Decision::Retry(_)));
        assert_eq!(p.decide(3, &e), Decision::DeadLetter);
        assert_eq!(policy(1).decide(1, &e), Decision::DeadLetter);
    }

    #[test]
    fn unrecoverable_errors_are_not_retried() {
        let mut e = HandlerError::new("bad data");
        e.unrecoverable = true;
        assert_eq!(policy(5).decide(1, &e), Decision::DeadLetter);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = policy(10);
        for _ in 0..100 {
            let d1 = p.backoff(1).as_millis();
            assert!((80..=120).contains(&d1), "{d1}");
            let d3 = p.backoff(3).as_millis();
            assert!((320..=480).contains(&d3), "{d3}");
            assert!(p.backoff(30) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn zero_attempts_is_invalid() {
        assert_eq!(
            policy(0).validate().unwrap_err().code,
            crate::error::ErrorCode::InvalidConfig
        );
    }
}
