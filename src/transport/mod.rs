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

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::log::Logger;
use crate::message::{DeadLetter, Delivery, Outbound};
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

    /// Stops consuming and releases what is in flight; publishing fails afterwards.
    async fn close(&self) -> Result<()>;

    /// Dead letters kept in memory (only transports without a dead-letter destination keep any).
    fn dead_letters(&self) -> Vec<DeadLetter> {
        Vec::new()
    }
}
