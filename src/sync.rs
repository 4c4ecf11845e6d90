//! Small synchronisation helpers shared by the engine and the transports.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`; a lock poisoned by a panicking thread is taken over (its data stays usable), so one
/// failed task never turns every later access into a panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
