//! The consumer: shared state, settle handles, connection events and the subscriber task.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rumqttc::{Publish, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

use super::conn::{Conn, Events, SubTicket};
use super::drops::{self, BrokerDrops};
use super::publisher::Publisher;
use super::{conn, topic};
use crate::error::ErrorCode;
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, InFlight, Inbound, Settle};
use crate::subscriptions::Subscriptions;
use crate::transport::support::backoff::{should_log, Backoff};

/// Shared state of the consumer, used by its connection's loop and by every delivery.
pub(super) struct Core {
    pub(super) conn: OnceLock<Arc<Conn>>,
    pub(super) publisher: Arc<Publisher>,
    pub(super) subscriptions: Arc<Subscriptions>,
    pub(super) dead_letter_base: String,
    /// Publish dead letters retained (each on a topic of its own), so they stay until removed.
    pub(super) dead_letter_retain: bool,
    /// Watches Mosquitto's count of dropped messages (see [`drops`]); `None` when off.
    pub(super) broker_drops: Option<BrokerDrops>,
    pub(super) publish_timeout: Duration,
    pub(super) unsettled: Arc<AtomicUsize>,
    pub(super) closing: AtomicBool,
    pub(super) log: Logger,
}

impl Core {
    /// The broker confirmed the subscriptions of `version`: emits waiting for them go on.
    pub(super) fn acked(&self, version: u64) {
        self.subscriptions.applied(version);
    }

    /// Publishes a dead letter to `<base>/<topic>/<id>` (retained when configured; retrying until it
    /// is confirmed or the service closes), then acknowledges the original.
    pub(super) async fn dead_letter(
        &self,
        topic: &str,
        payload: Vec<u8>,
        ack: &Publish,
        epoch: u64,
    ) {
        let id = topic::new_dead_letter_id();
        let target = topic::dead_letter_topic(&self.dead_letter_base, topic, &id);
        let mut failures = 0u32;
        loop {
            match self
                .publisher
                .publish_one(
                    target.clone(),
                    payload.clone(),
                    self.dead_letter_retain,
                    self.publish_timeout,
                )
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    if self.closing.load(Ordering::Acquire) || e.code == ErrorCode::Closed {
                        self.log.warn(&format!(
                            "message on topic '{topic}' could not be moved to '{target}' before shutdown; it stays unacknowledged and the broker will redeliver it"
                        ));
                        return;
                    }
                    if should_log(failures) {
                        self.log.error(&format!(
                            "cannot publish the dead letter of '{topic}' to '{target}' ({}); retrying",
                            e.full_message()
                        ));
                    }
                    let delay = DEAD_LETTER_BACKOFF.delay(failures);
                    tokio::time::sleep(delay).await;
                }
            }
        }
        if let Some(c) = self.conn.get() {
            c.ack(ack, epoch);
        }
    }
}

/// Back-off between attempts to publish a dead letter: 1 s, doubling, at most 32 s.
const DEAD_LETTER_BACKOFF: Backoff = Backoff {
    min: Duration::from_secs(1),
    max: Duration::from_secs(32),
};

/// Counts a delivery as unsettled until the settle handle is dropped.
pub(super) struct Unsettled(Arc<AtomicUsize>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) struct MqttSettle {
    pub(super) ack: Publish,
    pub(super) epoch: u64,
    pub(super) message: Inbound,
    pub(super) core: Arc<Core>,
    pub(super) _unsettled: Unsettled,
}

impl Settle for MqttSettle {
    fn ack(self: Box<Self>, _place: InFlight) {
        if let Some(c) = self.core.conn.get() {
            c.ack(&self.ack, self.epoch);
        }
    }

    fn dead_letter(self: Box<Self>, _error: &HandlerError) {
        tokio::spawn(async move {
            let me = *self;
            let payload = me.message.payload.clone().into_bytes();
            me.core
                .dead_letter(&me.message.topic, payload, &me.ack, me.epoch)
                .await;
        });
    }
}

pub(super) struct ConsumerEvents {
    pub(super) core: Arc<Core>,
    pub(super) deliveries: mpsc::Sender<Delivery>,
}

impl Events for ConsumerEvents {
    fn connected(&self, _epoch: u64, _session_present: bool) {}

    fn deliveries(&self) -> &mpsc::Sender<Delivery> {
        &self.deliveries
    }

    fn publish(&self, p: Publish, epoch: u64) -> Option<Delivery> {
        let core = &self.core;
        if p.topic == drops::TOPIC {
            // subscribed at QoS 0: nothing to acknowledge
            if let (Some(watch), Some(c)) = (&core.broker_drops, core.conn.get()) {
                if let Some(growth) = watch.observe(&p.payload, p.retain) {
                    core.log.error(&BrokerDrops::message(growth, &c.label()));
                }
            }
            return None;
        }
        let ack = Publish {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: String::new(),
            pkid: p.pkid,
            payload: Default::default(),
        };
        if topic::is_own_dead_letter(
            &core.dead_letter_base,
            &p.topic,
            &core.subscriptions.snapshot(),
        ) || topic::is_dead_letter_removal(&p.topic, p.payload.is_empty())
        {
            if let Some(c) = core.conn.get() {
                c.ack(&ack, epoch);
            }
            return None;
        }
        let payload = match String::from_utf8(p.payload.to_vec()) {
            Ok(s) => s,
            Err(e) => {
                let bytes = e.into_bytes();
                core.log.warn(&format!(
                    "message on topic '{}' is not UTF-8 text ({} bytes); moving it to the dead-letter topic {}/{}/<id>",
                    p.topic,
                    bytes.len(),
                    core.dead_letter_base,
                    p.topic
                ));
                let core = core.clone();
                tokio::spawn(async move {
                    core.dead_letter(&p.topic, bytes, &ack, epoch).await;
                });
                return None;
            }
        };
        core.unsettled.fetch_add(1, Ordering::AcqRel);
        let message = Inbound {
            topic: p.topic,
            payload,
            attempt: 1,
        };
        Some(Delivery {
            message: message.clone(),
            settle: Box::new(MqttSettle {
                ack,
                epoch,
                message,
                core: core.clone(),
                _unsettled: Unsettled(core.unsettled.clone()),
            }),
        })
    }

    fn subscribed(&self, ticket: SubTicket, codes: Vec<SubscribeReasonCode>) {
        if ticket.filters.iter().any(|f| f == drops::TOPIC) {
            // a broker without Mosquitto's `$SYS` topics may refuse it: then nothing is watched
            return;
        }
        for (filter, code) in ticket.filters.iter().zip(&codes) {
            if matches!(code, SubscribeReasonCode::Failure) {
                self.core.log.error(&format!(
                    "the broker refused the subscription to '{filter}' (not authorized, or not supported); messages on it are not received"
                ));
            }
        }
        self.core.acked(ticket.version);
    }
}

pub(super) async fn subscriber(core: Arc<Core>, conn: Arc<Conn>, qos: QoS, group: Option<String>) {
    let mut subs_rx = core.subscriptions.watch();
    let mut conn_rx = conn.watch_connected();
    let mut current = std::collections::BTreeSet::new();
    let mut current_epoch: Option<u64> = None;
    let mut watching: Option<u64> = None;
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        let epoch = *conn_rx.borrow_and_update();
        let version = *subs_rx.borrow_and_update();
        if epoch != current_epoch {
            current.clear();
            current_epoch = epoch;
        }
        let (want, invalid) = topic::filters(&core.subscriptions.snapshot(), group.as_deref());
        for t in invalid {
            if reported.insert(t.clone()) {
                core.log.error(&format!(
                    "cannot subscribe to '{t}': not a valid MQTT topic filter ('#' only at the end, '+' and '#' only as whole levels)"
                ));
            }
        }
        if epoch.is_some() {
            let (add, remove) = conn::diff(&current, &want);
            for f in remove {
                conn.unsubscribe(f).await;
            }
            if add.is_empty() {
                core.acked(version);
            } else {
                conn.subscribe(add, qos, version).await;
            }
            current = want;
            if core.broker_drops.is_some() && watching != epoch {
                watching = epoch;
                conn.subscribe(vec![drops::TOPIC.to_string()], QoS::AtMostOnce, version)
                    .await;
            }
        }
        tokio::select! {
            r = subs_rx.changed() => if r.is_err() { return },
            r = conn_rx.changed() => if r.is_err() { return },
        }
    }
}
