//! Upper bounds of the capacity options.
//!
//! Capacities size queues, credits and buffers. A value like `maxInFlight: 1e9` is accepted by the
//! number conversion but made the file kind ask for 48 GB (the allocator aborts the host), so every
//! capacity is checked against a bound far above any useful setting and rejected with
//! `INVALID_CONFIG` beyond it.

use crate::error::{Error, Result};

/// Largest `maxInFlight`, `maxBatch` and `readCount`.
pub const MAX_CAPACITY: usize = 100_000;

/// Largest AMQP `prefetch` (link credit): twice [`MAX_CAPACITY`], the default for the largest
/// `maxInFlight`.
pub const MAX_PREFETCH: usize = 2 * MAX_CAPACITY;

/// `Ok` when `1 ≤ value ≤ max`; otherwise `INVALID_CONFIG` naming the option and the bound.
pub fn check(name: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::config(format!("{name} must be at least 1")));
    }
    if value > max {
        return Err(Error::config(format!(
            "{name} is {value}, more than the maximum {max}; use a value between 1 and {max}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn bounds_are_inclusive_and_named_in_the_message() {
        assert!(check("maxInFlight", 1, MAX_CAPACITY).is_ok());
        assert!(check("maxInFlight", MAX_CAPACITY, MAX_CAPACITY).is_ok());
        let e = check("maxInFlight", 1_000_000_000, MAX_CAPACITY).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(
            e.message.contains("maxInFlight") && e.message.contains("100000"),
            "{}",
            e.message
        );
        assert_eq!(
            check("maxBatch", 0, MAX_CAPACITY).unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }
}
