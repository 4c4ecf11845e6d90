//! Noticing a session takeover: two clients with the same client id take the persistent session
//! from each other, so each connection is closed by the broker right after it was accepted
//! (issue #14, defect 4: the README's example copied into two apps did that every ~200 ms). The
//! connection loop reports each accepted connection and each drop; after a few drops in a row that
//! each came soon after the connection was accepted, the loop logs an error naming the client id.

use std::time::{Duration, Instant};

/// A drop this soon after the broker accepted the connection counts as "right after connect".
pub const QUICK: Duration = Duration::from_secs(2);
/// Quick drops in a row before the takeover is reported.
pub const REPORT_AFTER: u32 = 3;

/// Watches one connection's accepts and drops.
#[derive(Debug, Default)]
pub struct Takeover {
    connected_at: Option<Instant>,
    quick_drops: u32,
}

impl Takeover {
    /// The broker accepted the connection.
    pub fn connected(&mut self) {
        self.connected_at = Some(Instant::now());
    }

    /// The connection dropped. `Some(n)` when this is the `n`-th quick drop in a row and it is time
    /// to say so (at [`REPORT_AFTER`], then at each power of two).
    pub fn dropped(&mut self) -> Option<u32> {
        let Some(at) = self.connected_at.take() else {
            return None; // a failed attempt to connect, not a drop
        };
        if at.elapsed() >= QUICK {
            self.quick_drops = 0;
            return None;
        }
        self.quick_drops += 1;
        let n = self.quick_drops;
        (n == REPORT_AFTER || (n > REPORT_AFTER && n.is_power_of_two())).then_some(n)
    }
}

/// The log line for `n` quick drops of the connection of `client_id`.
pub fn message(client_id: &str, label: &str, n: u32) -> String {
    format!(
        "the broker closed the connection of {label} {n} times right after accepting it: another client probably uses the client id '{client_id}' and the two take the persistent session from each other (messages may go to the wrong app); give every app its own queue / clientId"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_drops_in_a_row_are_reported_slow_ones_and_failed_attempts_are_not() {
        let mut t = Takeover::default();
        assert_eq!(t.dropped(), None); // never connected
        for expected in [None, None, Some(3), Some(4), None, None, None, Some(8)] {
            t.connected();
            assert_eq!(t.dropped(), expected);
        }
        t.connected();
        t.connected_at = Some(Instant::now() - QUICK);
        assert_eq!(t.dropped(), None);
        t.connected();
        assert_eq!(t.dropped(), None); // the count started again
        assert!(message("c1", "consumer x", 3).contains("'c1'"));
    }
}
