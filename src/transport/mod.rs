//! Transports move messages between the engine and one kind of backend.
//!
//! Every protocol lives in its own module behind [`Transport`] and knows nothing about routing,
//! formatting or the retry policy: it publishes payloads, hands deliveries to the engine and settles
//! them the way the engine decides (see [`crate::message::Settle`]).

pub mod amqp;
pub mod file;
pub mod local;
pub mod mqtt;
pub mod redis;
pub mod rest;
pub mod support;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::log::Logger;
use crate::message::{Delivery, Outbound};
use crate::policy::RetryPolicy;
use crate::subscriptions::Subscriptions;

/// What a transport promises, reported at startup so users see their effective guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarantee {
    /// `at-most-once` or `at-least-once`.
    pub delivery: &'static str,
    /// Where messages go after the last failed attempt.
    pub dead_letter: String,
    /// One sentence for the startup log.
    pub summary: String,
}

/// Who redelivers a message whose handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// The broker: the engine calls [`crate::message::Settle::retry`] and the transport hands the
    /// message back (AMQP, Redis Streams, the box file).
    Broker,
    /// The engine, in this process: it holds the delivery for the back-off and dispatches it again
    /// (local, Redis pub/sub, MQTT).
    InProcess {
        /// The transport has no dead-letter place: the engine keeps the dead letters in memory.
        dead_letters_in_memory: bool,
    },
}

/// Everything a transport needs to feed the engine once it starts consuming.
#[derive(Clone)]
pub struct TransportContext {
    /// Deliveries go here; the engine's dispatcher calls the handlers.
    pub deliveries: mpsc::Sender<Delivery>,
    /// What to consume.
    pub subscriptions: Arc<Subscriptions>,
    /// The retry policy (transports need `max_attempts` for crash-recovered messages).
    pub policy: RetryPolicy,
    /// How many deliveries may be unsettled at once.
    pub max_in_flight: usize,
    /// The engine's logger.
    pub log: Logger,
    /// The engine's in-memory dead letters (`deadLetters()`); a transport without a dead-letter
    /// place of its own (REST pull without `deadMsgQueue`) adds to it.
    pub dead_letters: crate::engine::DeadLetterQueue,
    /// Deliveries that do not wait for an in-flight permit: messages emitted by a handler of
    /// the same engine while it runs (local kind), which would otherwise wait on the permit
    /// their own emitter holds.
    pub bypass: mpsc::UnboundedSender<Delivery>,
}

/// One backend (in-process queue, box file, broker protocol).
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The guarantee this transport gives with the current configuration.
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee;

    /// Starts consuming; called once, before any delivery is expected.
    async fn start(&self, ctx: TransportContext) -> Result<()>;

    /// Publishes a batch; one result per message, in order.
    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>>;

    /// Publishes a batch emitted by a handler of this engine while it runs. Transports whose
    /// `publish` waits for the receivers (local kind) deliver it without waiting for a permit.
    async fn publish_nested(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        self.publish(batch).await
    }

    /// Takes over messages whose first attempt the caller delivered itself and that failed with
    /// the given error (the local kind's in-process first attempt): the retry policy decides as
    /// for a delivery of the engine's own, and each result is that of a published message
    /// (`Ok` once a later attempt succeeded, the dead letter's error otherwise). Only transports
    /// whose publish waits for the receivers support it.
    async fn redeliver(
        &self,
        batch: Vec<(Outbound, crate::message::HandlerError)>,
        nested: bool,
    ) -> Vec<Result<()>> {
        let _ = nested;
        batch
            .iter()
            .map(|(m, _)| {
                Err(crate::error::Error::new(
                    crate::error::ErrorCode::Internal,
                    format!(
                        "cannot redeliver '{}': this transport does not take over failed deliveries",
                        m.topic
                    ),
                ))
            })
            .collect()
    }

    /// Stops consuming and releases what is in flight; publishing fails afterwards.
    async fn close(&self) -> Result<()>;

    /// Who redelivers a failed message: the broker (the default) or the engine.
    fn redelivery(&self) -> Redelivery {
        Redelivery::Broker
    }
}
