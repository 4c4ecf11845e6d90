//! `native-mqtt-messaging`: MQTT 3.1.1 brokers (Mosquitto, SAP Event Mesh, …) over TCP, TLS,
//! WebSocket and secure WebSocket, with the [`rumqttc`] client.
//!
//! ## Behavior
//! - **Two connections per service.** A *publisher* (clean session, client id
//!   `<clientId>-pub-<random>`) carries emits and dead letters; a *consumer* (persistent session:
//!   clean session off, the stable `clientId`, manual acks) is opened when the service starts
//!   listening. Handlers that emit while they run never wait behind their own deliveries.
//! - **Emit.** QoS 1 (default): an emit resolves when the broker's PUBACK arrived; QoS 0: when it was
//!   written to the socket. Up to [`PUBLISH_WINDOW`] publishes are on their way at once. An emit
//!   that is not confirmed within `publishTimeout` rejects with `CONNECTION_FAILED` (it may still
//!   reach the broker later: at-least-once). An emit waits (at most [`SUBSCRIBE_WAIT`]) until
//!   subscriptions made before it by the same service were confirmed (SUBACK), so a message
//!   emitted right after `on()` is not missed.
//! - **Consume.** Inbound QoS 1 messages are acknowledged (PUBACK) only after every handler
//!   succeeded. A failing handler is retried in-process with the engine's back-off while the
//!   message stays unacknowledged, so a crash means the broker redelivers it on reconnect (with
//!   DUP). After the last attempt the message is published unchanged to
//!   `<deadLetterTopic>/<topic>` (QoS 1), and acknowledged once that publish is confirmed.
//!   Payloads that are not UTF-8 text go to the dead-letter topic at once, with a warning.
//!   Our own dead letters that only arrive through `#` are acknowledged without processing.
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
pub mod conn;
pub mod tls;
pub mod topic;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{Publish, QoS, SubscribeReasonCode};
use tokio::sync::{mpsc, watch, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::address::Endpoint;
use self::conn::{Conn, ConnSettings, Events, SubTicket};
use self::tls::TlsOptions;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, Inbound, Outbound, Settle};
use crate::policy::RetryPolicy;
use crate::subscriptions::Subscriptions;
use crate::transport::{Guarantee, Transport, TransportContext};

/// Publishes queued or awaiting their PUBACK at once, per service.
pub const PUBLISH_WINDOW: usize = 2048;
/// Longest time an emit waits for earlier subscriptions of its service to be confirmed.
pub const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);
/// How long `close` waits for deliveries in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `close` waits for unconfirmed emits.
const PUBLISH_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the MQTT transport.
#[derive(Clone)]
pub struct MqttConfig {
    /// The broker.
    pub endpoint: Endpoint,
    /// User name (overrides the URL's).
    pub username: Option<String>,
    /// Password (overrides the URL's).
    pub password: Option<String>,
    /// Stable client id of the consumer's persistent session.
    pub client_id: String,
    /// MQTT keep-alive (whole seconds, 1 … 65535).
    pub keep_alive: Duration,
    /// Quality of service for emits and subscriptions: 0 or 1.
    pub qos: u8,
    /// TLS settings for `mqtts://` and `wss://`.
    pub tls: TlsOptions,
    /// OAuth bearer token for the WebSocket upgrade request.
    pub token: Option<String>,
    /// Shared-subscription group (`$share/<group>/…`).
    pub shared_group: Option<String>,
    /// Base topic of dead letters: `<dead_letter_topic>/<original topic>`.
    pub dead_letter_topic: String,
    /// How long an emit may wait for its confirmation.
    pub publish_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_delay: Duration,
    /// Upper bound of the reconnect delay.
    pub max_reconnect_delay: Duration,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("qos", &self.qos)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("shared_group", &self.shared_group)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("publish_timeout", &self.publish_timeout)
            .finish()
    }
}

impl MqttConfig {
    /// Defaults for the broker at `url` and the consumer session `client_id`.
    pub fn new(url: &str, client_id: impl Into<String>) -> Result<Self> {
        let client_id = client_id.into();
        Ok(MqttConfig {
            endpoint: Endpoint::parse(url)?,
            username: None,
            password: None,
            dead_letter_topic: format!("dead-letter/{client_id}"),
            client_id,
            keep_alive: Duration::from_secs(30),
            qos: 1,
            tls: TlsOptions {
                verify: true,
                ..Default::default()
            },
            token: None,
            shared_group: None,
            publish_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_millis(250),
            max_reconnect_delay: Duration::from_secs(10),
        })
    }

    /// Checks every value; errors carry `INVALID_CONFIG` and name the option.
    pub fn validate(&self) -> Result<()> {
        if self.client_id.is_empty() || self.client_id.len() > 65_535 {
            return Err(Error::config(
                "clientId must be a non-empty string (it names the persistent session)",
            ));
        }
        if self.qos > 1 {
            return Err(Error::config(format!(
                "qos must be 0 or 1, got {} (MQTT QoS 2 is not supported)",
                self.qos
            )));
        }
        let ka = self.keep_alive.as_secs();
        if !(1..=65_535).contains(&ka) {
            return Err(Error::config(
                "keepAlive must be between 1000 and 65535000 ms",
            ));
        }
        if let Some(g) = &self.shared_group {
            if !topic::valid_group(g) {
                return Err(Error::config(format!(
                    "sharedGroup '{g}' is not valid: it must be non-empty and contain no '/', '+' or '#'"
                )));
            }
        }
        if let Some(why) = topic::publish_problem(&self.dead_letter_topic) {
            return Err(Error::config(format!(
                "deadLetterTopic '{}' is not valid: {why}",
                self.dead_letter_topic
            )));
        }
        if self.publish_timeout.is_zero() {
            return Err(Error::config("publishTimeout must be at least 1 ms"));
        }
        if self.reconnect_delay.is_zero() || self.max_reconnect_delay < self.reconnect_delay {
            return Err(Error::config(
                "reconnectDelay must be at least 1 ms and not larger than maxReconnectDelay",
            ));
        }
        if let Some(token) = &self.token {
            if !self.endpoint.scheme.is_websocket() {
                return Err(Error::config(
                    "token is sent on the WebSocket upgrade; use a ws:// or wss:// url with it",
                ));
            }
            if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Err(Error::config(
                    "token contains characters that are not allowed in an HTTP header",
                ));
            }
        }
        Ok(())
    }

    fn qos(&self) -> QoS {
        if self.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    fn settings(&self, tls: Option<Arc<rustls::ClientConfig>>) -> ConnSettings {
        ConnSettings {
            role: "consumer",
            endpoint: self.endpoint.clone(),
            client_id: self.client_id.clone(),
            clean_session: false,
            manual_acks: true,
            keep_alive: self.keep_alive,
            username: self
                .username
                .clone()
                .or_else(|| self.endpoint.username.clone()),
            password: self
                .password
                .clone()
                .or_else(|| self.endpoint.password.clone()),
            tls,
            token: self.token.clone(),
            window: 64,
            extra_requests: 1024,
            reconnect_delay: self.reconnect_delay,
            max_reconnect_delay: self.max_reconnect_delay,
        }
    }
}

/// Lazily opened publisher connection, shared by emits and dead letters.
struct Publisher {
    settings: ConnSettings,
    log: Logger,
    conn: OnceCell<Arc<Conn>>,
}

impl Publisher {
    async fn get(&self) -> Result<Arc<Conn>> {
        self.conn
            .get_or_try_init(|| async { Conn::open(self.settings.clone(), self.log.clone(), None) })
            .await
            .cloned()
    }

    /// Publishes one message and waits for its confirmation.
    async fn publish_one(&self, topic: String, payload: Vec<u8>, timeout: Duration) -> Result<()> {
        let conn = self.get().await?;
        let deadline = Instant::now() + timeout;
        let rx = conn
            .publish(topic.clone(), payload, QoS::AtLeastOnce, deadline)
            .await?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::new(
                ErrorCode::Closed,
                "the messaging service was shut down",
            )),
            Err(_) => Err(conn.timeout_error(&topic)),
        }
    }
}

/// Shared state of the consumer, used by its connection's loop and by every delivery.
struct Core {
    conn: OnceLock<Arc<Conn>>,
    publisher: Arc<Publisher>,
    deliveries: mpsc::WeakSender<Delivery>,
    subscriptions: Arc<Subscriptions>,
    dead_letter_base: String,
    publish_timeout: Duration,
    unsettled: Arc<AtomicUsize>,
    acked_version: watch::Sender<u64>,
    closing: AtomicBool,
    log: Logger,
}

impl Core {
    fn acked(&self, version: u64) {
        self.acked_version.send_if_modified(|v| {
            if version > *v {
                *v = version;
                true
            } else {
                false
            }
        });
    }

    /// Publishes a dead letter (retrying until it is confirmed or the service closes), then
    /// acknowledges the original.
    async fn dead_letter(&self, topic: &str, payload: Vec<u8>, ack: &Publish, epoch: u64) {
        let target = topic::dead_letter_topic(&self.dead_letter_base, topic);
        let mut failures = 0u32;
        loop {
            match self
                .publisher
                .publish_one(target.clone(), payload.clone(), self.publish_timeout)
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
                    if failures == 1 || failures.is_power_of_two() {
                        self.log.error(&format!(
                            "cannot publish the dead letter of '{topic}' to '{target}' ({}); retrying",
                            e.full_message()
                        ));
                    }
                    let delay = Duration::from_millis(500u64 << failures.min(6));
                    tokio::time::sleep(delay).await;
                }
            }
        }
        if let Some(c) = self.conn.get() {
            c.ack(ack, epoch);
        }
    }
}

/// Counts a delivery as unsettled until the settle handle is dropped.
struct Unsettled(Arc<AtomicUsize>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct MqttSettle {
    ack: Publish,
    epoch: u64,
    message: Inbound,
    core: Arc<Core>,
    _unsettled: Unsettled,
}

impl Settle for MqttSettle {
    fn ack(self: Box<Self>) {
        if let Some(c) = self.core.conn.get() {
            c.ack(&self.ack, self.epoch);
        }
    }

    fn retry(self: Box<Self>, delay: Duration, _error: &HandlerError) {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut me = *self;
            if me.core.closing.load(Ordering::Acquire) {
                return; // stays unacknowledged: the broker redelivers it
            }
            me.message.attempt = me.message.attempt.saturating_add(1);
            let Some(tx) = me.core.deliveries.upgrade() else {
                return;
            };
            let message = me.message.clone();
            let _ = tx
                .send(Delivery {
                    message,
                    settle: Box::new(me),
                })
                .await;
        });
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

struct ConsumerEvents {
    core: Arc<Core>,
    deliveries: mpsc::Sender<Delivery>,
}

impl Events for ConsumerEvents {
    fn connected(&self, _epoch: u64, _session_present: bool) {}

    fn deliveries(&self) -> &mpsc::Sender<Delivery> {
        &self.deliveries
    }

    fn publish(&self, p: Publish, epoch: u64) -> Option<Delivery> {
        let core = &self.core;
        let ack = Publish {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: String::new(),
            pkid: p.pkid,
            payload: Default::default(),
        };
        if p.topic.starts_with(&core.dead_letter_base)
            && topic::is_own_dead_letter(
                &core.dead_letter_base,
                &p.topic,
                &core.subscriptions.snapshot(),
            )
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
                    "message on topic '{}' is not UTF-8 text ({} bytes); moving it to the dead-letter topic {}",
                    p.topic,
                    bytes.len(),
                    topic::dead_letter_topic(&core.dead_letter_base, &p.topic)
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

async fn subscriber(core: Arc<Core>, conn: Arc<Conn>, qos: QoS, group: Option<String>) {
    let mut subs_rx = core.subscriptions.watch();
    let mut conn_rx = conn.watch_connected();
    let mut current = std::collections::BTreeSet::new();
    let mut current_epoch: Option<u64> = None;
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
        }
        tokio::select! {
            r = subs_rx.changed() => if r.is_err() { return },
            r = conn_rx.changed() => if r.is_err() { return },
        }
    }
}

struct Consumer {
    conn: Arc<Conn>,
    core: Arc<Core>,
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
}

impl MqttTransport {
    /// Validates the configuration and prepares TLS; connections are opened on first use.
    pub fn new(config: MqttConfig, log: Logger) -> Result<Self> {
        config.validate()?;
        let tls = if config.endpoint.scheme.is_tls() {
            Some(tls::client_config(&config.tls)?)
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
        })
    }

    fn consumer(&self) -> std::sync::MutexGuard<'_, Option<Consumer>> {
        crate::sync::lock(&self.consumer)
    }

    /// Waits until subscriptions made before now are confirmed by the broker (at most
    /// [`SUBSCRIBE_WAIT`], and not past `deadline`).
    async fn await_subscriptions(&self, deadline: Instant) {
        let Some(core) = self.core.get() else {
            return;
        };
        let want = *core.subscriptions.watch().borrow();
        let mut acked = core.acked_version.subscribe();
        if *acked.borrow() >= want {
            return;
        }
        let until = deadline.min(Instant::now() + SUBSCRIBE_WAIT);
        let _ = tokio::time::timeout_at(until, acked.wait_for(|v| *v >= want)).await;
    }
}

fn closed_error(topic: &str) -> Error {
    Error::new(
        ErrorCode::Closed,
        format!("cannot emit '{topic}': the messaging service was shut down"),
    )
}

#[async_trait]
impl Transport for MqttTransport {
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        let dead = format!("{}/<topic>", self.config.dead_letter_topic);
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
        let core = Arc::new(Core {
            conn: OnceLock::new(),
            publisher: self.publisher.clone(),
            deliveries: ctx.deliveries.downgrade(),
            subscriptions: ctx.subscriptions.clone(),
            dead_letter_base: self.config.dead_letter_topic.clone(),
            publish_timeout: self.config.publish_timeout,
            unsettled: Arc::new(AtomicUsize::new(0)),
            acked_version: watch::channel(0).0,
            closing: AtomicBool::new(false),
            log: self.log.clone(),
        });
        let mut settings = self.config.settings(self.tls.clone());
        settings.extra_requests = ctx.max_in_flight.saturating_mul(4) + 1024;
        let events = Arc::new(ConsumerEvents {
            core: core.clone(),
            deliveries: ctx.deliveries,
        });
        let conn = Conn::open(settings, self.log.clone(), Some(events))?;
        let _ = core.conn.set(conn.clone());
        let _ = self.core.set(core.clone());
        let subscriber = tokio::spawn(subscriber(
            core.clone(),
            conn.clone(),
            self.config.qos(),
            self.config.shared_group.clone(),
        ));
        *slot = Some(Consumer {
            conn,
            core,
            subscriber,
        });
        Ok(())
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        if self.closed.load(Ordering::Acquire) {
            return batch.iter().map(|m| Err(closed_error(&m.topic))).collect();
        }
        let deadline = Instant::now() + self.config.publish_timeout;
        self.await_subscriptions(deadline).await;
        let conn = match self.publisher.get().await {
            Ok(c) => c,
            Err(e) => {
                return batch
                    .iter()
                    .map(|_| Err(Error::new(e.code, e.full_message())))
                    .collect()
            }
        };
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
                Ok(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(closed_error(&topic)),
                    Err(_) => Err(conn.timeout_error(&topic)),
                },
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
            c.conn.close(Duration::from_secs(2)).await;
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
            c.conn.abort();
        }
        if let Some(p) = self.publisher.conn.get() {
            p.abort();
        }
    }
}

#[cfg(test)]
mod tests;
