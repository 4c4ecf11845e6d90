//! Receiving: one task per source, its settlement channel and the per-message attempt counts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::{Body, Modified, Source};
use fe2o3_amqp::types::primitives::Value;
use tokio::sync::{mpsc, watch};

use super::codec;
use super::connection::{end_session, link_name, SharedConn};
use super::error::{attach_error, attach_timeout, ConnectError, Failure, LinkRole};
use super::profile::{FailOutcome, Profile};
use crate::error::Result;
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, InFlight, Inbound, Settle};
use crate::sync::lock;
use crate::transport::support::backoff::{should_log, Reconnect};
use crate::transport::TransportContext;

pub(super) enum SettleCmd {
    Accept,
    Fail(FailOutcome, String),
}

pub(super) struct Settlement {
    pub(super) generation: u64,
    pub(super) info: DeliveryInfo,
    pub(super) cmd: SettleCmd,
}

/// Attempts per message id, bounded (oldest forgotten first).
#[derive(Default)]
pub(super) struct Attempts {
    pub(super) map: HashMap<String, u32>,
    pub(super) order: VecDeque<String>,
}

pub(super) const ATTEMPTS_CAPACITY: usize = 100_000;

impl Attempts {
    pub(super) fn get(&self, key: &str) -> u32 {
        self.map.get(key).copied().unwrap_or(0)
    }
    pub(super) fn set(&mut self, key: &str, n: u32) {
        if self.map.insert(key.to_string(), n).is_none() {
            self.order.push_back(key.to_string());
            if self.order.len() > ATTEMPTS_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
    pub(super) fn forget(&mut self, key: &str) {
        self.map.remove(key);
    }
}

pub(super) struct AmqpSettle {
    pub(super) generation: u64,
    pub(super) info: DeliveryInfo,
    pub(super) key: String,
    pub(super) attempt: u32,
    pub(super) retry: FailOutcome,
    pub(super) dead: FailOutcome,
    pub(super) tx: mpsc::UnboundedSender<Settlement>,
    pub(super) attempts: Arc<Mutex<Attempts>>,
}

impl Settle for AmqpSettle {
    fn ack(self: Box<Self>, _place: InFlight) {
        lock(&self.attempts).forget(&self.key);
        let _ = self.tx.send(Settlement {
            generation: self.generation,
            info: self.info,
            cmd: SettleCmd::Accept,
        });
    }

    fn retry(self: Box<Self>, delay: Duration, error: &HandlerError) {
        lock(&self.attempts).set(&self.key, self.attempt);
        let why = error.message.clone();
        tokio::spawn(async move {
            // Hold the message (unsettled) for the back-off, then hand it back to the broker.
            tokio::time::sleep(delay).await;
            let _ = self.tx.send(Settlement {
                generation: self.generation,
                info: self.info,
                cmd: SettleCmd::Fail(self.retry, why),
            });
        });
    }

    fn dead_letter(self: Box<Self>, error: &HandlerError) {
        lock(&self.attempts).forget(&self.key);
        let _ = self.tx.send(Settlement {
            generation: self.generation,
            info: self.info,
            cmd: SettleCmd::Fail(self.dead, error.message.clone()),
        });
    }
}

pub(super) struct ReceiverTask {
    pub(super) conn: Arc<SharedConn>,
    pub(super) source: String,
    pub(super) link_topic: Option<String>,
    pub(super) profile: Profile,
    pub(super) prefetch: u32,
    pub(super) ctx: TransportContext,
    pub(super) log: Logger,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) attempts: Arc<Mutex<Attempts>>,
    /// Provisioning to run before every attach (RabbitMQ).
    pub(super) ready: watch::Receiver<u64>,
    /// Asks the provisioner to declare and bind again (the queue may have been deleted).
    pub(super) reprovision: Arc<tokio::sync::Notify>,
}

pub(super) fn delivery_key(d: &codec::Decoded, topic: &str) -> String {
    match &d.message_id {
        Some(id) => format!("id:{id}"),
        None => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            topic.hash(&mut h);
            d.payload.hash(&mut h);
            format!("h:{:x}", h.finish())
        }
    }
}

impl ReceiverTask {
    pub(super) async fn attach(
        &self,
        stale: Option<u64>,
    ) -> Result<(Receiver, SessionHandle<()>, u64), ConnectError> {
        let (mut session, generation) = self.conn.session(stale).await?;
        let b = Receiver::builder()
            .name(link_name(&self.conn.settings.container_id, "recv"))
            .source(Source::builder().address(self.source.clone()).build())
            .credit_mode(CreditMode::Manual)
            .auto_accept(false);
        match tokio::time::timeout(self.conn.settings.connect_timeout, b.attach(&mut session)).await
        {
            Ok(Ok(r)) => Ok((r, session, generation)),
            Ok(Err(e)) => {
                end_session(session).await;
                let refused = match &e {
                    fe2o3_amqp::link::ReceiverAttachError::RemoteClosedWithError(err)
                    | fe2o3_amqp::link::ReceiverAttachError::SessionStopped(
                        fe2o3_amqp::link::SessionStopReason::RemoteEndedWithError(err),
                    ) => Some(err),
                    _ => None,
                };
                let source = format!("'{}'", self.source);
                Err(attach_error(LinkRole::Receiver, &source, refused, &e))
            }
            Err(_) => {
                end_session(session).await;
                Err(attach_timeout(
                    LinkRole::Receiver,
                    &format!("'{}'", self.source),
                ))
            }
        }
    }

    pub(super) async fn run(mut self) {
        let (settle_tx, mut settle_rx) = mpsc::unbounded_channel::<Settlement>();
        let mut stale: Option<u64> = None;
        let mut reconnect = Reconnect::new(self.conn.settings.backoff());
        'outer: loop {
            if *self.stop.borrow() {
                return;
            }
            if reconnect.is_up() {
                // The link was lost: one that did not stay up for long waits before re-attaching.
                let wait = reconnect.on_lost();
                if !wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {},
                        _ = self.stop.changed() => return,
                    }
                }
            }
            // Wait for provisioning of the queue (a generation > 0).
            while *self.ready.borrow() == 0 {
                tokio::select! {
                    r = self.ready.changed() => if r.is_err() { return },
                    _ = self.stop.changed() => return,
                }
            }
            let (mut receiver, session, generation) = match self.attach(stale.take()).await {
                Ok(l) => l,
                Err(e) => {
                    let failures = reconnect.on_failed();
                    if e.kind == Failure::Permanent {
                        self.reprovision.notify_one();
                    }
                    if should_log(failures) {
                        let level = if e.kind == Failure::Permanent {
                            crate::log::Level::Error
                        } else {
                            crate::log::Level::Warn
                        };
                        self.log.log(
                            level,
                            &format!(
                                "{}: {}; retrying with back-off",
                                e.error.code.as_str(),
                                e.error.full_message()
                            ),
                        );
                    }
                    let wait = reconnect.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {},
                        _ = self.stop.changed() => return,
                    }
                    continue;
                }
            };
            if reconnect.failures() > 0 {
                self.log
                    .info(&format!("consuming from '{}' again", self.source));
            }
            reconnect.on_connected();
            let mut unsettled: usize = 0;
            if let Err(e) = receiver.set_credit(self.prefetch).await {
                self.log.warn(&format!(
                    "cannot grant credit on '{}' ({e}); re-attaching",
                    self.source
                ));
                stale = Some(generation);
                end_session(session).await;
                continue;
            }
            loop {
                // Top up credit only when it is used up (RabbitMQ 3.x can oversend otherwise).
                if receiver.credit() == 0 && unsettled <= self.prefetch as usize / 2 {
                    let grant = (self.prefetch as usize - unsettled).max(1) as u32;
                    if let Err(e) = receiver.set_credit(grant).await {
                        self.log.warn(&format!(
                            "cannot grant credit on '{}' ({e}); re-attaching",
                            self.source
                        ));
                        stale = Some(generation);
                        end_session(session).await;
                        continue 'outer;
                    }
                }
                tokio::select! {
                    biased;
                    _ = self.stop.changed() => {
                        // Unsettled deliveries go back to the queue when the link detaches.
                        let _ = tokio::time::timeout(Duration::from_secs(1), receiver.detach()).await;
                        end_session(session).await;
                        return;
                    }
                    Some(first) = settle_rx.recv() => {
                        let mut batch = vec![first];
                        while let Ok(s) = settle_rx.try_recv() {
                            batch.push(s);
                        }
                        let mut accepts = Vec::new();
                        let mut broken = None;
                        for s in batch {
                            if s.generation != generation {
                                continue; // that link is gone; the broker redelivers it
                            }
                            unsettled = unsettled.saturating_sub(1);
                            let r = match s.cmd {
                                SettleCmd::Accept => {
                                    accepts.push(s.info);
                                    Ok(())
                                }
                                SettleCmd::Fail(FailOutcome::Released, _) => receiver.release(s.info).await,
                                SettleCmd::Fail(FailOutcome::Modified, _) => receiver.modify(s.info, Modified {
                                    delivery_failed: Some(true),
                                    undeliverable_here: None,
                                    message_annotations: None,
                                }).await,
                                SettleCmd::Fail(FailOutcome::Rejected, why) => receiver.reject(s.info, definitions::Error::new(
                                    ErrorCondition::AmqpError(AmqpError::InternalError),
                                    Some(truncate(&why, 512)),
                                    None,
                                )).await,
                            };
                            if let Err(e) = r {
                                broken = Some(e.to_string());
                            }
                        }
                        if !accepts.is_empty() {
                            if let Err(e) = receiver.accept_all(accepts).await {
                                broken = Some(e.to_string());
                            }
                        }
                        if let Some(why) = broken {
                            self.log.warn(&format!("settling on '{}' failed ({why}); re-attaching (the broker redelivers what was not settled)", self.source));
                            stale = Some(generation);
                            end_session(session).await;
                            continue 'outer;
                        }
                    }
                    _ = self.conn.lost(generation) => {
                        self.log.warn(&format!(
                            "CONNECTION_FAILED: receiver on '{}' lost its connection; re-attaching (unsettled messages are redelivered by the broker)",
                            self.source
                        ));
                        stale = Some(generation);
                        drop(receiver);
                        end_session(session).await;
                        continue 'outer;
                    }
                    r = receiver.recv::<Body<Value>>() => match r {
                        Ok(d) => {
                            unsettled += 1;
                            let (info, message) = d.into_parts();
                            let decoded = codec::decode(&message, &self.profile, self.link_topic.as_deref());
                            drop(message);
                            let topic = decoded.topic.clone().unwrap_or_default();
                            if topic.is_empty() {
                                self.log.warn(&format!(
                                    "a message from '{}' carries no topic (profile {}); handing it to '*' handlers, else it is dead-lettered",
                                    self.source, self.profile.name()
                                ));
                            }
                            let key = delivery_key(&decoded, &topic);
                            let seen = lock(&self.attempts).get(&key);
                            let attempt = (seen + 1).max(decoded.delivery_count.saturating_add(1));
                            let settle = AmqpSettle {
                                generation,
                                info,
                                key,
                                attempt,
                                retry: self.profile.retry_outcome(),
                                dead: self.profile.dead_letter_outcome(),
                                tx: settle_tx.clone(),
                                attempts: self.attempts.clone(),
                            };
                            let delivery = Delivery {
                                message: Inbound { topic, payload: decoded.payload, attempt },
                                settle: Box::new(settle),
                            };
                            if self.ctx.deliveries.send(delivery).await.is_err() {
                                // The engine stopped: detaching gives the message back.
                                let _ = tokio::time::timeout(Duration::from_secs(1), receiver.detach()).await;
                                end_session(session).await;
                                return;
                            }
                        }
                        Err(e) => {
                            self.log.warn(&format!(
                                "CONNECTION_FAILED: receiver on '{}' lost ({e}); re-attaching (unsettled messages are redelivered by the broker)",
                                self.source
                            ));
                            stale = Some(generation);
                            drop(receiver);
                            end_session(session).await;
                            continue 'outer;
                        }
                    },
                }
            }
        }
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
