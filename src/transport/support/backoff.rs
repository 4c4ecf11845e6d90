//! One exponential back-off with one jitter law, used by every reconnect loop and by the engine's
//! retry policy, and the reconnect state that decides when the failure count starts again.

use std::time::{Duration, Instant};

/// Exponential back-off: `min · 2^(n-1)`, capped at `max`, with ±20 % jitter (so concurrent
/// clients do not retry in lock-step), never above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Upper bound.
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based; 0 counts as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        let ms = base.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        let spread = ms / 5;
        Duration::from_millis(ms - spread + fastrand::u64(0..=spread * 2)).min(self.max)
    }
}

/// Whether the `n`-th failure in a row is worth a log line: the 1st, 2nd, 4th, 8th, …
pub fn should_log(n: u32) -> bool {
    n == 1 || n.is_power_of_two()
}

/// How long a connection must stay up before its failures are forgotten.
pub const STABLE: Duration = Duration::from_secs(10);

/// Reconnect state of one connection or link: counts failures in a row and forgets them only once
/// a connection stayed up for the stable period, so a broker that accepts and then drops at once
/// is re-tried with a growing delay instead of the minimum delay forever.
#[derive(Debug, Clone)]
pub struct Reconnect {
    backoff: Backoff,
    stable: Duration,
    failures: u32,
    connected_at: Option<Instant>,
}

impl Reconnect {
    /// A fresh state: no failures, not connected; failures are forgotten after [`STABLE`].
    pub fn new(backoff: Backoff) -> Self {
        Self::with_stable(backoff, STABLE)
    }

    /// Like [`Reconnect::new`], with another stable period.
    pub fn with_stable(backoff: Backoff, stable: Duration) -> Self {
        Reconnect {
            backoff,
            stable,
            failures: 0,
            connected_at: None,
        }
    }

    /// A connection was established.
    pub fn on_connected(&mut self) {
        self.connected_at = Some(Instant::now());
    }

    /// A connection attempt failed or an established connection was lost; returns the number of
    /// failures in a row (1 after a connection that was up for the stable period).
    pub fn on_failed(&mut self) -> u32 {
        if self.is_stable() {
            self.failures = 0;
        }
        self.connected_at = None;
        self.failures = self.failures.saturating_add(1);
        self.failures
    }

    /// An established connection was lost: how long to wait before connecting again. Zero after
    /// a connection that stayed up for the stable period (its failures are forgotten); otherwise
    /// the loss counts as one more failure in a row.
    pub fn on_lost(&mut self) -> Duration {
        if self.is_stable() {
            self.failures = 0;
            self.connected_at = None;
            Duration::ZERO
        } else {
            self.on_failed();
            self.next_delay()
        }
    }

    /// Whether a connection is established (since the last [`Reconnect::on_connected`]).
    pub fn is_up(&self) -> bool {
        self.connected_at.is_some()
    }

    /// Whether the current connection has been up for the stable period.
    pub fn is_stable(&self) -> bool {
        self.connected_at
            .is_some_and(|t| t.elapsed() >= self.stable)
    }

    /// Failures in a row so far (0: none since the last stable connection).
    pub fn failures(&self) -> u32 {
        if self.is_stable() {
            0
        } else {
            self.failures
        }
    }

    /// The delay before the next attempt (zero when there was no failure).
    pub fn next_delay(&self) -> Duration {
        match self.failures() {
            0 => Duration::ZERO,
            n => self.backoff.delay(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backoff {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for _ in 0..200 {
            let d1 = b().delay(1).as_millis();
            assert!((80..=120).contains(&d1), "{d1}");
            let d3 = b().delay(3).as_millis();
            assert!((320..=480).contains(&d3), "{d3}");
            assert!(b().delay(40) <= Duration::from_millis(1000));
            assert!(b().delay(40) >= Duration::from_millis(800));
        }
        let zero = Backoff {
            min: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.delay(3), Duration::ZERO);
    }

    #[test]
    fn only_powers_of_two_are_logged() {
        let logged: Vec<u32> = (1..=20).filter(|n| should_log(*n)).collect();
        assert_eq!(logged, vec![1, 2, 4, 8, 16]);
    }

    #[test]
    fn a_broker_that_accepts_then_drops_at_once_is_retried_with_growing_delay() {
        let mut r = Reconnect::with_stable(b(), Duration::from_secs(60));
        let mut delays = Vec::new();
        for _ in 0..5 {
            r.on_connected();
            delays.push(r.on_lost()); // dropped right after the connect
        }
        assert_eq!(r.failures(), 5);
        assert!(delays[4] >= Duration::from_millis(800), "{delays:?}");
        assert!(delays[4] > delays[0] * 4, "{delays:?}");
    }

    #[test]
    fn failures_are_forgotten_after_a_stable_connection() {
        let mut r = Reconnect::with_stable(b(), Duration::from_millis(20));
        assert_eq!(r.next_delay(), Duration::ZERO);
        r.on_failed();
        r.on_failed();
        r.on_failed();
        assert_eq!(r.failures(), 3);
        r.on_connected();
        assert_eq!(r.failures(), 3, "not stable yet");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(r.failures(), 0);
        assert_eq!(r.next_delay(), Duration::ZERO);
        r.on_connected();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            r.on_lost(),
            Duration::ZERO,
            "a stable connection reconnects at once"
        );
        assert_eq!(r.failures(), 0);
        assert_eq!(r.on_failed(), 1);
        let d = r.next_delay().as_millis();
        assert!((80..=120).contains(&d), "{d}");
    }
}
