//! `native-local-messaging`: an in-process queue with a real broker's semantics.
//!
//! An emit resolves once every delivery of it is settled: acknowledged (the handlers succeeded) or,
//! after the last failed attempt, dead-lettered — then the emit rejects with the handler's error, as
//! with @sap/cds's `local-messaging`. The engine redelivers and keeps the dead letters in
//! memory (the newest [`DeadLetterQueue::CAPACITY`](crate::engine::DeadLetterQueue::CAPACITY)),
//! where they can be listed for tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::engine::DeadLetterQueue;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, InFlight, Inbound, Outbound, Settle};
use crate::policy::{Decision, RetryPolicy};
use crate::subscriptions::Subscriptions;
use crate::transport::{Guarantee, Redelivery, Transport, TransportContext};

struct Started {
    deliveries: mpsc::Sender<Delivery>,
    /// Deliveries of nested emits (made by a handler while it runs): they need no permit.
    bypass: mpsc::UnboundedSender<Delivery>,
    subscriptions: Arc<Subscriptions>,
    policy: RetryPolicy,
    log: Logger,
    dead: DeadLetterQueue,
}

/// The in-process transport.
#[derive(Default)]
pub struct LocalTransport {
    started: OnceLock<Started>,
    /// Set by `close`: redeliveries still waiting for their back-off are dropped.
    closed: Arc<AtomicBool>,
}

impl LocalTransport {
    /// A transport with no consumer yet.
    pub fn new() -> Self {
        Self::default()
    }
}

struct LocalSettle {
    topic: String,
    attempt: u32,
    done: oneshot::Sender<Result<()>>,
}

impl Settle for LocalSettle {
    fn ack(self: Box<Self>, _place: InFlight) {
        let _ = self.done.send(Ok(()));
    }

    fn redelivered(&mut self) {
        self.attempt += 1;
    }

    fn dead_letter(self: Box<Self>, error: &HandlerError) {
        let code = error
            .code
            .as_deref()
            .map(|c| format!(" (code {c})"))
            .unwrap_or_default();
        let _ = self.done.send(Err(Error::new(
            ErrorCode::HandlerFailed,
            format!(
                "a handler of '{}' failed {} time(s){code}: {}",
                self.topic, self.attempt, error.message
            ),
        )));
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        Guarantee {
            delivery: "at-least-once",
            dead_letter: "(in memory)".into(),
            summary: format!(
                "at-least-once within this process; a failing handler is retried up to {} attempt(s), then the message is dead-lettered in memory and the emit rejects",
                policy.max_attempts
            ),
        }
    }

    async fn start(&self, ctx: TransportContext) -> Result<()> {
        self.started
            .set(Started {
                deliveries: ctx.deliveries,
                bypass: ctx.bypass,
                subscriptions: ctx.subscriptions,
                policy: ctx.policy,
                log: ctx.log,
                dead: ctx.dead_letters,
            })
            .map_err(|_| Error::new(ErrorCode::Internal, "local transport started twice"))
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        self.publish_to(batch, false).await
    }

    async fn publish_nested(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        self.publish_to(batch, true).await
    }

    async fn redeliver(
        &self,
        batch: Vec<(Outbound, HandlerError)>,
        nested: bool,
    ) -> Vec<Result<()>> {
        self.take_over(batch, nested).await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    fn redelivery(&self) -> Redelivery {
        Redelivery::InProcess {
            dead_letters_in_memory: true,
        }
    }
}

impl LocalTransport {
    /// Messages whose first attempt JavaScript delivered in-process and that failed: the policy
    /// decides as the dispatcher does for attempt 1 (the same log lines and counters); a retry is
    /// fed to the dispatcher as attempt 2 after its back-off (`nested`: without a permit), so every
    /// later attempt, the dead letter and the result are the engine's, as for any delivery.
    async fn take_over(
        &self,
        batch: Vec<(Outbound, HandlerError)>,
        nested: bool,
    ) -> Vec<Result<()>> {
        let Some(started) = self.started.get() else {
            return batch
                .iter()
                .map(|(m, _)| Err(Error::closed(&m.topic)))
                .collect();
        };
        let mut waits = Vec::with_capacity(batch.len());
        for (m, err) in batch {
            let topic = m.topic.clone();
            let (done, wait) = oneshot::channel();
            let mut settle = LocalSettle {
                topic: topic.clone(),
                attempt: 1,
                done,
            };
            let mut message = Inbound {
                topic: m.topic,
                payload: m.payload,
                attempt: 1,
            };
            match started.policy.decide(1, &err) {
                Decision::Retry(delay) => {
                    started.log.warn(&format!(
                        "handler failed for message on topic '{topic}' (attempt 1 of {}), redelivering in {} ms: {}",
                        started.policy.max_attempts,
                        delay.as_millis(),
                        err.message
                    ));
                    started.log.stats().redelivered(&err.message);
                    let deliveries = started.deliveries.downgrade();
                    let bypass = started.bypass.downgrade();
                    let closed = self.closed.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        if closed.load(Ordering::Acquire) {
                            return; // dropped unsettled: the emit rejects with CLOSED
                        }
                        message.attempt = 2;
                        settle.redelivered();
                        let delivery = Delivery {
                            message,
                            settle: Box::new(settle),
                        };
                        if nested {
                            if let Some(tx) = bypass.upgrade() {
                                let _ = tx.send(delivery);
                            }
                        } else if let Some(tx) = deliveries.upgrade() {
                            let _ = tx.send(delivery).await;
                        }
                    });
                }
                Decision::DeadLetter => {
                    let why = if err.unrecoverable {
                        "failed with an unrecoverable error".to_string()
                    } else {
                        "failed 1 time(s)".to_string()
                    };
                    started.log.error(&format!(
                        "message on topic '{topic}' {why} and was moved to the dead-letter place (in memory): {}",
                        err.message
                    ));
                    started.log.stats().dead_lettered(&err.message);
                    started.dead.push(message, err.clone());
                    Box::new(settle).dead_letter(&err);
                }
            }
            waits.push((topic, wait));
        }
        let mut out = Vec::with_capacity(waits.len());
        for (topic, wait) in waits {
            out.push(wait.await.unwrap_or_else(|_| Err(Error::closed(&topic))));
        }
        out
    }

    /// Delivers `batch` and waits for its outcomes; `nested` deliveries need no permit.
    async fn publish_to(&self, batch: Vec<Outbound>, nested: bool) -> Vec<Result<()>> {
        let Some(started) = self.started.get() else {
            // Nobody listens yet: like @sap/cds local-messaging without handlers, nothing happens.
            return batch.iter().map(|_| Ok(())).collect();
        };
        let mut pending = Vec::with_capacity(batch.len());
        for m in batch {
            if !started.subscriptions.matches(&m.topic) {
                pending.push(None);
                continue;
            }
            let (done, wait) = oneshot::channel();
            let topic = m.topic.clone();
            let message = Inbound {
                topic: m.topic,
                payload: m.payload,
                attempt: 1,
            };
            let settle = LocalSettle {
                topic: topic.clone(),
                attempt: 1,
                done,
            };
            let delivery = Delivery {
                message,
                settle: Box::new(settle),
            };
            let sent = if nested {
                started.bypass.send(delivery).is_ok()
            } else {
                started.deliveries.send(delivery).await.is_ok()
            };
            if !sent {
                pending.push(Some(Err(Error::closed(&topic))));
                continue;
            }
            pending.push(Some(Ok((topic, wait))));
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(match p {
                None => Ok(()),
                Some(Err(e)) => Err(e),
                Some(Ok((topic, wait))) => {
                    wait.await.unwrap_or_else(|_| Err(Error::closed(&topic)))
                }
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
