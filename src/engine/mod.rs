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
pub mod progress;
mod redelivery;
pub mod stats;

pub use self::redelivery::DeadLetterQueue;

use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::transport::{Guarantee, Redelivery, Transport, TransportContext};

/// Receives batches of deliveries; implemented by the JS bridge and by tests.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Processes a batch and returns one outcome per message, in order.
    async fn handle(&self, batch: Vec<Inbound>) -> Result<Vec<Outcome>>;

    /// Like [`handle`](Handler::handle), and may report single outcomes earlier through
    /// `progress` (a message is settled and frees its permit when its outcome is reported).
    async fn handle_with(
        &self,
        batch: Vec<Inbound>,
        progress: progress::Progress,
    ) -> Result<Vec<Outcome>> {
        let _ = progress;
        self.handle(batch).await
    }

    /// `true` when [`handle_with`](Handler::handle_with) calls [`Progress::handed_over`] as soon as
    /// the handlers have taken a batch (the JS bridge does, once JavaScript's call returned). The
    /// dispatcher then keeps at most one batch waiting to be taken: what arrives meanwhile makes
    /// the next batch larger instead of queueing one call per delivery behind a busy thread.
    fn reports_handover(&self) -> bool {
        false
    }
}

#[derive(Default)]
struct State {
    dispatcher: Option<JoinHandle<()>>,
    /// `listen` was announced or called: emits wait until the consumer has started.
    announced: bool,
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
    /// Dead letters of transports without a dead-letter place (see [`Redelivery`]).
    dead: DeadLetterQueue,
    /// Set when closing starts: in-process redeliveries still waiting are dropped.
    closing: Arc<AtomicBool>,
    /// Limit of an emit's wait for its own subscriptions and for a starting consumer.
    subscribe_wait: std::time::Duration,
    /// `true` once `listen` has started the transport (or failed to).
    started: tokio::sync::watch::Sender<bool>,
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
            dead: DeadLetterQueue::default(),
            closing: Arc::new(AtomicBool::new(false)),
            subscribe_wait: config.subscribe_wait,
            started: tokio::sync::watch::channel(false).0,
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
        self.dead.list()
    }

    /// Says, synchronously, that [`Engine::listen`] is about to be called: every publish from now on
    /// waits (up to the subscribe wait) until the consumer has started, so an emit made right after
    /// the service began listening sees its own subscriptions even when the asynchronous `listen`
    /// has not run yet.
    pub fn announce_listen(&self) {
        self.state().announced = true;
    }

    /// Starts consuming and delivering to `handler`. Must run inside a tokio runtime.
    pub async fn listen(&self, handler: Arc<dyn Handler>) -> Result<()> {
        let (tx, rx) = mpsc::channel(self.max_in_flight.max(1) * 2);
        let (bypass_tx, bypass_rx) = mpsc::unbounded_channel();
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
            st.announced = true;
            st.dispatcher = Some(tokio::spawn(dispatch::run(
                rx,
                bypass_rx,
                handler,
                dispatch::Settings {
                    policy: self.policy.clone(),
                    max_in_flight: self.max_in_flight,
                    max_batch: self.max_batch,
                    dead_letter: self.guarantee().dead_letter,
                    log: self.log.clone(),
                    in_process: match self.transport.redelivery() {
                        Redelivery::Broker => None,
                        Redelivery::InProcess {
                            dead_letters_in_memory,
                        } => Some(redelivery::InProcess {
                            deliveries: tx.downgrade(),
                            bypass: bypass_tx.downgrade(),
                            closing: self.closing.clone(),
                            dead: self.dead.clone(),
                            keeps_dead_letters: dead_letters_in_memory,
                        }),
                    },
                },
            )));
        }
        let res = self
            .transport
            .start(TransportContext {
                deliveries: tx,
                subscriptions: self.subscriptions.clone(),
                policy: self.policy.clone(),
                max_in_flight: self.max_in_flight,
                log: self.log.clone(),
                dead_letters: self.dead.clone(),
                bypass: bypass_tx,
            })
            .await;
        self.started.send_replace(true);
        res
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
        self.publish_as(batch, false).await
    }

    /// Publishes a batch emitted by one of this engine's handlers while it runs (see
    /// [`Transport::publish_nested`]).
    pub async fn publish_nested(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        self.publish_as(batch, true).await
    }

    async fn publish_as(&self, batch: Vec<Outbound>, nested: bool) -> Vec<Result<()>> {
        let listening = {
            let st = self.state();
            if st.closed {
                return batch.iter().map(|m| Err(Error::closed(&m.topic))).collect();
            }
            st.announced
        };
        // An emit sees its own service's subscriptions: a consumer that is starting has started,
        // and the subscriptions made before this emit are in effect at the broker.
        if listening && !*self.started.borrow() {
            let mut rx = self.started.subscribe();
            let _ = tokio::time::timeout(self.subscribe_wait, rx.wait_for(|s| *s)).await;
        }
        self.subscriptions.wait_applied(self.subscribe_wait).await;
        let results = if nested {
            self.transport.publish_nested(batch).await
        } else {
            self.transport.publish(batch).await
        };
        self.log.stats().published(&results);
        results
    }

    /// Takes over messages whose first attempt was delivered outside the engine and failed with
    /// the given error (see [`Transport::redeliver`]); one result per message.
    pub async fn redeliver(
        &self,
        batch: Vec<(Outbound, crate::message::HandlerError)>,
        nested: bool,
    ) -> Vec<Result<()>> {
        if self.state().closed {
            return batch
                .iter()
                .map(|(m, _)| Err(Error::closed(&m.topic)))
                .collect();
        }
        let results = self.transport.redeliver(batch, nested).await;
        self.log.stats().published(&results);
        results
    }

    /// Counts `delivered` deliveries made outside the engine, `acked` of them acknowledged (each
    /// an emit that succeeded).
    pub fn counted(&self, delivered: usize, acked: usize) {
        let stats = self.log.stats();
        stats.delivered(delivered);
        stats.emitted_ok(acked);
        for _ in 0..acked {
            stats.acked();
        }
    }

    /// The engine's counters now.
    pub fn stats(&self) -> stats::Snapshot {
        self.log.stats().snapshot()
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
            self.closing.store(true, Ordering::Release);
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
