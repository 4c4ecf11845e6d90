//! `native-amqp-messaging`: AMQP 1.0 (fe2o3-amqp) with broker profiles.
//!
//! ## Behavior
//! - **Connection**: one per service binding (same URL, credentials, TLS settings, container id),
//!   shared by the engines of this process that use it, unless `dedicated`. Every link gets a
//!   session of its own, so a broker ending a session over one bad link (RabbitMQ does on a
//!   refused attach) never takes down the others.
//! - **Emit** (`qos: 1`, default): the message is sent unsettled and the emit resolves when the
//!   broker accepted it, rejects with `REJECTED` when the broker rejected it (`amqp:not-allowed` is
//!   marked unrecoverable in JS). Many transfers are in flight at once. When the link or the
//!   connection is lost, unsettled messages are sent again after the reconnect (at-least-once: the
//!   broker may then hold duplicates). An emit fails with `CONNECTION_FAILED` right away when the
//!   broker was never reached or refuses the credentials, and after `sendTimeout` when an outage
//!   lasts longer. `qos: 0` sends pre-settled: the emit resolves once the transfer is written.
//! - **Consume**: when the service has subscriptions, its queue is provisioned where the profile
//!   can (RabbitMQ: durable queue declared if absent and bound to `amq.topic` with every subscribed
//!   topic, over AMQP 0-9-1 on the same listener; never deleted) and consumed with manual link
//!   credit (`prefetch`, topped up only once the credit is used up, because RabbitMQ 3.x can
//!   oversend otherwise). Subscriptions added later are bound while running.
//! - **Acks**: a delivery is accepted once every handler succeeded. A failure to be retried is held
//!   for the engine's back-off, then settled with the profile's retry outcome (RabbitMQ: `released`,
//!   which 3.x redelivers; others: `modified` with `delivery-failed`); after `maxAttempts` with the
//!   dead-letter outcome (`rejected`: the broker dead-letters or drops it). Attempts are counted per
//!   message id in this process and from the broker's `delivery-count`, whichever is higher.
//! - **Inbound**: the topic comes from the profile's place (`x-routing-key` / `subject` on RabbitMQ,
//!   `to` on Event Mesh); a message without one is handed on with an empty topic, so `'*'` handlers
//!   get it or it is dead-lettered with an error line — never accepted silently.
//! - **Reconnect**: every link re-attaches on its own after a loss, with jittered exponential
//!   back-off (`reconnectDelay` … `maxReconnectDelay`); errors are logged with their code, never
//!   thrown into the host.

pub mod broker;
pub mod codec;
pub mod config;
mod connection;
pub mod error;
pub mod inspect;
pub mod net;
pub mod profile;
pub mod provision;
mod receiver;
mod sender;
pub mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::config::AmqpConfig;

use self::connection::SharedConn;
use self::provision::Provisioner;
use self::receiver::Attempts;
use self::sender::{SendItem, SenderTask};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::Outbound;
use crate::policy::RetryPolicy;
use crate::sync::lock;
use crate::transport::{Guarantee, Transport, TransportContext};

pub use self::config::{QueueConfig, Sasl, Tls};

// ---------------------------------------------------------------------------------------------
// The transport
// ---------------------------------------------------------------------------------------------

/// The AMQP 1.0 transport.
pub struct AmqpTransport {
    cfg: AmqpConfig,
    log: Logger,
    conn: Arc<SharedConn>,
    senders: Mutex<HashMap<Option<String>, mpsc::UnboundedSender<SendItem>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    started: AtomicBool,
}

impl AmqpTransport {
    /// Validates the configuration; connects lazily (first emit or first subscription).
    pub fn new(cfg: AmqpConfig, log: Logger) -> Result<Self> {
        cfg.validate()?;
        let conn = SharedConn::get(&cfg.conn, &log);
        conn.broker.expect(cfg.profile.name(), &log);
        Ok(AmqpTransport {
            cfg,
            log,
            conn,
            senders: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            closed: AtomicBool::new(false),
            started: AtomicBool::new(false),
        })
    }

    /// The queue of the sender task of `target`, started on first use. Unbounded by design: every
    /// item carries its emit's deadline (`sendTimeout`) and is failed with `CONNECTION_FAILED` when
    /// it passes, and every emit awaits its outcome, so what waits here is bounded by the emits
    /// the app has in flight within one `sendTimeout`; a bounded channel would add a second wait
    /// with no deadline of its own.
    fn sender_for(&self, target: Option<String>) -> mpsc::UnboundedSender<SendItem> {
        let mut senders = lock(&self.senders);
        if let Some(tx) = senders.get(&target) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = SenderTask {
            conn: self.conn.clone(),
            target: target.clone(),
            capabilities: self.cfg.profile.sender_capabilities(),
            settled: self.cfg.qos == 0,
            log: self.log.clone(),
            stop: self.stop.subscribe(),
        };
        lock(&self.tasks).push(tokio::spawn(task.run(rx)));
        senders.insert(target, tx.clone());
        tx
    }
}

#[async_trait]
impl Transport for AmqpTransport {
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        let p = &self.cfg.profile;
        let dead = match (&self.cfg.queue.dead_letter_queue, p.provisions()) {
            (Some(dlq), true) => format!("the dead-letter queue '{dlq}'"),
            _ => p.dead_letter_place(&self.cfg.queue.name),
        };
        let (delivery, emit) = if self.cfg.qos == 0 {
            ("at-most-once", "emits are sent pre-settled (qos 0)")
        } else {
            (
                "at-least-once",
                "emits resolve once the broker accepted them",
            )
        };
        Guarantee {
            delivery,
            dead_letter: dead.clone(),
            summary: format!(
                "{delivery} via AMQP 1.0 at {} (profile {}, queue '{}'): {emit}; a failing handler is retried up to {} attempt(s) ({} to the broker), then the message goes to {dead}",
                self.cfg.conn.endpoint(),
                p.name(),
                self.cfg.queue.name,
                policy.max_attempts,
                p.retry_outcome().as_str(),
            ),
        }
    }

    async fn start(&self, ctx: TransportContext) -> Result<()> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(Error::new(
                ErrorCode::Internal,
                "AMQP transport started twice",
            ));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorCode::Closed,
                "the messaging engine is closed",
            ));
        }
        if !self.cfg.deploy_for_provider {
            self.log.info(&format!(
                "deployForProvider is false: no queue '{}' for the provider (only subscriber tenants get one, on their subscribe)",
                self.cfg.queue.name
            ));
        }
        let prov = Provisioner {
            cfg: self.cfg.clone(),
            log: self.log.clone(),
            stop: self.stop.subscribe(),
            ready: watch::channel(0).0,
            receivers: Vec::new(),
            conn: self.conn.clone(),
            attempts: Arc::new(Mutex::new(Attempts::default())),
            reprovision: Arc::new(tokio::sync::Notify::new()),
            ctx,
        };
        // Emits wait (in the engine) until the bindings of earlier subscriptions exist.
        prov.ctx.subscriptions.track_applied();
        lock(&self.tasks).push(tokio::spawn(prov.run()));
        Ok(())
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        let mut waits = Vec::with_capacity(batch.len());
        let deadline = Instant::now() + self.cfg.send_timeout;
        for m in batch {
            if self.closed.load(Ordering::Acquire) {
                waits.push(Err(Error::closed(&m.topic)));
                continue;
            }
            let route = match self.cfg.profile.route(&m.topic) {
                Ok(r) => r,
                Err(e) => {
                    waits.push(Err(e));
                    continue;
                }
            };
            let message = codec::outbound(
                &route,
                &m.payload,
                m.cloud_event,
                codec::new_message_id(),
                self.cfg.durable,
            );
            let sendable = fe2o3_amqp::link::delivery::Sendable::builder()
                .message(message)
                .settled(self.cfg.qos == 0)
                .build();
            let (tx, rx) = oneshot::channel();
            let item = SendItem {
                sendable,
                topic: m.topic.clone(),
                deadline,
                done: tx,
            };
            if self.sender_for(route.link).send(item).is_err() {
                waits.push(Err(Error::closed(&m.topic)));
                continue;
            }
            waits.push(Ok((m.topic, rx)));
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(match w {
                Err(e) => Err(e),
                Ok((topic, rx)) => rx.await.unwrap_or_else(|_| Err(Error::closed(&topic))),
            });
        }
        out
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        lock(&self.senders).clear();
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(8), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // The registry holds only a Weak, so a count of one means no other transport of this
        // process uses the connection. Best effort: a `SharedConn::get` racing with this check
        // may get a connection that is being closed; its next session then reconnects.
        if Arc::strong_count(&self.conn) == 1 {
            self.conn.shutdown().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
