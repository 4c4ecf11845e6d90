//! The engine: one per messaging service. It owns a transport, the subscriptions, the retry policy
//! and the dispatcher that hands deliveries to the application in batches.
//!
//! ## Behavior
//! - Deliveries are batched: whatever is queued when a batch starts (up to `max_batch`) goes to the
//!   handler in one call, so the JS boundary is crossed once per batch, not once per message.
//! - At most `max_in_flight` deliveries are unsettled at any time; the transport stops fetching
//!   while that many are in flight.
//! - A delivery is acknowledged only after the handler reported success for it. A failure is
//!   redelivered with back-off up to `max_attempts`, then dead-lettered with an error log line.
//! - If the handler call itself fails (e.g. the JS environment is shutting down) the delivery is
//!   redelivered, never acknowledged.

mod dispatch;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::EngineConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::log::{LogSink, Logger};
use crate::message::{Inbound, Outbound, Outcome};
use crate::policy::RetryPolicy;
use crate::subscriptions::{Subscriptions, TopicSet};
use crate::transport::{Guarantee, Transport, TransportContext};

/// Receives batches of deliveries; implemented by the JS bridge and by tests.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Processes a batch and returns one outcome per message, in order.
    async fn handle(&self, batch: Vec<Inbound>) -> Result<Vec<Outcome>>;
}

#[derive(Default)]
struct State {
    dispatcher: Option<JoinHandle<()>>,
    listening: bool,
    closed: bool,
}

/// A messaging engine bound to one transport.
pub struct Engine {
    transport: Arc<dyn Transport>,
    subscriptions: Arc<Subscriptions>,
    policy: RetryPolicy,
    max_in_flight: usize,
    max_batch: usize,
    log: Logger,
    state: Mutex<State>,
}

impl Engine {
    /// Builds an engine from a validated configuration.
    pub fn new(config: EngineConfig, sink: Option<Arc<dyn LogSink>>) -> Result<Self> {
        config.validate()?;
        let log = Logger::new(&config.name, sink);
        let transport = config.transport.build(&log)?;
        Ok(Engine {
            transport,
            subscriptions: Arc::new(Subscriptions::default()),
            policy: config.policy,
            max_in_flight: config.max_in_flight,
            max_batch: config.max_batch,
            log,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// The guarantee of this engine's transport with its policy.
    pub fn guarantee(&self) -> Guarantee {
        self.transport.guarantee(&self.policy)
    }

    /// Dead letters the transport keeps in memory (local transport), oldest first.
    pub fn dead_letters(&self) -> Vec<crate::message::DeadLetter> {
        self.transport.dead_letters()
    }

    /// The engine's logger.
    pub fn logger(&self) -> &Logger {
        &self.log
    }

    /// Starts consuming and delivering to `handler`. Must run inside a tokio runtime.
    pub async fn listen(&self, handler: Arc<dyn Handler>) -> Result<()> {
        let (tx, rx) = mpsc::channel(self.max_in_flight.max(1) * 2);
        {
            let mut st = self.state();
            if st.closed {
                return Err(Error::new(
                    ErrorCode::Closed,
                    "the messaging engine is closed",
                ));
            }
            if st.listening {
                return Err(Error::new(
                    ErrorCode::Internal,
                    "listen() was called twice on the same engine",
                ));
            }
            st.listening = true;
            st.dispatcher = Some(tokio::spawn(dispatch::run(
                rx,
                handler,
                dispatch::Settings {
                    policy: self.policy.clone(),
                    max_in_flight: self.max_in_flight,
                    max_batch: self.max_batch,
                    dead_letter: self.guarantee().dead_letter,
                    log: self.log.clone(),
                },
            )));
        }
        self.transport
            .start(TransportContext {
                deliveries: tx,
                subscriptions: self.subscriptions.clone(),
                policy: self.policy.clone(),
                max_in_flight: self.max_in_flight,
                log: self.log.clone(),
            })
            .await
    }

    /// Replaces the set of consumed topics.
    pub fn subscribe(&self, set: TopicSet) -> Result<()> {
        if self.state().closed {
            return Err(Error::new(
                ErrorCode::Closed,
                "the messaging engine is closed",
            ));
        }
        self.subscriptions.set(set);
        Ok(())
    }

    /// Publishes a batch; one result per message.
    pub async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        if self.state().closed {
            return batch
                .iter()
                .map(|m| {
                    Err(Error::new(
                        ErrorCode::Closed,
                        format!(
                            "cannot emit '{}': the messaging service was shut down",
                            m.topic
                        ),
                    ))
                })
                .collect();
        }
        self.transport.publish(batch).await
    }

    /// Stops consuming, settles or releases what is in flight, and stops the dispatcher.
    /// Idempotent.
    pub async fn close(&self) -> Result<()> {
        let dispatcher = {
            let mut st = self.state();
            if st.closed {
                return Ok(());
            }
            st.closed = true;
            st.dispatcher.take()
        };
        let res = self.transport.close().await;
        if let Some(d) = dispatcher {
            d.abort();
        }
        res
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(d) = self.state().dispatcher.take() {
            d.abort();
        }
    }
}
