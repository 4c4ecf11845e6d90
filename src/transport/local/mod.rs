//! `native-local-messaging`: an in-process queue with a real broker's semantics.
//!
//! An emit resolves once every delivery of it is settled: acknowledged (the handlers succeeded) or,
//! after the last failed attempt, dead-lettered — then the emit rejects with the handler's error, as
//! with @sap/cds's `local-messaging`. Dead letters are kept in memory (the newest
//! [`DeadLetterQueue::CAPACITY`](crate::message::DeadLetterQueue::CAPACITY)) and can be listed for tests.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorCode, Result};
use crate::message::{
    DeadLetter, DeadLetterQueue, Delivery, HandlerError, Inbound, Outbound, Settle,
};
use crate::policy::RetryPolicy;
use crate::subscriptions::Subscriptions;
use crate::transport::{Guarantee, Transport, TransportContext};

struct Started {
    deliveries: mpsc::Sender<Delivery>,
    subscriptions: Arc<Subscriptions>,
}

/// The in-process transport.
#[derive(Default)]
pub struct LocalTransport {
    started: OnceLock<Started>,
    dead: DeadLetterQueue,
}

impl LocalTransport {
    /// A transport with no consumer yet.
    pub fn new() -> Self {
        Self::default()
    }
}

struct LocalSettle {
    message: Inbound,
    done: oneshot::Sender<Result<()>>,
    deliveries: mpsc::WeakSender<Delivery>,
    dead: DeadLetterQueue,
}

impl Settle for LocalSettle {
    fn ack(self: Box<Self>) {
        let _ = self.done.send(Ok(()));
    }

    fn retry(self: Box<Self>, delay: Duration, _error: &HandlerError) {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut me = *self;
            me.message.attempt += 1;
            let Some(tx) = me.deliveries.upgrade() else {
                let _ = me.done.send(Err(closed(&me.message.topic)));
                return;
            };
            match tx.reserve_owned().await {
                Ok(permit) => {
                    permit.send(Delivery {
                        message: me.message.clone(),
                        settle: Box::new(me),
                    });
                }
                Err(_) => {
                    let _ = me.done.send(Err(closed(&me.message.topic)));
                }
            }
        });
    }

    fn dead_letter(self: Box<Self>, error: &HandlerError) {
        self.dead.push(self.message.clone(), error.clone());
        let code = error
            .code
            .as_deref()
            .map(|c| format!(" (code {c})"))
            .unwrap_or_default();
        let _ = self.done.send(Err(Error::new(
            ErrorCode::HandlerFailed,
            format!(
                "a handler of '{}' failed {} time(s){code}: {}",
                self.message.topic, self.message.attempt, error.message
            ),
        )));
    }
}

fn closed(topic: &str) -> Error {
    Error::new(
        ErrorCode::Closed,
        format!("cannot emit '{topic}': the messaging service was shut down"),
    )
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
                subscriptions: ctx.subscriptions,
            })
            .map_err(|_| Error::new(ErrorCode::Internal, "local transport started twice"))
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
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
                message: message.clone(),
                done,
                deliveries: started.deliveries.downgrade(),
                dead: self.dead.clone(),
            };
            if started
                .deliveries
                .send(Delivery {
                    message,
                    settle: Box::new(settle),
                })
                .await
                .is_err()
            {
                pending.push(Some(Err(closed(&topic))));
                continue;
            }
            pending.push(Some(Ok((topic, wait))));
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(match p {
                None => Ok(()),
                Some(Err(e)) => Err(e),
                Some(Ok((topic, wait))) => wait.await.unwrap_or_else(|_| Err(closed(&topic))),
            });
        }
        out
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.list()
    }
}

#[cfg(test)]
mod tests;
