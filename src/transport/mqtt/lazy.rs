//! When the MQTT connections are opened, and how soon an emit gives up on a broker never reached.
//!
//! - The consumer's persistent session is opened only once something is subscribed: a service that
//!   only emits must not hold (and take over) a session named after its queue, or it receives —
//!   and dead-letters as "no handler" — the messages queued for the app that consumes them
//!   (issue #14, defect 4).
//! - An emit on a publisher connection that never reached the broker fails with
//!   `CONNECTION_FAILED` after [`FIRST_CONNECT_TIMEOUT`], like the AMQP and Redis kinds, instead
//!   of waiting the whole `publishTimeout` (defect 11). Once the broker was reached, an outage is
//!   waited out up to `publishTimeout` as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::conn::Conn;
use crate::error::Error;
use crate::subscriptions::Subscriptions;

/// How long an emit waits for a publisher connection that never reached the broker.
pub const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves once `subscriptions` holds a topic (or returns `false` when they are dropped). Until
/// then each empty set counts as applied (there is nothing to put into effect at the broker), so
/// emits do not wait for a connection that is not opened.
pub async fn subscribed(subscriptions: &Subscriptions) -> bool {
    let mut rx = subscriptions.watch();
    loop {
        let version = *rx.borrow_and_update();
        if !subscriptions.snapshot().is_empty() {
            return true;
        }
        subscriptions.applied(version);
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

/// Whether a publisher connection reached the broker (see [`reached`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Connected now or at least once before.
    Reached,
    /// Never connected within [`FIRST_CONNECT_TIMEOUT`] (nor by the deadline).
    Never,
    /// The broker refused the connection (its reason): emits fail at once.
    Refused(String),
}

/// Whether `conn` is connected, waiting at most [`FIRST_CONNECT_TIMEOUT`] (and not past
/// `deadline`) for a first connection; a broker that refuses it ends the wait at once. `reached`
/// remembers a first connection.
pub async fn reached(conn: &Arc<Conn>, reached: &AtomicBool, deadline: Instant) -> Reach {
    if reached.load(Ordering::Acquire) {
        return Reach::Reached;
    }
    let mut up = conn.watch_connected();
    let until = deadline.min(Instant::now() + FIRST_CONNECT_TIMEOUT);
    let connected = tokio::time::timeout_at(until, up.wait_for(|e| e.is_some()));
    tokio::select! {
        r = connected => {
            if r.is_ok_and(|r| r.is_ok()) {
                reached.store(true, Ordering::Release);
                Reach::Reached
            } else {
                Reach::Never
            }
        }
        reason = conn.refusal() => Reach::Refused(reason),
    }
}

/// The error of an emit on `topic` when the broker was never reached: `CONNECTION_FAILED`.
pub fn never_reached(conn: &Conn, topic: &str) -> Error {
    let e = conn.timeout_error(topic);
    Error::new(
        e.code,
        format!(
            "{}; the broker was never reached (waited {} ms): check the url and that the broker runs",
            e.message,
            FIRST_CONNECT_TIMEOUT.as_millis()
        ),
    )
}
