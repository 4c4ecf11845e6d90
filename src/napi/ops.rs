//! The JavaScript boundary of the operations tools (`cds-native-messaging` CLI, `srv.stats()`):
//! converts values and delegates to [`crate::engine::stats`], [`crate::transport::file::inspect`],
//! [`crate::transport::mqtt::inspect`], [`crate::transport::amqp::inspect`]
//! and [`crate::transport::redis::inspect`].
//!
//! Errors follow [`super::error`]: a synchronous function throws with `err.code` set; an
//! asynchronous one resolves to its value or to a [`Failure`] (`lib/cli/native.js` turns that into
//! a thrown `NativeMessagingError`).

use std::path::Path;
use std::time::Duration;

use napi::bindgen_prelude::Either;
use napi_derive::napi;
use tokio::sync::Mutex;

use super::engine::NativeEngine;
use super::error::{Code, Failure, IntoJs};
use super::options::{AmqpOptions, EventMeshOptions, MqttEngineOptions, RedisOptions};
use crate::config::TransportConfig;
use crate::error::Result;
use crate::log::Logger;
use crate::transport::amqp::config::AmqpConfig;
use crate::transport::file::inspect as file;
use crate::transport::redis::conn::Endpoint;
use crate::transport::redis::inspect as redis;

/// The counters of one engine (`srv.stats()`).
#[napi(object)]
pub struct EngineStats {
    /// Messages the broker or box accepted.
    pub emitted: f64,
    /// Emits that failed.
    pub emit_failures: f64,
    /// Deliveries handed to the handlers (redeliveries included).
    pub delivered: f64,
    /// Deliveries acknowledged after every handler succeeded.
    pub acked: f64,
    /// Failed deliveries scheduled again.
    pub redelivered: f64,
    /// Deliveries moved to the dead-letter place.
    pub dead_lettered: f64,
    /// Deliveries being processed now.
    pub in_flight: f64,
    /// Connections re-established after a loss.
    pub reconnects: f64,
    /// The last error, if any.
    pub last_error: Option<LastErrorInfo>,
}

/// The last error an engine saw.
#[napi(object)]
pub struct LastErrorInfo {
    /// `emit` or `handler`.
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// When (ms since the epoch).
    pub at: f64,
}

#[napi]
impl NativeEngine {
    /// The engine's counters now.
    #[napi]
    pub fn stats(&self) -> EngineStats {
        let s = self.inner.stats();
        EngineStats {
            emitted: s.emitted as f64,
            emit_failures: s.emit_failures as f64,
            delivered: s.delivered as f64,
            acked: s.acked as f64,
            redelivered: s.redelivered as f64,
            dead_lettered: s.dead_lettered as f64,
            in_flight: s.in_flight as f64,
            reconnects: s.reconnects as f64,
            last_error: s.last_error.map(|e| LastErrorInfo {
                kind: e.kind.to_string(),
                message: e.message,
                at: e.at_ms as f64,
            }),
        }
    }
}

/// What an asynchronous operation resolves to: its value, or why it failed. (Spelt out in each
/// signature: napi-rs writes the TypeScript of the type it sees.)
pub(super) fn settled<T>(r: Result<T>) -> napi::Result<Either<T, Failure>> {
    Ok(match r {
        Ok(v) => Either::A(v),
        Err(e) => Either::B(Failure::from(e)),
    })
}

/// One message line of a box or dead-letter box.
#[napi(object)]
pub struct BoxEntry {
    /// Topic.
    pub topic: String,
    /// JSON body as written.
    pub json: String,
    /// Delivery attempt while a consumer holds it; absent while it waits.
    pub attempt: Option<u32>,
}

/// The messages in a box (or dead-letter box), read without claiming. Throws with `err.code`.
#[napi]
pub fn box_entries(path: String) -> napi::Result<Vec<BoxEntry>, Code> {
    Ok(file::entries(Path::new(&path))
        .into_js()?
        .into_iter()
        .map(|e| BoxEntry {
            topic: e.topic,
            json: e.json,
            attempt: e.attempt,
        })
        .collect())
}

/// Removes dead letters (parallel arrays of topic and JSON body, as listed) from `dead`; with
/// `redeliver` appends them to the box first. Returns how many were moved. Throws with `err.code`.
#[napi]
pub fn box_take_dead(
    box_path: String,
    dead: String,
    topics: Vec<String>,
    jsons: Vec<String>,
    redeliver: bool,
) -> napi::Result<u32, Code> {
    let selected: Vec<(String, String)> = topics.into_iter().zip(jsons).collect();
    file::take_dead(
        Path::new(&box_path),
        Path::new(&dead),
        &selected,
        redeliver,
        &Logger::default(),
    )
    .map(|n| n as u32)
    .into_js()
}

fn endpoint(url: &str, ca: Option<&str>) -> Result<Endpoint> {
    Endpoint::new(url, ca.filter(|c| !c.trim().is_empty()))
}

/// The effective names of a Redis streams service (its options with the transport's defaults).
#[napi(object)]
pub struct RedisStreamNames {
    /// Prefix of the stream keys.
    pub prefix: String,
    /// The consumer group.
    pub group: String,
    /// Where exhausted messages go.
    pub dead_letter_stream: String,
}

/// The stream prefix, group and dead-letter stream `options` amount to. Throws with `err.code`.
#[napi]
pub fn redis_stream_names(options: RedisOptions) -> napi::Result<RedisStreamNames, Code> {
    let s = super::config::redis(options).into_js()?.streams;
    Ok(RedisStreamNames {
        prefix: s.prefix,
        group: s.group,
        dead_letter_stream: s.dead_letter_stream,
    })
}

/// What a Redis probe found.
#[napi(object)]
pub struct RedisServer {
    /// `host:port` without credentials.
    pub address: String,
    /// `Redis` or `Valkey`.
    pub product: String,
    /// Server version, if told.
    pub version: Option<String>,
}

/// Connects to Redis, authenticates and reads the server version.
#[napi]
pub async fn redis_probe(
    url: String,
    ca: Option<String>,
    timeout: u32,
) -> napi::Result<Either<RedisServer, Failure>> {
    settled(
        async {
            let ep = endpoint(&url, ca.as_deref())?;
            let s = redis::probe(&ep, Duration::from_millis(timeout.into())).await?;
            Ok(RedisServer {
                address: s.address,
                product: s.product,
                version: s.version,
            })
        }
        .await,
    )
}

/// Facts of one stream for the service's consumer group.
#[napi(object)]
pub struct RedisStreamFacts {
    /// Stream key.
    pub key: String,
    /// Whether it exists.
    pub exists: bool,
    /// Entries in it.
    pub length: f64,
    /// Whether the consumer group exists on it.
    pub group: bool,
    /// Delivered to the group, not yet acknowledged.
    pub pending: f64,
    /// Not yet read by the group (Redis ≥ 7).
    pub lag: Option<f64>,
}

/// Length, group presence and backlog of each stream for `group`.
#[napi]
pub async fn redis_streams(
    url: String,
    ca: Option<String>,
    timeout: u32,
    keys: Vec<String>,
    group: String,
) -> napi::Result<Either<Vec<RedisStreamFacts>, Failure>> {
    settled(
        async {
            let ep = endpoint(&url, ca.as_deref())?;
            let facts =
                redis::streams(&ep, Duration::from_millis(timeout.into()), &keys, &group).await?;
            Ok(facts
                .into_iter()
                .map(|f| RedisStreamFacts {
                    key: f.key,
                    exists: f.exists,
                    length: f.length as f64,
                    group: f.group,
                    pending: f.pending as f64,
                    lag: f.lag.map(|l| l as f64),
                })
                .collect())
        }
        .await,
    )
}

/// One entry of the streams dead-letter stream.
#[napi(object)]
pub struct RedisDeadLetter {
    /// Entry id in the dead-letter stream.
    pub id: String,
    /// Topic.
    pub topic: String,
    /// JSON payload.
    pub payload: String,
    /// Last handler error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// The stream it came from.
    pub stream: String,
    /// When it was dead-lettered (ms since the epoch).
    pub time: f64,
}

/// Every entry of the dead-letter stream `key`, oldest first.
#[napi]
pub async fn redis_dead_letters(
    url: String,
    ca: Option<String>,
    timeout: u32,
    key: String,
) -> napi::Result<Either<Vec<RedisDeadLetter>, Failure>> {
    settled(
        async {
            let ep = endpoint(&url, ca.as_deref())?;
            let all = redis::dead_letters(&ep, Duration::from_millis(timeout.into()), &key).await?;
            Ok(all
                .into_iter()
                .map(|d| RedisDeadLetter {
                    id: d.id,
                    topic: d.topic,
                    payload: d.payload,
                    error: d.error,
                    attempts: d.attempts,
                    stream: d.stream,
                    time: d.time_ms as f64,
                })
                .collect())
        }
        .await,
    )
}

/// Removes the dead letters `ids` from `key`; with `redeliver` appends each to its stream first.
#[napi]
pub async fn redis_take_dead_letters(
    url: String,
    ca: Option<String>,
    timeout: u32,
    key: String,
    ids: Vec<String>,
    redeliver: bool,
) -> napi::Result<Either<u32, Failure>> {
    settled(
        async {
            let ep = endpoint(&url, ca.as_deref())?;
            let timeout = Duration::from_millis(timeout.into());
            let n = redis::take_dead_letters(&ep, timeout, &key, &ids, redeliver).await?;
            Ok(n as u32)
        }
        .await,
    )
}

/// A message seen by a tail.
#[napi(object)]
pub struct TailMessage {
    /// Topic.
    pub topic: String,
    /// Payload as on the wire.
    pub payload: String,
    /// Stream entry id (streams), else empty.
    pub id: String,
}

enum TailKind {
    Streams(String),
    PubSub(Vec<String>),
}

enum TailState {
    Streams(Box<redis::StreamTail>),
    PubSub(redis::PubSubTail),
}

/// A Redis tail that never takes from the app: `XREAD` on the streams under a prefix, or a
/// `PSUBSCRIBE` of its own. Connects on the first `next()`.
#[napi]
pub struct RedisTail {
    url: String,
    ca: Option<String>,
    kind: TailKind,
    state: Mutex<Option<TailState>>,
}

#[napi]
impl RedisTail {
    /// `mode` is `streams` (then `prefix` is the stream prefix) or `pubsub` (then `patterns` are
    /// Redis glob patterns).
    #[napi(constructor)]
    pub fn new(
        url: String,
        ca: Option<String>,
        mode: String,
        prefix: Option<String>,
        patterns: Option<Vec<String>>,
    ) -> Self {
        let kind = if mode == "streams" {
            TailKind::Streams(prefix.unwrap_or_default())
        } else {
            TailKind::PubSub(patterns.unwrap_or_else(|| vec!["*".into()]))
        };
        RedisTail {
            url,
            ca,
            kind,
            state: Mutex::new(None),
        }
    }

    /// Waits up to `wait` ms for messages and resolves to them (empty on timeout), or to the
    /// `Failure`.
    #[napi]
    pub async fn next(&self, wait: u32) -> napi::Result<Either<Vec<TailMessage>, Failure>> {
        settled(self.poll(Duration::from_millis(wait.into())).await)
    }
}

impl RedisTail {
    async fn poll(&self, wait: Duration) -> Result<Vec<TailMessage>> {
        let mut st = self.state.lock().await;
        if st.is_none() {
            let ep = endpoint(&self.url, self.ca.as_deref())?;
            let timeout = Duration::from_secs(5);
            *st = Some(match &self.kind {
                TailKind::Streams(p) => TailState::Streams(Box::new(
                    redis::StreamTail::open(ep, timeout, p.clone()).await?,
                )),
                TailKind::PubSub(p) => {
                    TailState::PubSub(redis::PubSubTail::open(&ep, timeout, p).await?)
                }
            });
        }
        let seen = match st.as_mut() {
            Some(TailState::Streams(t)) => t.next(wait).await?,
            Some(TailState::PubSub(t)) => t.next(wait).await?,
            None => Vec::new(),
        };
        Ok(seen
            .into_iter()
            .map(|s| TailMessage {
                topic: s.topic,
                payload: s.payload,
                id: s.id,
            })
            .collect())
    }
}

/// The stream keys under `prefix` (`SCAN … TYPE stream`).
#[napi]
pub async fn redis_stream_keys(
    url: String,
    ca: Option<String>,
    timeout: u32,
    prefix: String,
) -> napi::Result<Either<Vec<String>, Failure>> {
    settled(
        async {
            let ep = endpoint(&url, ca.as_deref())?;
            let mut c = redis::connect(&ep, Duration::from_millis(timeout.into())).await?;
            redis::stream_keys(&mut c, &prefix).await
        }
        .await,
    )
}

/// Connects to the MQTT broker with a client id of its own (clean session) and disconnects;
/// resolves to the broker's label.
#[napi]
pub async fn mqtt_probe(
    options: MqttEngineOptions,
    timeout: u32,
    event_mesh: Option<EventMeshOptions>,
) -> napi::Result<Either<String, Failure>> {
    settled(
        async {
            let config = super::config::mqtt(options, event_mesh.as_ref())?;
            crate::transport::mqtt::inspect::probe(&config, Duration::from_millis(timeout.into()))
                .await
        }
        .await,
    )
}

/// Mosquitto's count of messages dropped by its queue limits since it started (all its clients),
/// read with a client id of its own; `null` when the broker publishes no such count.
#[napi]
pub async fn mqtt_broker_drops(
    options: MqttEngineOptions,
    timeout: u32,
    event_mesh: Option<EventMeshOptions>,
) -> napi::Result<Either<Option<f64>, Failure>> {
    settled(
        async {
            let config = super::config::mqtt(options, event_mesh.as_ref())?;
            let n = crate::transport::mqtt::inspect::broker_drops(
                &config,
                Duration::from_millis(timeout.into()),
            )
            .await?;
            Ok(n.map(|n| n as f64))
        }
        .await,
    )
}

/// One MQTT dead letter, kept retained by the broker.
#[napi(object)]
pub struct MqttDeadLetter {
    /// Dead-letter id (last level of its topic: `<ms>-<random>`).
    pub id: String,
    /// The topic it was consumed from.
    pub topic: String,
    /// The payload (UTF-8, lossy for binary payloads; redelivery moves the original bytes).
    pub payload: String,
    /// The MQTT topic it is kept on.
    pub mqtt_topic: String,
    /// When it was dead-lettered (ms since the epoch).
    pub time: f64,
}

/// The retained dead letters under the service's dead-letter topic, oldest first (read on a clean
/// session of its own; reading takes nothing).
#[napi]
pub async fn mqtt_dead_letters(
    options: MqttEngineOptions,
    timeout: u32,
    event_mesh: Option<EventMeshOptions>,
) -> napi::Result<Either<Vec<MqttDeadLetter>, Failure>> {
    settled(
        async {
            let config = super::config::mqtt(options, event_mesh.as_ref())?;
            let all = crate::transport::mqtt::inspect::dead_letters(
                &config,
                Duration::from_millis(timeout.into()),
            )
            .await?;
            Ok(all
                .into_iter()
                .map(|d| MqttDeadLetter {
                    id: d.id,
                    topic: d.topic,
                    payload: String::from_utf8_lossy(&d.payload).into_owned(),
                    mqtt_topic: d.mqtt_topic,
                    time: d.time_ms as f64,
                })
                .collect())
        }
        .await,
    )
}

/// Removes the retained dead letters `ids`; with `redeliver` publishes each to its original topic
/// first. Resolves to how many were moved.
#[napi]
pub async fn mqtt_take_dead_letters(
    options: MqttEngineOptions,
    timeout: u32,
    ids: Vec<String>,
    redeliver: bool,
    event_mesh: Option<EventMeshOptions>,
) -> napi::Result<Either<u32, Failure>> {
    settled(
        async {
            let config = super::config::mqtt(options, event_mesh.as_ref())?;
            let n = crate::transport::mqtt::inspect::take_dead_letters(
                &config,
                Duration::from_millis(timeout.into()),
                &ids,
                redeliver,
            )
            .await?;
            Ok(n as u32)
        }
        .await,
    )
}

/// An MQTT tail: a QoS 0 subscription on a clean session of its own. Connects on the first `next()`.
#[napi]
pub struct MqttTail {
    config: crate::transport::mqtt::MqttConfig,
    filters: Vec<String>,
    state: Mutex<Option<crate::transport::mqtt::inspect::Tail>>,
}

#[napi]
impl MqttTail {
    /// `filters` are MQTT topic filters (default `#`); `eventMesh` the service's OAuth2 client
    /// for the WebSocket upgrade, if any. Throws with `err.code`.
    #[napi(constructor)]
    pub fn new(
        options: MqttEngineOptions,
        filters: Option<Vec<String>>,
        event_mesh: Option<EventMeshOptions>,
    ) -> napi::Result<Self, Code> {
        Ok(MqttTail {
            config: super::config::mqtt(options, event_mesh.as_ref()).into_js()?,
            filters: filters.unwrap_or_else(|| vec!["#".into()]),
            state: Mutex::new(None),
        })
    }

    /// Waits up to `wait` ms for messages and resolves to them (empty on timeout), or to the
    /// `Failure`.
    #[napi]
    pub async fn next(&self, wait: u32) -> napi::Result<Either<Vec<TailMessage>, Failure>> {
        settled(self.poll(Duration::from_millis(wait.into())).await)
    }

    /// Disconnects.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        if let Some(t) = self.state.lock().await.take() {
            t.close().await;
        }
        Ok(())
    }
}

impl MqttTail {
    async fn poll(&self, wait: Duration) -> Result<Vec<TailMessage>> {
        let mut st = self.state.lock().await;
        if st.is_none() {
            let t = crate::transport::mqtt::inspect::Tail::open(
                &self.config,
                self.filters.clone(),
                Duration::from_secs(5),
            )
            .await?;
            *st = Some(t);
        }
        let Some(t) = st.as_mut() else {
            return Ok(Vec::new());
        };
        Ok(t.next(wait)
            .await
            .into_iter()
            .map(|m| TailMessage {
                topic: m.topic,
                payload: m.payload,
                id: String::new(),
            })
            .collect())
    }
}

/// The AMQP configuration of the service's options and Event Mesh OAuth2 clients (the receiver
/// credit is the engine default's: the tools consume nothing in bulk).
fn amqp(options: AmqpOptions, event_mesh: Option<EventMeshOptions>) -> Result<AmqpConfig> {
    let defaults = crate::config::EngineConfig::new(String::new(), TransportConfig::Local);
    super::config::amqp(options, defaults.max_in_flight, event_mesh.as_ref())
}

/// Opens one AMQP connection with the service's options (TCP/TLS, SASL, AMQP open) and closes it;
/// resolves to the broker's address.
#[napi]
pub async fn amqp_probe(
    options: AmqpOptions,
    event_mesh: Option<EventMeshOptions>,
) -> napi::Result<Either<String, Failure>> {
    settled(
        async {
            let config = amqp(options, event_mesh)?;
            crate::transport::amqp::inspect::probe(&config.conn).await
        }
        .await,
    )
}

/// An AMQP tail (RabbitMQ 3.x): a temporary exclusive queue bound to every topic, gone with the
/// connection. Connects on the first `next()`.
#[napi]
pub struct AmqpTail {
    config: AmqpConfig,
    state: Mutex<Option<crate::transport::amqp::inspect::Tail>>,
}

#[napi]
impl AmqpTail {
    /// `options` are the service's AMQP options, `eventMesh` its OAuth2 clients, if any. Throws
    /// with `err.code`.
    #[napi(constructor)]
    pub fn new(
        options: AmqpOptions,
        event_mesh: Option<EventMeshOptions>,
    ) -> napi::Result<Self, Code> {
        Ok(AmqpTail {
            config: amqp(options, event_mesh).into_js()?,
            state: Mutex::new(None),
        })
    }

    /// Waits up to `wait` ms for messages and resolves to them (empty on timeout), or to the
    /// `Failure`.
    #[napi]
    pub async fn next(&self, wait: u32) -> napi::Result<Either<Vec<TailMessage>, Failure>> {
        settled(self.poll(Duration::from_millis(wait.into())).await)
    }

    /// Disconnects (the temporary queue goes away).
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.state.lock().await.take();
        Ok(())
    }
}

impl AmqpTail {
    async fn poll(&self, mut wait: Duration) -> Result<Vec<TailMessage>> {
        let mut st = self.state.lock().await;
        if st.is_none() {
            *st = Some(crate::transport::amqp::inspect::Tail::open(&self.config).await?);
        }
        let Some(t) = st.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while let Some((topic, payload)) = t.next(wait).await? {
            out.push(TailMessage {
                topic,
                payload,
                id: String::new(),
            });
            if out.len() >= 500 {
                break;
            }
            wait = Duration::ZERO;
        }
        Ok(out)
    }
}

/// Whether the service's AMQP queue can be consumed (a receiver without credit, detached again):
/// resolves to `null` when it can, else why not (or to the `Failure` of the check itself).
#[napi]
pub async fn amqp_queue_problem(
    options: AmqpOptions,
    event_mesh: Option<EventMeshOptions>,
) -> napi::Result<Either<Option<String>, Failure>> {
    settled(
        async {
            let config = amqp(options, event_mesh)?;
            crate::transport::amqp::inspect::queue_problem(&config).await
        }
        .await,
    )
}

/// One message of an AMQP dead-letter queue (RabbitMQ).
#[napi(object)]
pub struct AmqpDeadLetter {
    /// `message-id` (or a hash of topic and body).
    pub id: String,
    /// Its topic.
    pub topic: String,
    /// Payload (JSON text).
    pub payload: String,
    /// When it was dead-lettered (ms since the epoch), if the broker says.
    pub time: Option<f64>,
    /// Why (`rejected`, `expired`, …), if the broker says.
    pub reason: Option<String>,
    /// The queue it died in, if the broker says.
    pub queue: Option<String>,
}

/// The service's dead-letter queue (`queue.deadLetterQueue`), or why it has none (thrown with
/// `err.code` `INVALID_CONFIG`).
#[napi]
pub fn amqp_dead_letter_queue(options: AmqpOptions) -> napi::Result<String, Code> {
    amqp(options, None)
        .and_then(|c| crate::transport::amqp::inspect::dead_letter_queue(&c))
        .into_js()
}

/// The messages in the service's dead-letter queue, read without taking any (each is held
/// unsettled during the read and released).
#[napi]
pub async fn amqp_dead_letters(
    options: AmqpOptions,
    event_mesh: Option<EventMeshOptions>,
) -> napi::Result<Either<Vec<AmqpDeadLetter>, Failure>> {
    settled(
        async {
            let config = amqp(options, event_mesh)?;
            let all = crate::transport::amqp::inspect::dead_letters(&config).await?;
            Ok(all
                .into_iter()
                .map(|d| AmqpDeadLetter {
                    id: d.id,
                    topic: d.topic,
                    payload: d.payload,
                    time: d.time_ms.map(|t| t as f64),
                    reason: d.reason,
                    queue: d.queue,
                })
                .collect())
        }
        .await,
    )
}

/// Takes the dead letters `ids` from the dead-letter queue; with `redeliver` sends each into the
/// service's queue first. Resolves to how many were moved.
#[napi]
pub async fn amqp_take_dead_letters(
    options: AmqpOptions,
    ids: Vec<String>,
    redeliver: bool,
    event_mesh: Option<EventMeshOptions>,
) -> napi::Result<Either<u32, Failure>> {
    settled(
        async {
            let config = amqp(options, event_mesh)?;
            let n = crate::transport::amqp::inspect::take_dead_letters(&config, &ids, redeliver)
                .await?;
            Ok(n as u32)
        }
        .await,
    )
}
