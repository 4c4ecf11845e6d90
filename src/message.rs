//! Messages as the engine moves them: a topic and an opaque JSON payload string.
//!
//! The payload is produced by `JSON.stringify` on the JavaScript side and parsed there again, so the
//! engine never rebuilds JSON on the hot path; transports only validate it where a format needs it.

/// Content type of CloudEvents in structured mode.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Content type of plain JSON.
pub const JSON: &str = "application/json";

/// The content type @sap/cds sends: CloudEvents when the headers hold its four required
/// attributes ([`Outbound::cloud_event`]), else plain JSON.
pub fn content_type(cloud_event: bool) -> &'static str {
    if cloud_event {
        CLOUDEVENTS_JSON
    } else {
        JSON
    }
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The prepared topic (prefixes applied).
    pub topic: String,
    /// The serialized body, e.g. `{"data":{…},"headers":{…}}`.
    pub payload: String,
    /// The message's headers hold the CloudEvents attributes `id`, `source`, `specversion` and
    /// `type` (decided by JavaScript, which has the headers; the broker kinds label such a
    /// message `application/cloudevents+json`, as @sap/cds does).
    pub cloud_event: bool,
    /// The tenant (`cds.context.tenant`) of a multitenant app, given only with
    /// `cds.requires.multitenancy`: the REST transport publishes with a token requested with
    /// `x-zid: <tenant>`, as @sap/cds does; the other transports ignore it.
    pub tenant: Option<String>,
}

impl Outbound {
    /// A message that is not a CloudEvent.
    pub fn new(topic: impl Into<String>, payload: impl Into<String>) -> Self {
        Outbound {
            topic: topic.into(),
            payload: payload.into(),
            cloud_event: false,
            tenant: None,
        }
    }
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

/// A delivery's place under `maxInFlight`; dropping it frees the place for the next delivery.
///
/// [`Settle::ack`] gets it so that a transport whose acknowledgement is sent later and whose broker
/// does not bound the unacknowledged deliveries itself (Redis Streams) can hold it until the
/// acknowledgement is confirmed: then at most `maxInFlight` processed messages are ever
/// unacknowledged, and at most that many come again after a crash, however slow the broker is.
#[derive(Debug)]
pub struct InFlight {
    /// Held only to be dropped.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl InFlight {
    /// The place held by `permit` (`None`: a delivery outside the bound).
    pub(crate) fn new(permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        InFlight { _permit: permit }
    }
}

/// How a transport settles one delivery once the engine has decided.
pub trait Settle: Send + Sync + 'static {
    /// Every handler succeeded: remove the message for good. Dropping `place` lets the next
    /// delivery in; a transport keeps it until the broker has the acknowledgement where it alone
    /// bounds what is unacknowledged (see [`InFlight`]).
    fn ack(self: Box<Self>, place: InFlight);
    /// Hand the message back to the broker for redelivery, not before `delay`. Called only on
    /// transports whose broker redelivers ([`crate::transport::Redelivery::Broker`]); where the
    /// engine redelivers, it keeps the handle instead, and this default drops it.
    fn retry(self: Box<Self>, delay: std::time::Duration, error: &HandlerError) {
        let _ = (delay, error);
    }
    /// The engine is about to deliver the message again itself (in-process redelivery).
    fn redelivered(&mut self) {}
    /// Give up: move the message to the transport's dead-letter place.
    fn dead_letter(self: Box<Self>, error: &HandlerError);
}

/// A message that exhausted its attempts (kept by the engine for transports without a dead-letter
/// destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message as last delivered.
    pub message: Inbound,
    /// The last handler error.
    pub error: HandlerError,
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
