//! `native-mqtt-messaging`: MQTT 3.1.1 brokers (Mosquitto, SAP Event Mesh, …) over TCP, TLS,
//! WebSocket and secure WebSocket, with the [`rumqttc`] client.
//!
//! ## Behavior
//! - **Two connections per service.** A *publisher* (clean session, client id
//!   `<clientId>-pub-<random>`) carries emits and dead letters; a *consumer* (persistent session:
//!   clean session off, the stable `clientId`, manual acks) is opened once the service listens and
//!   something is subscribed (see [`lazy`]). Handlers that emit while they run never wait behind their own deliveries.
//! - **Emit.** QoS 1 (default): an emit resolves when the broker's PUBACK arrived; QoS 0: when it was
//!   written to the socket. Up to [`PUBLISH_WINDOW`] publishes are on their way at once. An emit
//!   that is not confirmed within `publishTimeout` rejects with `CONNECTION_FAILED` (it may still
//!   reach the broker later: at-least-once). The engine holds an emit (at most its `subscribe_wait`) until
//!   subscriptions made before it by the same service were confirmed (SUBACK, reported with
//!   `Subscriptions::applied`), so a message
//!   emitted right after `on()` is not missed.
//! - **Consume.** Inbound QoS 1 messages are acknowledged (PUBACK) only after every handler
//!   succeeded. A failing handler is retried in-process with the engine's back-off while the
//!   message stays unacknowledged, so a crash means the broker redelivers it on reconnect (with
//!   DUP). After the last attempt the message is published unchanged to
//!   `<deadLetterTopic>/<topic>/<id>` (QoS 1, *retained* unless `deadLetterRetain` is off), and
//!   acknowledged once that publish is confirmed. The id (`<ms since the epoch>-<random>`) gives
//!   every dead letter a retained place of its own, so the broker keeps each one until an operator
//!   redelivers or purges it ([`inspect::dead_letters`]); without retain a dead letter reaches only
//!   the subscribers of that moment. Payloads that are not UTF-8 text go to the dead-letter topic
//!   at once, with a warning. Dead letters (ours, or any app's: the last level is a dead-letter
//!   id) that only arrive through `#` are acknowledged without processing.
//! - **Reconnects** with exponential back-off (`reconnectDelay` … `maxReconnectDelay`, ±20 %
//!   jitter), forever; every CONNACK re-subscribes all filters. Emits queued or unconfirmed when
//!   the connection dropped are sent again. Acknowledgements of deliveries from a lost connection
//!   are not sent (the broker redelivers those messages): duplicates are possible, losses are not.
//! - **Subscriptions** are topic filters (`+`, `#` allowed); `'*'` with `forceListening` subscribes
//!   `#`; with `sharedGroup` every filter becomes `$share/<group>/<filter>`.
//! - **Close** waits up to 2 s for deliveries in flight and, while connected, up to 5 s for
//!   unconfirmed emits (which then reject with `CLOSED`), then sends DISCONNECT. Unacknowledged
//!   messages stay in the broker's session.

pub mod address;
mod config;
pub mod conn;
mod consumer;
mod drops;
pub mod inspect;
pub mod lazy;
pub mod oauth;
mod publisher;
pub mod takeover;
pub mod topic;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use self::config::MqttConfig;
use self::conn::Conn;
use self::consumer::{subscriber, ConsumerEvents, Core};
use self::publisher::Publisher;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::Outbound;
use crate::policy::RetryPolicy;
use crate::transport::support::tls;
use crate::transport::{Guarantee, Redelivery, Transport, TransportContext};

/// Publishes queued or awaiting their PUBACK at once, per service.
pub const PUBLISH_WINDOW: usize = 2048;
/// How long `close` waits for deliveries in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `close` waits for unconfirmed emits.
const PUBLISH_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

struct Consumer {
    core: Arc<Core>,
    /// Opens the connection once something is subscribed, then runs the subscriber.
    subscriber: JoinHandle<()>,
}

/// The MQTT transport.
pub struct MqttTransport {
    config: MqttConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    log: Logger,
    publisher: Arc<Publisher>,
    consumer: Mutex<Option<Consumer>>,
    core: OnceLock<Arc<Core>>,
    closed: AtomicBool,
    /// The publisher connection reached the broker at least once.
    publisher_reached: AtomicBool,
}

impl MqttTransport {
    /// Validates the configuration and prepares TLS; connections are opened on first use.
    pub fn new(config: MqttConfig, log: Logger) -> Result<Self> {
        config.validate()?;
        let tls = if config.endpoint.scheme.is_tls() {
            Some(tls::client_config(&config.tls, "")?)
        } else {
            None
        };
        let mut settings = config.settings(tls.clone());
        settings.role = "publisher";
        settings.client_id = format!("{}-pub-{:08x}", config.client_id, fastrand::u32(..));
        settings.clean_session = true;
        settings.manual_acks = false;
        settings.window = PUBLISH_WINDOW;
        settings.extra_requests = 64;
        Ok(MqttTransport {
            publisher: Arc::new(Publisher {
                settings,
                log: log.clone(),
                conn: OnceCell::new(),
            }),
            config,
            tls,
            log,
            consumer: Mutex::new(None),
            core: OnceLock::new(),
            closed: AtomicBool::new(false),
            publisher_reached: AtomicBool::new(false),
        })
    }

    fn consumer(&self) -> std::sync::MutexGuard<'_, Option<Consumer>> {
        crate::sync::lock(&self.consumer)
    }
}

#[async_trait]
impl Transport for MqttTransport {
    fn redelivery(&self) -> Redelivery {
        // Handler retries happen in this process; dead letters go to the broker's topic.
        Redelivery::InProcess {
            dead_letters_in_memory: false,
        }
    }

    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        let dead = format!(
            "{}/<topic>/<id>{}",
            self.config.dead_letter_topic,
            if self.config.dead_letter_retain {
                " (retained)"
            } else {
                " (not retained)"
            }
        );
        let summary = if self.config.qos == 0 {
            format!(
                "at-most-once (QoS 0) via {}: emits resolve once written; messages that arrive while the consumer is down are not kept; a failing handler is retried up to {} attempt(s), then the message goes to {dead}",
                self.config.endpoint, policy.max_attempts
            )
        } else {
            format!(
                "at-least-once (QoS 1) via {} with persistent session '{}': emits resolve on PUBACK; a message is acknowledged only after every handler succeeded; a failing handler is retried up to {} attempt(s) while unacknowledged, then the message goes to {dead}",
                self.config.endpoint, self.config.client_id, policy.max_attempts
            )
        };
        Guarantee {
            delivery: if self.config.qos == 0 {
                "at-most-once"
            } else {
                "at-least-once"
            },
            dead_letter: dead,
            summary,
        }
    }

    async fn start(&self, ctx: TransportContext) -> Result<()> {
        let mut slot = self.consumer();
        if slot.is_some() || self.core.get().is_some() {
            return Err(Error::new(
                ErrorCode::Internal,
                "mqtt transport started twice",
            ));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorCode::Closed,
                "the messaging engine is closed",
            ));
        }
        ctx.subscriptions.track_applied();
        let core = Arc::new(Core {
            conn: OnceLock::new(),
            publisher: self.publisher.clone(),
            subscriptions: ctx.subscriptions.clone(),
            dead_letter_base: self.config.dead_letter_topic.clone(),
            dead_letter_retain: self.config.dead_letter_retain,
            broker_drops: self
                .config
                .watch_broker_drops
                .then(drops::BrokerDrops::default),
            publish_timeout: self.config.publish_timeout,
            unsettled: Arc::new(AtomicUsize::new(0)),
            closing: AtomicBool::new(false),
            log: self.log.clone(),
        });
        let mut settings = self.config.settings(self.tls.clone());
        settings.extra_requests = ctx.max_in_flight.saturating_mul(4) + 1024;
        let events = Arc::new(ConsumerEvents {
            core: core.clone(),
            deliveries: ctx.deliveries,
        });
        let _ = self.core.set(core.clone());
        let (log, qos, group) = (
            self.log.clone(),
            self.config.qos(),
            self.config.shared_group.clone(),
        );
        let opener = core.clone();
        let subscriber = tokio::spawn(async move {
            if !lazy::subscribed(&opener.subscriptions).await {
                return;
            }
            match Conn::open(settings, log.clone(), Some(events)) {
                Ok(conn) => {
                    let _ = opener.conn.set(conn.clone());
                    subscriber(opener, conn, qos, group).await
                }
                Err(e) => log.error(&format!(
                    "cannot open the consumer connection: {}",
                    e.full_message()
                )),
            }
        });
        *slot = Some(Consumer { core, subscriber });
        Ok(())
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        if self.closed.load(Ordering::Acquire) {
            return batch.iter().map(|m| Err(Error::closed(&m.topic))).collect();
        }
        let deadline = Instant::now() + self.config.publish_timeout;
        let conn = match self.publisher.get().await {
            Ok(c) => c,
            Err(e) => {
                return batch
                    .iter()
                    .map(|_| Err(Error::new(e.code, e.full_message())))
                    .collect()
            }
        };
        match lazy::reached(&conn, &self.publisher_reached, deadline).await {
            lazy::Reach::Reached => {}
            lazy::Reach::Never => {
                return batch
                    .iter()
                    .map(|m| Err(lazy::never_reached(&conn, &m.topic)))
                    .collect()
            }
            lazy::Reach::Refused(reason) => {
                return batch
                    .iter()
                    .map(|m| Err(conn.refused_error(&m.topic, &reason)))
                    .collect()
            }
        }
        let qos = self.config.qos();
        let mut pending = Vec::with_capacity(batch.len());
        for m in batch {
            if let Some(why) = topic::publish_problem(&m.topic) {
                pending.push((
                    m.topic.clone(),
                    Err(Error::new(
                        ErrorCode::InvalidDataFormat,
                        format!("cannot emit '{}': {why}", m.topic),
                    )),
                ));
                continue;
            }
            let r = conn
                .publish(m.topic.clone(), m.payload.into_bytes(), qos, deadline)
                .await;
            pending.push((m.topic, r));
        }
        let mut out = Vec::with_capacity(pending.len());
        for (topic, r) in pending {
            out.push(match r {
                Err(e) => Err(e),
                Ok(rx) => conn.confirmation(&topic, rx, deadline).await,
            });
        }
        out
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let consumer = self.consumer().take();
        if let Some(c) = consumer {
            c.core.closing.store(true, Ordering::Release);
            let until = Instant::now() + DRAIN_TIMEOUT;
            while c.core.unsettled.load(Ordering::Acquire) > 0 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            c.subscriber.abort();
            if let Some(conn) = c.core.conn.get() {
                conn.close(Duration::from_secs(2)).await;
            }
        }
        if let Some(p) = self.publisher.conn.get() {
            let until = Instant::now() + PUBLISH_DRAIN_TIMEOUT;
            let up = p.watch_connected();
            while p.outstanding() > 0 && up.borrow().is_some() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            p.close(Duration::from_secs(2)).await;
        }
        Ok(())
    }
}

impl Drop for MqttTransport {
    fn drop(&mut self) {
        if let Some(c) = self.consumer().take() {
            c.subscriber.abort();
            if let Some(conn) = c.core.conn.get() {
                conn.abort();
            }
        }
        if let Some(p) = self.publisher.conn.get() {
            p.abort();
        }
    }
}

#[cfg(test)]
mod tests;
