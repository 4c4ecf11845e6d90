//! Messages as the engine moves them: a topic and an opaque JSON payload string.
//!
//! The payload is produced by `JSON.stringify` on the JavaScript side and parsed there again, so the
//! engine never rebuilds JSON on the hot path; transports only validate it where a format needs it.

use std::sync::Arc;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The prepared topic (prefixes applied).
    pub topic: String,
    /// The serialized body, e.g. `{"data":{…},"headers":{…}}`.
    pub payload: String,
}

/// A message handed to the application's handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The topic as it arrived on the transport.
    pub topic: String,
    /// The serialized body as it arrived.
    pub payload: String,
    /// 1 for the first delivery, incremented on every redelivery.
    pub attempt: u32,
}

/// Why a handler refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The error message the handler threw.
    pub message: String,
    /// The handler error's `code`, if it had one.
    pub code: Option<String>,
    /// `true` when the error says retrying cannot help (`err.unrecoverable`).
    pub unrecoverable: bool,
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

impl HandlerError {
    /// A handler error with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            code: None,
            unrecoverable: false,
        }
    }
}

/// What the handlers decided about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every handler succeeded: acknowledge.
    Ack,
    /// A handler failed: redeliver or dead-letter according to the policy.
    Failed(HandlerError),
}

/// How a transport settles one delivery once the engine has decided.
pub trait Settle: Send + Sync + 'static {
    /// Every handler succeeded: remove the message for good.
    fn ack(self: Box<Self>);
    /// Deliver the same message again, not before `delay`.
    fn retry(self: Box<Self>, delay: std::time::Duration, error: &HandlerError);
    /// Give up: move the message to the transport's dead-letter place.
    fn dead_letter(self: Box<Self>, error: &HandlerError);
}

/// A message that exhausted its attempts (kept by transports without a dead-letter destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message as last delivered.
    pub message: Inbound,
    /// The last handler error.
    pub error: HandlerError,
}

/// A bounded, shared in-memory list of dead letters (for transports without a dead-letter
/// destination): the newest [`DeadLetterQueue::CAPACITY`] are kept.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterQueue(Arc<std::sync::Mutex<std::collections::VecDeque<DeadLetter>>>);

impl DeadLetterQueue {
    /// How many dead letters are kept.
    pub const CAPACITY: usize = 1000;

    /// Adds a dead letter, dropping the oldest when full.
    pub fn push(&self, message: Inbound, error: HandlerError) {
        let mut dead = crate::sync::lock(&self.0);
        if dead.len() == Self::CAPACITY {
            dead.pop_front();
        }
        dead.push_back(DeadLetter { message, error });
    }

    /// The dead letters kept so far, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        crate::sync::lock(&self.0).iter().cloned().collect()
    }
}

/// One message in flight, with the handle that settles it.
pub struct Delivery {
    /// The message.
    pub message: Inbound,
    /// Settles the message on the transport.
    pub settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish()
    }
}

/// Shared, cheaply clonable list of messages (used to hand batches around without copying).
pub type Batch = Arc<Vec<Inbound>>;
